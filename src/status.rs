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
    pub last_failure: Option<LastFailure>,
}

/// What the agent notifies (the configured command's `TRAYBACK_EVENT`), and what a failure in
/// `status` was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    BackupFailed,
    VerifyFailed,
    MediumTooSmall,
    UnknownMedium,
    SafeToRemove,
    MediumAway,
    DuplicateMedium,
    /// The medium reports I/O errors (or the kernel made it read-only): check or replace it.
    MediumFailing,
    /// The tray was pulled while a backup ran: that backup was cancelled.
    MediumPulled,
    /// An encrypted medium whose ID file or key wrap was altered: not written.
    TamperedMedium,
}

impl EventKind {
    /// The event's name, as in `TRAYBACK_EVENT` and the JSON (`backup_failed`).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::BackupFailed => "backup_failed",
            EventKind::VerifyFailed => "verify_failed",
            EventKind::MediumTooSmall => "medium_too_small",
            EventKind::UnknownMedium => "unknown_medium",
            EventKind::SafeToRemove => "safe_to_remove",
            EventKind::MediumAway => "medium_away",
            EventKind::DuplicateMedium => "duplicate_medium",
            EventKind::MediumFailing => "medium_failing",
            EventKind::MediumPulled => "medium_pulled",
            EventKind::TamperedMedium => "tampered_medium",
        }
    }

    /// A failure (`status`'s `last_failure`): something went wrong with a backup or a
    /// medium, as opposed to news (safe to remove, away, unknown).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            EventKind::BackupFailed
                | EventKind::VerifyFailed
                | EventKind::MediumTooSmall
                | EventKind::MediumFailing
                | EventKind::TamperedMedium
                | EventKind::MediumPulled
        )
    }
}

/// A failure the agent notified.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastFailure {
    pub at: DateTime<Utc>,
    pub event: EventKind,
    pub media_id: Option<MediaId>,
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
    /// Free space on the medium's file system (None: it could not be asked).
    #[serde(default)]
    pub free_bytes: Option<u64>,
    /// The medium's file system size (None: it could not be asked).
    #[serde(default)]
    pub size_bytes: Option<u64>,
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

#[cfg(test)]
mod tests {
    use super::EventKind::{self, *};

    /// `name` (the command's `TRAYBACK_EVENT`, the metrics label) and the JSON the notify
    /// command and `status` get are one name.
    #[test]
    fn an_events_name_is_its_json() {
        let all: [EventKind; 10] = [
            BackupFailed,
            VerifyFailed,
            MediumTooSmall,
            UnknownMedium,
            SafeToRemove,
            MediumAway,
            DuplicateMedium,
            MediumFailing,
            MediumPulled,
            TamperedMedium,
        ];
        for e in all {
            // A variant added without a line here fails to compile in the match below.
            match e {
                BackupFailed | VerifyFailed | MediumTooSmall | UnknownMedium | SafeToRemove
                | MediumAway | DuplicateMedium | MediumFailing | MediumPulled | TamperedMedium => {}
            }
            assert_eq!(
                serde_json::to_string(&e).unwrap(),
                format!("\"{}\"", e.name())
            );
        }
    }
}
