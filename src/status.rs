//! What the agent answers on its control socket, as types both sides share (serde both ways):
//! the agent builds these values, the CLI reads them back as the same types — no JSON read
//! back by string keys.

use crate::ids::MediaId;
use crate::tree::Kind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `trayback status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub now: DateTime<Utc>,
    pub host: String,
    pub inserted: Vec<Inserted>,
    /// Media this host knows that are not inserted (away, e.g. off-site).
    pub known: Vec<Away>,
    pub warnings: Vec<String>,
    /// The newest failure the agent notified (backup or verify failed, medium too small,
    /// failing or tampered), since it started.
    #[serde(default)]
    pub last_failure: Option<Failure>,
}

/// A failure the agent notified.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    pub at: DateTime<Utc>,
    /// The notification's event (`backup_failed`, `verify_failed`, …).
    pub event: String,
    pub media_id: Option<String>,
    pub label: Option<String>,
    pub message: String,
}

/// The result of the newest verification the agent ran on a medium.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Verified {
    pub at: DateTime<Utc>,
    pub ok: bool,
}

/// A backup by id and start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BackupRef {
    pub id: u64,
    pub started: DateTime<Utc>,
}

impl BackupRef {
    pub fn of(b: &crate::tree::BackupRecord) -> BackupRef {
        BackupRef {
            id: b.id.0,
            started: b.started,
        }
    }
}

/// An inserted medium.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Inserted {
    pub label: String,
    pub media_id: MediaId,
    pub device: PathBuf,
    pub mountpoint: PathBuf,
    pub backups: usize,
    /// The newest verified backup of each kind.
    pub newest: BTreeMap<Kind, BackupRef>,
    pub job: Option<Job>,
    pub next_due: Option<DateTime<Utc>>,
    pub free_bytes: u64,
    /// The medium's file system size.
    #[serde(default)]
    pub size_bytes: u64,
    /// The newest verification run on it since it was inserted.
    #[serde(default)]
    pub last_verify: Option<Verified>,
    /// Backups pared on it since it was inserted.
    #[serde(default)]
    pub pared: u64,
    pub last_error: Option<String>,
    /// False when another medium, inserted later, is the one written.
    pub writing: bool,
    /// How far back each kind will reach at this medium's change rate ([0055]); measured
    /// after the first backup of an insertion and after every backup but a micro.
    #[serde(default)]
    pub reach: Option<crate::sizing::Reach>,
    /// Lent to a command (`media passphrase`, `rotate-host-key`, `adopt`): the agent has let
    /// go of its writer lock until that command ends.
    #[serde(default)]
    pub lent: bool,
}

/// The job running on an inserted medium.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub kind: Kind,
    pub started: DateTime<Utc>,
    pub files: u64,
    pub bytes: u64,
}

impl Job {
    /// The one line `trayback status` and the web interface's trays page say of it.
    pub fn summary(&self) -> String {
        format!(
            "running: {} backup since {} ({} files, {})",
            self.kind,
            self.started.format("%Y-%m-%d %H:%M:%S UTC"),
            self.files,
            indicatif::HumanBytes(self.bytes)
        )
    }
}

/// A known medium that is not inserted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Away {
    pub media_id: String,
    pub label: String,
    pub last_seen: Option<DateTime<Utc>>,
    pub last_device: Option<String>,
    pub newest_backup: Option<BackupRef>,
    /// The newest verified backup of each kind when it was last seen.
    #[serde(default)]
    pub newest: BTreeMap<Kind, BackupRef>,
}

/// The answer to `lend`: the medium is the client's, mounted here, until it closes the
/// connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lent {
    pub mountpoint: PathBuf,
}

/// The answer to `eject`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ejected {
    pub safe_to_remove: bool,
    pub device: PathBuf,
    pub message: String,
    /// Why the medium's task ended early, when it failed before the eject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The answer to `test-clock`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ClockNow {
    pub now: DateTime<Utc>,
}
