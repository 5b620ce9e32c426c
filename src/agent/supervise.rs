//! Supervision of the per-medium tasks (STYLE 26): a medium's task, and the engine work it
//! runs in `spawn_blocking`, may fail in any way, a panic included, without touching the rest
//! of the agent.
//!
//! Invariants:
//! - no task result is unwrapped: a failed task is caught by its supervisor, which unmounts
//!   that medium (lazily if busy), removes it from the inserted set, remembers why for
//!   `eject`, and notifies (`backup_failed`);
//! - the agent's locks are taken with [`Locked::locked`], which survives a lock poisoned by
//!   a panicking task;
//! - the hidden test hook (`TRAYBACK_TEST_PANIC=job:LABEL|task:LABEL`) is honoured only with
//!   `--test-clock`.

use super::control::Response;
use super::devices::Disk;
use super::task::watch_mount;
use super::{mounts, Agent, Cmd, Live};
use crate::medium::{MediaFile, Medium};
use crate::status::EventKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;
use tracing::{error, warn};

/// One medium's session, as its supervisor and its task know it.
#[derive(Clone)]
pub(super) struct Session {
    pub(super) disk: Disk,
    pub(super) mp: PathBuf,
    pub(super) seq: u64,
    pub(super) media: MediaFile,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) live: Arc<Mutex<Live>>,
}

/// A medium whose task failed and was cleaned up: what `eject` answers for it.
pub(super) struct Released {
    pub(super) disk: Disk,
    pub(super) media: MediaFile,
    pub(super) mountpoint: PathBuf,
    pub(super) unmounted: bool,
    pub(super) message: String,
}

/// Where the hidden test hook (`TRAYBACK_TEST_PANIC=job:LABEL` or `task:LABEL`, honoured
/// only with `--test-clock`) makes a medium's task panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PanicAt {
    /// In the engine work (`spawn_blocking`).
    Job,
    /// In the medium's async task.
    Task,
}

/// A lock that survives a panic elsewhere: a task that panicked while holding one of the
/// agent's locks must not take the rest of the agent with it (the web interface's locks are
/// taken with it too: one panicking request must not fail every later one).
pub(crate) trait Locked<T> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Does `which` (a label, media id, device or mount point; `None`: any) name this medium?
/// The one selector of every request that names a medium.
pub(super) fn selects(which: &Option<String>, media: &MediaFile, disk: &Disk, mp: &Path) -> bool {
    match which {
        None => true,
        Some(w) => {
            media.label == *w
                || media.media_id.to_string() == *w
                || disk.devnode == Path::new(w)
                || mp == Path::new(w)
        }
    }
}

/// What a failed task's `JoinError` says.
pub(super) fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "cancelled".into();
    }
    let p = e.into_panic();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    format!("panicked: {msg}")
}

/// The test hook, from `TRAYBACK_TEST_PANIC` (`job:LABEL` or `task:LABEL`).
pub(super) fn test_panic_hook() -> Option<(PanicAt, String)> {
    let v = std::env::var("TRAYBACK_TEST_PANIC").ok()?;
    let (at, label) = v.split_once(':')?;
    let at = match at {
        "job" => PanicAt::Job,
        "task" => PanicAt::Task,
        _ => return None,
    };
    warn!(?at, label, "test hook: this medium's task will panic");
    Some((at, label.to_string()))
}

impl Agent {
    /// Run a medium's task and clean up after it whatever happens: a panic in the task or
    /// in its engine work unmounts that medium, forgets it and notifies, and leaves the
    /// rest of the agent (other media, the control socket) untouched.
    pub(super) async fn supervise(
        self: Arc<Self>,
        s: Session,
        medium: Medium,
        tx: mpsc::Sender<Cmd>,
        rx: mpsc::Receiver<Cmd>,
    ) {
        let watchdog = tokio::spawn(watch_mount(
            s.mp.clone(),
            s.disk.devnum,
            s.cancel.clone(),
            s.live.clone(),
            tx,
        ));
        let task =
            tokio::spawn(
                self.clone()
                    .medium_task(s.clone(), medium, rx, watchdog.abort_handle()),
            );
        let failure = match task.await {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(e) => Some(format!("its task failed: {}", panic_message(e))),
        };
        watchdog.abort();
        if let Some(why) = failure {
            self.abandon(&s, why).await;
        }
    }

    /// After a medium's task failed: unmount the medium (lazily if it is busy), forget it,
    /// remember why for `eject`, and notify.
    async fn abandon(&self, s: &Session, why: String) {
        s.cancel.store(true, Ordering::SeqCst);
        let mp = s.mp.clone();
        let detached = tokio::task::spawn_blocking(move || {
            mounts::sync();
            mounts::unmount(&mp, false).or_else(|_| mounts::unmount(&mp, true))
        })
        .await;
        let unmounted = matches!(detached, Ok(Ok(())));
        {
            let mut ins = self.inserted.locked();
            if ins.get(&s.disk.devnode).is_some_and(|i| i.seq == s.seq) {
                ins.remove(&s.disk.devnode);
            }
        }
        let message = format!(
            "medium {} ({:?}) on {}: {why}; {}; nothing more is written to it until it is inserted again",
            s.media.media_id,
            s.media.label,
            s.disk.devnode.display(),
            if unmounted {
                "it was unmounted and is safe to remove".to_string()
            } else {
                format!("it could not be unmounted from {}", s.mp.display())
            }
        );
        error!(device = %s.disk.devnode.display(), medium = %s.media.media_id, "{message}");
        self.released.locked().insert(
            s.disk.devnode.clone(),
            Released {
                disk: s.disk.clone(),
                media: s.media.clone(),
                mountpoint: s.mp.clone(),
                unmounted,
                message: message.clone(),
            },
        );
        self.changed.send_modify(|v| *v += 1);
        self.note(
            EventKind::BackupFailed,
            Some(&s.disk),
            Some(&s.media),
            None,
            message,
        );
    }

    /// Does the test hook make this medium's task panic here?
    pub(super) fn test_panic_at(&self, at: PanicAt, label: &str) -> bool {
        self.test_panic
            .as_ref()
            .is_some_and(|(a, l)| *a == at && l == label)
    }

    /// The answer to `eject` for a medium whose task failed and was cleaned up.
    pub(super) fn released_answer(&self, which: &Option<String>) -> Option<Response> {
        let rel = self.released.locked();
        let matches: Vec<&Released> = rel
            .values()
            .filter(|r| selects(which, &r.media, &r.disk, &r.mountpoint))
            .collect();
        let [r] = matches.as_slice() else {
            return None;
        };
        Some(if r.unmounted {
            let msg = format!(
                "{} ({}) was already unmounted after its task failed; safe to remove",
                r.disk.devnode.display(),
                r.media.label
            );
            Response::ok(&crate::status::Ejected {
                safe_to_remove: true,
                device: r.disk.devnode.clone(),
                message: msg,
                failure: Some(r.message.clone()),
            })
        } else {
            Response::err(r.message.clone())
        })
    }

    /// `eject` found the medium's task gone (it ended or failed just now): wait for its
    /// clean-up, then answer from what it left.
    pub(super) async fn after_task_ended(&self, which: &Option<String>) -> Response {
        let t0 = std::time::Instant::now();
        while self.find(which).is_ok() && t0.elapsed() < std::time::Duration::from_secs(30) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.released_answer(which).unwrap_or_else(|| {
            Response::err("the medium went away during eject; it is no longer mounted by the agent")
        })
    }
}
