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
use std::collections::{HashMap, HashSet};

/// The blob graph of one medium.
#[derive(Clone, Debug, Default)]
pub struct Sharing {
    /// Every blob the backups reference, by index.
    ids: Vec<BlockId>,
    bytes: Vec<u64>,
    refs: Vec<u64>,
    /// For each listing blob (by index), the blobs its entries name and how often: a listing
    /// naming one block a million times (a file of zeros, or a crafted medium) costs one pair.
    children: HashMap<u32, Box<[(u32, u64)]>>,
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
    pub fn add_listing(&mut self, i: u32, mut children: Vec<u32>) {
        children.sort_unstable();
        let mut counted: Vec<(u32, u64)> = Vec::new();
        for c in children {
            match counted.last_mut() {
                Some((last, n)) if *last == c => *n += 1,
                _ => counted.push((c, 1)),
            }
        }
        for (c, n) in &counted {
            self.g.refs[*c as usize] += n;
        }
        self.g.children.insert(i, counted.into_boxed_slice());
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
    /// The blobs (by index) no remaining backup references once every backup in `gone` is
    /// removed.
    pub fn freed_set(&self, gone: &[BackupId]) -> HashSet<u32> {
        let mut dropped: HashMap<u32, u64> = HashMap::new();
        let mut stack: Vec<(u32, u64)> = gone
            .iter()
            .filter_map(|b| self.roots.get(b))
            .map(|r| (*r, 1))
            .collect();
        let mut freed = HashSet::new();
        while let Some((i, n)) = stack.pop() {
            let d = dropped.entry(i).or_insert(0);
            *d += n;
            if *d == self.refs[i as usize] && freed.insert(i) {
                if let Some(ch) = self.children.get(&i) {
                    stack.extend(ch.iter().copied());
                }
            }
        }
        freed
    }

    /// Bytes freed (stored, as the packs hold them) if every backup in `gone` is removed.
    pub fn freed_by(&self, gone: &[BackupId]) -> u64 {
        self.freed_set(gone)
            .iter()
            .map(|i| self.bytes[*i as usize])
            .sum()
    }

    /// Bytes backup `b` occupies alone: every blob it reaches, once (the stored size of a full
    /// backup of the same data).
    pub fn reachable(&self, b: BackupId) -> u64 {
        let mut seen = HashSet::new();
        let mut stack: Vec<u32> = self.roots.get(&b).copied().into_iter().collect();
        let mut total = 0;
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                total += self.bytes[i as usize];
                if let Some(ch) = self.children.get(&i) {
                    stack.extend(ch.iter().map(|(c, _)| *c));
                }
            }
        }
        total
    }

    /// Every blob the medium's backups reference, with its index.
    pub fn blobs(&self) -> impl Iterator<Item = (u32, &BlockId)> {
        self.ids.iter().enumerate().map(|(i, id)| (i as u32, id))
    }

    /// Bytes all the blobs the medium's backups reference occupy.
    pub fn live_bytes(&self) -> u64 {
        self.bytes.iter().sum()
    }
}

impl crate::pare::Freed for Sharing {
    fn freed(&self, gone: &[BackupId], id: BackupId) -> u64 {
        let mut with = gone.to_vec();
        with.push(id);
        self.freed_by(&with) - self.freed_by(gone)
    }
}

/// One pack as garbage collection would see it: its length, the bytes in it already dead, and
/// its live blobs (by index in [`Sharing`], with their stored bytes).
#[derive(Clone, Debug)]
pub struct PackModel {
    pub len: u64,
    pub dead: u64,
    pub live: Vec<(u32, u64)>,
}

/// The medium's packs, and what garbage collection can give back from them: the room plan's
/// answer to "what does paring this free?" on a real medium is the space collection reclaims,
/// which is less than the blobs' bytes when a pack cannot be rewritten for want of space.
/// Mirrors `Store::collect_garbage` with `Reclaim::All`: packs with nothing live go whole,
/// then packs with dead bytes, deadest first, each only if its survivors fit in what is free.
#[derive(Clone, Debug)]
pub struct Packs {
    pub packs: Vec<PackModel>,
    /// Free bytes on the file system now.
    pub free: u64,
    /// Free space a rewrite keeps beyond its survivors.
    pub margin: u64,
    /// What a blob costs in a pack beyond its stored bytes (its record header).
    pub overhead: u64,
}

impl Packs {
    /// Bytes garbage collection gives back when the blobs in `freed` are dead too.
    pub fn reclaimable(&self, freed: &HashSet<u32>) -> u64 {
        let mut got = 0u64;
        let mut rewrite: Vec<(u64, u64, u64)> = Vec::new();
        for p in &self.packs {
            let (mut dead, mut alive, mut any_alive) = (p.dead, 0u64, false);
            for (i, bytes) in &p.live {
                if freed.contains(i) {
                    dead += bytes + self.overhead;
                } else {
                    alive += bytes;
                    any_alive = true;
                }
            }
            if !any_alive {
                got += p.len;
            } else if dead > 0 {
                rewrite.push((dead, p.len, alive));
            }
        }
        sort_deadest_first(&mut rewrite, |r| (r.0, r.1));
        for (dead, _, alive) in rewrite {
            if self.free.saturating_add(got) >= alive + self.margin {
                got += dead;
            }
        }
        got
    }
}

/// Deadest first (dead bytes over length), ties in their order: garbage collection and its
/// model ([`Packs`]) rewrite packs in this one order.
pub fn sort_deadest_first<T>(v: &mut [T], dead_len: impl Fn(&T) -> (u64, u64)) {
    v.sort_by(|a, b| {
        let ((da, la), (db, lb)) = (dead_len(a), dead_len(b));
        (db as u128 * la as u128).cmp(&(da as u128 * lb as u128))
    });
}

/// What paring frees on a real medium: the space garbage collection reclaims afterwards.
pub struct OnMedium<'a> {
    pub g: &'a Sharing,
    pub packs: &'a Packs,
}

impl OnMedium<'_> {
    /// What collection reclaims once every backup in `gone` is pared.
    pub fn reclaimed(&self, gone: &[BackupId]) -> u64 {
        self.packs.reclaimable(&self.g.freed_set(gone))
    }
}

impl crate::pare::Freed for OnMedium<'_> {
    fn freed(&self, gone: &[BackupId], id: BackupId) -> u64 {
        let mut with = gone.to_vec();
        with.push(id);
        self.reclaimed(&with).saturating_sub(self.reclaimed(gone))
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
