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
        Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }

    /// Move the clock forward (test clocks only).
    pub fn advance(&self, by: Duration) -> Result<DateTime<Utc>, String> {
        if !self.adjustable {
            return Err(
                "the agent's clock is real time (start it with --test-clock to move it)".into(),
            );
        }
        let v = self
            .offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::SeqCst)
            + by.num_milliseconds();
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
