//! The agent's clock: real time, plus an offset that only `--test-clock` lets the control
//! socket move forward, so tests drive weeks of schedule in seconds. Sleepers wake when the
//! clock jumps.

use chrono::{DateTime, Duration, Utc};
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::watch;

pub struct Clock {
    offset_ms: AtomicI64,
    pub adjustable: bool,
    changed: watch::Sender<i64>,
}

impl Clock {
    pub fn new(adjustable: bool) -> Clock {
        Clock {
            offset_ms: AtomicI64::new(0),
            adjustable,
            changed: watch::channel(0).0,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let offset = Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst));
        // `advance` keeps the offset within a century, so this cannot overflow.
        Utc::now() + offset
    }

    /// Move the clock forward by `seconds` (test clocks only; at most a century in all).
    pub fn advance(&self, seconds: i64) -> Result<DateTime<Utc>, String> {
        const MAX_MS: i64 = 36_600 * 86_400 * 1000;
        if !self.adjustable {
            return Err(
                "the agent's clock is real time (start it with --test-clock to move it)".into(),
            );
        }
        let by = seconds
            .checked_mul(1000)
            .filter(|ms| (0..=MAX_MS).contains(ms))
            .ok_or("the clock moves forward by 0 to 36600 days")?;
        let v = self
            .offset_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                o.checked_add(by).filter(|v| *v <= MAX_MS)
            })
            .map_err(|_| "the test clock is a century ahead already".to_string())?
            + by;
        self.changed.send_replace(v);
        Ok(self.now())
    }

    /// Sleep until `t` on this clock; returns early (true) if the clock jumped.
    pub async fn sleep_until(&self, t: DateTime<Utc>) -> bool {
        let mut rx = self.changed.subscribe();
        let wait = (t - self.now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = rx.changed() => true,
        }
    }
}
