//! The metrics file: the agent's status as OpenMetrics text ([`crate::metrics`]) in
//! `agent.metrics_file`, for node_exporter's textfile collector.
//!
//! One task writes it, so writes never race: at start, on every change of the inserted
//! media (insert, pull, release), when poked (after every job, verify, pare and failure),
//! every minute (a running job's progress), and last, when told the agent stopped, with
//! `trayback_agent_up 0`. Each write is atomic (temporary file in
//! the same directory, fsync, rename): the collector never reads half a file. A failed
//! write is logged once per cause and retried at the next change.

use super::Agent;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Notify;
use tracing::warn;

/// Asks the writer for a fresh file.
#[derive(Default)]
pub(super) struct Poke(Notify);

impl Poke {
    pub(super) fn poke(&self) {
        self.0.notify_one();
    }
}

/// Write the file now and whenever something changes until `stop`, then the agent's last
/// status with `trayback_agent_up 0`.
pub(super) async fn publish(agent: Arc<Agent>, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let mut changed = agent.changed.subscribe();
    let mut last_error = None;
    loop {
        let text = crate::metrics::render(crate::metrics::Agent::Running(&agent.status()));
        last_error = write(agent.cfg.agent.metrics_file.clone(), text, last_error).await;
        tokio::select! {
            _ = changed.changed() => {}
            _ = agent.metrics.0.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            _ = &mut stop => break,
        }
    }
    let text = crate::metrics::render(crate::metrics::Agent::Stopped(&agent.status()));
    write(agent.cfg.agent.metrics_file.clone(), text, None).await;
}

/// Write `text` atomically; returns the error, if any (logged unless it is `before`'s).
async fn write(path: PathBuf, text: String, before: Option<String>) -> Option<String> {
    let p = path.clone();
    let r = tokio::task::spawn_blocking(move || write_now(&p, &text)).await;
    let err = match r {
        Ok(Ok(())) => return None,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    if before.as_deref() != Some(err.as_str()) {
        warn!(path = %path.display(), cause = %err, "cannot write the metrics file");
    }
    Some(err)
}

/// Write through a directory opened without following any symlink on its path: the
/// textfile collector's directory is often its own user's, who could otherwise point it
/// anywhere for root to write to. The directory is not created.
fn write_now(path: &Path, text: &str) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other("not a file path"));
    };
    let dir = crate::fsio::open_dir_nofollow(dir)?;
    crate::fsio::atomic_write_at(&dir, &dir, name, text.as_bytes())
}
