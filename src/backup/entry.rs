//! What a backup does with each directory and each name the walk reaches: the backup's
//! [`walk::Visitor`].
//!
//! Invariants:
//! - every name is looked at, opened and read relative to its directory's descriptor (the
//!   walk's), never by path; xattrs come from the open file, or through an `O_PATH`
//!   descriptor for what is not opened (symlinks, devices, FIFOs). The one exception stores
//!   nothing: an estimate reads xattrs by path where the path is short;
//! - an entry whose attributes all match the parent backup's is taken over without reading
//!   anything, and a directory whose entries all are keeps the parent's listing, same id;
//! - a problem with one name (vanished, replaced, unreadable) is recorded and leaves that name
//!   (or a directory's content) out; only the medium's errors and a cancel end the backup.

use super::walk::{self, At, Child, Sub};
use super::{walk_pool, Ctx, VNode};
use crate::error::{Error, Result};
use crate::ids::BlockId;
use crate::listing::{self, Bytes, Entries, Entry, EntryKind, Xattr, MAX_LISTING_LEN};
use crate::scan::{self, Attrs};
use crate::store::chunk::{self, AVG_BLOCK, CUT_BUFFER};
use crate::store::pack::BlobKind;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// The largest file a backup stores (1 TiB): its block ids (32 bytes per 256 KiB block, the
/// fixed size and the content-defined average) fill about half of the largest listing,
/// leaving the rest for its siblings; content cut into nothing but 192 KiB blocks, the
/// shortest, would fill two thirds.
pub const MAX_FILE_SIZE: u64 = (MAX_LISTING_LEN as u64 / 2 / 32) * AVG_BLOCK as u64;

/// Walk the sources from `/` (`vroot`) on the walk threads, comparing with the parent
/// backup's listing of `/`; returns the new listing of `/`.
pub(super) fn walk_sources<'a>(
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
        before: None,
        written: None,
        absorbed: 0,
        same: 0,
    };
    let made = walk_pool().install(|| walk::walk(ctx, c"/", vroot.source, root))?;
    Ok(made
        .entry
        .subtree
        .expect("a directory's entry has its listing"))
}

/// One name in a directory being walked, after `lstat`.
pub(super) struct Seen<'v> {
    name: CString,
    /// Set above the sources: the directories on the way to them.
    vnode: Option<&'v VNode>,
    attrs: Attrs,
    /// Symlinks: the target, read relative to the directory.
    target: Option<Vec<u8>>,
}

/// What the backup keeps for a directory being walked, until its listing is made.
pub(super) struct DirJob<'v> {
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
    /// `prev`'s entries, read as the names come (in batches, in name order).
    before: Option<Before>,
    /// The listing so far, when the directory came in more than one batch and its entries
    /// are not all the parent's first ones, unchanged (those are not written until one is
    /// not: they are in `before`).
    written: Option<listing::Writer>,
    /// Entries of the batches before (written, or the parent's first ones), and how many of
    /// them are the parent's, unchanged.
    absorbed: usize,
    same: usize,
}

/// The parent backup's listing of a directory, an entry at a time.
pub(super) struct Before {
    entries: Entries<Vec<u8>>,
    id: BlockId,
    /// The next entry, read and not yet paired.
    next: Option<Entry>,
}

impl Before {
    /// The entry named `name`, passing over those before it (names that are gone).
    fn take(&mut self, name: &[u8]) -> Result<Option<Entry>> {
        loop {
            if self.next.is_none() {
                self.next = self
                    .entries
                    .next_entry()
                    .map_err(|detail| Error::BadBlock {
                        id: self.id,
                        detail,
                    })?;
            }
            let Some(p) = &self.next else {
                return Ok(None);
            };
            match p.name.0.as_slice().cmp(name) {
                std::cmp::Ordering::Less => self.next = None,
                std::cmp::Ordering::Equal => return Ok(self.next.take()),
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
    }

    /// Entries paired or passed over so far.
    fn used(&self) -> usize {
        self.entries.count() - self.entries.left() - usize::from(self.next.is_some())
    }

    /// Pass the listing's first `n` entries to `push` (which writes them, checked as every
    /// entry of a listing written is).
    fn copy_first(&self, n: usize, push: &mut dyn FnMut(&Entry) -> Result<()>) -> Result<()> {
        let bad = |detail| Error::BadBlock {
            id: self.id,
            detail,
        };
        let mut again = Entries::new(self.entries.bytes()).map_err(bad)?;
        for _ in 0..n {
            match again.next_entry().map_err(bad)? {
                Some(e) => push(&e)?,
                None => return Err(bad("fewer entries than read before".into())),
            }
        }
        Ok(())
    }
}

/// Below the sources every directory is listed in full.
static LEAF: VNode = VNode {
    source: true,
    children: BTreeMap::new(),
};

/// A name of a directory that needs more than its `lstat`: a file to read, anything whose
/// attributes changed, a directory on another file system.
pub(super) struct Work<'v> {
    seen: Seen<'v>,
    prev: Option<Entry>,
}

/// An entry made, and whether it is the parent backup's entry unchanged.
pub(super) struct Made {
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
    /// Called for each batch of the directory's names, in name order.
    fn plan(
        &self,
        job: &mut DirJob<'a>,
        _at: &At<'_, Self>,
        seen: Vec<Seen<'a>>,
    ) -> Result<Vec<Child<Self>>> {
        if let (Some(id), None) = (job.prev, &job.before) {
            let bytes = self.medium.read_block(&id)?;
            let entries = Entries::new(bytes).map_err(|detail| Error::BadBlock { id, detail })?;
            job.before = Some(Before {
                entries,
                id,
                next: None,
            });
        }
        let mut quick = Quick::default();
        let mut children = Vec::with_capacity(seen.len());
        for s in seen {
            let prev = match &mut job.before {
                Some(b) => b.take(s.name.as_bytes())?,
                None => None,
            };
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

    /// A batch of the directory's entries, made: written to its listing, unless they and all
    /// before them are the parent's first entries, unchanged (a directory of one batch keeps
    /// its entries until `finish`, which may find them all unchanged).
    fn absorb(&self, job: &mut DirJob<'a>, _at: &At<'_, Self>, outs: Vec<Made>) -> Result<()> {
        let same = outs.iter().filter(|m| m.unchanged).count();
        let n = outs.len();
        let prefix = job.written.is_none()
            && same == n
            && job.same == job.absorbed
            && job.before.as_ref().map(Before::used) == Some(job.absorbed + n);
        if !prefix {
            let w = self.written(job, n)?;
            for m in &outs {
                self.push_entry(w, &m.entry)?;
            }
        }
        job.absorbed += n;
        job.same += same;
        Ok(())
    }

    fn lost(&self, _job: &mut DirJob<'a>, at: &At<'_, Self>, e: io::Error) {
        self.problem(
            &at.path(),
            format!("cannot open directory again to look at the rest of its names: {e}"),
        );
    }

    /// Store the directory's listing (unless it is the parent backup's, unchanged).
    fn finish(&self, mut job: DirJob<'a>, at: &At<'_, Self>, outs: Vec<Made>) -> Result<Made> {
        let same = job.same + outs.iter().filter(|m| m.unchanged).count();
        let total = job.absorbed + outs.len();
        let prev_len = job.before.as_ref().map(|b| b.entries.count());
        let listing = match job.prev {
            Some(id) if prev_len == Some(same) && total == same => id,
            _ => {
                let w = self.written(&mut job, outs.len())?;
                for m in &outs {
                    self.push_entry(w, &m.entry)?;
                }
                match job.written.take().expect("written above").finish() {
                    Ok(bytes) => self.put_encoded(bytes)?,
                    Err(too_long) => {
                        // One directory too large for the format must not fail the backup
                        // of everything else: it is kept empty, and the problem names it.
                        self.problem(&at.path(), format!("{too_long}: backed up empty"));
                        let empty = self.listing_writer(0).finish();
                        self.put_encoded(empty.expect("an empty listing fits"))?
                    }
                }
            }
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
    /// The directory's listing so far, with the parent's first entries absorbed unwritten
    /// written now.
    fn written<'j>(&self, job: &'j mut DirJob<'a>, hint: usize) -> Result<&'j mut listing::Writer> {
        if job.written.is_none() {
            let mut w = self.listing_writer(job.absorbed + hint);
            if job.absorbed > 0 {
                let before = job
                    .before
                    .as_ref()
                    .expect("absorbed unwritten: the parent's");
                before.copy_first(job.absorbed, &mut |e| self.push_entry(&mut w, e))?;
            }
            job.written = Some(w);
        }
        Ok(job.written.as_mut().expect("set above"))
    }

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
                before: None,
                written: None,
                absorbed: 0,
                same: 0,
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
        let xattrs = |entry: &mut Entry| match self.xattrs_at(at, &name) {
            Ok(x) => entry.xattrs = x,
            Err(e) => self.problem(&path(), format!("cannot read extended attributes: {e}")),
        };
        let t = &self.tally;
        match entry.kind {
            EntryKind::Dir => {
                if !keep_xattrs {
                    xattrs(&mut entry);
                }
                entry.subtree = Some(self.put_listing(Vec::new())?);
            }
            EntryKind::File if entry.size > MAX_FILE_SIZE => {
                // Its block list alone would not fit in one listing: leave it out (a user's
                // 15 TB sparse file must not fail every backup).
                self.problem(
                    &path(),
                    format!(
                        "{} bytes: larger than the largest file a listing holds ({MAX_FILE_SIZE} bytes); not backed up",
                        entry.size
                    ),
                );
                return Ok(None);
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
                            // Blocks cut by another chunker (a tree turned back to fixed
                            // blocks) would make a listing this medium's readers refuse.
                            && self.chunker.fits(p.size, p.blocks.len() as u64)
                    });
                if self.dry && !unchanged {
                    if !keep_xattrs {
                        xattrs(&mut entry);
                    }
                    // What the disk holds of it (a sparse file's holes store nothing, their
                    // zero blocks deduplicate: a file a user makes 15 TB long with `truncate`
                    // must not pare every backup), and 36 bytes of listing per block.
                    let blocks = entry.size.div_ceil(AVG_BLOCK as u64);
                    self.estimate
                        .fetch_add(a.allocated + 36 * blocks, Ordering::Relaxed);
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

impl Ctx<'_> {
    /// The xattrs of `name` in directory `at`, not following a symlink: through an `O_PATH`
    /// descriptor. An estimate stores nothing it reads, so it takes the cheaper way, by path
    /// (one call instead of three), where the path is short enough.
    fn xattrs_at(&self, at: &At<'_, Self>, name: &CStr) -> io::Result<Vec<Xattr>> {
        if self.dry {
            let path = at.path().join(OsStr::from_bytes(name.to_bytes()));
            if path.as_os_str().len() < SHORT_PATH {
                return scan::xattrs(&path);
            }
        }
        scan::xattrs_at(&*at.fd()?, name)
    }
}

/// Well below `PATH_MAX` (4096).
const SHORT_PATH: usize = 3072;

/// Whether `a` is the inode of the parent's entry `p`, with no status change since.
fn same_inode(a: &Attrs, p: Option<&Entry>) -> bool {
    p.is_some_and(|p| {
        p.kind == a.kind && p.ctime_ns == a.ctime_ns && p.ino == a.ino && p.dev == a.dev
    })
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
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; CUT_BUFFER]);
        }
        BUF.with(|b| read_blocks(self, &mut f, &before, &path, entry, &mut b.borrow_mut()))
    }
}

/// The body of [`read_file`]: cut the file into blocks as the medium does and store them,
/// with a reused buffer.
fn read_blocks(
    ctx: &Ctx,
    f: &mut File,
    before: &Attrs,
    path: &dyn Fn() -> PathBuf,
    entry: &mut Entry,
    buf: &mut [u8],
) -> Result<(), ReadError> {
    // Sized from the file's stat, capped: the file may grow or shrink while it is read.
    let mut blocks =
        Vec::with_capacity((before.size.div_ceil(AVG_BLOCK as u64)).min(1 << 16) as usize);
    let size = ctx.chunker.cut(
        buf,
        &mut |b| chunk::read_retry(f, b).map_err(ReadError::Source),
        &mut |b| {
            let id = ctx
                .writer()
                .and_then(|w| w.put(BlobKind::Data, b))
                .map_err(ReadError::Medium)?;
            blocks.push(id);
            ctx.meter.add(0, b.len() as u64);
            ctx.tally
                .bytes_read
                .fetch_add(b.len() as u64, Ordering::Relaxed);
            Ok(())
        },
    )?;
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
