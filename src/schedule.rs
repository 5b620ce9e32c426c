//! Which backup is due on a medium, and its parent (spec [0029]–[0033], Table 1).
//!
//! Pure: takes the medium's tree, the schedule and `now`; no I/O, no clock. Only verified
//! backups count, both as parents and as "the last backup of a kind" (spec [0040]), and only
//! the given medium's tree is consulted, so after a swap the decision comes from the inserted
//! disk alone (spec [0050]). A medium away for days gets one backup of the highest kind due,
//! not a burst of catch-ups: each decision is made afresh from the newest backups.
//!
//! Times come from the tree (years 1970 to 9999, `Tree::check`) and intervals from the
//! config (at most ten years, `config`); every addition is still checked ([`add_or_never`]) and
//! saturates at chrono's end of time ("never"), so no tree or config can make it panic.

use crate::ids::BackupId;
use crate::tree::{BackupRecord, Kind, Tree};
use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// When the monthly (full) backup comes round.
#[derive(Clone, Debug, PartialEq)]
pub enum Monthly {
    /// A notional month of this many days after the last monthly (spec Fig. 2: 28).
    EveryDays(u32),
    /// On this day of each calendar month (1–28) at this time (UTC).
    DayOfMonth { day: u32, at: NaiveTime },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub micro_interval: Duration,
    /// `None`: 24 hours after the last daily, weekly or monthly. `Some(t)`: at `t` (UTC) each day.
    pub daily_at: Option<NaiveTime>,
    pub weekly_every: Duration,
    pub monthly: Monthly,
}

impl Schedule {
    /// The span each incremental kind covers: the micro interval, a day, the weekly interval
    /// (what its change size is measured over: `simulate`, sizing from history).
    pub fn spans(&self) -> [(Kind, Duration); 3] {
        [
            (Kind::Micro, self.micro_interval),
            (Kind::Daily, Duration::days(1)),
            (Kind::Weekly, self.weekly_every),
        ]
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            micro_interval: Duration::minutes(15),
            daily_at: None,
            weekly_every: Duration::days(7),
            monthly: Monthly::EveryDays(28),
        }
    }
}

/// Why a kind is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// Asked for explicitly (`--kind`).
    Requested,
    /// The medium holds no verified monthly backup: its first use (spec [0050]).
    FirstUseOfMedium,
    /// A month has passed since the last monthly (spec [0030]).
    MonthlyInterval,
    /// Seven days have passed since the last weekly or monthly (spec [0030]).
    WeeklyInterval,
    /// A day has passed since the last daily, weekly or monthly (spec [0031]).
    DailyInterval,
    /// The micro interval has passed since the last backup of any kind (spec [0032]).
    MicroInterval,
}

/// A backup to make now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Due {
    pub kind: Kind,
    pub parent: Option<BackupId>,
    pub why: Why,
}

/// `t + d`, or the end of chrono's time (never) if that is out of range.
pub fn add_or_never(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn latest<'a>(tree: &'a Tree, kinds: &[Kind]) -> Option<&'a BackupRecord> {
    tree.backups
        .iter()
        .filter(|b| b.verified && kinds.contains(&b.kind))
        .max_by_key(|b| (b.started, b.id))
}

/// The first moment `at` (UTC) on some day that is strictly after `after`.
fn next_time_of_day(after: DateTime<Utc>, at: NaiveTime) -> DateTime<Utc> {
    let same_day = Utc.from_utc_datetime(&after.date_naive().and_time(at));
    if same_day > after {
        same_day
    } else {
        add_or_never(same_day, Duration::days(1))
    }
}

/// The first (day, time) of a calendar month strictly after `after`.
fn next_day_of_month(after: DateTime<Utc>, day: u32, at: NaiveTime) -> DateTime<Utc> {
    let (mut y, mut m) = (after.year(), after.month());
    // Day 1 to 28 exists in every month: one of the next 13 months has it after `after`.
    for _ in 0..13 {
        let candidate = chrono::NaiveDate::from_ymd_opt(y, m, day.clamp(1, 28))
            .map(|d| Utc.from_utc_datetime(&d.and_time(at)));
        if let Some(c) = candidate.filter(|c| *c > after) {
            return c;
        }
        if m == 12 {
            y = y.saturating_add(1);
            m = 1;
        } else {
            m += 1;
        }
    }
    DateTime::<Utc>::MAX_UTC
}

/// When each kind next falls due on this tree (`None` for monthly means "now": no monthly).
fn due_times(tree: &Tree, s: &Schedule) -> Option<[(Kind, DateTime<Utc>); 4]> {
    let monthly = latest(tree, &[Kind::Monthly])?;
    let monthly_due = match &s.monthly {
        Monthly::EveryDays(n) => add_or_never(monthly.started, Duration::days(*n as i64)),
        Monthly::DayOfMonth { day, at } => next_day_of_month(monthly.started, *day, *at),
    };
    let weekly_base = latest(tree, &[Kind::Monthly, Kind::Weekly]).unwrap();
    let daily_base = latest(tree, &[Kind::Monthly, Kind::Weekly, Kind::Daily]).unwrap();
    let daily_due = match s.daily_at {
        None => add_or_never(daily_base.started, Duration::days(1)),
        Some(t) => next_time_of_day(daily_base.started, t),
    };
    let any = latest(tree, &Kind::ALL).unwrap();
    Some([
        (Kind::Monthly, monthly_due),
        (
            Kind::Weekly,
            add_or_never(weekly_base.started, s.weekly_every),
        ),
        (Kind::Daily, daily_due),
        (Kind::Micro, add_or_never(any.started, s.micro_interval)),
    ])
}

/// The parent a backup of `kind` would have on this tree (spec [0030]–[0032]): weekly → the
/// latest monthly; daily → the latest weekly or monthly; micro → the latest of any kind.
/// `None` for a monthly, and when no verified backup of those kinds is on the medium (a
/// daily is never based on a micro).
pub fn parent_for(tree: &Tree, kind: Kind) -> Option<BackupId> {
    let kinds: &[Kind] = match kind {
        Kind::Monthly => return None,
        Kind::Weekly => &[Kind::Monthly],
        Kind::Daily => &[Kind::Monthly, Kind::Weekly],
        Kind::Micro => &Kind::ALL,
    };
    latest(tree, kinds).map(|b| b.id)
}

/// What is due on this medium at `now`, if anything: the highest kind whose time has come.
pub fn due(tree: &Tree, now: DateTime<Utc>, s: &Schedule) -> Option<Due> {
    let Some(times) = due_times(tree, s) else {
        return Some(Due {
            kind: Kind::Monthly,
            parent: None,
            why: Why::FirstUseOfMedium,
        });
    };
    let (kind, _) = times.into_iter().find(|(_, t)| *t <= now)?;
    let why = match kind {
        Kind::Monthly => Why::MonthlyInterval,
        Kind::Weekly => Why::WeeklyInterval,
        Kind::Daily => Why::DailyInterval,
        Kind::Micro => Why::MicroInterval,
    };
    Some(Due {
        kind,
        parent: parent_for(tree, kind),
        why,
    })
}

/// When the next backup falls due (for the agent's timer): `now` if one is due already.
pub fn next_due(tree: &Tree, now: DateTime<Utc>, s: &Schedule) -> DateTime<Utc> {
    match due_times(tree, s) {
        None => now,
        Some(times) => times.iter().map(|(_, t)| *t).min().unwrap().max(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn rec(id: u64, kind: Kind, parent: Option<u64>, at: &str, verified: bool) -> BackupRecord {
        BackupRecord {
            id: BackupId(id),
            kind,
            parent: parent.map(BackupId),
            started: t(at),
            finished: t(at),
            verified,
            partial: false,
            bytes_total: 0,
            bytes_new: 0,
            bytes_stored: 0,
        }
    }

    fn tree(recs: Vec<BackupRecord>) -> Tree {
        let mut tr = Tree::default();
        for r in recs {
            tr.add(r);
        }
        tr
    }

    #[test]
    fn decisions() {
        let s = Schedule::default();
        let m = || rec(1, Kind::Monthly, None, "2026-01-01T00:00:00Z", true);
        type Case<'a> = (Tree, &'a str, Option<(Kind, Option<u64>, Why)>);

        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (
                tree(vec![]),
                "2026-01-01T00:00:00Z",
                Some((Kind::Monthly, None, Why::FirstUseOfMedium)),
            ),
            (
                tree(vec![rec(
                    1,
                    Kind::Monthly,
                    None,
                    "2026-01-01T00:00:00Z",
                    false,
                )]),
                "2026-01-01T01:00:00Z",
                Some((Kind::Monthly, None, Why::FirstUseOfMedium)),
            ),
            (tree(vec![m()]), "2026-01-01T00:14:59Z", None),
            (
                tree(vec![m()]),
                "2026-01-01T00:15:00Z",
                Some((Kind::Micro, Some(1), Why::MicroInterval)),
            ),
            (
                tree(vec![m()]),
                "2026-01-02T00:00:00Z",
                Some((Kind::Daily, Some(1), Why::DailyInterval)),
            ),
            (
                tree(vec![m()]),
                "2026-01-08T00:00:00Z",
                Some((Kind::Weekly, Some(1), Why::WeeklyInterval)),
            ),
            (
                tree(vec![m()]),
                "2026-01-29T00:00:00Z",
                Some((Kind::Monthly, None, Why::MonthlyInterval)),
            ),
            // a medium away for two days gets one daily, parent on this medium
            (
                tree(vec![
                    m(),
                    rec(2, Kind::Micro, Some(1), "2026-01-01T00:15:00Z", true),
                ]),
                "2026-01-03T09:00:00Z",
                Some((Kind::Daily, Some(1), Why::DailyInterval)),
            ),
            // micro parent: the newest verified of any kind, never an unverified one
            (
                tree(vec![
                    m(),
                    rec(2, Kind::Micro, Some(1), "2026-01-01T00:15:00Z", true),
                    rec(3, Kind::Micro, Some(2), "2026-01-01T00:30:00Z", false),
                ]),
                "2026-01-01T00:45:00Z",
                Some((Kind::Micro, Some(2), Why::MicroInterval)),
            ),
            // daily parent: the newer of the latest weekly and monthly
            (
                tree(vec![
                    m(),
                    rec(2, Kind::Weekly, Some(1), "2026-01-08T00:00:00Z", true),
                    rec(3, Kind::Daily, Some(2), "2026-01-09T00:00:00Z", true),
                ]),
                "2026-01-10T00:00:00Z",
                Some((Kind::Daily, Some(2), Why::DailyInterval)),
            ),
        ];
        for (i, (tr, now, want)) in cases.into_iter().enumerate() {
            let got = due(&tr, t(now), &s).map(|d| (d.kind, d.parent.map(|p| p.0), d.why));
            assert_eq!(got, want, "case {i}");
        }
    }

    /// A far-future time (once a panic in `started + interval`) gives "never", not a panic.
    #[test]
    fn far_future_times_and_huge_intervals_do_not_overflow() {
        let far = DateTime::<Utc>::MAX_UTC - Duration::seconds(1);
        let s = Schedule {
            micro_interval: Duration::days(100_000),
            weekly_every: Duration::days(100_000),
            monthly: Monthly::EveryDays(u32::MAX),
            ..Schedule::default()
        };
        let mut r = rec(1, Kind::Monthly, None, "2026-01-01T00:00:00Z", true);
        r.started = far;
        let tr = tree(vec![r]);
        assert_eq!(due(&tr, far, &s), None);
        assert_eq!(next_due(&tr, far, &s), DateTime::<Utc>::MAX_UTC);
        let s = Schedule {
            daily_at: Some(NaiveTime::from_hms_opt(2, 0, 0).unwrap()),
            monthly: Monthly::DayOfMonth {
                day: 28,
                at: NaiveTime::from_hms_opt(3, 0, 0).unwrap(),
            },
            ..Schedule::default()
        };
        next_due(&tr, far, &s);
    }

    #[test]
    fn daily_at_a_time_of_day_and_calendar_months() {
        let s = Schedule {
            daily_at: Some(NaiveTime::from_hms_opt(2, 0, 0).unwrap()),
            monthly: Monthly::DayOfMonth {
                day: 1,
                at: NaiveTime::from_hms_opt(3, 0, 0).unwrap(),
            },
            ..Schedule::default()
        };
        let tr = tree(vec![rec(
            1,
            Kind::Monthly,
            None,
            "2026-01-01T03:00:00Z",
            true,
        )]);
        assert_eq!(
            due(&tr, t("2026-01-02T01:59:00Z"), &s).unwrap().kind,
            Kind::Micro
        );
        assert_eq!(
            due(&tr, t("2026-01-02T02:00:00Z"), &s).unwrap().kind,
            Kind::Daily
        );
        assert_eq!(
            due(&tr, t("2026-02-01T02:59:00Z"), &s).unwrap().kind,
            Kind::Weekly
        );
        assert_eq!(
            due(&tr, t("2026-02-01T03:00:00Z"), &s).unwrap().kind,
            Kind::Monthly
        );
        assert_eq!(
            next_due(&tr, t("2026-01-01T03:01:00Z"), &s),
            t("2026-01-01T03:15:00Z")
        );
    }
}
