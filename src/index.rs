//! Reading a backup's index: the one walk over listings, and path lookup.
//!
//! Invariants every reader of an index gets from here:
//! - every name read from a listing is checked to be a single path component before anyone
//!   joins it to a path, so callers (restore above all) can trust the paths they are given;
//! - depth is data, not call frames: [`Walk`] keeps an explicit stack of open listings and one
//!   path buffer, so a directory tree of any depth is walked in memory proportional to its
//!   depth plus the longest path, never on the thread's stack;
//! - a walk visits at most as many entries as the backup's header counts ([`Limit`]): a
//!   hostile index whose listings point at the same listing many times (a DAG describing 2^41
//!   paths in a few KB) fails with [`Error::Damaged`] naming the backup instead of running on.

use crate::error::{Error, Result};
use crate::ids::{BackupId, BlockId};
use crate::listing::{bad_name, Entry, EntryKind, Listing};
use crate::medium::{BackupHeader, Medium};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// What a visitor wants after seeing a directory.
#[derive(PartialEq, Eq)]
pub enum Step {
    Descend,
    Skip,
}

/// Check an entry read from a listing before it is used; `rel` is its path in the backup.
pub fn check_entry(rel: &Path, e: &Entry) -> Result<()> {
    let hostile = |reason: &str| Error::Hostile {
        path: rel.to_string_lossy().into_owned(),
        reason: reason.to_string(),
    };
    if let Some(reason) = bad_name(&e.name.0) {
        return Err(Error::Hostile {
            path: format!(
                "{}/{}",
                rel.parent().unwrap_or(Path::new("")).display(),
                e.name.lossy()
            ),
            reason: reason.to_string(),
        });
    }
    match e.kind {
        EntryKind::Dir if e.subtree.is_none() => Err(hostile("is a directory without a listing")),
        EntryKind::Symlink if e.target.is_none() => Err(hostile("is a symlink without a target")),
        EntryKind::Char | EntryKind::Block if e.rdev.is_none() => {
            Err(hostile("is a device without a device number"))
        }
        k if k != EntryKind::File && !e.blocks.is_empty() => {
            Err(hostile("is not a file but has content"))
        }
        // The listing's decoder checks a file's number of blocks by its listing's format;
        // whatever the format, it is within the content-defined bounds.
        EntryKind::File
            if !crate::store::chunk::block_count_fits(true, e.size, e.blocks.len() as u64) =>
        {
            Err(hostile("has a block list that does not match its size"))
        }
        _ => Ok(()),
    }
}

/// How many more entries a walk may visit, and whose index it walks (for the error).
///
/// A backup's tree holds at most `counts.files + dirs + symlinks + specials` entries of its
/// header (FORMAT.md "backups/<id>/header.yaml": the backup counts every entry it stores,
/// the directories above the sources included; the root `/` is not an entry).
#[derive(Clone, Debug)]
pub struct Limit {
    left: u64,
    max: u64,
    what: String,
    path: PathBuf,
    /// A bound of the caller's below the header's counts ([`Limit::at_most`]).
    cap: Option<u64>,
}

impl Limit {
    /// The entries backup `h`'s index can hold.
    pub fn of(m: &Medium, h: &BackupHeader) -> Limit {
        Limit {
            left: entries_of(h),
            max: entries_of(h),
            what: format!("backup {}", h.id),
            path: m.header_path(h.id),
            cap: None,
        }
    }

    /// The entries backups `a` and `b` can hold together (a walk over both, as `diff`).
    pub fn of_both(m: &Medium, a: &BackupHeader, b: &BackupHeader) -> Limit {
        let n = entries_of(a).saturating_add(entries_of(b));
        Limit {
            left: n,
            max: n,
            what: format!("backups {} and {}", a.id, b.id),
            path: m.header_path(b.id),
            cap: None,
        }
    }

    /// For a walk not told which backup it is in: the entries of the largest backup on the
    /// medium (any tree or subtree of one backup has at most that many). Headers that cannot
    /// be read do not count.
    pub fn medium(m: &Medium) -> Limit {
        let (mut max, mut of) = (0, None::<BackupId>);
        for b in &m.tree().backups {
            if let Ok(h) = m.header(b.id) {
                if of.is_none() || entries_of(&h) > max {
                    (max, of) = (entries_of(&h), Some(b.id));
                }
            }
        }
        Limit {
            left: max,
            max,
            what: match of {
                Some(id) => format!("the largest backup on the medium ({id})"),
                None => "any backup on the medium".into(),
            },
            path: match of {
                Some(id) => m.header_path(id),
                None => m.tree_path(),
            },
            cap: None,
        }
    }

    /// A limit of `n` entries (for tests and callers with their own bound).
    pub fn entries(n: u64, what: &str, path: &Path) -> Limit {
        Limit {
            left: n,
            max: n,
            what: what.to_string(),
            path: path.to_path_buf(),
            cap: None,
        }
    }

    /// At most `n` entries, whatever the header counts: a walk that holds what it visits
    /// (a restore plan) is refused past `n` with a message naming the header and the cap.
    pub fn at_most(mut self, n: u64) -> Limit {
        if n < self.max {
            self.left = self.left.min(n);
            self.cap = Some(n);
        }
        self
    }

    /// Whether the header counts more entries than the cap allows (a whole-tree walk would
    /// be refused: refuse it before walking).
    pub fn over_cap(&self) -> bool {
        self.cap.is_some()
    }

    /// How many more entries the walk may visit.
    pub fn remaining(&self) -> u64 {
        self.left
    }

    /// The error a walk past this limit fails with.
    pub fn exceeded(&self) -> Error {
        match self.cap {
            Some(cap) => Error::Refused(format!(
                "{}: {} counts {} entries, more than trayback restores at once ({cap}); \
                 restore it in parts, by path",
                self.path.display(),
                self.what,
                self.max
            )),
            None => Error::Damaged {
                path: self.path.clone(),
                detail: format!(
                    "the index of {} has more entries than its header counts ({}): \
                     its listings are damaged or hostile (a listing used in more places \
                     than the backup had directories)",
                    self.what, self.max
                ),
            },
        }
    }

    /// Count one visited entry.
    pub fn take(&mut self) -> Result<()> {
        match self.left.checked_sub(1) {
            Some(n) => {
                self.left = n;
                Ok(())
            }
            None => Err(self.exceeded()),
        }
    }
}

/// The most entries backup `h`'s tree can hold (see [`Limit`]).
fn entries_of(h: &BackupHeader) -> u64 {
    let c = &h.counts;
    c.files
        .saturating_add(c.dirs)
        .saturating_add(c.symlinks)
        .saturating_add(c.specials)
}

/// One open directory of a [`Walk`].
struct Frame<T> {
    listing: Listing,
    next: usize,
    /// The length of the walk's path buffer at this directory (its own path).
    base: usize,
    data: T,
}

/// The walk over a tree of listings, in pre-order sorted by name, with an explicit stack:
/// [`Walk::next_entry`] gives the next entry and its path; after a directory, [`Walk::enter`]
/// with that directory's listing descends into it (not calling it skips the directory).
/// Each open directory carries a `T` of the caller's (e.g. the matching listing of another
/// backup). Every entry is counted against the [`Limit`] and checked with [`check_entry`].
pub struct Walk<'l, T = ()> {
    stack: Vec<Frame<T>>,
    path: Vec<u8>,
    limit: &'l mut Limit,
}

impl<'l, T> Walk<'l, T> {
    /// A walk starting in the directory at `prefix`; [`Walk::enter`] its listing first.
    pub fn new(prefix: &Path, limit: &'l mut Limit) -> Walk<'l, T> {
        Walk {
            stack: Vec::new(),
            path: prefix.as_os_str().as_bytes().to_vec(),
            limit,
        }
    }

    /// Descend into the directory `next_entry` returned last (or, at first, the start directory).
    pub fn enter(&mut self, listing: Listing, data: T) {
        self.stack.push(Frame {
            listing,
            next: 0,
            base: self.path.len(),
            data,
        });
    }

    /// The data of the open directories, outermost first.
    pub fn open_data(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.stack.iter().map(|f| &f.data)
    }

    /// How many directories are open.
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// The next entry in pre-order: its path, the entry and the data of its directory.
    #[allow(clippy::type_complexity)]
    pub fn next_entry(&mut self) -> Result<Option<(&Path, &Entry, &T)>> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            if top.next == top.listing.entries.len() {
                let done = self.stack.pop().expect("a frame");
                self.path.truncate(done.base);
                continue;
            }
            let i = top.next;
            top.next += 1;
            self.path.truncate(top.base);
            if !self.path.is_empty() && !self.path.ends_with(b"/") {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(&top.listing.entries[i].name.0);
            self.limit.take()?;
            let top = self.stack.last().expect("a frame");
            let rel = Path::new(OsStr::from_bytes(&self.path));
            let e = &top.listing.entries[i];
            check_entry(rel, e)?;
            return Ok(Some((rel, e, &top.data)));
        }
    }
}

/// Walk the tree under listing `id` in pre-order (sorted by name); `prefix` is its path.
/// Bounded by [`Limit::medium`]; a caller that knows the backup uses [`walk_limited`].
pub fn walk(
    m: &Medium,
    id: &BlockId,
    prefix: &Path,
    f: &mut dyn FnMut(&Path, &Entry) -> Result<Step>,
) -> Result<()> {
    walk_limited(m, id, prefix, &mut Limit::medium(m), f)
}

/// [`walk`] within `limit` (e.g. [`Limit::of`] the backup's header).
pub fn walk_limited(
    m: &Medium,
    id: &BlockId,
    prefix: &Path,
    limit: &mut Limit,
    f: &mut dyn FnMut(&Path, &Entry) -> Result<Step>,
) -> Result<()> {
    let mut w: Walk = Walk::new(prefix, limit);
    w.enter(m.listing(id)?, ());
    loop {
        let sub = {
            let Some((rel, e, ())) = w.next_entry()? else {
                return Ok(());
            };
            match (f(rel, e)?, e.kind, e.subtree) {
                (Step::Descend, EntryKind::Dir, Some(sub)) => Some(sub),
                _ => None,
            }
        };
        if let Some(sub) = sub {
            w.enter(m.listing(&sub)?, ());
        }
    }
}

/// Turn a user's path ("/home/a/x" or "home/a/x") into components of a backup path.
pub fn components(path: &Path) -> Result<Vec<&std::ffi::OsStr>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::Refused(format!(
                    "{}: paths in a backup cannot contain \"..\"",
                    path.display()
                )))
            }
        }
    }
    Ok(out)
}

/// Find `path` in the tree rooted at `root`: the entries of its ancestors and its own.
/// `Ok(None)` when the path is not in the backup; the empty path is the root (no entries).
pub fn lookup(m: &Medium, root: &BlockId, path: &Path) -> Result<Option<Vec<Entry>>> {
    let mut chain = Vec::new();
    let mut listing: Listing = m.listing(root)?;
    let comps = components(path)?;
    let mut rel = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        let Some(e) = listing
            .get(std::os::unix::ffi::OsStrExt::as_bytes(*c))
            .cloned()
        else {
            return Ok(None);
        };
        rel.push(c);
        check_entry(&rel, &e)?;
        let last = i + 1 == comps.len();
        if !last {
            match (e.kind, e.subtree) {
                (EntryKind::Dir, Some(sub)) => listing = m.listing(&sub)?,
                _ => return Ok(None),
            }
        }
        chain.push(e);
    }
    Ok(Some(chain))
}
