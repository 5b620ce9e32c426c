//! Which media the interface shows and where they are: the ones the agent has inserted (its
//! `status`), the directories given with `--medium`, and the known media away (the agent's
//! register). The browser names a medium by its media id only; the path is found here.

use super::api::ApiError;
use super::App;
use crate::agent::{self, Request};
use crate::ids::MediaId;
use crate::medium::{Medium, Unlock};
use crate::status::{self, BackupRef, Status};
use crate::tree::Kind;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The agent's status, or why it cannot be had (within [`agent::STATUS_WAIT`]).
pub fn agent_status(app: &App) -> Result<Status, String> {
    let r = agent::call(&app.socket, &Request::Status)?;
    if !r.ok {
        return Err(r.error.unwrap_or_else(|| "the agent refused".into()));
    }
    r.data_as()
}

/// Where medium `id` is: a `--medium` directory, else the agent's mount point.
pub fn locate(app: &App, id: MediaId) -> Result<PathBuf, ApiError> {
    for d in &app.dirs {
        if Medium::identify(d).is_ok_and(|m| m.media_id == id) {
            return Ok(d.clone());
        }
    }
    match agent_status(app) {
        Ok(s) => match s.inserted.into_iter().find(|i| i.media_id == id) {
            Some(i) => Ok(i.mountpoint),
            None => Err(ApiError::not_found(format!(
                "medium {id} is not inserted (nor given with --medium)"
            ))),
        },
        Err(e) => Err(ApiError::not_found(format!(
            "medium {id} is not given with --medium, and whether it is inserted is unknown: {e}"
        ))),
    }
}

/// Open medium `id` for reading, unlocked with this host's key as the CLI does.
pub fn open(app: &App, id: MediaId) -> Result<Medium, ApiError> {
    let root = locate(app, id)?;
    Ok(Medium::open_read(
        &root,
        &Unlock::host(&app.cfg.agent.state_dir),
    )?)
}

/// Where a tray is.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Place {
    /// In a drive, held by the agent.
    Inserted {
        device: PathBuf,
        mountpoint: PathBuf,
        /// False when another medium, inserted later, is the one written.
        writing: bool,
        next_due: Option<DateTime<Utc>>,
        job: Option<status::Job>,
        /// The running job in the words `trayback status` uses.
        job_summary: Option<String>,
    },
    /// A directory given with `--medium` (not the agent's).
    Directory { path: PathBuf },
    /// Known to this host, not inserted.
    Away {
        last_seen: Option<DateTime<Utc>>,
        last_device: Option<String>,
    },
}

/// One tray on the trays page.
#[derive(Clone, Debug, Serialize)]
pub struct Tray {
    pub media_id: String,
    pub label: String,
    #[serde(flatten)]
    pub place: Place,
    /// The newest verified backup of each kind (of an away tray: its newest backup only).
    pub newest: BTreeMap<Kind, BackupRef>,
    pub newest_any: Option<BackupRef>,
    pub backups: Option<usize>,
    pub free_bytes: Option<u64>,
    /// The agent's last error on it, or why it cannot be read.
    pub error: Option<String>,
    pub reach: Option<crate::sizing::Reach>,
}

/// The trays page's data.
#[derive(Clone, Debug, Serialize)]
pub struct Trays {
    pub now: DateTime<Utc>,
    /// Why the agent's status is missing (not running, not reachable).
    pub agent_error: Option<String>,
    pub host: Option<String>,
    pub trays: Vec<Tray>,
    pub warnings: Vec<String>,
}

/// Every tray: inserted, `--medium` directories, away.
pub fn trays(app: &App) -> Trays {
    let (status, agent_error) = match agent_status(app) {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e)),
    };
    let mut trays = Vec::new();
    if let Some(s) = &status {
        for i in &s.inserted {
            trays.push(Tray {
                media_id: i.media_id.to_string(),
                label: i.label.clone(),
                place: Place::Inserted {
                    device: i.device.clone(),
                    mountpoint: i.mountpoint.clone(),
                    writing: i.writing,
                    next_due: i.next_due,
                    job: i.job.clone(),
                    job_summary: i.job.as_ref().map(status::Job::summary),
                },
                newest_any: i.newest.values().max_by_key(|b| (b.started, b.id)).copied(),
                newest: i.newest.clone(),
                backups: Some(i.backups),
                free_bytes: i.free_bytes,
                error: i.last_error.clone(),
                reach: i.reach.clone(),
            });
        }
    }
    for d in &app.dirs {
        trays.push(directory_tray(app, d));
    }
    if let Some(s) = &status {
        for a in &s.known {
            if trays.iter().any(|t| t.media_id == a.media_id) {
                continue;
            }
            trays.push(Tray {
                media_id: a.media_id.clone(),
                label: a.label.clone(),
                place: Place::Away {
                    last_seen: a.last_seen,
                    last_device: a.last_device.clone(),
                },
                newest: BTreeMap::new(),
                newest_any: a.newest_backup,
                backups: None,
                free_bytes: None,
                error: None,
                reach: None,
            });
        }
    }
    Trays {
        now: status.as_ref().map_or_else(Utc::now, |s| s.now),
        host: status.as_ref().map(|s| s.host.clone()),
        warnings: status.map(|s| s.warnings).unwrap_or_default(),
        agent_error,
        trays,
    }
}

/// A `--medium` directory as a tray: read through the library as the CLI's `list` does.
fn directory_tray(app: &App, d: &std::path::Path) -> Tray {
    let mut t = Tray {
        media_id: String::new(),
        label: String::new(),
        place: Place::Directory {
            path: d.to_path_buf(),
        },
        newest: BTreeMap::new(),
        newest_any: None,
        backups: None,
        free_bytes: None,
        error: None,
        reach: None,
    };
    let m = match Medium::identify(d) {
        Ok(media) => {
            t.media_id = media.media_id.to_string();
            t.label = media.label;
            Medium::open_read(d, &Unlock::host(&app.cfg.agent.state_dir))
        }
        Err(e) => Err(e),
    };
    match m {
        Ok(m) => {
            let newest = m.tree().newest_verified_each();
            t.newest_any = newest
                .values()
                .max_by_key(|b| (b.started, b.id))
                .map(|b| BackupRef::of(b));
            t.newest = newest
                .into_iter()
                .map(|(k, b)| (k, BackupRef::of(b)))
                .collect();
            t.backups = Some(m.tree().backups.len());
            t.free_bytes = m.free_space().ok();
        }
        Err(e) => t.error = Some(e.to_string()),
    }
    t
}
