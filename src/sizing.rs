//! Sizing from a medium's own history (spec [0055]): what a full backup and each kind's
//! changes measure on it, for `simulate --from-medium`; and the rule of thumb that a medium
//! be about 1.5 times the data it backs up, for `media init`.
//!
//! Reads the medium (its tree and index) and changes nothing; [`advice`] is pure.

use crate::error::Result;
use crate::maintain;
use crate::medium::Medium;
use crate::schedule::Schedule;
use crate::tree::Kind;
use std::collections::HashMap;

/// What a medium's backups say about the data they back up.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct History {
    /// Stored bytes of the newest backup on its own (a full backup of today's data).
    pub full_size: u64,
    /// Bytes changed over each kind's interval, at the rate the history shows: every byte a
    /// backup stored after the first counts, so this errs on the large side (a sizing tool
    /// should).
    pub change: HashMap<Kind, u64>,
    pub span_days: Option<f64>,
}

/// Measure the history of `m`.
pub fn history(m: &Medium, sched: &Schedule) -> Result<History> {
    let tree = m.tree();
    let mut by_time: Vec<_> = tree.backups.iter().collect();
    by_time.sort_by_key(|b| (b.started, b.id));
    let full_size = match by_time.last() {
        Some(newest) => maintain::sharing(m)?.reachable(newest.id),
        None => 0,
    };
    let span = match (by_time.first(), by_time.last()) {
        (Some(a), Some(b)) if b.started > a.started => Some((b.started - a.started).num_seconds()),
        _ => None,
    }
    // Whole seconds: backups less than one apart have no span to divide by.
    .filter(|s| *s > 0);
    // Saturating: the sizes come from the medium's tree, which a forged medium may inflate.
    let stored_after_first = by_time
        .iter()
        .skip(1)
        .fold(0u64, |a, b| a.saturating_add(b.bytes_stored));
    let over = |secs: i64| -> u64 {
        match span {
            Some(s) => (stored_after_first as u128 * secs.max(0) as u128 / s as u128)
                .min(u64::MAX as u128) as u64,
            None => 0,
        }
    };
    let change = sched
        .spans()
        .into_iter()
        .map(|(k, span)| (k, over(span.num_seconds()).min(full_size.max(1))))
        .collect();
    Ok(History {
        full_size,
        change,
        span_days: span.map(|s| s as f64 / 86_400.0),
    })
}

/// How far back each kind reaches at the end of a simulated half year on this medium, at the
/// change rate its history shows.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Reach {
    pub days: std::collections::BTreeMap<Kind, Option<f64>>,
    pub failed: u64,
    pub history: History,
}

/// Simulate 182 days on a medium of this one's capacity with its own sizes.
pub fn reach(m: &Medium, sched: &Schedule, policy: &crate::pare::Policy) -> Result<Reach> {
    let r = reach_of(
        history(m, sched)?,
        capacity(m.root())?,
        sched,
        policy,
        &|| false,
    );
    Ok(r.expect("a reach that is never stopped is found"))
}

/// The size of the file system the medium at `dir` is on.
pub fn capacity(dir: &std::path::Path) -> Result<u64> {
    let st = rustix::fs::statvfs(dir).map_err(|e| crate::error::Error::Io {
        path: dir.to_path_buf(),
        cause: e.into(),
    })?;
    Ok(st.f_blocks.saturating_mul(st.f_frsize))
}

/// The finest micro interval the reach simulation steps at. The simulation costs about the
/// square of the backups it holds, so a one-minute schedule took minutes of CPU for half a
/// year; a finer schedule is modelled at this step with the same change per hour, which
/// moves how far back micros reach by less than a step and the other kinds not at all.
pub const REACH_MICRO_STEP: chrono::Duration = chrono::Duration::minutes(15);

/// [`reach`] from a history already measured: pure, and the slow part (a second or so), so
/// the agent runs it apart from the medium, with `stop` asked before each simulated step
/// (`None`: stopped).
pub fn reach_of(
    h: History,
    capacity: u64,
    sched: &Schedule,
    policy: &crate::pare::Policy,
    stop: &dyn Fn() -> bool,
) -> Option<Reach> {
    forecast(h, capacity, sched, policy, 0, stop).map(|(r, _)| r)
}

/// The simulation behind [`reach_of`], and the bytes it has in use over its half year: at most
/// `points` points of (days since the start, bytes used), each the most in use over its stretch
/// of time (0: none). `None` when `stop` said stop.
pub fn forecast(
    h: History,
    capacity: u64,
    sched: &Schedule,
    policy: &crate::pare::Policy,
    points: usize,
    stop: &dyn Fn() -> bool,
) -> Option<(Reach, Vec<(f64, u64)>)> {
    let (sched, change) = coarse_micros(sched, &h.change);
    let model = crate::simulate::Model {
        capacity,
        full_size: h.full_size,
        change,
        keep_all: false,
    };
    let start = chrono::DateTime::UNIX_EPOCH;
    let end = start + chrono::Duration::days(SIMULATED_DAYS);
    let mut curve: Vec<(f64, u64)> = Vec::with_capacity(points);
    let step = SIMULATED_DAYS as f64 / points.max(1) as f64;
    let mut used_at = |t: chrono::DateTime<chrono::Utc>, used: u64| {
        if points == 0 {
            return;
        }
        let day = (t - start).num_seconds() as f64 / 86_400.0;
        let slot = (day / step).floor() * step;
        match curve.last_mut() {
            Some(last) if last.0 == slot => last.1 = last.1.max(used),
            _ => curve.push((slot, used)),
        }
    };
    let s = crate::simulate::run_until(
        &model,
        &sched,
        policy,
        start,
        end,
        &mut |_| {},
        &mut used_at,
        stop,
    )?;
    // With no backups to measure, nothing is known of how far anything reaches.
    let known = h.full_size > 0;
    let days = s
        .at_end
        .iter()
        .map(|(k, v)| {
            let back = v
                .oldest
                .filter(|_| known)
                .map(|o| (end - o).num_minutes() as f64 / 1440.0);
            (*k, back)
        })
        .collect();
    let reach = Reach {
        days,
        failed: s.failed,
        history: h,
    };
    Some((reach, curve))
}

/// The schedule and change sizes the reach is simulated with: micros no finer than
/// [`REACH_MICRO_STEP`], each carrying the change of the interval it stands for (at most a
/// day's).
fn coarse_micros(sched: &Schedule, change: &HashMap<Kind, u64>) -> (Schedule, HashMap<Kind, u64>) {
    let fine = sched.micro_interval;
    if fine >= REACH_MICRO_STEP || fine <= chrono::Duration::zero() {
        return (sched.clone(), change.clone());
    }
    let mut change = change.clone();
    if let Some(micro) = change.get(&Kind::Micro).copied() {
        let per_step = (micro as u128 * REACH_MICRO_STEP.num_seconds() as u128
            / fine.num_seconds().max(1) as u128)
            .min(u64::MAX as u128) as u64;
        let day = change.get(&Kind::Daily).copied().unwrap_or(u64::MAX);
        change.insert(Kind::Micro, per_step.min(day));
    }
    let sched = Schedule {
        micro_interval: REACH_MICRO_STEP,
        ..sched.clone()
    };
    (sched, change)
}

/// How long [`forecast`] (and so [`reach`]) simulates.
pub const SIMULATED_DAYS: i64 = 182;

/// The spec's rule ([0055]): a medium about 1.5 times the size of what it backs up.
pub const FACTOR_NUM: u64 = 3;
pub const FACTOR_DEN: u64 = 2;

/// A medium smaller than the rule asks for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error(
    "the medium holds {} ({capacity} bytes), less than 1.5 times the {} of the sources ({}, spec [0055]): expect few backups to fit, and little history",
    indicatif::HumanBytes(*capacity), indicatif::HumanBytes(*sources), indicatif::HumanBytes(*recommended)
)]
pub struct Undersized {
    pub capacity: u64,
    pub sources: u64,
    pub recommended: u64,
}

/// Spec [0055] for the medium mounted at `dir` (enrolment: `media init`, the agent): is it
/// smaller than 1.5 times the configured sources? A stat-only walk of the sources; `None`
/// when there are none, they cannot be measured, or the medium is large enough.
pub fn check(dir: &std::path::Path, cfg: &crate::config::Config) -> Option<Undersized> {
    if cfg.sources.is_empty() {
        return None;
    }
    let capacity = capacity(dir).ok()?;
    let m = Medium::open_read(dir, &crate::medium::Unlock::host(&cfg.agent.state_dir)).ok()?;
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let sources = crate::backup::estimate(&m, cfg, None, &cancel).ok()?;
    advice(capacity, sources)
}

/// Whether a medium of `capacity` bytes is smaller than the rule for `sources` bytes.
pub fn advice(capacity: u64, sources: u64) -> Option<Undersized> {
    let recommended =
        (sources as u128 * FACTOR_NUM as u128 / FACTOR_DEN as u128).min(u64::MAX as u128) as u64;
    (capacity < recommended).then_some(Undersized {
        capacity,
        sources,
        recommended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_and_a_half_times() {
        assert_eq!(advice(150, 100), None);
        assert_eq!(
            advice(149, 100),
            Some(Undersized {
                capacity: 149,
                sources: 100,
                recommended: 150
            })
        );
        assert_eq!(
            advice(u64::MAX - 1, u64::MAX).map(|u| u.recommended),
            Some(u64::MAX)
        );
    }

    fn history(full: u64, micro: u64, daily: u64, weekly: u64) -> History {
        History {
            full_size: full,
            change: HashMap::from([
                (Kind::Micro, micro),
                (Kind::Daily, daily),
                (Kind::Weekly, weekly),
            ]),
            span_days: Some(7.0),
        }
    }

    fn every(minutes: i64) -> Schedule {
        Schedule {
            micro_interval: chrono::Duration::minutes(minutes),
            ..Schedule::default()
        }
    }

    #[test]
    fn a_fine_schedule_is_reckoned_at_the_coarse_step_with_the_same_change_per_hour() {
        let policy = crate::pare::Policy::default();
        // 10 KiB a minute is 150 KiB a quarter hour.
        let fine = reach_of(
            history(10 << 20, 10 << 10, 14 << 20, 70 << 20),
            1 << 30,
            &every(1),
            &policy,
            &|| false,
        )
        .unwrap();
        let coarse = reach_of(
            history(10 << 20, 150 << 10, 14 << 20, 70 << 20),
            1 << 30,
            &every(15),
            &policy,
            &|| false,
        )
        .unwrap();
        assert_eq!(fine.days, coarse.days);
        assert_eq!(fine.failed, coarse.failed);
        // A micro's change is never more than a day's.
        let (s, c) = coarse_micros(&every(1), &history(1, 1 << 20, 1 << 20, 1 << 20).change);
        assert_eq!(s.micro_interval, REACH_MICRO_STEP);
        assert_eq!(c[&Kind::Micro], 1 << 20);
    }

    #[test]
    fn a_reach_asked_to_stop_stops() {
        let asked = std::cell::Cell::new(0);
        let stop = || {
            asked.set(asked.get() + 1);
            asked.get() > 3
        };
        let r = reach_of(
            history(10 << 20, 10 << 10, 14 << 20, 70 << 20),
            1 << 30,
            &every(15),
            &crate::pare::Policy::default(),
            &stop,
        );
        assert!(r.is_none());
        assert_eq!(asked.get(), 4);
    }
}
