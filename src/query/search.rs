//! Search a name across every backup on a medium (spec [0006]: finding which files to restore
//! among many backups is the hard part).
//!
//! Newest backup first; a directory listing already walked at the same path in a newer backup
//! is not walked again (listings are content-addressed: the same id is the same contents), so
//! the cost follows the distinct directories of the medium, not backups times files. Bounded:
//! each backup's walk within the entries its header counts ([`index::Limit`]), and at most
//! `max` results.

use crate::error::Result;
use crate::ids::{BackupId, BlockId};
use crate::index;
use crate::listing::{EntryKind, Listing};
use crate::medium::Medium;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A path whose name matched, as the newest backup holding it has it.
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    pub path: String,
    /// The path exactly (a name need not be UTF-8; `path` shows it lossily).
    #[serde(skip)]
    pub raw: PathBuf,
    pub kind: EntryKind,
    pub size: u64,
    pub mtime: DateTime<Utc>,
    /// The newest backup that holds this path.
    pub backup: BackupId,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Search {
    /// Distinct paths, in the order found (newest backup first, then by path).
    pub found: Vec<Found>,
    /// More paths matched than were asked for.
    pub truncated: bool,
}

/// Whether `name` contains `needle` (already lowercase), ignoring case.
pub(super) fn matches(name: &[u8], needle: &str) -> bool {
    if needle.is_ascii() {
        let n = needle.as_bytes();
        n.is_empty()
            || name
                .windows(n.len())
                .any(|w| w.iter().zip(n).all(|(a, b)| a.to_ascii_lowercase() == *b))
    } else {
        String::from_utf8_lossy(name)
            .to_lowercase()
            .contains(needle)
    }
}

/// Paths on the medium whose last component contains `needle` (case-insensitive), at most
/// `max` of them.
pub fn search(m: &Medium, needle: &str, max: usize) -> Result<Search> {
    search_with(m, needle, max, &super::read_header(m))
}

/// [`search`] with headers from `header`.
pub fn search_with(
    m: &Medium,
    needle: &str,
    max: usize,
    header: super::HeaderOf,
) -> Result<Search> {
    let needle = needle.to_lowercase();
    let mut out = Search::default();
    // Keyed by the path itself, hashed with a per-process random key (std's SipHash): names
    // come from the medium, and a hash an attacker can collide would be a quadratic walk.
    let mut seen_paths: HashSet<Vec<u8>> = HashSet::new();
    walk_newest_first(m, header, &mut |rel, e, backup| {
        let path = rel.as_os_str().as_bytes();
        if matches(&e.name.0, &needle) && !seen_paths.contains(path) {
            if out.found.len() == max {
                out.truncated = true;
                return Ok(false);
            }
            seen_paths.insert(path.to_vec());
            out.found.push(Found {
                path: rel.display().to_string(),
                raw: rel.to_path_buf(),
                kind: e.kind,
                size: e.size,
                mtime: super::mtime(e),
                backup,
            });
        }
        Ok(true)
    })?;
    Ok(out)
}

/// Every entry of every backup on the medium, newest backup first (then in path order), to
/// `visit` (with the backup it was found in), except below a directory listing already
/// walked at the same path: the first time `visit` sees a path, it sees it as the newest
/// backup holding it has it. `visit` answers whether to go on. Each backup's walk is
/// within the entries its header counts ([`index::Limit`]); every entry is checked.
pub fn walk_newest_first(
    m: &Medium,
    header: super::HeaderOf,
    visit: &mut dyn FnMut(&Path, &crate::listing::Entry, BackupId) -> Result<bool>,
) -> Result<()> {
    // Listings walked, by path and listing id. The path is kept as 128 bits of two SipHashes
    // under random keys of this process: names come from the medium, and neither a hash
    // an attacker can collide (a directory hidden, the set made quadratic) nor the paths
    // themselves (memory in the square of a deep chain's depth) will do.
    let keyed = PathKey::new();
    let mut walked: HashSet<(u128, BlockId)> = HashSet::new();
    let mut order: Vec<_> = m.tree().backups.iter().collect();
    order.sort_by_key(|b| std::cmp::Reverse((b.started, b.id)));
    for rec in order {
        let header = header(rec.id)?;
        if !walked.insert((keyed.of(b"/"), header.root)) {
            continue;
        }
        let mut limit = index::Limit::of(m, &header);
        let mut w: index::Walk = index::Walk::new(Path::new("/"), &mut limit);
        w.enter(m.listing(&header.root)?, ());
        loop {
            let sub = {
                let Some((rel, e, ())) = w.next_entry()? else {
                    break;
                };
                if !visit(rel, e, rec.id)? {
                    return Ok(());
                }
                let path = rel.as_os_str().as_bytes();
                match (e.kind, e.subtree) {
                    (EntryKind::Dir, Some(sub)) if walked.insert((keyed.of(path), sub)) => {
                        Some(sub)
                    }
                    _ => None,
                }
            };
            if let Some(sub) = sub {
                let l: Listing = m.listing(&sub)?;
                w.enter(l, ());
            }
        }
    }
    Ok(())
}

/// A path's 128-bit key under two random SipHash keys: equal paths have equal keys, and
/// without the keys (never written anywhere) different paths with equal keys cannot be made.
struct PathKey(std::hash::RandomState, std::hash::RandomState);

impl PathKey {
    fn new() -> PathKey {
        PathKey(std::hash::RandomState::new(), std::hash::RandomState::new())
    }

    fn of(&self, path: &[u8]) -> u128 {
        use std::hash::BuildHasher;
        (u128::from(self.0.hash_one(path)) << 64) | u128::from(self.1.hash_one(path))
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn names_match_ignoring_case() {
        assert!(matches(b"Report-2024.ODT", "report"));
        assert!(matches(b"a.txt", ""));
        assert!(!matches(b"rep", "report"));
        assert!(matches("Übersicht.txt".as_bytes(), "übersicht"));
        assert!(matches(b"\xffreport", "report"));
    }
}
