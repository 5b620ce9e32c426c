//! Reading the sources: `lstat` attributes, extended attributes, sorted directory entries.
//!
//! This is the only code that looks at source files' metadata; `backup` drives the walk.
//! Attributes come from `lstat` (a symlink is recorded, never followed).

use crate::listing::{Binary, Bytes, Entry, EntryKind, Xattr};
use std::ffi::{CString, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// What `lstat` found.
#[allow(clippy::large_enum_variant)] // built once per file and consumed at once
pub enum Found {
    Entry(Entry),
    Socket,
}

pub fn time_ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// Build an entry (without content, subtree or xattrs) from metadata.
pub fn entry_from(name: &[u8], md: &Metadata) -> Found {
    let ft = md.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_char_device() {
        EntryKind::Char
    } else if ft.is_block_device() {
        EntryKind::Block
    } else {
        return Found::Socket;
    };
    Found::Entry(Entry {
        name: Bytes(name.to_vec()),
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime_ns: time_ns(md.mtime(), md.mtime_nsec()),
        ctime_ns: time_ns(md.ctime(), md.ctime_nsec()),
        dev: md.dev(),
        ino: md.ino(),
        nlink: md.nlink(),
        size: if kind == EntryKind::File {
            md.size()
        } else {
            0
        },
        blocks: Vec::new(),
        subtree: None,
        target: None,
        rdev: matches!(kind, EntryKind::Char | EntryKind::Block).then(|| md.rdev()),
        xattrs: Vec::new(),
    })
}

/// The names in a directory, sorted by bytes.
pub fn read_dir_sorted(path: &Path) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for e in fs::read_dir(path)? {
        names.push(e?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Extended attributes of a path (not following symlinks), sorted by name.
/// POSIX ACLs are the `system.posix_acl_access` / `system.posix_acl_default` attributes.
pub fn xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    let mut list = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut list) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::llistxattr(path, &mut [])?;
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
            match rustix::fs::lgetxattr(path, cname.as_c_str(), &mut value) {
                Ok(len) => break Some(len),
                Err(rustix::io::Errno::RANGE) => {
                    let need = rustix::fs::lgetxattr(path, cname.as_c_str(), &mut [])?;
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
