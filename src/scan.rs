//! Reading the sources: `lstat` attributes, extended attributes, sorted directory entries.
//!
//! This is the only code that looks at source files' metadata; `backup::walk` drives the walk.
//! Attributes come from `lstat` (a symlink is recorded, never followed). Below the walk's root,
//! every name is opened or looked at relative to its directory's descriptor (`*at` calls with
//! `O_NOFOLLOW`), never by a full path, so a tree of any depth is read and a symlink put in
//! a directory's place is never followed.

use crate::listing::{Binary, Bytes, Entry, EntryKind, Xattr};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, RawMode, Stat};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

pub fn time_ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// One inode's attributes, from `lstat` (or `fstat` of an open file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    /// Regular files only; 0 for anything else.
    pub size: u64,
    /// Bytes the file occupies on disk (`st_blocks`), at most `size`: what reading it can
    /// store, since holes are zeros that deduplicate to one block.
    pub allocated: u64,
    /// Character and block devices only.
    pub rdev: Option<u64>,
}

impl Attrs {
    /// The attributes in `st`, or `None` for a socket (never stored).
    // The stat fields' integer types differ between architectures.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    pub fn from_stat(st: &Stat) -> Option<Attrs> {
        let kind = match FileType::from_raw_mode(st.st_mode as RawMode) {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            FileType::Fifo => EntryKind::Fifo,
            FileType::CharacterDevice => EntryKind::Char,
            FileType::BlockDevice => EntryKind::Block,
            _ => return None,
        };
        Some(Attrs {
            kind,
            mode: st.st_mode as u32 & 0o7777,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            mtime_ns: time_ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: time_ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
            size: if kind == EntryKind::File {
                st.st_size as u64
            } else {
                0
            },
            allocated: if kind == EntryKind::File {
                (st.st_blocks as u64)
                    .saturating_mul(512)
                    .min(st.st_size as u64)
            } else {
                0
            },
            rdev: matches!(kind, EntryKind::Char | EntryKind::Block).then_some(st.st_rdev as u64),
        })
    }

    /// An entry with these attributes and nothing else (no content, subtree, target, xattrs).
    pub fn entry(&self, name: Vec<u8>) -> Entry {
        let mut e = Entry::new(Bytes(name), self.kind);
        self.apply(&mut e);
        e
    }

    /// Set `e`'s attributes to these, keeping its name, content, subtree, target and xattrs.
    pub fn apply(&self, e: &mut Entry) {
        e.kind = self.kind;
        e.mode = self.mode;
        e.uid = self.uid;
        e.gid = self.gid;
        e.mtime_ns = self.mtime_ns;
        e.ctime_ns = self.ctime_ns;
        e.dev = self.dev;
        e.ino = self.ino;
        e.nlink = self.nlink;
        e.size = self.size;
        e.rdev = self.rdev;
    }

    /// Does `e` carry exactly these attributes?
    pub fn matches(&self, e: &Entry) -> bool {
        self.kind == e.kind
            && self.mode == e.mode
            && self.uid == e.uid
            && self.gid == e.gid
            && self.mtime_ns == e.mtime_ns
            && self.ctime_ns == e.ctime_ns
            && self.dev == e.dev
            && self.ino == e.ino
            && self.nlink == e.nlink
            && self.size == e.size
            && self.rdev == e.rdev
    }
}

/// Open a directory by path without following a symlink in its place (the walk's root only:
/// every other directory is opened relative to its parent). `list`: to read its entries;
/// otherwise only as a base for `*at` calls (`O_PATH`, which needs no read permission).
pub fn open_dir(path: &Path, list: bool) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, dir_flags(list), Mode::empty())?)
}

/// Open directory `name` of directory `dir`, not following a symlink in its place; `list` as
/// for [`open_dir`]. A `name` of several components (`a/b/c`) follows symlinks before its last
/// one: callers of that form check what they got with [`identity`].
pub fn open_dir_at(dir: &OwnedFd, name: &CStr, list: bool) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        dir_flags(list),
        Mode::empty(),
    )?)
}

fn dir_flags(list: bool) -> OFlags {
    let how = if list { OFlags::RDONLY } else { OFlags::PATH };
    how | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// `(dev, ino)` of an open file: what a name opened is checked against (it must be the inode
/// `lstat` saw when the name was listed, not one put in its place since).
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
pub fn identity(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// The names in an open directory (without `.` and `..`), sorted by bytes. Reads with
/// `getdents64` into a 64 KiB buffer, so a directory of a few hundred entries takes one call.
pub fn read_dir_sorted(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<MaybeUninit<u8>>> =
            std::cell::RefCell::new(vec![MaybeUninit::uninit(); 64 << 10]);
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut names = Vec::new();
        let mut entries = RawDir::new(dir, &mut buf);
        while let Some(e) = entries.next() {
            let e = e?;
            let n = e.file_name();
            if n != c"." && n != c".." {
                names.push(n.to_owned());
            }
        }
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(names)
    })
}

/// `lstat` of `name` in directory `dir`.
pub fn lstat_at(dir: &OwnedFd, name: &CStr) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// The target of symlink `name` in directory `dir`.
pub fn readlink_at(dir: &OwnedFd, name: &CStr) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Open regular file `name` of directory `dir` for reading, refusing a symlink, and never
/// blocking on a FIFO or device that took the file's place since it was listed.
pub fn open_file_at(dir: &OwnedFd, name: &CStr) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// `fstat` of an open file.
pub fn fstat(f: &File) -> io::Result<Stat> {
    Ok(rustix::fs::fstat(f)?)
}

/// Extended attributes of a path (not following symlinks), sorted by name.
/// POSIX ACLs are the `system.posix_acl_access` / `system.posix_acl_default` attributes.
pub fn xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    read_xattrs(
        |list| rustix::fs::llistxattr(path, list),
        |name, value| rustix::fs::lgetxattr(path, name, value),
    )
}

/// Extended attributes of an open file or directory (opened for reading, not `O_PATH`).
pub fn xattrs_fd(fd: &impl AsFd) -> io::Result<Vec<Xattr>> {
    read_xattrs(
        |list| rustix::fs::flistxattr(fd, list),
        |name, value| rustix::fs::fgetxattr(fd, name, value),
    )
}

/// Extended attributes of `name` in directory `dir`, not following a symlink: of an `O_PATH`
/// descriptor of it, read through `/proc/self/fd` (the kernel takes that link to the inode
/// itself, a symlink included; no device or FIFO is opened).
pub fn xattrs_at(dir: &OwnedFd, name: &CStr) -> io::Result<Vec<Xattr>> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    xattrs_opath(&fd)
}

/// Extended attributes of the inode an `O_PATH` descriptor refers to.
pub fn xattrs_opath(fd: &OwnedFd) -> io::Result<Vec<Xattr>> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let link = Path::new(&link);
    read_xattrs(
        |list| rustix::fs::listxattr(link, list),
        |name, value| rustix::fs::getxattr(link, name, value),
    )
}

/// The attributes `list` names, each read with `get`, sorted by name.
fn read_xattrs(
    list_fn: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get_fn: impl Fn(&CStr, &mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<Xattr>> {
    let mut list = vec![0u8; 1024];
    let n = loop {
        match list_fn(&mut list) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need = list_fn(&mut [])?;
                list.resize(need.max(list.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let names = &list[..n];
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("xattr names have no NUL");
        let mut value = vec![0u8; 256];
        let len = loop {
            match get_fn(cname.as_c_str(), &mut value) {
                Ok(len) => break Some(len),
                Err(rustix::io::Errno::RANGE) => {
                    let need = get_fn(cname.as_c_str(), &mut [])?;
                    value.resize(need.max(value.len() * 2), 0);
                }
                // Removed between list and get.
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(len) = len {
            value.truncate(len);
            out.push(Xattr {
                name: Bytes(name.to_vec()),
                value: Binary(value),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
