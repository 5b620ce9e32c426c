//! What the interface keeps between requests, so that a page over a medium with thousands of
//! backups answers in well under 200 ms: each backup's header (read once), each medium's
//! half-year forecast (computed in the background when its tree changes; the space page
//! shows the used space at once and polls for the forecast), and each medium's name index
//! ([`query::Names`], built in the background by [`super::warm`]; until it is there for the
//! tree a search reads, the search walks the medium as the CLI does).
//!
//! Invariants:
//! - the medium itself is never kept open between requests (an open medium holds its
//!   readers' lock, which delays the reclaiming of space, and a file on the mount, which
//!   would make the agent's eject fall back to a lazy unmount): every request opens it, and
//!   so sees every change and every eject;
//! - what is kept for a medium is keyed by its ID file as this request read it: a medium
//!   enrolled again under the same id, or with an altered ID file, shares nothing with what
//!   was kept; a kept header is used only for a backup the tree the request read lists, and
//!   only if it agrees with that tree's record of it (kind, parent, start, end, partial), and
//!   a forecast only for the same records: a copy of a tray (same ID file) that diverged has
//!   other backups under the same ids, and what was kept for one is not shown for the other;
//! - what is kept only shows: restores and downloads read the medium itself;
//! - memory is bounded: [`MAX_MEDIA`] media, [`MAX_HEADERS`] headers each, each without its
//!   lists (problems, sources, packs: what a medium makes as large as it likes; the pages
//!   that use kept headers need their root, counts and times) and with short strings, one
//!   forecast each, and at most [`FORECASTS_AT_ONCE`] simulations running; a name index for
//!   at most [`MAX_NAMES`] media (each bounded by [`query::MAX_PATHS`] and
//!   [`query::MAX_PATH_BYTES`]), kept for the tree it was built from (the tree's records and
//!   next id) and used for no other;
//! - a forecast that failed is asked again after [`FORECAST_RETRY`] (a tray pulled for a
//!   moment reads again), and one that panicked fails like one that returned an error.

use super::api::ApiError;
use crate::agent::Locked;
use crate::ids::{BackupId, MediaId};
use crate::medium::{BackupHeader, Medium};
use crate::query;
use crate::sizing::Reach;
use crate::tree::BackupRecord;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Media something is kept for; one more drops them all.
const MAX_MEDIA: usize = 16;
/// Headers kept for one medium (a medium may list more; the rest are read each time).
const MAX_HEADERS: usize = 100_000;
/// Media whose name index is kept (building one for another drops one).
const MAX_NAMES: usize = 2;
/// Half-year simulations running at once (each a second or two of one core).
const FORECASTS_AT_ONCE: usize = 2;
/// How long a failed forecast is answered as failed before it is computed again.
pub const FORECAST_RETRY: Duration = Duration::from_secs(10);
/// Why a forecast that panicked failed.
const STOPPED: &str = "the forecast stopped unexpectedly";
/// The longest `host` and `software` of a kept header (the rest is cut).
const MAX_KEPT_STRING: usize = 256;

/// The half-year simulation's answer: how far back each kind reaches, and the bytes in use
/// over the simulation (days from its start, bytes).
pub type Forecast = (Reach, Vec<(f64, u64)>);

/// A tree as what is kept is keyed by: the records of its backups and the id the next backup
/// gets.
#[derive(Clone, PartialEq)]
pub struct TreeKey {
    backups: Vec<BackupRecord>,
    next_id: BackupId,
}

impl TreeKey {
    pub fn of(m: &Medium) -> TreeKey {
        let t = m.tree();
        TreeKey {
            backups: t.backups.clone(),
            next_id: t.next_id,
        }
    }
}

/// What a forecast was computed for: the tree, and the capacity.
#[derive(Clone, PartialEq)]
pub struct ForecastKey {
    tree: TreeKey,
    capacity: u64,
}

impl ForecastKey {
    pub fn of(m: &Medium, capacity: u64) -> ForecastKey {
        ForecastKey {
            tree: TreeKey::of(m),
            capacity,
        }
    }
}

/// Whether header `h` is the one `rec` (the tree's record of that backup) describes.
fn agrees(h: &BackupHeader, rec: &BackupRecord) -> bool {
    h.id == rec.id
        && h.kind == rec.kind
        && h.parent == rec.parent
        && h.started == rec.started
        && h.finished == rec.finished
        && h.partial == rec.partial
}

/// `h` as it is kept: without its lists, its strings cut short.
fn slim(mut h: BackupHeader) -> BackupHeader {
    h.problems = Vec::new();
    h.problems_unlisted = 0;
    h.sources = Vec::new();
    h.packs = Vec::new();
    for s in [&mut h.host, &mut h.software] {
        if s.len() > MAX_KEPT_STRING {
            let mut end = MAX_KEPT_STRING;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        s.shrink_to_fit();
    }
    h
}

enum ForecastState {
    Running(ForecastKey),
    Ready(ForecastKey, Forecast),
    /// Why it failed, and when (asked again after [`FORECAST_RETRY`], or a change).
    Failed(ForecastKey, String, Instant),
}

/// What [`Kept::forecast`] found.
enum Asked {
    Ready(Forecast),
    Failed(String),
    /// Being computed, or no room to start now.
    Wait,
    /// Started by this call (a slot taken).
    Start,
}

struct OfMedium {
    /// The ID file everything here belongs to (as serialized from what was read).
    id_file: Vec<u8>,
    headers: HashMap<BackupId, Arc<BackupHeader>>,
    forecast: Option<ForecastState>,
    /// The name index, and the tree it was built from.
    names: Option<(TreeKey, Arc<query::Names>)>,
}

/// Media warming up in the background ([`super::warm`]): at most [`WARM_AT_ONCE`], and each
/// medium at most once in [`WARM_EVERY`].
const WARM_AT_ONCE: usize = 1;
pub const WARM_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Kept {
    media: Mutex<HashMap<MediaId, OfMedium>>,
    running: Arc<AtomicUsize>,
    /// When each medium's last warm-up started, and whether it still runs.
    warming: Mutex<HashMap<MediaId, (Instant, bool)>>,
}

fn id_file(m: &Medium) -> Vec<u8> {
    serde_json::to_vec(m.media()).unwrap_or_default()
}

impl Kept {
    /// Run `f` on what is kept for `m`'s medium (emptied first if its ID file differs).
    fn with<T>(&self, m: &Medium, f: impl FnOnce(&mut OfMedium) -> T) -> T {
        let file = id_file(m);
        let mut all = self.media.locked();
        let id = m.media().media_id;
        if all.get(&id).is_some_and(|o| o.id_file != file) {
            all.remove(&id);
        }
        if !all.contains_key(&id) && all.len() >= MAX_MEDIA {
            all.clear();
        }
        let o = all.entry(id).or_insert_with(|| OfMedium {
            id_file: file,
            headers: HashMap::new(),
            forecast: None,
            names: None,
        });
        f(o)
    }

    /// Backup `id`'s header without its lists (see [`slim`]): kept, if it agrees with the
    /// tree's record, or read from `m` (and kept).
    pub fn header(&self, m: &Medium, id: BackupId) -> crate::error::Result<Arc<BackupHeader>> {
        let Some(rec) = m.tree().get(id) else {
            return Err(crate::error::Error::NoSuchBackup(id));
        };
        let kept = self.with(m, |o| o.headers.get(&id).cloned());
        if let Some(h) = kept.filter(|h| agrees(h, rec)) {
            return Ok(h);
        }
        let h = Arc::new(slim(m.header(id)?));
        self.with(m, |o| {
            if o.headers.len() < MAX_HEADERS || o.headers.contains_key(&id) {
                o.headers.insert(id, h.clone());
            }
        });
        Ok(h)
    }

    /// The name index built from `m`'s tree as it is now, if there is one.
    pub fn names(&self, m: &Medium) -> Option<Arc<query::Names>> {
        let key = TreeKey::of(m);
        self.with(m, |o| match &o.names {
            Some((k, n)) if *k == key => Some(n.clone()),
            _ => None,
        })
    }

    /// Build the name index of `m` (with kept headers) unless one is kept for its tree.
    pub fn build_names(&self, m: &Medium) -> crate::error::Result<()> {
        if self.names(m).is_some() {
            return Ok(());
        }
        let key = TreeKey::of(m);
        let n = Arc::new(query::Names::build(m, &|b| self.header(m, b))?);
        tracing::debug!(medium = %m.media().media_id, paths = n.len(), bytes = n.bytes(), complete = n.complete(), "web interface: name index built");
        let id = m.media().media_id;
        self.with(m, |o| o.names = Some((key, n)));
        let mut all = self.media.locked();
        let mut others = all
            .iter_mut()
            .filter(|(k, o)| **k != id && o.names.is_some());
        if let Some((_, o)) = others.nth(MAX_NAMES - 1) {
            o.names = None;
        }
        Ok(())
    }

    /// Whether a warm-up of medium `id` may start now (and if so, it is counted as running
    /// until [`Kept::warmed`]).
    pub fn start_warm(&self, id: MediaId) -> bool {
        let mut w = self.warming.locked();
        if w.values().filter(|(_, running)| *running).count() >= WARM_AT_ONCE {
            return false;
        }
        if w.get(&id).is_some_and(|(at, _)| at.elapsed() < WARM_EVERY) {
            return false;
        }
        if w.len() >= MAX_MEDIA {
            w.retain(|_, (_, running)| *running);
        }
        w.insert(id, (Instant::now(), true));
        true
    }

    /// The warm-up of `id` ended.
    pub fn warmed(&self, id: MediaId) {
        if let Some(w) = self.warming.locked().get_mut(&id) {
            w.1 = false;
        }
    }

    /// The forecast for `m` as it is now: the one kept for this tree and capacity, or `None`
    /// while it is being computed. A computation starts here when none runs for this key
    /// and fewer than [`FORECASTS_AT_ONCE`] run (otherwise a later call starts it): what it
    /// needs of the medium is `read` here, by this request (which holds `m` open as every
    /// request does, and no longer), and the simulation then runs on a thread of its own
    /// that holds nothing of the medium (an eject meanwhile finds it closed). A panic in
    /// either settles the computation as failed.
    pub fn forecast<H: Send + 'static>(
        self: &Arc<Self>,
        m: &Medium,
        capacity: u64,
        read: impl FnOnce(&Medium) -> Result<H, ApiError>,
        simulate: impl FnOnce(H) -> Forecast + Send + 'static,
    ) -> Result<Option<Forecast>, ApiError> {
        let key = ForecastKey::of(m, capacity);
        let now = self.with(m, |o| match &o.forecast {
            Some(ForecastState::Ready(k, f)) if *k == key => Asked::Ready(f.clone()),
            Some(ForecastState::Failed(k, why, at))
                if *k == key && at.elapsed() < FORECAST_RETRY =>
            {
                Asked::Failed(why.clone())
            }
            Some(ForecastState::Running(k)) if *k == key => Asked::Wait,
            _ => {
                let free = self
                    .running
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        (n < FORECASTS_AT_ONCE).then_some(n + 1)
                    })
                    .is_ok();
                if free {
                    o.forecast = Some(ForecastState::Running(key.clone()));
                    Asked::Start
                } else {
                    Asked::Wait
                }
            }
        });
        match now {
            Asked::Ready(f) => return Ok(Some(f)),
            Asked::Failed(why) => return Err(ApiError::internal(why)),
            Asked::Wait => return Ok(None),
            Asked::Start => {}
        }
        let (id, file) = (m.media().media_id, id_file(m));
        let fail = |why: String| {
            self.settle(id, &file, key.clone(), Err(why.clone()));
            Err(ApiError::internal(why))
        };
        let input = match std::panic::catch_unwind(AssertUnwindSafe(|| read(m))) {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return fail(e.message().to_string()),
            Err(_) => return fail(STOPPED.into()),
        };
        let (kept, file2, key2) = (self.clone(), file.clone(), key.clone());
        let spawned = std::thread::Builder::new()
            .name("forecast".into())
            .spawn(move || {
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| simulate(input)))
                    .map_err(|_| STOPPED.to_string());
                kept.settle(id, &file2, key2, r);
            });
        match spawned {
            Ok(_) => Ok(None),
            Err(e) => fail(format!("cannot start the forecast: {e}")),
        }
    }

    /// End the computation for `key` (started by [`Kept::forecast`]) with `r`.
    fn settle(&self, id: MediaId, file: &[u8], key: ForecastKey, r: Result<Forecast, String>) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        let mut all = self.media.locked();
        let Some(o) = all.get_mut(&id).filter(|o| o.id_file == file) else {
            return;
        };
        // Only the computation this key started settles it (the tree may have moved on).
        if matches!(&o.forecast, Some(ForecastState::Running(k)) if *k == key) {
            o.forecast = Some(match r {
                Ok(f) => ForecastState::Ready(key, f),
                Err(why) => {
                    tracing::warn!(medium = %id, cause = why, "web interface: the forecast failed");
                    ForecastState::Failed(key, why, Instant::now())
                }
            });
        }
    }
}
