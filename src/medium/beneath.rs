//! The medium's directory `trayback/`, opened once: every file below it is reached relative to
//! that one descriptor, never through a symbolic link and never onto another file system.
//!
//! A medium is untrusted input (a tray that has been away, a stranger's stick), so:
//! - every lookup uses `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV |
//!   RESOLVE_NO_MAGICLINKS)` (or, on kernels without `openat2`, one `O_NOFOLLOW` open per
//!   component with a device check), so a symlink or a mount anywhere on the way is refused;
//! - a file that should be regular is opened non-blocking and checked to be regular before a
//!   byte is read (a FIFO or device planted on the medium cannot block or feed us), and small
//!   records are read with a size cap;
//! - errors name the path and what is wrong with it, never the bytes that were read;
//! - what we create is private: directories `0700`, files `0600`;
//! - removal of a directory tree walks it through descriptors with an explicit stack and a
//!   depth limit, unlinking symlinks as names, never following them.

use crate::error::{Error, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// How lock files are opened: never blocking (a FIFO planted there), never a terminal.
const LOCK_FLAGS: OFlags = OFlags::NONBLOCK.union(OFlags::NOCTTY);

/// The deepest directory tree under `trayback/` that removal walks (the format's is 2).
const MAX_REMOVE_DEPTH: usize = 16;

/// `trayback/` of one medium, open.
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
    /// `<mount>/trayback`, for messages only: never used to reach a file.
    shown: PathBuf,
    dev: u64,
}

/// What a directory entry is (from `lstat`, never following a link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Other,
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_XDEV
        | ResolveFlags::NO_MAGICLINKS
}

/// A path below `trayback/` must be relative, without `.`/`..`, and non-empty.
fn check_rel(rel: &str) -> io::Result<()> {
    let ok = !rel.is_empty()
        && !rel.starts_with('/')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "bad path"))
    }
}

impl Beneath {
    /// Open `<root>/trayback`. `root` is the operator's (a mount point or directory) and may be
    /// reached any way; `trayback` itself must be a real directory on the same file system.
    pub fn open(root: &Path) -> Result<Beneath> {
        let shown = root.join("trayback");
        let rootfd = rustix::fs::open(root, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| match e {
                Errno::NOENT | Errno::NOTDIR => Error::MediumMissing(root.to_path_buf()),
                e => Error::Io {
                    path: root.to_path_buf(),
                    cause: e.into(),
                },
            })?;
        let root_dev = rustix::fs::fstat(&rootfd)
            .map_err(|e| io_err(root, e.into()))?
            .st_dev;
        let fd = rustix::fs::openat(
            &rootfd,
            "trayback",
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOENT => Error::NotEnrolled(root.to_path_buf()),
            e => refused(&shown, e),
        })?;
        let dev = rustix::fs::fstat(&fd)
            .map_err(|e| io_err(&shown, e.into()))?
            .st_dev;
        if dev != root_dev {
            return Err(refused(&shown, Errno::XDEV));
        }
        Ok(Beneath { fd, shown, dev })
    }

    /// Create `<root>/trayback` (private) if it is not there, and open it.
    pub fn create(root: &Path) -> Result<Beneath> {
        let rootfd = rustix::fs::open(root, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|_| Error::MediumMissing(root.to_path_buf()))?;
        match rustix::fs::mkdirat(&rootfd, "trayback", Mode::from_raw_mode(0o700)) {
            Ok(()) => rustix::fs::fsync(&rootfd).map_err(|e| io_err(root, e.into()))?,
            Err(Errno::EXIST) => {}
            Err(e) => return Err(io_err(&root.join("trayback"), e.into())),
        }
        Beneath::open(root)
    }

    /// `<mount>/trayback/<rel>`, for messages.
    pub fn shown(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.shown.clone()
        } else {
            self.shown.join(rel)
        }
    }

    /// The directory itself (for `fstatvfs`, `fchmod`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn resolve(&self, rel: &str, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
        check_rel(rel)?;
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let mode = Mode::from_raw_mode(mode);
        match rustix::fs::openat2(&self.fd, rel, flags, mode, resolve_flags()) {
            Err(Errno::NOSYS) => self.resolve_by_component(rel, flags, mode),
            // A lookup racing a rename inside the medium: the kernel asks to try again.
            Err(Errno::AGAIN) => {
                rustix::fs::openat2(&self.fd, rel, flags, mode, resolve_flags()).map_err(Into::into)
            }
            r => r.map_err(Into::into),
        }
    }

    /// The same as `openat2` with our resolve flags, one `O_NOFOLLOW` component at a time.
    fn resolve_by_component(&self, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let comps: Vec<&str> = rel.split('/').collect();
        let mut dir: Option<OwnedFd> = None;
        for (i, c) in comps.iter().enumerate() {
            let at = dir.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
            let last = i + 1 == comps.len();
            let f = if last {
                flags
            } else {
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY
            };
            let fd = rustix::fs::openat(at, *c, f, if last { mode } else { Mode::empty() })?;
            if rustix::fs::fstat(&fd)?.st_dev != self.dev {
                return Err(Errno::XDEV.into());
            }
            dir = Some(fd);
        }
        dir.ok_or_else(|| Errno::INVAL.into())
    }

    /// Open directory `rel` (`""` for `trayback/` itself).
    pub fn open_dir(&self, rel: &str) -> Result<OwnedFd> {
        if rel.is_empty() {
            return rustix::io::dup(&self.fd).map_err(|e| io_err(&self.shown, e.into()));
        }
        self.resolve(rel, OFlags::DIRECTORY | OFlags::RDONLY, 0)
            .map_err(|e| self.err(rel, e))
    }

    /// Open regular file `rel` for reading: non-blocking (a FIFO cannot stall us), and
    /// refused unless it is a regular file.
    pub fn open_file(&self, rel: &str) -> Result<File> {
        let fd = self
            .resolve(rel, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY, 0)
            .map_err(|e| self.err(rel, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.err(rel, e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::Damaged {
                path: self.shown(rel),
                detail: "is not a regular file; refused".into(),
            });
        }
        // Back to blocking reads (only a regular file gets here).
        rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(|e| self.err(rel, e.into()))?;
        Ok(File::from(fd))
    }

    /// Open regular file `rel` for reading past the page cache (`O_DIRECT`); `None` where the
    /// file system refuses direct I/O.
    pub fn open_direct(&self, rel: &str) -> Result<Option<File>> {
        let f = self.open_file(rel)?;
        let fd = OwnedFd::from(f);
        match rustix::fs::fcntl_setfl(&fd, OFlags::DIRECT) {
            Ok(()) => Ok(Some(File::from(fd))),
            Err(Errno::INVAL) => Ok(None),
            Err(e) => Err(self.err(rel, e.into())),
        }
    }

    /// Read small regular file `rel` whole, refusing one longer than `cap` bytes.
    pub fn read_small(&self, rel: &str, cap: u64) -> Result<Vec<u8>> {
        let f = self.open_file(rel)?;
        let mut out = Vec::new();
        f.take(cap + 1)
            .read_to_end(&mut out)
            .map_err(|e| self.err(rel, e))?;
        if out.len() as u64 > cap {
            return Err(Error::Damaged {
                path: self.shown(rel),
                detail: format!("is larger than {cap} bytes; refused"),
            });
        }
        Ok(out)
    }

    /// Does `rel` exist (as anything; a symlink counts, and is then refused by every use)?
    pub fn exists(&self, rel: &str) -> Result<bool> {
        match self.kind(rel) {
            Ok(_) => Ok(true),
            Err(Error::Io { cause, .. }) if cause.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// What `rel` is, without following it.
    pub fn kind(&self, rel: &str) -> Result<Kind> {
        let (parent, name) = self.parent_of(rel)?;
        let st = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.err(rel, e.into()))?;
        Ok(kind_of(st.st_mode))
    }

    /// The directory holding `rel`, open, and `rel`'s last component.
    fn parent_of<'a>(&self, rel: &'a str) -> Result<(OwnedFd, &'a str)> {
        check_rel(rel).map_err(|e| self.err(rel, e))?;
        match rel.rsplit_once('/') {
            Some((dir, name)) => Ok((self.open_dir(dir)?, name)),
            None => Ok((self.open_dir("")?, rel)),
        }
    }

    /// Create directory `rel` (private) unless it exists; an existing one must be a real
    /// directory. Its parent is fsync'd when it was created.
    pub fn mkdir(&self, rel: &str) -> Result<()> {
        let (parent, name) = self.parent_of(rel)?;
        match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => rustix::fs::fsync(&parent).map_err(|e| self.err(rel, e.into())),
            Err(Errno::EXIST) => self.open_dir(rel).map(drop),
            Err(e) => Err(self.err(rel, e.into())),
        }
    }

    /// Create a new private file `rel` (never replacing anything) for writing.
    pub fn create_new(&self, rel: &str) -> Result<File> {
        self.resolve(rel, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, 0o600)
            .map(File::from)
            .map_err(|e| self.err(rel, e))
    }

    /// Open (creating if missing, private) the lock file `rel` for `flock`.
    pub fn open_lock(&self, rel: &str) -> Result<File> {
        // openat2 refuses a mode without O_CREAT, and wants one with it.
        let fd = self
            .resolve(rel, OFlags::RDWR | OFlags::CREATE | LOCK_FLAGS, 0o600)
            .map_err(|e| self.err(rel, e))?;
        self.regular_lock(rel, fd)
    }

    /// Open the lock file `rel` for `flock` if it exists (read-only: works on a read-only
    /// mount); `None` if it does not.
    pub fn open_lock_if_present(&self, rel: &str) -> Result<Option<File>> {
        match self.resolve(rel, OFlags::RDONLY | LOCK_FLAGS, 0) {
            Ok(fd) => self.regular_lock(rel, fd).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    fn regular_lock(&self, rel: &str, fd: OwnedFd) -> Result<File> {
        let st = rustix::fs::fstat(&fd).map_err(|e| self.err(rel, e.into()))?;
        if kind_of(st.st_mode) != Kind::File {
            return Err(Error::Damaged {
                path: self.shown(rel),
                detail: "is not a regular file; refused".into(),
            });
        }
        Ok(File::from(fd))
    }

    /// Rename `from` to `to` (both below `trayback/`), replacing `to`; `to`'s directory is
    /// fsync'd.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (fp, fname) = self.parent_of(from)?;
        let (tp, tname) = self.parent_of(to)?;
        rustix::fs::renameat(&fp, fname, &tp, tname).map_err(|e| self.err(to, e.into()))?;
        rustix::fs::fsync(&tp).map_err(|e| self.err(to, e.into()))
    }

    /// Remove file (or symlink, as a name) `rel`; a missing one is not an error. The
    /// directory is fsync'd.
    pub fn remove_file(&self, rel: &str) -> Result<()> {
        let (parent, name) = self.parent_of(rel)?;
        match rustix::fs::unlinkat(&parent, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(self.err(rel, e.into())),
        }
        rustix::fs::fsync(&parent).map_err(|e| self.err(rel, e.into()))
    }

    /// Make directory `rel`'s entries durable.
    pub fn fsync_dir(&self, rel: &str) -> Result<()> {
        let fd = self.open_dir(rel)?;
        rustix::fs::fsync(&fd).map_err(|e| self.err(rel, e.into()))
    }

    /// The names in directory `rel` with what each is (never following links), sorted.
    pub fn list(&self, rel: &str) -> Result<Vec<(OsString, Kind)>> {
        let fd = self.open_dir(rel)?;
        list_fd(&fd).map_err(|e| self.err(rel, e))
    }

    /// The bytes the regular files directly in directory `rel` occupy (0 if it is missing).
    pub fn files_bytes(&self, rel: &str) -> Result<u64> {
        if !self.exists(rel)? {
            return Ok(0);
        }
        let fd = self.open_dir(rel)?;
        let mut total = 0u64;
        for (name, kind) in list_fd(&fd).map_err(|e| self.err(rel, e))? {
            if kind != Kind::File {
                continue;
            }
            let st =
                rustix::fs::statat(&fd, name.as_os_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.err(rel, e.into()))?;
            total = total.saturating_add((st.st_blocks as u64).saturating_mul(512));
        }
        Ok(total)
    }

    /// Remove `rel` whatever it is: a file or link by its name, a directory with everything
    /// in it (through descriptors, never following a link, at most [`MAX_REMOVE_DEPTH`]
    /// levels, never onto another file system). Missing is not an error.
    pub fn remove_all(&self, rel: &str) -> Result<()> {
        let (parent, name) = self.parent_of(rel)?;
        self.remove_in(&parent, rel, name.as_ref())
    }

    /// Remove entry `name` (any bytes: names read from the medium need not be UTF-8) of
    /// directory `dir`, as [`Beneath::remove_all`] does.
    pub fn remove_child(&self, dir: &str, name: &std::ffi::OsStr) -> Result<()> {
        let parent = self.open_dir(dir)?;
        let shown = format!("{dir}/{}", name.to_string_lossy());
        if name.is_empty() || name.as_bytes().contains(&b'/') || name == "." || name == ".." {
            return Err(self.err(&shown, io::ErrorKind::InvalidInput.into()));
        }
        self.remove_in(&parent, &shown, name)
    }

    fn remove_in(&self, parent: &OwnedFd, rel: &str, name: &std::ffi::OsStr) -> Result<()> {
        let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(self.err(rel, e.into())),
        };
        if kind_of(st.st_mode) == Kind::Dir {
            let fd = rustix::fs::openat(
                parent,
                name,
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
                Mode::empty(),
            )
            .map_err(|e| self.err(rel, e.into()))?;
            if rustix::fs::fstat(&fd)
                .map_err(|e| self.err(rel, e.into()))?
                .st_dev
                != self.dev
            {
                return Err(refused(&self.shown(rel), Errno::XDEV));
            }
            self.empty_dir(fd, rel)?;
            match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(self.err(rel, e.into())),
            }
        } else {
            match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(self.err(rel, e.into())),
            }
        }
        rustix::fs::fsync(parent).map_err(|e| self.err(rel, e.into()))
    }

    /// Remove everything inside directory `fd` (shown as `rel`).
    fn empty_dir(&self, fd: OwnedFd, rel: &str) -> Result<()> {
        // Each frame: an open directory, its names still to look at, and the name by which
        // its parent frame holds it.
        struct Frame {
            fd: OwnedFd,
            names: Vec<(OsString, Kind)>,
            name: Option<OsString>,
        }
        let names = list_fd(&fd).map_err(|e| self.err(rel, e))?;
        let mut stack = vec![Frame {
            fd,
            names,
            name: None,
        }];
        while let Some(top) = stack.last_mut() {
            let next = top.names.pop();
            let depth = stack.len();
            let top = stack.last().expect("not empty");
            let Some((name, kind)) = next else {
                let done = stack.pop().unwrap();
                if let (Some(parent), Some(name)) = (stack.last(), done.name) {
                    drop(done.fd);
                    rustix::fs::unlinkat(&parent.fd, name.as_os_str(), AtFlags::REMOVEDIR)
                        .or_else(ignore_missing)
                        .map_err(|e| self.err(rel, e.into()))?;
                }
                continue;
            };
            if kind == Kind::Dir {
                if depth >= MAX_REMOVE_DEPTH {
                    return Err(Error::Damaged {
                        path: self.shown(rel),
                        detail: format!(
                            "holds directories nested deeper than {MAX_REMOVE_DEPTH} levels; refused to remove"
                        ),
                    });
                }
                let child = rustix::fs::openat(
                    &top.fd,
                    name.as_os_str(),
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
                    Mode::empty(),
                )
                .map_err(|e| self.err(rel, e.into()))?;
                let st = rustix::fs::fstat(&child).map_err(|e| self.err(rel, e.into()))?;
                if st.st_dev != self.dev {
                    return Err(refused(&self.shown(rel), Errno::XDEV));
                }
                let names = list_fd(&child).map_err(|e| self.err(rel, e))?;
                stack.push(Frame {
                    fd: child,
                    names,
                    name: Some(name),
                });
            } else {
                rustix::fs::unlinkat(&top.fd, name.as_os_str(), AtFlags::empty())
                    .or_else(ignore_missing)
                    .map_err(|e| self.err(rel, e.into()))?;
            }
        }
        Ok(())
    }

    /// Write `data` to `rel` so that after any crash it is the old or the whole new version:
    /// to a fresh private file in `tmp/`, fsync'd, renamed into place, directory fsync'd.
    pub fn atomic_write(&self, rel: &str, data: &[u8]) -> Result<()> {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let tmp = format!("tmp/{name}.{}.tmp", uuid::Uuid::new_v4().simple());
        let result = (|| {
            let mut f = self.create_new(&tmp)?;
            f.write_all(data).map_err(|e| self.err(&tmp, e))?;
            f.sync_all().map_err(|e| self.err(&tmp, e))?;
            drop(f);
            self.rename(&tmp, rel)
        })();
        if result.is_err() {
            let _ = self.remove_file(&tmp);
        }
        result
    }

    /// Bytes free for an unprivileged writer on the medium's file system.
    pub fn free_space(&self) -> Result<u64> {
        let st = rustix::fs::fstatvfs(&self.fd).map_err(|e| io_err(&self.shown, e.into()))?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Make `trayback/` private (`0700`): nothing below it is reachable by other users.
    pub fn make_private(&self) -> Result<()> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(0o700))
            .map_err(|e| io_err(&self.shown, e.into()))
    }

    /// An I/O error on `rel`, with a symlink, a mount or a wrong type said in words.
    pub fn err(&self, rel: &str, e: io::Error) -> Error {
        let path = self.shown(rel);
        match e.raw_os_error().map(Errno::from_raw_os_error) {
            Some(errno @ (Errno::LOOP | Errno::XDEV | Errno::NOTDIR)) => refused(&path, errno),
            _ => Error::Io { path, cause: e },
        }
    }
}

fn ignore_missing(e: Errno) -> rustix::io::Result<()> {
    if e == Errno::NOENT {
        Ok(())
    } else {
        Err(e)
    }
}

fn kind_of(mode: u32) -> Kind {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        _ => Kind::Other,
    }
}

fn list_fd(fd: &OwnedFd) -> io::Result<Vec<(OsString, Kind)>> {
    let mut out = Vec::new();
    let mut dir = rustix::fs::Dir::read_from(fd)?;
    while let Some(e) = dir.read() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let st = match rustix::fs::statat(fd, e.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        out.push((OsString::from_vec(name.to_vec()), kind_of(st.st_mode)));
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

fn io_err(path: &Path, cause: io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// A medium entry that is a symlink, leads onto another file system or has the wrong type.
fn refused(path: &Path, e: Errno) -> Error {
    let detail = match e {
        Errno::LOOP => {
            "is (or passes through) a symbolic link, which a medium never holds; refused"
        }
        Errno::XDEV => "leads onto another file system; refused",
        Errno::NOTDIR => {
            "is not a directory (a symbolic link or a file, or passes through one); refused"
        }
        _ => return io_err(path, e.into()),
    };
    Error::Damaged {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn medium() -> (tempfile::TempDir, Beneath) {
        let t = tempfile::tempdir().unwrap();
        let b = Beneath::create(t.path()).unwrap();
        (t, b)
    }

    #[test]
    fn symlinks_anywhere_on_the_way_are_refused() {
        let (t, b) = medium();
        let victim = t.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("f"), b"secret").unwrap();
        symlink(&victim, t.path().join("trayback/tmp")).unwrap();
        symlink(victim.join("f"), t.path().join("trayback/media.yaml")).unwrap();
        for r in [
            b.open_dir("tmp").map(drop),
            b.read_small("media.yaml", 100).map(drop),
            b.read_small("tmp/f", 100).map(drop),
            b.create_new("tmp/new").map(drop),
            b.atomic_write("tree.yaml", b"x"),
        ] {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("symbolic link") && e.contains("refused"), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
        // Removing the link removes the name only.
        b.remove_all("tmp").unwrap();
        assert!(victim.join("f").exists());
        assert!(!t.path().join("victim/new").exists());
    }

    #[test]
    fn a_fifo_or_oversized_file_is_refused_without_blocking() {
        let (t, b) = medium();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            t.path().join("trayback/media.yaml"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = b.read_small("media.yaml", 100).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::write(t.path().join("trayback/tree.yaml"), vec![b'a'; 101]).unwrap();
        let e = b.read_small("tree.yaml", 100).unwrap_err().to_string();
        assert!(e.contains("larger than 100"), "{e}");
    }

    #[test]
    fn remove_all_removes_a_tree_and_stops_at_links() {
        let (t, b) = medium();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        std::fs::create_dir_all(t.path().join("trayback/backups/00000001/x")).unwrap();
        std::fs::write(t.path().join("trayback/backups/00000001/x/f"), b"f").unwrap();
        symlink(&outside, t.path().join("trayback/backups/00000001/link")).unwrap();
        b.remove_all("backups/00000001").unwrap();
        assert!(!t.path().join("trayback/backups/00000001").exists());
        assert!(outside.join("keep").exists());
        // Too deep: refused, not a stack overflow.
        let mut p = t.path().join("trayback/backups/deep");
        for _ in 0..40 {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        assert!(b.remove_all("backups/deep").is_err());
    }

    #[test]
    fn created_files_and_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (t, b) = medium();
        b.mkdir("tmp").unwrap();
        b.mkdir("packs").unwrap();
        b.mkdir("packs/ab").unwrap();
        b.atomic_write("tree.yaml", b"x").unwrap();
        let mode = |p: &str| {
            std::fs::symlink_metadata(t.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("trayback"), 0o700);
        assert_eq!(mode("trayback/packs/ab"), 0o700);
        assert_eq!(mode("trayback/tree.yaml"), 0o600);
    }
}
