//! Property tests of the pure planners: random interleavings of backups, pares and media
//! swaps keep every tree consistent; decisions are deterministic and shift-invariant in time.

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use trayback::ids::BackupId;
use trayback::pare::{self, Policy};
use trayback::schedule::{self, Schedule};
use trayback::tree::{BackupRecord, Tree};

#[derive(Clone, Debug)]
enum Op {
    Advance(i64),
    Backup { verified: bool },
    Pare,
    Swap(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1i64..6000).prop_map(Op::Advance),
        6 => prop::bool::weighted(0.85).prop_map(|verified| Op::Backup { verified }),
        2 => Just(Op::Pare),
        1 => (0usize..3).prop_map(Op::Swap),
    ]
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn shifted(t: &Tree, by: Duration) -> Tree {
    let mut s = t.clone();
    for b in &mut s.backups {
        b.started += by;
        b.finished += by;
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn trees_stay_consistent_through_backups_pares_and_swaps(ops in proptest::collection::vec(op(), 1..400)) {
        let sched = Schedule::default();
        let policy = Policy::default();
        let mut media = vec![Tree::default(), Tree::default(), Tree::default()];
        let mut cur = 0;
        let mut now = start();
        for op in ops {
            match op {
                Op::Advance(min) => now += Duration::minutes(min),
                Op::Swap(i) => cur = i,
                Op::Backup { verified } => {
                    let tree = &mut media[cur];
                    if let Some(due) = schedule::due(tree, now, &sched) {
                        if let Some(p) = due.parent {
                            let parent = tree.get(p);
                            prop_assert!(parent.is_some(), "parent {p} not on this medium");
                            prop_assert!(parent.unwrap().verified, "unverified parent {p}");
                        } else {
                            prop_assert!(due.kind.is_full() || tree.backups.iter().all(|b| !b.verified));
                        }
                        let id = tree.next_id;
                        tree.add(BackupRecord { id, kind: due.kind, parent: due.parent, started: now, finished: now,
                            verified, partial: false, bytes_total: 0, bytes_new: 0, bytes_stored: 0 });
                        for (old, _) in pare::expired(tree, now, &policy, &[]) {
                            tree.remove(old);
                        }
                    }
                }
                Op::Pare => {
                    let tree = &mut media[cur];
                    let protect: Vec<BackupId> = schedule::due(tree, now, &sched).and_then(|d| d.parent).into_iter().collect();
                    match pare::next_to_pare(tree, now, &policy, &protect) {
                        Ok((id, _)) => {
                            prop_assert!(!protect.contains(&id));
                            tree.remove(id);
                        }
                        Err(_) => prop_assert!(tree.backups.iter().all(|b| protect.contains(&b.id) || b.kind == trayback::tree::Kind::Micro)),
                    }
                }
            }
            for t in &media {
                prop_assert!(t.check().is_ok(), "{:?}", t.check());
            }
        }
    }

    #[test]
    fn decisions_are_deterministic_and_shift_invariant(
        ops in proptest::collection::vec((1i64..3000, any::<bool>()), 1..150),
        shift_days in -4000i64..4000,
        probe in 0i64..20000,
    ) {
        let sched = Schedule::default();
        let policy = Policy::default();
        let mut tree = Tree::default();
        let mut now = start();
        for (adv, verified) in ops {
            now += Duration::minutes(adv);
            if let Some(d) = schedule::due(&tree, now, &sched) {
                let id = tree.next_id;
                tree.add(BackupRecord { id, kind: d.kind, parent: d.parent, started: now, finished: now,
                    verified, partial: false, bytes_total: 0, bytes_new: 0, bytes_stored: 0 });
            }
        }
        let at = now + Duration::minutes(probe);
        let by = Duration::days(shift_days);
        let moved = shifted(&tree, by);
        prop_assert_eq!(schedule::due(&tree, at, &sched), schedule::due(&tree, at, &sched));
        prop_assert_eq!(schedule::due(&tree, at, &sched), schedule::due(&moved, at + by, &sched));
        prop_assert_eq!(schedule::next_due(&tree, at, &sched) + by, schedule::next_due(&moved, at + by, &sched));
        prop_assert_eq!(pare::next_to_pare(&tree, at, &policy, &[]), pare::next_to_pare(&moved, at + by, &policy, &[]));
        prop_assert_eq!(pare::expired(&tree, at, &policy, &[]), pare::expired(&moved, at + by, &policy, &[]));
    }
}
