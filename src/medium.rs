//! A medium: one backup disk (or directory) holding `trayback/` (FORMAT.md), and the one
//! owner of every access to it.
//!
//! Invariants:
//! - every file below `trayback/` is reached through [`Beneath`]: relative to one directory
//!   descriptor, never through a symlink, never onto another file system; records are read as
//!   regular files with a size cap, and errors never quote their bytes;
//! - the fields are private: other modules read through accessors and write through the small
//!   transaction API ([`Medium::begin_backup`] → [`BackupWriter`] → [`Medium::commit_backup`],
//!   [`Medium::mark_verified`], [`Medium::remove_backup`], [`Medium::collect_garbage`],
//!   [`Medium::replace_tree`]), each following the commit protocol of FORMAT.md;
//! - opening for writing takes the exclusive writer lock and runs recovery, which removes
//!   what an interrupted writer left and never touches anything committed;
//! - readers hold a shared lock on `locks/readers` for as long as they have the medium open;
//!   whatever deletes a pack or a backup's directory holds it exclusively, or leaves the
//!   deletion for later, so a restore, `ls` or verify that has started never loses a block;
//! - `trayback/` is `0700` and everything written in it `0600`;
//! - an encrypted medium (`media.yaml` format 3 or 4) is opened only unlocked ([`Unlock`]): every
//!   record is then sealed and must authenticate (`records`, `store::pack`); a writer also
//!   refuses a tree older than the newest generation this host saw of it (a rollback).

pub mod beneath;
mod keyring;
pub mod kit;
mod records;

use crate::crypt::Crypt;
use crate::error::{Error, Result};
use crate::ids::{BackupId, BlockId, MediaId, PackId};
use crate::listing::Listing;
use crate::store::pack::BlobKind;
use crate::store::{self, GcReport, Reclaim, Store, WriteStats};
use crate::tree::{BackupRecord, Kind, Tree};
pub use beneath::Beneath;
use beneath::Kind as EntryType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

mod key;
pub use key::{adopt, key_path, prove, Adopted, ForeignReason, MediumKey, Proof, Unproven};
pub use keyring::{
    keep_recovery_key, rotate_host_key, set_passphrase, Ask, Encryption, KeyChange, SlotKind,
    Unlock, MEDIA_FORMAT_ENCRYPTED, MEDIA_FORMAT_ENCRYPTED_V3,
};
use records::{backup_rel, parse_yaml};
pub use records::{MAX_HEADER_FILE, MAX_TREE_FILE};

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
    /// Formats 3 and 4 (an encrypted medium): the data key's wrappings (FORMAT.md "Encryption").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
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

/// How much of `media.yaml` a reader takes before refusing it as damage.
const MAX_MEDIA_FILE: u64 = 64 << 10;

/// How a medium is held open.
enum Hold {
    /// Reading: a shared lock on `locks/readers` (none on a medium too old to have it).
    Read(#[allow(dead_code)] Option<File>),
    /// Writing: the exclusive writer lock on `locks/lock`.
    Write(#[allow(dead_code)] File),
}

/// An opened medium.
pub struct Medium {
    /// The mount point (or directory) given by the user, for messages.
    root: PathBuf,
    dir: Arc<Beneath>,
    media: MediaFile,
    tree: Tree,
    store: Store,
    hold: Hold,
    /// Plaintext, or the keys of an encrypted medium.
    crypt: Crypt,
    /// The generation of the tree file as read or last written (encrypted media).
    generation: AtomicU64,
    /// Where this host keeps its keys and the generations it saw (writers, host readers).
    state_dir: Option<PathBuf>,
}

/// How a new medium is protected.
pub enum Protection {
    /// Records in plaintext, checked by SHA-256 (`media init --plaintext`).
    Plaintext,
    /// Encrypted: a recovery key is made, and a passphrase slot if one is given.
    Encrypted {
        passphrase: Option<zeroize::Zeroizing<String>>,
    },
}

/// What enrolling made: the media ID file, and for an encrypted medium its recovery key (to
/// be shown once, never kept).
pub struct Enrolled {
    pub media: MediaFile,
    pub recovery: Option<crate::crypt::recovery::RecoveryKey>,
}

pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The backup a `backups/` entry is named for: exactly the name [`backup_rel`] gives its id
/// (eight digits or more, zero-padded), nothing else.
fn backup_of_name(name: &std::ffi::OsStr) -> Option<BackupId> {
    let n = name.to_str()?;
    let id = n.parse::<u64>().ok().map(BackupId)?;
    (backup_rel(id)[8..] == *n).then_some(id)
}

/// What [`Medium::identify`] reads: the media ID file, checked.
fn read_media(dir: &Beneath) -> Result<MediaFile> {
    read_media_bytes(dir).map(|(m, _)| m)
}

/// The media ID file, checked, and its bytes as read.
fn read_media_bytes(dir: &Beneath) -> Result<(MediaFile, Vec<u8>)> {
    if !dir.exists("media.yaml")? {
        return Err(Error::NotEnrolled(
            dir.shown("")
                .parent()
                .unwrap_or(Path::new("/"))
                .to_path_buf(),
        ));
    }
    let bytes = dir.read_small("media.yaml", MAX_MEDIA_FILE)?;
    let m: MediaFile = parse_yaml(dir, "media.yaml", &bytes)?;
    // Format 1 (no MAC) stays readable; writers require the proof (`key::prove`).
    if !(1..=MEDIA_FORMAT_ENCRYPTED).contains(&m.format) {
        return Err(Error::Version {
            path: dir.shown("media.yaml"),
            found: m.format,
            supported: MEDIA_FORMAT_ENCRYPTED,
        });
    }
    let damaged = |detail: String| Error::Damaged {
        path: dir.shown("media.yaml"),
        detail,
    };
    match (&m.encryption, m.format >= MEDIA_FORMAT_ENCRYPTED_V3) {
        (Some(e), true) => keyring::check(e, m.format).map_err(damaged)?,
        (None, false) => {}
        _ => {
            return Err(damaged(
                "formats 3 and 4, and only they, have an encryption section".into(),
            ))
        }
    }
    Ok((m, bytes))
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
        protection: Protection,
    ) -> Result<Enrolled> {
        let dir = Beneath::create(root)?;
        dir.make_private()?;
        if dir.exists("media.yaml")? {
            if !force {
                let (id, label) = match read_media(&dir) {
                    Ok(m) => (m.media_id.to_string(), m.label),
                    Err(_) => ("(unreadable)".into(), String::new()),
                };
                return Err(Error::AlreadyEnrolled {
                    path: root.to_path_buf(),
                    id,
                    label,
                    // Counted from the backups' directories: an encrypted tree needs a key.
                    backups: match dir.exists("backups") {
                        Ok(false) => Some(0),
                        _ => dir.list("backups").ok().map(|v| v.len()),
                    },
                });
            }
            key::prove(state_dir, root, &read_media(&dir)?)?;
            dir.mkdir("locks")?;
            let lock = lock_writer(&dir)?;
            // Unenrol first (the marker goes before the data), then wipe.
            dir.remove_file("media.yaml")?;
            for sub in ["backups", "packs", "tmp", "tree.yaml", "tree.sealed"] {
                dir.remove_all(sub)?;
            }
            drop(lock);
        }
        for sub in ["backups", "packs", "locks", "tmp"] {
            dir.mkdir(sub)?;
        }
        drop(lock_writer(&dir)?);
        drop(dir.open_lock(READERS_LOCK)?); // readers find it from now on
        let mut media = MediaFile {
            format: MEDIA_FORMAT,
            media_id: MediaId(uuid::Uuid::new_v4()),
            label: label.to_string(),
            host: host_name(),
            created: now,
            encryption: None,
            mac: None,
        };
        // The host's key is kept before the tree and the ID file that need it are written.
        let (crypt, recovery) = match protection {
            Protection::Plaintext => {
                key::enrol(state_dir, &mut media)?;
                (Crypt::Plain, None)
            }
            Protection::Encrypted { passphrase } => {
                let (c, r) = keyring::enrol(
                    state_dir,
                    &mut media,
                    passphrase.as_deref().map(|p| p.as_str()),
                )?;
                (c, Some(r))
            }
        };
        let (rel, bytes) = records::tree_file(&crypt, &Tree::default(), 1);
        dir.atomic_write(rel, &bytes)?;
        if crypt.is_sealed() {
            keyring::seen::record_tree_generation(state_dir, &media.media_id, 1)?;
        }
        let text = serde_yaml::to_string(&media).expect("a media file serializes");
        // The media ID file is written last: it is what makes the directory a medium.
        dir.atomic_write("media.yaml", text.as_bytes())?;
        if crypt.is_sealed() {
            if let Err(e) = keyring::enrolled(state_dir, &media) {
                warn!(medium = %media.media_id, cause = %e, "cannot record the generation of the new medium's ID file on this host");
            }
        }
        kit::refresh_quietly(root, &dir, &media);
        info!(medium = %media.media_id, label, path = %root.display(), encrypted = crypt.is_sealed(), "medium enrolled");
        Ok(Enrolled { media, recovery })
    }

    /// The media ID file of `root` and its exact bytes (to tell, after a remount, that it is
    /// the same file), read as every record is: beneath the medium, capped, regular only.
    pub fn identify_with_bytes(root: &Path) -> Result<(MediaFile, Vec<u8>)> {
        read_media_bytes(&Beneath::open(root)?)
    }

    /// Read the media ID file of `root` without opening the store.
    pub fn identify(root: &Path) -> Result<MediaFile> {
        read_media(&Beneath::open(root)?)
    }

    /// Open for reading: a shared readers' lock, no recovery; sees only what the tree
    /// lists. Works on a read-only mount and writes nothing. An encrypted medium is unlocked
    /// as `unlock` says (and a tree older than this host saw of it is refused).
    pub fn open_read(root: &Path, unlock: &Unlock) -> Result<Medium> {
        let dir = Beneath::open(root)?;
        let media = read_media(&dir)?;
        let crypt = keyring::unlock(root, &media, unlock)?;
        let hold = Hold::Read(share_readers_lock(&dir)?);
        let state = unlock.state_dir.map(Path::to_path_buf);
        let m = Medium::open(root, dir, media, hold, 3, crypt, state, records::read_tree)?;
        m.check_generation()?;
        Ok(m)
    }

    /// Open for writing, only a medium proven to be this host's (its `media.yaml` MAC
    /// verifies with the key kept in `state_dir`): the proof before anything is written, the
    /// exclusive lock, the same proven file again under the lock, then recovery.
    pub fn open_write(root: &Path, level: i32, state_dir: &Path) -> Result<Medium> {
        let (dir, media, hold, crypt) = Medium::lock_proven(root, state_dir)?;
        let state = Some(state_dir.to_path_buf());
        let mut m = Medium::open(
            root,
            dir,
            media,
            hold,
            level,
            crypt,
            state,
            records::read_tree,
        )?;
        m.check_generation()?;
        m.recover()?;
        kit::refresh_quietly(root, &m.dir, &m.media);
        Ok(m)
    }

    /// Open for `repair --tree` (proven and locked as [`Medium::open_write`]), with an empty
    /// tree in place of a damaged one and no recovery (which would take every backup for
    /// uncommitted).
    pub fn open_for_repair(root: &Path, state_dir: &Path) -> Result<Medium> {
        let (dir, media, hold, crypt) = Medium::lock_proven(root, state_dir)?;
        let state = Some(state_dir.to_path_buf());
        let m = Medium::open(root, dir, media, hold, 3, crypt, state, |_, _| {
            Ok((Tree::default(), 0))
        })?;
        // The repaired tree is written as a generation newer than any this host saw.
        if let Some(seen) = keyring::seen::tree_generation(state_dir, &m.media.media_id)? {
            m.generation.store(seen, Ordering::Relaxed);
        }
        Ok(m)
    }

    /// Refuse a tree older than the newest generation this host wrote to or read from this
    /// medium (an old `tree.sealed` put back), and remember a newer one.
    fn check_generation(&self) -> Result<()> {
        let (Some(state_dir), true) = (&self.state_dir, self.crypt.is_sealed()) else {
            return Ok(());
        };
        let now = self.generation.load(Ordering::Relaxed);
        match keyring::seen::tree_generation(state_dir, &self.media.media_id)? {
            Some(seen) if now < seen => Err(Error::Damaged {
                path: self.tree_path(),
                detail: format!(
                    "rolled back: generation {now}, older than generation {seen} this host already saw of this medium (an old tree file put back)"
                ),
            }),
            Some(seen) if now == seen => Ok(()),
            _ if self.writable() => {
                keyring::seen::record_tree_generation(state_dir, &self.media.media_id, now)
            }
            // A reader records nothing (the state directory may not be ours to write).
            _ => Ok(()),
        }
    }

    fn lock_proven(root: &Path, state_dir: &Path) -> Result<(Beneath, MediaFile, Hold, Crypt)> {
        let dir = Beneath::open(root)?;
        let media = read_media(&dir)?;
        let (proof, _) = key::prove_and_unlock(state_dir, root, &media)?;
        let hold = Hold::Write(lock_writer(&dir)?);
        // Another writer could have replaced media.yaml before we held the lock.
        let again = read_media(&dir)?;
        let (proof_again, crypt) = key::prove_and_unlock(state_dir, root, &again)?;
        if proof_again != proof {
            return Err(Error::Foreign {
                path: root.to_path_buf(),
                reason: ForeignReason::new(&again, Unproven::Changed),
            });
        }
        dir.make_private()?;
        drop(dir.open_lock(READERS_LOCK)?); // readers find it from now on
        Ok((dir, again, hold, crypt))
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        root: &Path,
        dir: Beneath,
        media: MediaFile,
        hold: Hold,
        level: i32,
        crypt: Crypt,
        state_dir: Option<PathBuf>,
        tree: fn(&Beneath, &Crypt) -> Result<(Tree, u64)>,
    ) -> Result<Medium> {
        let (tree, generation) = tree(&dir, &crypt)?;
        let dir = Arc::new(dir);
        let (store, damage) = Store::open(dir.clone(), level, crypt.clone())?;
        for d in &damage {
            warn!(path = %d.path.display(), detail = %d.detail, "unreadable pack");
        }
        Ok(Medium {
            root: root.to_path_buf(),
            dir,
            media,
            tree,
            store,
            hold,
            crypt,
            generation: AtomicU64::new(generation),
            state_dir,
        })
    }

    /// How the medium's records are protected.
    pub fn crypt(&self) -> &Crypt {
        &self.crypt
    }

    pub fn encrypted(&self) -> bool {
        self.crypt.is_sealed()
    }

    /// The mount point or directory the medium was opened at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn media(&self) -> &MediaFile {
        &self.media
    }

    /// The dependency tree as committed (or as this writer changed and committed it).
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The block store, for reading (writes go through [`BackupWriter`]).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn writable(&self) -> bool {
        matches!(self.hold, Hold::Write(_))
    }

    fn require_writable(&self) -> Result<()> {
        if self.writable() {
            Ok(())
        } else {
            Err(Error::Refused(format!(
                "{}: medium is not open for writing",
                self.root.display()
            )))
        }
    }

    /// Remove what an interrupted writer left behind. Touches nothing `tree.yaml` lists.
    /// Deletions wait for no reader: with readers at work they are left for the next time.
    fn recover(&mut self) -> Result<()> {
        self.dir.mkdir("tmp")?;
        for (name, _) in self.dir.list("tmp")? {
            let shown = self.dir.shown("tmp").join(&name);
            warn!(path = %shown.display(), "recovery: removing temporary file");
            self.dir.remove_child("tmp", &name)?;
        }
        // One writer at a time: the only id an interrupted backup can have used is
        // `next_id` (`begin_backup` marks it with its directory before writing anything). If
        // it was used, it is not used again. Other names and footers are not believed (a
        // crafted `backups/18446744073709551614/` would end all backups); they are only
        // removed. This needs no deletion, so it is done even while readers are at work.
        let id = self.tree.next_id;
        let used = self.dir.exists(&backup_rel(id))?
            || self
                .store
                .packs()
                .iter()
                .any(|p| p.flags & store::pack::FLAG_GC == 0 && p.writer == id.0);
        if let (true, Some(next)) = (used, id.0.checked_add(1)) {
            let mut tree = self.tree.clone();
            tree.next_id = BackupId(next);
            self.save_tree(&tree)?;
            info!(medium = %self.media.media_id, next_id = next, "recovery: the id of an uncommitted backup is not used again");
            self.tree = tree;
        }
        let Some(_readers) = self.exclusive(Wait::No)? else {
            info!(medium = %self.media.media_id, "readers at work; recovery leaves deletions for later");
            return Ok(());
        };
        for p in self.store.packs() {
            if p.flags & store::pack::FLAG_GC == 0
                && p.writer >= id.0
                // On an encrypted medium the footer must authenticate before it is believed.
                && (!self.crypt.is_sealed() || self.store.trailer_intact(&p.id))
            {
                warn!(pack = %p.id, backup = p.writer, "recovery: removing pack of an uncommitted backup");
                self.store.remove_pack(&p.id)?;
            }
        }
        self.remove_unlisted_backups()
    }

    /// Remove `backups/<id>/` directories that the tree does not list (uncommitted or pared).
    fn remove_unlisted_backups(&self) -> Result<()> {
        for (name, _) in self.dir.list("backups")? {
            let listed = backup_of_name(&name).is_some_and(|id| self.tree.get(id).is_some());
            if !listed {
                let shown = self.dir.shown("backups").join(&name);
                warn!(path = %shown.display(), "recovery: removing uncommitted or pared backup");
                self.dir.remove_child("backups", &name)?;
            }
        }
        Ok(())
    }

    /// Take `locks/readers` exclusively (no reader has the medium open), waiting as `wait`
    /// says; `None` if readers are still at work.
    fn exclusive(&self, wait: Wait) -> Result<Option<File>> {
        let f = self.dir.open_lock(READERS_LOCK)?;
        let deadline = match wait {
            Wait::No => None,
            Wait::Up(d, _) => Some(Instant::now() + d),
        };
        loop {
            match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Some(f)),
                Err(rustix::io::Errno::WOULDBLOCK) => {}
                Err(e) => return Err(self.dir.err(READERS_LOCK, e.into())),
            }
            match (deadline, wait) {
                (Some(d), Wait::Up(_, cancel))
                    if Instant::now() < d && !cancel.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    std::thread::sleep(Duration::from_millis(200))
                }
                _ => return Ok(None),
            }
        }
    }

    /// Replace `tree.yaml` with `tree` (the commit point of every change), after checking it.
    fn save_tree(&self, tree: &Tree) -> Result<()> {
        self.require_writable()?;
        tree.check().map_err(|detail| Error::Damaged {
            path: self.dir.shown("tree.yaml"),
            detail: format!("refusing to write an inconsistent tree: {detail}"),
        })?;
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let (rel, bytes) = records::tree_file(&self.crypt, tree, generation);
        self.dir.atomic_write(rel, &bytes)?;
        self.generation.store(generation, Ordering::Relaxed);
        if let (Some(state_dir), true) = (&self.state_dir, self.crypt.is_sealed()) {
            // After the medium: a crash between the two leaves the host behind, never ahead.
            // The tree is committed by now: a host that cannot keep the record (its state
            // directory full or read-only) loses only rollback detection up to this
            // generation, never the commit.
            if let Err(e) =
                keyring::seen::record_tree_generation(state_dir, &self.media.media_id, generation)
            {
                warn!(medium = %self.media.media_id, cause = %e, "cannot record the tree's generation on this host; a rollback to before it would not be noticed");
            }
        }
        Ok(())
    }

    /// Start writing backup `tree.next_id`. With `check_as_written`, each pack is re-read
    /// from the device in the background as soon as it is closed (for the verify after).
    pub fn begin_backup(&self, check_as_written: bool) -> Result<BackupWriter<'_>> {
        self.require_writable()?;
        let id = self.tree.next_id;
        // The id is marked used on the medium before anything is written under it: a writer
        // killed (or a tray pulled) from here on leaves `backups/<id>/`, and recovery moves
        // `next_id` past it, so the id is never given to another backup.
        self.dir.mkdir(&backup_rel(id))?;
        self.store.begin(id.0, 0);
        if check_as_written {
            self.store.check_packs_as_written();
        }
        Ok(BackupWriter {
            m: self,
            id,
            done: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Commit a backup: its header, then `tree.yaml` listing it (the commit point). On
    /// failure nothing of it stays.
    pub fn commit_backup(&mut self, staged: Staged, header: &BackupHeader) -> Result<()> {
        self.require_writable()?;
        if header.id != staged.id || header.id != self.tree.next_id {
            self.abandon(staged);
            return Err(Error::Refused(
                "backup header does not match its writer".into(),
            ));
        }
        let id = header.id;
        let rel = backup_rel(id);
        let mut tree = self.tree.clone();
        tree.add(BackupRecord {
            id,
            kind: header.kind,
            parent: header.parent,
            started: header.started,
            finished: header.finished,
            verified: false,
            partial: header.partial,
            bytes_total: header.bytes.total,
            bytes_new: header.bytes.new,
            bytes_stored: header.bytes.stored,
        });
        let committed = (|| {
            self.dir.mkdir(&rel)?;
            let (file, bytes) = records::header_file(&self.crypt, header);
            self.dir.atomic_write(&file, &bytes)?;
            self.save_tree(&tree)
        })();
        match committed {
            Ok(()) => {
                self.tree = tree;
                Ok(())
            }
            Err(e) => {
                self.abandon(staged);
                let _ = self.dir.remove_all(&rel);
                Err(e)
            }
        }
    }

    /// Give up a backup whose blobs are written but not committed: delete its packs (or leave
    /// them to recovery).
    pub fn abandon(&mut self, staged: Staged) {
        let _ = staged;
        self.store.abort();
    }

    /// Record the result of verifying backup `id` (spec [0040]); only verified backups are
    /// parents.
    pub fn mark_verified(&mut self, id: BackupId, ok: bool) -> Result<()> {
        let mut tree = self.tree.clone();
        let rec = tree.get_mut(id).ok_or(Error::NoSuchBackup(id))?;
        if rec.verified == ok {
            return Ok(());
        }
        rec.verified = ok;
        self.save_tree(&tree)?;
        self.tree = tree;
        Ok(())
    }

    /// Remove backup `id`: out of `tree.yaml` first (committed; its children take its parent),
    /// then its directory — unless readers are at work, when recovery removes it later.
    pub fn remove_backup(&mut self, id: BackupId) -> Result<BackupRecord> {
        let mut tree = self.tree.clone();
        let rec = tree.remove(id).ok_or(Error::NoSuchBackup(id))?;
        self.save_tree(&tree)?;
        self.tree = tree;
        if let Some(_readers) = self.exclusive(Wait::No)? {
            self.dir.remove_all(&backup_rel(id))?;
        }
        Ok(rec)
    }

    /// Replace the whole tree (`repair --tree`).
    pub fn replace_tree(&mut self, tree: Tree) -> Result<()> {
        self.save_tree(&tree)?;
        self.tree = tree;
        Ok(())
    }

    /// Reclaim the space of blobs not in `live`, from packs with dead blobs as `reclaim` says
    /// (see [`Store::collect_garbage`]). Packs are only deleted while no reader has the medium
    /// open: this waits for readers as `wait` says, and otherwise reclaims nothing and returns
    /// `None` (the garbage stays for later).
    pub fn collect_garbage(
        &mut self,
        live: &HashSet<BlockId>,
        wait: Wait,
        reclaim: Reclaim,
    ) -> Result<Option<GcReport>> {
        self.require_writable()?;
        let Some(_readers) = self.exclusive(wait)? else {
            info!(medium = %self.media.media_id, "readers at work; garbage collection left for later");
            return Ok(None);
        };
        self.remove_unlisted_backups()?;
        self.store.collect_garbage(live, reclaim).map(Some)
    }

    /// Every `backups/<id>/header.yaml` on the medium, listed or not (`repair --tree`), and
    /// a note for each that cannot be read.
    pub fn headers_on_disk(&self) -> Result<(Vec<BackupHeader>, Vec<String>)> {
        let mut headers = Vec::new();
        let mut notes = Vec::new();
        for (name, kind) in self.dir.list("backups")? {
            let Some(id) = backup_of_name(&name).filter(|_| kind == EntryType::Dir) else {
                notes.push(format!(
                    "skipped: {}: not a backup directory",
                    self.dir.shown("backups").join(&name).display()
                ));
                continue;
            };
            match self.read_header(id) {
                Ok(h) => headers.push(h),
                Err(e) => notes.push(format!("skipped: {e}")),
            }
        }
        Ok((headers, notes))
    }

    fn read_header(&self, id: BackupId) -> Result<BackupHeader> {
        records::read_header(&self.dir, &self.crypt, id)
    }

    /// Where backup `id`'s header is, for messages.
    pub fn header_path(&self, id: BackupId) -> PathBuf {
        self.dir.shown(&records::header_rel(&self.crypt, id))
    }

    /// Where the tree is, for messages.
    pub fn tree_path(&self) -> PathBuf {
        self.dir.shown(records::tree_rel(&self.crypt))
    }

    /// The header of committed backup `id`.
    pub fn header(&self, id: BackupId) -> Result<BackupHeader> {
        if self.tree.get(id).is_none() {
            return Err(Error::NoSuchBackup(id));
        }
        self.read_header(id)
    }

    /// Read and decode one listing blob.
    pub fn listing(&self, id: &BlockId) -> Result<Listing> {
        let bytes = self.store.read(id)?;
        Listing::decode(&bytes).map_err(|detail| Error::BadBlock { id: *id, detail })
    }

    /// Read one blob and check its hash.
    pub fn read_block(&self, id: &BlockId) -> Result<Vec<u8>> {
        self.store.read(id)
    }

    /// Free bytes on the medium's file system (for an unprivileged writer).
    pub fn free_space(&self) -> Result<u64> {
        self.dir.free_space()
    }

    /// Bytes the leftovers of an interrupted writer in `tmp/` occupy: what recovery frees when
    /// the medium is next opened for writing (a read-only look, as `pare --dry-run`, counts
    /// them free so it plans what the real run will).
    pub fn leftover_bytes(&self) -> Result<u64> {
        self.dir.files_bytes("tmp")
    }

    /// Check packs with `check` instead of re-reading them (tests that simulate a device
    /// returning something else than what was written).
    #[doc(hidden)]
    pub fn set_pack_check(&self, check: store::CheckFn) {
        self.store.set_pack_check(check);
    }
}

/// How long a writer waits for readers before it deletes.
#[derive(Clone, Copy)]
pub enum Wait<'a> {
    No,
    /// Up to this long, or until the flag is set.
    Up(Duration, &'a std::sync::atomic::AtomicBool),
}

/// Writing one backup's blobs. Dropped before [`BackupWriter::finish`], it deletes what it
/// wrote.
pub struct BackupWriter<'m> {
    m: &'m Medium,
    id: BackupId,
    done: std::sync::atomic::AtomicBool,
}

/// A backup's blobs, durable and not yet committed: [`Medium::commit_backup`] or
/// [`Medium::abandon`] it.
#[must_use]
pub struct Staged {
    id: BackupId,
    pub packs: Vec<PackId>,
    pub stats: WriteStats,
}

impl BackupWriter<'_> {
    /// The id the backup will have.
    pub fn id(&self) -> BackupId {
        self.id
    }

    /// Store `raw` unless the medium has it; returns its id.
    pub fn put(&self, kind: BlobKind, raw: &[u8]) -> Result<BlockId> {
        self.m.store.put(kind, raw)
    }

    /// As [`BackupWriter::put`] with the id already computed; returns whether it was new.
    pub fn put_with_id(&self, kind: BlobKind, id: BlockId, raw: &[u8]) -> Result<bool> {
        self.m.store.put_with_id(kind, id, raw)
    }

    /// Close the open packs: every blob written is durable. Dropping the writer after this
    /// deletes nothing: the staged backup is committed or abandoned.
    pub fn finish(&self) -> Result<Staged> {
        let (packs, stats) = self.m.store.flush()?;
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Staged {
            id: self.id,
            packs,
            stats,
        })
    }
}

impl Drop for BackupWriter<'_> {
    fn drop(&mut self) {
        if !self.done.load(std::sync::atomic::Ordering::Relaxed) {
            self.m.store.abort();
        }
    }
}

/// Take the writer's lock: exclusive, never waiting.
fn lock_writer(dir: &Beneath) -> Result<File> {
    let f = dir.open_lock("locks/lock")?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Locked(
            dir.shown("")
                .parent()
                .unwrap_or(Path::new("/"))
                .to_path_buf(),
        )),
        Err(e) => Err(dir.err("locks/lock", e.into())),
    }
}

/// Readers share it; whatever deletes takes it exclusively (see "Locking" in FORMAT.md).
const READERS_LOCK: &str = "locks/readers";

/// A reader's shared lock on `locks/readers`: waits while a writer deletes. `None` on a medium
/// without the file (made before it existed, and mounted read-only).
fn share_readers_lock(dir: &Beneath) -> Result<Option<File>> {
    let Some(f) = dir.open_lock_if_present(READERS_LOCK)? else {
        return Ok(None);
    };
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockShared)
        .map_err(|e| dir.err(READERS_LOCK, e.into()))?;
    Ok(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_directories_are_named_one_way_at_any_id() {
        for id in [1, 42, 99_999_999, 100_000_000, u64::MAX] {
            let rel = backup_rel(BackupId(id));
            let name = rel.strip_prefix("backups/").unwrap();
            assert_eq!(backup_of_name(name.as_ref()), Some(BackupId(id)), "{name}");
        }
        for name in [
            "1",
            "0000001",
            "+0000001",
            "00000001 ",
            "000000001",
            "x",
            "",
        ] {
            assert_eq!(backup_of_name(name.as_ref()), None, "{name:?}");
        }
    }
}
