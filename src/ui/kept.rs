//! What the interface keeps between requests, so that a page over a medium with thousands of
//! backups answers in well under 200 ms: each backup's header (read once), and each medium's
//! half-year forecast (computed in the background when its tree changes; the space page
//! shows the used space at once and polls for the forecast).
//!
//! Invariants:
//! - the medium itself is never kept open between requests (an open medium holds its
//!   readers' lock, which delays the reclaiming of space, and a file on the mount, which
//!   would make the agent's eject fall back to a lazy unmount): every request opens it, and
//!   so sees every change and every eject;
//! - what is kept for a medium is keyed by its ID file as this request read it: a medium
//!   enrolled again under the same id, or with an altered ID file, shares nothing with what
//!   was kept; a header is used only for a backup the tree the request read lists (a
//!   committed backup's header never changes, and ids are never used again);
//! - what is kept only shows: restores and downloads read the medium itself;
//! - memory is bounded: [`MAX_MEDIA`] media, [`MAX_HEADERS`] headers each, one forecast
//!   each, and at most [`FORECASTS_AT_ONCE`] simulations running.

use super::api::ApiError;
use crate::agent::Locked;
use crate::ids::{BackupId, MediaId};
use crate::medium::{BackupHeader, Medium};
use crate::sizing::Reach;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Media something is kept for; one more drops them all.
const MAX_MEDIA: usize = 16;
/// Headers kept for one medium (a medium may list more; the rest are read each time).
const MAX_HEADERS: usize = 100_000;
/// Half-year simulations running at once (each a second or two of one core).
const FORECASTS_AT_ONCE: usize = 2;

/// The half-year simulation's answer: how far back each kind reaches, and the bytes in use
/// over the simulation (days from its start, bytes).
pub type Forecast = (Reach, Vec<(f64, u64)>);

/// What a forecast was computed for: the tree's backups (each with whether it is verified),
/// the id the next backup gets, and the capacity.
#[derive(Clone, PartialEq, Eq)]
pub struct ForecastKey {
    backups: Vec<(BackupId, bool)>,
    next_id: BackupId,
    capacity: u64,
}

impl ForecastKey {
    pub fn of(m: &Medium, capacity: u64) -> ForecastKey {
        let t = m.tree();
        ForecastKey {
            backups: t.backups.iter().map(|b| (b.id, b.verified)).collect(),
            next_id: t.next_id,
            capacity,
        }
    }
}

enum ForecastState {
    Running(ForecastKey),
    Ready(ForecastKey, Forecast),
    /// Why it failed (asked again after a change of the tree only).
    Failed(ForecastKey, String),
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
}

#[derive(Default)]
pub struct Kept {
    media: Mutex<HashMap<MediaId, OfMedium>>,
    running: Arc<AtomicUsize>,
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
        });
        f(o)
    }

    /// Backup `id`'s header: kept, or read from `m` (and kept).
    pub fn header(&self, m: &Medium, id: BackupId) -> crate::error::Result<Arc<BackupHeader>> {
        if m.tree().get(id).is_none() {
            return Err(crate::error::Error::NoSuchBackup(id));
        }
        if let Some(h) = self.with(m, |o| o.headers.get(&id).cloned()) {
            return Ok(h);
        }
        let h = Arc::new(m.header(id)?);
        self.with(m, |o| {
            if o.headers.len() < MAX_HEADERS {
                o.headers.insert(id, h.clone());
            }
        });
        Ok(h)
    }

    /// The forecast for `m` as it is now: the one kept for this tree and capacity, or `None`
    /// while it is being computed. A computation starts here (on a thread of its own, which
    /// takes `m` and lets it go as soon as the medium's history is read) when none runs for
    /// this key and fewer than [`FORECASTS_AT_ONCE`] run; otherwise a later call starts it.
    pub fn forecast(
        self: &Arc<Self>,
        m: Medium,
        capacity: u64,
        compute: impl FnOnce(Medium) -> Result<Forecast, ApiError> + Send + 'static,
    ) -> Result<Option<Forecast>, ApiError> {
        let key = ForecastKey::of(&m, capacity);
        let now = self.with(&m, |o| match &o.forecast {
            Some(ForecastState::Ready(k, f)) if *k == key => Asked::Ready(f.clone()),
            Some(ForecastState::Failed(k, why)) if *k == key => Asked::Failed(why.clone()),
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
        let start = match now {
            Asked::Ready(f) => return Ok(Some(f)),
            Asked::Failed(why) => return Err(ApiError::internal(why)),
            Asked::Wait => false,
            Asked::Start => true,
        };
        if start {
            let kept = self.clone();
            let id = m.media().media_id;
            let file = id_file(&m);
            let (key2, file2) = (key.clone(), file.clone());
            let spawned = std::thread::Builder::new()
                .name("forecast".into())
                .spawn(move || {
                    let r = compute(m).map_err(|e| e.message().to_string());
                    kept.settle(id, &file2, key, r);
                });
            if let Err(e) = spawned {
                let why = format!("cannot start the forecast: {e}");
                self.settle(id, &file, key2, Err(why.clone()));
                return Err(ApiError::internal(why));
            }
        }
        Ok(None)
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
                    ForecastState::Failed(key, why)
                }
            });
        }
    }
}
