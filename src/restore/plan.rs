//! Restore planning: what to write, read from a backup's index before anything is written.
//!
//! Invariants:
//! - every entry is checked (`index::check_entry`, and each name at most `NAME_MAX` bytes)
//!   while the plan is made, so a hostile index is refused before the first write;
//! - the plan is a tree of items in pre-order: an item's `parent` (a directory item) always
//!   comes before it, and the items under one directory are contiguous (a depth-first order),
//!   which lets the writer keep only a short chain of open directories;
//! - memory in proportion to directories, not entries: directories and hard-linked files are
//!   items; the other entries of a walked directory (files, symlinks, specials: most of a
//!   tree) are checked and counted here, then dropped, and the writer reads them again from
//!   the directory's listing ([`Plan::rest`]). A listing is content-addressed and every read
//!   checks its id, so what is written is what was checked;
//! - the walk over listings keeps its own stack (depth is data, not call frames), so a
//!   10 000-deep backup plans without deep recursion; no path is built per item (a deep tree
//!   would make that quadratic): [`Plan::rel`] builds one when a message needs it.
//!
//! - a plan holds at most [`MAX_ITEMS`] items and at most the entries the backup's header
//!   counts; a tree of listings that repeats a listing (a DAG: legitimate for identical
//!   directories, hostile when it describes 2^48 paths in a few KB) is sized first, each
//!   distinct listing once, so an oversized one is refused before the plan grows.
//!
//! Pure: reads listings through the medium, touches no file system.

use crate::error::{Error, Result};
use crate::ids::BlockId;
use crate::index;
use crate::listing::{Entry, EntryKind};
use crate::medium::Medium;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The most entries a restore plan covers (the directories among them are items in memory,
/// ~250 bytes each): a backup of more entries is restored in parts, by path (FORMAT.md,
/// README "Restore").
pub const MAX_ITEMS: u64 = 50_000_000;

/// The longest file name Linux file systems take (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

pub struct Item {
    /// The directory item this one is in; `None` for the top of the target.
    pub parent: Option<usize>,
    pub entry: Entry,
    /// For the second and later names of a hard-linked file: the item holding the content.
    pub link_to: Option<usize>,
    /// A directory whose listing is restored whole: its entries without items of their own
    /// are restored with it ([`Plan::rest`]).
    pub walked: bool,
}

/// What a plan restores without items (see [`Plan::rest`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Rest {
    pub files: u64,
    pub symlinks: u64,
    pub other: u64,
    pub bytes: u64,
}

/// Whether entry `e` gets an item of its own: directories (the writer's structure) and
/// files with more than one name (hard links are matched across the plan).
fn itemised(e: &Entry) -> bool {
    e.kind == EntryKind::Dir || (e.kind == EntryKind::File && e.nlink > 1)
}

pub struct Plan {
    /// Pre-order (see the module invariants).
    pub items: Vec<Item>,
    /// Each item's depth (0 for items at the top).
    pub depth: Vec<usize>,
    /// The deepest item's depth.
    pub max_depth: usize,
    /// The listing of the top when the whole backup is restored (its entries are then
    /// restored as a walked directory's).
    pub top: Option<BlockId>,
    /// Totals of the entries restored without items.
    pub rest: Rest,
}

impl Plan {
    /// The item's path relative to the target (built on demand: O(depth)).
    pub fn rel(&self, i: usize) -> PathBuf {
        let mut names = Vec::new();
        let mut at = Some(i);
        while let Some(j) = at {
            names.push(self.items[j].entry.name.as_os());
            at = self.items[j].parent;
        }
        names.iter().rev().collect()
    }

    pub fn name(&self, i: usize) -> &[u8] {
        &self.items[i].entry.name.0
    }

    /// The entries of directory `d` (`None`: the top) restored without items of their own,
    /// in name order, read again from its listing: none unless it is walked.
    pub fn rest(&self, m: &Medium, d: Option<usize>) -> Result<Vec<Entry>> {
        let listing = match d {
            Some(d) if self.items[d].walked => self.items[d].entry.subtree,
            Some(_) => None,
            None => self.top,
        };
        let Some(id) = listing else {
            return Ok(Vec::new());
        };
        let mut entries = m.listing(&id)?.entries;
        entries.retain(|e| !itemised(e));
        Ok(entries)
    }
}

/// Build the plan for `paths` (whole subtrees; empty for everything) of the tree at `root`.
/// `limit`: the entries the backup's header counts; a plan never holds more (a hostile DAG
/// of listings cannot blow it up).
pub fn plan(m: &Medium, root: &BlockId, paths: &[PathBuf], limit: index::Limit) -> Result<Plan> {
    let mut b = Builder {
        m,
        limit,
        items: Vec::new(),
        depth: Vec::new(),
        max_depth: 0,
        seen: HashSet::new(),
        sizes: HashMap::new(),
        top: None,
        rest: Rest::default(),
    };
    // Sorted component lists with every path under another one dropped: the chains and
    // subtrees are then visited in one depth-first order and never overlap.
    let mut wanted: Vec<Vec<&OsStr>> = Vec::new();
    for p in paths {
        wanted.push(index::components(p)?);
    }
    wanted.sort();
    wanted.dedup_by(|later, earlier| later.starts_with(earlier));
    if wanted.is_empty() || wanted.iter().any(|w| w.is_empty()) {
        b.walk(root, None)?;
    } else {
        let mut chain_items: HashMap<(Option<usize>, &[u8]), usize> = HashMap::new();
        for w in &wanted {
            let p: PathBuf = w.iter().collect();
            let chain = index::lookup(m, root, &p)?
                .ok_or_else(|| Error::Refused(format!("{} is not in this backup", p.display())))?;
            let mut parent = None;
            for (c, e) in w.iter().zip(chain) {
                let key = (parent, c.as_bytes());
                parent = Some(match chain_items.get(&key) {
                    Some(&i) => i,
                    None => {
                        let i = b.push(parent, e, true)?.expect("kept");
                        chain_items.insert(key, i);
                        i
                    }
                });
            }
            let last = parent.expect("a non-empty path has a last item");
            if let (EntryKind::Dir, Some(sub)) =
                (b.items[last].entry.kind, b.items[last].entry.subtree)
            {
                b.walk(&sub, Some(last))?;
            }
        }
    }
    let mut items = b.items;
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
    Ok(Plan {
        items,
        depth: b.depth,
        max_depth: b.max_depth,
        top: b.top,
        rest: b.rest,
    })
}

struct Builder<'m> {
    m: &'m Medium,
    limit: index::Limit,
    items: Vec<Item>,
    /// Depth of each item.
    depth: Vec<usize>,
    max_depth: usize,
    /// Listings walked so far (to notice a listing used twice).
    seen: HashSet<BlockId>,
    /// Entries in the tree under each listing sized so far ([`Builder::size`]).
    sizes: HashMap<BlockId, u64>,
    top: Option<BlockId>,
    rest: Rest,
}

impl Builder<'_> {
    /// Check `e` (to be put under `parent`) and add it: as an item if `keep` or it is
    /// [`itemised`] (returned), else to the totals of [`Plan::rest`].
    fn push(&mut self, parent: Option<usize>, e: Entry, keep: bool) -> Result<Option<usize>> {
        let rel = || -> PathBuf {
            let mut names = vec![e.name.as_os()];
            let mut at = parent;
            while let Some(j) = at {
                names.push(self.items[j].entry.name.as_os());
                at = self.items[j].parent;
            }
            names.iter().rev().collect()
        };
        // Checked by name alone (cheap); the whole path only goes into a refusal.
        if let Err(Error::Hostile { reason, .. }) =
            index::check_entry(Path::new(e.name.as_os()), &e)
        {
            let r = rel();
            return Err(Error::Hostile {
                path: format!(
                    "{}/{}",
                    r.parent().unwrap_or(Path::new("")).display(),
                    e.name.lossy()
                ),
                reason,
            });
        }
        if e.name.0.len() > NAME_MAX {
            return Err(Error::Hostile {
                path: rel().to_string_lossy().into_owned(),
                reason: format!(
                    "has a name of {} bytes (the limit is {NAME_MAX}, NAME_MAX)",
                    e.name.0.len()
                ),
            });
        }
        self.limit.take()?;
        if !keep && !itemised(&e) {
            let r = &mut self.rest;
            match e.kind {
                EntryKind::File => {
                    r.files += 1;
                    r.bytes += e.size;
                }
                EntryKind::Symlink => r.symlinks += 1,
                _ => r.other += 1,
            }
            return Ok(None);
        }
        let depth = parent.map_or(0, |p| self.depth[p] + 1);
        self.max_depth = self.max_depth.max(depth);
        self.items.push(Item {
            parent,
            entry: e,
            link_to: None,
            walked: false,
        });
        self.depth.push(depth);
        Ok(Some(self.items.len() - 1))
    }

    /// Add everything under listing `id` in pre-order, below item `parent`; an explicit stack.
    /// When a listing repeats, the tree under `id` is sized first (each distinct listing
    /// read once more) and refused if it holds more entries than the limit has left.
    fn walk(&mut self, id: &BlockId, parent: Option<usize>) -> Result<()> {
        let mut sized = false;
        self.seen.insert(*id);
        match parent {
            Some(p) => self.items[p].walked = true,
            None => self.top = Some(*id),
        }
        let mut stack = vec![(self.m.listing(id)?.entries.into_iter(), parent)];
        while let Some((entries, parent)) = stack.last_mut() {
            let parent = *parent;
            let Some(e) = entries.next() else {
                stack.pop();
                continue;
            };
            let sub = e.subtree;
            let kind = e.kind;
            let i = self.push(parent, e, false)?;
            if let (Some(i), EntryKind::Dir, Some(sub)) = (i, kind, sub) {
                self.items[i].walked = true;
                let l = self.m.listing(&sub)?;
                if !sized && !l.entries.is_empty() && !self.seen.insert(sub) {
                    sized = true;
                    let left = self.limit.remaining();
                    if self.size(id, left)? > left {
                        return Err(self.limit.exceeded());
                    }
                }
                stack.push((l.entries.into_iter(), Some(i)));
            }
        }
        Ok(())
    }

    /// How many entries the tree under listing `id` holds, counting every path (a listing
    /// used twice counts twice) but reading each distinct listing once; stops early with
    /// some number over `budget` once the count passes it. Memory: one entry per distinct
    /// listing and an explicit stack.
    fn size(&mut self, id: &BlockId, budget: u64) -> Result<u64> {
        /// A listing being sized: its id, its subdirectories' listings, the next one, and
        /// the entries counted so far.
        struct Frame {
            id: BlockId,
            subs: Vec<BlockId>,
            next: usize,
            count: u64,
        }
        let frame = |m: &Medium, id: BlockId| -> Result<Frame> {
            let l = m.listing(&id)?;
            Ok(Frame {
                id,
                count: l.entries.len() as u64,
                subs: l.entries.iter().filter_map(|e| e.subtree).collect(),
                next: 0,
            })
        };
        if let Some(&n) = self.sizes.get(id) {
            return Ok(n);
        }
        let mut stack = vec![frame(self.m, *id)?];
        while let Some(top) = stack.last_mut() {
            if top.count > budget {
                return Ok(top.count);
            }
            if let Some(&sub) = top.subs.get(top.next) {
                top.next += 1;
                match self.sizes.get(&sub) {
                    Some(&n) => top.count = top.count.saturating_add(n),
                    None => stack.push(frame(self.m, sub)?),
                }
                continue;
            }
            let done = stack.pop().expect("a frame");
            self.sizes.insert(done.id, done.count);
            match stack.last_mut() {
                Some(up) => up.count = up.count.saturating_add(done.count),
                None => return Ok(done.count),
            }
        }
        unreachable!("the loop returns when the first frame is done")
    }
}
