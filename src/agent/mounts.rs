//! Mounting media under the run directory, checking a mount is still the device's before
//! writing, and powering a disk down after eject.

use super::devices::Disk;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use sys_mount::{FilesystemType, Mount, MountFlags, UnmountFlags};

/// Where a disk is mounted: `<run_dir>/<fs-uuid>`.
pub fn mountpoint(run_dir: &Path, disk: &Disk) -> PathBuf {
    let safe: String = disk
        .fs_uuid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    run_dir.join(safe)
}

/// Is the device mounted anywhere (by someone else, e.g. the system disk)?
pub fn mounted_anywhere(devnum: u64) -> bool {
    let (major, minor) = (rustix::fs::major(devnum), rustix::fs::minor(devnum));
    let want = format!("{major}:{minor}");
    fs::read_to_string("/proc/self/mountinfo")
        .map(|t| {
            t.lines()
                .any(|l| l.split(' ').nth(2) == Some(want.as_str()))
        })
        .unwrap_or(true)
}

/// Mount `disk` at `target`: read-only for identification (and without journal replay on
/// ext3/4, so a foreign disk is never written), or read-write for a medium we will write.
/// Always nosuid, nodev, noexec.
pub fn mount(disk: &Disk, target: &Path, writable: bool) -> io::Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(target)?;
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let mut data = "";
    if !writable {
        flags |= MountFlags::RDONLY;
        if matches!(disk.fs_type.as_str(), "ext3" | "ext4") {
            data = "noload";
        }
    }
    let m = Mount::builder()
        .fstype(FilesystemType::from(disk.fs_type.as_str()))
        .flags(flags)
        .data(data)
        .mount(&disk.devnode, target)?;
    std::mem::forget(m); // stays mounted until `unmount`
    Ok(())
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
    fs::metadata(target)
        .map(|m| m.dev() == devnum)
        .unwrap_or(false)
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
