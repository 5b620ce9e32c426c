//! Sets of paths read from a medium. One rule for all of them: a path is kept as 128 bits of
//! two SipHashes under random keys of this process. Names come from the medium (and from
//! whoever wrote the source tree), so neither a hash an attacker can collide (a directory
//! hidden from a search, a set made quadratic) nor the paths themselves (memory in the square
//! of a deep chain's depth) will do; without the keys, which are never written anywhere,
//! different paths with equal keys cannot be made.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

/// Paths seen, each once.
pub struct PathSet {
    keys: (RandomState, RandomState),
    seen: HashSet<u128>,
}

impl PathSet {
    pub fn new() -> PathSet {
        PathSet {
            keys: (RandomState::new(), RandomState::new()),
            seen: HashSet::new(),
        }
    }

    /// `path`'s key in this set.
    pub fn key(&self, path: &[u8]) -> u128 {
        (u128::from(self.keys.0.hash_one(path)) << 64) | u128::from(self.keys.1.hash_one(path))
    }

    /// Add `path`; whether it was new.
    pub fn insert(&mut self, path: &[u8]) -> bool {
        let k = self.key(path);
        self.seen.insert(k)
    }

    pub fn contains(&self, path: &[u8]) -> bool {
        self.seen.contains(&self.key(path))
    }
}

impl Default for PathSet {
    fn default() -> PathSet {
        PathSet::new()
    }
}
