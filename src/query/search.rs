//! Search a name across every backup on a medium (spec [0006]: finding which files to restore
//! among many backups is the hard part).
//!
//! Newest backup first; a directory listing already walked at the same path in a newer backup
//! is not walked again (listings are content-addressed: the same id is the same contents), so
//! the cost follows the distinct directories of the medium, not backups times files. Bounded:
//! each backup's walk within the entries its header counts ([`index::Limit`]), and at most
//! `max` results.

use super::paths::PathSet;
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

impl Search {
    /// Add a match, unless `max` are found already (then the search is truncated); whether
    /// to go on.
    pub(super) fn offer(&mut self, max: usize, found: impl FnOnce() -> Found) -> bool {
        if self.found.len() == max {
            self.truncated = true;
            return false;
        }
        self.found.push(found());
        true
    }
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
    let mut seen_paths = PathSet::new();
    walk_newest_first(m, header, &mut |rel, e, backup| {
        let path = rel.as_os_str().as_bytes();
        if !matches(&e.name.0, &needle) || !seen_paths.insert(path) {
            return Ok(true);
        }
        Ok(out.offer(max, || Found {
            path: rel.display().to_string(),
            raw: rel.to_path_buf(),
            kind: e.kind,
            size: e.size,
            mtime: super::mtime(e),
            backup,
        }))
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
    // Listings walked, by path (its key, see `paths`) and listing id.
    let keyed = PathSet::new();
    let mut walked: HashSet<(u128, BlockId)> = HashSet::new();
    let mut order: Vec<_> = m.tree().backups.iter().collect();
    order.sort_by_key(|b| std::cmp::Reverse((b.started, b.id)));
    for rec in order {
        let header = header(rec.id)?;
        if !walked.insert((keyed.key(b"/"), header.root)) {
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
                    (EntryKind::Dir, Some(sub)) if walked.insert((keyed.key(path), sub)) => {
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
