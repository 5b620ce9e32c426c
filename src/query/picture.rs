//! The dependency tree as a picture (spec Fig. 2): [`layout`] decides once which backups are
//! drawn as one node (a run of micro backups) and where each node sits; `trayback tree` draws
//! that layout as text ([`draw_tree`]) and the web interface as SVG.
//!
//! Iterative, with the children of every backup found once: linear in the size of the tree
//! (a hostile parent chain of 100 000 backups lays out and draws in linear time and width).

use crate::ids::BackupId;
use crate::tree::{Kind, Tree};
use serde::Serialize;

/// Indentation stops growing after this many levels, so a hostile or absurdly deep tree
/// draws in output linear in its size.
pub const MAX_DRAWN_DEPTH: usize = 32;

/// One node of the picture: a backup, or a run of more than two micro backups each the only
/// child of the one before (drawn as one node, like the spec's "chain of 95 micro backups").
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The first (oldest) backup of the node; its only backup unless `count > 1`.
    pub first: BackupId,
    /// The last backup of a run (`first` for a single backup); the node's children hang here.
    pub last: BackupId,
    /// How many backups the node stands for: 1, or a run of micro backups (3 or more).
    pub count: usize,
    /// The backups it stands for, oldest first (`first` … `last`).
    pub members: Vec<BackupId>,
    /// Levels below its root (0 for a root).
    pub depth: usize,
    /// The row of the node it hangs from (`None` for a root: a backup without a parent on
    /// the medium).
    pub parent_row: Option<usize>,
    /// The last of its parent's children (drawn with `└──`).
    pub last_child: bool,
}

/// The nodes of the picture in drawing order (pre-order, children oldest first): row `i` is
/// `nodes[i]`, and every node's parent comes before it.
pub fn layout(tree: &Tree) -> Vec<Node> {
    let kids = tree.children_map();
    let children = |id: BackupId| kids.get(&id).map_or(&[][..], |v| v.as_slice());
    let is_micro = |id: BackupId| tree.get(id).is_some_and(|b| b.kind == Kind::Micro);
    let mut out = Vec::new();
    // Work to do, last first: (backup, parent row, last among siblings, depth).
    let mut todo: Vec<(BackupId, Option<usize>, bool, usize)> = tree
        .backups
        .iter()
        .filter(|b| b.parent.is_none_or(|p| tree.get(p).is_none()))
        .map(|b| (b.id, None, true, 0))
        .rev()
        .collect();
    while let Some((id, parent_row, last_child, depth)) = todo.pop() {
        // Follow a chain of single micro children: more than two are one node.
        let mut chain = vec![id];
        loop {
            let cur = *chain.last().unwrap();
            match children(cur) {
                [only] if is_micro(*only) && is_micro(cur) => chain.push(*only),
                _ => break,
            }
        }
        if chain.len() == 2 {
            chain.pop();
        }
        let row = out.len();
        let end = *chain.last().unwrap();
        out.push(Node {
            first: id,
            last: end,
            count: chain.len(),
            members: chain,
            depth,
            parent_row,
            last_child,
        });
        let k = children(end);
        for (i, c) in k.iter().enumerate().rev() {
            todo.push((*c, Some(row), i + 1 == k.len(), depth + 1));
        }
    }
    out
}

/// Draw the dependency tree like spec Fig. 2 as text: the [`layout`], one line a node.
pub fn draw_tree(tree: &Tree) -> String {
    let nodes = layout(tree);
    let mut out = String::new();
    // The prefix each node's children continue (its own line's prefix plus its column).
    let mut child_prefix: Vec<String> = Vec::with_capacity(nodes.len());
    for n in &nodes {
        let prefix = n.parent_row.map_or("", |p| child_prefix[p].as_str());
        let connector = match (n.parent_row, n.last_child) {
            (None, _) => "",
            (Some(_), true) => "└── ",
            (Some(_), false) => "├── ",
        };
        let text = if n.count > 1 {
            format!("{} … #{} ({} micro)", label(tree, n.first), n.last, n.count)
        } else {
            label(tree, n.first)
        };
        out.push_str(&format!("{prefix}{connector}{text}\n"));
        let mine = if n.parent_row.is_none() || n.depth >= MAX_DRAWN_DEPTH {
            prefix.to_string()
        } else {
            format!("{prefix}{}", if n.last_child { "    " } else { "│   " })
        };
        child_prefix.push(mine);
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
    use chrono::DateTime;

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
    fn every_backup_is_in_one_node_and_every_node_is_one_line() {
        use Kind::*;
        let t = tree(&[
            (1, Monthly, None),
            (2, Micro, Some(1)),
            (3, Micro, Some(2)),
            (4, Weekly, Some(1)),
            (5, Micro, Some(4)),
            (6, Micro, Some(5)),
            (7, Micro, Some(6)),
            (8, Micro, Some(7)),
            (9, Daily, Some(4)),
        ]);
        let nodes = layout(&t);
        let runs: Vec<(u64, u64, usize, usize)> = nodes
            .iter()
            .map(|n| (n.first.0, n.last.0, n.count, n.depth))
            .collect();
        // Two micros are drawn one by one; four in a row are one node.
        assert_eq!(
            runs,
            [
                (1, 1, 1, 0),
                (2, 2, 1, 1),
                (3, 3, 1, 2),
                (4, 4, 1, 1),
                (5, 8, 4, 2),
                (9, 9, 1, 2)
            ]
        );
        assert_eq!(nodes.iter().map(|n| n.count).sum::<usize>(), 9);
        assert_eq!(draw_tree(&t).lines().count(), nodes.len());
        assert!(nodes
            .iter()
            .enumerate()
            .all(|(i, n)| n.parent_row.is_none_or(|p| p < i)));
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
