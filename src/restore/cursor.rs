//! A way down from the restore target to one directory of the plan at a time.
//!
//! Invariants:
//! - a cursor holds at most [`WINDOW`] descriptors at the deep end of its chain plus at most
//!   about [`CHECKPOINTS`] further up, whatever the depth: a directory not held is reopened
//!   from the nearest held one, one component at a time with `O_NOFOLLOW`;
//! - a reopened directory must be the one first opened (same device and inode), else the
//!   restore stops (`Error::Replaced`);
//! - moving costs what the chain changes by, not the depth: a walk in plan order (or its
//!   reverse) opens each directory a bounded number of times.

use super::dest::{open_dir, replaced, Dest, DirRef, Ident};
use super::plan::Plan;
use crate::error::Result;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Directories a cursor keeps open at the deep end of its chain.
pub const WINDOW: usize = 32;
/// At most this many further checkpoints up the chain.
const CHECKPOINTS: usize = 64;

/// A way down from the target to one directory of the plan at a time, holding few
/// descriptors (module invariants).
pub struct Cursor<'a> {
    dest: &'a Dest,
    plan: &'a Plan,
    /// The directories from the top down to the current one, each with its descriptor if
    /// held; chain[k] is at depth k.
    chain: Vec<(usize, Option<Arc<OwnedFd>>)>,
    /// Depths that are multiples of this keep their descriptor.
    spacing: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(dest: &'a Dest, plan: &'a Plan) -> Cursor<'a> {
        Cursor {
            dest,
            plan,
            chain: Vec::new(),
            spacing: (plan.max_depth / CHECKPOINTS).max(WINDOW),
        }
    }

    fn keep(&self, k: usize, len: usize) -> bool {
        k + WINDOW >= len || k % self.spacing == self.spacing - 1
    }

    /// Make `d` the current directory and return its descriptor. Directories not held are
    /// reopened from the nearest held one, each checked against `ids`.
    pub fn dir(&mut self, d: DirRef, ids: &[Ident]) -> Result<Arc<OwnedFd>> {
        self.go_to(d);
        let Some((_, top)) = self.chain.last() else {
            return Ok(self.dest.root.clone());
        };
        if let Some(fd) = top {
            return Ok(fd.clone());
        }
        // Reopen from the nearest held ancestor (or the root) down.
        let from = self.chain.iter().rposition(|(_, fd)| fd.is_some());
        let mut fd = match from {
            Some(k) => self.chain[k].1.clone().unwrap(),
            None => self.dest.root.clone(),
        };
        let len = self.chain.len();
        for k in from.map_or(0, |k| k + 1)..len {
            let i = self.chain[k].0;
            let next = open_dir(&fd, self.plan.name(i))
                .and_then(|f| rustix::fs::fstat(&f).map(|st| (f, st)));
            let next = match next {
                Ok((f, st)) if Ident::of(&st) == ids[i] => f,
                _ => return Err(replaced(&self.dest.path(self.plan, i))),
            };
            fd = Arc::new(next);
            if self.keep(k, len) {
                self.chain[k].1 = Some(fd.clone());
            }
        }
        Ok(fd)
    }

    /// Make the chain end at `d`, pushing entries without descriptors where it must grow.
    /// Costs what the chain changes by, not the depth.
    fn go_to(&mut self, d: DirRef) {
        let mut need = Vec::new();
        let mut at = d;
        while let Some(j) = at {
            let k = self.plan.depth[j];
            if k < self.chain.len() && self.chain[k].0 == j {
                break;
            }
            need.push(j);
            at = self.plan.items[j].parent;
        }
        let kept = at.map_or(0, |j| self.plan.depth[j] + 1);
        self.chain.truncate(kept);
        while let Some(j) = need.pop() {
            self.chain.push((j, None));
        }
        self.trim(kept);
    }

    /// After the chain grew from `from` entries: drop descriptors that left the window.
    fn trim(&mut self, from: usize) {
        let len = self.chain.len();
        for k in from.saturating_sub(WINDOW + 1)..len.saturating_sub(WINDOW) {
            if !self.keep(k, len) {
                self.chain[k].1 = None;
            }
        }
    }

    /// After creating or opening `d` (whose parent is the current directory), make it current.
    pub fn push(&mut self, d: usize, fd: Arc<OwnedFd>) {
        debug_assert_eq!(self.chain.last().map(|c| c.0), self.plan.items[d].parent);
        let from = self.chain.len();
        self.chain.push((d, Some(fd)));
        self.trim(from);
    }
}

#[cfg(test)]
mod tests {
    use super::super::dest::{make_dir, DirMade};
    use super::super::plan::Item;
    use super::*;
    use crate::listing::{Bytes, Entry, EntryKind};

    /// A chain of `depth` directories `d`, with a sibling `e` at every level.
    fn deep_plan(depth: usize) -> Plan {
        let mut items = Vec::new();
        let mut levels = Vec::new();
        let mut parent = None;
        for level in 0..depth {
            for name in [b"d", b"e"] {
                items.push(Item {
                    parent,
                    entry: Entry::new(Bytes(name.to_vec()), EntryKind::Dir),
                    link_to: None,
                    walked: false,
                });
                levels.push(level);
            }
            parent = Some(items.len() - 2);
        }
        // Pre-order: the "e" of a level comes after everything under its "d".
        let mut order: Vec<usize> = Vec::new();
        let mut stack = vec![0usize, 1];
        stack.reverse();
        while let Some(i) = stack.pop() {
            order.push(i);
            if i % 2 == 0 && i + 2 < items.len() {
                stack.push(i + 3);
                stack.push(i + 2);
            }
        }
        let mut at = vec![0; items.len()];
        for (new, &old) in order.iter().enumerate() {
            at[old] = new;
        }
        let sorted: Vec<Item> = order
            .iter()
            .map(|&old| Item {
                parent: items[old].parent.map(|p| at[p]),
                entry: items[old].entry.clone(),
                link_to: None,
                walked: false,
            })
            .collect();
        Plan {
            depth: order.iter().map(|&old| levels[old]).collect(),
            items: sorted,
            max_depth: depth - 1,
            top: None,
            rest: Default::default(),
        }
    }

    fn held(c: &Cursor) -> usize {
        c.chain.iter().filter(|(_, fd)| fd.is_some()).count()
    }

    #[test]
    fn a_cursor_holds_a_bounded_number_of_directories_at_any_depth() {
        let depth = 3000;
        let plan = deep_plan(depth);
        let tmp = tempfile::tempdir().unwrap();
        let dest = Dest::open(&tmp.path().join("t"), false).unwrap();
        let mut ids = vec![Ident::default(); plan.items.len()];
        let mut c = Cursor::new(&dest, &plan);
        let bound = WINDOW + CHECKPOINTS + 2;
        let mut most = 0;
        for d in 0..plan.items.len() {
            let parent = c.dir(plan.items[d].parent, &ids).unwrap();
            let made = make_dir(&dest, &parent, &plan.items[d].entry, false, &|| {
                dest.path(&plan, d)
            });
            let Ok(DirMade::Open(fd, id)) = made else {
                panic!("cannot make {d}");
            };
            ids[d] = id;
            c.push(d, Arc::new(fd));
            most = most.max(held(&c));
        }
        // And back, deepest first, as directory attributes are applied.
        for d in (0..plan.items.len()).rev() {
            c.dir(Some(d), &ids).unwrap();
            most = most.max(held(&c));
        }
        assert!(
            most <= bound,
            "held {most} directories open (bound {bound})"
        );
        // Too deep for paths: removed through descriptors.
        drop(c);
        let at = rustix::fs::open(
            tmp.path(),
            super::super::dest::DIR_FLAGS,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        super::super::remove::remove_tree(&at, b"t").unwrap();
    }
}
