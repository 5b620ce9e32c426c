//! Raw file-system helpers shared by the engine: the atomic replacement of a host file (the
//! agent's register), and reading a file from the device rather than the page cache.
//!
//! Files on a medium are never written here: [`crate::medium::Beneath`] owns every access to
//! `trayback/` and has its own atomic write (the commit protocol of FORMAT.md). Invariant of
//! [`atomic_write`]: after any crash the file is the old version or the complete new one.

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// Write `data` to `dest` through `tmp_dir` (which must be on the same file system).
pub fn atomic_write(tmp_dir: &Path, dest: &Path, data: &[u8]) -> io::Result<()> {
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "destination has no name"))?;
    let dir = File::open(dest.parent().unwrap_or(Path::new(".")))?;
    let tmp_dir = File::open(tmp_dir)?;
    atomic_write_at(&tmp_dir, &dir, name, data)
}

/// The directory at `path`, opened without following a symlink anywhere on its path: for a
/// directory another user may own a parent of (root must not write where it points).
pub fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::openat2(
        CWD,
        path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    )
    .map_err(|e| match e {
        Errno::LOOP => io::Error::other(format!(
            "{}: a symlink on the path (not followed: only a real directory is written to)",
            path.display()
        )),
        e => e.into(),
    })
}

/// Replace `name` in directory `dir` with `data`: a fresh file (mode 0644) in `tmp_dir`,
/// fsync'd, renamed over `name`, `dir` fsync'd. Nothing on the way follows a symlink.
pub fn atomic_write_at(
    tmp_dir: impl AsFd,
    dir: impl AsFd,
    name: &OsStr,
    data: &[u8],
) -> io::Result<()> {
    let tmp = format!(
        "{}.{}.tmp",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    );
    let result = (|| {
        let fd = rustix::fs::openat(
            &tmp_dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
        let mut f = File::from(fd);
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        rustix::fs::renameat(&tmp_dir, tmp.as_str(), &dir, name)?;
        rustix::fs::fsync(&dir)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(&tmp_dir, tmp.as_str(), AtFlags::empty());
    }
    result
}

/// Make a directory's entries (creations, renames, removals) durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Ask the kernel to forget the cached pages of a file, so the next read comes from the
/// device. The file must have been fsync'd (dirty pages are not dropped).
pub fn drop_cache(file: &File) {
    let _ = rustix::fs::fadvise(file, 0, 0, rustix::fs::Advice::DontNeed);
}

/// Reads a file front to back from the device, not from the page cache: with `O_DIRECT`
/// (aligned 1 MiB reads into this process's buffer, nothing cached), or, on a file system that
/// refuses `O_DIRECT`, through the cache after [`drop_cache`].
pub struct DeviceReader {
    file: File,
    /// The same file opened without `O_DIRECT`, for when the file system refuses it.
    plain: Option<File>,
    direct: bool,
    /// Over-allocated by `ALIGN` so that `buf[start..start + CHUNK]` is aligned.
    buf: Vec<u8>,
    start: usize,
    /// File offset of `buf[start]`, the bytes held, and the read position among them.
    base: u64,
    filled: usize,
    at: usize,
    /// The last fill reached the end of the file.
    eof: bool,
}

const ALIGN: usize = 4096;
const CHUNK: usize = 1 << 20;

impl DeviceReader {
    /// Read `direct` (opened with `O_DIRECT`, where the file system allows it) or else
    /// `plain` (the same file opened for ordinary reading).
    pub fn new(direct: Option<File>, plain: File) -> DeviceReader {
        let (file, plain, direct) = match direct {
            Some(d) => (d, Some(plain), true),
            None => {
                drop_cache(&plain);
                (plain, None, false)
            }
        };
        let buf = vec![0u8; CHUNK + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN);
        DeviceReader {
            file,
            plain,
            direct,
            buf,
            start,
            base: 0,
            filled: 0,
            at: 0,
            eof: false,
        }
    }

    /// Continue reading at `offset`.
    pub fn seek_to(&mut self, offset: u64) -> io::Result<()> {
        if (self.base..=self.base + self.filled as u64).contains(&offset) {
            self.at = (offset - self.base) as usize;
            if self.at < self.filled || self.eof {
                return Ok(());
            }
        }
        let aligned = offset - offset % ALIGN as u64;
        self.fill(aligned)?;
        self.at = ((offset - aligned) as usize).min(self.filled);
        Ok(())
    }

    /// Fill the buffer from aligned `offset`; at the end of the file it holds fewer bytes.
    fn fill(&mut self, offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.base = offset;
        self.filled = 0;
        self.at = 0;
        self.eof = false;
        while self.filled < CHUNK {
            let to = &mut self.buf[self.start + self.filled..self.start + CHUNK];
            match self.file.read_at(to, offset + self.filled as u64) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    self.filled += n;
                    // A short direct read ends at the end of the file.
                    if self.direct && n % ALIGN != 0 {
                        self.eof = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if self.direct
                        && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
                {
                    // Opened, but the file system will not read directly after all.
                    let plain = self.plain.take().ok_or(e)?;
                    drop_cache(&plain);
                    self.file = plain;
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl io::Read for DeviceReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.filled {
            if self.eof {
                return Ok(0);
            }
            let next = self.base + self.filled as u64;
            self.seek_to(next)?;
            if self.at == self.filled {
                return Ok(0);
            }
        }
        let n = out.len().min(self.filled - self.at);
        let from = self.start + self.at;
        out[..n].copy_from_slice(&self.buf[from..from + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;

    fn open(path: &Path) -> DeviceReader {
        use rustix::fs::{Mode, OFlags};
        let direct = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECT, Mode::empty()).ok();
        DeviceReader::new(direct.map(File::from), File::open(path).unwrap())
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    #[test]
    fn the_device_reader_returns_exactly_the_file_across_alignment_and_chunk_edges() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            1,
            4095,
            4096,
            4097,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + 17,
        ] {
            let path = dir.path().join(format!("f{len}"));
            let data = content(len);
            fs::write(&path, &data).unwrap();
            let mut all = Vec::new();
            open(&path).read_to_end(&mut all).unwrap();
            assert!(all == data, "whole file of {len} bytes");
            for at in [
                0,
                1,
                4095,
                4096,
                CHUNK - 3,
                CHUNK + 5,
                len.saturating_sub(2),
                len,
            ] {
                if at > len {
                    continue;
                }
                let mut r = open(&path);
                // Read a little first, so the seek is sometimes inside the held chunk.
                let mut head = vec![0u8; len.min(10)];
                r.read_exact(&mut head).unwrap();
                r.seek_to(at as u64).unwrap();
                let mut rest = Vec::new();
                r.read_to_end(&mut rest).unwrap();
                assert!(rest == data[at..], "{len} bytes from {at}");
            }
        }
    }
}
