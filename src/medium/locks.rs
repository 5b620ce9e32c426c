//! The medium's locks (FORMAT.md "Locking"): one writer at a time on `locks/lock`; readers
//! share `locks/readers`, which whatever deletes takes exclusively first.

use super::{Beneath, Medium};
use crate::error::{Error, Result};
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a writer waits for readers before it deletes.
#[derive(Clone, Copy)]
pub enum Wait<'a> {
    No,
    /// Up to this long, or until the flag is set.
    Up(Duration, &'a std::sync::atomic::AtomicBool),
}

/// Take the writer's lock: exclusive, never waiting.
pub(super) fn lock_writer(dir: &Beneath) -> Result<File> {
    let f = dir.open_lock("locks/lock")?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Locked(
            dir.shown("")
                .parent()
                .unwrap_or(Path::new("/"))
                .to_path_buf(),
        )),
        Err(e) => Err(dir.err("locks/lock", e.into())),
    }
}

/// Readers share it; whatever deletes takes it exclusively (see "Locking" in FORMAT.md).
pub(super) const READERS_LOCK: &str = "locks/readers";

/// A reader's shared lock on `locks/readers`: waits while a writer deletes. `None` on a medium
/// without the file (made before it existed, and mounted read-only).
pub(super) fn share_readers_lock(dir: &Beneath) -> Result<Option<File>> {
    let Some(f) = dir.open_lock_if_present(READERS_LOCK)? else {
        return Ok(None);
    };
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockShared)
        .map_err(|e| dir.err(READERS_LOCK, e.into()))?;
    Ok(Some(f))
}

impl Medium {
    /// Take `locks/readers` exclusively (no reader has the medium open), waiting as `wait`
    /// says; `None` if readers are still at work.
    pub(super) fn exclusive(&self, wait: Wait) -> Result<Option<File>> {
        let f = self.dir.open_lock(READERS_LOCK)?;
        let deadline = match wait {
            Wait::No => None,
            Wait::Up(d, _) => Some(Instant::now() + d),
        };
        loop {
            match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Some(f)),
                Err(rustix::io::Errno::WOULDBLOCK) => {}
                Err(e) => return Err(self.dir.err(READERS_LOCK, e.into())),
            }
            match (deadline, wait) {
                (Some(d), Wait::Up(_, cancel))
                    if Instant::now() < d && !cancel.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    std::thread::sleep(Duration::from_millis(200))
                }
                _ => return Ok(None),
            }
        }
    }
}
