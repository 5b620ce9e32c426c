//! The agent's clock: the wall clock, made safe to schedule by.
//!
//! The wall clock (`CLOCK_REALTIME`) jumps: NTP steps, a dead RTC battery, `date -s`, a
//! resume from suspend. The agent's clock is the wall clock, except that it never runs
//! backwards: when the wall clock steps back, the agent counts on from where it was on
//! `CLOCK_BOOTTIME` (which also counts suspended time) until the wall clock catches up, and
//! remembers the step for `status`. So backups are dated in order, and a schedule made before
//! the step keeps its pace. A forward step is taken at once; one of more than a minute is
//! remembered for a day for `status` (what fell due in the skipped time was made at once,
//! one backup per kind, not one per interval skipped). A suspend is no step: the boot-time
//! clock counts it.
//!
//! Waiting for a deadline ([`Clock::sleep_until`]) never trusts one long sleep: it arms an
//! absolute `CLOCK_REALTIME` timerfd with `TFD_TIMER_CANCEL_ON_SET` (the kernel wakes it when
//! anyone sets the clock) and an absolute `CLOCK_BOOTTIME` timerfd (which fires on time after
//! a suspend), and returns when either fires or the clock was set; the caller re-evaluates
//! what is due. Should a timerfd be unavailable, it sleeps at most [`FALLBACK_STEP`] at a time.
//!
//! With `--test-clock`, the control socket moves the clock: `advance` moves both clocks (time
//! passing, or a suspend), `step` only the wall clock (as `date -s` does), either way.
//! Sleepers wake at once on either.

use chrono::{DateTime, Duration, Utc};
use rustix::time::{
    clock_gettime, timerfd_create, timerfd_settime, ClockId, Itimerspec, TimerfdClockId,
    TimerfdFlags, TimerfdTimerFlags, Timespec,
};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tracing::{info, warn};

/// A longest sleep without a look at the wall clock, when timerfds are not available.
const FALLBACK_STEP: std::time::Duration = std::time::Duration::from_secs(5);
/// A wall clock behind the agent's by more than this is a step back (less is rounding).
const STEP_BACK: i64 = 2;
/// A wall clock ahead of the agent's count by more than this is a step forward worth a
/// warning (NTP's corrections are far smaller).
const STEP_FORWARD: i64 = 60;
/// How long `status` mentions a step forward.
const FORWARD_SHOWN_DAYS: i64 = 1;
/// The test clock moves by at most a century in all.
const MAX_OFFSET_MS: i64 = 36_600 * 86_400 * 1000;

/// The wall clock stepped back: noticed at (agent time) `seen`, by `by`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backwards {
    pub seen: DateTime<Utc>,
    pub by: Duration,
}

/// The wall clock stepped forward: noticed at `seen` (wall time), by `by` more than the
/// boot-time clock counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwards {
    pub seen: DateTime<Utc>,
    pub by: Duration,
}

/// The agent's time `at` was read when `CLOCK_BOOTTIME` (plus the test offset) said `steady`.
#[derive(Clone, Copy, Debug)]
pub struct Floor {
    at: DateTime<Utc>,
    steady: Duration,
}

impl Floor {
    /// Where this floor has counted to by `steady`.
    fn counted(&self, steady: Duration) -> DateTime<Utc> {
        self.at
            .checked_add_signed(steady - self.steady)
            .unwrap_or(self.at)
    }
}

struct Ratchet {
    floor: Floor,
    back: Option<Backwards>,
    forward: Option<Forwards>,
}

/// Why [`Clock::sleep_until`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    Deadline,
    /// Someone set the wall clock (or moved the test clock): re-evaluate deadlines.
    ClockSet,
}

pub struct Clock {
    pub adjustable: bool,
    wall_offset_ms: AtomicI64,
    steady_offset_ms: AtomicI64,
    ratchet: Mutex<Ratchet>,
    changed: watch::Sender<u64>,
}

fn timespec_duration(t: Timespec) -> Duration {
    Duration::seconds(t.tv_sec) + Duration::nanoseconds(t.tv_nsec)
}

fn duration_timespec(d: Duration) -> Timespec {
    let d = d.max(Duration::nanoseconds(1));
    let secs = d.num_seconds();
    Timespec {
        tv_sec: secs,
        tv_nsec: (d - Duration::seconds(secs)).num_nanoseconds().unwrap_or(0),
    }
}

impl Clock {
    pub fn new(adjustable: bool) -> Clock {
        let c = Clock {
            adjustable,
            wall_offset_ms: AtomicI64::new(0),
            steady_offset_ms: AtomicI64::new(0),
            ratchet: Mutex::new(Ratchet {
                floor: Floor {
                    at: DateTime::<Utc>::MIN_UTC,
                    steady: Duration::zero(),
                },
                back: None,
                forward: None,
            }),
            changed: watch::channel(0).0,
        };
        let floor = Floor {
            at: c.wall(),
            steady: c.steady(),
        };
        c.ratchet.lock().unwrap_or_else(|e| e.into_inner()).floor = floor;
        c
    }

    /// The wall clock (plus the test offset).
    fn wall(&self) -> DateTime<Utc> {
        let offset = Duration::milliseconds(self.wall_offset_ms.load(Ordering::SeqCst));
        // The offsets stay within a century, so this cannot overflow.
        Utc::now() + offset
    }

    /// `CLOCK_BOOTTIME` (plus the test offset): time since boot, suspend included.
    fn steady(&self) -> Duration {
        timespec_duration(clock_gettime(ClockId::Boottime))
            + Duration::milliseconds(self.steady_offset_ms.load(Ordering::SeqCst))
    }

    /// The agent's time: the wall clock, but never earlier than a time it gave before.
    pub fn now(&self) -> DateTime<Utc> {
        let (wall, steady) = (self.wall(), self.steady());
        let mut r = self.ratchet.lock().unwrap_or_else(|e| e.into_inner());
        let counted = r.floor.counted(steady);
        if wall >= counted {
            let jump = wall - counted;
            if jump > Duration::seconds(STEP_FORWARD) {
                warn!(wall = %wall, agent = %counted, by_seconds = jump.num_seconds(), "the wall clock jumped forward; what fell due meanwhile is made now");
                r.forward = Some(Forwards {
                    seen: wall,
                    by: jump,
                });
            }
            if r.back.take().is_some() {
                info!(now = %wall, "the wall clock has caught up with the agent's clock");
            }
            r.floor = Floor { at: wall, steady };
            return wall;
        }
        if counted - wall <= Duration::seconds(STEP_BACK) {
            // Set right again (to the second, as `date -s` does): close enough to be caught
            // up, though the agent counts on from its own time for these last moments.
            if r.back.take().is_some() {
                info!(now = %wall, "the wall clock has caught up with the agent's clock");
            }
        } else {
            let by = counted - wall;
            // Logged once a step (the two clocks' reads differ by nanoseconds every time).
            if r.back
                .is_none_or(|b| (b.by - by).abs() > Duration::seconds(STEP_BACK))
            {
                warn!(wall = %wall, agent = %counted, by_seconds = by.num_seconds(), "the wall clock moved backwards; counting on from the agent's last time until it catches up");
                r.back = Some(Backwards { seen: counted, by });
            }
        }
        counted
    }

    /// A floor at `t`: [`Clock::now_not_before`] counts on from `t` from now on.
    pub fn floor(&self, t: DateTime<Utc>) -> Floor {
        Floor {
            at: t,
            steady: self.steady(),
        }
    }

    /// The agent's time, but not earlier than where `floor` has counted to (a medium whose
    /// newest backup is dated after the clock: its schedule goes on from that backup).
    pub fn now_not_before(&self, floor: &Floor) -> DateTime<Utc> {
        self.now().max(floor.counted(self.steady()))
    }

    /// The last step back of the wall clock, until it has caught up.
    pub fn backwards(&self) -> Option<Backwards> {
        self.now();
        self.ratchet.lock().unwrap_or_else(|e| e.into_inner()).back
    }

    /// The last step forward of the wall clock of more than a minute, for a day after it.
    pub fn forwards(&self) -> Option<Forwards> {
        let now = self.now();
        let r = self.ratchet.lock().unwrap_or_else(|e| e.into_inner());
        r.forward
            .filter(|f| now - f.seen < Duration::days(FORWARD_SHOWN_DAYS))
    }

    /// Move a test clock: `advance` moves the wall clock and the boot-time clock (time passing
    /// or a suspend; forward only), a `step` only the wall clock, either way.
    pub fn adjust(&self, seconds: i64, step: bool) -> Result<DateTime<Utc>, String> {
        if !self.adjustable {
            return Err(
                "the agent's clock is real time (start it with --test-clock to move it)".into(),
            );
        }
        let by = seconds
            .checked_mul(1000)
            .filter(|ms| ms.abs() <= MAX_OFFSET_MS && (step || *ms >= 0))
            .ok_or(if step {
                "the wall clock steps by at most 36600 days either way"
            } else {
                "the clock moves forward by 0 to 36600 days"
            })?;
        let bump = |a: &AtomicI64| {
            a.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                o.checked_add(by).filter(|v| v.abs() <= MAX_OFFSET_MS)
            })
            .map(|_| ())
            .map_err(|_| "the test clock is a century off already".to_string())
        };
        bump(&self.wall_offset_ms)?;
        if !step {
            if let Err(e) = bump(&self.steady_offset_ms) {
                self.wall_offset_ms.fetch_sub(by, Ordering::SeqCst);
                return Err(e);
            }
        }
        self.changed.send_modify(|v| *v += 1);
        Ok(self.now())
    }

    /// Sleep until the agent's time (counted on from `floor`, if given) reaches `t`, or the
    /// wall clock is set; the caller then decides afresh what is due.
    pub async fn sleep_until(&self, t: DateTime<Utc>, floor: Option<&Floor>) -> Wake {
        let mut rx = self.changed.subscribe();
        let now = match floor {
            Some(f) => self.now_not_before(f),
            None => self.now(),
        };
        // A day at most: a deadline far off (or never) is simply looked at again then.
        let t = t.min(now + Duration::days(1));
        let wait = t - now;
        if wait <= Duration::zero() {
            return Wake::Deadline;
        }
        // The wall clock's deadline (late, never early, while the agent counts on after a
        // step back), and the boot-time clock's (on time while the wall clock is behind).
        let wall_at = t - Duration::milliseconds(self.wall_offset_ms.load(Ordering::SeqCst));
        let wall_at = wall_at.signed_duration_since(DateTime::UNIX_EPOCH);
        let boot_at = timespec_duration(clock_gettime(ClockId::Boottime)) + wait;
        tokio::select! {
            w = timer(TimerfdClockId::Realtime, wall_at, wait) => w,
            w = timer(TimerfdClockId::Boottime, boot_at, wait) => w,
            _ = rx.changed() => Wake::ClockSet,
        }
    }
}

/// Wait for an absolute timerfd on `clock` at `at` (a `CLOCK_REALTIME` one is cancelled when
/// the clock is set); without timerfds, a bounded sleep towards `wait` from now.
async fn timer(clock: TimerfdClockId, at: Duration, wait: Duration) -> Wake {
    let fallback = || async {
        let step = wait.to_std().unwrap_or_default().min(FALLBACK_STEP);
        tokio::time::sleep(step).await;
        if wait.to_std().unwrap_or_default() > FALLBACK_STEP {
            Wake::ClockSet
        } else {
            Wake::Deadline
        }
    };
    let mut flags = TimerfdTimerFlags::ABSTIME;
    if clock == TimerfdClockId::Realtime {
        flags |= TimerfdTimerFlags::CANCEL_ON_SET;
    }
    let armed =
        timerfd_create(clock, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC).and_then(|fd| {
            let spec = Itimerspec {
                it_interval: duration_timespec(Duration::zero()),
                it_value: duration_timespec(at),
            };
            timerfd_settime(&fd, flags, &spec)?;
            Ok(fd)
        });
    let Ok(fd) = armed else {
        return fallback().await;
    };
    // SAFETY: the timerfd is owned by the `AsyncFd` for as long as it is registered, and
    // `as_raw_fd` of an `OwnedFd` always returns that same descriptor.
    let registered = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
    let Ok(fd) = registered else {
        return fallback().await;
    };
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return fallback().await;
        };
        let mut buf = [0u8; 8];
        match rustix::io::read(guard.get_inner(), &mut buf) {
            Ok(_) => return Wake::Deadline,
            Err(rustix::io::Errno::CANCELED) => {
                info!("the wall clock was set; re-evaluating deadlines");
                return Wake::ClockSet;
            }
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => guard.clear_ready(),
            Err(_) => return fallback().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_back_never_makes_the_clock_run_backwards_and_a_step_forward_is_taken() {
        let c = Clock::new(true);
        let t0 = c.now();
        c.adjust(-86_400, true).unwrap();
        let t1 = c.now();
        assert!(t1 >= t0, "{t1} < {t0}");
        assert!(t1 - t0 < Duration::seconds(5));
        let b = c.backwards().expect("the step back is remembered");
        assert!(b.by > Duration::hours(23), "{b:?}");
        // Time passing (or a suspend) moves the agent's clock on from where it was.
        c.adjust(3600, false).unwrap();
        let t2 = c.now();
        assert!(t2 - t1 >= Duration::minutes(59), "{t1} {t2}");
        assert_eq!(c.forwards(), None, "time passing is no step forward");
        // Stepping forward past the agent's time is taken at once, ends the warning, and is
        // remembered for a day.
        c.adjust(2 * 86_400, true).unwrap();
        let t3 = c.now();
        assert!(t3 - t2 > Duration::hours(23), "{t2} {t3}");
        assert_eq!(c.backwards(), None);
        let f = c.forwards().expect("the step forward is remembered");
        assert!(
            f.by > Duration::hours(23) && f.by < Duration::hours(25),
            "{f:?}"
        );
        c.adjust(86_400 + 60, false).unwrap();
        assert_eq!(c.forwards(), None, "shown for a day");
    }

    #[test]
    fn a_clock_set_right_to_the_second_has_caught_up() {
        let c = Clock::new(true);
        c.adjust(-86_400, true).unwrap();
        assert!(c.backwards().is_some());
        // Set right, but a second short (`date -s` keeps whole seconds): the two clocks then
        // run at the same pace and the wall clock never passes the agent's.
        c.adjust(86_399, true).unwrap();
        assert_eq!(c.backwards(), None);
        let t = c.now();
        assert!(c.now() >= t, "never backwards");
    }

    #[test]
    fn a_floor_keeps_a_medium_from_going_back_and_counts_on() {
        let c = Clock::new(true);
        let ahead = c.now() + Duration::days(1);
        let f = c.floor(ahead);
        assert!(c.now_not_before(&f) >= ahead);
        c.adjust(900, false).unwrap();
        assert!(c.now_not_before(&f) >= ahead + Duration::seconds(899));
    }

    #[test]
    fn only_a_test_clock_moves_and_advance_is_forward_only() {
        assert!(Clock::new(false).adjust(60, false).is_err());
        assert!(Clock::new(true).adjust(-60, false).is_err());
        assert!(Clock::new(true).adjust(i64::MAX, true).is_err());
    }

    #[tokio::test]
    async fn a_sleep_wakes_at_its_deadline_and_when_the_clock_is_moved() {
        let c = std::sync::Arc::new(Clock::new(true));
        let t = c.now() + Duration::milliseconds(200);
        let t0 = std::time::Instant::now();
        assert_eq!(c.sleep_until(t, None).await, Wake::Deadline);
        assert!(t0.elapsed() >= std::time::Duration::from_millis(150));
        // A day-long sleep ends when the clock is moved.
        let c2 = c.clone();
        let far = c.now() + Duration::days(1);
        let sleeper = tokio::spawn(async move { c2.sleep_until(far, None).await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        c.adjust(3600, true).unwrap();
        let woke = tokio::time::timeout(std::time::Duration::from_secs(5), sleeper)
            .await
            .expect("the sleeper woke")
            .unwrap();
        assert_eq!(woke, Wake::ClockSet);
    }
}
