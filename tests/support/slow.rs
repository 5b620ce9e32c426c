//! Holding a process's disk reads: a test that must see a job *while* it runs (a backup's
//! progress on a page polled once a second) makes the job provably last until it has seen
//! it, instead of hoping the machine is slow enough. The process is moved into a block I/O
//! cgroup whose reads from one disk are throttled to a trickle (cgroup v1
//! `blkio.throttle.read_bps_device`, or v2 `io.max`); a file the job must read is dropped
//! from the page cache first ([`uncached`]), so reading it goes to the disk. Nothing in the
//! product waits on the test: the reads still advance (slowly), and dropping the [`Slow`]
//! lifts the limit at once.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Write `data` to `p`, flush it to the disk and drop its pages from the page cache: the next
/// read of `p` reads the disk.
pub fn uncached(p: &Path, data: &[u8]) {
    use std::os::fd::AsRawFd;
    fs::write(p, data).unwrap();
    let f = fs::File::open(p).unwrap();
    f.sync_all().unwrap();
    // SAFETY: a plain system call on an open descriptor.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise({}): {r}", p.display());
}

/// The whole disk holding `p`, as "major:minor" (throttling works on disks, not partitions).
fn disk_of(p: &Path) -> String {
    let dev = fs::metadata(p).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if sys.join("partition").exists() {
        fs::read_to_string(sys.join("../dev"))
            .unwrap()
            .trim()
            .to_string()
    } else {
        format!("{major}:{minor}")
    }
}

/// A process's reads from a disk, throttled until this is dropped.
pub struct Slow {
    group: PathBuf,
    /// The cgroup the process is moved back to.
    home: PathBuf,
    limit_file: &'static str,
    off: String,
    pid: u32,
}

impl Slow {
    /// Throttle process `pid`'s reads from the disk holding `under` to `bps` bytes a second.
    /// Fails (never skips) where neither cgroup v1's blkio controller nor v2's io controller
    /// is available: the test needs it.
    pub fn reads(pid: u32, under: &Path, bps: u64) -> Slow {
        let disk = disk_of(under);
        let name = format!("trayback-test-slow-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/blkio/blkio.throttle.read_bps_device");
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let s = if v1.exists() {
            Slow {
                group: Path::new("/sys/fs/cgroup/blkio").join(&name),
                home: "/sys/fs/cgroup/blkio".into(),
                limit_file: "blkio.throttle.read_bps_device",
                off: format!("{disk} 0"),
                pid,
            }
        } else if fs::read_to_string(v2).is_ok_and(|c| c.split_whitespace().any(|c| c == "io")) {
            // Children of the root get the io controller only if the root hands it down.
            fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+io").unwrap();
            Slow {
                group: Path::new("/sys/fs/cgroup").join(&name),
                home: "/sys/fs/cgroup".into(),
                limit_file: "io.max",
                off: format!("{disk} rbps=max"),
                pid,
            }
        } else {
            panic!("this test needs a block I/O cgroup controller (v1 blkio or v2 io) to hold the agent's reads");
        };
        let on = match s.limit_file {
            "io.max" => format!("{disk} rbps={bps}"),
            _ => format!("{disk} {bps}"),
        };
        fs::create_dir_all(&s.group).unwrap();
        fs::write(s.group.join(s.limit_file), on).unwrap();
        fs::write(s.group.join("cgroup.procs"), pid.to_string()).unwrap();
        s
    }
}

impl Drop for Slow {
    fn drop(&mut self) {
        // The limit off first: reads queued under it go at once.
        let _ = fs::write(self.group.join(self.limit_file), &self.off);
        let _ = fs::write(self.home.join("cgroup.procs"), self.pid.to_string());
        for _ in 0..50 {
            if fs::remove_dir(&self.group).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
