//! `trayback simulate`: the real schedule and paring plan over a modelled medium, for sizing
//! (spec [0055]: how much history fits on a disk at my change rate?) and for testing the
//! planners over months in milliseconds.
//!
//! The model: a monthly occupies `full_size`, any other backup the change size of its kind;
//! paring a backup frees what it occupies. Time jumps from one due backup to the next.

use crate::ids::BackupId;
use crate::pare::{self, Policy, Reason};
use crate::schedule::{self, Schedule};
use crate::tree::{BackupRecord, Kind, Tree};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug)]
pub struct Model {
    pub capacity: u64,
    pub full_size: u64,
    /// Size of a weekly, daily and micro backup.
    pub change: HashMap<Kind, u64>,
    /// Never pare (spec Table 1 "assumes that backups do not get deleted").
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
    },
    /// The backup could not be made: the plan found nothing more to pare (step 142).
    Failed {
        kind: Kind,
        time: DateTime<Utc>,
        needed: u64,
        free: u64,
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
    pub at_end: BTreeMap<Kind, KindSummary>,
    pub used_at_end: u64,
    pub peak_used: u64,
    pub capacity: u64,
}

struct Medium {
    tree: Tree,
    sizes: HashMap<BackupId, u64>,
    used: u64,
    pared: u64,
}

impl Medium {
    fn pare(
        &mut self,
        id: BackupId,
        reason: Reason,
        time: DateTime<Utc>,
        emit: &mut dyn FnMut(&Event),
    ) {
        let rec = self
            .tree
            .remove(id)
            .expect("the plan chooses backups in the tree");
        self.used -= self.sizes.remove(&id).unwrap_or(0);
        self.pared += 1;
        emit(&Event::Pared {
            id,
            kind: rec.kind,
            reason,
            time,
        });
    }
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
    let mut md = Medium {
        tree: Tree::default(),
        sizes: HashMap::new(),
        used: 0,
        pared: 0,
    };
    let (mut peak, mut created, mut failed) = (0u64, 0u64, 0u64);
    let mut t = start;
    // `t` only grows; at the end of chrono's time ("never") nothing more falls due.
    while t <= end && t < DateTime::<Utc>::MAX_UTC {
        let Some(due) = schedule::due(&md.tree, t, sched) else {
            t = schedule::next_due(&md.tree, t, sched);
            continue;
        };
        let size = if due.kind == Kind::Monthly {
            model.full_size
        } else {
            model.change.get(&due.kind).copied().unwrap_or(0)
        };
        let protect: Vec<BackupId> = due.parent.into_iter().collect();
        let mut fits = true;
        if !model.keep_all {
            while md.used + size > model.capacity {
                match pare::next_to_pare(&md.tree, t, policy, &protect) {
                    Ok((id, reason)) => md.pare(id, reason, t, emit),
                    Err(_) => {
                        fits = false;
                        break;
                    }
                }
            }
        }
        if !fits {
            failed += 1;
            emit(&Event::Failed {
                kind: due.kind,
                time: t,
                needed: size,
                free: model.capacity.saturating_sub(md.used),
            });
            t = schedule::add_or_never(t, sched.micro_interval);
            continue;
        }
        let id = md.tree.next_id;
        md.tree.add(BackupRecord {
            id,
            kind: due.kind,
            parent: due.parent,
            started: t,
            finished: t,
            verified: true,
            partial: false,
            bytes_total: model.full_size,
            bytes_new: size,
            bytes_stored: size,
        });
        md.sizes.insert(id, size);
        md.used += size;
        peak = peak.max(md.used);
        created += 1;
        emit(&Event::Created {
            seq: created,
            id,
            kind: due.kind,
            parent: due.parent,
            time: t,
            size,
        });
        if !model.keep_all {
            for (old, reason) in pare::expired(&md.tree, t, policy, &[]) {
                md.pare(old, reason, t, emit);
            }
        }
        debug_assert!(md.tree.check().is_ok());
        t = schedule::next_due(
            &md.tree,
            schedule::add_or_never(t, Duration::nanoseconds(1)),
            sched,
        );
    }
    let mut at_end: BTreeMap<Kind, KindSummary> = Kind::ALL
        .iter()
        .map(|k| (*k, KindSummary::default()))
        .collect();
    for b in &md.tree.backups {
        let s = at_end.get_mut(&b.kind).unwrap();
        s.count += 1;
        s.oldest = Some(s.oldest.map_or(b.started, |o| o.min(b.started)));
    }
    Summary {
        created,
        pared: md.pared,
        failed,
        at_end,
        used_at_end: md.used,
        peak_used: peak,
        capacity: model.capacity,
    }
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
}
