//! Property tests of the pure planners: random interleavings of backups, pares and media
//! swaps keep every tree consistent; decisions are deterministic and shift-invariant in time.

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use trayback::ids::{BackupId, BlockId};
use trayback::pare::{self, Policy};
use trayback::schedule::{self, Schedule};
use trayback::share::{self, Sharing};
use trayback::tree::Kind;
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
                        for (old, _) in pare::retention(tree, now, &policy) {
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

    /// Issue 10: random histories on a modelled medium whose blocks are shared (each backup
    /// keeps its parent's blocks but a few, which it replaces with new ones). After every
    /// step: a full is live and every incremental's chain reaches one; every pare made to
    /// find room freed more than zero bytes, exactly what the plan said; a plan that cannot
    /// free enough pares nothing; planning twice gives the same plan (the dry run is the run).
    #[test]
    fn room_plans_on_shared_blocks_keep_a_full_and_free_what_they_say(
        ops in proptest::collection::vec(shared_op(), 1..160),
        capacity in 40u64..400,
    ) {
        let sched = Schedule::default();
        let policy = Policy::default();
        let mut m = Modelled::default();
        let mut now = start();
        for op in ops {
            match op {
                SharedOp::Advance(min) => now += Duration::minutes(min),
                SharedOp::Backup { verified, changed } => {
                    let Some(due) = schedule::due(&m.tree, now, &sched) else { continue };
                    let needed = changed as u64 + 1;
                    let g = m.sharing();
                    let live = g.live_bytes();
                    let free = capacity.saturating_sub(live);
                    let r = pare::plan_backup(&m.tree, now, &policy, due.kind, due.parent, needed, free, &g);
                    let again = pare::plan_backup(&m.tree, now, &policy, due.kind, due.parent, needed, free, &m.sharing());
                    prop_assert_eq!(&r, &again);
                    let plan = &r.plan;
                    if plan.too_small.is_some() {
                        prop_assert!(plan.victims.is_empty());
                        continue;
                    }
                    // A full instead only when the incremental itself could not fit.
                    if r.instead_of.is_some() {
                        prop_assert!(r.kind.is_full() && r.parent.is_none());
                        let protect = pare::protected(&m.tree, due.parent);
                        let as_due = pare::plan_room(&m.tree, now, &policy, &protect, needed, free, &g);
                        prop_assert!(as_due.too_small.is_some());
                    } else {
                        prop_assert_eq!((r.kind, r.parent), (due.kind, due.parent));
                    }
                    let protect = pare::protected(&m.tree, r.parent);
                    for v in &plan.victims {
                        prop_assert!(v.freed > 0, "pared #{} for nothing", v.id);
                        prop_assert!(!protect.contains(&v.id));
                        m.remove(v.id);
                    }
                    prop_assert_eq!(m.sharing().live_bytes(), live - plan.freed());
                    prop_assert!(capacity - m.sharing().live_bytes() >= needed);
                    pare::check_restorable(&m.tree).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    m.add(r.kind, r.parent, now, verified, changed);
                    for (old, _) in pare::retention(&m.tree, now, &policy) {
                        m.remove(old);
                    }
                }
            }
            pare::check_restorable(&m.tree).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(m.tree.check().is_ok());
        }
    }
}

#[derive(Clone, Debug)]
enum SharedOp {
    Advance(i64),
    Backup { verified: bool, changed: u8 },
}

fn shared_op() -> impl Strategy<Value = SharedOp> {
    prop_oneof![
        3 => prop_oneof![1i64..30, 600i64..3000, 9000i64..20000].prop_map(SharedOp::Advance),
        5 => (prop::bool::weighted(0.9), 0u8..12).prop_map(|(verified, changed)| SharedOp::Backup { verified, changed }),
    ]
}

/// A medium in miniature: 16 one-byte data blocks a backup, each backup's root listing its own
/// (one byte); a new backup keeps the newest backup's blocks but `changed` of them.
#[derive(Default)]
struct Modelled {
    tree: Tree,
    blocks: std::collections::HashMap<BackupId, Vec<u64>>,
    next_block: u64,
}

impl Modelled {
    fn add(
        &mut self,
        kind: Kind,
        parent: Option<BackupId>,
        at: DateTime<Utc>,
        verified: bool,
        changed: u8,
    ) {
        let newest = self
            .tree
            .backups
            .iter()
            .max_by_key(|b| (b.started, b.id))
            .map(|b| b.id);
        let mut blocks = newest
            .and_then(|n| self.blocks.get(&n).cloned())
            .unwrap_or_default();
        if blocks.is_empty() {
            blocks = (0..16).map(|_| self.fresh()).collect();
        }
        for i in 0..(changed as usize).min(16) {
            let j = (i * 7 + changed as usize) % 16;
            blocks[j] = self.fresh();
        }
        let id = self.tree.next_id;
        self.tree.add(BackupRecord {
            id,
            kind,
            parent,
            started: at,
            finished: at,
            verified,
            partial: false,
            bytes_total: 16,
            bytes_new: 0,
            bytes_stored: 0,
        });
        self.blocks.insert(id, blocks);
    }

    fn fresh(&mut self) -> u64 {
        self.next_block += 1;
        self.next_block
    }

    fn remove(&mut self, id: BackupId) {
        self.tree.remove(id);
        self.blocks.remove(&id);
    }

    fn sharing(&self) -> Sharing {
        let mut b = share::Builder::default();
        let blk = |n: u64, tag: u8| {
            let mut id = [tag; 32];
            id[..8].copy_from_slice(&n.to_le_bytes());
            BlockId(id)
        };
        for r in &self.tree.backups {
            let root = b.intern(blk(r.id.0, 1), 1);
            let children = self.blocks[&r.id]
                .iter()
                .map(|n| b.intern(blk(*n, 2), 1))
                .collect();
            b.add_listing(root, children);
            b.add_root(r.id, root);
        }
        b.finish()
    }
}
