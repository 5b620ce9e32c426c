//! `trayback simulate`: the real schedule and room plan over a modelled medium, for sizing
//! (spec [0055]: how much history fits on a disk at my change rate?) and for testing the
//! planners over months in milliseconds.
//!
//! The model of shared blocks (issue 10): the first backup stores `full_size`; after that the
//! data changes, and the bytes a set of backups occupies is `full_size` plus, for each backup
//! after the oldest, the bytes that changed since the one before it — `changed(gap)`, the
//! distinct bytes changed over a time span, interpolated from the change size of each kind
//! over its interval (micro interval, a day, the weekly interval) and never above
//! `full_size`. That is exact when each version of the data lives over one stretch of time, as
//! content-addressed blocks do. So a backup's size is its unique bytes, not its total: paring
//! a monthly that micros build on frees only what changed between it and the next backup.
//! A backup that changed anything also holds a few KiB of its own (its listings). The room
//! plan is [`pare::plan_backup`], the same as on a real medium, with this model's [`Freed`];
//! after every step the tree is checked with [`pare::check_restorable`].

use crate::ids::BackupId;
use crate::pare::{self, Freed, Policy, Reason};
use crate::schedule::{self, Schedule};
use crate::tree::{BackupRecord, Kind, Tree};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug)]
pub struct Model {
    pub capacity: u64,
    pub full_size: u64,
    /// Distinct bytes changed over the interval of a weekly, daily and micro backup.
    pub change: HashMap<Kind, u64>,
    /// Never pare (spec Table 1 "assumes that backups do not get deleted"); the capacity
    /// still holds: what does not fit fails.
    pub keep_all: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Created {
        seq: u64,
        id: BackupId,
        kind: Kind,
        parent: Option<BackupId>,
        time: DateTime<Utc>,
        size: u64,
    },
    Pared {
        id: BackupId,
        kind: Kind,
        reason: Reason,
        time: DateTime<Utc>,
        /// What the pare freed (`None`: pared by age, step 100).
        freed: Option<u64>,
    },
    /// The backup could not be made: the plan could not free enough (nothing was pared).
    Failed {
        kind: Kind,
        time: DateTime<Utc>,
        needed: u64,
        free: u64,
        /// What paring all the plan allows would have freed.
        could_free: u64,
    },
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct KindSummary {
    pub count: usize,
    pub oldest: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub created: u64,
    pub pared: u64,
    pub failed: u64,
    /// Steps after which the newest backup could not have been restored in full from the
    /// medium (no full, or a chain reaching none): always 0.
    pub broken: u64,
    pub at_end: BTreeMap<Kind, KindSummary>,
    pub used_at_end: u64,
    pub peak_used: u64,
    pub capacity: u64,
}

/// Distinct bytes changed over a span of time: piecewise linear through the kinds' points,
/// never decreasing, the last slope carried on, capped at the full size.
#[derive(Clone, Debug)]
pub struct Changed {
    /// (seconds, bytes), increasing in both.
    points: Vec<(i64, u64)>,
    cap: u64,
}

impl Changed {
    pub fn new(model: &Model, sched: &Schedule) -> Changed {
        let mut pts: Vec<(i64, u64)> = sched
            .spans()
            .into_iter()
            .map(|(k, span)| {
                let secs = span.num_seconds().max(1);
                (secs, model.change.get(&k).copied().unwrap_or(0))
            })
            .collect();
        pts.sort();
        pts.dedup_by_key(|p| p.0);
        // The upper concave hull through (0, 0) and the points: distinct bytes changed over
        // a span can be no more than over its parts (so paring never grows what the rest
        // occupies), and where the sizes given disagree, the larger reading wins.
        let mut hull: Vec<(i64, u64)> = vec![(0, 0)];
        for p in pts {
            let p = (p.0, p.1.min(model.full_size));
            while hull.len() >= 2 {
                let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
                // Drop b if it lies on or below the line from a to p.
                let lhs = (b.1 as i128 - a.1 as i128) * (p.0 - a.0) as i128;
                let rhs = (p.1 as i128 - a.1 as i128) * (b.0 - a.0) as i128;
                if lhs <= rhs {
                    hull.pop();
                } else {
                    break;
                }
            }
            hull.push(p);
        }
        // Never decreasing: a falling tail is flattened.
        let mut high = 0;
        for p in &mut hull {
            high = high.max(p.1);
            p.1 = high;
        }
        if hull.len() < 2 {
            hull.push((1, 0));
        }
        Changed {
            points: hull,
            cap: model.full_size,
        }
    }

    /// What a backup made `span` after the one before it adds: the bytes changed, and its own
    /// listings when anything changed.
    pub fn with_own(&self, span: Duration) -> u64 {
        let c = self.over(span);
        if c > 0 {
            c.saturating_add(OWN)
        } else {
            0
        }
    }

    pub fn over(&self, span: Duration) -> u64 {
        let x = span.num_seconds().max(0);
        let seg = self
            .points
            .windows(2)
            .find(|w| x <= w[1].0)
            .unwrap_or(&self.points[self.points.len() - 2..]);
        let ((x0, y0), (x1, y1)) = (seg[0], seg[1]);
        let slope_num = (y1 - y0) as u128;
        let dx = (x1 - x0).max(1) as u128;
        let y = y0 as u128 + slope_num * (x - x0).max(0) as u128 / dx;
        y.min(self.cap as u128) as u64
    }
}

/// The bytes a set of backups occupies in the model.
fn occupied(full: u64, ch: &Changed, tree: &Tree, without: &[BackupId]) -> u64 {
    let mut times: Vec<(DateTime<Utc>, BackupId)> = tree
        .backups
        .iter()
        .filter(|b| !without.contains(&b.id))
        .map(|b| (b.started, b.id))
        .collect();
    times.sort();
    if times.is_empty() {
        return 0;
    }
    times.windows(2).fold(full, |acc, w| {
        acc.saturating_add(ch.with_own(w[1].0 - w[0].0))
    })
}

/// What every backup after the first that changed anything holds of its own in the model: the
/// listings that name what changed (on a real medium such a backup has its own root listing
/// at least; one that changed nothing shares all its listings). Without it a backup between
/// two others would free nothing, however old, when change is steady.
const OWN: u64 = 4 << 10;

/// The model's answer to "what does paring this free?".
struct ModelFreed<'a> {
    full: u64,
    ch: &'a Changed,
    tree: &'a Tree,
}

impl Freed for ModelFreed<'_> {
    fn freed(&self, gone: &[BackupId], id: BackupId) -> u64 {
        let mut with = gone.to_vec();
        with.push(id);
        // Rounding may make the two differ by a byte the wrong way: never below zero.
        occupied(self.full, self.ch, self.tree, gone)
            .saturating_sub(occupied(self.full, self.ch, self.tree, &with))
    }
}

/// Pare the micros past their age ([`pare::retention`]); how many.
fn retain(tree: &mut Tree, t: DateTime<Utc>, policy: &Policy, emit: &mut dyn FnMut(&Event)) -> u64 {
    let mut n = 0;
    for (old, reason) in pare::retention(tree, t, policy) {
        let rec = tree.remove(old).expect("expired backups are in the tree");
        n += 1;
        emit(&Event::Pared {
            id: old,
            kind: rec.kind,
            reason,
            time: t,
            freed: None,
        });
    }
    n
}

/// Run from `start` to `end` (inclusive), calling `emit` for every event.
pub fn run(
    model: &Model,
    sched: &Schedule,
    policy: &Policy,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    emit: &mut dyn FnMut(&Event),
) -> Summary {
    run_until(
        model,
        sched,
        policy,
        start,
        end,
        emit,
        &mut |_, _| {},
        &|| false,
    )
    .expect("a run that is never stopped ends")
}

/// [`run`], also telling `used_at` the bytes in use after every step (a backup made or one
/// that found no room, with what was pared: the curve the web interface plots), and asking
/// `stop` before each step: `None` when it said stop (a simulation of a fine schedule costs
/// minutes, and whoever asked may have gone).
#[allow(clippy::too_many_arguments)]
pub fn run_until(
    model: &Model,
    sched: &Schedule,
    policy: &Policy,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    emit: &mut dyn FnMut(&Event),
    used_at: &mut dyn FnMut(DateTime<Utc>, u64),
    stop: &dyn Fn() -> bool,
) -> Option<Summary> {
    let ch = Changed::new(model, sched);
    let full = model.full_size;
    let mut tree = Tree::default();
    let mut used = 0u64;
    let (mut peak, mut created, mut failed, mut pared, mut broken) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut t = start;
    // `t` only grows; at the end of chrono's time ("never") nothing more falls due.
    while t <= end && t < DateTime::<Utc>::MAX_UTC {
        if stop() {
            return None;
        }
        let Some(due) = schedule::due(&tree, t, sched) else {
            t = schedule::next_due(&tree, t, sched);
            continue;
        };
        let size = match tree.backups.iter().map(|b| b.started).max() {
            None => full,
            Some(newest) => ch.with_own(t - newest),
        };
        let free = model.capacity.saturating_sub(used);
        let (victims, short, kind, parent) = if model.keep_all {
            (Vec::new(), (size > free).then_some(0), due.kind, due.parent)
        } else {
            let f = ModelFreed {
                full,
                ch: &ch,
                tree: &tree,
            };
            let r = pare::plan_backup(&tree, t, policy, due.kind, due.parent, size, free, &f);
            let short = r.plan.too_small.as_ref().map(|s| s.could_free);
            (r.plan.victims, short, r.kind, r.parent)
        };
        if let Some(could_free) = short {
            // Step 100 is retention, not room: it applies to a backup that found no room too.
            if !model.keep_all {
                pared += retain(&mut tree, t, policy, emit);
                used = occupied(full, &ch, &tree, &[]);
            }
            failed += 1;
            used_at(t, used);
            emit(&Event::Failed {
                kind: due.kind,
                time: t,
                needed: size,
                free,
                could_free,
            });
            t = schedule::add_or_never(t, sched.micro_interval);
            continue;
        }
        for v in victims {
            // What the pare freed in the model, measured, not the plan's word for it.
            let before = occupied(full, &ch, &tree, &[]);
            tree.remove(v.id);
            let freed = before.saturating_sub(occupied(full, &ch, &tree, &[]));
            debug_assert_eq!(freed, v.freed, "the plan's reckoning is the model's");
            pared += 1;
            emit(&Event::Pared {
                id: v.id,
                kind: v.kind,
                reason: v.reason,
                time: t,
                freed: Some(freed),
            });
        }
        let before = occupied(full, &ch, &tree, &[]);
        let id = tree.next_id;
        tree.add(BackupRecord {
            id,
            kind,
            parent,
            started: t,
            finished: t,
            verified: true,
            partial: false,
            bytes_total: full,
            bytes_new: size,
            bytes_stored: size,
        });
        used = occupied(full, &ch, &tree, &[]);
        debug_assert_eq!(used, before + size);
        peak = peak.max(used);
        created += 1;
        emit(&Event::Created {
            seq: created,
            id,
            kind,
            parent,
            time: t,
            size,
        });
        if !model.keep_all {
            pared += retain(&mut tree, t, policy, emit);
            used = occupied(full, &ch, &tree, &[]);
        }
        used_at(t, used);
        broken += u64::from(pare::check_restorable(&tree).is_err());
        debug_assert!(tree.check().is_ok());
        t = schedule::next_due(
            &tree,
            schedule::add_or_never(t, Duration::nanoseconds(1)),
            sched,
        );
    }
    let mut at_end: BTreeMap<Kind, KindSummary> = Kind::ALL
        .iter()
        .map(|k| (*k, KindSummary::default()))
        .collect();
    for b in &tree.backups {
        let s = at_end.get_mut(&b.kind).unwrap();
        s.count += 1;
        s.oldest = Some(s.oldest.map_or(b.started, |o| o.min(b.started)));
    }
    Some(Summary {
        created,
        pared,
        failed,
        broken,
        at_end,
        used_at_end: used,
        peak_used: peak,
        capacity: model.capacity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn table1_events() -> Vec<(u64, Kind, Option<u64>)> {
        let model = Model {
            capacity: u64::MAX,
            full_size: 1,
            change: HashMap::new(),
            keep_all: true,
        };
        let mut out = Vec::new();
        run(
            &model,
            &Schedule::default(),
            &Policy::default(),
            start(),
            start() + Duration::days(28),
            &mut |e| {
                if let Event::Created {
                    id, kind, parent, ..
                } = e
                {
                    out.push((id.0, *kind, parent.map(|p| p.0)));
                }
            },
        );
        out
    }

    #[test]
    fn a_28_day_month_reproduces_spec_table_1() {
        let ev = table1_events();
        let row = |n: u64| ev[(n - 1) as usize];
        assert_eq!(row(1), (1, Kind::Monthly, None));
        for n in 2..=96 {
            assert_eq!(row(n), (n, Kind::Micro, Some(n - 1)), "backup {n}");
        }
        #[rustfmt::skip]
        let table = [
            (97, Kind::Daily, Some(1)), (98, Kind::Micro, Some(97)), (99, Kind::Micro, Some(98)),
            (193, Kind::Daily, Some(1)), (194, Kind::Micro, Some(193)),
            (673, Kind::Weekly, Some(1)), (674, Kind::Micro, Some(673)),
            (769, Kind::Daily, Some(673)), (770, Kind::Micro, Some(769)),
            (2689, Kind::Monthly, None),
        ];
        for (n, kind, parent) in table {
            assert_eq!(row(n), (n, kind, parent), "backup {n}");
        }
        assert_eq!(ev.len(), 2689);
    }

    #[test]
    fn a_month_has_fig_2s_counts() {
        let ev = table1_events();
        let count = |k: Kind| ev[..2688].iter().filter(|e| e.1 == k).count();
        assert_eq!(
            (
                count(Kind::Monthly),
                count(Kind::Weekly),
                count(Kind::Daily),
                count(Kind::Micro)
            ),
            (1, 3, 24, 2660)
        );
    }

    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;

    /// Run an issue-10 scenario; check after it what every step must keep.
    fn scenario(
        days: i64,
        capacity: u64,
        full: u64,
        change: &[(Kind, u64)],
        keep_all: bool,
    ) -> Summary {
        let model = Model {
            capacity,
            full_size: full,
            change: change.iter().copied().collect(),
            keep_all,
        };
        let mut pared_for_nothing = 0;
        let s = run(
            &model,
            &Schedule::default(),
            &Policy::default(),
            start(),
            start() + Duration::days(days),
            &mut |e| {
                if let Event::Pared { freed: Some(0), .. } = e {
                    pared_for_nothing += 1;
                }
            },
        );
        assert_eq!(s.broken, 0, "the newest backup always restores in full");
        assert_eq!(pared_for_nothing, 0, "no pare to make room frees nothing");
        assert!(s.peak_used <= capacity, "{} > {capacity}", s.peak_used);
        assert!(s.at_end[&Kind::Monthly].count >= 1, "a full is always kept");
        s
    }

    #[test]
    fn issue_10_a_daily_never_lands_on_a_medium_without_a_full() {
        let s = scenario(
            90,
            220 * G,
            100 * G,
            &[
                (Kind::Micro, 10 * M),
                (Kind::Daily, 100 * G),
                (Kind::Weekly, 100 * G),
            ],
            false,
        );
        assert!(
            s.failed > 0,
            "the medium is too small for 100G a day: it says so"
        );
    }

    #[test]
    fn issue_10_micros_that_fill_the_medium_keep_the_full() {
        let s = scenario(
            3,
            120 * G,
            100 * G,
            &[
                (Kind::Micro, G),
                (Kind::Daily, 10 * G),
                (Kind::Weekly, 10 * G),
            ],
            false,
        );
        assert_eq!(s.at_end[&Kind::Monthly].count, 1);
    }

    #[test]
    fn issue_10_no_pare_still_honours_the_capacity() {
        let tb = 1_000_000_000_000;
        let s = scenario(
            30,
            3 * tb,
            2 << 40,
            &[
                (Kind::Micro, 400 * M),
                (Kind::Daily, 10 * G),
                (Kind::Weekly, 40 * G),
            ],
            true,
        );
        assert!(s.failed > 0 && s.pared == 0);
    }

    #[test]
    fn a_roomy_medium_pares_by_the_chart_and_frees_something_each_time() {
        let s = scenario(
            200,
            30 * G,
            10 * G,
            &[
                (Kind::Micro, 10 * M),
                (Kind::Daily, 500 * M),
                (Kind::Weekly, G),
            ],
            false,
        );
        assert_eq!(s.failed, 0);
        assert!(s.pared > 0);
    }
}
