//! A medium's name index: every distinct path on the medium once, as the newest backup
//! holding it has it, in the order [`super::search`] finds them. A search over it gives
//! exactly what the walk gives (the same paths, attributes, backups and order), in the time of
//! a scan of the table instead of a walk of every distinct listing of the medium.
//!
//! Invariants:
//! - built only from what the checked readers return ([`super::search::walk_newest_first`]:
//!   each backup within the entries its header counts, every entry checked);
//! - one row per distinct path, not per backup: an unchanged file in 2 000 backups is one row
//!   (its newest backup's attributes), so memory follows the paths of the medium;
//! - bounded: at most [`MAX_PATHS`] rows and [`MAX_PATH_BYTES`] bytes of paths; a medium with
//!   more is indexed up to there and marked incomplete, and a search the prefix cannot answer
//!   for certain is left to the walk ([`Names::search`] says `None`).

use super::paths::PathSet;
use super::search::{matches, walk_newest_first, Found, Search};
use super::HeaderOf;
use crate::error::Result;
use crate::ids::BackupId;
use crate::listing::EntryKind;
use crate::medium::Medium;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Rows an index holds at most (a medium with more distinct paths is indexed in part): 40
/// bytes each.
pub const MAX_PATHS: usize = 2_000_000;
/// Bytes of paths an index holds at most.
pub const MAX_PATH_BYTES: usize = 128 << 20;

/// One distinct path, as the newest backup holding it has it.
struct Row {
    /// Where the path is in the arena, and how long it is.
    at: u32,
    len: u32,
    /// Where its last component starts, from `at`.
    name: u32,
    kind: EntryKind,
    size: u64,
    mtime_ns: i64,
    backup: BackupId,
}

/// The index of one medium (as its tree was when it was built: the caller keys it).
pub struct Names {
    rows: Vec<Row>,
    arena: Vec<u8>,
    /// Every distinct path is in; otherwise the rows are the first ones the walk found.
    complete: bool,
}

impl Names {
    /// Walk the medium (headers from `header`) into an index, within [`MAX_PATHS`] and
    /// [`MAX_PATH_BYTES`].
    pub fn build(m: &Medium, header: HeaderOf) -> Result<Names> {
        Names::build_within(m, header, MAX_PATHS, MAX_PATH_BYTES)
    }

    /// [`Names::build`] within `max_paths` rows and `max_bytes` bytes of paths.
    pub fn build_within(
        m: &Medium,
        header: HeaderOf,
        max_paths: usize,
        max_bytes: usize,
    ) -> Result<Names> {
        // Places in the arena are 32-bit.
        let max_bytes = max_bytes.min(u32::MAX as usize);
        let mut n = Names {
            rows: Vec::new(),
            arena: Vec::new(),
            complete: true,
        };
        let mut seen = PathSet::new();
        walk_newest_first(m, header, &mut |rel, e, backup| {
            let p = rel.as_os_str().as_bytes();
            if seen.contains(p) {
                return Ok(true);
            }
            if n.rows.len() >= max_paths || n.arena.len() + p.len() > max_bytes {
                n.complete = false;
                return Ok(false);
            }
            seen.insert(p);
            let name = p.len() - e.name.0.len();
            n.rows.push(Row {
                at: n.arena.len() as u32,
                len: p.len() as u32,
                name: name as u32,
                kind: e.kind,
                size: e.size,
                mtime_ns: e.mtime_ns,
                backup,
            });
            n.arena.extend_from_slice(p);
            Ok(true)
        })?;
        n.rows.shrink_to_fit();
        n.arena.shrink_to_fit();
        Ok(n)
    }

    fn path(&self, r: &Row) -> &[u8] {
        &self.arena[r.at as usize..(r.at + r.len) as usize]
    }

    /// What [`super::search`] answers for `needle` and `max`; `None` when the index is
    /// incomplete and its rows cannot settle the answer (fewer than `max` + 1 matches in them).
    pub fn search(&self, needle: &str, max: usize) -> Option<Search> {
        let needle = needle.to_lowercase();
        let mut out = Search::default();
        for r in &self.rows {
            let p = self.path(r);
            if !matches(&p[r.name as usize..], &needle) {
                continue;
            }
            let more = out.offer(max, || {
                let raw = PathBuf::from(std::ffi::OsStr::from_bytes(p));
                Found {
                    path: raw.display().to_string(),
                    raw,
                    kind: r.kind,
                    size: r.size,
                    mtime: super::mtime_of_ns(r.mtime_ns),
                    backup: r.backup,
                }
            });
            if !more {
                return Some(out);
            }
        }
        self.complete.then_some(out)
    }

    /// Distinct paths held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether every distinct path of the medium is held.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// The memory it takes.
    pub fn bytes(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<Row>() + self.arena.capacity()
    }
}
