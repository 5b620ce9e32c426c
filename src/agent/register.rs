//! The host-side register of known media (`<state_dir>/register.yaml`): when each medium was
//! last seen and its newest backups, so `trayback status` can say which disk has the latest
//! backup while the others are off-site.

use crate::fsio;
use crate::tree::{Kind, Tree};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Seen {
    pub label: String,
    pub last_seen: Option<DateTime<Utc>>,
    pub last_device: Option<String>,
    /// Start time and id of the newest backup of each kind.
    #[serde(default)]
    pub newest: BTreeMap<Kind, (DateTime<Utc>, u64)>,
    #[serde(default)]
    pub warned_away: Option<DateTime<Utc>>,
    /// The file system UUID it was last seen with: a disk with this UUID whose journal needs
    /// replaying is recovered, not taken for blank (`identify`).
    #[serde(default)]
    pub fs_uuid: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Register {
    pub media: BTreeMap<String, Seen>,
    #[serde(skip)]
    path: PathBuf,
}

impl Register {
    /// Load the register; a missing or unreadable one starts empty (it is rebuilt as media
    /// come in).
    pub fn load(state_dir: &Path) -> Register {
        let path = state_dir.join("register.yaml");
        let mut r: Register = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_yaml::from_str(&t).ok())
            .unwrap_or_default();
        r.path = path;
        r
    }

    pub fn save(&self) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap();
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        fsio::atomic_write(
            &tmp,
            &self.path,
            serde_yaml::to_string(self).unwrap().as_bytes(),
        )
    }

    /// Record that a medium is in, with its tree.
    pub fn seen(
        &mut self,
        media_id: &str,
        label: &str,
        device: &str,
        fs_uuid: &str,
        tree: &Tree,
        now: DateTime<Utc>,
    ) {
        let s = self.media.entry(media_id.to_string()).or_default();
        s.fs_uuid = Some(fs_uuid.to_string());
        s.label = label.to_string();
        s.last_seen = Some(now);
        s.last_device = Some(device.to_string());
        s.warned_away = None;
        s.newest.clear();
        for b in tree.backups.iter().filter(|b| b.verified) {
            let e = s.newest.entry(b.kind).or_insert((b.started, b.id.0));
            if b.started >= e.0 {
                *e = (b.started, b.id.0);
            }
        }
    }
}
