//! The interface's reading endpoints (JSON), and the download of one file: each a thin call
//! of the same library functions the CLI calls (`query`, `maintain`'s pare plan, `sizing`,
//! `restore::content`), run in `spawn_blocking`.

use super::kept::Forecast;
use super::media;
use super::wire::{self, backup_path, Keyed};
use super::App;
use crate::agent::Locked;
use crate::error::Error;
use crate::ids::{BackupId, MediaId};
use crate::listing::EntryKind;
use crate::maintain::{self, Pared};
use crate::medium::Medium;
use crate::query;
use crate::tree::{BackupRecord, Kind};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path as UrlPath, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An answer that is not the one asked for: a status and one line saying why.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
    pub fn internal(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, msg.into())
    }
    pub fn busy(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::TOO_MANY_REQUESTS, msg.into())
    }
    pub fn message(&self) -> &str {
        &self.1
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match &e {
            Error::NoSuchBackup(_) => StatusCode::NOT_FOUND,
            Error::Refused(_) | Error::Hostile { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

pub type ApiResult<T> = Result<Json<T>, ApiError>;

impl App {
    /// Run `f` (engine work: opening and reading media, asking the agent) on the blocking
    /// pool, at most [`super::ENGINE_TASKS`] at once; a panic in it is an error answer.
    pub async fn engine<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&App) -> Result<T, ApiError> + Send + 'static,
    {
        let _permit = self
            .engine
            .acquire()
            .await
            .map_err(|_| ApiError::internal("shutting down"))?;
        let app = self.clone();
        match tokio::task::spawn_blocking(move || f(&app)).await {
            Ok(r) => r,
            Err(e) => Err(ApiError::internal(format!("the request failed: {e}"))),
        }
    }
}

impl App {
    /// One of the [`super::LONG_TASKS`] permits of restores and downloads, or at once a
    /// refusal saying they are all taken (a request never waits for one: it would hold a
    /// connection, and the page would show nothing, for as long as they take).
    pub fn long_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.long.clone().try_acquire_owned().map_err(|e| match e {
            tokio::sync::TryAcquireError::NoPermits => ApiError::busy(format!(
                "busy: {} restores/downloads are running; try again when one has ended",
                super::LONG_TASKS
            )),
            tokio::sync::TryAcquireError::Closed => ApiError::internal("shutting down"),
        })
    }

    /// Open medium `id` for reading as the CLI does and run `f` on it as engine work; its
    /// answer as JSON.
    pub async fn reading<T, F>(self: &Arc<Self>, id: MediaId, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&App, Medium) -> Result<T, ApiError> + Send + 'static,
    {
        self.engine(move |app| f(app, media::open(app, id)?))
            .await
            .map(Json)
    }
}

/// A media id from the URL.
pub fn media_id(s: &str) -> Result<MediaId, ApiError> {
    s.parse()
        .map_err(|e: crate::ids::ParseIdError| ApiError::not_found(e.to_string()))
}

/// The medium a URL names (`/api/media/{id}/…`, `/api/trays/{id}/…`): a media id, or 404.
pub struct MediumId(pub MediaId);

impl<S: Send + Sync> FromRequestParts<S> for MediumId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<MediumId, ApiError> {
        let UrlPath(s) = UrlPath::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::not_found(e.body_text()))?;
        media_id(&s).map(MediumId)
    }
}

pub async fn trays(State(app): State<Arc<App>>) -> ApiResult<media::Trays> {
    let app2 = app.clone();
    app.engine(move |app| {
        let t = media::trays(app);
        super::warm::warm_shown(&app2, &t);
        Ok(t)
    })
    .await
    .map(Json)
}

/// A pared (or to be pared) backup with the words `pare --dry-run` prints for its reason.
#[derive(Serialize)]
pub struct ParedOut {
    #[serde(flatten)]
    pared: Pared,
    why: String,
}

fn explained(v: Vec<Pared>) -> Vec<ParedOut> {
    v.into_iter()
        .map(|p| ParedOut {
            why: p.reason.to_string(),
            pared: p,
        })
        .collect()
}

#[derive(Serialize)]
pub struct TreeOut {
    media_id: String,
    label: String,
    now: DateTime<Utc>,
    backups: Vec<BackupRecord>,
    /// The backup the files page opens first (`query::pick_backup`, as `ls` and `restore`
    /// choose): the latest verified.
    latest_verified: Option<BackupId>,
    /// The picture: nodes in drawing order (`query::layout`, as `trayback tree` draws).
    nodes: Vec<query::Node>,
    /// What `pare` pares now, by age (step 100).
    pare_now: Vec<ParedOut>,
    /// Then, as space is needed, in this order (the flow chart alone).
    pare_order: Vec<ParedOut>,
}

pub async fn tree(State(app): State<Arc<App>>, MediumId(id): MediumId) -> ApiResult<TreeOut> {
    app.reading(id, move |app, m| {
        let now = Utc::now();
        let plan = maintain::plan_pare(&m, now, &app.cfg, None)?;
        let order = maintain::order_when_needed(&m, now, &app.cfg)?;
        Ok(TreeOut {
            media_id: id.to_string(),
            label: m.media().label.clone(),
            now,
            nodes: query::layout(m.tree()),
            latest_verified: query::pick_backup(&m, None, None).ok(),
            backups: m.tree().backups.clone(),
            pare_now: explained(plan.routine),
            pare_order: explained(order),
        })
    })
    .await
}

/// Rows of one directory sent at most.
const MAX_ROWS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LsQuery {
    backup: BackupId,
    #[serde(default)]
    path: Option<String>,
}

#[derive(Serialize)]
pub struct LsOut {
    backup: BackupId,
    /// The directory, shown, and its key.
    path: String,
    key: String,
    /// Each directory on the way from `/` (the last is this one): its name shown, its key.
    crumbs: Vec<(String, String)>,
    rows: Vec<Keyed<query::LsRow>>,
    /// The directory has more entries than were sent.
    truncated: bool,
}

pub async fn ls(
    State(app): State<Arc<App>>,
    MediumId(id): MediumId,
    Query(q): Query<LsQuery>,
) -> ApiResult<LsOut> {
    let path = backup_path(q.path.as_deref().unwrap_or("/"))?;
    app.reading(id, move |_app, m| {
        let mut rows = Vec::new();
        let mut truncated = false;
        let r = query::ls_each(&m, q.backup, &path, false, &mut |row| {
            if rows.len() == MAX_ROWS {
                truncated = true;
                return Err(Error::Refused("enough rows".into()));
            }
            let raw = row.raw.clone();
            rows.push(Keyed::new(row, &raw, |r, shown| r.path = shown));
            Ok(())
        });
        if !truncated {
            r?;
        }
        let crumbs = path
            .ancestors()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .skip(1)
            .map(|p| {
                let name = p.file_name().map(Path::new).unwrap_or(p);
                (wire::shown(name), wire::key(p))
            })
            .collect();
        Ok(LsOut {
            backup: q.backup,
            path: wire::shown(&path),
            key: wire::key(&path),
            crumbs,
            rows,
            truncated,
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    path: String,
}

/// One backup holding the file, and whether its version differs from the backup before.
#[derive(Serialize)]
pub struct VersionRow {
    backup: BackupId,
    kind: Kind,
    started: DateTime<Utc>,
    verified: bool,
    /// Index into `versions`.
    version: usize,
    size: u64,
    mtime: DateTime<Utc>,
    /// A different version from the previous backup holding the path (the first is changed).
    changed: bool,
}

#[derive(Serialize)]
pub struct VersionsOut {
    path: String,
    versions: Vec<query::Version>,
    /// Every backup holding the path, oldest first.
    rows: Vec<VersionRow>,
}

pub async fn versions(
    State(app): State<Arc<App>>,
    MediumId(id): MediumId,
    Query(q): Query<PathQuery>,
) -> ApiResult<VersionsOut> {
    let path = backup_path(&q.path)?;
    app.reading(id, move |app, m| {
        let versions = query::versions_with(&m, &path, &|b| app.kept.header(&m, b))?;
        let of: HashMap<BackupId, usize> = versions
            .iter()
            .enumerate()
            .flat_map(|(i, v)| v.backups.iter().map(move |b| (*b, i)))
            .collect();
        let mut rows: Vec<VersionRow> = Vec::new();
        for b in &m.tree().backups {
            let Some(&v) = of.get(&b.id) else { continue };
            rows.push(VersionRow {
                backup: b.id,
                kind: b.kind,
                started: b.started,
                verified: b.verified,
                version: v,
                size: versions[v].size,
                mtime: versions[v].mtime,
                changed: rows.last().is_none_or(|r| r.version != v),
            });
        }
        Ok(VersionsOut {
            path: wire::shown(&path),
            versions,
            rows,
        })
    })
    .await
}

/// Results of a search sent at most.
const MAX_FOUND: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    q: String,
}

pub async fn search(
    State(app): State<Arc<App>>,
    MediumId(id): MediumId,
    Query(q): Query<SearchQuery>,
) -> ApiResult<SearchOut> {
    let needle = q.q.trim().to_string();
    if needle.is_empty() || needle.len() > crate::restore::NAME_MAX {
        return Err(ApiError::bad("search for a name of 1 to 255 bytes"));
    }
    let app2 = app.clone();
    app.reading(id, move |app, m| {
        // The medium's name index when it is there for this tree (the same answer, without
        // the walk); else the walk, and the index is asked for.
        let (index, answered) = match app.kept.names(&m) {
            None => (Index::Building, None),
            Some(n) => match n.search(&needle, MAX_FOUND) {
                Some(r) => (Index::Used, Some(r)),
                None => (Index::Partial, None),
            },
        };
        let r = match answered {
            Some(r) => r,
            None => {
                if index == Index::Building {
                    super::warm::warm(&app2, id);
                }
                query::search_with(&m, &needle, MAX_FOUND, &|b| app.kept.header(&m, b))?
            }
        };
        Ok(SearchOut {
            index,
            found: r
                .found
                .into_iter()
                .map(|f| {
                    let raw = f.raw.clone();
                    Keyed::new(f, &raw, |f, shown| f.path = shown)
                })
                .collect(),
            truncated: r.truncated,
        })
    })
    .await
}

/// How a search was answered: the same answer each way, only slower by the walk.
#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Index {
    /// From the medium's name index.
    Used,
    /// By walking the medium: its name index is still being built.
    Building,
    /// By walking the medium: it has more paths than an index holds, and the part indexed
    /// could not settle this search.
    Partial,
}

#[derive(Serialize)]
pub struct SearchOut {
    index: Index,
    found: Vec<Keyed<query::Found>>,
    truncated: bool,
}

#[derive(Serialize)]
pub struct SpaceOut {
    capacity: u64,
    free: u64,
    /// What the medium's packs occupy now (as `media show` counts them).
    packs: u64,
    /// (start time, bytes) for each backup on the medium, oldest first: what the backups now
    /// on it had stored by then (pared backups' bytes are not counted).
    stored: Vec<(DateTime<Utc>, u64)>,
    /// The oldest backup of each kind on the medium now: how far back each kind reaches.
    oldest: BTreeMap<Kind, DateTime<Utc>>,
    now: DateTime<Utc>,
    /// What `media show --reach` simulates (this capacity at this medium's change rate) and
    /// the bytes in use over that simulation (days from its start, bytes); absent while it
    /// is being computed (ask again).
    forecast: Option<Forecast>,
    /// Why the forecast failed (it is computed again after a while; the rest of the answer
    /// stands).
    forecast_error: Option<String>,
    simulated_days: i64,
}

/// Points of the forecast curve sent.
const FORECAST_POINTS: usize = 364;

/// The forecast kept for `m` at `capacity`, or `None` while it is computed (started here if
/// it is not already: see [`super::kept::Kept::forecast`]).
pub fn forecast(app: &App, m: &Medium, capacity: u64) -> Result<Option<Forecast>, ApiError> {
    let (sched, policy) = (app.cfg.schedule.clone(), app.cfg.pare.clone());
    app.kept.forecast(
        m,
        capacity,
        |m| Ok(crate::sizing::history(m, &app.cfg.schedule)?),
        move |h| {
            crate::sizing::forecast(h, capacity, &sched, &policy, FORECAST_POINTS, &|| false)
                .expect("a forecast that is never stopped ends")
        },
    )
}

pub async fn space(State(app): State<Arc<App>>, MediumId(id): MediumId) -> ApiResult<SpaceOut> {
    app.reading(id, move |app, m| {
        let tree = m.tree();
        let mut by_time: Vec<&BackupRecord> = tree.backups.iter().collect();
        by_time.sort_by_key(|b| (b.started, b.id));
        let mut sum = 0u64;
        let stored = by_time
            .iter()
            .map(|b| {
                sum = sum.saturating_add(b.bytes_stored);
                (b.started, sum)
            })
            .collect();
        let mut oldest = BTreeMap::new();
        for b in &by_time {
            oldest.entry(b.kind).or_insert(b.started);
        }
        let capacity = crate::sizing::capacity(m.root())?;
        let free = m.free_space()?;
        let packs = m.store().packs().iter().map(|p| p.len).sum();
        let (forecast, forecast_error) = match forecast(app, &m, capacity) {
            Ok(f) => (f, None),
            Err(e) => (None, Some(e.message().to_string())),
        };
        Ok(SpaceOut {
            capacity,
            free,
            packs,
            stored,
            oldest,
            now: Utc::now(),
            forecast,
            forecast_error,
            simulated_days: crate::sizing::SIMULATED_DAYS,
        })
    })
    .await
}

/// How long a download ticket stays good.
const TICKET_LIFE: Duration = Duration::from_secs(60);
/// Tickets kept at once.
const MAX_TICKETS: usize = 64;

struct Ticket {
    medium: MediaId,
    backup: BackupId,
    path: PathBuf,
    made: Instant,
}

/// Download tickets: a page asks for one with its key (a POST), then the browser fetches the
/// file by a plain link (which cannot carry the key); each ticket works once, for a minute.
#[derive(Default)]
pub struct Tickets(Mutex<HashMap<String, Ticket>>);

impl Tickets {
    fn issue(&self, t: Ticket) -> Result<String, ApiError> {
        let id = super::guard::random_hex().map_err(|e| ApiError::internal(e.to_string()))?;
        let mut m = self.0.locked();
        m.retain(|_, t| t.made.elapsed() < TICKET_LIFE);
        if m.len() >= MAX_TICKETS {
            return Err(ApiError::bad("too many downloads asked for at once"));
        }
        m.insert(id.clone(), t);
        Ok(id)
    }

    fn take(&self, id: &str) -> Option<Ticket> {
        let t = self.0.locked().remove(id)?;
        (t.made.elapsed() < TICKET_LIFE).then_some(t)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadRequest {
    backup: BackupId,
    path: String,
}

/// The entry of a regular file `path` in backup `id`.
fn file_entry(m: &Medium, id: BackupId, path: &Path) -> Result<crate::listing::Entry, ApiError> {
    let h = m.header(id)?;
    let e = crate::index::lookup(m, &h.root, path)?
        .and_then(|mut chain| chain.pop())
        .ok_or_else(|| ApiError::not_found(format!("{} is not in backup {id}", path.display())))?;
    if e.kind != EntryKind::File {
        return Err(ApiError::bad(format!(
            "{} is not a regular file in backup {id}",
            path.display()
        )));
    }
    Ok(e)
}

#[derive(Serialize)]
pub struct DownloadOut {
    url: String,
}

pub async fn download_ticket(
    State(app): State<Arc<App>>,
    MediumId(id): MediumId,
    Json(r): Json<DownloadRequest>,
) -> ApiResult<DownloadOut> {
    let path = backup_path(&r.path)?;
    // Busy now: said here, where the page shows it (a refused download shows only as failed).
    drop(app.long_permit()?);
    let backup = r.backup;
    let checked = path.clone();
    app.engine(move |app| {
        let m = media::open(app, id)?;
        file_entry(&m, backup, &checked).map(|_| ())
    })
    .await?;
    let ticket = app.tickets.issue(Ticket {
        medium: id,
        backup,
        path,
        made: Instant::now(),
    })?;
    Ok(Json(DownloadOut {
        url: format!("/download/{ticket}"),
    }))
}

/// `name` for a `Content-Disposition` header: an ASCII stand-in and the exact UTF-8 name.
fn disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut exact = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            exact.push(b as char);
        } else {
            exact.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{exact}")
}

/// Stream one file out of a backup: read block by block (checked as a restore checks them),
/// at most a few blocks in memory, the length known before the first byte.
pub async fn download(
    State(app): State<Arc<App>>,
    UrlPath(ticket): UrlPath<String>,
) -> Result<Response, ApiError> {
    // The permit first: a download refused as busy leaves its ticket for a later try.
    let permit = app.long_permit()?;
    let t = app
        .tickets
        .take(&ticket)
        .ok_or_else(|| ApiError::not_found("this download link is used or expired; ask again"))?;
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<Result<u64, ApiError>>();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let name = t
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let app2 = app.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut head = Some(head_tx);
        let r = (|| -> Result<(), ApiError> {
            let m = media::open(&app2, t.medium)?;
            let e = file_entry(&m, t.backup, &t.path)?;
            if let Some(h) = head.take() {
                let _ = h.send(Ok(e.size));
            }
            crate::restore::content(&m, &e, &t.path, &mut |_, data| {
                tx.blocking_send(Ok(Bytes::copy_from_slice(data)))
                    .map_err(|_| Error::Refused("the download was cancelled".into()))
            })?;
            Ok(())
        })();
        if let Err(e) = r {
            match head.take() {
                Some(h) => {
                    let _ = h.send(Err(e));
                }
                None => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.1)));
                }
            }
        }
    });
    let size = head_rx
        .await
        .map_err(|_| ApiError::internal("the download failed"))??;
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().unwrap(),
    );
    h.insert(header::CONTENT_LENGTH, size.into());
    if let Ok(v) = disposition(&name).parse() {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_name_is_quoted_safely() {
        assert_eq!(
            disposition("a\"b;ü.txt"),
            "attachment; filename=\"a_b__.txt\"; filename*=UTF-8''a%22b%3B%C3%BC.txt"
        );
    }
}
