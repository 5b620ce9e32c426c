//! Making a medium's metadata durable in place.
//!
//! A commit (`fsync` of the file and its directory) makes it durable in the file system's
//! journal; until the journal is checkpointed, the blocks in place still hold the old
//! metadata. A tray pulled then holds its newest backups only in its journal, and the
//! identification mount (which replays nothing, `mounts::FsType::identify_options`) would
//! see an older or blank medium. So after enrolment and after every job the agent
//! checkpoints the journal ([`checkpoint`]), and identification asks the superblock whether
//! a journal replay is pending (`superblock::needs_recovery`).
//!
//! Invariant: a file system is frozen only for the moment a checkpoint takes, by the one
//! call that thaws it again, whatever happens in between (a guard thaws on every path).

use super::mounts::FsType;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `EXT4_IOC_CHECKPOINT` (Linux 5.13): flush the journal and write its blocks in place.
type Ext4Checkpoint = rustix::ioctl::WriteOpcode<b'f', 43, u32>;
/// `FIFREEZE` / `FITHAW`: a frozen file system has its log flushed and its metadata in place.
type FiFreeze = rustix::ioctl::ReadWriteOpcode<b'X', 119, i32>;
type FiThaw = rustix::ioctl::ReadWriteOpcode<b'X', 120, i32>;

/// Checkpoint the file system mounted at `mp`: its metadata in place, not only in its
/// journal. ext3/4 use `EXT4_IOC_CHECKPOINT`; other types (and an ext4 whose kernel lacks
/// it) a freeze followed at once by a thaw. ext2 has no journal: a sync is enough.
/// Nothing is done unless the directory opened at `mp` is on device `devnum` (a medium
/// pulled meanwhile leaves an empty mount point on another file system).
pub fn checkpoint(mp: &Path, devnum: u64, fs: FsType) -> io::Result<()> {
    let dir = File::open(mp)?;
    // The directory opened is the root of the mount that is still the device's (btrfs
    // reports an anonymous device number for its files, so mountinfo decides).
    let opened = dir.metadata()?.dev();
    if !super::mounts::still_ours(mp, devnum) || std::fs::metadata(mp)?.dev() != opened {
        return Err(io::Error::other(format!(
            "{} is no longer the medium's mount",
            mp.display()
        )));
    }
    rustix::fs::syncfs(&dir)?;
    match fs {
        FsType::Ext2 => return Ok(()),
        FsType::Ext3 | FsType::Ext4 => {
            // SAFETY: EXT4_IOC_CHECKPOINT takes a pointer to a u32 of flags, which `Setter`
            // passes; 0 asks for a plain checkpoint.
            let r = unsafe {
                rustix::ioctl::ioctl(&dir, rustix::ioctl::Setter::<Ext4Checkpoint, u32>::new(0))
            };
            match r {
                Ok(()) => return Ok(()),
                Err(rustix::io::Errno::NOTTY | rustix::io::Errno::OPNOTSUPP) => {}
                Err(e) => return Err(e.into()),
            }
        }
        FsType::Xfs | FsType::Btrfs => {}
    }
    freeze_and_thaw(&dir)
}

/// [`checkpoint`] after a job, for a file system of udev type `fs_type`: a failure is
/// logged (the commit stands; only an early pull could then show an older medium).
pub fn checkpoint_or_warn(mp: &Path, devnum: u64, fs_type: &str) {
    if let Some(fs) = FsType::from_udev(fs_type) {
        if let Err(e) = checkpoint(mp, devnum, fs) {
            tracing::warn!(mountpoint = %mp.display(), cause = %e, "cannot checkpoint the file system's journal");
        }
    }
}

fn freeze_and_thaw(dir: &File) -> io::Result<()> {
    struct Thaw<'a>(&'a File);
    impl Drop for Thaw<'_> {
        fn drop(&mut self) {
            let mut arg = 0i32;
            // SAFETY: FITHAW takes (and ignores) a pointer to an int, which `Updater` passes.
            let _ = unsafe {
                rustix::ioctl::ioctl(self.0, rustix::ioctl::Updater::<FiThaw, i32>::new(&mut arg))
            };
        }
    }
    let mut arg = 0i32;
    // SAFETY: FIFREEZE takes (and ignores) a pointer to an int, which `Updater` passes.
    unsafe {
        rustix::ioctl::ioctl(dir, rustix::ioctl::Updater::<FiFreeze, i32>::new(&mut arg))?;
    }
    drop(Thaw(dir));
    Ok(())
}
