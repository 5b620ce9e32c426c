//! A medium: one backup disk (or directory) holding `trayback/` (FORMAT.md).
//!
//! Opening a medium for writing takes an exclusive lock and runs recovery, which removes what
//! an interrupted writer left (files in `tmp/`, backup directories the tree does not list,
//! packs written by a backup that never committed) and never touches anything committed.
//! A backup is committed when `tree.yaml` lists it; `tree.yaml` is only ever replaced with
//! [`fsio::atomic_write`].

use crate::error::{Error, IoContext, Result};
use crate::fsio;
use crate::ids::{BackupId, BlockId, MediaId, PackId};
use crate::listing::Listing;
use crate::store::{self, Store};
use crate::tree::{Kind, Tree, TREE_FORMAT};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use tracing::{info, warn};

mod key;
pub use key::{adopt, key_path, prove, Adopted, ForeignReason, MediumKey, Proof, Unproven};

pub const MEDIA_FORMAT: u32 = 2;
pub const HEADER_FORMAT: u32 = 1;

/// The media ID file, `trayback/media.yaml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaFile {
    pub format: u32,
    pub media_id: MediaId,
    pub label: String,
    pub host: String,
    pub created: DateTime<Utc>,
    /// Format 2: HMAC-SHA-256 proving the host that keeps this medium's key enrolled it
    /// (see `key`); absent in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// A problem met while backing up one path.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    pub path: String,
    pub error: String,
}

/// Counts of what a backup saw.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub specials: u64,
    /// Files whose content was read in this backup.
    pub files_read: u64,
    /// Files taken unchanged from the parent backup's index.
    pub files_unchanged: u64,
    pub sockets_skipped: u64,
    pub excluded: u64,
    /// Blobs (data blocks and listings) this backup added to the store.
    pub blobs_new: u64,
}

/// Byte totals of a backup.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bytes {
    /// Content of all files the backup covers.
    pub total: u64,
    /// Content read from the sources.
    pub read: u64,
    /// New blocks added to the medium, uncompressed.
    pub new: u64,
    /// New blocks as stored (compressed), plus listings.
    pub stored: u64,
}

/// `backups/<id>/header.yaml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    pub format: u32,
    pub id: BackupId,
    pub kind: Kind,
    pub parent: Option<BackupId>,
    pub media_id: MediaId,
    pub host: String,
    pub sources: Vec<PathBuf>,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub software: String,
    /// The listing of the virtual root directory `/`.
    pub root: BlockId,
    pub counts: Counts,
    pub bytes: Bytes,
    pub partial: bool,
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// Packs this backup wrote (what `verify` re-reads).
    pub packs: Vec<PackId>,
}

/// An opened medium.
pub struct Medium {
    /// The mount point (or directory) given by the user.
    pub root: PathBuf,
    /// `<root>/trayback`.
    pub dir: PathBuf,
    pub media: MediaFile,
    pub tree: Tree,
    pub store: Store,
    lock: Option<File>,
}

pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).at(path)?;
    serde_yaml::from_str(&text).map_err(|e| Error::Damaged {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

impl Medium {
    /// Enrol `root` as a new medium, keeping its key in `state_dir`. Refuses an enrolled one
    /// unless `force` (which wipes it, and only a medium proven to be this host's).
    pub fn init(
        root: &Path,
        label: &str,
        force: bool,
        now: DateTime<Utc>,
        state_dir: &Path,
    ) -> Result<MediaFile> {
        if !root.is_dir() {
            return Err(Error::MediumMissing(root.to_path_buf()));
        }
        let dir = root.join("trayback");
        let media_path = dir.join("media.yaml");
        if media_path.exists() {
            if !force {
                let (id, label) = match read_yaml::<MediaFile>(&media_path) {
                    Ok(m) => (m.media_id.to_string(), m.label),
                    Err(_) => ("(unreadable)".into(), String::new()),
                };
                return Err(Error::AlreadyEnrolled {
                    path: root.to_path_buf(),
                    id,
                    label,
                });
            }
            key::prove(state_dir, root, &Medium::identify(root)?)?;
            let lock = lock_file(&dir, true)?;
            // Unenrol first (the marker goes before the data), then wipe.
            fs::remove_file(&media_path).at(&media_path)?;
            fsio::fsync_dir(&dir).at(&dir)?;
            for sub in ["backups", "packs", "tmp", "tree.yaml"] {
                let p = dir.join(sub);
                if p.is_dir() {
                    fs::remove_dir_all(&p).at(&p)?;
                } else if p.exists() {
                    fs::remove_file(&p).at(&p)?;
                }
            }
            drop(lock);
        }
        for sub in ["", "backups", "packs", "locks", "tmp"] {
            let p = dir.join(sub);
            fsio::create_dir_durable(&p).at(&p)?;
        }
        drop(lock_file(&dir, true)?);
        let tmp = dir.join("tmp");
        let tree = serde_yaml::to_string(&Tree::default()).unwrap();
        fsio::atomic_write(&tmp, &dir.join("tree.yaml"), tree.as_bytes())
            .at(dir.join("tree.yaml"))?;
        let mut media = MediaFile {
            format: MEDIA_FORMAT,
            media_id: MediaId(uuid::Uuid::new_v4()),
            label: label.to_string(),
            host: host_name(),
            created: now,
            mac: None,
        };
        key::enrol(state_dir, &mut media)?;
        let text = serde_yaml::to_string(&media).unwrap();
        // The media ID file is written last: it is what makes the directory a medium.
        fsio::atomic_write(&tmp, &media_path, text.as_bytes()).at(&media_path)?;
        info!(medium = %media.media_id, label, path = %root.display(), "medium enrolled");
        Ok(media)
    }

    /// Read the media ID file of `root` without opening the store.
    pub fn identify(root: &Path) -> Result<MediaFile> {
        if !root.is_dir() {
            return Err(Error::MediumMissing(root.to_path_buf()));
        }
        let path = root.join("trayback").join("media.yaml");
        if !path.exists() {
            return Err(Error::NotEnrolled(root.to_path_buf()));
        }
        let m: MediaFile = read_yaml(&path)?;
        // Format 1 (no MAC) stays readable; writers require the proof (`key::prove`).
        if !(1..=MEDIA_FORMAT).contains(&m.format) {
            return Err(Error::Version {
                path,
                found: m.format,
                supported: MEDIA_FORMAT,
            });
        }
        Ok(m)
    }

    /// Open for reading: no lock, no recovery; sees only what `tree.yaml` lists.
    pub fn open_read(root: &Path) -> Result<Medium> {
        Medium::open(root, false, 3)
    }

    /// Open for writing: exclusive lock, then recovery.
    pub fn open_write(root: &Path, level: i32) -> Result<Medium> {
        Medium::open(root, true, level)
    }

    /// Open for `repair --tree`: locked, with an empty tree in place of a damaged one and
    /// no recovery (which would take every backup for uncommitted).
    pub fn open_for_repair(root: &Path) -> Result<Medium> {
        let media = Medium::identify(root)?;
        let dir = root.join("trayback");
        let lock = Some(lock_file(&dir, false)?);
        let (store, _) = Store::open(&dir, 3)?;
        Ok(Medium {
            root: root.to_path_buf(),
            dir,
            media,
            tree: Tree::default(),
            store,
            lock,
        })
    }

    fn open(root: &Path, write: bool, level: i32) -> Result<Medium> {
        let media = Medium::identify(root)?;
        let dir = root.join("trayback");
        let lock = if write {
            Some(lock_file(&dir, false)?)
        } else {
            None
        };
        let tree = read_tree(&dir)?;
        let (store, damage) = Store::open(&dir, level)?;
        for d in &damage {
            warn!(path = %d.path.display(), detail = %d.detail, "unreadable pack");
        }
        let mut m = Medium {
            root: root.to_path_buf(),
            dir,
            media,
            tree,
            store,
            lock,
        };
        if write {
            m.recover()?;
        }
        Ok(m)
    }

    pub fn writable(&self) -> bool {
        self.lock.is_some()
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub fn backup_dir(&self, id: BackupId) -> PathBuf {
        self.dir.join("backups").join(format!("{:08}", id.0))
    }

    /// Remove what an interrupted writer left behind. Touches nothing `tree.yaml` lists.
    fn recover(&mut self) -> Result<()> {
        let tmp = self.tmp_dir();
        fsio::create_dir_durable(&tmp).at(&tmp)?;
        for f in fs::read_dir(&tmp).at(&tmp)? {
            let p = f.at(&tmp)?.path();
            warn!(path = %p.display(), "recovery: removing temporary file");
            if p.is_dir() {
                fs::remove_dir_all(&p).at(&p)?;
            } else {
                fs::remove_file(&p).at(&p)?;
            }
        }
        for p in self.store.packs() {
            if p.flags & store::pack::FLAG_GC == 0 && p.writer >= self.tree.next_id.0 {
                warn!(pack = %p.id, backup = p.writer, "recovery: removing pack of an uncommitted backup");
                self.store.remove_pack(&p.id)?;
            }
        }
        let backups = self.dir.join("backups");
        for f in fs::read_dir(&backups).at(&backups)? {
            let p = f.at(&backups)?.path();
            let listed = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| self.tree.get(BackupId(n)).is_some());
            if !listed {
                warn!(path = %p.display(), "recovery: removing uncommitted or pared backup");
                fs::remove_dir_all(&p).at(&p)?;
            }
        }
        fsio::fsync_dir(&backups).at(&backups)?;
        fsio::fsync_dir(&tmp).at(&tmp)?;
        Ok(())
    }

    /// Replace `tree.yaml` with the in-memory tree (the commit point of every change).
    pub fn save_tree(&self) -> Result<()> {
        assert!(self.writable(), "tree saved without the medium's lock");
        self.tree.check().map_err(|detail| Error::Damaged {
            path: self.dir.join("tree.yaml"),
            detail: format!("refusing to write an inconsistent tree: {detail}"),
        })?;
        let text = serde_yaml::to_string(&self.tree).unwrap();
        let path = self.dir.join("tree.yaml");
        fsio::atomic_write(&self.tmp_dir(), &path, text.as_bytes()).at(&path)
    }

    /// Write a backup's header (before the tree lists it).
    pub fn write_header(&self, h: &BackupHeader) -> Result<()> {
        let dir = self.backup_dir(h.id);
        fsio::create_dir_durable(&dir).at(&dir)?;
        let path = dir.join("header.yaml");
        let text = serde_yaml::to_string(h).unwrap();
        fsio::atomic_write(&self.tmp_dir(), &path, text.as_bytes()).at(&path)
    }

    pub fn header(&self, id: BackupId) -> Result<BackupHeader> {
        if self.tree.get(id).is_none() {
            return Err(Error::NoSuchBackup(id));
        }
        let path = self.backup_dir(id).join("header.yaml");
        let h: BackupHeader = read_yaml(&path)?;
        if h.format != HEADER_FORMAT {
            return Err(Error::Version {
                path,
                found: h.format,
                supported: HEADER_FORMAT,
            });
        }
        if h.id != id {
            return Err(Error::Damaged {
                path,
                detail: format!("header names backup {} instead", h.id),
            });
        }
        Ok(h)
    }

    /// Read and decode one listing blob.
    pub fn listing(&self, id: &BlockId) -> Result<Listing> {
        let bytes = self.store.read(id)?;
        Listing::decode(&bytes).map_err(|detail| Error::BadBlock { id: *id, detail })
    }

    /// Free bytes on the medium's file system (for an unprivileged writer).
    pub fn free_space(&self) -> Result<u64> {
        let st = rustix::fs::statvfs(&self.dir)
            .map_err(std::io::Error::from)
            .at(&self.dir)?;
        Ok(st.f_bavail * st.f_frsize)
    }
}

fn read_tree(dir: &Path) -> Result<Tree> {
    let path = dir.join("tree.yaml");
    let tree: Tree = read_yaml(&path).map_err(|e| match e {
        Error::Damaged { path, detail } => Error::Damaged {
            path,
            detail: format!("{detail} (rebuild it with `trayback repair --tree`)"),
        },
        e => e,
    })?;
    if tree.format != TREE_FORMAT {
        return Err(Error::Version {
            path,
            found: tree.format,
            supported: TREE_FORMAT,
        });
    }
    tree.check()
        .map_err(|detail| Error::Damaged { path, detail })?;
    Ok(tree)
}

/// Take the medium's lock: exclusive, never waiting.
fn lock_file(dir: &Path, create_dirs: bool) -> Result<File> {
    let locks = dir.join("locks");
    if create_dirs {
        fsio::create_dir_durable(&locks).at(&locks)?;
    }
    let path = locks.join("lock");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .at(&path)?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            Err(Error::Locked(dir.parent().unwrap_or(dir).to_path_buf()))
        }
        Err(e) => Err(Error::Io {
            path,
            cause: e.into(),
        }),
    }
}
