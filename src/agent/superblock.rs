//! What a file system's superblock (and, for XFS, its log) says without mounting it: its
//! UUID, and whether it needs a journal or log replay — read-only, from the device.
//!
//! - ext3/4: the `needs_recovery` feature flag (`EXT4_FEATURE_INCOMPAT_RECOVER`) in the
//!   superblock; the UUID at `s_uuid`.
//! - btrfs: a log tree to replay (`log_root` != 0 in the primary superblock at 64 KiB: fsync'd
//!   changes not yet in a committed transaction); the UUID is the `fsid`.
//! - XFS: the log is clean when its head is an unmount record and the tail has caught up with
//!   the head. Finding the head of the circular log (cycle numbers, torn writes, wrapped and
//!   extended record headers) is what the kernel's and xfsprogs' `xlog_find_tail` do; trayback
//!   asks xfsprogs' `xfs_logprint -t`, which prints that verdict (`state: <CLEAN>` or
//!   `<DIRTY>`), reading the device only, bounded in time and output. An external log, or no
//!   xfsprogs, and trayback cannot tell (`None`). The UUID is `sb_uuid`.
//!
//! Invariant: nothing here writes to a device; every read is of a fixed size at a fixed
//! offset, and a value read is believed only under the type's magic number.

use super::mounts::FsType;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// ext2/3/4 superblock: 1024 bytes at byte 1024.
const EXT_SB: u64 = 1024;
const EXT_MAGIC_AT: usize = 0x38;
const EXT_MAGIC: u16 = 0xEF53;
const EXT_INCOMPAT_AT: usize = 0x60;
const EXT_UUID_AT: usize = 0x68;
/// `EXT4_FEATURE_INCOMPAT_RECOVER`: the journal holds transactions not yet in place.
const EXT_INCOMPAT_RECOVER: u32 = 0x4;

/// btrfs primary superblock: 4 KiB at 64 KiB.
const BTRFS_SB: u64 = 64 << 10;
const BTRFS_FSID_AT: usize = 0x20;
const BTRFS_BYTENR_AT: usize = 0x30;
const BTRFS_MAGIC_AT: usize = 0x40;
const BTRFS_MAGIC: &[u8; 8] = b"_BHRfS_M";
const BTRFS_LOG_ROOT_AT: usize = 0x60;

/// XFS superblock: sector 0.
const XFS_MAGIC: &[u8; 4] = b"XFSB";
const XFS_UUID_AT: usize = 32;
const XFS_LOGSTART_AT: usize = 48;

/// How long `xfs_logprint` may take, and how much of its output is read, before trayback
/// gives up on telling.
const LOGPRINT_TIME: Duration = Duration::from_secs(10);
const LOGPRINT_OUTPUT: usize = 64 << 10;

fn read_at<const N: usize>(dev: &Path, offset: u64) -> Option<[u8; N]> {
    let f = File::open(dev).ok()?;
    let mut b = [0u8; N];
    f.read_exact_at(&mut b, offset).ok()?;
    Some(b)
}

fn u64_le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"))
}

/// Does the file system on `dev` need its journal or log replayed? `None` where trayback
/// cannot tell.
pub fn needs_recovery(dev: &Path, fs: FsType) -> Option<bool> {
    match fs {
        FsType::Ext2 => Some(false),
        FsType::Ext3 | FsType::Ext4 => ext_needs_recovery(&read_at::<1024>(dev, EXT_SB)?),
        FsType::Btrfs => btrfs_needs_recovery(&read_at::<4096>(dev, BTRFS_SB)?),
        FsType::Xfs => {
            let sb = read_at::<512>(dev, 0)?;
            // An external log (logstart 0) is on another device: not this tool's to read.
            if &sb[..4] != XFS_MAGIC
                || u64::from_be_bytes(sb[XFS_LOGSTART_AT..XFS_LOGSTART_AT + 8].try_into().ok()?)
                    == 0
            {
                return None;
            }
            xfs_log_dirty(dev)
        }
    }
}

fn ext_needs_recovery(sb: &[u8; 1024]) -> Option<bool> {
    if u16::from_le_bytes([sb[EXT_MAGIC_AT], sb[EXT_MAGIC_AT + 1]]) != EXT_MAGIC {
        return None;
    }
    let incompat = u32::from_le_bytes(
        sb[EXT_INCOMPAT_AT..EXT_INCOMPAT_AT + 4]
            .try_into()
            .expect("four bytes"),
    );
    Some(incompat & EXT_INCOMPAT_RECOVER != 0)
}

fn btrfs_needs_recovery(sb: &[u8; 4096]) -> Option<bool> {
    // The primary superblock names its own offset.
    if &sb[BTRFS_MAGIC_AT..BTRFS_MAGIC_AT + 8] != BTRFS_MAGIC
        || u64_le(sb, BTRFS_BYTENR_AT) != BTRFS_SB
    {
        return None;
    }
    Some(u64_le(sb, BTRFS_LOG_ROOT_AT) != 0)
}

/// `xfs_logprint -t` on `dev`: its verdict on the log, read from its header line
/// (`log tail: T head: H state: <CLEAN>`); the rest of its output is not waited for.
fn xfs_log_dirty(dev: &Path) -> Option<bool> {
    let mut child = Command::new("xfs_logprint")
        .arg("-t")
        .arg(dev)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut out = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        let verdict = loop {
            match out.read(&mut chunk) {
                Ok(0) | Err(_) => break logprint_verdict(&seen),
                Ok(n) => {
                    seen.extend_from_slice(&chunk[..n]);
                    if let Some(v) = logprint_verdict(&seen) {
                        break Some(v);
                    }
                    if seen.len() > LOGPRINT_OUTPUT {
                        break None;
                    }
                }
            }
        };
        let _ = tx.send(verdict);
    });
    let verdict = rx.recv_timeout(LOGPRINT_TIME).ok().flatten();
    let _ = child.kill();
    // Reaped apart: a child stuck in uninterruptible I/O on a failing disk outlives SIGKILL,
    // and identification must not wait for it.
    std::thread::spawn(move || child.wait());
    verdict
}

/// The log's state from `xfs_logprint -t`'s output so far.
fn logprint_verdict(out: &[u8]) -> Option<bool> {
    let text = String::from_utf8_lossy(out);
    let line = text
        .lines()
        .find(|l| l.contains("log tail:") && l.contains("state:"))?;
    if line.contains("state: <CLEAN>") {
        Some(false)
    } else if line.contains("state: <DIRTY>") {
        Some(true)
    } else {
        None
    }
}

/// The UUID of the file system of type `fs` on `dev`, as udev (blkid) spells it.
pub fn fs_uuid(dev: &Path, fs: FsType) -> Option<String> {
    let uuid: [u8; 16] = match fs {
        FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => {
            let sb = read_at::<1024>(dev, EXT_SB)?;
            ext_needs_recovery(&sb)?;
            sb[EXT_UUID_AT..EXT_UUID_AT + 16].try_into().ok()?
        }
        FsType::Btrfs => {
            let sb = read_at::<4096>(dev, BTRFS_SB)?;
            btrfs_needs_recovery(&sb)?;
            sb[BTRFS_FSID_AT..BTRFS_FSID_AT + 16].try_into().ok()?
        }
        FsType::Xfs => {
            let sb = read_at::<512>(dev, 0)?;
            if &sb[..4] != XFS_MAGIC {
                return None;
            }
            sb[XFS_UUID_AT..XFS_UUID_AT + 16].try_into().ok()?
        }
    };
    Some(uuid::Uuid::from_bytes(uuid).hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recover_flag_is_read_from_an_ext_superblock_only() {
        let mut sb = [0u8; 1024];
        assert_eq!(ext_needs_recovery(&sb), None);
        sb[EXT_MAGIC_AT..EXT_MAGIC_AT + 2].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        assert_eq!(ext_needs_recovery(&sb), Some(false));
        sb[EXT_INCOMPAT_AT] = 0x4 | 0x40; // recover, extents
        assert_eq!(ext_needs_recovery(&sb), Some(true));
    }

    #[test]
    fn a_btrfs_log_tree_is_read_from_the_primary_superblock_only() {
        let mut sb = [0u8; 4096];
        assert_eq!(btrfs_needs_recovery(&sb), None);
        sb[BTRFS_MAGIC_AT..BTRFS_MAGIC_AT + 8].copy_from_slice(BTRFS_MAGIC);
        // A copy (at 64 MiB) names another offset.
        sb[BTRFS_BYTENR_AT..BTRFS_BYTENR_AT + 8].copy_from_slice(&(64u64 << 20).to_le_bytes());
        assert_eq!(btrfs_needs_recovery(&sb), None);
        sb[BTRFS_BYTENR_AT..BTRFS_BYTENR_AT + 8].copy_from_slice(&BTRFS_SB.to_le_bytes());
        assert_eq!(btrfs_needs_recovery(&sb), Some(false));
        sb[BTRFS_LOG_ROOT_AT..BTRFS_LOG_ROOT_AT + 8].copy_from_slice(&30474240u64.to_le_bytes());
        assert_eq!(btrfs_needs_recovery(&sb), Some(true));
    }

    #[test]
    fn xfs_logprint_says_clean_or_dirty_in_its_header_line() {
        let clean = b"xfs_logprint:\n    data device: 0xffffffffffffffff\n    log device: 0xffffffffffffffff daddr: 327728 length: 131072\n\n    log tail: 2 head: 2 state: <CLEAN>\n";
        let dirty = b"xfs_logprint:\n    log tail: 2 head: 8 state: <DIRTY>\n\nLOG REC AT LSN cycle 1 block 2 (0x1, 0x2)\n";
        assert_eq!(logprint_verdict(clean), Some(false));
        assert_eq!(logprint_verdict(dirty), Some(true));
        assert_eq!(logprint_verdict(&clean[..60]), None);
        assert_eq!(
            logprint_verdict(b"log tail: 2 head: 2 state: <weird>\n"),
            None
        );
    }
}
