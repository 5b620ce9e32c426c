//! The one restore destination: every write of a restore goes through here, relative to a
//! directory descriptor.
//!
//! Invariants:
//! - the target is opened once (`--to DIR`: DIR, whose last component must not be a symlink;
//!   `--in-place`: `/`); every directory below it is reached one component at a time with
//!   `openat(O_DIRECTORY | O_NOFOLLOW)` from a descriptor we hold, so a symlink (or anything
//!   else) swapped in by a user while we restore can never redirect a write: every create,
//!   rename, unlink, chown, chmod, utimens and xattr names an entry of a directory we hold
//!   open, or is made on a descriptor of the entry itself;
//! - a directory we create is checked after opening to be ours (its owner), and every
//!   directory we open is recorded by (device, inode): reopened later, it must be the same
//!   one, else the restore stops;
//! - descriptors are bounded: directories are reached through a `restore::cursor::Cursor`,
//!   which holds only a few open, so any depth restores within the default limit of 1024
//!   open files;
//! - without `overwrite`, nothing that exists is replaced if it is newer than the backed-up
//!   entry or of another kind ([`KeptReason`]).

use super::plan::Plan;
use super::{KeptReason, OnDisk};
use crate::error::{Error, IoContext, Result};
use crate::listing::{Entry, EntryKind};
use crate::medium::Medium;
use crate::progress::Meter;
use crate::store::MAX_BLOCK;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps, CWD};
use rustix::io::Errno;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Which directory: one of the plan's items, or the target itself.
pub type DirRef = Option<usize>;

/// What identifies a directory we opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ident {
    dev: u64,
    ino: u64,
}

impl Ident {
    pub fn of(st: &Stat) -> Ident {
        Ident {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// The target, opened once.
pub struct Dest {
    pub(super) root: Arc<OwnedFd>,
    /// For messages only: where the target is.
    base: PathBuf,
    euid: u32,
    is_root: bool,
}

pub(super) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Dest {
    /// Open the target `base` (created with mode 0700 if missing, so that nobody else can
    /// reach into it while we restore); `in_place` opens `/`.
    pub fn open(base: &Path, in_place: bool) -> Result<Dest> {
        let root = if in_place {
            rustix::fs::open("/", DIR_FLAGS, Mode::empty())
                .map_err(io::Error::from)
                .at(base)?
        } else {
            // The path above the last component is the caller's to choose (symlinks there are
            // followed); the last component is created or opened without following.
            let parent = match base.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ if base.is_absolute() => Path::new("/"),
                _ => Path::new("."),
            };
            let Some(name) = base.file_name() else {
                return Err(Error::Refused(format!(
                    "{}: restore target must name a directory",
                    base.display()
                )));
            };
            std::fs::create_dir_all(parent).at(parent)?;
            let pfd = rustix::fs::open(
                parent,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io::Error::from)
            .at(parent)?;
            match rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(io::Error::from(e)).at(base),
            }
            rustix::fs::openat(&pfd, name, DIR_FLAGS, Mode::empty()).map_err(|e| {
                if matches!(e, Errno::LOOP | Errno::NOTDIR) {
                    Error::Refused(format!(
                        "{}: restore target is not a directory (or is a symlink; give the real directory)",
                        base.display()
                    ))
                } else {
                    Error::Io {
                        path: base.to_path_buf(),
                        cause: e.into(),
                    }
                }
            })?
        };
        Ok(Dest {
            root: Arc::new(root),
            base: base.to_path_buf(),
            euid: rustix::process::geteuid().as_raw(),
            is_root: rustix::process::geteuid().is_root(),
        })
    }

    /// The full path of item `i` (for messages).
    pub fn path(&self, plan: &Plan, i: usize) -> PathBuf {
        self.base.join(plan.rel(i))
    }

    /// The full path of `name` in directory item `d` (`None`: the top), for messages.
    pub fn path_in(&self, plan: &Plan, d: Option<usize>, name: &[u8]) -> PathBuf {
        let dir = d.map_or_else(|| self.base.clone(), |d| self.path(plan, d));
        dir.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name))
    }
}

pub(super) fn open_dir(at: &OwnedFd, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(at, name, DIR_FLAGS, Mode::empty())
}

pub(super) fn replaced(path: &Path) -> Error {
    Error::Replaced {
        path: path.to_path_buf(),
    }
}

fn on_disk(st: &Stat) -> OnDisk {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => OnDisk::File,
        FileType::Directory => OnDisk::Dir,
        FileType::Symlink => OnDisk::Symlink,
        FileType::Fifo => OnDisk::Fifo,
        FileType::CharacterDevice => OnDisk::Char,
        FileType::BlockDevice => OnDisk::Block,
        FileType::Socket => OnDisk::Socket,
        FileType::Unknown => OnDisk::Unknown,
    }
}

/// What is at a name where we are to put an entry.
enum Way {
    Nothing,
    /// Something we may replace by renaming over it.
    Replace,
    /// A directory we may replace (removed first).
    ReplaceDir,
    Keep(KeptReason),
}

fn in_the_way(dir: &OwnedFd, e: &Entry, overwrite: bool) -> io::Result<Way> {
    let st = match rustix::fs::statat(dir, &e.name.0[..], AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => return Ok(Way::Nothing),
        Err(err) => return Err(err.into()),
        Ok(st) => st,
    };
    let found = on_disk(&st);
    let is_dir = found == OnDisk::Dir;
    Ok(if overwrite {
        if is_dir {
            Way::ReplaceDir
        } else {
            Way::Replace
        }
    } else if !found.is(e.kind) {
        Way::Keep(KeptReason::OtherKind {
            found,
            backup: e.kind,
        })
    } else if crate::scan::time_ns(st.st_mtime as i64, st.st_mtime_nsec as i64) > e.mtime_ns {
        Way::Keep(KeptReason::Newer { kind: e.kind })
    } else {
        Way::Replace
    })
}

/// What became of a directory of the plan.
pub enum DirMade {
    Open(OwnedFd, Ident),
    Kept(KeptReason),
}

/// Find or create directory `e` in `parent` and open it (never through a symlink).
pub fn make_dir(
    dest: &Dest,
    parent: &OwnedFd,
    e: &Entry,
    overwrite: bool,
    path: &dyn Fn() -> PathBuf,
) -> Result<DirMade> {
    let name = &e.name.0[..];
    let mut created = false;
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if on_disk(&st) == OnDisk::Dir => {}
        Ok(st) if !overwrite => {
            return Ok(DirMade::Kept(KeptReason::OtherKind {
                found: on_disk(&st),
                backup: EntryKind::Dir,
            }))
        }
        Ok(_) => {
            rustix::fs::unlinkat(parent, name, AtFlags::empty())
                .map_err(io::Error::from)
                .at(path())?;
            created = true;
        }
        Err(Errno::NOENT) => created = true,
        Err(err) => return Err(io::Error::from(err)).at(path()),
    }
    if created {
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
            .map_err(io::Error::from)
            .at(path())?;
    }
    let fd = match open_dir(parent, name) {
        Ok(fd) => fd,
        Err(Errno::LOOP | Errno::NOTDIR | Errno::NOENT) => return Err(replaced(&path())),
        Err(err) => return Err(io::Error::from(err)).at(path()),
    };
    let st = rustix::fs::fstat(&fd).map_err(io::Error::from).at(path())?;
    // Ours, not one a user put there between the mkdir and the open. (The mode is not
    // checked: file systems without Unix permissions show a fixed one.)
    if created && st.st_uid != dest.euid {
        return Err(replaced(&path()));
    }
    Ok(DirMade::Open(fd, Ident::of(&st)))
}

/// What became of a non-directory entry.
pub enum Put {
    /// Written; for files, the identity of the new inode (for further hard-link names).
    Written(Ident),
    Kept(KeptReason),
}

/// Shared state of the writers.
pub struct Ctx<'a> {
    pub m: &'a Medium,
    pub dest: &'a Dest,
    pub overwrite: bool,
    pub meter: &'a Meter,
    pub problems: &'a Mutex<Vec<String>>,
}

impl Ctx<'_> {
    /// Put entry `e` (not a directory) into `dir`, unless something is in the way that must
    /// be kept. `link` is a hard link's source: (its directory, its name, its inode).
    pub fn put(
        &self,
        dir: &OwnedFd,
        e: &Entry,
        link: Option<(&OwnedFd, &[u8], Ident)>,
        path: &dyn Fn() -> PathBuf,
    ) -> Result<Put> {
        let name = &e.name.0[..];
        // A name that appears between the look and the create is looked at again.
        for _ in 0..3 {
            let way = in_the_way(dir, e, self.overwrite).at(path())?;
            // Straight under the final name only when nothing is there (created exclusively).
            let fresh = matches!(way, Way::Nothing) && link.is_none();
            let tmp;
            let at: &[u8] = match way {
                Way::Keep(why) => return Ok(Put::Kept(why)),
                Way::Nothing if link.is_none() => name,
                _ => {
                    tmp = format!(".trayback-restore.{}", uuid::Uuid::new_v4().simple());
                    tmp.as_bytes()
                }
            };
            let made = match link {
                Some(from) => self.link(from, dir, at, path),
                None => self.create(dir, at, e, path),
            };
            let ident = match made {
                Err(Error::Io { cause, .. })
                    if fresh && cause.raw_os_error() == Some(Errno::EXIST.raw_os_error()) =>
                {
                    continue
                }
                // `create` and `link` remove what they made if they fail after making it.
                Err(err) => return Err(err),
                Ok(ident) => ident,
            };
            if !fresh {
                let done = (|| -> io::Result<()> {
                    if matches!(way, Way::ReplaceDir) {
                        super::remove::remove_tree(dir, name)?;
                    }
                    rustix::fs::renameat(dir, at, dir, name)?;
                    Ok(())
                })();
                if let Err(err) = done {
                    let _ = rustix::fs::unlinkat(dir, at, AtFlags::empty());
                    return Err(err).at(path());
                }
            }
            return Ok(Put::Written(ident));
        }
        Err(replaced(&path()))
    }

    /// Link `at` in `dir` to `from_name` in `from_dir`, which must still be inode `id`.
    fn link(
        &self,
        from: (&OwnedFd, &[u8], Ident),
        dir: &OwnedFd,
        at: &[u8],
        path: &dyn Fn() -> PathBuf,
    ) -> Result<Ident> {
        let (from_dir, from_name, id) = from;
        let io_err = |e: Errno| Error::Io {
            path: path(),
            cause: e.into(),
        };
        rustix::fs::linkat(from_dir, from_name, dir, at, AtFlags::empty()).map_err(io_err)?;
        let st = rustix::fs::statat(dir, at, AtFlags::SYMLINK_NOFOLLOW);
        if st.map_or(true, |st| Ident::of(&st) != id) {
            let _ = rustix::fs::unlinkat(dir, at, AtFlags::empty());
            return Err(replaced(&path()));
        }
        Ok(id)
    }

    /// Create `e` as `at` in `dir`; if that fails after creating it, remove it again.
    fn create(
        &self,
        dir: &OwnedFd,
        at: &[u8],
        e: &Entry,
        path: &dyn Fn() -> PathBuf,
    ) -> Result<Ident> {
        let made = self.make(dir, at, e, path);
        if let Err(Error::Io { cause, .. }) = &made {
            if cause.raw_os_error() == Some(Errno::EXIST.raw_os_error()) {
                return made; // nothing of ours to remove
            }
        }
        if made.is_err() {
            let _ = rustix::fs::unlinkat(dir, at, AtFlags::empty());
        }
        made
    }

    /// Create `e` as `at` in `dir` (exclusively, never through a symlink) with its metadata.
    fn make(
        &self,
        dir: &OwnedFd,
        at: &[u8],
        e: &Entry,
        path: &dyn Fn() -> PathBuf,
    ) -> Result<Ident> {
        let mode600 = Mode::from_raw_mode(0o600);
        match e.kind {
            EntryKind::File => {
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(dir, at, flags, mode600)
                    .map_err(io::Error::from)
                    .at(path())?;
                let f = File::from(fd);
                super::content(self.m, e, &path(), &mut |offset, data| {
                    write_sparse(&f, data, offset).at(path())?;
                    self.meter.add(0, data.len() as u64);
                    Ok(())
                })?;
                let st = rustix::fs::fstat(&f).map_err(io::Error::from).at(path())?;
                if st.st_size as u64 != e.size {
                    f.set_len(e.size).at(path())?; // a hole at the end
                }
                self.meta(Node::Fd(f.as_fd()), e, path);
                self.meter.add(1, 0);
                Ok(Ident::of(&st))
            }
            EntryKind::Symlink => {
                let target = &e.target.as_ref().expect("checked in the plan").0[..];
                rustix::fs::symlinkat(target, dir, at)
                    .map_err(io::Error::from)
                    .at(path())?;
                self.meta(Node::Symlink(dir.as_fd(), at), e, path);
                Ok(Ident::default())
            }
            EntryKind::Fifo | EntryKind::Char | EntryKind::Block => {
                let ft = match e.kind {
                    EntryKind::Fifo => FileType::Fifo,
                    EntryKind::Char => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                rustix::fs::mknodat(dir, at, ft, mode600, e.rdev.unwrap_or(0))
                    .map_err(io::Error::from)
                    .at(path())?;
                // The node itself, never what a swapped-in symlink points to.
                let fd = rustix::fs::openat(
                    dir,
                    at,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io::Error::from)
                .at(path())?;
                let st = rustix::fs::fstat(&fd).map_err(io::Error::from).at(path())?;
                if FileType::from_raw_mode(st.st_mode) != ft {
                    return Err(replaced(&path()));
                }
                self.meta(Node::Special(fd.as_fd()), e, path);
                Ok(Ident::default())
            }
            EntryKind::Dir => unreachable!("directories are made by make_dir"),
        }
    }

    /// Apply owner, xattrs, mode and times (in that order: chown clears setuid bits, and ACLs
    /// are set before the mode that must agree with them). What the target refuses is
    /// reported, not fatal.
    pub fn meta(&self, to: Node, e: &Entry, path: &dyn Fn() -> PathBuf) {
        let problem = |what: &str, err: &dyn std::fmt::Display| {
            self.problems.lock().unwrap().push(format!(
                "{}: cannot restore {what}: {err}",
                path().display()
            ));
        };
        let proc_path = |fd: BorrowedFd, name: Option<&[u8]>| {
            let mut p = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
            if let Some(n) = name {
                p.push(b'/');
                p.extend_from_slice(n);
            }
            p
        };
        if self.dest.is_root {
            let (uid, gid) = unsafe {
                (
                    rustix::fs::Uid::from_raw(e.uid),
                    rustix::fs::Gid::from_raw(e.gid),
                )
            };
            let r = match to {
                Node::Fd(fd) => rustix::fs::fchown(fd, Some(uid), Some(gid)),
                Node::Symlink(dir, name) => {
                    rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                }
                Node::Special(fd) => {
                    rustix::fs::chownat(fd, "", Some(uid), Some(gid), AtFlags::EMPTY_PATH)
                }
            };
            if let Err(err) = r {
                problem("owner", &io::Error::from(err));
            }
        }
        for x in &e.xattrs {
            let Ok(name) = std::ffi::CString::new(x.name.0.clone()) else {
                continue;
            };
            let flags = rustix::fs::XattrFlags::empty();
            let v = &x.value.0;
            let r = match to {
                Node::Fd(fd) => rustix::fs::fsetxattr(fd, name.as_c_str(), v, flags),
                Node::Symlink(dir, n) => {
                    rustix::fs::lsetxattr(proc_path(dir, Some(n)), name.as_c_str(), v, flags)
                }
                Node::Special(fd) => {
                    rustix::fs::setxattr(proc_path(fd, None), name.as_c_str(), v, flags)
                }
            };
            if let Err(err) = r {
                problem(&format!("xattr {}", x.name.lossy()), &io::Error::from(err));
            }
        }
        let mode = Mode::from_raw_mode(e.mode);
        let r = match to {
            Node::Fd(fd) => rustix::fs::fchmod(fd, mode),
            Node::Symlink(..) => Ok(()), // symlinks have no mode of their own
            Node::Special(fd) => {
                rustix::fs::chmodat(CWD, proc_path(fd, None), mode, AtFlags::empty())
            }
        };
        if let Err(err) = r {
            problem("mode", &io::Error::from(err));
        }
        let ts = Timespec {
            tv_sec: e.mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: e.mtime_ns.rem_euclid(1_000_000_000),
        };
        let times = Timestamps {
            last_access: ts,
            last_modification: ts,
        };
        let r = match to {
            Node::Fd(fd) => rustix::fs::futimens(fd, &times),
            Node::Symlink(dir, n) => {
                rustix::fs::utimensat(dir, n, &times, AtFlags::SYMLINK_NOFOLLOW)
            }
            Node::Special(fd) => {
                rustix::fs::utimensat(CWD, proc_path(fd, None), &times, AtFlags::empty())
            }
        };
        if let Err(err) = r {
            problem("times", &io::Error::from(err));
        }
    }
}

/// Where metadata goes.
#[derive(Clone, Copy)]
pub enum Node<'a> {
    /// An open regular file or directory.
    Fd(BorrowedFd<'a>),
    /// A symlink: its directory and name (every call made on it does not follow it).
    Symlink(BorrowedFd<'a>, &'a [u8]),
    /// A FIFO or device, opened with `O_PATH | O_NOFOLLOW` (never opened for I/O).
    Special(BorrowedFd<'a>),
}

/// Write `data` at `offset`, leaving 4 KiB runs of zeros as holes.
fn write_sparse(f: &File, data: &[u8], offset: u64) -> io::Result<()> {
    const PAGE: usize = 4096;
    let mut i = 0;
    while i < data.len() {
        let end = (i + PAGE).min(data.len());
        if data[i..end].iter().all(|b| *b == 0) {
            i = end;
            continue;
        }
        let mut j = end;
        while j < data.len() {
            let e2 = (j + PAGE).min(data.len());
            if data[j..e2].iter().all(|b| *b == 0) {
                break;
            }
            j = e2;
        }
        f.write_all_at(&data[i..j], offset + i as u64)?;
        i = j;
    }
    debug_assert!(data.len() <= MAX_BLOCK);
    Ok(())
}
