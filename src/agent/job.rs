//! One job on an inserted medium (blocking; the agent runs it with `spawn_blocking`): make
//! room by the plan, back up what is due, verify, pare micros past their age. The same calls
//! as `trayback backup`.

use crate::backup;
use crate::config::Config;
use crate::maintain::{self, Pared};
use crate::medium::Medium;
use crate::progress::Meter;
use crate::schedule::Due;
use crate::tree::Kind;
use crate::verify;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::atomic::AtomicBool;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    pub kind: Option<Kind>,
    pub backup: Option<u64>,
    pub partial: bool,
    pub verified: Option<bool>,
    pub damaged_files: Vec<String>,
    pub pared: Vec<Pared>,
    /// The plan could not make room (spec [0044] step 118 or 142).
    pub medium_too_small: Option<String>,
    pub error: Option<String>,
}

pub fn run(
    m: &mut Medium,
    cfg: &Config,
    due: &Due,
    now: DateTime<Utc>,
    cancel: &AtomicBool,
    meter: &Meter,
    still_ours: &dyn Fn() -> bool,
) -> Outcome {
    let mut out = Outcome {
        kind: Some(due.kind),
        ..Outcome::default()
    };
    if !still_ours() {
        out.error = Some("the medium is no longer mounted where it was; nothing written".into());
        return out;
    }
    match maintain::room_for_backup(m, cfg, due.parent, now, cancel) {
        Ok(Ok(p)) => {
            if p.iter().any(|p| p.reason.medium_too_small()) {
                out.medium_too_small = Some(
                    "only one backup fits on this medium; use a larger one (spec [0044])".into(),
                );
            }
            out.pared.extend(p);
        }
        Ok(Err(too_small)) => {
            out.medium_too_small = Some(too_small.to_string());
            return out;
        }
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    }
    if !still_ours() {
        out.error = Some("the medium is no longer mounted where it was; nothing written".into());
        return out;
    }
    let req = backup::Request {
        kind: due.kind,
        parent: due.parent,
        at: now,
        config: cfg,
        meter,
        cancel,
        verify_after: true,
    };
    let header = match backup::run(m, &req) {
        Ok(h) => h,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    out.backup = Some(header.id.0);
    out.partial = header.partial;
    match verify::verify(m, header.id, false, &Meter::hidden()) {
        Ok(r) => {
            out.verified = Some(r.ok);
            out.damaged_files = r.affected;
        }
        Err(e) => {
            out.verified = Some(false);
            out.error = Some(format!("verify: {e}"));
        }
    }
    match maintain::routine(m, now, &cfg.pare, false) {
        Ok(p) => out.pared.extend(p),
        Err(e) => out.error = Some(format!("pare: {e}")),
    }
    out
}
