//! Making a backup: walk the sources, compare with the parent's index, store what changed,
//! write the index (listings), the header, and commit by listing the backup in the tree.
//!
//! Invariants:
//! - nothing is committed before every pack and listing is durable (the store fsyncs packs;
//!   the header and tree are replaced atomically by the medium);
//! - a failed or cancelled backup leaves the medium as it was: its packs are removed at once,
//!   and recovery removes them if we die first;
//! - problems with single source files (unreadable, changed while read) are recorded in the
//!   header, which is then marked partial; they never abort the backup.

use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::ids::{BackupId, BlockId};
use crate::listing::{Bytes, Entry, EntryKind, Listing};
use crate::medium::{self, BackupHeader, BackupWriter, Counts, Medium, Problem};
use crate::progress::Meter;
use crate::scan::{self, Attrs};
use crate::store::pack::BlobKind;
use crate::store::{Store, BLOCK_SIZE};
use crate::tree::Kind;
use chrono::{DateTime, Utc};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use tracing::{debug, info, warn};

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
    /// A verify follows: re-read each pack from the device as soon as it is closed, in the
    /// background while the backup goes on, so the verify need not read it again.
    pub verify_after: bool,
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
    /// Where new blobs go (`None` for an estimate, which writes nothing).
    writer: Option<&'a BackupWriter<'a>>,
    medium: &'a Medium,
    medium_inode: Option<(u64, u64)>,
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
        self.writer()?.put(BlobKind::Listing, &bytes)
    }

    fn writer(&self) -> Result<&BackupWriter<'_>> {
        self.writer
            .ok_or_else(|| Error::Refused("an estimate writes nothing".into()))
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

/// The configured sources as real paths (a symlink on the way to a source is resolved, so the
/// walk from `/` reaches it), each an existing directory not on the medium.
fn resolve_sources(medium: &Medium, config: &Config) -> Result<Vec<PathBuf>> {
    let medium_root = std::fs::canonicalize(medium.root()).at(medium.root())?;
    let mut sources = Vec::new();
    for s in &config.sources {
        let meta = std::fs::symlink_metadata(s).at(s)?;
        if !meta.is_dir() {
            return Err(Error::Refused(format!(
                "source {} is not a directory",
                s.display()
            )));
        }
        let real = std::fs::canonicalize(s).at(s)?;
        if real.starts_with(&medium_root) {
            return Err(Error::Refused(format!(
                "source {} is on the medium itself",
                s.display()
            )));
        }
        if real != *s {
            info!(source = %s.display(), real = %real.display(), "source reached through a symlink");
        }
        sources.push(real);
    }
    Ok(sources)
}

/// The medium's root directory as `(dev, ino)`: the walk leaves it out wherever it is found.
fn medium_inode(medium: &Medium) -> Option<(u64, u64)> {
    std::fs::metadata(medium.root())
        .ok()
        .map(|m| (m.dev(), m.ino()))
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
    let sources = resolve_sources(medium, config)?;
    let id = medium.tree().next_id;
    let parent = if req.kind.is_full() {
        None
    } else {
        let p = req.parent.ok_or_else(|| {
            Error::Refused(format!(
                "a {} backup needs a verified parent backup on this medium; make a monthly first",
                req.kind
            ))
        })?;
        let rec = medium.tree().get(p).ok_or(Error::NoSuchBackup(p))?;
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
    let writer = medium.begin_backup(req.verify_after)?;
    let ctx = Ctx {
        store: medium.store(),
        writer: Some(&writer),
        medium,
        medium_inode: medium_inode(medium),
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
        let staged = writer.finish()?;
        Ok::<_, Error>((root, staged))
    })();
    // On an error the writer, dropped, deletes what it wrote.
    let (root, staged) = match walked {
        Ok(v) => {
            debug!(
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "sources walked, packs durable"
            );
            v
        }
        Err(e) => return Err(e),
    };
    let stats = staged.stats;
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
        media_id: medium.media().media_id,
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
        packs: staged.packs.clone(),
    };
    drop(writer);
    medium.commit_backup(staged, &header)?;
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
        store: medium.store(),
        writer: None,
        medium,
        medium_inode: medium_inode(medium),
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
            &source_tree(&resolve_sources(medium, config)?),
            None,
            parent_root,
        )
    })?;
    Ok(ctx.estimate.into_inner())
}

/// One name in a directory being walked, after `lstat`.
struct Seen<'v> {
    name: CString,
    /// Set above the sources: the directories on the way to them.
    vnode: Option<&'v VNode>,
    attrs: Attrs,
    /// Symlinks: the target, read relative to the directory.
    target: Option<Vec<u8>>,
}

/// Build and store the listing of directory `path`. `vnode` restricts a directory above the
/// sources to the children on the way to them; `dev` is the source's device when
/// `one_file_system` applies; `parent` is this directory's listing in the parent backup.
///
/// The directory is listed and its entries `lstat`ed relative to one open descriptor, which is
/// closed before the walk descends (so deep trees never hold many descriptors). Entries whose
/// attributes all match the parent's are taken over as they are, without reading anything;
/// when every entry is taken over, the directory's listing is the parent's, same id.
fn dir_listing(
    ctx: &Ctx,
    path: &Path,
    vnode: &VNode,
    dev: Option<u64>,
    parent: Option<BlockId>,
) -> Result<BlockId> {
    ctx.check_cancel()?;
    let parent_entries = match parent {
        Some(id) => ctx.medium.listing(&id)?.entries,
        None => Vec::new(),
    };
    let parent_len = parent_entries.len();
    let seen = scan_dir(ctx, path, vnode);
    let mut entries = Vec::with_capacity(seen.len());
    let mut same = 0;
    let mut work = Vec::new();
    let mut quick = Quick::default();
    for (s, prev) in pair_with_parent(seen, parent_entries) {
        match prev {
            Some(p) if takes_over(ctx, &s, &p) => {
                quick.count(&p);
                entries.push(p);
                same += 1;
            }
            prev => work.push((s, prev)),
        }
    }
    quick.add_to(ctx);
    let done: Vec<Option<(Entry, bool)>> = work
        .into_par_iter()
        .map(|(s, prev)| {
            let e = entry_for(ctx, path, s, dev, prev.as_ref())?;
            Ok(e.map(|e| {
                let unchanged = prev.as_ref() == Some(&e);
                (e, unchanged)
            }))
        })
        .collect::<Result<_>>()?;
    for (e, unchanged) in done.into_iter().flatten() {
        same += usize::from(unchanged);
        entries.push(e);
    }
    if let Some(id) = parent {
        if same == parent_len && entries.len() == parent_len {
            return Ok(id);
        }
    }
    ctx.put_listing(&Listing::new(entries))
}

/// List directory `path` (or, above the sources, take `vnode`'s children) and `lstat` each
/// name. Excluded names, sockets, the medium itself and names that vanished are left out;
/// what cannot be read is reported as a problem.
fn scan_dir<'v>(ctx: &Ctx, path: &Path, vnode: &'v VNode) -> Vec<Seen<'v>> {
    let dir = match scan::open_dir(path, vnode.source) {
        Ok(fd) => fd,
        Err(e) => {
            ctx.problem(path, format!("cannot open directory: {e}"));
            return Vec::new();
        }
    };
    let names: Vec<(CString, Option<&VNode>)> = if vnode.source {
        match scan::read_dir_sorted(&dir) {
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
            .filter_map(|(n, v)| Some((CString::new(n.as_bytes()).ok()?, Some(v))))
            .collect()
    };
    let excluding = !ctx.config.exclude_set.is_empty();
    names
        .into_par_iter()
        .with_min_len(8)
        .filter_map(|(name, vnode)| {
            let full = || path.join(OsStr::from_bytes(name.as_bytes()));
            if vnode.is_none() && excluding && ctx.config.exclude_set.is_match(full()) {
                ctx.tally.excluded.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let st = match scan::lstat_at(&dir, &name) {
                Ok(st) => st,
                // Deleted since it was listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound && vnode.is_none() => return None,
                Err(e) => {
                    ctx.problem(&full(), format!("cannot stat: {e}"));
                    return None;
                }
            };
            let Some(attrs) = Attrs::from_stat(&st) else {
                ctx.tally.sockets.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            // The medium never backs up itself.
            if attrs.kind == EntryKind::Dir && Some((attrs.dev, attrs.ino)) == ctx.medium_inode {
                ctx.tally.excluded.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let target = if attrs.kind == EntryKind::Symlink {
                match scan::readlink_at(&dir, &name) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        ctx.problem(&full(), format!("cannot read symlink: {e}"));
                        return None;
                    }
                }
            } else {
                None
            };
            Some(Seen {
                name,
                vnode,
                attrs,
                target,
            })
        })
        .collect()
}

/// Pair each listed name with its entry in the parent's listing (both are sorted by name).
fn pair_with_parent(seen: Vec<Seen>, parent: Vec<Entry>) -> Vec<(Seen, Option<Entry>)> {
    let mut parent = parent.into_iter().peekable();
    seen.into_iter()
        .map(|s| {
            let name = s.name.as_bytes();
            while parent.next_if(|p| p.name.0.as_slice() < name).is_some() {}
            let prev = parent.next_if(|p| p.name.0 == name);
            (s, prev)
        })
        .collect()
}

/// Whether the parent's entry `p` describes exactly what `lstat` found now (so content,
/// xattrs and target are the parent's too: any change to them changes ctime or the inode).
/// Never for directories, whose subtree may have changed, nor in a full backup, which reads
/// everything.
fn takes_over(ctx: &Ctx, s: &Seen, p: &Entry) -> bool {
    !ctx.full
        && s.attrs.kind != EntryKind::Dir
        && s.attrs.matches(p)
        && (s.attrs.kind != EntryKind::Symlink
            || p.target.as_ref().map(|t| &t.0) == s.target.as_ref())
}

/// Counts of the entries one directory took over from the parent, added up once.
#[derive(Default)]
struct Quick {
    files: u64,
    bytes: u64,
    symlinks: u64,
    specials: u64,
}

impl Quick {
    fn count(&mut self, e: &Entry) {
        match e.kind {
            EntryKind::File => {
                self.files += 1;
                self.bytes += e.size;
            }
            EntryKind::Symlink => self.symlinks += 1,
            EntryKind::Dir => {}
            EntryKind::Fifo | EntryKind::Char | EntryKind::Block => self.specials += 1,
        }
    }

    fn add_to(&self, ctx: &Ctx) {
        let t = &ctx.tally;
        t.files.fetch_add(self.files, Ordering::Relaxed);
        t.files_unchanged.fetch_add(self.files, Ordering::Relaxed);
        t.bytes_total.fetch_add(self.bytes, Ordering::Relaxed);
        t.symlinks.fetch_add(self.symlinks, Ordering::Relaxed);
        t.specials.fetch_add(self.specials, Ordering::Relaxed);
        if self.files > 0 {
            ctx.meter.add(self.files, self.bytes);
        }
    }
}

/// The entry for one name the parent's entry does not describe: a directory (walked), a new
/// or changed file (read), or anything whose attributes changed.
fn entry_for(
    ctx: &Ctx,
    dir: &Path,
    seen: Seen,
    dev: Option<u64>,
    prev: Option<&Entry>,
) -> Result<Option<Entry>> {
    let path = dir.join(OsStr::from_bytes(seen.name.as_bytes()));
    let a = seen.attrs;
    let mut entry = a.entry(seen.name.into_bytes());
    let real = seen.vnode.is_none_or(|v| v.source);
    // Any change to extended attributes changes ctime: an entry whose ctime and inode match
    // the parent's keeps the parent's xattrs without asking (a full backup always asks).
    let same_inode = prev.is_some_and(|p| {
        p.kind == a.kind && p.ctime_ns == a.ctime_ns && p.ino == a.ino && p.dev == a.dev
    });
    if same_inode && !ctx.full {
        entry.xattrs = prev.unwrap().xattrs.clone();
    } else {
        match scan::xattrs(&path) {
            Ok(x) => entry.xattrs = x,
            Err(e) => ctx.problem(&path, format!("cannot read extended attributes: {e}")),
        }
    }
    let t = &ctx.tally;
    match entry.kind {
        EntryKind::Dir => {
            t.dirs.fetch_add(1, Ordering::Relaxed);
            let prev_sub = prev
                .filter(|p| p.kind == EntryKind::Dir)
                .and_then(|p| p.subtree);
            let child_dev = if seen.vnode.is_some_and(|v| v.source) {
                Some(a.dev)
            } else {
                dev
            };
            let other_fs = real && ctx.config.one_file_system && dev.is_some_and(|d| d != a.dev);
            let sub = if other_fs {
                ctx.put_listing(&Listing::new(Vec::new()))?
            } else {
                let leaf = VNode {
                    source: true,
                    children: BTreeMap::new(),
                };
                dir_listing(
                    ctx,
                    &path,
                    seen.vnode.unwrap_or(&leaf),
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
                match read_file(ctx, &path, &mut entry) {
                    Ok(()) => {
                        t.files_read.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(ReadError::Source(e)) => {
                        ctx.problem(&path, format!("cannot read: {e}"));
                        return Ok(None);
                    }
                    Err(ReadError::Medium(e)) => return Err(e),
                }
            }
            t.bytes_total.fetch_add(entry.size, Ordering::Relaxed);
        }
        EntryKind::Symlink => {
            t.symlinks.fetch_add(1, Ordering::Relaxed);
            entry.target = seen.target.map(Bytes);
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
    let mut f = scan::open_file(path).map_err(ReadError::Source)?;
    let before =
        scan::fstat(&f)
            .map_err(ReadError::Source)
            .and_then(|st| match Attrs::from_stat(&st) {
                Some(a) if a.kind == EntryKind::File => Ok(a),
                _ => Err(ReadError::Source(io::Error::other(
                    "is no longer a regular file",
                ))),
            })?;
    before.apply(entry);
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; BLOCK_SIZE]);
    }
    BUF.with(|b| read_blocks(ctx, &mut f, &before, path, entry, &mut b.borrow_mut()))
}

/// The body of [`read_file`], with a reused block buffer.
fn read_blocks(
    ctx: &Ctx,
    f: &mut File,
    before: &Attrs,
    path: &Path,
    entry: &mut Entry,
    buf: &mut [u8],
) -> Result<(), ReadError> {
    let mut size = 0u64;
    let mut blocks = Vec::with_capacity((before.size as usize).div_ceil(BLOCK_SIZE));
    loop {
        let n = read_full(f, buf).map_err(ReadError::Source)?;
        if n == 0 {
            break;
        }
        let id = ctx
            .writer()
            .and_then(|w| w.put(BlobKind::Data, &buf[..n]))
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
    let after = scan::fstat(f).ok().and_then(|st| Attrs::from_stat(&st));
    if after.is_none_or(|a| {
        a.mtime_ns != before.mtime_ns || a.ctime_ns != before.ctime_ns || a.size != size
    }) {
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
