//! Compare two directory trees exactly: kinds, content, mode, owner, mtime, symlink targets,
//! device numbers, xattrs and hard-link structure. Used by `trayback demo`, the tests and the
//! benchmarks to check that a restore reproduced its source.

use crate::scan;
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub owner: bool,
    pub xattrs: bool,
    /// Compare directories' mtimes too.
    pub dir_times: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            owner: true,
            xattrs: true,
            dir_times: true,
        }
    }
}

/// Differences between `a` and `b`, one line each (empty when identical).
pub fn trees(a: &Path, b: &Path, opts: Options) -> Vec<String> {
    let mut out = Vec::new();
    let mut links_a = HashMap::new();
    let mut links_b = HashMap::new();
    walk(
        a,
        b,
        Path::new(""),
        opts,
        &mut out,
        &mut links_a,
        &mut links_b,
    );
    out
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

fn walk(
    a: &Path,
    b: &Path,
    rel: &Path,
    opts: Options,
    out: &mut Vec<String>,
    links_a: &mut HashMap<(u64, u64), String>,
    links_b: &mut HashMap<(u64, u64), String>,
) {
    let (pa, pb) = (a.join(rel), b.join(rel));
    let (ma, mb) = match (fs::symlink_metadata(&pa), fs::symlink_metadata(&pb)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(_), Ok(_)) => return out.push(format!("{}: only in {}", rel.display(), b.display())),
        (Ok(_), Err(_)) => return out.push(format!("{}: only in {}", rel.display(), a.display())),
        (Err(e), Err(_)) => return out.push(format!("{}: {e}", rel.display())),
    };
    let name = if rel.as_os_str().is_empty() {
        ".".to_string()
    } else {
        rel.display().to_string()
    };
    let mut diff = |what: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{name}: {what} {x} != {y}"));
        }
    };
    diff(
        "type",
        format!("{:?}", ma.file_type()),
        format!("{:?}", mb.file_type()),
    );
    if ma.file_type() != mb.file_type() {
        return;
    }
    if !ma.file_type().is_symlink() {
        diff(
            "mode",
            format!("{:o}", ma.mode() & 0o7777),
            format!("{:o}", mb.mode() & 0o7777),
        );
    }
    if opts.owner {
        diff(
            "owner",
            format!("{}:{}", ma.uid(), ma.gid()),
            format!("{}:{}", mb.uid(), mb.gid()),
        );
    }
    if !ma.is_dir() || opts.dir_times {
        let t = |m: &fs::Metadata| scan::time_ns(m.mtime(), m.mtime_nsec()).to_string();
        diff("mtime", t(&ma), t(&mb));
    }
    if opts.xattrs {
        let x = |p: &Path| format!("{:?}", scan::xattrs(p).unwrap_or_default());
        diff("xattrs", x(&pa), x(&pb));
    }
    let ft = ma.file_type();
    if ft.is_file() {
        diff("size", ma.len().to_string(), mb.len().to_string());
        if ma.len() == mb.len() && !same_content(&pa, &pb).unwrap_or(false) {
            out.push(format!("{name}: content differs"));
        }
        if ma.nlink() > 1 || mb.nlink() > 1 {
            let first_a = links_a
                .entry((ma.dev(), ma.ino()))
                .or_insert_with(|| name.clone())
                .clone();
            let first_b = links_b
                .entry((mb.dev(), mb.ino()))
                .or_insert_with(|| name.clone())
                .clone();
            if first_a != first_b {
                out.push(format!(
                    "{name}: hard-linked with {first_a} in one tree, {first_b} in the other"
                ));
            }
        }
    } else if ft.is_symlink() {
        diff(
            "target",
            format!("{:?}", fs::read_link(&pa).ok()),
            format!("{:?}", fs::read_link(&pb).ok()),
        );
    } else if ft.is_dir() {
        let names = |p: &Path| -> Vec<_> {
            let mut v: Vec<_> = fs::read_dir(p)
                .map(|r| r.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let (na, nb) = (names(&pa), names(&pb));
        let mut all = na.clone();
        all.extend(nb.iter().cloned());
        all.sort();
        all.dedup();
        for n in all {
            walk(a, b, &rel.join(&n), opts, out, links_a, links_b);
        }
    } else {
        diff("rdev", ma.rdev().to_string(), mb.rdev().to_string());
    }
}
