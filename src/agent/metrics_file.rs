//! The metrics file: the agent's status as OpenMetrics text ([`crate::metrics`]) in
//! `agent.metrics_file`, for node_exporter's textfile collector.
//!
//! One task writes it, so writes never race: at start, on every change of the inserted
//! media (insert, pull, release), when poked (after every job, verify, pare and failure),
//! and every minute (a running job's progress). Each write is atomic (temporary file in
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

/// Write the file now and whenever something changes, until the agent stops.
pub(super) async fn publish(agent: Arc<Agent>) {
    let mut changed = agent.changed.subscribe();
    let mut last_error = None;
    loop {
        let text = crate::metrics::render(Some(&agent.status()), true);
        last_error = write(agent.cfg.agent.metrics_file.clone(), text, last_error).await;
        tokio::select! {
            _ = changed.changed() => {}
            _ = agent.metrics.0.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
        }
    }
}

/// The agent stopped: its last status, with `trayback_agent_up 0`.
pub(super) async fn agent_stopped(agent: &Agent) {
    let text = crate::metrics::render(Some(&agent.status()), false);
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
    use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
    use std::io::Write;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other("not a file path"));
    };
    let dir = rustix::fs::openat2(
        CWD,
        dir,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => std::io::Error::other(
            "a symlink on the directory's path (not followed: the agent writes only to a real directory)",
        ),
        e => e.into(),
    })?;
    let tmp = format!(
        "{}.{}.tmp",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    );
    let written = (|| {
        let fd = rustix::fs::openat(
            &dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
        let mut f = std::fs::File::from(fd);
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        rustix::fs::renameat(&dir, tmp.as_str(), &dir, name)?;
        rustix::fs::fsync(&dir)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), rustix::fs::AtFlags::empty());
    }
    written
}
