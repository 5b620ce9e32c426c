//! Which backup to pare (spec [0041]–[0048], Figs. 3a/3b), as pure functions of the tree,
//! the policy and `now`, and the whole plan for making room ([`plan_room`]) as a value.
//! The medium carries the plan out (`maintain`); `backup`, the agent and `simulate` plan a
//! backup's room with [`plan_backup`], `pare` and `pare --dry-run` with [`plan_room`]: one
//! plan, with the protect set of [`protected`].
//!
//! Invariants: a protected backup (the parent of the backup about to be written, the newest
//! verified backup, the newest verified full) is never chosen; every choice carries the
//! flow-chart step that made it. The room plan pares nothing that frees nothing, never a
//! full that incrementals still build on, and nothing at all when the whole sequence could
//! not free enough; so after it every incremental's chain still reaches a full
//! ([`check_restorable`], spec [0042], [0050]).

use crate::ids::BackupId;
use crate::tree::{BackupRecord, Kind, Tree};
use chrono::{DateTime, Duration, Utc};
use indicatif::HumanBytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The plan's thresholds (spec defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Step 100: micro backups older than this are pared even when space is plentiful
    /// (`None` keeps them, as spec Table 1 assumes).
    pub micro_max_age: Option<Duration>,
    /// Step 104: this many non-micro backups or more.
    pub many_backups: usize,
    /// Step 106: at least this many dailies (six weeks).
    pub dailies_kept: usize,
    /// Step 110: at least this many weeklies (six months).
    pub weeklies_kept: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            micro_max_age: Some(Duration::days(7)),
            many_backups: 80,
            dailies_kept: 36,
            weeklies_kept: 18,
        }
    }
}

/// Why a backup is pared: the step of the flow chart (Figs. 3a/3b).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Reason {
    /// [0048]: unverified backups go before any verified one.
    Unverified,
    /// Step 100: a micro backup older than the maximum age (7 days).
    Step100MicroTooOld,
    /// Steps 104–108: 80+ non-micro backups and 36+ dailies: the oldest daily.
    Step108OldestDaily,
    /// Steps 104, 110–112: 80+ non-micro backups, fewer than 36 dailies, 18+ weeklies.
    Step112OldestWeekly,
    /// Steps 104, 110, 114: 80+ non-micro backups, fewer than 36 dailies and 18 weeklies.
    Step114OldestMonthly,
    /// Steps 116–118: the only backup; the medium is too small (notify the operator).
    Step118SingleBackup,
    /// Steps 120–124: more than M monthlies pre-date the oldest weekly.
    Step124OldestMonthly { m: usize },
    /// Steps 126–128: more than W weeklies pre-date the oldest daily.
    Step128OldestWeekly { w: usize },
    /// Steps 130–132: the oldest daily.
    Step132OldestDaily,
    /// Steps 134–136: the oldest monthly.
    Step136OldestMonthly,
    /// Steps 138–140: the oldest weekly.
    Step140OldestWeekly,
}

impl Reason {
    /// Whether the operator should be told the medium is too small (spec [0044]).
    pub fn medium_too_small(self) -> bool {
        self == Reason::Step118SingleBackup
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unverified => write!(f, "unverified, pared before verified backups ([0048])"),
            Reason::Step100MicroTooOld => {
                write!(f, "step 100: micro backup older than the maximum age")
            }
            Reason::Step108OldestDaily => write!(
                f,
                "steps 104-108: 80+ backups and 36+ dailies: oldest daily"
            ),
            Reason::Step112OldestWeekly => write!(
                f,
                "steps 110-112: 80+ backups and 18+ weeklies: oldest weekly"
            ),
            Reason::Step114OldestMonthly => write!(
                f,
                "step 114: 80+ backups, few dailies and weeklies: oldest monthly"
            ),
            Reason::Step118SingleBackup => {
                write!(f, "steps 116-118: the only backup; the medium is too small")
            }
            Reason::Step124OldestMonthly { m } => write!(
                f,
                "steps 122-124: more than M={m} monthlies before the oldest weekly"
            ),
            Reason::Step128OldestWeekly { w } => write!(
                f,
                "steps 126-128: more than W={w} weeklies before the oldest daily"
            ),
            Reason::Step132OldestDaily => write!(f, "steps 130-132: oldest daily"),
            Reason::Step136OldestMonthly => write!(f, "steps 134-136: oldest monthly"),
            Reason::Step140OldestWeekly => write!(f, "steps 138-140: oldest weekly"),
        }
    }
}

/// Why the flow chart finds nothing (more) to pare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum NothingToPare {
    /// Steps 116–118: one backup (micro backups aside) and it must stay: only one backup
    /// will likely ever fit ([0044]).
    #[error("step 118: only one backup besides micro backups fits on this medium")]
    Step118OnlyOneFits,
    /// Step 142: nothing left the plan may pare.
    #[error("step 142: nothing left to pare")]
    Step142,
}

/// M and W of step 120 for `n` non-micro backups (n < 2 is treated as the smallest range).
pub fn m_and_w(n: usize) -> (usize, usize) {
    match n {
        0..=7 => (0, 1),
        8..=14 => (1, 2),
        _ => ((n / 3).saturating_sub(2), (n / 6).max(3)),
    }
}

fn oldest<'a>(it: impl Iterator<Item = &'a BackupRecord>) -> Option<&'a BackupRecord> {
    it.min_by_key(|b| (b.started, b.id))
}

/// Micro backups older than the policy's maximum age (step 100) and not in `protect`,
/// oldest first: [`retention`] after every backup, however much space is free, and the
/// chart's first choice when making room.
pub fn expired(
    tree: &Tree,
    now: DateTime<Utc>,
    p: &Policy,
    protect: &[BackupId],
) -> Vec<(BackupId, Reason)> {
    let Some(age) = p.micro_max_age else {
        return Vec::new();
    };
    // A set: callers walking the whole chart pass every backup chosen so far.
    let protect: rustc_hash::FxHashSet<BackupId> = protect.iter().copied().collect();
    let mut v: Vec<&BackupRecord> = tree
        .backups
        .iter()
        .filter(|b| b.kind == Kind::Micro && now - b.started > age && !protect.contains(&b.id))
        .collect();
    v.sort_by_key(|b| (b.started, b.id));
    v.into_iter()
        .map(|b| (b.id, Reason::Step100MicroTooOld))
        .collect()
}

/// Step 100 as retention, after every backup and after a backup that found no room: the
/// expired micros, except the newest verified backup and the newest verified full
/// ([`protected`] with no parent). So a medium whose backups have failed for a week still
/// holds its latest state; after a backup the newest is the new one, never expired.
pub fn retention(tree: &Tree, now: DateTime<Utc>, p: &Policy) -> Vec<(BackupId, Reason)> {
    expired(tree, now, p, &protected(tree, None))
}

/// The next backup to pare when space is needed (Figs. 3a/3b).
pub fn next_to_pare(
    tree: &Tree,
    now: DateTime<Utc>,
    p: &Policy,
    protect: &[BackupId],
) -> Result<(BackupId, Reason), NothingToPare> {
    let skip: rustc_hash::FxHashSet<BackupId> = protect.iter().copied().collect();
    let cands = || tree.backups.iter().filter(|b| !skip.contains(&b.id));
    let of = |k: Kind| cands().filter(move |b| b.kind == k);
    let pick = |b: Option<&BackupRecord>, r: Reason| b.map(|b| (b.id, r));

    if let Some(x) = pick(oldest(cands().filter(|b| !b.verified)), Reason::Unverified) {
        return Ok(x);
    }
    if let Some(x) = expired(tree, now, p, protect).into_iter().next() {
        return Ok(x);
    }
    // Counts are of the whole tree ("there are 80 or more backups"); choices skip protected.
    let count = |k: Kind| tree.backups.iter().filter(|b| b.kind == k).count();
    let n = tree
        .backups
        .iter()
        .filter(|b| b.kind != Kind::Micro)
        .count();
    if n >= p.many_backups {
        let r = if count(Kind::Daily) >= p.dailies_kept {
            pick(oldest(of(Kind::Daily)), Reason::Step108OldestDaily)
        } else if count(Kind::Weekly) >= p.weeklies_kept {
            pick(oldest(of(Kind::Weekly)), Reason::Step112OldestWeekly)
        } else {
            pick(oldest(of(Kind::Monthly)), Reason::Step114OldestMonthly)
        };
        if let Some(x) = r {
            return Ok(x);
        }
    }
    // Step 116: "only a single backup", counted like step 104 without micro backups.
    if n == 1 {
        let single = cands().find(|b| b.kind != Kind::Micro);
        return pick(single, Reason::Step118SingleBackup).ok_or(NothingToPare::Step118OnlyOneFits);
    }
    let (m, w) = m_and_w(n);
    let first = |k: Kind| {
        tree.backups
            .iter()
            .filter(|b| b.kind == k)
            .map(|b| b.started)
            .min()
    };
    if let Some(oldest_weekly) = first(Kind::Weekly) {
        let before = tree
            .backups
            .iter()
            .filter(|b| b.kind == Kind::Monthly && b.started < oldest_weekly)
            .count();
        if before > m {
            if let Some(x) = pick(
                oldest(of(Kind::Monthly)),
                Reason::Step124OldestMonthly { m },
            ) {
                return Ok(x);
            }
        }
    }
    if let Some(oldest_daily) = first(Kind::Daily) {
        let before = tree
            .backups
            .iter()
            .filter(|b| b.kind == Kind::Weekly && b.started < oldest_daily)
            .count();
        if before > w {
            if let Some(x) = pick(oldest(of(Kind::Weekly)), Reason::Step128OldestWeekly { w }) {
                return Ok(x);
            }
        }
    }
    pick(oldest(of(Kind::Daily)), Reason::Step132OldestDaily)
        .or_else(|| pick(oldest(of(Kind::Monthly)), Reason::Step136OldestMonthly))
        .or_else(|| pick(oldest(of(Kind::Weekly)), Reason::Step140OldestWeekly))
        .ok_or(NothingToPare::Step142)
}

/// The one protect set of every room plan: the parent of the backup about to be made, the
/// newest verified backup (what the next backup is compared against) and the newest verified
/// full (at least one full is always kept, [0042]).
pub fn protected(tree: &Tree, parent: Option<BackupId>) -> Vec<BackupId> {
    let newest = tree.latest_verified().map(|b| b.id);
    let full = tree
        .backups
        .iter()
        .filter(|b| b.verified && b.kind.is_full())
        .max_by_key(|b| (b.started, b.id))
        .map(|b| b.id);
    let mut v: Vec<BackupId> = parent.into_iter().chain(newest).chain(full).collect();
    v.sort();
    v.dedup();
    v
}

/// What paring frees, known before anything is pared (the medium's shared blocks, or
/// `simulate`'s model of them).
pub trait Freed {
    /// Bytes paring `id` frees once every backup in `gone` is pared too.
    fn freed(&self, gone: &[BackupId], id: BackupId) -> u64;
}

/// One backup the room plan pares: why, and the bytes it frees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Victim {
    pub id: BackupId,
    pub kind: Kind,
    pub started: DateTime<Utc>,
    pub reason: Reason,
    pub freed: u64,
}

/// Why the flow chart's choice was passed over while making room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// Every block of it is still referenced by a backup that stays: paring it frees nothing.
    FreesNothing,
    /// A full backup that incrementals still build on: their chains would reach no full.
    FullWithIncrementals,
}

/// The medium cannot hold the backup even after all the plan allows: the operator notice of
/// step 118 ([0044]) with the numbers. Nothing is pared to make room in this case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "medium too small: {} needed ({needed} bytes), {} free, and paring all the plan allows would free only {} more ({why}): use a larger medium (spec [0044], about 1.5 times the data backed up, [0055])",
    HumanBytes(*needed), HumanBytes(*free), HumanBytes(*could_free)
)]
pub struct TooSmall {
    pub needed: u64,
    pub free: u64,
    pub could_free: u64,
    pub why: NothingToPare,
}

/// The whole plan for making room, computed before anything is pared (a dry run prints it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomPlan {
    pub needed: u64,
    pub free: u64,
    /// In order; empty when `too_small` is set.
    pub victims: Vec<Victim>,
    /// The chart's choices passed over, and why.
    pub skipped: Vec<(BackupId, Skip)>,
    pub too_small: Option<TooSmall>,
}

impl RoomPlan {
    pub fn freed(&self) -> u64 {
        self.victims.iter().map(|v| v.freed).sum()
    }
}

/// Plan the pares that make `needed` bytes free when `free` are: the flow chart's choices in
/// order, each with the bytes it frees given the ones before it; a choice that frees nothing
/// or is a full that incrementals build on is passed over. If the whole sequence cannot free
/// enough, the plan pares nothing and says so ([`TooSmall`]).
pub fn plan_room(
    tree: &Tree,
    now: DateTime<Utc>,
    p: &Policy,
    protect: &[BackupId],
    needed: u64,
    free: u64,
    freed: &dyn Freed,
) -> RoomPlan {
    let mut plan = RoomPlan {
        needed,
        free,
        victims: Vec::new(),
        skipped: Vec::new(),
        too_small: None,
    };
    if free >= needed {
        return plan;
    }
    let mut t = tree.clone();
    // The chart's choices passed over since the last pare: once something is pared they are
    // considered again (a full may have lost its last incremental, a backup may no longer
    // share its blocks with anything left).
    let mut passed: Vec<BackupId> = Vec::new();
    let mut gone: Vec<BackupId> = Vec::new();
    let mut got = 0u64;
    while free.saturating_add(got) < needed {
        let skip: Vec<BackupId> = protect.iter().chain(&passed).copied().collect();
        let (id, reason) = match next_to_pare(&t, now, p, &skip) {
            Ok(x) => x,
            Err(why) => {
                plan.victims.clear();
                plan.too_small = Some(TooSmall {
                    needed,
                    free,
                    could_free: got,
                    why,
                });
                return plan;
            }
        };
        passed.push(id);
        let rec = t
            .get(id)
            .expect("the chart chooses backups in the tree")
            .clone();
        if rec.kind.is_full() && t.children(id).next().is_some() {
            plan.skipped.push((id, Skip::FullWithIncrementals));
            continue;
        }
        let f = freed.freed(&gone, id);
        if f == 0 {
            plan.skipped.push((id, Skip::FreesNothing));
            continue;
        }
        t.remove(id);
        gone.push(id);
        passed.clear();
        got = got.saturating_add(f);
        plan.victims.push(Victim {
            id,
            kind: rec.kind,
            started: rec.started,
            reason,
            freed: f,
        });
    }
    // What was passed over and stays, each once, with the last reason.
    let mut seen = Vec::new();
    plan.skipped.reverse();
    plan.skipped.retain(|(id, _)| {
        !gone.contains(id) && !seen.contains(id) && {
            seen.push(*id);
            true
        }
    });
    plan.skipped.reverse();
    plan
}

/// What making room for a due backup decides: the backup to make and the room plan for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomFor {
    pub kind: Kind,
    pub parent: Option<BackupId>,
    /// The incremental kind that was due, when a full is made instead.
    pub instead_of: Option<Kind>,
    pub plan: RoomPlan,
}

/// Plan room for the backup due (`kind`, on `parent`): the room plan with [`protected`] for
/// that parent. When an incremental cannot fit that way, a full is planned instead (it has no
/// parent to keep, so the incremental's parent may be pared, while the newest full still
/// stays), and made if that plan fits; otherwise the incremental's notice stands.
///
/// A full needs the same `needed` bytes as the incremental: blocks are shared, so it stores
/// only what is not on the medium already, as the incremental would.
#[allow(clippy::too_many_arguments)]
pub fn plan_backup(
    tree: &Tree,
    now: DateTime<Utc>,
    p: &Policy,
    kind: Kind,
    parent: Option<BackupId>,
    needed: u64,
    free: u64,
    freed: &dyn Freed,
) -> RoomFor {
    let due = plan_room(tree, now, p, &protected(tree, parent), needed, free, freed);
    if due.too_small.is_none() || kind.is_full() {
        return RoomFor {
            kind,
            parent,
            instead_of: None,
            plan: due,
        };
    }
    let full = plan_room(tree, now, p, &protected(tree, None), needed, free, freed);
    if full.too_small.is_none() {
        return RoomFor {
            kind: Kind::Monthly,
            parent: None,
            instead_of: Some(kind),
            plan: full,
        };
    }
    RoomFor {
        kind,
        parent,
        instead_of: None,
        plan: due,
    }
}

/// How a tree fails "the newest backup restores in full from this medium alone".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("no full backup on the medium")]
    NoFull,
    #[error("the chain of incremental backup {0} reaches no full backup")]
    NoFullInChain(BackupId),
}

/// The invariant of [0042]/[0050]: a non-empty tree holds a full, and every incremental's
/// parent chain reaches a full.
pub fn check_restorable(tree: &Tree) -> Result<(), Broken> {
    if tree.backups.is_empty() {
        return Ok(());
    }
    if !tree.backups.iter().any(|b| b.kind.is_full()) {
        return Err(Broken::NoFull);
    }
    // Parents are older than children (ids increase, `Tree::check`): one pass in id order
    // settles each backup from its parent's answer.
    let mut reaches: std::collections::HashMap<BackupId, bool> = std::collections::HashMap::new();
    for b in &tree.backups {
        let ok = b.kind.is_full()
            || b.parent
                .and_then(|p| reaches.get(&p).copied())
                .unwrap_or(false);
        reaches.insert(b.id, ok);
        if !ok {
            return Err(Broken::NoFullInChain(b.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build a tree from a compact description: one letter per backup, oldest first, a day
    /// apart (M monthly, W weekly, D daily, m micro); a trailing `?` marks it unverified.
    fn tree(spec: &str) -> Tree {
        let mut t = Tree::default();
        let base = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut prev: Option<BackupId> = None;
        let mut i = 0;
        let chars: Vec<char> = spec.chars().filter(|c| !c.is_whitespace()).collect();
        let mut j = 0;
        while j < chars.len() {
            let kind = match chars[j] {
                'M' => Kind::Monthly,
                'W' => Kind::Weekly,
                'D' => Kind::Daily,
                'm' => Kind::Micro,
                c => panic!("bad spec char {c}"),
            };
            let verified = chars.get(j + 1) != Some(&'?');
            if !verified {
                j += 1;
            }
            i += 1;
            let at = base + Duration::days(i);
            t.add(BackupRecord {
                id: BackupId(i as u64),
                kind,
                parent: if kind == Kind::Monthly { None } else { prev },
                started: at,
                finished: at,
                verified,
                partial: false,
                bytes_total: 0,
                bytes_new: 0,
                bytes_stored: 0,
            });
            prev = Some(BackupId(i as u64));
            j += 1;
        }
        t
    }

    fn now_after(t: &Tree, days: i64) -> DateTime<Utc> {
        t.backups.last().unwrap().started + Duration::days(days)
    }

    fn rep(c: char, n: usize) -> String {
        std::iter::repeat_n(c, n).collect()
    }

    #[test]
    fn every_step_of_the_flow_chart() {
        let p = Policy::default();
        // (tree, days after the newest backup, expected: id and reason)
        let many_dailies = format!("{}{}{}", rep('M', 20), rep('W', 24), rep('D', 36)); // 80, 36 dailies
        let many_weeklies = format!("{}{}{}", rep('M', 40), rep('W', 18), rep('D', 22)); // 80, 22 dailies
        let many_monthlies = format!("{}{}{}", rep('M', 60), rep('W', 10), rep('D', 10));
        type Case = (String, i64, Result<(u64, Reason), NothingToPare>);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("MDD?D".into(), 0, Ok((3, Reason::Unverified))),
            // recent micros are left alone by the chart; one monthly besides micros: step 118
            ("Mmmm".into(), 0, Ok((1, Reason::Step118SingleBackup))),
            ("MDm".into(), 8, Ok((3, Reason::Step100MicroTooOld))),
            (many_dailies.clone(), 0, Ok((45, Reason::Step108OldestDaily))),
            (many_weeklies.clone(), 0, Ok((41, Reason::Step112OldestWeekly))),
            (many_monthlies.clone(), 0, Ok((1, Reason::Step114OldestMonthly))),
            ("M".into(), 0, Ok((1, Reason::Step118SingleBackup))),
            // 2..7: M=0, W=1
            ("MWD".into(), 0, Ok((1, Reason::Step124OldestMonthly { m: 0 }))),
            ("WWD".into(), 0, Ok((1, Reason::Step128OldestWeekly { w: 1 }))),
            ("MDD".into(), 0, Ok((2, Reason::Step132OldestDaily))),
            // 8..14: M=1, W=2
            ("MMWWDDDD".into(), 0, Ok((1, Reason::Step124OldestMonthly { m: 1 }))),
            ("MWWWDDDD".into(), 0, Ok((2, Reason::Step128OldestWeekly { w: 2 }))),
            ("MWWDDDDD".into(), 0, Ok((4, Reason::Step132OldestDaily))),
            // 15..79: M = n/3 - 2, W = max(n/6, 3); n = 30: M = 8, W = 5
            (format!("{}{}{}", rep('M', 9), rep('W', 5), rep('D', 16)), 0, Ok((1, Reason::Step124OldestMonthly { m: 8 }))),
            (format!("{}{}{}", rep('M', 8), rep('W', 6), rep('D', 16)), 0, Ok((9, Reason::Step128OldestWeekly { w: 5 }))),
            (format!("{}{}{}", rep('M', 8), rep('W', 5), rep('D', 17)), 0, Ok((14, Reason::Step132OldestDaily))),
            // no dailies: the oldest monthly (136), then the oldest weekly (140)
            ("MMW".into(), 0, Ok((1, Reason::Step124OldestMonthly { m: 0 }))),
            ("MM".into(), 0, Ok((1, Reason::Step136OldestMonthly))),
            ("WW".into(), 0, Ok((1, Reason::Step140OldestWeekly))),
            // only recent micros: nothing the chart may pare
            ("mm".into(), 0, Err(NothingToPare::Step142)),
        ];
        for (spec, days, want) in cases {
            let t = tree(&spec);
            let got = next_to_pare(&t, now_after(&t, days), &p, &[]).map(|(id, r)| (id.0, r));
            assert_eq!(got, want, "tree {spec}");
        }
    }

    #[test]
    fn m_and_w_table() {
        #[rustfmt::skip]
        let cases = [(2, (0, 1)), (7, (0, 1)), (8, (1, 2)), (14, (1, 2)), (15, (3, 3)), (18, (4, 3)), (30, (8, 5)), (79, (24, 13))];
        for (n, mw) in cases {
            assert_eq!(m_and_w(n), mw, "n = {n}");
        }
    }

    #[test]
    fn a_protected_backup_is_never_chosen() {
        let t = tree("MDD");
        let (id, r) =
            next_to_pare(&t, now_after(&t, 0), &Policy::default(), &[BackupId(2)]).unwrap();
        assert_eq!((id.0, r), (3, Reason::Step132OldestDaily));
        assert_eq!(
            next_to_pare(
                &tree("M"),
                now_after(&t, 0),
                &Policy::default(),
                &[BackupId(1)]
            ),
            Err(NothingToPare::Step118OnlyOneFits)
        );
    }

    #[test]
    fn expired_micros_oldest_first_and_none_when_disabled() {
        let t = tree("Mmmm");
        let ids: Vec<u64> = expired(&t, now_after(&t, 7), &Policy::default(), &[])
            .iter()
            .map(|(id, _)| id.0)
            .collect();
        assert_eq!(ids, vec![2, 3]);
        let keep = Policy {
            micro_max_age: None,
            ..Policy::default()
        };
        assert!(expired(&t, now_after(&t, 100), &keep, &[]).is_empty());
        // Retention never takes the newest backup, however old: with no newer backup made,
        // it is the medium's latest state.
        let at = now_after(&t, 30);
        assert_eq!(expired(&t, at, &Policy::default(), &[]).len(), 3);
        let ids: Vec<u64> = retention(&t, at, &Policy::default())
            .iter()
            .map(|(id, _)| id.0)
            .collect();
        assert_eq!(ids, vec![2, 3]);
    }

    /// Each backup frees what this map says (0 when absent: all its blocks shared).
    struct Own(Vec<(u64, u64)>);
    impl Freed for Own {
        fn freed(&self, _: &[BackupId], id: BackupId) -> u64 {
            self.0.iter().find(|(i, _)| *i == id.0).map_or(0, |x| x.1)
        }
    }

    #[test]
    fn the_room_plan() {
        let p = Policy::default();
        type Outcome = Result<Vec<(u64, Reason)>, NothingToPare>;
        // (tree, what each frees, bytes wanted beyond the free ones, expected victims, skipped)
        type Case = (
            &'static str,
            Vec<(u64, u64)>,
            u64,
            Outcome,
            Vec<(u64, Skip)>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // Issue 10: the only monthly and micros sharing its blocks: nothing pared, step 118.
            ("Mmmm", vec![], 10, Err(NothingToPare::Step118OnlyOneFits), vec![]),
            ("Mmmm", vec![(1, 100)], 10, Err(NothingToPare::Step118OnlyOneFits), vec![]),
            // A daily that frees nothing is passed over; the next one is pared.
            ("MDDD", vec![(3, 7)], 5, Ok(vec![(3, Reason::Step132OldestDaily)]), vec![(2, Skip::FreesNothing)]),
            // Not enough in the whole sequence: nothing at all is pared.
            ("MDDD", vec![(2, 1), (3, 1)], 5, Err(NothingToPare::Step142), vec![]),
            // A full that incrementals build on is passed over, once they are gone it may go.
            ("MDMD", vec![(1, 50)], 5, Err(NothingToPare::Step142), vec![(2, Skip::FreesNothing), (1, Skip::FullWithIncrementals)]),
            ("MDMD", vec![(1, 50), (2, 1)], 5, Ok(vec![(2, Reason::Step132OldestDaily), (1, Reason::Step136OldestMonthly)]), vec![]),
            // Passed over while weekly 2 built on it, monthly 1 is taken once 2 is gone.
            ("MWMWD", vec![(1, 50), (2, 1), (4, 1)], 5, Ok(vec![(2, Reason::Step128OldestWeekly { w: 1 }), (1, Reason::Step124OldestMonthly { m: 0 })]), vec![]),
            // The newest backup and the newest full stay; so does the given parent.
            ("MWDD", vec![(2, 9), (3, 9), (4, 9)], 5, Ok(vec![(3, Reason::Step132OldestDaily)]), vec![]),
            ("MM", vec![(1, 9), (2, 9)], 5, Ok(vec![(1, Reason::Step136OldestMonthly)]), vec![]),
            // Enough free already: nothing.
            ("MDDD", vec![(2, 9)], 0, Ok(vec![]), vec![]),
        ];
        for (spec, own, want, expect, skipped) in cases {
            let t = tree(spec);
            let protect = protected(&t, None);
            let plan = plan_room(
                &t,
                now_after(&t, 0),
                &p,
                &protect,
                100 + want,
                100,
                &Own(own),
            );
            let got: Outcome = match &plan.too_small {
                Some(ts) => Err(ts.why),
                None => Ok(plan.victims.iter().map(|v| (v.id.0, v.reason)).collect()),
            };
            assert_eq!(got, expect, "tree {spec}");
            if plan.too_small.is_some() {
                assert!(
                    plan.victims.is_empty(),
                    "tree {spec}: pared though too small"
                );
            } else {
                assert!(plan.victims.iter().all(|v| v.freed > 0));
                assert!(plan.freed() >= want, "tree {spec}");
                let mut after = t.clone();
                for v in &plan.victims {
                    after.remove(v.id);
                }
                assert_eq!(check_restorable(&after), Ok(()), "tree {spec}");
            }
            if !skipped.is_empty() {
                let s: Vec<(u64, Skip)> = plan.skipped.iter().map(|(i, k)| (i.0, *k)).collect();
                assert_eq!(s, skipped, "tree {spec}");
            }
        }
    }

    #[test]
    fn a_full_instead_when_the_incremental_cannot_fit() {
        let p = Policy::default();
        let t = tree("MWWm");
        let at = now_after(&t, 0);
        // (what each frees, what is made, instead of, victims)
        type Case = (Vec<(u64, u64)>, Kind, Option<Kind>, Vec<u64>);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            // The older weekly frees enough: the daily is made on the newer one.
            (vec![(2, 50)], Kind::Daily, None, vec![2]),
            // Only the daily's parent would free anything: a full is made instead, which
            // needs no parent; the newest full and the newest backup stay.
            (vec![(3, 50)], Kind::Monthly, Some(Kind::Daily), vec![3]),
            // Neither fits: the daily's notice, nothing pared.
            (vec![(1, 50), (4, 50)], Kind::Daily, None, vec![]),
        ];
        for (own, kind, instead_of, victims) in cases {
            let r = plan_backup(
                &t,
                at,
                &p,
                Kind::Daily,
                Some(BackupId(3)),
                105,
                100,
                &Own(own.clone()),
            );
            assert_eq!((r.kind, r.instead_of), (kind, instead_of), "{own:?}");
            let got: Vec<u64> = r.plan.victims.iter().map(|v| v.id.0).collect();
            assert_eq!(got, victims, "{own:?}");
            assert_eq!(r.plan.too_small.is_some(), victims.is_empty(), "{own:?}");
            assert_eq!(r.parent, (kind == Kind::Daily).then_some(BackupId(3)));
            let mut after = t.clone();
            for v in &r.plan.victims {
                after.remove(v.id);
            }
            assert_eq!(check_restorable(&after), Ok(()), "{own:?}");
        }
        // A full that cannot fit is not retried as anything else.
        let r = plan_backup(&t, at, &p, Kind::Monthly, None, 105, 100, &Own(vec![]));
        assert_eq!((r.kind, r.instead_of), (Kind::Monthly, None));
        assert!(r.plan.too_small.is_some());
    }

    #[test]
    fn restorable_trees() {
        assert_eq!(check_restorable(&tree("")), Ok(()));
        assert_eq!(check_restorable(&tree("MDmW")), Ok(()));
        assert_eq!(check_restorable(&tree("mm")), Err(Broken::NoFull));
        let mut t = tree("MDmMD");
        t.remove(BackupId(1));
        assert_eq!(
            check_restorable(&t),
            Err(Broken::NoFullInChain(BackupId(2)))
        );
    }
}
