//! Warming up what the interface keeps for a medium, in the background, so that a person's
//! first click is as fast as the next: every backup's header, the name index, and the
//! half-year forecast ([`super::kept`]). Started when the interface starts, when the trays
//! page is asked for (each medium it shows that can be read), and when a search finds no
//! index for the tree it read.
//!
//! Invariants: a warm-up opens the medium as a request does (for reading, proven, unlocked
//! with this host's key) and holds it only while it works (an eject meanwhile waits for it
//! as for a request); at most one runs at a time and each medium warms at most once in
//! [`super::kept::WARM_EVERY`]; what it finds already kept for the tree it read is not
//! computed again; a failure or a panic only leaves things unkept (requests then read the
//! medium themselves).

use super::api::ApiError;
use super::media::{self, Place, Trays};
use super::App;
use crate::ids::MediaId;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// Warm medium `id` up in the background (unless one runs, or it warmed just now).
pub fn warm(app: &Arc<App>, id: MediaId) {
    if !app.kept.start_warm(id) {
        return;
    }
    let app2 = app.clone();
    let spawned = std::thread::Builder::new()
        .name("warm".into())
        .spawn(move || {
            match std::panic::catch_unwind(AssertUnwindSafe(|| warm_now(&app2, id))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(medium = %id, cause = e.message(), "web interface: warming up failed")
                }
                Err(_) => {
                    tracing::warn!(medium = %id, "web interface: warming up stopped unexpectedly")
                }
            }
            app2.kept.warmed(id);
        });
    if spawned.is_err() {
        app.kept.warmed(id);
    }
}

fn warm_now(app: &App, id: MediaId) -> Result<(), ApiError> {
    let m = media::open(app, id)?;
    for b in &m.tree().backups {
        app.kept.header(&m, b.id)?;
    }
    app.kept.build_names(&m)?;
    let capacity = crate::sizing::capacity(m.root())?;
    super::api::forecast(app, &m, capacity)?;
    Ok(())
}

/// Warm up each medium on the trays page that can be read (inserted, or a directory).
pub fn warm_shown(app: &Arc<App>, t: &Trays) {
    for tray in &t.trays {
        if matches!(tray.place, Place::Away { .. }) {
            continue;
        }
        if let Ok(id) = tray.media_id.parse() {
            warm(app, id);
        }
    }
}

/// At start: what the trays page would show.
pub fn warm_all(app: &Arc<App>) {
    let app = app.clone();
    let _ = std::thread::Builder::new()
        .name("warm".into())
        .spawn(move || warm_shown(&app, &media::trays(&app)));
}
