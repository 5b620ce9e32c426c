//! Restore: plan what to write from a backup's index, then write it under one target.
//!
//! Invariants:
//! - nothing is written outside the target: every name is checked to be one path component
//!   (`index::check_entry`), every directory on the way is created or checked by us and must be
//!   a real directory (never a symlink), files are written to fresh temporary names opened
//!   with `O_EXCL | O_NOFOLLOW` and renamed into place;
//! - the whole plan is checked before the first write, so a hostile index changes nothing;
//! - `--in-place` never replaces a file newer than the backed-up version unless asked to.

use crate::error::{Error, IoContext, Result};
use crate::ids::BackupId;
use crate::index::{self, Step};
use crate::listing::{Entry, EntryKind};
use crate::medium::Medium;
use crate::progress::Meter;
use crate::store::BLOCK_SIZE;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub enum Target {
    /// Under this directory, keeping the full original paths (`DIR/home/a/x`).
    Dir(PathBuf),
    /// At the original paths.
    InPlace,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub target: Target,
    /// Paths in the backup to restore (whole subtrees); empty for everything.
    pub paths: Vec<PathBuf>,
    pub dry_run: bool,
    /// Replace files newer than the backup, and things in the way of a directory.
    pub overwrite: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub backup: u64,
    pub target: String,
    pub dry_run: bool,
    pub dirs: u64,
    pub files: u64,
    pub links: u64,
    pub other: u64,
    pub bytes: u64,
    /// Files left alone because the existing one is newer (in-place without overwrite).
    pub skipped_newer: Vec<String>,
    /// Things that could not be restored exactly (e.g. an xattr the target refuses).
    pub problems: Vec<String>,
    /// With `dry_run`: every path that would be written.
    pub planned: Vec<String>,
}

struct Item {
    rel: PathBuf,
    entry: Entry,
    /// For the second and later names of a hard-linked file: the item holding the content.
    link_to: Option<usize>,
}

/// Build the plan: every item to restore in pre-order, checked.
fn plan(m: &Medium, root: &crate::ids::BlockId, paths: &[PathBuf]) -> Result<Vec<Item>> {
    let mut items: Vec<Item> = Vec::new();
    // Only needed when the paths asked for overlap: a whole-tree walk meets each path once.
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    let mut push = |items: &mut Vec<Item>, rel: &Path, e: &Entry| {
        if seen.insert(rel.to_path_buf()) {
            items.push(Item {
                rel: rel.to_path_buf(),
                entry: e.clone(),
                link_to: None,
            });
        }
    };
    if paths.is_empty() {
        index::walk(m, root, Path::new(""), &mut |rel, e| {
            items.push(Item {
                rel: rel.to_path_buf(),
                entry: e.clone(),
                link_to: None,
            });
            Ok(Step::Descend)
        })?;
    } else {
        for p in paths {
            let comps = index::components(p)?;
            let chain = index::lookup(m, root, p)?
                .ok_or_else(|| Error::Refused(format!("{} is not in this backup", p.display())))?;
            if chain.is_empty() {
                return plan(m, root, &[]);
            }
            let mut rel = PathBuf::new();
            for (c, e) in comps.iter().zip(&chain) {
                rel.push(c);
                push(&mut items, &rel, e);
            }
            let last = chain.last().unwrap();
            if let (EntryKind::Dir, Some(sub)) = (last.kind, last.subtree) {
                index::walk(m, &sub, &rel, &mut |r, e| {
                    push(&mut items, r, e);
                    Ok(Step::Descend)
                })?;
            }
        }
        items.sort_by(|a, b| a.rel.cmp(&b.rel));
    }
    let mut first: HashMap<(u64, u64), usize> = HashMap::new();
    for i in 0..items.len() {
        let e = &items[i].entry;
        if e.kind == EntryKind::File && e.nlink > 1 {
            let key = (e.dev, e.ino);
            match first.get(&key) {
                Some(&j) if items[j].entry.blocks == e.blocks => items[i].link_to = Some(j),
                Some(_) => {}
                None => {
                    first.insert(key, i);
                }
            }
        }
    }
    Ok(items)
}

/// Restore backup `id` as `opts` says.
pub fn restore(m: &Medium, id: BackupId, opts: &Options, meter: &Meter) -> Result<Report> {
    let header = m.header(id)?;
    let items = plan(m, &header.root, &opts.paths)?;
    let base = match &opts.target {
        Target::Dir(d) => d.clone(),
        Target::InPlace => PathBuf::from("/"),
    };
    let mut report = Report {
        backup: id.0,
        target: base.display().to_string(),
        dry_run: opts.dry_run,
        ..Report::default()
    };
    let total: u64 = items
        .iter()
        .filter(|i| i.link_to.is_none())
        .map(|i| i.entry.size)
        .sum();
    meter.set_total(total);
    if opts.dry_run {
        report.planned = items
            .iter()
            .map(|i| base.join(&i.rel).display().to_string())
            .collect();
        tally(&mut report, &items);
        return Ok(report);
    }
    if let Target::Dir(d) = &opts.target {
        fs::create_dir_all(d).at(d)?;
        if !fs::metadata(d).at(d)?.is_dir() {
            return Err(Error::Refused(format!(
                "{}: restore target is not a directory",
                d.display()
            )));
        }
    }
    let is_root = rustix::process::geteuid().is_root();
    let problems = Mutex::new(Vec::new());
    let skipped = Mutex::new(Vec::new());
    // 1. Directories, in pre-order: each parent exists and is checked before its children.
    for it in items.iter().filter(|i| i.entry.kind == EntryKind::Dir) {
        make_dir(&base.join(&it.rel), opts.overwrite)?;
    }
    // 2. Everything but directories and extra hard links, in parallel.
    items
        .par_iter()
        .filter(|i| i.entry.kind != EntryKind::Dir && i.link_to.is_none())
        .try_for_each(|it| -> Result<()> {
            let dest = base.join(&it.rel);
            if matches!(opts.target, Target::InPlace)
                && !opts.overwrite
                && it.entry.kind == EntryKind::File
            {
                if let Ok(md) = fs::symlink_metadata(&dest) {
                    let existing = crate::scan::time_ns(md.mtime(), md.mtime_nsec());
                    if existing > it.entry.mtime_ns {
                        skipped.lock().unwrap().push(dest.display().to_string());
                        return Ok(());
                    }
                }
            }
            // Nothing in the way: write under the final name (created exclusively, never
            // through a symlink). Else write a temporary and rename it over what is there.
            let fresh = matches!(fs::symlink_metadata(&dest), Err(e) if e.kind() == io::ErrorKind::NotFound);
            let path = if fresh { dest.clone() } else { temp_name(&dest) };
            let result = write_item(m, &path, &it.entry, is_root, &problems, meter).and_then(|()| {
                if it.entry.kind != EntryKind::File {
                    apply_meta(Meta::Path(&path), &it.entry, is_root, &problems);
                }
                if fresh {
                    Ok(())
                } else {
                    replace(&path, &dest, opts.overwrite)
                }
            });
            if result.is_err() {
                let _ = fs::remove_file(&path);
            }
            result
        })?;
    // 3. Further names of hard-linked files.
    for it in items.iter().filter(|i| i.link_to.is_some()) {
        let src = base.join(&items[it.link_to.unwrap()].rel);
        let dest = base.join(&it.rel);
        if !src.exists() {
            continue; // its first name was skipped
        }
        let tmp = temp_name(&dest);
        fs::hard_link(&src, &tmp).at(&dest)?;
        replace(&tmp, &dest, opts.overwrite)?;
    }
    // 4. Directory attributes, deepest first (writing into a directory changes its mtime).
    for it in items
        .iter()
        .rev()
        .filter(|i| i.entry.kind == EntryKind::Dir)
    {
        apply_meta(
            Meta::Path(&base.join(&it.rel)),
            &it.entry,
            is_root,
            &problems,
        );
    }
    meter.finish();
    report.problems = problems.into_inner().unwrap();
    report.skipped_newer = skipped.into_inner().unwrap();
    tally(&mut report, &items);
    for p in &report.problems {
        warn!(problem = %p, "restore");
    }
    info!(backup = %id, target = %base.display(), files = report.files, bytes = report.bytes, "restore finished");
    Ok(report)
}

fn tally(r: &mut Report, items: &[Item]) {
    for it in items {
        match it.entry.kind {
            EntryKind::Dir => r.dirs += 1,
            EntryKind::File => {
                r.files += 1;
                if it.link_to.is_none() {
                    r.bytes += it.entry.size;
                }
            }
            EntryKind::Symlink => r.links += 1,
            _ => r.other += 1,
        }
    }
}

fn temp_name(dest: &Path) -> PathBuf {
    dest.with_file_name(format!(
        ".trayback-restore.{}",
        uuid::Uuid::new_v4().simple()
    ))
}

/// Ensure `path` is a real directory (never following a symlink into somewhere else).
fn make_dir(path: &Path, overwrite: bool) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(md) => {
            if !overwrite {
                let what = if md.file_type().is_symlink() {
                    "a symlink"
                } else {
                    "not a directory"
                };
                return Err(Error::Refused(format!(
                    "{}: exists and is {what}, where the backup has a directory; refusing to write through it (--overwrite replaces it)",
                    path.display()
                )));
            }
            fs::remove_file(path).at(path)?;
            fs::DirBuilder::new().mode(0o700).create(path).at(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new().mode(0o700).create(path).at(path)
        }
        Err(e) => Err(Error::Io {
            path: path.to_path_buf(),
            cause: e,
        }),
    }
}

/// Rename a finished temporary into place.
fn replace(tmp: &Path, dest: &Path, overwrite: bool) -> Result<()> {
    if let Ok(md) = fs::symlink_metadata(dest) {
        if md.is_dir() {
            if !overwrite {
                let _ = fs::remove_file(tmp);
                return Err(Error::Refused(format!(
                    "{}: is a directory where the backup has a file (--overwrite replaces it)",
                    dest.display()
                )));
            }
            fs::remove_dir_all(dest).at(dest)?;
        }
    }
    fs::rename(tmp, dest).at(dest)
}

/// Create the item at `tmp`: content for files, the link for symlinks, the node for specials.
fn write_item(
    m: &Medium,
    tmp: &Path,
    e: &Entry,
    is_root: bool,
    problems: &Mutex<Vec<String>>,
    meter: &Meter,
) -> Result<()> {
    match e.kind {
        EntryKind::File => {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(tmp)
                .at(tmp)?;
            let mut offset = 0u64;
            for b in &e.blocks {
                let data = m.store().read(b)?;
                write_sparse(&f, &data, offset).at(tmp)?;
                offset += data.len() as u64;
                meter.add(0, data.len() as u64);
            }
            if offset != e.size {
                return Err(Error::BadBlock {
                    id: e.content_id(),
                    detail: format!("{} bytes of content where {} were recorded", offset, e.size),
                });
            }
            if f.metadata().at(tmp)?.len() != e.size {
                f.set_len(e.size).at(tmp)?; // a hole at the end
            }
            apply_meta(Meta::File(&f, tmp), e, is_root, problems);
            meter.add(1, 0);
            Ok(())
        }
        EntryKind::Symlink => {
            std::os::unix::fs::symlink(e.target.as_ref().unwrap().as_os(), tmp).at(tmp)
        }
        EntryKind::Fifo | EntryKind::Char | EntryKind::Block => {
            let ft = match e.kind {
                EntryKind::Fifo => rustix::fs::FileType::Fifo,
                EntryKind::Char => rustix::fs::FileType::CharacterDevice,
                _ => rustix::fs::FileType::BlockDevice,
            };
            rustix::fs::mknodat(
                rustix::fs::CWD,
                tmp,
                ft,
                rustix::fs::Mode::from_raw_mode(0o600),
                e.rdev.unwrap_or(0),
            )
            .map_err(io::Error::from)
            .at(tmp)
        }
        EntryKind::Dir => unreachable!("directories are made by make_dir"),
    }
}

/// Write `data` at `offset`, leaving 4 KiB runs of zeros as holes.
fn write_sparse(f: &fs::File, data: &[u8], offset: u64) -> io::Result<()> {
    const PAGE: usize = 4096;
    let mut i = 0;
    while i < data.len() {
        let end = (i + PAGE).min(data.len());
        if data[i..end].iter().all(|b| *b == 0) {
            i = end;
            continue;
        }
        let mut j = end;
        while j < data.len() {
            let e2 = (j + PAGE).min(data.len());
            if data[j..e2].iter().all(|b| *b == 0) {
                break;
            }
            j = e2;
        }
        f.write_all_at(&data[i..j], offset + i as u64)?;
        i = j;
    }
    debug_assert!(data.len() <= BLOCK_SIZE);
    Ok(())
}

/// Where metadata goes: a path (never followed if a symlink) or an open file.
#[derive(Clone, Copy)]
enum Meta<'a> {
    Path(&'a Path),
    File(&'a fs::File, &'a Path),
}

/// Apply owner, xattrs, mode and times (in that order: chown clears setuid bits, and ACLs
/// are set before the mode that must agree with them). What the target refuses is reported,
/// not fatal.
fn apply_meta(to: Meta, e: &Entry, is_root: bool, problems: &Mutex<Vec<String>>) {
    let path = match to {
        Meta::Path(p) | Meta::File(_, p) => p,
    };
    let problem = |what: &str, err: &dyn std::fmt::Display| {
        problems
            .lock()
            .unwrap()
            .push(format!("{}: cannot restore {what}: {err}", path.display()));
    };
    if is_root {
        let r = match to {
            Meta::Path(p) => std::os::unix::fs::lchown(p, Some(e.uid), Some(e.gid)),
            Meta::File(f, _) => std::os::unix::fs::fchown(f, Some(e.uid), Some(e.gid)),
        };
        if let Err(err) = r {
            problem("owner", &err);
        }
    }
    for x in &e.xattrs {
        let Ok(name) = std::ffi::CString::new(x.name.0.clone()) else {
            continue;
        };
        let flags = rustix::fs::XattrFlags::empty();
        let r = match to {
            Meta::Path(p) => rustix::fs::lsetxattr(p, name.as_c_str(), &x.value.0, flags),
            Meta::File(f, _) => rustix::fs::fsetxattr(f, name.as_c_str(), &x.value.0, flags),
        };
        if let Err(err) = r {
            problem(&format!("xattr {}", x.name.lossy()), &err);
        }
    }
    let mode = rustix::fs::Mode::from_raw_mode(e.mode);
    let r = match to {
        Meta::Path(_) if e.kind == EntryKind::Symlink => Ok(()), // symlinks have no mode of their own
        Meta::Path(p) => rustix::fs::chmod(p, mode),
        Meta::File(f, _) => rustix::fs::fchmod(f, mode),
    };
    if let Err(err) = r {
        problem("mode", &err);
    }
    let ts = rustix::fs::Timespec {
        tv_sec: e.mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: e.mtime_ns.rem_euclid(1_000_000_000),
    };
    let times = rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    let r = match to {
        Meta::Path(p) => rustix::fs::utimensat(
            rustix::fs::CWD,
            p,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        ),
        Meta::File(f, _) => rustix::fs::futimens(f, &times),
    };
    if let Err(err) = r {
        problem("times", &err);
    }
}
