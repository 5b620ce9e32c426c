//! What this host remembers of each encrypted medium, beside its key in `<state_dir>/keys/`:
//! the newest generation of the medium's tree and of its ID file's key slots that it wrote or
//! saw (FORMAT.md "What encryption detects"). Both let the host tell an older file put back on
//! the medium (a rollback), which nothing on the medium alone can show.
//!
//! Invariants:
//! - a record only ever grows: it is written after the medium carries what it records, so a
//!   crash leaves the host behind the medium, never ahead of it (which would refuse a genuine
//!   medium);
//! - `<id>.generation` (the tree) is written at every commit, replaced by rename but not
//!   fsync'd (two more fsyncs would cost a no-change backup a third of its time): a host crash
//!   may lose the newest record;
//! - `<id>.media-generation` (the ID file) changes only with the key slots, and is fsync'd;
//!   an unreadable one is an error, never taken for "nothing seen";
//! - both are root-only files in the 0700 `keys/` directory.

use super::super::key;
use crate::error::{Error, IoContext, Result};
use crate::fsio;
use crate::ids::MediaId;
use std::fs;
use std::path::{Path, PathBuf};

/// `<state_dir>/keys/<id>.generation`: the newest tree generation this host wrote or read.
fn tree_path(state_dir: &Path, id: &MediaId) -> PathBuf {
    key::keys_dir(state_dir).join(format!("{id}.generation"))
}

/// `<state_dir>/keys/<id>.media-generation`: the newest key-slot generation of the medium's ID
/// file this host wrote or proved.
fn media_path(state_dir: &Path, id: &MediaId) -> PathBuf {
    key::keys_dir(state_dir).join(format!("{id}.media-generation"))
}

/// The most a record holds: a u64 in decimal and a newline.
const RECORD_MAX: u64 = 21;

/// The number in record `path`: `Ok(None)` if there is none, `Err(text)` if it is unreadable
/// as a number. A record is a regular file: a symlink (even a dangling one, which would read
/// as "nothing seen"), a directory or a device is an error, and at most [`RECORD_MAX`] + 1
/// bytes are read.
fn read(path: &Path) -> Result<Option<Result<u64, ()>>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let nofollow = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(nofollow.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at(path),
    };
    if !f.metadata().at(path)?.is_file() {
        return Err(Error::Damaged {
            path: path.to_path_buf(),
            detail: "not a regular file".into(),
        });
    }
    let mut t = String::new();
    match f.take(RECORD_MAX + 1).read_to_string(&mut t) {
        Ok(_) => Ok(Some(t.trim().parse().map_err(drop))),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(Some(Err(()))),
        Err(e) => Err(e).at(path),
    }
}

/// The newest tree generation this host saw of medium `id`.
pub fn tree_generation(state_dir: &Path, id: &MediaId) -> Result<Option<u64>> {
    let path = tree_path(state_dir, id);
    Ok(match read(&path)? {
        Some(Ok(g)) => Some(g),
        // Written without fsync (below): a host crash can leave it empty. Unknown, then.
        Some(Err(())) => {
            tracing::warn!(path = %path.display(), "unreadable generation record; rollback of this medium's tree is not checked until the next write");
            None
        }
        None => None,
    })
}

/// Record `generation` as the newest tree generation this host saw of medium `id`. Replaced
/// by rename but not fsync'd (see the module's invariants).
pub fn record_tree_generation(state_dir: &Path, id: &MediaId, generation: u64) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = tree_path(state_dir, id);
    let tmp = key::keys_dir(state_dir).join(format!(
        "{id}.generation.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(format!("{generation}\n").as_bytes()))
        .and_then(|()| fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.at(&path)
}

/// The newest key-slot generation of medium `id`'s ID file this host saw.
pub fn media_generation(state_dir: &Path, id: &MediaId) -> Result<Option<u64>> {
    let path = media_path(state_dir, id);
    match read(&path)? {
        Some(Ok(g)) => Ok(Some(g)),
        Some(Err(())) => Err(Error::Damaged {
            path,
            detail: "not a generation number; the medium's ID file cannot be checked for a rollback (remove this file to accept the medium's ID file as it is)".into(),
        }),
        None => Ok(None),
    }
}

/// Remember that this host saw key-slot generation `generation` of medium `id`'s ID file, if
/// it is newer than what it remembers (durably: fsync'd).
pub fn record_media_generation(state_dir: &Path, id: &MediaId, generation: u64) -> Result<()> {
    if media_generation(state_dir, id)?.is_some_and(|seen| seen >= generation) {
        return Ok(());
    }
    let dir = key::keys_dir(state_dir);
    let path = media_path(state_dir, id);
    fsio::atomic_write(&dir, &path, format!("{generation}\n").as_bytes()).at(&path)?;
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).at(&path)
}

/// Whether this host has seen medium `id` encrypted (it recorded a generation of its tree or
/// of its key slots).
pub fn knows_encrypted(state_dir: &Path, id: &MediaId) -> Result<bool> {
    Ok(tree_generation(state_dir, id)?.is_some() || media_generation(state_dir, id)?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_file_record_only_grows_and_an_unreadable_one_is_an_error() {
        let state = tempfile::tempdir().unwrap();
        fs::create_dir(key::keys_dir(state.path())).unwrap();
        let id = MediaId(uuid::Uuid::from_bytes([4; 16]));
        assert_eq!(media_generation(state.path(), &id).unwrap(), None);
        assert!(!knows_encrypted(state.path(), &id).unwrap());
        record_media_generation(state.path(), &id, 3).unwrap();
        record_media_generation(state.path(), &id, 2).unwrap();
        assert_eq!(media_generation(state.path(), &id).unwrap(), Some(3));
        assert!(knows_encrypted(state.path(), &id).unwrap());
        let path = media_path(state.path(), &id);
        assert_eq!(fs::read_to_string(&path).unwrap(), "3\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::write(&path, "").unwrap();
        let e = media_generation(state.path(), &id).unwrap_err().to_string();
        assert!(e.contains("media-generation") && !e.contains('\n'), "{e}");
    }
}
