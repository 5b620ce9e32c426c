//! Restore: plan what to write from a backup's index, then write it under one target.
//!
//! Invariants:
//! - nothing is written outside the target, whatever the index says or a local user does
//!   while we restore: every name is checked to be one path component of at most 255 bytes
//!   (`restore::plan`), and every write is made relative to a directory descriptor reached
//!   component by component without following symlinks (`restore::dest`, the one restore
//!   destination);
//! - the whole plan is made and checked before the first write, so a hostile index changes
//!   nothing;
//! - without `overwrite`, an existing entry is never replaced if it is newer than the
//!   backed-up one (its mtime is later) or of another kind (a symlink, FIFO or directory
//!   where the backup has a file, a file where it has a directory, ...): it is kept and
//!   reported in [`Report::kept`], for every target (`--in-place` and `--to`);
//! - directories get their attributes after their contents, deepest first;
//! - bounded: no recursion on the stack, and a bounded number of open descriptors at any
//!   depth: two `cursor::Cursor`s (about 100 each), at most [`BATCH`] directories held by
//!   parallel writers, and the store's pack cache (256): under 750, within the default
//!   limit of 1024.

mod cursor;
mod dest;
mod plan;
mod remove;

use crate::error::Result;
use crate::ids::BackupId;
use crate::index;
use crate::listing::{Entry, EntryKind};
use crate::medium::Medium;
use crate::progress::Meter;
use cursor::Cursor;
use dest::{Ctx, Dest, DirMade, Ident, Node, Put};
use plan::Plan;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

pub use plan::NAME_MAX;

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
    /// Replace entries newer than the backup, and things of another kind in the way.
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
    /// Existing entries left alone (without overwrite), and why. Nothing below a kept entry
    /// that the backup has as a directory is restored.
    pub kept: Vec<Kept>,
    /// Things that could not be restored exactly (e.g. an xattr the target refuses).
    pub problems: Vec<String>,
    /// With `dry_run`: every path that would be written.
    pub planned: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Kept {
    pub path: String,
    #[serde(flatten)]
    pub reason: KeptReason,
}

/// Why an existing entry was not replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum KeptReason {
    /// Same kind as in the backup, modified later than the backed-up version.
    Newer { kind: EntryKind },
    /// Something of another kind is there.
    OtherKind { found: OnDisk, backup: EntryKind },
}

/// The kind of an existing entry in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDisk {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
    Unknown,
}

impl OnDisk {
    /// In a sentence: "kept a {word} where ...".
    pub fn word(self) -> &'static str {
        match self {
            OnDisk::File => "file",
            OnDisk::Dir => "directory",
            OnDisk::Symlink => "symlink",
            OnDisk::Fifo => "FIFO",
            OnDisk::Char => "character device",
            OnDisk::Block => "block device",
            OnDisk::Socket => "socket",
            OnDisk::Unknown => "entry of unknown kind",
        }
    }

    pub fn is(self, k: EntryKind) -> bool {
        matches!(
            (self, k),
            (OnDisk::File, EntryKind::File)
                | (OnDisk::Dir, EntryKind::Dir)
                | (OnDisk::Symlink, EntryKind::Symlink)
                | (OnDisk::Fifo, EntryKind::Fifo)
                | (OnDisk::Char, EntryKind::Char)
                | (OnDisk::Block, EntryKind::Block)
        )
    }
}

/// Directories whose writers run at once, each holding its directory open: a bound on
/// descriptors (with the cursors' few) well under the default limit of 1024.
pub const BATCH: usize = 256;
/// Give a file entry's content to `sink` block by block, with each block's offset: every
/// block read (and checked) from the medium, and the total checked against the size the
/// listing records (a mismatch names `path`, the file). The one reader of a file's content: restore writes it, the web
/// interface streams it (memory: one block at a time).
pub fn content(
    m: &Medium,
    e: &crate::listing::Entry,
    path: &Path,
    sink: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut offset = 0u64;
    for b in &e.blocks {
        let data = m.read_block(b)?;
        // Nothing past the recorded size is handed on (the blocks' lengths are not in the
        // listing, only their number, which the listing's decoder checked against the size).
        if offset + data.len() as u64 > e.size {
            return Err(crate::error::Error::Damaged {
                path: path.to_path_buf(),
                detail: format!("its blocks hold more than the {} bytes recorded", e.size),
            });
        }
        sink(offset, &data)?;
        offset += data.len() as u64;
    }
    if offset != e.size {
        return Err(crate::error::Error::Damaged {
            path: path.to_path_buf(),
            detail: format!("{} bytes of content where {} were recorded", offset, e.size),
        });
    }
    Ok(())
}

/// A writer job takes at most this many entries, or entries up to this many bytes.
const JOB_ITEMS: usize = 64;
const JOB_BYTES: u64 = 8 << 20;

/// Restore backup `id` as `opts` says.
pub fn restore(m: &Medium, id: BackupId, opts: &Options, meter: &Meter) -> Result<Report> {
    let header = m.header(id)?;
    // A plan holds every item in memory: at most plan::MAX_ITEMS, whatever the header says.
    let limit = index::Limit::of(m, &header).at_most(plan::MAX_ITEMS);
    if opts.paths.is_empty() && limit.over_cap() {
        return Err(limit.exceeded());
    }
    let plan = plan::plan(m, &header.root, &opts.paths, limit)?;
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
    let total: u64 = plan
        .items
        .iter()
        .filter(|i| i.link_to.is_none())
        .map(|i| i.entry.size)
        .sum::<u64>()
        + plan.rest.bytes;
    meter.set_total(total);
    tally(&mut report, &plan);
    if opts.dry_run {
        let mut planned: Vec<PathBuf> = (0..plan.items.len())
            .map(|i| base.join(plan.rel(i)))
            .collect();
        let walked = (0..plan.items.len()).filter(|&d| plan.items[d].walked);
        for d in std::iter::once(None).chain(walked.map(Some)) {
            let dir = d.map_or_else(|| base.clone(), |d| base.join(plan.rel(d)));
            for e in plan.rest(m, d)? {
                planned.push(dir.join(e.name.as_os()));
            }
        }
        // Paths sort component by component: the plan's depth-first order.
        planned.sort();
        report.planned = planned.iter().map(|p| p.display().to_string()).collect();
        return Ok(report);
    }
    let dest = Dest::open(&base, matches!(opts.target, Target::InPlace))?;
    let problems = Mutex::new(Vec::new());
    let ctx = Ctx {
        m,
        dest: &dest,
        overwrite: opts.overwrite,
        meter,
        problems: &problems,
    };
    let kept = write(&ctx, &plan)?;
    meter.finish();
    report.problems = problems.into_inner().unwrap();
    report.kept = kept
        .into_iter()
        .map(|(path, reason)| Kept {
            path: path.display().to_string(),
            reason,
        })
        .collect();
    for p in &report.problems {
        warn!(problem = %p, "restore");
    }
    info!(backup = %id, target = %base.display(), files = report.files, bytes = report.bytes, kept = report.kept.len(), "restore finished");
    Ok(report)
}

/// A writer's share: entries of one directory.
struct Job<'p> {
    dir: Arc<OwnedFd>,
    /// The directory item (`None`: the top), for messages.
    at: Option<usize>,
    /// Items of the plan.
    items: &'p [usize],
    /// Entries without items of their own ([`Plan::rest`]).
    rest: Vec<Entry>,
}

/// Write the plan; returns the paths kept (with why), in plan order.
fn write(ctx: &Ctx, plan: &Plan) -> Result<Vec<(PathBuf, KeptReason)>> {
    let items = &plan.items;
    let n = items.len();
    // Entries written by the parallel writers (not directories, not further hard-link names),
    // grouped by directory in plan order.
    let mut by_dir: Vec<usize> = (0..n)
        .filter(|&i| items[i].entry.kind != EntryKind::Dir && items[i].link_to.is_none())
        .collect();
    by_dir.sort_by_key(|&i| items[i].parent.map_or(0, |p| p + 1));
    let mut groups: HashMap<Option<usize>, std::ops::Range<usize>> = HashMap::new();
    let mut s = 0;
    while s < by_dir.len() {
        let p = items[by_dir[s]].parent;
        let e = s + by_dir[s..].partition_point(|&i| items[i].parent == p);
        groups.insert(p, s..e);
        s = e;
    }
    let link_sources: std::collections::HashSet<usize> =
        items.iter().filter_map(|it| it.link_to).collect();
    let kept = Mutex::new(Vec::new());
    let written: Mutex<HashMap<usize, Ident>> = Mutex::new(HashMap::new());
    // Items not restored because a directory above them was kept.
    let mut gone = vec![false; n];
    let mut ids = vec![Ident::default(); n];

    // 1. Directories in pre-order, sequentially; the entries of each directory go to the
    //    parallel writers in batches as soon as it is open.
    let run = |batch: &mut Vec<Job>| -> Result<()> {
        let r = batch.par_iter().try_for_each(|job| -> Result<()> {
            for &i in job.items {
                let e = &items[i].entry;
                match ctx.put(&job.dir, e, None, &|| ctx.dest.path(plan, i))? {
                    Put::Kept(why) => kept.lock().unwrap().push((ctx.dest.path(plan, i), why)),
                    Put::Written(id) if link_sources.contains(&i) => {
                        written.lock().unwrap().insert(i, id);
                    }
                    Put::Written(_) => {}
                }
            }
            for e in &job.rest {
                let path = || ctx.dest.path_in(plan, job.at, &e.name.0);
                if let Put::Kept(why) = ctx.put(&job.dir, e, None, &path)? {
                    kept.lock().unwrap().push((path(), why));
                }
            }
            Ok(())
        });
        batch.clear();
        r
    };
    let mut batch: Vec<Job> = Vec::new();
    let mut cursor = Cursor::new(ctx.dest, plan);
    let root = cursor.dir(None, &ids)?;
    let rest = plan.rest(ctx.m, None)?;
    jobs(
        &mut batch,
        &by_dir,
        groups.get(&None),
        plan,
        (None, &root),
        rest,
    );
    drop(root);
    for d in 0..n {
        if items[d].entry.kind != EntryKind::Dir {
            continue;
        }
        if items[d].parent.is_some_and(|p| gone[p]) {
            gone[d] = true;
            continue;
        }
        let parent = cursor.dir(items[d].parent, &ids)?;
        let made = dest::make_dir(ctx.dest, &parent, &items[d].entry, ctx.overwrite, &|| {
            ctx.dest.path(plan, d)
        })?;
        match made {
            DirMade::Kept(why) => {
                gone[d] = true;
                kept.lock().unwrap().push((ctx.dest.path(plan, d), why));
            }
            DirMade::Open(fd, id) => {
                ids[d] = id;
                let fd = Arc::new(fd);
                let rest = plan.rest(ctx.m, Some(d))?;
                jobs(
                    &mut batch,
                    &by_dir,
                    groups.get(&Some(d)),
                    plan,
                    (Some(d), &fd),
                    rest,
                );
                cursor.push(d, fd);
            }
        }
        if batch.len() >= BATCH {
            run(&mut batch)?;
        }
    }
    run(&mut batch)?;
    // Entries under kept directories were never scheduled, but their skipping is silent:
    // the kept directory is reported.

    // 2. Further names of hard-linked files. If the first name was kept, the first further
    //    name that is written gets the content and the rest link to it.
    let mut written = written.into_inner().unwrap();
    let mut from_cursor = Cursor::new(ctx.dest, plan);
    let mut source: HashMap<usize, usize> = HashMap::new();
    for i in 0..n {
        let Some(first) = items[i].link_to else {
            continue;
        };
        if items[i].parent.is_some_and(|p| gone[p]) {
            continue;
        }
        let src = *source.get(&first).unwrap_or(&first);
        let dir = cursor.dir(items[i].parent, &ids)?;
        let path = || ctx.dest.path(plan, i);
        let put = match written.get(&src) {
            Some(&id) => {
                let from = from_cursor.dir(items[src].parent, &ids)?;
                ctx.put(
                    &dir,
                    &items[i].entry,
                    Some((&from, plan.name(src), id)),
                    &path,
                )?
            }
            None => ctx.put(&dir, &items[i].entry, None, &path)?,
        };
        match put {
            Put::Kept(why) => kept.lock().unwrap().push((ctx.dest.path(plan, i), why)),
            Put::Written(id) => {
                if !written.contains_key(&src) {
                    written.insert(i, id);
                    source.insert(first, i);
                }
            }
        }
    }
    drop(from_cursor);

    // 3. Directory attributes, deepest first (writing into a directory changes its mtime).
    for d in (0..n).rev() {
        if items[d].entry.kind != EntryKind::Dir || gone[d] {
            continue;
        }
        let fd = cursor.dir(Some(d), &ids)?;
        ctx.meta(Node::Fd(fd.as_fd()), &items[d].entry, &|| {
            ctx.dest.path(plan, d)
        });
    }
    let mut kept = kept.into_inner().unwrap();
    // Paths sort component by component: the plan's depth-first order.
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(kept)
}

/// Cut the entries of one directory (`at`, open as `fd`) into jobs: its items `of`, and
/// `rest`, its entries without items.
fn jobs<'p>(
    batch: &mut Vec<Job<'p>>,
    by_dir: &'p [usize],
    of: Option<&std::ops::Range<usize>>,
    plan: &Plan,
    (at, fd): (Option<usize>, &Arc<OwnedFd>),
    rest: Vec<Entry>,
) {
    // Cut a list of sizes where a job is full.
    let cut = |sizes: &mut dyn Iterator<Item = u64>| {
        let (mut take, mut bytes) = (0, 0);
        for size in sizes {
            if take == JOB_ITEMS || bytes >= JOB_BYTES {
                break;
            }
            bytes += size;
            take += 1;
        }
        take
    };
    let mut items = of.map_or(&by_dir[..0], |of| &by_dir[of.clone()]);
    while !items.is_empty() {
        let take = cut(&mut items.iter().map(|&i| plan.items[i].entry.size));
        batch.push(Job {
            dir: fd.clone(),
            at,
            items: &items[..take],
            rest: Vec::new(),
        });
        items = &items[take..];
    }
    let mut rest = rest.into_iter().peekable();
    while rest.peek().is_some() {
        let mut job = Vec::new();
        let mut bytes = 0;
        while let Some(e) = rest.next_if(|_| job.len() < JOB_ITEMS && bytes < JOB_BYTES) {
            bytes += e.size;
            job.push(e);
        }
        batch.push(Job {
            dir: fd.clone(),
            at,
            items: &[],
            rest: job,
        });
    }
}

fn tally(r: &mut Report, plan: &Plan) {
    r.files += plan.rest.files;
    r.links += plan.rest.symlinks;
    r.other += plan.rest.other;
    r.bytes += plan.rest.bytes;
    for it in &plan.items {
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
