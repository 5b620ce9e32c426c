//! The dependency tree of all backups on one medium (spec [0034]–[0036], Fig. 2).
//!
//! Pure data and functions: no I/O here (the medium reads and writes `tree.yaml`).
//! Invariants kept by every operation:
//! - ids are unique and increase in creation order; `next_id` is never reused;
//! - every `parent` names a backup present in the tree (removing a backup re-parents its
//!   children to its own parent);
//! - there are no cycles (a parent is always older than its child);
//! - every time is between [`earliest`] and [`latest`] (1970 to the end of 9999), so that
//!   adding any interval the configuration allows (at most about ten years) cannot overflow
//!   chrono's range (±262 143 years).
//!
//! A tree read from a medium is untrusted until [`Tree::check`] passed; it runs in linear time
//! (100 000 backups in one parent chain check in milliseconds), and nothing here recurses.

use crate::ids::BackupId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A medium's tree format (the `format` of its tree file, FORMAT.md "Versioning"): how its
/// files are cut into blocks and how its packs hold them. A medium keeps its format for life;
/// this trayback reads, writes and makes new media of every one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
pub enum TreeFormat {
    /// 1: fixed 256 KiB blocks (FORMAT.md "Blobs and blob ids"), read and written as ever.
    Fixed = 1,
    /// 2: content-defined blocks; packs of the versions before frames (1 and 2).
    Cdc = 2,
    /// 3: content-defined blocks compressed together in frames (pack versions 3 and 4,
    /// FORMAT.md "Frames").
    Frames = 3,
}

impl TreeFormat {
    /// The format of new media.
    pub const NEWEST: TreeFormat = TreeFormat::Frames;
    /// Every format, oldest first.
    pub const ALL: [TreeFormat; 3] = [TreeFormat::Fixed, TreeFormat::Cdc, TreeFormat::Frames];
    /// The numbers of [`TreeFormat::ALL`], for [`crate::error::Error::Version`].
    pub const NUMBERS: std::ops::RangeInclusive<u32> =
        TreeFormat::Fixed as u32..=TreeFormat::NEWEST as u32;

    /// The format numbered `n`, if this trayback knows it.
    pub fn from_number(n: u32) -> Option<TreeFormat> {
        TreeFormat::ALL.into_iter().find(|f| *f as u32 == n)
    }

    /// Whether files are cut into fixed 256 KiB blocks rather than content-defined ones.
    pub fn fixed_blocks(self) -> bool {
        self == TreeFormat::Fixed
    }

    /// Whether new packs hold frames (versions 3 and 4) rather than lone blobs.
    pub fn framed(self) -> bool {
        self >= TreeFormat::Frames
    }

    /// What the format means to a user (`media show`): how its files are cut and which
    /// trayback reads it.
    pub fn meaning(self) -> &'static str {
        match self {
            TreeFormat::Fixed => "fixed 256 KiB blocks; every trayback reads it",
            TreeFormat::Cdc => "content-defined blocks; trayback since content-defined blocks",
            TreeFormat::Frames => "content-defined blocks in frames; trayback since frames",
        }
    }
}

impl From<TreeFormat> for u32 {
    fn from(f: TreeFormat) -> u32 {
        f as u32
    }
}

impl TryFrom<u32> for TreeFormat {
    type Error = String;
    fn try_from(n: u32) -> Result<TreeFormat, String> {
        TreeFormat::from_number(n).ok_or_else(|| {
            format!(
                "{n} is not a tree format this trayback knows ({} to {})",
                TreeFormat::NUMBERS.start(),
                TreeFormat::NUMBERS.end()
            )
        })
    }
}

impl fmt::Display for TreeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&(*self as u32), f)
    }
}

impl FromStr for TreeFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<TreeFormat, String> {
        let n: u32 = s
            .parse()
            .map_err(|_| format!("{s:?} is not a tree format (a number)"))?;
        TreeFormat::try_from(n)
    }
}

/// The kind of a backup: `monthly` is full, the others incremental.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Monthly,
    Weekly,
    Daily,
    Micro,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Monthly, Kind::Weekly, Kind::Daily, Kind::Micro];
    pub fn is_full(self) -> bool {
        self == Kind::Monthly
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Monthly => "monthly",
            Kind::Weekly => "weekly",
            Kind::Daily => "daily",
            Kind::Micro => "micro",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown backup kind {s:?} (monthly, weekly, daily or micro)"))
    }
}

/// One backup as the tree records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRecord {
    pub id: BackupId,
    pub kind: Kind,
    pub parent: Option<BackupId>,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub verified: bool,
    #[serde(default)]
    pub partial: bool,
    /// Bytes of file content the backup covers (the size of a full restore).
    pub bytes_total: u64,
    /// Bytes of new blocks this backup added, uncompressed and as stored.
    pub bytes_new: u64,
    pub bytes_stored: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// How the medium cuts content and whether its packs hold frames.
    pub format: TreeFormat,
    pub next_id: BackupId,
    pub backups: Vec<BackupRecord>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            format: TreeFormat::NEWEST,
            next_id: BackupId(1),
            backups: Vec::new(),
        }
    }
}

/// The earliest time a tree may hold: 1970-01-01T00:00:00Z.
pub fn earliest() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

/// The latest time a tree may hold: 9999-12-31T23:59:59.999999999Z.
pub fn latest() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 999_999_999).expect("in chrono's range")
}

impl Tree {
    /// Position of backup `id`: a binary search (the tree is kept sorted by id), or a scan
    /// when the search misses (a tree built out of order in memory).
    fn position(&self, id: BackupId) -> Option<usize> {
        match self.backups.binary_search_by_key(&id, |b| b.id) {
            Ok(i) => Some(i),
            Err(_) => self.backups.iter().position(|b| b.id == id),
        }
    }

    pub fn get(&self, id: BackupId) -> Option<&BackupRecord> {
        self.position(id).map(|i| &self.backups[i])
    }

    pub fn get_mut(&mut self, id: BackupId) -> Option<&mut BackupRecord> {
        self.position(id).map(|i| &mut self.backups[i])
    }

    /// Every backup's children (ids, oldest first), built once: for walks over the whole tree,
    /// where [`Tree::children`] per node would take quadratic time.
    pub fn children_map(&self) -> std::collections::HashMap<BackupId, Vec<BackupId>> {
        let mut map: std::collections::HashMap<BackupId, Vec<BackupId>> =
            std::collections::HashMap::new();
        for b in &self.backups {
            if let Some(p) = b.parent {
                map.entry(p).or_default().push(b.id);
            }
        }
        map
    }

    /// The newest verified backup (by start time, then id).
    pub fn latest_verified(&self) -> Option<&BackupRecord> {
        self.backups
            .iter()
            .filter(|b| b.verified)
            .max_by_key(|b| (b.started, b.id))
    }

    /// The newest verified backup of each kind (by start time, then id): what `status`
    /// shows of a medium.
    pub fn newest_verified_each(&self) -> std::collections::BTreeMap<Kind, &BackupRecord> {
        let mut out: std::collections::BTreeMap<Kind, &BackupRecord> = Default::default();
        for b in self.backups.iter().filter(|b| b.verified) {
            let e = out.entry(b.kind).or_insert(b);
            if (b.started, b.id) >= (e.started, e.id) {
                *e = b;
            }
        }
        out
    }

    /// The newest verified backup that started at or before `at`.
    pub fn latest_verified_at(&self, at: DateTime<Utc>) -> Option<&BackupRecord> {
        self.backups
            .iter()
            .filter(|b| b.verified && b.started <= at)
            .max_by_key(|b| (b.started, b.id))
    }

    /// The time a new backup is dated: `now`, but never before the newest backup on the
    /// medium, so a wall clock that stepped back never makes a child older than its parent
    /// (FORMAT.md, `tree.yaml`).
    pub fn date_new_backup(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.backups
            .iter()
            .map(|b| b.started)
            .max()
            .map_or(now, |newest| now.max(newest))
    }

    pub fn children(&self, id: BackupId) -> impl Iterator<Item = &BackupRecord> {
        self.backups.iter().filter(move |b| b.parent == Some(id))
    }

    /// Record a newly committed backup and advance `next_id` past it.
    pub fn add(&mut self, record: BackupRecord) {
        self.next_id = BackupId(self.next_id.0.max(record.id.0.saturating_add(1)));
        let in_order = self.backups.last().is_none_or(|b| b.id < record.id);
        self.backups.push(record);
        if !in_order {
            self.backups.sort_by_key(|b| b.id);
        }
    }

    /// Remove a backup; its children take its parent as theirs. Returns the removed record.
    pub fn remove(&mut self, id: BackupId) -> Option<BackupRecord> {
        let pos = self.backups.iter().position(|b| b.id == id)?;
        let removed = self.backups.remove(pos);
        for b in self.backups.iter_mut().filter(|b| b.parent == Some(id)) {
            b.parent = removed.parent;
        }
        Some(removed)
    }

    /// Check the invariants; returns a description of the first violation. Linear time.
    pub fn check(&self) -> Result<(), String> {
        let (lo, hi) = (earliest(), latest());
        for (i, b) in self.backups.iter().enumerate() {
            if b.id >= self.next_id {
                return Err(format!(
                    "backup {} is not below next_id {}",
                    b.id, self.next_id
                ));
            }
            // Strictly increasing ids: so every earlier one is smaller, and `get` can search.
            if i > 0 && self.backups[i - 1].id >= b.id {
                return Err(format!("backup {} is listed out of order or twice", b.id));
            }
            for (what, t) in [("started", b.started), ("finished", b.finished)] {
                if t < lo || t > hi {
                    return Err(format!(
                        "backup {} {what} at {t}, outside the years 1970 to 9999",
                        b.id
                    ));
                }
            }
            if let Some(p) = b.parent {
                if p >= b.id {
                    return Err(format!(
                        "backup {} has a parent {p} that is not older",
                        b.id
                    ));
                }
                if self.get(p).is_none() {
                    return Err(format!(
                        "backup {} has parent {p}, which is not in the tree",
                        b.id
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, kind: Kind, parent: Option<u64>) -> BackupRecord {
        let t = DateTime::from_timestamp(1_700_000_000 + id as i64 * 900, 0).unwrap();
        BackupRecord {
            id: BackupId(id),
            kind,
            parent: parent.map(BackupId),
            started: t,
            finished: t,
            verified: true,
            partial: false,
            bytes_total: 0,
            bytes_new: 0,
            bytes_stored: 0,
        }
    }

    #[test]
    fn removing_a_backup_reparents_its_children_to_its_parent() {
        let mut t = Tree::default();
        t.add(rec(1, Kind::Monthly, None));
        t.add(rec(2, Kind::Daily, Some(1)));
        t.add(rec(3, Kind::Micro, Some(2)));
        t.add(rec(4, Kind::Micro, Some(3)));
        t.remove(BackupId(2)).unwrap();
        assert_eq!(t.get(BackupId(3)).unwrap().parent, Some(BackupId(1)));
        assert_eq!(t.get(BackupId(4)).unwrap().parent, Some(BackupId(3)));
        assert_eq!(t.next_id, BackupId(5));
        t.check().unwrap();
    }

    #[test]
    fn check_finds_a_dangling_parent() {
        let mut t = Tree::default();
        t.add(rec(2, Kind::Micro, Some(1)));
        assert!(t.check().unwrap_err().contains("not in the tree"));
    }

    #[test]
    fn check_refuses_times_outside_1970_to_9999() {
        for (text, ok) in [
            ("1970-01-01T00:00:00Z", true),
            ("9999-12-31T23:59:59.999999999Z", true),
            ("1969-12-31T23:59:59Z", false),
            ("+10000-01-01T00:00:00Z", false),
            ("+262142-12-31T23:59:59Z", false),
        ] {
            let mut t = Tree::default();
            let mut r = rec(1, Kind::Monthly, None);
            r.started = serde_yaml::from_str(text).unwrap();
            t.add(r);
            assert_eq!(t.check().is_ok(), ok, "{text}: {:?}", t.check());
        }
    }

    #[test]
    fn a_100_000_deep_chain_checks_in_linear_time() {
        let mut t = Tree::default();
        t.add(rec(1, Kind::Monthly, None));
        for id in 2..=100_000 {
            t.add(rec(id, Kind::Daily, Some(id - 1)));
        }
        let t0 = std::time::Instant::now();
        t.check().unwrap();
        assert!(t0.elapsed().as_secs() < 2, "{:?}", t0.elapsed());
    }

    #[test]
    fn tree_yaml_round_trips() {
        let mut t = Tree::default();
        t.add(rec(1, Kind::Monthly, None));
        t.add(rec(2, Kind::Micro, Some(1)));
        let text = serde_yaml::to_string(&t).unwrap();
        assert_eq!(serde_yaml::from_str::<Tree>(&text).unwrap(), t);
    }
}
