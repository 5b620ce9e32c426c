//! Mounting media under the run directory, checking a mount is still the device's before
//! writing, and powering a disk down after eject.
//!
//! Invariant: the identification mount never writes to the disk. It is read-only and skips
//! every log or journal replay (ext3/4 `noload`, XFS `norecovery`, btrfs
//! `rescue=nologreplay`: the spelling of `nologreplay` that kernels since 5.9 take and
//! recent ones require), only the file system types the udev rule names are mounted at
//! all ([`FsType`]), and the block device itself is read-only while it is identified
//! ([`ReadOnlyDevice`]): a read-only mount alone still lets ext3/4 delete the inodes on its
//! orphan list, even with `noload`. Because the replay is skipped, what the read-write mount shows can
//! differ from what was identified: the agent re-reads the media ID file after it (see
//! `agent.rs`).

use super::devices::Disk;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use sys_mount::{FilesystemType, Mount, MountFlags, UnmountFlags};

/// The file system types trayback mounts: exactly those `udev-rules/90-trayback.rules`
/// names (`ext4|ext3|ext2|xfs|btrfs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsType {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
    Btrfs,
}

impl FsType {
    /// The type from udev's `ID_FS_TYPE`; `None` for a type trayback does not use.
    pub fn from_udev(s: &str) -> Option<FsType> {
        Some(match s {
            "ext2" => FsType::Ext2,
            "ext3" => FsType::Ext3,
            "ext4" => FsType::Ext4,
            "xfs" => FsType::Xfs,
            "btrfs" => FsType::Btrfs,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
        }
    }

    /// Mount data for the read-only identification mount: no journal or log replay.
    pub fn identify_options(self) -> &'static str {
        match self {
            FsType::Ext2 => "",
            FsType::Ext3 | FsType::Ext4 => "noload",
            FsType::Xfs => "norecovery",
            FsType::Btrfs => "rescue=nologreplay",
        }
    }
}

/// Where a disk is mounted: `<run_dir>/<fs-uuid>`.
pub fn mountpoint(run_dir: &Path, disk: &Disk) -> PathBuf {
    let safe: String = disk
        .fs_uuid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    run_dir.join(safe)
}

/// One line of `/proc/self/mountinfo`: the mount point, the device number the kernel
/// reports for the file system (`major:minor`), and the mount source.
struct MountLine {
    target: PathBuf,
    dev: String,
    fstype: String,
    source: String,
}

fn mount_lines() -> Option<Vec<MountLine>> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let sep = f.iter().position(|x| *x == "-")?;
                Some(MountLine {
                    target: PathBuf::from(unescape(f.get(4)?)),
                    dev: f.get(2)?.to_string(),
                    fstype: f.get(sep + 1)?.to_string(),
                    source: unescape(f.get(sep + 2)?),
                })
            })
            .collect(),
    )
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl MountLine {
    /// Is this a mount of the block device `devnum`? By the device number the kernel reports
    /// or, for file systems that report an anonymous one (btrfs), by the mount source.
    fn of(&self, devnum: u64) -> bool {
        let (major, minor) = (rustix::fs::major(devnum), rustix::fs::minor(devnum));
        self.dev == format!("{major}:{minor}")
            || (self.source.starts_with('/')
                && fs::metadata(&self.source)
                    .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == devnum))
    }
}

/// The block device and file system type mounted at `dir` (the topmost mount there), if
/// `dir` is a mount point of a block device.
pub fn mounted_at(dir: &Path) -> Option<(PathBuf, FsType)> {
    let dir = fs::canonicalize(dir).ok()?;
    let lines = mount_lines()?;
    let l = lines.iter().rev().find(|l| l.target == dir)?;
    let fs = FsType::from_udev(&l.fstype)?;
    let source = PathBuf::from(&l.source);
    fs::metadata(&source)
        .is_ok_and(|m| m.file_type().is_block_device())
        .then_some((source, fs))
}

/// Is the device mounted anywhere (by someone else, e.g. the system disk)?
pub fn mounted_anywhere(devnum: u64) -> bool {
    mount_lines().is_none_or(|lines| lines.iter().any(|l| l.of(devnum)))
}

/// Mount `disk` (of type `fs`) at `target`: read-only without any replay for
/// identification ([`FsType::identify_options`]), so a disk is never written before it is
/// proven ours, or read-write for a medium we will write. Always nosuid, nodev, noexec.
pub fn mount(disk: &Disk, fs: FsType, target: &Path, writable: bool) -> io::Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(target)?;
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let mut data = "";
    if !writable {
        flags |= MountFlags::RDONLY;
        data = fs.identify_options();
    }
    let m = Mount::builder()
        .fstype(FilesystemType::from(fs.name()))
        .flags(flags)
        .data(data)
        .mount(&disk.devnode, target)?;
    std::mem::forget(m); // stays mounted until `unmount`
    Ok(())
}

/// `BLKROGET` / `BLKROSET` (`_IO(0x12, 94)` / `_IO(0x12, 93)`): a block device's read-only
/// flag, an int.
type BlkRoGet = rustix::ioctl::NoneOpcode<0x12, 94, ()>;
type BlkRoSet = rustix::ioctl::NoneOpcode<0x12, 93, ()>;

/// A block device made read-only in the kernel (`blockdev --setro`) for as long as this
/// lives: no write reaches it, whatever a mount or a tool tries (ext3/4 clean up their orphan
/// list on a read-only mount unless the device is read-only). When dropped, the device is
/// made writable again, unless it was read-only before (a write-protected stick). An agent
/// killed while it holds one leaves the device read-only until it is plugged in again (its
/// read-write mount then fails, and says so).
pub struct ReadOnlyDevice {
    dev: fs::File,
    was_read_only: bool,
}

impl ReadOnlyDevice {
    /// Fails with `EBUSY` if anyone has the device mounted (or otherwise claimed): it is
    /// made read-only under an exclusive open, so never under someone's read-write mount.
    pub fn hold(devnode: &Path) -> io::Result<ReadOnlyDevice> {
        use std::os::unix::fs::OpenOptionsExt;
        // Opened read-only: closing it is no write (udev sends no change event).
        let dev = fs::File::open(devnode)?;
        if !dev.metadata()?.file_type().is_block_device() {
            return Err(io::Error::other(format!(
                "{} is not a block device",
                devnode.display()
            )));
        }
        // An exclusive open of a block device fails while it is mounted, and no mount claims
        // it while this is open; closed again before the identification mount claims it.
        let exclusive = fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
            .open(devnode)?;
        // SAFETY: BLKROGET writes an int, which `Getter` provides.
        let flag = unsafe {
            rustix::ioctl::ioctl(&exclusive, rustix::ioctl::Getter::<BlkRoGet, i32>::new())
        }?;
        let was_read_only = flag != 0;
        if !was_read_only {
            set_read_only(&exclusive, 1)?;
        }
        Ok(ReadOnlyDevice { dev, was_read_only })
    }
}

/// `BLKROSET` on an open block device.
fn set_read_only(dev: &fs::File, flag: i32) -> io::Result<()> {
    // SAFETY: BLKROSET reads an int through the pointer `Setter` passes.
    unsafe { rustix::ioctl::ioctl(dev, rustix::ioctl::Setter::<BlkRoSet, i32>::new(flag)) }?;
    Ok(())
}

impl Drop for ReadOnlyDevice {
    fn drop(&mut self) {
        if !self.was_read_only {
            if let Err(e) = set_read_only(&self.dev, 0) {
                tracing::warn!(cause = %e, "cannot make the device writable again after identifying it");
            }
        }
    }
}

/// Unmount (lazily when the device is gone) and remove the mount point.
pub fn unmount(target: &Path, lazy: bool) -> io::Result<()> {
    let flags = if lazy {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    match sys_mount::unmount(target, flags) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc_einval()) => {} // not mounted
        Err(e) => return Err(e),
    }
    let _ = fs::remove_dir(target);
    Ok(())
}

fn libc_einval() -> i32 {
    rustix::io::Errno::INVAL.raw_os_error()
}

/// Is `target` still the mount of the device `devnum`? Checked before every job, so nothing is
/// ever written into an empty mount directory on the root file system.
pub fn still_ours(target: &Path, devnum: u64) -> bool {
    let Ok(m) = fs::metadata(target) else {
        return false;
    };
    if m.dev() == devnum {
        return true;
    }
    // btrfs reports an anonymous device number: the mount at `target` must be there, of
    // this device.
    let Some(parent) = target.parent().and_then(|p| fs::metadata(p).ok()) else {
        return false;
    };
    let Ok(target) = fs::canonicalize(target) else {
        return false;
    };
    m.dev() != parent.dev()
        && mount_lines().is_some_and(|lines| {
            lines
                .iter()
                .rev()
                .find(|l| l.target == target)
                .is_some_and(|l| l.of(devnum))
        })
}

/// A file system with nothing on it but `lost+found`.
pub fn is_blank(root: &Path) -> bool {
    fs::read_dir(root)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .all(|e| e.file_name() == "lost+found")
        })
        .unwrap_or(false)
}

/// Power the disk down where the kernel allows it (SCSI/SATA/USB disks: delete the device).
/// Returns what was done.
pub fn power_down(disk: &Disk) -> String {
    // The partition's parent disk: /sys/class/block/sdb1/.. is sdb.
    let sys = if disk.syspath.join("partition").exists() {
        disk.syspath.parent().map(Path::to_path_buf)
    } else {
        Some(disk.syspath.clone())
    };
    let Some(sys) = sys else {
        return "no parent disk".into();
    };
    let delete = sys.join("device/delete");
    if delete.exists() {
        match fs::write(&delete, "1") {
            Ok(()) => format!(
                "powered down {}",
                sys.file_name().unwrap_or_default().to_string_lossy()
            ),
            Err(e) => format!("could not power down: {e}"),
        }
    } else {
        "this kind of device cannot be powered down".into()
    }
}

/// Flush everything to the devices.
pub fn sync() {
    rustix::fs::sync();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_udev_rules_types_and_never_a_replay_when_identifying() {
        let rule = include_str!("../../udev-rules/90-trayback.rules");
        let line = rule
            .lines()
            .find(|l| l.starts_with("ENV{ID_FS_TYPE}"))
            .unwrap();
        let named = line.split('"').nth(1).unwrap();
        for t in named.split('|') {
            assert_eq!(FsType::from_udev(t).map(FsType::name), Some(t), "{t}");
        }
        for t in ["vfat", "exfat", "ntfs", "iso9660", "", "EXT4"] {
            assert_eq!(FsType::from_udev(t), None, "{t}");
        }
        use FsType::*;
        for (t, opts) in [
            (Ext2, ""),
            (Ext3, "noload"),
            (Ext4, "noload"),
            (Xfs, "norecovery"),
            (Btrfs, "rescue=nologreplay"),
        ] {
            assert_eq!(t.identify_options(), opts, "{t:?}");
        }
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/run/a\\040b"), "/run/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\04"), "/end\\04");
    }
}
