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
use crate::error::{Error, IoContext, Result};
use crate::ids::{BackupId, BlockId};
use crate::listing::{Bytes, Entry, EntryKind, Listing};
use crate::medium::{self, BackupHeader, Counts, Medium, Problem};
use crate::progress::Meter;
use crate::scan::{self, Attrs};
use crate::store::pack::BlobKind;
use crate::store::{Store, BLOCK_SIZE};
use crate::tree::{BackupRecord, Kind};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use tracing::{debug, info, warn};
use walk::{At, Child, Sub};

mod walk;

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

/// The configured sources as real paths (a symlink on the way to a source is resolved, so the
/// walk from `/` reaches it), each an existing directory not on the medium.
fn resolve_sources(medium: &Medium, config: &Config) -> Result<Vec<PathBuf>> {
    let medium_root = std::fs::canonicalize(&medium.root).at(&medium.root)?;
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
    std::fs::metadata(&medium.root)
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
    if req.verify_after {
        store.check_packs_as_written();
    }
    let ctx = Ctx {
        store,
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
        let root = walk_sources(&ctx, &vroot, parent.as_ref().map(|p| p.root))?;
        ctx.check_cancel()?;
        let (packs, stats) = store.flush()?;
        Ok::<_, Error>((root, packs, stats))
    })();
    let (root, packs, stats) = match walked {
        Ok(v) => {
            debug!(
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "sources walked, packs durable"
            );
            v
        }
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
    let vroot = source_tree(&resolve_sources(medium, config)?);
    walk_sources(&ctx, &vroot, parent_root)?;
    Ok(ctx.estimate.into_inner())
}

/// Walk the sources from `/` (`vroot`) on the walk threads, comparing with the parent
/// backup's listing of `/`; returns the new listing of `/`.
fn walk_sources<'a>(
    ctx: &Ctx<'a>,
    vroot: &'a VNode,
    parent_root: Option<BlockId>,
) -> Result<BlockId> {
    // `/` itself as a source: with `one_file_system`, its children stay on its device.
    let dev = if vroot.source && ctx.config.one_file_system {
        std::fs::metadata("/").ok().map(|m| m.dev())
    } else {
        None
    };
    let root = DirJob {
        vnode: vroot,
        dev,
        prev: parent_root,
        entry: None,
        prev_entry: None,
        keep_xattrs: false,
        path: None,
        prev_len: 0,
    };
    let made = walk_pool().install(|| walk::walk(ctx, c"/", vroot.source, root))?;
    Ok(made
        .entry
        .subtree
        .expect("a directory's entry has its listing"))
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

/// What the backup keeps for a directory being walked, until its listing is made.
struct DirJob<'v> {
    /// Above the sources: the children on the way to them; below: [`LEAF`].
    vnode: &'v VNode,
    /// The device the directory's children must be on (`one_file_system`), if any.
    dev: Option<u64>,
    /// The directory's listing in the parent backup.
    prev: Option<BlockId>,
    /// Its entry in its own parent (the subtree is set when it is finished); `None` for `/`.
    entry: Option<Entry>,
    /// Its entry in the parent backup.
    prev_entry: Option<Entry>,
    /// Its attributes match the parent backup's inode: its xattrs are the parent's too.
    keep_xattrs: bool,
    /// Its path, while its names are looked at and excludes apply.
    path: Option<PathBuf>,
    /// Entries of `prev`.
    prev_len: usize,
}

/// Below the sources every directory is listed in full.
static LEAF: VNode = VNode {
    source: true,
    children: BTreeMap::new(),
};

/// A name of a directory that needs more than its `lstat`: a file to read, anything whose
/// attributes changed, a directory on another file system.
struct Work<'v> {
    seen: Seen<'v>,
    prev: Option<Entry>,
}

/// An entry made, and whether it is the parent backup's entry unchanged.
struct Made {
    entry: Entry,
    unchanged: bool,
}

/// The backup's side of the walk: what is done with each directory and each name.
///
/// A directory is listed and its entries `lstat`ed relative to its descriptor. Entries whose
/// attributes all match the parent's are taken over as they are, without reading anything;
/// when every entry is taken over, the directory's listing is the parent's, same id.
impl<'a> walk::Visitor for Ctx<'a> {
    type Dir = DirJob<'a>;
    type Name = (CString, Option<&'a VNode>);
    type Seen = Seen<'a>;
    type Item = Work<'a>;
    type Out = Made;

    /// Read the directory's xattrs and its names (above the sources: `vnode`'s children).
    fn list(
        &self,
        job: &mut DirJob<'a>,
        at: &At<'_, Self>,
        fd: io::Result<&OwnedFd>,
    ) -> Result<Vec<Self::Name>> {
        self.check_cancel()?;
        let fd = match fd {
            Ok(fd) => fd,
            Err(e) => {
                self.problem(&at.path(), format!("cannot open directory: {e}"));
                return Ok(Vec::new());
            }
        };
        if let Some(entry) = job.entry.as_mut().filter(|_| !job.keep_xattrs) {
            let read = if job.vnode.source {
                scan::xattrs_fd(fd)
            } else {
                scan::xattrs_opath(fd)
            };
            match read {
                Ok(x) => entry.xattrs = x,
                Err(e) => self.problem(&at.path(), format!("cannot read extended attributes: {e}")),
            }
        }
        if !self.config.exclude_set.is_empty() {
            job.path = Some(at.path());
        }
        if !job.vnode.source {
            return Ok(job
                .vnode
                .children
                .iter()
                .filter_map(|(n, v)| Some((CString::new(n.as_bytes()).ok()?, Some(v))))
                .collect());
        }
        Ok(match scan::read_dir_sorted(fd) {
            Ok(names) => names.into_iter().map(|n| (n, None)).collect(),
            Err(e) => {
                self.problem(&at.path(), format!("cannot list directory: {e}"));
                Vec::new()
            }
        })
    }

    /// `lstat` one name. Excluded names, sockets, the medium itself and names that vanished
    /// are left out; what cannot be read is reported as a problem.
    fn look(
        &self,
        job: &DirJob<'a>,
        at: &At<'_, Self>,
        dir: &OwnedFd,
        (name, vnode): Self::Name,
    ) -> Option<Seen<'a>> {
        let full = || {
            let name = OsStr::from_bytes(name.as_bytes());
            match &job.path {
                Some(p) => p.join(name),
                None => at.path().join(name),
            }
        };
        if vnode.is_none()
            && !self.config.exclude_set.is_empty()
            && self.config.exclude_set.is_match(full())
        {
            self.tally.excluded.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let st = match scan::lstat_at(dir, &name) {
            Ok(st) => st,
            // Deleted since it was listed.
            Err(e) if e.kind() == io::ErrorKind::NotFound && vnode.is_none() => return None,
            Err(e) => {
                self.problem(&full(), format!("cannot stat: {e}"));
                return None;
            }
        };
        let Some(attrs) = Attrs::from_stat(&st) else {
            self.tally.sockets.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        // The medium never backs up itself.
        if attrs.kind == EntryKind::Dir && Some((attrs.dev, attrs.ino)) == self.medium_inode {
            self.tally.excluded.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let target = if attrs.kind == EntryKind::Symlink {
            match scan::readlink_at(dir, &name) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.problem(&full(), format!("cannot read symlink: {e}"));
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
    }

    /// Take over what the parent backup describes exactly; walk directories; work on the rest.
    fn plan(
        &self,
        job: &mut DirJob<'a>,
        _at: &At<'_, Self>,
        seen: Vec<Seen<'a>>,
    ) -> Result<Vec<Child<Self>>> {
        job.path = None;
        let prev_entries = match job.prev {
            Some(id) => self.medium.listing(&id)?.entries,
            None => Vec::new(),
        };
        job.prev_len = prev_entries.len();
        let mut quick = Quick::default();
        let mut children = Vec::with_capacity(seen.len());
        for (s, prev) in pair_with_parent(seen, prev_entries) {
            children.push(match prev {
                Some(p) if takes_over(self, &s, &p) => {
                    quick.count(&p);
                    Child::Done(Made {
                        entry: p,
                        unchanged: true,
                    })
                }
                prev if s.attrs.kind == EntryKind::Dir => self.descend(job, s, prev),
                prev => Child::Work(Work { seen: s, prev }),
            });
        }
        quick.add_to(self);
        Ok(children)
    }

    fn work(&self, w: Work<'a>, at: &At<'_, Self>) -> Result<Option<Made>> {
        let Some(entry) = self.entry_for(at, w.seen, w.prev.as_ref())? else {
            return Ok(None);
        };
        let unchanged = w.prev.as_ref() == Some(&entry);
        Ok(Some(Made { entry, unchanged }))
    }

    /// Store the directory's listing (unless it is the parent backup's, unchanged).
    fn finish(&self, job: DirJob<'a>, _at: &At<'_, Self>, outs: Vec<Made>) -> Result<Made> {
        let same = outs.iter().filter(|m| m.unchanged).count();
        let listing = match job.prev {
            Some(id) if same == job.prev_len && outs.len() == job.prev_len => id,
            _ => self.put_listing(&Listing::new(outs.into_iter().map(|m| m.entry).collect()))?,
        };
        let mut entry = job
            .entry
            .unwrap_or_else(|| Entry::new(Bytes(Vec::new()), EntryKind::Dir));
        entry.subtree = Some(listing);
        let unchanged = job.prev_entry.as_ref() == Some(&entry);
        Ok(Made { entry, unchanged })
    }
}

impl<'a> Ctx<'a> {
    /// A subdirectory to walk, or (on another file system with `one_file_system`) to record
    /// with an empty listing.
    fn descend(&self, job: &DirJob<'a>, s: Seen<'a>, prev: Option<Entry>) -> Child<Self> {
        self.tally.dirs.fetch_add(1, Ordering::Relaxed);
        let a = s.attrs;
        let real = s.vnode.is_none_or(|v| v.source);
        if real && self.config.one_file_system && job.dev.is_some_and(|d| d != a.dev) {
            return Child::Work(Work { seen: s, prev });
        }
        let keep_xattrs = !self.full && same_inode(&a, prev.as_ref());
        let mut entry = a.entry(s.name.as_bytes().to_vec());
        if keep_xattrs {
            entry.xattrs = prev.as_ref().map(|p| p.xattrs.clone()).unwrap_or_default();
        }
        let dev = if s.vnode.is_some_and(|v| v.source) {
            Some(a.dev)
        } else {
            job.dev
        };
        let vnode = s.vnode.unwrap_or(&LEAF);
        Child::Dir(Sub {
            name: s.name,
            id: (a.dev, a.ino),
            list: vnode.source,
            dir: DirJob {
                vnode,
                dev: dev.filter(|_| self.config.one_file_system),
                prev: prev
                    .as_ref()
                    .filter(|p| p.kind == EntryKind::Dir)
                    .and_then(|p| p.subtree),
                entry: Some(entry),
                prev_entry: prev,
                keep_xattrs,
                path: None,
                prev_len: 0,
            },
        })
    }

    /// The entry for one name the parent's entry does not describe, other than a directory to
    /// walk: a new or changed file (read), anything whose attributes changed, a directory on
    /// another file system. `None`: left out (a problem is recorded).
    fn entry_for(
        &self,
        at: &At<'_, Self>,
        seen: Seen,
        prev: Option<&Entry>,
    ) -> Result<Option<Entry>> {
        let a = seen.attrs;
        let name = seen.name;
        let path = || at.path().join(OsStr::from_bytes(name.as_bytes()));
        let mut entry = a.entry(name.as_bytes().to_vec());
        // Any change to extended attributes changes ctime: an entry whose ctime and inode match
        // the parent's keeps the parent's xattrs without asking (a full backup always asks).
        let keep_xattrs = !self.full && same_inode(&a, prev);
        if keep_xattrs {
            entry.xattrs = prev.unwrap().xattrs.clone();
        }
        let xattrs = |entry: &mut Entry| match at.fd().and_then(|dir| scan::xattrs_at(&dir, &name))
        {
            Ok(x) => entry.xattrs = x,
            Err(e) => self.problem(&path(), format!("cannot read extended attributes: {e}")),
        };
        let t = &self.tally;
        match entry.kind {
            EntryKind::Dir => {
                if !keep_xattrs {
                    xattrs(&mut entry);
                }
                entry.subtree = Some(self.put_listing(&Listing::new(Vec::new()))?);
            }
            EntryKind::File => {
                t.files.fetch_add(1, Ordering::Relaxed);
                let unchanged = !self.full
                    && prev.is_some_and(|p| {
                        p.kind == EntryKind::File
                            && p.size == entry.size
                            && p.mtime_ns == entry.mtime_ns
                            && p.ctime_ns == entry.ctime_ns
                            && p.ino == entry.ino
                    });
                if self.dry && !unchanged {
                    if !keep_xattrs {
                        xattrs(&mut entry);
                    }
                    self.estimate.fetch_add(
                        entry.size + 36 * entry.size.div_ceil(BLOCK_SIZE as u64),
                        Ordering::Relaxed,
                    );
                } else if unchanged {
                    if !keep_xattrs {
                        xattrs(&mut entry);
                    }
                    entry.blocks = prev.unwrap().blocks.clone();
                    t.files_unchanged.fetch_add(1, Ordering::Relaxed);
                    self.meter.add(1, entry.size);
                } else {
                    self.check_cancel()?;
                    match self.read_file(at, &name, &mut entry, !keep_xattrs) {
                        Ok(()) => {
                            t.files_read.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(ReadError::Source(e)) => {
                            self.problem(&path(), format!("cannot read: {e}"));
                            return Ok(None);
                        }
                        Err(ReadError::Medium(e)) => return Err(e),
                    }
                }
                t.bytes_total.fetch_add(entry.size, Ordering::Relaxed);
            }
            EntryKind::Symlink => {
                t.symlinks.fetch_add(1, Ordering::Relaxed);
                if !keep_xattrs {
                    xattrs(&mut entry);
                }
                entry.target = seen.target.map(Bytes);
            }
            EntryKind::Fifo | EntryKind::Char | EntryKind::Block => {
                t.specials.fetch_add(1, Ordering::Relaxed);
                if !keep_xattrs {
                    xattrs(&mut entry);
                }
            }
        }
        Ok(Some(entry))
    }
}

/// Whether `a` is the inode of the parent's entry `p`, with no status change since.
fn same_inode(a: &Attrs, p: Option<&Entry>) -> bool {
    p.is_some_and(|p| {
        p.kind == a.kind && p.ctime_ns == a.ctime_ns && p.ino == a.ino && p.dev == a.dev
    })
}

/// Pair each listed name with its entry in the parent's listing (both are sorted by name).
fn pair_with_parent<'v>(seen: Vec<Seen<'v>>, parent: Vec<Entry>) -> Vec<(Seen<'v>, Option<Entry>)> {
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

enum ReadError {
    Source(io::Error),
    Medium(Error),
}

impl Ctx<'_> {
    /// Read file `name` of directory `at` into blocks, and its xattrs when `xattrs`.
    /// Attributes come from the open file, so they describe the content read; a file that
    /// changed meanwhile is stored as read and reported.
    fn read_file(
        &self,
        at: &At<'_, Self>,
        name: &CStr,
        entry: &mut Entry,
        xattrs: bool,
    ) -> Result<(), ReadError> {
        let dir = at.fd().map_err(ReadError::Source)?;
        let mut f = scan::open_file_at(&dir, name).map_err(ReadError::Source)?;
        drop(dir);
        let before = scan::fstat(&f).map_err(ReadError::Source).and_then(|st| {
            match Attrs::from_stat(&st) {
                Some(a) if a.kind == EntryKind::File => Ok(a),
                _ => Err(ReadError::Source(io::Error::other(
                    "is no longer a regular file",
                ))),
            }
        })?;
        before.apply(entry);
        let path = || at.path().join(OsStr::from_bytes(name.to_bytes()));
        if xattrs {
            match scan::xattrs_fd(&f) {
                Ok(x) => entry.xattrs = x,
                Err(e) => self.problem(&path(), format!("cannot read extended attributes: {e}")),
            }
        }
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; BLOCK_SIZE]);
        }
        BUF.with(|b| read_blocks(self, &mut f, &before, &path, entry, &mut b.borrow_mut()))
    }
}

/// The body of [`read_file`], with a reused block buffer.
fn read_blocks(
    ctx: &Ctx,
    f: &mut File,
    before: &Attrs,
    path: &dyn Fn() -> PathBuf,
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
    let after = scan::fstat(f).ok().and_then(|st| Attrs::from_stat(&st));
    if after.is_none_or(|a| {
        a.mtime_ns != before.mtime_ns || a.ctime_ns != before.ctime_ns || a.size != size
    }) {
        ctx.problem(
            &path(),
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
