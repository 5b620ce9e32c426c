//! Making a backup: walk the sources, compare with the parent's index, store what changed,
//! write the index (listings), the header, and commit by listing the backup in the tree.
//!
//! Invariants:
//! - nothing is committed before every pack and listing is durable (the store fsyncs packs;
//!   the header and tree go through `fsio::atomic_write`);
//! - a failed or cancelled backup leaves the medium as it was: its packs are removed at once,
//!   and recovery removes them if we die first;
//! - problems with single source files (unreadable, changed while read) are recorded in the
//!   header, which is then marked partial; they never abort the backup.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ids::{BackupId, BlockId};
use crate::listing::{Bytes, Entry, EntryKind, Listing};
use crate::medium::{self, BackupHeader, Counts, Medium, Problem};
use crate::progress::Meter;
use crate::scan::{self, Found};
use crate::store::pack::BlobKind;
use crate::store::{Store, BLOCK_SIZE};
use crate::tree::{BackupRecord, Kind};
use chrono::{DateTime, Utc};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use tracing::{info, warn};

/// The walk waits on the device (stat of inodes not yet in memory) more than on the CPU, so
/// it runs on more threads than there are cores: 8 keep a cold walk faster than a plain
/// `find -printf %s`, where 2 make it half as fast.
fn walk_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let n = (4 * std::thread::available_parallelism().map_or(2, |n| n.get())).clamp(8, 32);
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("walk-{i}"))
            .build()
            .expect("walk threads")
    })
}

/// What to back up, and how.
pub struct Request<'a> {
    pub kind: Kind,
    /// The backup to compare against (required for incrementals, ignored for monthly).
    pub parent: Option<BackupId>,
    /// The backup's recorded start time (the CLI's `--at`, or now).
    pub at: DateTime<Utc>,
    pub config: &'a Config,
    pub meter: &'a Meter,
    pub cancel: &'a AtomicBool,
}

#[derive(Default)]
struct Tally {
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    specials: AtomicU64,
    files_read: AtomicU64,
    files_unchanged: AtomicU64,
    sockets: AtomicU64,
    excluded: AtomicU64,
    bytes_total: AtomicU64,
    bytes_read: AtomicU64,
}

struct Ctx<'a> {
    store: &'a Store,
    medium: &'a Medium,
    config: &'a Config,
    full: bool,
    /// Estimate only: stat and compare, read nothing, write nothing; count into `estimate`.
    dry: bool,
    estimate: AtomicU64,
    tally: Tally,
    problems: Mutex<Vec<Problem>>,
    meter: &'a Meter,
    cancel: &'a AtomicBool,
}

impl Ctx<'_> {
    fn problem(&self, path: &Path, error: impl std::fmt::Display) {
        warn!(path = %path.display(), %error, "backup problem");
        self.problems.lock().unwrap().push(Problem {
            path: path.to_string_lossy().into_owned(),
            error: error.to_string(),
        });
    }

    fn put_listing(&self, l: &Listing) -> Result<BlockId> {
        let bytes = l.encode();
        if self.dry {
            let id = BlockId::of(&bytes);
            if !self.store.contains(&id) {
                self.estimate
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            return Ok(id);
        }
        self.store.put(BlobKind::Listing, &bytes)
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Refused("backup cancelled".into()));
        }
        Ok(())
    }
}

/// The directories between `/` and the sources; a node marked `source` is walked for real.
#[derive(Default, Debug)]
struct VNode {
    source: bool,
    children: BTreeMap<OsString, VNode>,
}

fn source_tree(sources: &[PathBuf]) -> VNode {
    let mut root = VNode::default();
    for s in sources {
        let mut node = &mut root;
        for c in s.components().skip(1) {
            node = node
                .children
                .entry(c.as_os_str().to_os_string())
                .or_default();
        }
        node.source = true;
    }
    root
}

/// Make a backup on `medium` (opened for writing). Returns the committed header.
pub fn run(medium: &mut Medium, req: &Request) -> Result<BackupHeader> {
    if !medium.writable() {
        return Err(Error::Refused("medium is not open for writing".into()));
    }
    let config = req.config;
    if config.sources.is_empty() {
        return Err(Error::Refused(
            "no sources to back up (set `sources` in the config or pass --source)".into(),
        ));
    }
    let mut sources = Vec::new();
    for s in &config.sources {
        let meta = std::fs::symlink_metadata(s).map_err(|cause| Error::Io {
            path: s.clone(),
            cause,
        })?;
        if !meta.is_dir() {
            return Err(Error::Refused(format!(
                "source {} is not a directory",
                s.display()
            )));
        }
        if s.starts_with(&medium.root) {
            return Err(Error::Refused(format!(
                "source {} is on the medium itself",
                s.display()
            )));
        }
        sources.push(s.clone());
    }
    let id = medium.tree.next_id;
    let parent = if req.kind.is_full() {
        None
    } else {
        let p = req.parent.ok_or_else(|| {
            Error::Refused(format!(
                "a {} backup needs a verified parent backup on this medium; make a monthly first",
                req.kind
            ))
        })?;
        let rec = medium.tree.get(p).ok_or(Error::NoSuchBackup(p))?;
        if !rec.verified {
            return Err(Error::Refused(format!(
                "backup {p} is not verified and cannot be a parent"
            )));
        }
        Some(medium.header(p)?)
    };
    info!(backup = %id, kind = %req.kind, parent = ?parent.as_ref().map(|p| p.id), "backup starting");
    if let Some(p) = &parent {
        req.meter.set_total(p.bytes.total);
    }
    let t0 = std::time::Instant::now();
    let store = &medium.store;
    store.begin(id.0, 0);
    let ctx = Ctx {
        store,
        medium,
        config,
        full: req.kind.is_full(),
        dry: false,
        estimate: AtomicU64::new(0),
        tally: Tally::default(),
        problems: Mutex::new(Vec::new()),
        meter: req.meter,
        cancel: req.cancel,
    };
    let vroot = source_tree(&sources);
    let walked = (|| {
        let root = walk_pool().install(|| {
            dir_listing(
                &ctx,
                Path::new("/"),
                &vroot,
                None,
                parent.as_ref().map(|p| p.root),
            )
        })?;
        ctx.check_cancel()?;
        let (packs, stats) = store.flush()?;
        Ok::<_, Error>((root, packs, stats))
    })();
    let (root, packs, stats) = match walked {
        Ok(v) => v,
        Err(e) => {
            store.abort();
            return Err(e);
        }
    };
    let t = &ctx.tally;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut problems = ctx.problems.into_inner().unwrap();
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    let elapsed = chrono::Duration::from_std(t0.elapsed()).unwrap_or_default();
    let header = BackupHeader {
        format: medium::HEADER_FORMAT,
        id,
        kind: req.kind,
        parent: parent.as_ref().map(|p| p.id),
        media_id: medium.media.media_id,
        host: medium::host_name(),
        sources: sources.clone(),
        started: req.at,
        finished: req.at + elapsed,
        software: format!("trayback {}", env!("CARGO_PKG_VERSION")),
        root,
        counts: Counts {
            files: get(&t.files),
            dirs: get(&t.dirs),
            symlinks: get(&t.symlinks),
            specials: get(&t.specials),
            files_read: get(&t.files_read),
            files_unchanged: get(&t.files_unchanged),
            sockets_skipped: get(&t.sockets),
            excluded: get(&t.excluded),
            blobs_new: stats.blocks,
        },
        bytes: medium::Bytes {
            total: get(&t.bytes_total),
            read: get(&t.bytes_read),
            new: stats.bytes_raw,
            stored: stats.bytes_stored,
        },
        partial: !problems.is_empty(),
        problems,
        packs,
    };
    let committed = (|| {
        medium.write_header(&header)?;
        medium.tree.add(BackupRecord {
            id,
            kind: header.kind,
            parent: header.parent,
            started: header.started,
            finished: header.finished,
            verified: false,
            partial: header.partial,
            bytes_total: header.bytes.total,
            bytes_new: header.bytes.new,
            bytes_stored: header.bytes.stored,
        });
        medium.save_tree()
    })();
    if let Err(e) = committed {
        medium.tree.remove(id);
        medium.tree.next_id = id;
        medium.store.abort();
        let _ = std::fs::remove_dir_all(medium.backup_dir(id));
        return Err(e);
    }
    req.meter.finish();
    info!(backup = %id, files = header.counts.files, new_bytes = header.bytes.new, partial = header.partial, "backup committed");
    Ok(header)
}

/// An upper bound on the bytes a backup would add: content of the files that differ from
/// backup `compare_with` (size, mtime, ctime, inode) plus the listings not yet stored. The
/// same walk as a backup, reading no file content and writing nothing.
pub fn estimate(
    medium: &Medium,
    config: &Config,
    compare_with: Option<BackupId>,
    cancel: &AtomicBool,
) -> Result<u64> {
    let parent_root = match compare_with {
        Some(p) => Some(medium.header(p)?.root),
        None => None,
    };
    let meter = Meter::hidden();
    let ctx = Ctx {
        store: &medium.store,
        medium,
        config,
        full: false,
        dry: true,
        estimate: AtomicU64::new(0),
        tally: Tally::default(),
        problems: Mutex::new(Vec::new()),
        meter: &meter,
        cancel,
    };
    walk_pool().install(|| {
        dir_listing(
            &ctx,
            Path::new("/"),
            &source_tree(&config.sources),
            None,
            parent_root,
        )
    })?;
    Ok(ctx.estimate.into_inner())
}

/// Build and store the listing of directory `path`. `vnode` restricts a directory above the
/// sources to the children on the way to them; `dev` is the source's device when
/// `one_file_system` applies; `parent` is this directory's listing in the parent backup.
fn dir_listing(
    ctx: &Ctx,
    path: &Path,
    vnode: &VNode,
    dev: Option<u64>,
    parent: Option<BlockId>,
) -> Result<BlockId> {
    ctx.check_cancel()?;
    let parent_listing = match parent {
        Some(id) => Some(ctx.medium.listing(&id)?),
        None => None,
    };
    let names: Vec<(OsString, Option<&VNode>)> = if vnode.source {
        match scan::read_dir_sorted(path) {
            Ok(names) => names.into_iter().map(|n| (n, None)).collect(),
            Err(e) => {
                ctx.problem(path, format!("cannot list directory: {e}"));
                Vec::new()
            }
        }
    } else {
        vnode
            .children
            .iter()
            .map(|(n, v)| (n.clone(), Some(v)))
            .collect()
    };
    let entries: Vec<Option<Entry>> = names
        .par_iter()
        .map(|(name, child)| {
            let prev = parent_listing.as_ref().and_then(|l| l.get(name.as_bytes()));
            entry_for(ctx, &path.join(name), name, *child, dev, prev)
        })
        .collect::<Result<_>>()?;
    let listing = Listing::new(entries.into_iter().flatten().collect());
    // An unchanged directory is its parent's listing: same id, nothing to encode or store.
    if let (Some(pl), Some(id)) = (&parent_listing, parent) {
        if pl.entries == listing.entries {
            return Ok(id);
        }
    }
    ctx.put_listing(&listing)
}

fn entry_for(
    ctx: &Ctx,
    path: &Path,
    name: &OsString,
    vnode: Option<&VNode>,
    dev: Option<u64>,
    prev: Option<&Entry>,
) -> Result<Option<Entry>> {
    let real = vnode.is_none_or(|v| v.source);
    // The medium never backs up itself, and excluded paths are left out.
    if vnode.is_none() && (path == ctx.medium.root || ctx.config.exclude_set.is_match(path)) {
        ctx.tally.excluded.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    }
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound && vnode.is_none() => return Ok(None), // deleted since listed
        Err(e) => {
            ctx.problem(path, format!("cannot stat: {e}"));
            return Ok(None);
        }
    };
    let mut entry = match scan::entry_from(name.as_bytes(), &md) {
        Found::Entry(e) => e,
        Found::Socket => {
            ctx.tally.sockets.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
    };
    // Any change to extended attributes changes ctime: an entry whose ctime and inode match
    // the parent's keeps the parent's xattrs without asking (a full backup always asks).
    let same_inode = prev.is_some_and(|p| {
        p.kind == entry.kind
            && p.ctime_ns == entry.ctime_ns
            && p.ino == entry.ino
            && p.dev == entry.dev
    });
    if same_inode && !ctx.full {
        entry.xattrs = prev.unwrap().xattrs.clone();
    } else {
        match scan::xattrs(path) {
            Ok(x) => entry.xattrs = x,
            Err(e) => ctx.problem(path, format!("cannot read extended attributes: {e}")),
        }
    }
    let t = &ctx.tally;
    match entry.kind {
        EntryKind::Dir => {
            t.dirs.fetch_add(1, Ordering::Relaxed);
            let prev_sub = prev
                .filter(|p| p.kind == EntryKind::Dir)
                .and_then(|p| p.subtree);
            let child_dev = if vnode.is_some_and(|v| v.source) {
                Some(md.dev())
            } else {
                dev
            };
            let other_fs = real && ctx.config.one_file_system && dev.is_some_and(|d| d != md.dev());
            let sub = if other_fs {
                ctx.store
                    .put(BlobKind::Listing, &Listing::new(Vec::new()).encode())?
            } else {
                let leaf = VNode {
                    source: true,
                    children: BTreeMap::new(),
                };
                dir_listing(
                    ctx,
                    path,
                    vnode.unwrap_or(&leaf),
                    child_dev.filter(|_| ctx.config.one_file_system),
                    prev_sub,
                )?
            };
            entry.subtree = Some(sub);
        }
        EntryKind::File => {
            t.files.fetch_add(1, Ordering::Relaxed);
            let unchanged = !ctx.full
                && prev.is_some_and(|p| {
                    p.kind == EntryKind::File
                        && p.size == entry.size
                        && p.mtime_ns == entry.mtime_ns
                        && p.ctime_ns == entry.ctime_ns
                        && p.ino == entry.ino
                });
            if ctx.dry && !unchanged {
                ctx.estimate.fetch_add(
                    entry.size + 36 * entry.size.div_ceil(BLOCK_SIZE as u64),
                    Ordering::Relaxed,
                );
            } else if unchanged {
                entry.blocks = prev.unwrap().blocks.clone();
                t.files_unchanged.fetch_add(1, Ordering::Relaxed);
                ctx.meter.add(1, entry.size);
            } else {
                ctx.check_cancel()?;
                match read_file(ctx, path, &mut entry) {
                    Ok(()) => {
                        t.files_read.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(ReadError::Source(e)) => {
                        ctx.problem(path, format!("cannot read: {e}"));
                        return Ok(None);
                    }
                    Err(ReadError::Medium(e)) => return Err(e),
                }
            }
            t.bytes_total.fetch_add(entry.size, Ordering::Relaxed);
        }
        EntryKind::Symlink => {
            t.symlinks.fetch_add(1, Ordering::Relaxed);
            match std::fs::read_link(path) {
                Ok(target) => entry.target = Some(Bytes::from_os(target.as_os_str())),
                Err(e) => {
                    ctx.problem(path, format!("cannot read symlink: {e}"));
                    return Ok(None);
                }
            }
        }
        EntryKind::Fifo | EntryKind::Char | EntryKind::Block => {
            t.specials.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(Some(entry))
}

enum ReadError {
    Source(io::Error),
    Medium(Error),
}

/// Read a file's content into blocks. Attributes come from the open file, so they describe
/// the content read; a file that changed meanwhile is stored as read and reported.
fn read_file(ctx: &Ctx, path: &Path, entry: &mut Entry) -> Result<(), ReadError> {
    let mut f = File::open(path).map_err(ReadError::Source)?;
    let before = f.metadata().map_err(ReadError::Source)?;
    if let Found::Entry(e) = scan::entry_from(entry.name.0.as_slice(), &before) {
        let xattrs = std::mem::take(&mut entry.xattrs);
        *entry = e;
        entry.xattrs = xattrs;
    }
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; BLOCK_SIZE]);
    }
    BUF.with(|b| read_blocks(ctx, &mut f, &before, path, entry, &mut b.borrow_mut()))
}

/// The body of [`read_file`], with a reused block buffer.
fn read_blocks(
    ctx: &Ctx,
    f: &mut File,
    before: &std::fs::Metadata,
    path: &Path,
    entry: &mut Entry,
    buf: &mut [u8],
) -> Result<(), ReadError> {
    let mut size = 0u64;
    let mut blocks = Vec::with_capacity((before.len() as usize).div_ceil(BLOCK_SIZE));
    loop {
        let n = read_full(f, buf).map_err(ReadError::Source)?;
        if n == 0 {
            break;
        }
        let id = ctx
            .store
            .put(BlobKind::Data, &buf[..n])
            .map_err(ReadError::Medium)?;
        blocks.push(id);
        size += n as u64;
        ctx.meter.add(0, n as u64);
        ctx.tally.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        if n < BLOCK_SIZE {
            break;
        }
    }
    ctx.meter.add(1, 0);
    let after = f.metadata().map_err(ReadError::Source)?;
    if after.mtime() != before.mtime()
        || after.mtime_nsec() != before.mtime_nsec()
        || after.ctime() != before.ctime()
        || after.ctime_nsec() != before.ctime_nsec()
        || after.len() != size
    {
        ctx.problem(
            path,
            "changed while being read; the stored copy may be inconsistent",
        );
    }
    entry.size = size;
    entry.blocks = blocks;
    Ok(())
}

/// Fill `buf` unless the file ends first; returns the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
