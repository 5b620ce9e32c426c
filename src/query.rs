//! Finding things on a medium: `ls`, `versions`, `diff`, a name across the backups
//! ([`search`], or over a medium's [`Names`] index) and the tree as a picture (spec Fig. 2, [`picture`]). Read-only; these
//! return data, the CLI and the web interface format it.

mod names;
mod paths;
mod picture;
mod search;

pub use names::{Names, MAX_PATHS, MAX_PATH_BYTES};
pub use picture::{draw_tree, layout, Node, MAX_DRAWN_DEPTH};
pub use search::{search, search_with, walk_newest_first, Found, Search};

use crate::error::Result;
use crate::ids::{BackupId, BlockId};
use crate::index;
use crate::listing::{Entry, EntryKind, Listing};
use crate::medium::{BackupHeader, Medium};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether an entry's content was read in this backup or taken from the parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Stored,
    Unchanged,
}

#[derive(Clone, Debug, Serialize)]
pub struct LsRow {
    pub path: String,
    /// The path exactly (a name need not be UTF-8; `path` shows it lossily).
    #[serde(skip)]
    pub raw: PathBuf,
    pub kind: EntryKind,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: DateTime<Utc>,
    pub origin: Origin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

pub fn mtime(e: &Entry) -> DateTime<Utc> {
    mtime_of_ns(e.mtime_ns)
}

/// A time in nanoseconds since the Unix epoch (the epoch if out of range).
pub fn mtime_of_ns(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .unwrap_or_default()
}

fn mode_string(e: &Entry) -> String {
    let t = match e.kind {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Fifo => 'p',
        EntryKind::Char => 'c',
        EntryKind::Block => 'b',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (e.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// The backup a reading command means: the one given (it must be on the medium), else the
/// latest verified one (made at or before `at`): `ls`, `restore` and the web interface's
/// first choice.
pub fn pick_backup(
    m: &Medium,
    id: Option<BackupId>,
    at: Option<DateTime<Utc>>,
) -> Result<BackupId> {
    if let Some(id) = id {
        m.tree()
            .get(id)
            .ok_or(crate::error::Error::NoSuchBackup(id))?;
        return Ok(id);
    }
    let rec = match at {
        Some(t) => m.tree().latest_verified_at(t),
        None => m.tree().latest_verified(),
    };
    rec.map(|r| r.id).ok_or_else(|| {
        crate::error::Error::Refused(format!(
            "{}: no verified backup on this medium{}",
            m.root().display(),
            at.map(|t| format!(" at or before {t}")).unwrap_or_default()
        ))
    })
}

/// The root listing id of a backup.
fn root_of(m: &Medium, id: BackupId) -> Result<BlockId> {
    Ok(m.header(id)?.root)
}

/// The parent backup's view of a directory being listed.
enum InParent {
    /// The parent has no such directory (or no parent): everything is stored.
    Absent,
    /// Same listing id as in the parent: everything below is unchanged.
    Same,
    /// The parent's listing of the directory.
    Listing(Listing),
}

impl InParent {
    fn origin(&self, e: &Entry) -> Origin {
        match self {
            InParent::Absent => Origin::Stored,
            InParent::Same => Origin::Unchanged,
            InParent::Listing(l) => match l.get(&e.name.0) {
                Some(p) if p.same_as(e) => Origin::Unchanged,
                _ => Origin::Stored,
            },
        }
    }

    /// The parent's view of subdirectory `e` (a directory entry listed under `self`).
    fn below(&self, m: &Medium, e: &Entry) -> Result<InParent> {
        let sub = match self {
            InParent::Absent => return Ok(InParent::Absent),
            InParent::Same => return Ok(InParent::Same),
            InParent::Listing(l) => l.get(&e.name.0).filter(|p| p.kind == EntryKind::Dir),
        };
        Ok(match sub.and_then(|p| p.subtree) {
            None => InParent::Absent,
            Some(id) if Some(id) == e.subtree => InParent::Same,
            Some(id) => InParent::Listing(m.listing(&id)?),
        })
    }
}

/// List `path` in backup `id` (recursively with `recursive`), marking stored/unchanged
/// against the backup's parent. The parent's listings are walked alongside (one read per
/// directory, none below an unchanged one), so the cost follows the size of the listing.
pub fn ls(m: &Medium, id: BackupId, path: &Path, recursive: bool) -> Result<Vec<LsRow>> {
    let mut rows = Vec::new();
    ls_each(m, id, path, recursive, &mut |r| {
        rows.push(r);
        Ok(())
    })?;
    Ok(rows)
}

/// [`ls`], giving each row to `out` as the walk reaches it instead of collecting them: memory
/// follows the depth of the tree, not its size (a hostile DAG of listings can describe more
/// paths than fit in memory), and time follows the output. An error from `out` stops the walk.
pub fn ls_each(
    m: &Medium,
    id: BackupId,
    path: &Path,
    recursive: bool,
    out: &mut dyn FnMut(LsRow) -> Result<()>,
) -> Result<()> {
    let header = m.header(id)?;
    let parent_root = match header.parent {
        Some(p) if m.tree().get(p).is_some() => Some(root_of(m, p)?),
        _ => None,
    };
    let chain = index::lookup(m, &header.root, path)?.ok_or_else(|| {
        crate::error::Error::Refused(format!("{} is not in backup {id}", path.display()))
    })?;
    let base: PathBuf = Path::new("/").join(path.strip_prefix("/").unwrap_or(path));
    // The parent's entry at `path`, and its listing if that is a directory.
    let parent_chain = match &parent_root {
        Some(pr) => index::lookup(m, pr, path)?,
        None => None,
    };
    let row = |rel: &Path, e: &Entry, origin: Origin| LsRow {
        path: rel.display().to_string(),
        raw: rel.to_path_buf(),
        kind: e.kind,
        mode: mode_string(e),
        uid: e.uid,
        gid: e.gid,
        size: e.size,
        mtime: mtime(e),
        origin,
        target: e.target.as_ref().map(|t| t.lossy()),
    };
    let (dir, parent_dir) = match chain.last() {
        None => (
            header.root,
            match parent_root {
                Some(pr) if pr == header.root => InParent::Same,
                Some(pr) => InParent::Listing(m.listing(&pr)?),
                None => InParent::Absent,
            },
        ),
        Some(e) => {
            let pe = parent_chain.as_ref().and_then(|c| c.last());
            if e.kind != EntryKind::Dir {
                let origin = match pe {
                    Some(p) if p.same_as(e) => Origin::Unchanged,
                    _ => Origin::Stored,
                };
                return out(row(&base, e, origin));
            }
            let Some(sub) = e.subtree else {
                return Ok(());
            };
            let parent_dir = match pe
                .filter(|p| p.kind == EntryKind::Dir)
                .and_then(|p| p.subtree)
            {
                None => InParent::Absent,
                Some(ps) if ps == sub => InParent::Same,
                Some(ps) => InParent::Listing(m.listing(&ps)?),
            };
            (sub, parent_dir)
        }
    };
    let mut limit = index::Limit::of(m, &header);
    let mut w: index::Walk<InParent> = index::Walk::new(&base, &mut limit);
    w.enter(m.listing(&dir)?, parent_dir);
    loop {
        let next = {
            let Some((rel, e, inp)) = w.next_entry()? else {
                break;
            };
            out(row(rel, e, inp.origin(e)))?;
            match (recursive, e.kind, e.subtree) {
                (true, EntryKind::Dir, Some(sub)) => Some((m.listing(&sub)?, inp.below(m, e)?)),
                _ => None,
            }
        };
        if let Some((l, inp)) = next {
            w.enter(l, inp);
        }
    }
    Ok(())
}

#[derive(Clone, Debug, Serialize)]
pub struct Version {
    pub content: String,
    pub size: u64,
    pub mtime: DateTime<Utc>,
    /// Backups holding this version, oldest first.
    pub backups: Vec<BackupId>,
    pub first_seen: DateTime<Utc>,
}

/// Where a reader gets a backup's header: from the medium ([`read_header`]), or from what the
/// web interface keeps between requests.
pub type HeaderOf<'a> = &'a dyn Fn(BackupId) -> Result<Arc<BackupHeader>>;

/// Each header read from the medium.
pub fn read_header(m: &Medium) -> impl Fn(BackupId) -> Result<Arc<BackupHeader>> + '_ {
    move |id| m.header(id).map(Arc::new)
}

/// Every distinct version of one file across the backups on this medium (spec [0006], [0056]).
pub fn versions(m: &Medium, path: &Path) -> Result<Vec<Version>> {
    versions_with(m, path, &read_header(m))
}

/// [`versions`] with headers from `header`. A directory listing is read once for the whole
/// medium (listings are content-addressed: an unchanged directory has the same id in every
/// backup), so the cost follows the directories the path crossed that changed, not backups
/// times depth.
pub fn versions_with(m: &Medium, path: &Path, header: HeaderOf) -> Result<Vec<Version>> {
    let comps = index::components(path)?;
    let mut memo: HashMap<(usize, BlockId), Option<Entry>> = HashMap::new();
    let mut out: Vec<Version> = Vec::new();
    for rec in &m.tree().backups {
        let root = header(rec.id)?.root;
        let Some(e) = entry_at(m, &root, &comps, &mut memo)? else {
            continue;
        };
        let content = match e.kind {
            EntryKind::File => e.content_id().to_string(),
            EntryKind::Symlink => format!(
                "-> {}",
                e.target.as_ref().map(|t| t.lossy()).unwrap_or_default()
            ),
            k => format!("{k:?}").to_lowercase(),
        };
        match out
            .iter_mut()
            .find(|v| v.content == content && v.size == e.size)
        {
            Some(v) => v.backups.push(rec.id),
            None => out.push(Version {
                content,
                size: e.size,
                mtime: mtime(&e),
                backups: vec![rec.id],
                first_seen: rec.started,
            }),
        }
    }
    Ok(out)
}

/// The entry at `comps` below the listing `root` (as [`index::lookup`] finds it, each entry
/// on the way checked), remembering in `memo` the answer from every listing on the way by
/// its depth and id.
fn entry_at(
    m: &Medium,
    root: &BlockId,
    comps: &[&std::ffi::OsStr],
    memo: &mut HashMap<(usize, BlockId), Option<Entry>>,
) -> Result<Option<Entry>> {
    let mut on_the_way = Vec::new();
    let mut id = *root;
    let mut rel = PathBuf::new();
    let found = 'walk: {
        if comps.is_empty() {
            break 'walk None;
        }
        for (i, c) in comps.iter().enumerate() {
            if let Some(known) = memo.get(&(i, id)) {
                break 'walk known.clone();
            }
            on_the_way.push((i, id));
            let listing: Listing = m.listing(&id)?;
            let Some(e) = listing.get(c.as_bytes()).cloned() else {
                break 'walk None;
            };
            rel.push(c);
            index::check_entry(&rel, &e)?;
            if i + 1 == comps.len() {
                break 'walk Some(e);
            }
            match (e.kind, e.subtree) {
                (EntryKind::Dir, Some(sub)) => id = sub,
                _ => break 'walk None,
            }
        }
        None
    };
    for k in on_the_way {
        memo.insert(k, found.clone());
    }
    Ok(found)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

#[derive(Clone, Debug, Serialize)]
pub struct DiffRow {
    pub change: Change,
    pub path: String,
    pub kind: EntryKind,
}

/// What changed from backup `from` to backup `to`. Subtrees with the same listing id are
/// skipped without being read, so the cost follows the size of the change. Walked with an
/// explicit stack, within the entries both headers count.
pub fn diff(m: &Medium, from: BackupId, to: BackupId) -> Result<Vec<DiffRow>> {
    let mut rows = Vec::new();
    diff_each(m, from, to, &mut |r| {
        rows.push(r);
        Ok(())
    })?;
    Ok(rows)
}

/// [`diff`], giving each row to `out` as it is found: memory follows the depth of the trees
/// (one pair of listings per open directory and the current path), time the output. An error
/// from `out` stops the walk.
pub fn diff_each(
    m: &Medium,
    from: BackupId,
    to: BackupId,
    out: &mut dyn FnMut(DiffRow) -> Result<()>,
) -> Result<()> {
    let (ha, hb) = (m.header(from)?, m.header(to)?);
    let mut limit = index::Limit::of_both(m, &ha, &hb);
    if ha.root == hb.root {
        return Ok(());
    }
    let load = |id: Option<BlockId>| -> Result<Listing> {
        match id {
            Some(id) => m.listing(&id),
            None => Ok(Listing::new(Vec::new())),
        }
    };
    /// Two listings of the same directory being compared.
    struct Pair {
        a: Listing,
        b: Listing,
        i: usize,
        j: usize,
        /// The length of `path` at this directory.
        base: usize,
    }
    let mut path: Vec<u8> = b"/".to_vec();
    let mut stack = vec![Pair {
        a: load(Some(ha.root))?,
        b: load(Some(hb.root))?,
        i: 0,
        j: 0,
        base: 1,
    }];
    while let Some(top) = stack.last_mut() {
        let (la, lb) = (&top.a, &top.b);
        if top.i >= la.entries.len() && top.j >= lb.entries.len() {
            let done = stack.pop().expect("a frame");
            path.truncate(done.base);
            continue;
        }
        let ea = la.entries.get(top.i);
        let eb = lb.entries.get(top.j);
        let order = match (ea, eb) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        limit.take()?;
        let (e, change) = match order {
            std::cmp::Ordering::Less => {
                top.i += 1;
                (ea.unwrap(), Some(Change::Removed))
            }
            std::cmp::Ordering::Greater => {
                top.j += 1;
                (eb.unwrap(), Some(Change::Added))
            }
            std::cmp::Ordering::Equal => {
                top.i += 1;
                top.j += 1;
                limit.take()?;
                let (x, y) = (ea.unwrap(), eb.unwrap());
                let mut x2 = x.clone();
                x2.subtree = y.subtree;
                (
                    y,
                    if x2.same_as(y) && x.kind == y.kind {
                        None
                    } else {
                        Some(Change::Changed)
                    },
                )
            }
        };
        path.truncate(top.base);
        if !path.ends_with(b"/") {
            path.push(b'/');
        }
        path.extend_from_slice(&e.name.0);
        let rel = Path::new(std::ffi::OsStr::from_bytes(&path));
        index::check_entry(rel, e)?;
        if let Some(c) = change {
            // A directory whose own attributes changed (e.g. its mtime) only because its
            // contents did is reported through its contents.
            let dir_content_only = c == Change::Changed
                && e.kind == EntryKind::Dir
                && ea.unwrap().kind == EntryKind::Dir
                && {
                    let mut x = ea.unwrap().clone();
                    x.subtree = e.subtree;
                    x.mtime_ns = e.mtime_ns;
                    x.same_as(e)
                };
            if !dir_content_only {
                out(DiffRow {
                    change: c,
                    path: rel.display().to_string(),
                    kind: e.kind,
                })?;
            }
        }
        if e.kind == EntryKind::Dir || ea.is_some_and(|x| x.kind == EntryKind::Dir) {
            let sub = |x: Option<&Entry>| {
                x.filter(|x| x.kind == EntryKind::Dir)
                    .and_then(|x| x.subtree)
            };
            let (sa, sb) = match order {
                std::cmp::Ordering::Less => (sub(ea), None),
                std::cmp::Ordering::Greater => (None, sub(eb)),
                std::cmp::Ordering::Equal => (sub(ea), sub(eb)),
            };
            if sa != sb {
                let base = path.len();
                stack.push(Pair {
                    a: load(sa)?,
                    b: load(sb)?,
                    i: 0,
                    j: 0,
                    base,
                });
            }
        }
    }
    Ok(())
}
