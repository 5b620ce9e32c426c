//! Notifications: the configured command, run with the event as environment variables and as
//! JSON on stdin. Runs in the background; a failing command is logged, never fatal.

use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use tracing::{info, warn};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub event: EventKind,
    pub medium: Option<String>,
    pub label: Option<String>,
    pub device: Option<String>,
    pub backup: Option<u64>,
    pub message: String,
}

pub fn send(command: &Option<PathBuf>, e: Event) {
    info!(
        event = e.event.name(),
        medium = e.medium.as_deref().unwrap_or("-"),
        backup = e.backup,
        message = %e.message,
        "notification"
    );
    let Some(cmd) = command.clone() else { return };
    std::thread::spawn(move || {
        let kind = e.event.name();
        let child = Command::new(&cmd)
            .env("TRAYBACK_EVENT", kind)
            .env("TRAYBACK_MEDIUM", e.medium.clone().unwrap_or_default())
            .env("TRAYBACK_LABEL", e.label.clone().unwrap_or_default())
            .env("TRAYBACK_DEVICE", e.device.clone().unwrap_or_default())
            .env(
                "TRAYBACK_BACKUP",
                e.backup.map(|b| b.to_string()).unwrap_or_default(),
            )
            .env("TRAYBACK_MESSAGE", &e.message)
            .stdin(Stdio::piped())
            .spawn();
        match child {
            Ok(mut c) => {
                if let Some(mut stdin) = c.stdin.take() {
                    let _ = serde_json::to_writer(&mut stdin, &e);
                    let _ = stdin.write_all(b"\n");
                }
                match c.wait() {
                    Ok(s) if s.success() => {}
                    Ok(s) => warn!(command = %cmd.display(), status = %s, "notify command failed"),
                    Err(err) => {
                        warn!(command = %cmd.display(), cause = %err, "notify command failed")
                    }
                }
            }
            Err(err) => warn!(command = %cmd.display(), cause = %err, "cannot run notify command"),
        }
    });
}
