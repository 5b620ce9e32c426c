//! The restore kit beside `trayback/` on a tray: `README-RESTORE.txt`, what a person needs
//! to get the data back on a machine that never saw the medium, and `trayback-restore`, a copy
//! of the binary that wrote it (FORMAT.md "Directory tree").
//!
//! Invariants:
//! - written only on a medium that is a mount point (a tray; a directory medium lives on the
//!   host's own file system), by a writer of a proven medium, and the binary only if it takes
//!   at most a tenth of the file system;
//! - written under `trayback/tmp/`, fsync'd, renamed into `<mount>/` through the descriptors
//!   of the two directories (never through a path that could be a link): a name already there
//!   is replaced, never followed; anything but a regular file there is left alone;
//! - refreshed when the binary changes (the README records its SHA-256), never otherwise; a
//!   failure is a warning, never a failed backup: the kit is a convenience, not a record.

use super::{Beneath, MediaFile};
use crate::error::{Error, Result};
use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;
use tracing::{info, warn};

pub const README: &str = "README-RESTORE.txt";
pub const BINARY: &str = "trayback-restore";

const EXE: &str = "/proc/self/exe";

/// The running binary's length and SHA-256, read once (streamed: never held in memory).
fn this_binary() -> Option<&'static (u64, String)> {
    static SUM: OnceLock<Option<(u64, String)>> = OnceLock::new();
    SUM.get_or_init(|| {
        let mut f = std::fs::File::open(EXE).ok()?;
        let mut h = Sha256::new();
        let n = std::io::copy(&mut f, &mut h).ok()?;
        Some((n, hex::encode(h.finalize())))
    })
    .as_ref()
}

fn text(m: &MediaFile, sum: Option<&str>) -> String {
    let label: String = m.label.chars().take(64).collect();
    let encrypted = m.encryption.is_some();
    let binary = match sum {
        Some(_) => format!("./{BINARY}"),
        None => "trayback".into(),
    };
    let mut t = format!(
        "This disk is a trayback backup medium: {label:?}, medium {id}, of host {host:?}.\n\
         {enc}\n\
         To get files back on any Linux machine ({arch}), as root:\n\n\
         \x20 1. Mount this disk read-only:        mount -o ro,noload /dev/sdX1 /mnt && cd /mnt\n\
         \x20    (noload: a plain read-only mount of ext4 still replays its journal, a write;\n\
         \x20    XFS: -o ro,norecovery; btrfs: -o ro,rescue=nologreplay)\n\
         \x20 2. List its backups:                 {binary} list --medium /mnt\n\
         \x20 3. See what one holds:               {binary} ls -r --medium /mnt [BACKUP]\n\
         \x20 4. Restore it (or some paths of it): {binary} restore --medium /mnt --backup N --to /an/empty/dir [PATH…]\n\
         \x20 5. Check every backup:               {binary} verify --medium /mnt --all\n\n",
        id = m.media_id,
        arch = std::env::consts::ARCH,
        host = m.host.chars().take(64).collect::<String>(),
        enc = if encrypted {
            "Its backups are encrypted: each command asks for the recovery key (nine groups of four\n\
             characters, shown when the medium was enrolled) or the passphrase. Scripts give it with\n\
             --key-file PATH or --key-fd N.\n"
        } else {
            "Its backups are not encrypted.\n"
        },
    );
    t.push_str("None of these commands changes anything on the disk.\n");
    match sum {
        Some(s) => t.push_str(&format!(
            "{BINARY} is trayback {}; sha256 {s}\n",
            env!("CARGO_PKG_VERSION")
        )),
        None => t.push_str(&format!(
            "The trayback binary did not fit on this disk: get trayback {} or later.\n",
            env!("CARGO_PKG_VERSION")
        )),
    }
    t.push_str("The format of trayback/ is described in FORMAT.md of trayback's source.\n");
    t
}

fn io(root: &Path, name: &str, e: impl Into<std::io::Error>) -> Error {
    Error::Io {
        path: root.join(name),
        cause: e.into(),
    }
}

/// Whether `root` is a mount point (its device differs from its parent's).
fn is_mount_point(root: &Path) -> bool {
    let (Ok(a), Ok(b)) = (rustix::fs::stat(root), rustix::fs::stat(root.join(".."))) else {
        return false;
    };
    a.st_dev != b.st_dev || a.st_ino == b.st_ino
}

/// Write or refresh the kit of medium `m` at `root`; `Ok(false)` if it was up to date or this
/// is no tray.
pub fn refresh(root: &Path, dir: &Beneath, m: &MediaFile) -> Result<bool> {
    if !is_mount_point(root) {
        return Ok(false);
    }
    let rootfd = rustix::fs::open(root, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io(root, "", e))?;
    let exe = this_binary();
    let capacity = rustix::fs::fstatvfs(dir.fd())
        .map(|s| s.f_blocks.saturating_mul(s.f_frsize))
        .unwrap_or(0);
    let fits = exe.filter(|(len, _)| len.saturating_mul(10) <= capacity);
    let readme = text(m, fits.map(|(_, s)| s.as_str()));
    // Up to date only if the README is this one and the binary it names is this one: a
    // binary replaced while the tray was away is put back.
    let binary_ok = fits.is_none_or(|(_, sum)| sum_of(&rootfd, BINARY).as_deref() == Some(sum));
    if binary_ok && current(&rootfd, README).as_deref() == Some(readme.as_bytes()) {
        return Ok(false);
    }
    if fits.is_some() {
        let mut exe = std::fs::File::open(EXE).map_err(|e| io(Path::new(EXE), "", e))?;
        place(root, dir, &rootfd, BINARY, &mut exe, 0o700)?;
    }
    place(root, dir, &rootfd, README, &mut readme.as_bytes(), 0o644)?;
    info!(medium = %m.media_id, binary = fits.is_some(), "restore kit written");
    Ok(true)
}

/// The kit, as a writer refreshes it: a failure is logged, never fatal.
pub fn refresh_quietly(root: &Path, dir: &Beneath, m: &MediaFile) {
    if let Err(e) = refresh(root, dir, m) {
        warn!(medium = %m.media_id, cause = %e, "cannot write the restore kit");
    }
}

/// `<root>/name` opened for reading if it is a regular file (never following a link).
fn regular(rootfd: &impl std::os::fd::AsFd, name: &str) -> Option<std::fs::File> {
    let fd = rustix::fs::openat(
        rootfd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    (rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile)
        .then(|| std::fs::File::from(fd))
}

/// The SHA-256 of `<root>/name` if it is a regular file.
fn sum_of(rootfd: &impl std::os::fd::AsFd, name: &str) -> Option<String> {
    let mut h = Sha256::new();
    std::io::copy(&mut regular(rootfd, name)?, &mut h).ok()?;
    Some(hex::encode(h.finalize()))
}

/// The bytes of `<root>/name` if it is a small regular file.
fn current(rootfd: &impl std::os::fd::AsFd, name: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    regular(rootfd, name)?
        .take(64 << 10)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

fn place(
    root: &Path,
    dir: &Beneath,
    rootfd: &impl std::os::fd::AsFd,
    name: &str,
    src: &mut dyn Read,
    mode: u32,
) -> Result<()> {
    let tmp = format!("tmp/{name}.{}.tmp", uuid::Uuid::new_v4().simple());
    let written = (|| {
        let mut f = dir.create_new(&tmp)?;
        std::io::copy(src, &mut f).map_err(|e| dir.err(&tmp, e))?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode)).map_err(|e| dir.err(&tmp, e.into()))?;
        f.sync_all().map_err(|e| dir.err(&tmp, e))?;
        // Only a regular file (or nothing) is replaced.
        if let Ok(st) = rustix::fs::statat(rootfd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
            {
                return Err(Error::Refused(format!(
                    "{}: not a regular file; the restore kit leaves it alone",
                    root.join(name).display()
                )));
            }
        }
        rustix::fs::renameat(dir.fd(), tmp.as_str(), rootfd, name)
            .map_err(|e| io(root, name, e))?;
        rustix::fs::fsync(rootfd).map_err(|e| io(root, name, e))
    })();
    if written.is_err() {
        let _ = dir.remove_file(&tmp);
    }
    written
}
