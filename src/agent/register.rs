//! The host-side register of known media (`<state_dir>/register.yaml`): when each medium was
//! last seen and its newest backups, so `trayback status` can say which disk has the latest
//! backup while the others are off-site; and the file systems this host enrolled media on
//! (`<state_dir>/filesystems/<fs-uuid>`), whose journals it may replay.
//!
//! The register file has one writer, [`Saver`]'s thread: the agent's async workers hand it
//! a copy and never wait for the disk. The file systems are marker files, each written (and
//! made durable) by whoever enrols — the agent or `media init` — before the first write to
//! that file system, so there is no shared file to race on.

use crate::fsio;
use crate::tree::{Kind, Tree};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Seen {
    pub label: String,
    pub last_seen: Option<DateTime<Utc>>,
    pub last_device: Option<String>,
    /// Start time and id of the newest backup of each kind.
    #[serde(default)]
    pub newest: BTreeMap<Kind, (DateTime<Utc>, u64)>,
    #[serde(default)]
    pub warned_away: Option<DateTime<Utc>>,
    /// The file system UUID it was last seen with: a disk with this UUID whose journal needs
    /// replaying is recovered, not taken for blank (`identify`).
    #[serde(default)]
    pub fs_uuid: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Register {
    pub media: BTreeMap<String, Seen>,
    #[serde(skip)]
    path: PathBuf,
}

impl Register {
    /// Load the register; a missing or unreadable one starts empty (it is rebuilt as media
    /// come in).
    pub fn load(state_dir: &Path) -> Register {
        let path = state_dir.join("register.yaml");
        let mut r: Register = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_yaml::from_str(&t).ok())
            .unwrap_or_default();
        r.path = path;
        r
    }

    fn save(&self) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap();
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        fsio::atomic_write(
            &tmp,
            &self.path,
            serde_yaml::to_string(self).unwrap().as_bytes(),
        )
    }

    /// Record that a medium is in, with its tree.
    pub fn seen(
        &mut self,
        media_id: &str,
        label: &str,
        device: &str,
        fs_uuid: &str,
        tree: &Tree,
        now: DateTime<Utc>,
    ) {
        let s = self.media.entry(media_id.to_string()).or_default();
        s.fs_uuid = Some(fs_uuid.to_string());
        s.label = label.to_string();
        s.last_seen = Some(now);
        s.last_device = Some(device.to_string());
        s.warned_away = None;
        s.newest.clear();
        for b in tree.backups.iter().filter(|b| b.verified) {
            let e = s.newest.entry(b.kind).or_insert((b.started, b.id.0));
            if b.started >= e.0 {
                *e = (b.started, b.id.0);
            }
        }
    }
}

/// What the register's writer is asked to do.
enum Save {
    Register(Box<Register>),
    /// Answer once everything asked before is written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The one writer of the register file: a thread that writes each copy handed to it, in
/// order (a newer copy waiting replaces older ones).
#[derive(Clone)]
pub struct Saver(std::sync::mpsc::Sender<Save>);

impl Saver {
    pub fn start() -> Saver {
        let (tx, rx) = std::sync::mpsc::channel::<Save>();
        std::thread::spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut next = Some(first);
                let mut latest: Option<Box<Register>> = None;
                let mut flushed = Vec::new();
                while let Some(msg) = next.take() {
                    match msg {
                        Save::Register(r) => latest = Some(r),
                        Save::Flush(done) => flushed.push(done),
                    }
                    next = rx.try_recv().ok();
                }
                if let Some(r) = latest {
                    if let Err(e) = r.save() {
                        tracing::warn!(path = %r.path.display(), cause = %e, "cannot save the register");
                    }
                }
                for done in flushed {
                    let _ = done.send(());
                }
            }
        });
        Saver(tx)
    }

    /// Have a copy of `reg` written.
    pub fn save(&self, reg: &Register) {
        let _ = self.0.send(Save::Register(Box::new(reg.clone())));
    }

    /// Wait until everything handed over so far is written (blocking: at shutdown).
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.0.send(Save::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// `<state_dir>/filesystems`: one empty file per file system this host enrolled a medium on.
fn file_systems_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("filesystems")
}

/// A file system UUID as a file name: what udev and blkid print (hex digits and dashes).
fn uuid_name(fs_uuid: &str) -> Option<&str> {
    (!fs_uuid.is_empty()
        && fs_uuid.len() <= 64
        && fs_uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
    .then_some(fs_uuid)
}

/// Remember, durably, that this host enrols a medium on the file system `fs_uuid` (before
/// the first write to it): a tray pulled before its journal was checkpointed is then
/// recovered, not refused as a stranger's dirty disk.
pub fn remember_file_system(state_dir: &Path, fs_uuid: &str) -> std::io::Result<()> {
    let Some(name) = uuid_name(fs_uuid) else {
        return Err(std::io::Error::other(format!(
            "{fs_uuid:?} is not a file system UUID"
        )));
    };
    let dir = file_systems_dir(state_dir);
    if dir.join(name).exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::File::create(dir.join(name))?.sync_all()?;
    fsio::fsync_dir(&dir)?;
    if let Some(parent) = dir.parent() {
        fsio::fsync_dir(parent)?;
    }
    Ok(())
}

/// `media init` on `dir`: if `dir` is the mount point of a file system trayback uses,
/// remember it as one this host enrols a medium on (before anything is written to it);
/// its UUID, read from its superblock.
pub fn remember_file_system_at(state_dir: &Path, dir: &Path) -> std::io::Result<Option<String>> {
    let Some((dev, fs)) = super::mounts::mounted_at(dir) else {
        return Ok(None);
    };
    let Some(uuid) = super::superblock::fs_uuid(&dev, fs) else {
        return Err(std::io::Error::other(format!(
            "{}: cannot read the UUID of its {} file system",
            dev.display(),
            fs.name()
        )));
    };
    remember_file_system(state_dir, &uuid)?;
    Ok(Some(uuid))
}

/// Did this host enrol a medium on the file system `fs_uuid`?
pub fn knows_file_system(state_dir: &Path, fs_uuid: &str) -> bool {
    uuid_name(fs_uuid).is_some_and(|n| file_systems_dir(state_dir).join(n).exists())
}
