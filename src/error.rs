//! Errors of the engine (medium, store, backup, verify, restore).
//!
//! Rules:
//! - Every variant that comes from a file carries the path (or backup/block id) involved, so
//!   that the one line a user sees says what is wrong *and where*.
//! - The library never prints; it returns these and logs with `tracing`. Only `main.rs`/`cli`
//!   turn them into a message and an exit code.
//! - An error leaves the medium as it was: callers return before any commit point.
//! - Bytes read from a disk that is not proven to be ours are never quoted beyond its media id
//!   and (cut, escaped) label: [`Error::Foreign`].

use crate::ids::{BackupId, BlockId};
use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Named `cause`, not `source`: the message already includes it, and a `source` would be
    // printed twice by `{:#}`.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error("{}: no such directory (is the medium mounted?)", .0.display())]
    MediumMissing(PathBuf),
    #[error("{}: not a trayback medium (no trayback/media.yaml); enrol it with `trayback media init`", .0.display())]
    NotEnrolled(PathBuf),
    /// `--force` is suggested only for a medium known to hold no backups.
    #[error("{}: already enrolled as medium {id} ({label:?}){}", path.display(), enrolled_advice(*.backups))]
    AlreadyEnrolled {
        path: PathBuf,
        id: String,
        label: String,
        /// How many backups its tree lists (`None`: the tree cannot be read).
        backups: Option<usize>,
    },
    /// The writer lock is held. A command that meets this on a medium the agent holds goes
    /// through the agent instead (`cli::held`); users see it only when no agent holds it.
    #[error("{}: medium is in use by another trayback process (lock held); try again when it is done", .0.display())]
    Locked(PathBuf),
    /// Making room needs garbage collection, and readers kept the medium past the wait.
    #[error("{}: another trayback process is reading the medium; its space is reclaimed once that ends", .0.display())]
    ReadersBusy(PathBuf),
    #[error("{}: damaged medium: {detail}", path.display())]
    Damaged { path: PathBuf, detail: String },
    #[error("{}: format version {found} is not supported (this trayback reads {})", path.display(), versions(supported))]
    Version {
        path: PathBuf,
        found: u32,
        supported: std::ops::RangeInclusive<u32>,
    },
    #[error("backup {0} is not on this medium")]
    NoSuchBackup(BackupId),
    #[error("block {0} is missing from the medium")]
    MissingBlock(BlockId),
    #[error("block {id} is damaged: {detail}")]
    BadBlock { id: BlockId, detail: String },
    #[error("{0}")]
    Refused(String),
    /// A medium not proven to be this host's (`medium::prove`): never written.
    #[error("{}: {reason}", path.display())]
    Foreign {
        path: PathBuf,
        reason: crate::medium::ForeignReason,
    },
    /// An encrypted medium this host holds no key for, and no recovery key or passphrase given.
    #[error("{}: medium {media_id} is encrypted and this host holds no key for it; give its recovery key or passphrase (at the prompt, --key-file PATH or --key-fd N)", path.display())]
    NeedKey {
        path: PathBuf,
        media_id: crate::ids::MediaId,
    },
    /// The recovery key or passphrase given does not open the medium.
    #[error("{}: medium {media_id}: {detail}", path.display())]
    WrongKey {
        path: PathBuf,
        media_id: crate::ids::MediaId,
        detail: String,
    },
    #[error("{}: replaced by something else while restoring; restore stopped", path.display())]
    Replaced { path: PathBuf },
    #[error("restore refused: backup entry {path:?} {reason}")]
    Hostile { path: String, reason: String },
}

impl Error {
    /// The medium (or file system) is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::Io { cause, .. }
            if cause.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()))
    }

    /// The medium reports I/O errors (`EIO`), or the kernel made its file system read-only
    /// after an error (`EROFS` on a medium opened for writing): check or replace the disk.
    pub fn is_medium_failing(&self) -> bool {
        matches!(self, Error::Io { cause, .. }
        if cause.raw_os_error().is_some_and(|e| {
            e == rustix::io::Errno::IO.raw_os_error() || e == rustix::io::Errno::ROFS.raw_os_error()
        }))
    }

    /// As [`Error::is_medium_failing`], for an error about a file below `root` (the
    /// medium's mount): an I/O error on a source or in the host's state directory is not the
    /// medium's.
    pub fn is_medium_failing_below(&self, root: &std::path::Path) -> bool {
        self.is_medium_failing() && matches!(self, Error::Io { path, .. } if path.starts_with(root))
    }

    /// The medium (or file) is on a read-only file system.
    pub fn is_read_only(&self) -> bool {
        matches!(self, Error::Io { cause, .. }
            if cause.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()))
    }
}

/// What to do about an enrolled medium one tried to enrol again: never a suggestion to wipe
/// a medium that holds (or may hold) backups.
fn enrolled_advice(backups: Option<usize>) -> String {
    match backups {
        Some(0) => "; it holds no backups: use --force to wipe it and enrol it anew".into(),
        Some(n) => format!(
            " and holds {n} backup(s); not enrolling it anew. Use it as it is (a host that lost its key: `trayback media adopt`)"
        ),
        None => "; its tree.yaml cannot be read, so it may hold backups; not enrolling it anew (see `trayback repair --tree`)".into(),
    }
}

/// Attach a path to an `io::Error`.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|cause| Error::Io {
            path: path.into(),
            cause,
        })
    }
}

/// "version 3", or "versions 1 to 3": the formats a reader takes, for [`Error::Version`].
fn versions(r: &std::ops::RangeInclusive<u32>) -> String {
    if r.start() == r.end() {
        format!("version {}", r.start())
    } else {
        format!("versions {} to {}", r.start(), r.end())
    }
}
