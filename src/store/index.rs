//! The blob index: where each blob id is (its pack and trailer entry), kept compact.
//!
//! A medium of 2 000 000 files holds some 2 000 000 blobs; a hash map of them took 57 bytes a
//! bucket in twice as many buckets as entries (~240 MB). Here they are two sorted vectors of
//! 60-byte slots: `main`, and `fresh`, which takes what packs add until it is an eighth of
//! `main`'s size and is then merged into it in place (from the back, so no second copy is
//! made). So memory is 60 bytes a blob plus at most an eighth, and adding a pack costs time
//! in proportion to the fresh part only.
//!
//! Invariants: both vectors are sorted by id and hold each id at most once between them;
//! lookups are binary searches. Nothing here trusts a count a footer announces: reservations
//! are capped by the caller.

use super::Loc;
use crate::ids::BlockId;

/// `fresh` is merged into `main` once it holds more than this, or an eighth of `main`.
const FRESH_MIN: usize = 1 << 14;

#[derive(Default)]
pub(super) struct BlobIndex {
    main: Vec<(BlockId, Loc)>,
    fresh: Vec<(BlockId, Loc)>,
}

fn find(v: &[(BlockId, Loc)], id: &BlockId) -> Result<usize, usize> {
    v.binary_search_by(|(k, _)| k.0.cmp(&id.0))
}

/// Merge `src` (sorted, no id in `dst`) into `dst` (sorted), in place from the back.
fn merge(dst: &mut Vec<(BlockId, Loc)>, src: &[(BlockId, Loc)]) {
    let (n, m) = (dst.len(), src.len());
    if m == 0 {
        return;
    }
    dst.reserve_exact(m);
    dst.extend_from_slice(src);
    let (mut i, mut j) = (n, m);
    while j > 0 {
        let k = i + j - 1;
        if i > 0 && dst[i - 1].0 .0 > src[j - 1].0 .0 {
            dst[k] = dst[i - 1];
            i -= 1;
        } else {
            dst[k] = src[j - 1];
            j -= 1;
        }
    }
}

impl BlobIndex {
    pub(super) fn get(&self, id: &BlockId) -> Option<Loc> {
        find(&self.main, id)
            .map(|i| self.main[i].1)
            .or_else(|_| find(&self.fresh, id).map(|i| self.fresh[i].1))
            .ok()
    }

    pub(super) fn contains_key(&self, id: &BlockId) -> bool {
        self.get(id).is_some()
    }

    fn slot_mut(&mut self, id: &BlockId) -> Option<&mut Loc> {
        if let Ok(i) = find(&self.main, id) {
            return Some(&mut self.main[i].1);
        }
        find(&self.fresh, id).ok().map(|i| &mut self.fresh[i].1)
    }

    /// Add a pack's blobs. An id already indexed keeps its place unless `replace` (then the
    /// last place given wins, as for an id given twice).
    pub(super) fn add(&mut self, blobs: impl IntoIterator<Item = (BlockId, Loc)>, replace: bool) {
        let mut new = Vec::new();
        for (id, loc) in blobs {
            match self.slot_mut(&id) {
                Some(slot) if replace => *slot = loc,
                Some(_) => {}
                None => new.push((id, loc)),
            }
        }
        if replace {
            // The stable sort and `dedup` keep the first of equal ids: the last given.
            new.reverse();
        }
        new.sort_by_key(|a| a.0 .0);
        new.dedup_by(|b, a| a.0 == b.0);
        merge(&mut self.fresh, &new);
        if self.fresh.len() > FRESH_MIN.max(self.main.len() / 8) {
            let fresh = std::mem::take(&mut self.fresh);
            merge(&mut self.main, &fresh);
        }
    }

    /// Keep only the blobs whose location passes `keep`.
    pub(super) fn retain(&mut self, keep: impl Fn(&Loc) -> bool) {
        self.main.retain(|(_, l)| keep(l));
        self.fresh.retain(|(_, l)| keep(l));
    }

    pub(super) fn len(&self) -> usize {
        self.main.len() + self.fresh.len()
    }

    /// Make room for `n` more blobs in one allocation (the caller caps `n`).
    pub(super) fn reserve(&mut self, n: usize) {
        self.main.reserve_exact(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pack::{BlobKind, Encoding};

    fn loc(pack: u32, offset: u32) -> Loc {
        Loc {
            offset,
            pack,
            raw_len: 1,
            stored_len: 1,
            at: 0,
            frame_len: 0,
            kind: BlobKind::Data,
            encoding: Encoding::Raw,
        }
    }

    fn id(n: u32) -> BlockId {
        BlockId::of(&n.to_le_bytes())
    }

    #[test]
    fn finds_every_blob_added_across_merges_and_forgets_a_removed_pack() {
        let mut ix = BlobIndex::default();
        // Packs of 1000 blobs: `fresh` is folded into `main` several times on the way.
        for p in 0..60u32 {
            ix.add((0..1000).map(|k| (id(p * 1000 + k), loc(p, k))), false);
        }
        assert_eq!(ix.len(), 60_000);
        for n in (0..60_000).step_by(7) {
            let l = ix.get(&id(n)).expect("indexed");
            assert_eq!((l.pack, l.offset), (n / 1000, n % 1000));
        }
        assert!(ix.get(&id(60_000)).is_none());
        // Added again: kept where it was, unless replaced.
        ix.add([(id(5), loc(99, 0))], false);
        assert_eq!(ix.get(&id(5)).unwrap().pack, 0);
        ix.add([(id(5), loc(99, 0)), (id(5), loc(98, 0))], true);
        assert_eq!(ix.get(&id(5)).unwrap().pack, 98);
        ix.add([(id(70_000), loc(1, 0)), (id(70_000), loc(2, 0))], true);
        assert_eq!(ix.get(&id(70_000)).unwrap().pack, 2);
        ix.add([(id(70_001), loc(1, 0)), (id(70_001), loc(2, 0))], false);
        assert_eq!(ix.get(&id(70_001)).unwrap().pack, 1);
        assert_eq!(ix.len(), 60_002);
        ix.retain(|l| l.pack != 3);
        assert_eq!(ix.len(), 59_002);
        assert!(ix.get(&id(3500)).is_none());
        assert!(ix.get(&id(4500)).is_some());
    }
}
