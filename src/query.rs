//! Finding things on a medium: `ls`, `versions`, `diff` and the drawn tree (spec Fig. 2).
//! Read-only; these return data, the CLI formats it.

use crate::error::Result;
use crate::ids::{BackupId, BlockId};
use crate::index;
use crate::listing::{Entry, EntryKind, Listing};
use crate::medium::Medium;
use crate::tree::Tree;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
    DateTime::from_timestamp(
        e.mtime_ns.div_euclid(1_000_000_000),
        e.mtime_ns.rem_euclid(1_000_000_000) as u32,
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

/// Every distinct version of one file across the backups on this medium (spec [0006], [0056]).
pub fn versions(m: &Medium, path: &Path) -> Result<Vec<Version>> {
    let mut out: Vec<Version> = Vec::new();
    for rec in &m.tree().backups {
        let root = root_of(m, rec.id)?;
        let Some(chain) = index::lookup(m, &root, path)? else {
            continue;
        };
        let Some(e) = chain.last() else { continue };
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
                mtime: mtime(e),
                backups: vec![rec.id],
                first_seen: rec.started,
            }),
        }
    }
    Ok(out)
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

/// Indentation stops growing after this many levels, so a hostile or absurdly deep tree
/// (a parent chain of 100 000 backups) draws in output linear in its size.
const MAX_DRAWN_DEPTH: usize = 32;

/// Draw the dependency tree like spec Fig. 2, collapsing runs of micro backups. Iterative,
/// with the children of every backup found once: linear in the size of the tree.
pub fn draw_tree(tree: &Tree) -> String {
    let kids = tree.children_map();
    let children = |id: BackupId| kids.get(&id).map_or(&[][..], |v| v.as_slice());
    let mut out = String::new();
    // Work to do, last first: (backup, prefix of its line, last among siblings, a root, depth).
    let mut todo: Vec<(BackupId, String, bool, bool, usize)> = tree
        .backups
        .iter()
        .filter(|b| b.parent.is_none_or(|p| tree.get(p).is_none()))
        .map(|b| (b.id, String::new(), true, true, 0))
        .rev()
        .collect();
    while let Some((id, prefix, last, root, depth)) = todo.pop() {
        // Follow a chain of single micro children and print it as one line.
        let mut chain = vec![id];
        loop {
            let cur = *chain.last().unwrap();
            let k = children(cur);
            if k.len() == 1
                && tree
                    .get(k[0])
                    .is_some_and(|b| b.kind == crate::tree::Kind::Micro)
                && tree
                    .get(cur)
                    .is_some_and(|b| b.kind == crate::tree::Kind::Micro)
            {
                chain.push(k[0]);
            } else {
                break;
            }
        }
        let connector = if root {
            ""
        } else if last {
            "└── "
        } else {
            "├── "
        };
        let text = if chain.len() > 2 {
            format!(
                "{} … #{} ({} micro)",
                label(tree, chain[0]),
                chain.last().unwrap(),
                chain.len()
            )
        } else {
            label(tree, id)
        };
        out.push_str(&format!("{prefix}{connector}{text}\n"));
        if chain.len() == 2 {
            chain.pop();
        }
        let end = *chain.last().unwrap();
        let child_prefix = if root || depth >= MAX_DRAWN_DEPTH {
            prefix
        } else {
            format!("{prefix}{}", if last { "    " } else { "│   " })
        };
        let k = children(end);
        for (i, c) in k.iter().enumerate().rev() {
            todo.push((*c, child_prefix.clone(), i + 1 == k.len(), false, depth + 1));
        }
    }
    out
}

fn label(tree: &Tree, id: BackupId) -> String {
    let Some(b) = tree.get(id) else {
        return format!("#{id}");
    };
    format!(
        "#{} {} {}{}",
        b.id,
        b.kind,
        b.started.format("%Y-%m-%d %H:%M"),
        if b.verified { "" } else { " (unverified)" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{BackupRecord, Kind};

    fn tree(recs: &[(u64, Kind, Option<u64>)]) -> Tree {
        let mut t = Tree::default();
        for &(id, kind, parent) in recs {
            let at = DateTime::from_timestamp(1_700_000_000 + id as i64 * 60, 0).unwrap();
            t.add(BackupRecord {
                id: BackupId(id),
                kind,
                parent: parent.map(BackupId),
                started: at,
                finished: at,
                verified: true,
                partial: false,
                bytes_total: 0,
                bytes_new: 0,
                bytes_stored: 0,
            });
        }
        t
    }

    #[test]
    fn the_drawn_tree_nests_branches_and_collapses_micro_runs() {
        use Kind::*;
        let t = tree(&[
            (1, Monthly, None),
            (2, Weekly, Some(1)),
            (3, Daily, Some(2)),
            (4, Micro, Some(3)),
            (5, Micro, Some(4)),
            (6, Micro, Some(5)),
            (7, Daily, Some(2)),
        ]);
        let shape: Vec<String> = draw_tree(&t)
            .lines()
            .map(|l| {
                // Keep the drawing and the ids, drop the times.
                l.split(' ')
                    .filter(|w| !w.contains(':') && !w.contains('-') || w.contains('─'))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(
            shape,
            [
                "#1 monthly",
                "└── #2 weekly",
                "    ├── #3 daily",
                "    │   └── #4 micro … #6 (3 micro)",
                "    └── #7 daily",
            ],
            "{}",
            draw_tree(&t)
        );
    }

    #[test]
    fn a_100_000_deep_chain_draws_in_linear_time_and_width() {
        let mut recs = vec![(1, Kind::Monthly, None)];
        recs.extend((2..=100_000).map(|id| (id, Kind::Daily, Some(id - 1))));
        let t = tree(&recs);
        let t0 = std::time::Instant::now();
        let out = draw_tree(&t);
        assert!(t0.elapsed().as_secs() < 5, "{:?}", t0.elapsed());
        assert_eq!(out.lines().count(), 100_000);
        assert!(out
            .lines()
            .all(|l| l.chars().count() < 4 * MAX_DRAWN_DEPTH + 80));
    }
}
