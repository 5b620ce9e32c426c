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
//! - an encrypted medium (`media.yaml` format 3 or 4) is opened only unlocked ([`Unlock`]):
//!   every record is then sealed and must authenticate (`records`, `store::pack`); a writer
//!   also refuses a tree older than the newest generation this host saw of it (a rollback).
//!
//! Parts: `enrol` (making a medium), `open` (opening, proof, recovery), `write` (the
//! transaction API), `locks`, `records` (tree and headers), `key` and `keyring` (the ID file's
//! proof and an encrypted medium's keys), `beneath` (every file access), `kit` (the restore
//! kit beside `trayback/`).

pub mod beneath;
mod enrol;
mod key;
mod keyring;
pub mod kit;
mod locks;
mod open;
mod records;
mod write;

use crate::crypt::Crypt;
use crate::error::{Error, Result};
use crate::ids::{BackupId, BlockId, MediaId, PackId};
use crate::listing::Listing;
use crate::store::chunk::Gear;
use crate::store::{self, Chunker, Store};
use crate::tree::{Kind, Tree};
pub use beneath::Beneath;
use beneath::Kind as EntryType;
use chrono::{DateTime, Utc};
pub use enrol::{host_name, Enrolled, Enrolment, Protection};
pub use key::{adopt, key_path, prove, Adopted, ForeignReason, MediumKey, Proof, Unproven};
pub use keyring::{
    keep_recovery_key, rotate_host_key, set_passphrase, Ask, Encryption, KeyChange, SlotKind,
    Unlock, MEDIA_FORMAT_ENCRYPTED, MEDIA_FORMAT_ENCRYPTED_V3,
};
pub use locks::Wait;
use locks::{lock_writer, share_readers_lock, READERS_LOCK};
use records::{backup_rel, parse_yaml};
pub use records::{MAX_HEADER_FILE, MAX_TREE_FILE};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
pub use write::{BackupWriter, Staged};

/// The format of a plaintext medium's `media.yaml` (encrypted ones:
/// [`MEDIA_FORMAT_ENCRYPTED`]).
pub const MEDIA_FORMAT: u32 = 2;
/// The formats of `media.yaml` this trayback reads: 1 (no MAC), 2, and the encrypted 3 and 4.
pub const MEDIA_FORMATS: std::ops::RangeInclusive<u32> = 1..=MEDIA_FORMAT_ENCRYPTED;
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
    /// The first [`MAX_PROBLEMS_LISTED`] source paths that could not be backed up, and why.
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// How many more problems the backup met (each is in the log).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub problems_unlisted: u64,
    /// Packs this backup wrote (what `verify` re-reads).
    pub packs: Vec<PackId>,
}

/// The most problems a header lists one by one (the rest are counted): a backup of a tree
/// whose files are all unreadable would otherwise write a header as large as the tree's
/// names, over what readers take ([`MAX_HEADER_FILE`]), and hold it all in memory.
pub const MAX_PROBLEMS_LISTED: usize = 1000;

fn is_zero(n: &u64) -> bool {
    *n == 0
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

/// The backup a `backups/` entry is named for: exactly the name [`backup_rel`] gives its id
/// (eight digits or more, zero-padded), nothing else.
fn backup_of_name(name: &std::ffi::OsStr) -> Option<BackupId> {
    let n = name.to_str()?;
    let id = n.parse::<u64>().ok().map(BackupId)?;
    (backup_rel(id)[8..] == *n).then_some(id)
}

/// The media id an ID file that does not read names, if its bytes name one at all: only to
/// tell one of this host's media altered (it holds a key for that id) from a stranger's.
/// Nothing else of such a file is believed.
fn claimed_media_id(dir: &Beneath) -> Option<MediaId> {
    let bytes = dir.read_small("media.yaml", MAX_MEDIA_FILE).ok()?;
    let v: serde_yaml::Value = serde_yaml::from_slice(&bytes).ok()?;
    v.get("media_id")?.as_str()?.parse().ok()
}

/// Whether this host saw medium `id` encrypted (it recorded generations of it): a plaintext
/// ID file under that id is a forgery ([`Unproven::Downgraded`]). An unreadable record is an
/// error, so nothing is proven by it.
fn host_knows_encrypted(state_dir: &Path, id: &MediaId) -> Result<bool> {
    keyring::seen::knows_encrypted(state_dir, id)
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
    if !MEDIA_FORMATS.contains(&m.format) {
        return Err(Error::Version {
            path: dir.shown("media.yaml"),
            found: m.format,
            supported: MEDIA_FORMATS,
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

    /// How this medium cuts file content into blocks: its tree's format decides (FORMAT.md
    /// "Blobs and blob ids"); on an encrypted medium the boundaries are keyed.
    pub fn chunker(&self) -> Chunker {
        if self.tree.format.fixed_blocks() {
            return Chunker::Fixed;
        }
        Chunker::Content(match &self.crypt {
            Crypt::Plain => Gear::public(),
            Crypt::Sealed(k) => Gear::keyed(k.chunker_key()),
        })
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

    /// The format the medium's tree file claims, even if the file is otherwise damaged
    /// (`repair --tree`; see [`records::claimed_tree_format`]).
    pub fn claimed_tree_format(&self) -> Option<u32> {
        records::claimed_tree_format(&self.dir, &self.crypt)
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
