//! Finding things on a medium: `ls`, `versions`, `diff` and the drawn tree (spec Fig. 2).
//! Read-only; these return data, the CLI formats it.

use crate::error::Result;
use crate::ids::{BackupId, BlockId};
use crate::index::{self, Step};
use crate::listing::{Entry, EntryKind, Listing};
use crate::medium::Medium;
use crate::tree::Tree;
use chrono::{DateTime, Utc};
use serde::Serialize;
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

/// List `path` in backup `id` (recursively with `recursive`), marking stored/unchanged
/// against the backup's parent.
pub fn ls(m: &Medium, id: BackupId, path: &Path, recursive: bool) -> Result<Vec<LsRow>> {
    let header = m.header(id)?;
    let parent_root = match header.parent {
        Some(p) if m.tree().get(p).is_some() => Some(root_of(m, p)?),
        _ => None,
    };
    let chain = index::lookup(m, &header.root, path)?.ok_or_else(|| {
        crate::error::Error::Refused(format!("{} is not in backup {id}", path.display()))
    })?;
    let base: PathBuf = Path::new("/").join(path.strip_prefix("/").unwrap_or(path));
    let mut rows = Vec::new();
    let origin = |rel: &Path, e: &Entry| -> Result<Origin> {
        let Some(pr) = &parent_root else {
            return Ok(Origin::Stored);
        };
        Ok(match index::lookup(m, pr, rel)? {
            Some(c) if c.last().is_some_and(|p| p.same_as(e)) => Origin::Unchanged,
            _ => Origin::Stored,
        })
    };
    let mut push = |rel: &Path, e: &Entry| -> Result<()> {
        rows.push(LsRow {
            path: rel.display().to_string(),
            kind: e.kind,
            mode: mode_string(e),
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            mtime: mtime(e),
            origin: origin(rel, e)?,
            target: e.target.as_ref().map(|t| t.lossy()),
        });
        Ok(())
    };
    let dir = match chain.last() {
        None => Some(header.root),
        Some(e) if e.kind == EntryKind::Dir => e.subtree,
        Some(e) => {
            push(&base, e)?;
            None
        }
    };
    if let Some(d) = dir {
        index::walk(m, &d, &base, &mut |rel, e| {
            push(rel, e)?;
            Ok(if recursive { Step::Descend } else { Step::Skip })
        })?;
    }
    Ok(rows)
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
/// skipped without being read, so the cost follows the size of the change.
pub fn diff(m: &Medium, from: BackupId, to: BackupId) -> Result<Vec<DiffRow>> {
    let mut rows = Vec::new();
    diff_listing(
        m,
        Some(root_of(m, from)?),
        Some(root_of(m, to)?),
        Path::new("/"),
        &mut rows,
    )?;
    Ok(rows)
}

fn diff_listing(
    m: &Medium,
    a: Option<BlockId>,
    b: Option<BlockId>,
    prefix: &Path,
    rows: &mut Vec<DiffRow>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let load = |id: Option<BlockId>| -> Result<Listing> {
        match id {
            Some(id) => m.listing(&id),
            None => Ok(Listing::new(Vec::new())),
        }
    };
    let (la, lb) = (load(a)?, load(b)?);
    let (mut i, mut j) = (0, 0);
    while i < la.entries.len() || j < lb.entries.len() {
        let ea = la.entries.get(i);
        let eb = lb.entries.get(j);
        let order = match (ea, eb) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let (e, change) = match order {
            std::cmp::Ordering::Less => {
                i += 1;
                (ea.unwrap(), Some(Change::Removed))
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                (eb.unwrap(), Some(Change::Added))
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
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
        let rel = prefix.join(e.name.as_os());
        index::check_entry(&rel, e)?;
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
                rows.push(DiffRow {
                    change: c,
                    path: rel.display().to_string(),
                    kind: e.kind,
                });
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
                diff_listing(m, sa, sb, &rel, rows)?;
            }
        }
    }
    Ok(())
}

/// Draw the dependency tree like spec Fig. 2, collapsing runs of micro backups.
pub fn draw_tree(tree: &Tree) -> String {
    let mut out = String::new();
    let roots: Vec<_> = tree
        .backups
        .iter()
        .filter(|b| b.parent.is_none_or(|p| tree.get(p).is_none()))
        .collect();
    for r in roots {
        draw_node(tree, r.id, "", true, true, &mut out);
    }
    out
}

fn label(tree: &Tree, id: BackupId) -> String {
    let b = tree.get(id).unwrap();
    format!(
        "#{} {} {}{}",
        b.id,
        b.kind,
        b.started.format("%Y-%m-%d %H:%M"),
        if b.verified { "" } else { " (unverified)" }
    )
}

fn draw_node(tree: &Tree, id: BackupId, prefix: &str, last: bool, root: bool, out: &mut String) {
    // Follow a chain of single micro children and print it as one line.
    let mut chain = vec![id];
    loop {
        let cur = *chain.last().unwrap();
        let kids: Vec<_> = tree.children(cur).collect();
        if kids.len() == 1
            && kids[0].kind == crate::tree::Kind::Micro
            && tree.get(cur).unwrap().kind == crate::tree::Kind::Micro
        {
            chain.push(kids[0].id);
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
    let kids: Vec<_> = tree.children(end).map(|b| b.id).collect();
    let child_prefix = if root {
        prefix.to_string()
    } else {
        format!("{prefix}{}", if last { "    " } else { "│   " })
    };
    for (i, k) in kids.iter().enumerate() {
        draw_node(tree, *k, &child_prefix, i + 1 == kids.len(), false, out);
    }
}
