//! The dependency tree of all backups on one medium (spec [0034]–[0036], Fig. 2).
//!
//! Pure data and functions: no I/O here (the medium reads and writes `tree.yaml`).
//! Invariants kept by every operation:
//! - ids are unique and increase in creation order; `next_id` is never reused;
//! - every `parent` names a backup present in the tree (removing a backup re-parents its
//!   children to its own parent);
//! - there are no cycles (a parent is always older than its child).

use crate::ids::BackupId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

pub const TREE_FORMAT: u32 = 1;

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
    pub format: u32,
    pub next_id: BackupId,
    pub backups: Vec<BackupRecord>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            format: TREE_FORMAT,
            next_id: BackupId(1),
            backups: Vec::new(),
        }
    }
}

impl Tree {
    pub fn get(&self, id: BackupId) -> Option<&BackupRecord> {
        self.backups.iter().find(|b| b.id == id)
    }

    pub fn get_mut(&mut self, id: BackupId) -> Option<&mut BackupRecord> {
        self.backups.iter_mut().find(|b| b.id == id)
    }

    /// The newest verified backup (by start time, then id).
    pub fn latest_verified(&self) -> Option<&BackupRecord> {
        self.backups
            .iter()
            .filter(|b| b.verified)
            .max_by_key(|b| (b.started, b.id))
    }

    /// The newest verified backup that started at or before `at`.
    pub fn latest_verified_at(&self, at: DateTime<Utc>) -> Option<&BackupRecord> {
        self.backups
            .iter()
            .filter(|b| b.verified && b.started <= at)
            .max_by_key(|b| (b.started, b.id))
    }

    pub fn children(&self, id: BackupId) -> impl Iterator<Item = &BackupRecord> {
        self.backups.iter().filter(move |b| b.parent == Some(id))
    }

    /// Record a newly committed backup and advance `next_id` past it.
    pub fn add(&mut self, record: BackupRecord) {
        self.next_id = BackupId(self.next_id.0.max(record.id.0 + 1));
        self.backups.push(record);
        self.backups.sort_by_key(|b| b.id);
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

    /// Check the invariants; returns a description of the first violation.
    pub fn check(&self) -> Result<(), String> {
        for (i, b) in self.backups.iter().enumerate() {
            if b.id >= self.next_id {
                return Err(format!(
                    "backup {} is not below next_id {}",
                    b.id, self.next_id
                ));
            }
            if self.backups[..i].iter().any(|o| o.id >= b.id) {
                return Err(format!("backup {} is listed out of order or twice", b.id));
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
    fn tree_yaml_round_trips() {
        let mut t = Tree::default();
        t.add(rec(1, Kind::Monthly, None));
        t.add(rec(2, Kind::Micro, Some(1)));
        let text = serde_yaml::to_string(&t).unwrap();
        assert_eq!(serde_yaml::from_str::<Tree>(&text).unwrap(), t);
    }
}
