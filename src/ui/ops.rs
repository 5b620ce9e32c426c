//! The interface's state changes, each an operation the page follows: backup now and eject
//! (asked of the agent over its control socket, as `trayback backup-now` and `trayback eject`
//! ask), and restore (the library's `restore::restore`, as `trayback restore` runs it, with
//! its safety rules: nothing outside the target, nothing newer overwritten unless asked).
//!
//! An operation starts at once and answers with its number; `/api/ops` shows each running
//! one's progress and each finished one's result. At most [`MAX_OPS`] are kept: the oldest
//! finished one makes room for a new one, and with [`MAX_OPS`] running a new one is refused
//! (429), so the list, and the threads waiting on the agent (a backup-now or an eject waits
//! as long as the agent's job takes, without a time limit), stay bounded. Restores also take
//! one of [`super::LONG_TASKS`] permits; with all taken (by restores or downloads), a
//! restore is refused at once (429), never left waiting.

use super::api::{ApiError, ApiResult, MediumId};
use super::wire::backup_path;
use super::{media, App};
use crate::agent::Locked;
use crate::agent::{self, Request};
use crate::ids::{BackupId, MediaId};
use crate::job::Outcome;
use crate::progress::Meter;
use crate::restore::{self, Target};
use crate::status::Ejected;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Operations kept (running ones and the newest finished).
pub const MAX_OPS: usize = 50;
/// Paths one restore may name.
const MAX_PATHS: usize = 1000;
/// Entries of a restore report's lists (kept, problems, planned) sent at most.
const MAX_LISTED: usize = 1000;

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum What {
    BackupNow,
    Eject,
    Restore,
}

/// How an operation ended.
#[derive(Clone, Debug, Serialize)]
pub struct Done {
    pub ok: bool,
    /// One line for the page ("safe to remove", "restored 3 files …").
    pub message: String,
    pub finished: DateTime<Utc>,
    /// The full answer (a job outcome, an eject answer, a restore report).
    pub detail: serde_json::Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct Op {
    pub id: u64,
    pub what: What,
    pub medium: String,
    pub started: DateTime<Utc>,
    pub files: u64,
    pub bytes: u64,
    /// Bytes to go through, when known (a restore).
    pub total: Option<u64>,
    pub done: Option<Done>,
}

struct Entry {
    op: Op,
    meter: Option<Arc<Meter>>,
}

#[derive(Default)]
pub struct Ops {
    next: AtomicU64,
    list: Mutex<VecDeque<Entry>>,
}

impl Ops {
    /// Start an operation; refused when [`MAX_OPS`] are running.
    fn start(
        &self,
        what: What,
        medium: MediaId,
        meter: Option<Arc<Meter>>,
    ) -> Result<u64, ApiError> {
        let mut l = self.list.locked();
        while l.len() >= MAX_OPS {
            // The oldest finished one goes; running ones stay.
            match l.iter().position(|e| e.op.done.is_some()) {
                Some(i) => {
                    l.remove(i);
                }
                None => {
                    return Err(ApiError::busy(format!(
                        "{MAX_OPS} operations are running; try again when one has finished"
                    )))
                }
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        l.push_back(Entry {
            op: Op {
                id,
                what,
                medium: medium.to_string(),
                started: Utc::now(),
                files: 0,
                bytes: 0,
                total: None,
                done: None,
            },
            meter,
        });
        Ok(id)
    }

    fn set_total(&self, id: u64, total: u64) {
        if let Some(e) = self.list.locked().iter_mut().find(|e| e.op.id == id) {
            e.op.total = Some(total);
        }
    }

    fn finish(&self, id: u64, ok: bool, message: String, detail: serde_json::Value) {
        if let Some(e) = self.list.locked().iter_mut().find(|e| e.op.id == id) {
            if let Some(m) = &e.meter {
                e.op.files = m.files();
                e.op.bytes = m.bytes();
            }
            e.meter = None;
            e.op.done = Some(Done {
                ok,
                message,
                finished: Utc::now(),
                detail,
            });
        }
    }

    /// Every operation kept, newest first, with the progress of running ones.
    pub fn snapshot(&self) -> Vec<Op> {
        self.list
            .locked()
            .iter()
            .rev()
            .map(|e| {
                let mut op = e.op.clone();
                if let Some(m) = &e.meter {
                    op.files = m.files();
                    op.bytes = m.bytes();
                }
                op
            })
            .collect()
    }
}

pub async fn list(State(app): State<Arc<App>>) -> ApiResult<Vec<Op>> {
    Ok(Json(app.ops.snapshot()))
}

#[derive(Serialize)]
pub struct Started {
    op: u64,
}

/// Run `f` as operation `op` on the blocking pool; its `(ok, message, detail)` ends the op.
fn spawn_op(
    app: &Arc<App>,
    op: u64,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    f: impl FnOnce(&App) -> (bool, String, serde_json::Value) + Send + 'static,
) {
    let app = app.clone();
    tokio::spawn(async move {
        let a = app.clone();
        let r = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&a)
        })
        .await;
        let (ok, message, detail) = r.unwrap_or_else(|e| {
            (
                false,
                format!("the operation failed: {e}"),
                serde_json::Value::Null,
            )
        });
        app.ops.finish(op, ok, message, detail);
    });
}

/// Ask the agent (a request that may take as long as a backup).
fn ask_agent(app: &App, req: &Request) -> Result<agent::Response, String> {
    agent::call(&app.socket, req)
}

pub async fn backup_now(State(app): State<Arc<App>>, MediumId(id): MediumId) -> ApiResult<Started> {
    let op = app.ops.start(What::BackupNow, id, None)?;
    spawn_op(&app, op, None, move |app| {
        let req = Request::BackupNow {
            medium: Some(id.to_string()),
        };
        match ask_agent(app, &req) {
            Err(e) => (false, e, serde_json::Value::Null),
            Ok(r) => {
                let outcome: Option<Outcome> = r.data_as().ok();
                let made = outcome.as_ref().and_then(|o| {
                    o.backup.as_ref().map(|h| {
                        let verified = match o.verified() {
                            Some(true) => "verified",
                            Some(false) => "verification FAILED (damage found)",
                            None => "not verified yet",
                        };
                        format!("backup #{} ({}) made, {verified}", h.id, h.kind)
                    })
                });
                let message = match (r.ok, made, &r.error) {
                    (true, Some(m), _) => m,
                    (true, None, _) => "no backup made".into(),
                    (false, _, e) => e.clone().unwrap_or_else(|| "the backup failed".into()),
                };
                (r.ok, message, r.data)
            }
        }
    });
    Ok(Json(Started { op }))
}

pub async fn eject(State(app): State<Arc<App>>, MediumId(id): MediumId) -> ApiResult<Started> {
    let op = app.ops.start(What::Eject, id, None)?;
    spawn_op(&app, op, None, move |app| {
        let req = Request::Eject {
            medium: Some(id.to_string()),
        };
        match ask_agent(app, &req) {
            Err(e) => (false, e, serde_json::Value::Null),
            Ok(r) if !r.ok => (
                false,
                r.error.unwrap_or_else(|| "the agent refused".into()),
                r.data,
            ),
            Ok(r) => match r.data_as::<Ejected>() {
                Ok(e) => (e.safe_to_remove, e.message, r.data),
                Err(e) => (false, e, r.data),
            },
        }
    });
    Ok(Json(Started { op }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    backup: BackupId,
    /// Paths in the backup (whole subtrees); empty for everything.
    #[serde(default)]
    paths: Vec<String>,
    /// A directory to restore under (full paths kept, as `--to`); absent: the original
    /// places (`--in-place`).
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    overwrite: bool,
    #[serde(default)]
    dry_run: bool,
}

/// The restore target from the browser: an absolute directory (the server's working
/// directory means nothing to a browser), or the original places.
fn target(to: Option<&str>) -> Result<Target, ApiError> {
    match to {
        None => Ok(Target::InPlace),
        Some(t) if t.starts_with('/') && !t.contains('\0') && t.len() <= 4096 => {
            Ok(Target::Dir(PathBuf::from(t)))
        }
        Some(t) => Err(ApiError::bad(format!(
            "{:?}: restore to an absolute directory (e.g. /root/restored)",
            t.chars().take(80).collect::<String>()
        ))),
    }
}

fn summary(r: &restore::Report) -> String {
    let mut s = format!(
        "{} {} files, {} directories, {} links ({} bytes) {} {}",
        if r.dry_run {
            "would restore"
        } else {
            "restored"
        },
        r.files,
        r.dirs,
        r.links,
        r.bytes,
        if r.target == "/" {
            "in place under"
        } else {
            "to"
        },
        r.target
    );
    if !r.kept.is_empty() {
        s.push_str(&format!(
            "; {} kept as they were (newer, or something else in the way)",
            r.kept.len()
        ));
    }
    if !r.problems.is_empty() {
        s.push_str(&format!("; {} problems", r.problems.len()));
    }
    s
}

pub async fn restore(
    State(app): State<Arc<App>>,
    MediumId(id): MediumId,
    Json(r): Json<RestoreRequest>,
) -> ApiResult<Started> {
    if r.paths.len() > MAX_PATHS {
        return Err(ApiError::bad(format!(
            "at most {MAX_PATHS} paths at once; restore their directory instead"
        )));
    }
    let paths = r
        .paths
        .iter()
        .map(|p| backup_path(p))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = restore::Options {
        target: target(r.to.as_deref())?,
        paths,
        dry_run: r.dry_run,
        overwrite: r.overwrite,
    };
    let permit = app.long_permit()?;
    let meter = Arc::new(Meter::hidden());
    let op = app.ops.start(What::Restore, id, Some(meter.clone()))?;
    let backup = r.backup;
    spawn_op(&app, op, Some(permit), move |app| {
        let run = || -> Result<restore::Report, ApiError> {
            let m = media::open(app, id)?;
            if let Some(rec) = m.tree().get(backup) {
                app.ops.set_total(op, rec.bytes_total);
            }
            Ok(restore::restore(&m, backup, &opts, &meter)?)
        };
        match run() {
            Err(e) => (false, e.message().to_string(), serde_json::Value::Null),
            Ok(mut rep) => {
                let msg = summary(&rep);
                let ok = rep.problems.is_empty();
                rep.kept.truncate(MAX_LISTED);
                rep.problems.truncate(MAX_LISTED);
                rep.planned.truncate(MAX_LISTED);
                (
                    ok,
                    msg,
                    serde_json::to_value(&rep).unwrap_or(serde_json::Value::Null),
                )
            }
        }
    });
    Ok(Json(Started { op }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_holding_the_list_does_not_fail_later_requests() {
        let ops = Arc::new(Ops::default());
        let o = ops.clone();
        let r = std::thread::spawn(move || {
            let _held = o.list.locked();
            panic!("a request panicked while holding the list");
        })
        .join();
        assert!(r.is_err() && ops.list.is_poisoned());
        let id = ops
            .start(What::Eject, MediaId(uuid::Uuid::nil()), None)
            .unwrap();
        ops.finish(id, true, "safe to remove".into(), serde_json::Value::Null);
        let all = ops.snapshot();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].done.as_ref().unwrap().message, "safe to remove");
    }
}
