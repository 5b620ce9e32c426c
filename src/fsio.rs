//! The one way trayback writes a file that replaces another, and the few raw file-system
//! calls the engine shares.
//!
//! Invariant (DESIGN.md commit protocol): a file written with [`atomic_write`] is either the
//! old version or the complete new one after any crash: it goes to `tmp/`, is fsync'd, renamed
//! into place, and the directory it landed in is fsync'd.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Write `data` to `dest` through `tmp_dir` (which must be on the same file system).
pub fn atomic_write(tmp_dir: &Path, dest: &Path, data: &[u8]) -> io::Result<()> {
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "destination has no name"))?;
    let tmp = tmp_dir.join(format!(
        "{}.{}.tmp",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dest)?;
        fsync_dir(dest.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Make a directory's entries (creations, renames, removals) durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create a directory and make its entry durable in its parent. The parent must exist:
/// never `create_dir_all`, so a medium whose mount vanished is never recreated on the root
/// file system under the empty mount point.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir(dir)?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Ask the kernel to forget the cached pages of a file, so the next read comes from the
/// device. The file must have been fsync'd (dirty pages are not dropped).
pub fn drop_cache(file: &File) {
    let _ = rustix::fs::fadvise(file, 0, 0, rustix::fs::Advice::DontNeed);
}
