//! Which blobs the backups share: the reference counts of a medium's index, so the bytes a
//! pare frees are known before anything is pared (issue 10; spec [0041] assumes each backup
//! holds its own data, trayback's blocks are shared).
//!
//! Pure data: the medium's side (`maintain::sharing`) reads each distinct listing once and
//! feeds it here. Blobs are interned to `u32` indices, so memory is a few words a blob (the
//! same order as the store's own index). A blob's count is the number of references to it:
//! one from each distinct listing entry that names it, one for each backup whose root it is.
//! Removing a backup drops its root's count; a blob whose count reaches zero is freed and its
//! children's counts drop in turn — an explicit stack, never recursion.

use crate::ids::{BackupId, BlockId};
use std::collections::HashMap;

/// The blob graph of one medium.
#[derive(Clone, Debug, Default)]
pub struct Sharing {
    /// Every blob the backups reference, by index.
    ids: Vec<BlockId>,
    bytes: Vec<u64>,
    refs: Vec<u32>,
    /// For each listing blob (by index), the blobs its entries name.
    children: HashMap<u32, Box<[u32]>>,
    roots: HashMap<BackupId, u32>,
}

/// Builds a [`Sharing`]: intern every blob with its stored size, add each distinct listing
/// once with its children, and each backup's root.
#[derive(Default)]
pub struct Builder {
    ids: HashMap<BlockId, u32>,
    g: Sharing,
}

impl Builder {
    /// The blob's index (`bytes` is its stored size; it counts once however often it is seen).
    pub fn intern(&mut self, id: BlockId, bytes: u64) -> u32 {
        let g = &mut self.g;
        *self.ids.entry(id).or_insert_with(|| {
            g.ids.push(id);
            g.bytes.push(bytes);
            g.refs.push(0);
            (g.bytes.len() - 1) as u32
        })
    }

    /// Whether the listing `i` has been added already (each is added once).
    pub fn has_listing(&self, i: u32) -> bool {
        self.g.children.contains_key(&i)
    }

    /// Add listing `i`, naming `children` (data blocks and sub-listings, already interned).
    pub fn add_listing(&mut self, i: u32, children: Vec<u32>) {
        for c in &children {
            self.g.refs[*c as usize] += 1;
        }
        self.g.children.insert(i, children.into_boxed_slice());
    }

    /// Backup `b`'s index starts at listing `root`.
    pub fn add_root(&mut self, b: BackupId, root: u32) {
        self.g.refs[root as usize] += 1;
        self.g.roots.insert(b, root);
    }

    pub fn finish(self) -> Sharing {
        self.g
    }
}

impl Sharing {
    /// Bytes freed (stored, as the packs hold them) if every backup in `gone` is removed.
    pub fn freed_by(&self, gone: &[BackupId]) -> u64 {
        let mut dropped: HashMap<u32, u32> = HashMap::new();
        let mut stack: Vec<u32> = gone
            .iter()
            .filter_map(|b| self.roots.get(b))
            .copied()
            .collect();
        let mut freed = 0;
        while let Some(i) = stack.pop() {
            let d = dropped.entry(i).or_insert(0);
            *d += 1;
            if *d == self.refs[i as usize] {
                freed += self.bytes[i as usize];
                if let Some(ch) = self.children.get(&i) {
                    stack.extend(ch.iter().copied());
                }
            }
        }
        freed
    }

    /// Bytes backup `b` occupies alone: every blob it reaches, once (the stored size of a full
    /// backup of the same data).
    pub fn reachable(&self, b: BackupId) -> u64 {
        let mut seen = std::collections::HashSet::new();
        let mut stack: Vec<u32> = self.roots.get(&b).copied().into_iter().collect();
        let mut total = 0;
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                total += self.bytes[i as usize];
                if let Some(ch) = self.children.get(&i) {
                    stack.extend(ch.iter().copied());
                }
            }
        }
        total
    }

    /// Every blob the medium's backups reference (what garbage collection keeps).
    pub fn live(&self) -> std::collections::HashSet<BlockId> {
        self.ids.iter().copied().collect()
    }

    /// Bytes all the blobs the medium's backups reference occupy.
    pub fn live_bytes(&self) -> u64 {
        let all: Vec<BackupId> = self.roots.keys().copied().collect();
        self.freed_by(&all)
    }
}

impl crate::pare::Freed for Sharing {
    fn freed(&self, gone: &[BackupId], id: BackupId) -> u64 {
        let mut with = gone.to_vec();
        with.push(id);
        self.freed_by(&with) - self.freed_by(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pare::Freed;

    fn blk(n: u8) -> BlockId {
        BlockId([n; 32])
    }

    #[test]
    fn shared_blocks_are_freed_only_with_their_last_backup() {
        // Backup 1: root A -> {x (100), y (10)}; backup 2: root B -> {x, z (5)};
        // backup 3 shares backup 2's root B.
        let mut b = Builder::default();
        let a = b.intern(blk(1), 1);
        let bb = b.intern(blk(2), 2);
        let (x, y, z) = (
            b.intern(blk(3), 100),
            b.intern(blk(4), 10),
            b.intern(blk(5), 5),
        );
        b.add_listing(a, vec![x, y]);
        b.add_listing(bb, vec![x, z, z]);
        b.add_root(BackupId(1), a);
        b.add_root(BackupId(2), bb);
        b.add_root(BackupId(3), bb);
        let g = b.finish();
        let (b1, b2, b3) = (BackupId(1), BackupId(2), BackupId(3));
        assert_eq!(g.freed_by(&[b1]), 1 + 10);
        assert_eq!(g.freed_by(&[b2]), 0);
        assert_eq!(g.freed_by(&[b2, b3]), 2 + 5);
        assert_eq!(g.freed_by(&[b1, b2, b3]), 118);
        assert_eq!(g.live_bytes(), 118);
        assert_eq!(g.reachable(b1), 111);
        assert_eq!(g.reachable(b3), 107);
        assert_eq!(g.freed(&[b2], b3), 7);
        assert_eq!(g.freed(&[b1, b2], b3), 107);
    }
}
