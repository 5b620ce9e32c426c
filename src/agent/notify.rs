//! Notifications: the configured command, run with the event as environment variables and as
//! JSON on stdin. Runs in the background; a failing command is logged, never fatal.

use crate::status::EventKind;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use tracing::{info, warn};

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
