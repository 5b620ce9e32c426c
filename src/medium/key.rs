//! Per-medium keys: the secret a host keeps for each medium it enrolled, and the MAC in
//! `media.yaml` that proves a disk is one of this host's media (FORMAT.md, "media.yaml").
//!
//! A medium is written only when [`prove`] succeeds: its `media.yaml` is format 2 and carries
//! an HMAC-SHA-256 that verifies with the key this host holds for its `media_id`. What the
//! disk merely *says* (its `host`, its `media_id`) proves nothing: anyone can write those.
//!
//! Invariants:
//! - a key lives only on the host, in `<state_dir>/keys/<media_id>.key` (directory 0700,
//!   file 0600, written atomically); it is never written to a medium;
//! - a key is written to the host before the `media.yaml` sealed with it is written to the
//!   medium, so a crash never leaves a sealed medium whose key was never kept;
//! - the per-medium key is only a root: each use derives its own sub-key with a distinct
//!   label ([`MediumKey::subkey`]), so encryption at rest can build on it without reusing a key;
//! - MACs are compared in constant time (`hmac`'s `verify_slice`);
//! - a refusal ([`Error::Foreign`]) names only the media id and label read from the disk.

use super::{lock_writer, read_media, Beneath, MediaFile, MEDIA_FORMAT};
use crate::crypt::MacState;
use crate::error::{Error, IoContext, Result};
use crate::fsio;
use crate::ids::MediaId;
use std::fmt;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tracing::info;

/// Bytes in a per-medium key.
pub const KEY_LEN: usize = 32;
/// The label of the sub-key that MACs `media.yaml`.
pub const MAC_KEY_LABEL: &str = "trayback media.yaml mac v1";
/// The first field of the bytes a `media.yaml` MAC covers.
pub const MAC_DOMAIN: &str = "trayback media.yaml v2";
/// Labels and domains are short; a label longer than this is cut in messages.
const LABEL_SHOWN: usize = 64;

/// A medium's root key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct MediumKey([u8; KEY_LEN]);

impl Drop for MediumKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for MediumKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MediumKey(…)")
    }
}

impl MediumKey {
    /// A fresh random key (the kernel's `getrandom`).
    pub fn generate() -> std::io::Result<MediumKey> {
        let mut k = MediumKey([0u8; KEY_LEN]);
        crate::crypt::random_fill(&mut k.0)?;
        Ok(k)
    }

    pub fn from_bytes(b: [u8; KEY_LEN]) -> MediumKey {
        MediumKey(b)
    }

    /// The key as an encryption key (formats 3, 4: this host's key for the medium, which wraps
    /// its data key).
    pub fn secret(&self) -> crate::crypt::SecretKey {
        crate::crypt::SecretKey::from_bytes(self.0)
    }

    /// The sub-key for one use: HMAC-SHA-256(key, label). Each use has its own label.
    pub fn subkey(&self, label: &str) -> crate::crypt::SecretKey {
        self.secret().subkey(label)
    }

    fn mac_state(&self, m: &MediaFile) -> MacState {
        let mut mac = self.subkey(MAC_KEY_LABEL).hmac();
        mac.update(&canonical(m));
        mac
    }

    /// The MAC of a media ID file (of every field but `mac`).
    pub fn mac(&self, m: &MediaFile) -> [u8; 32] {
        self.mac_state(m).finish()
    }

    /// Does `m` carry this key's MAC? Compared in constant time.
    pub fn verifies(&self, m: &MediaFile) -> bool {
        let Some(Ok(given)) = m.mac.as_deref().map(hex::decode) else {
            return false;
        };
        self.mac_state(m).verify(&given)
    }

    /// Make `m` a format-2 media ID file sealed with this key.
    pub fn seal(&self, m: &mut MediaFile) {
        m.format = MEDIA_FORMAT;
        m.mac = Some(hex::encode(self.mac(m)));
    }
}

/// The bytes a `media.yaml` MAC covers: each field as a u32 little-endian length and its
/// UTF-8 bytes, in this order: the domain `"trayback media.yaml v2"`, `format` in decimal,
/// `media_id` (lower-case hyphenated UUID), `label`, `host`, `created` (RFC 3339 in UTC with
/// nine fractional digits and `Z`).
pub fn canonical(m: &MediaFile) -> Vec<u8> {
    length_prefixed(&canonical_fields(m, MAC_DOMAIN))
}

/// The six fields every `media.yaml` MAC starts with, after `domain`.
pub fn canonical_fields(m: &MediaFile, domain: &str) -> Vec<String> {
    vec![
        domain.to_string(),
        m.format.to_string(),
        m.media_id.0.hyphenated().to_string(),
        m.label.clone(),
        m.host.clone(),
        m.created
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    ]
}

/// Each field as a u32 little-endian length and its UTF-8 bytes.
pub fn length_prefixed(fields: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f.as_bytes());
    }
    out
}

/// Why a disk is not proven to be one of this host's media.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unproven {
    /// A format-1 `media.yaml` (no MAC): readable, but written only once adopted.
    NoMac,
    /// This host holds no key for its `media_id`: a stranger's disk, or a lost key.
    NoKey,
    /// The MAC does not verify with this host's key: forged, altered, or another disk
    /// claiming a medium's id.
    BadMac,
    /// `media.yaml` read again before writing (after the read-write mount, under the lock)
    /// differs from the one proven.
    Changed,
    /// Encrypted: this host holds a key for the medium's id, but the medium's host
    /// key slot is missing or does not open with it (its key wrap was replaced or altered).
    BadWrap,
    /// Encrypted: the data key opens, but the ID file's MAC does not verify with
    /// it (a field or a key slot was altered).
    Altered,
    /// Encrypted: the ID file verifies, but its key-slot generation is older than the newest
    /// this host saw (an old ID file put back, perhaps with a passphrase since removed).
    RolledBack { found: u64, seen: u64 },
    /// Plaintext, under the id of a medium this host saw encrypted: an ID file replaced by a
    /// plaintext one (a downgrade).
    Downgraded,
}

impl Unproven {
    /// A medium that was tampered with (not merely unknown): the agent says so.
    pub fn is_tampering(self) -> bool {
        matches!(
            self,
            Unproven::BadWrap
                | Unproven::Altered
                | Unproven::RolledBack { .. }
                | Unproven::Downgraded
        )
    }
}

impl fmt::Display for Unproven {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Unproven::NoMac => "its media.yaml carries no MAC (format 1); if it is this host's medium, take it with `trayback media adopt`",
            Unproven::NoKey => "this host holds no key for it (a stranger's disk, or this host's key was lost: `trayback media adopt` if it is yours)",
            Unproven::BadMac => "its media.yaml MAC does not verify with this host's key for that id (a forged, altered or copied ID file)",
            Unproven::Changed => "its media.yaml changed between the check and the write (a journal replay at the read-write mount, or another writer)",
            Unproven::BadWrap => "its key wrap for this host does not open with this host's key (the ID file's key slots were replaced or altered): tampered",
            Unproven::Altered => "its media.yaml does not verify with the medium's own key (a field or a key slot was altered): tampered",
            Unproven::Downgraded => "this host knows this medium as encrypted, and its ID file now says plaintext: replaced (tampered)",
            Unproven::RolledBack { found, seen } => {
                return write!(
                    f,
                    "its media.yaml is generation {found} of its key slots, older than generation {seen} this host already saw: an old ID file was put back (it may carry a passphrase since removed): tampered"
                )
            }
        };
        f.write_str(text)
    }
}

/// The reason in [`Error::Foreign`]: which medium the disk claims to be, and why that is
/// not proven. The label is cut to 64 characters and shown escaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignReason {
    pub media_id: MediaId,
    pub label: String,
    pub why: Unproven,
}

impl ForeignReason {
    pub fn new(m: &MediaFile, why: Unproven) -> ForeignReason {
        ForeignReason {
            media_id: m.media_id,
            label: m.label.chars().take(LABEL_SHOWN).collect(),
            why,
        }
    }
}

impl fmt::Display for ForeignReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "medium {} ({:?}) is not proven to be this host's, not writing to it: {}",
            self.media_id, self.label, self.why
        )
    }
}

/// Evidence that a medium's `media.yaml` verified with this host's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub media_id: MediaId,
    pub mac: String,
}

/// `<state_dir>/keys`.
pub fn keys_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("keys")
}

/// `<state_dir>/keys/<media_id>.key`.
pub fn key_path(state_dir: &Path, id: &MediaId) -> PathBuf {
    keys_dir(state_dir).join(format!("{id}.key"))
}

/// The key this host holds for medium `id`, if any. A key file is 64 lower-case hex digits
/// and a newline.
pub fn load(state_dir: &Path, id: &MediaId) -> Result<Option<MediumKey>> {
    load_path(&key_path(state_dir, id))
}

/// The key in file `path`, if it exists.
pub fn load_path(path: &Path) -> Result<Option<MediumKey>> {
    let path = path.to_path_buf();
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at(&path),
    };
    let mut k = [0u8; KEY_LEN];
    hex::decode_to_slice(text.trim_end(), &mut k).map_err(|_| Error::Damaged {
        path: path.clone(),
        detail: "a key file holds 64 hex digits".into(),
    })?;
    Ok(Some(MediumKey(k)))
}

/// Keep `key` for medium `id`: `keys/` is made 0700, the file 0600, written atomically.
pub fn store(state_dir: &Path, id: &MediaId, key: &MediumKey) -> Result<()> {
    store_path(state_dir, &key_path(state_dir, id), key)
}

/// Keep `key` in `path` (a file in `keys/`).
pub fn store_path(state_dir: &Path, path: &Path, key: &MediumKey) -> Result<()> {
    let dir = keys_dir(state_dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .at(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).at(&dir)?;
    // The temporary file is made inside the 0700 directory: never readable by others,
    // whatever mode it is created with.
    let text = zeroize::Zeroizing::new(format!("{}\n", hex::encode(key.0)));
    fsio::atomic_write(&dir, path, text.as_bytes()).at(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).at(path)?;
    fsio::fsync_dir(&dir).at(&dir)?;
    Ok(())
}

/// A new medium's key: generated, kept on the host, and sealed into `m` (format 2).
pub fn enrol(state_dir: &Path, m: &mut MediaFile) -> Result<MediumKey> {
    let key = MediumKey::generate().at(keys_dir(state_dir))?;
    store(state_dir, &m.media_id, &key)?;
    key.seal(m);
    Ok(key)
}

/// The one check every writer makes before writing to the medium at `root` whose media ID
/// file is `m`: its MAC verifies with the key this host holds for its `media_id`.
pub fn prove(state_dir: &Path, root: &Path, m: &MediaFile) -> Result<Proof> {
    prove_and_unlock(state_dir, root, m).map(|(p, _)| p)
}

/// [`prove`], and the keys the proof unlocked (an encrypted medium's; plaintext otherwise).
pub fn prove_and_unlock(
    state_dir: &Path,
    root: &Path,
    m: &MediaFile,
) -> Result<(Proof, crate::crypt::Crypt)> {
    if m.encryption.is_some() {
        return super::keyring::prove(state_dir, root, m);
    }
    let foreign = |why| Error::Foreign {
        path: root.to_path_buf(),
        reason: ForeignReason::new(m, why),
    };
    if super::host_knows_encrypted(state_dir, &m.media_id)? {
        return Err(foreign(Unproven::Downgraded));
    }
    if m.format < 2 || m.mac.is_none() {
        return Err(foreign(Unproven::NoMac));
    }
    let key = load(state_dir, &m.media_id)?.ok_or_else(|| foreign(Unproven::NoKey))?;
    if !key.verifies(m) {
        return Err(foreign(Unproven::BadMac));
    }
    Ok((
        Proof {
            media_id: m.media_id,
            mac: m.mac.clone().unwrap_or_default(),
        },
        crate::crypt::Crypt::Plain,
    ))
}

/// What [`adopt`] did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Adopted {
    pub media: MediaFile,
    /// It was already proven with this host's key; nothing was changed.
    pub already: bool,
}

/// The operator's explicit act of taking an existing medium (format 1, another host's, or
/// one whose key this host lost) for this host: a new key, kept on the host, and
/// `media.yaml` rewritten as format 2 with this host's name and the MAC (a medium proven
/// with this host's key but naming an old host name is re-sealed with the same key). Holds the
/// medium's lock while it writes. Refuses to replace a key this host holds for the same
/// id (another disk claiming that id would take the place of the real one) unless
/// `replace_key`.
///
/// An encrypted medium is unlocked with this host's key if it opens it, else with the
/// recovery key or passphrase `ask` gives; its data key is then wrapped for a new key kept
/// here (its backups, tree and keys stay as they are). `secret_given`: a recovery key or
/// passphrase was given, so a plaintext medium is refused (as a reader refuses it).
pub fn adopt(
    state_dir: &Path,
    root: &Path,
    host: &str,
    replace_key: bool,
    ask: Option<super::keyring::Ask>,
    secret_given: bool,
) -> Result<Adopted> {
    let dir = Beneath::open(root)?;
    read_media(&dir)?; // not enrolled, unreadable: say so before locking
    let lock = lock_writer(&dir)?;
    let m = read_media(&dir)?;
    let proven = prove(state_dir, root, &m).is_ok();
    if proven && m.host == host {
        return Ok(Adopted {
            media: m,
            already: true,
        });
    }
    if !proven && !replace_key && load(state_dir, &m.media_id)?.is_some() {
        return Err(Error::Refused(format!(
            "{}: this host already holds a key for medium {} and this disk's media.yaml does not verify with it; \
             adopting would make the disk that does verify foreign. Use --replace-key if this disk is the one to keep",
            root.display(),
            m.media_id
        )));
    }
    let unlock = super::keyring::Unlock {
        state_dir: Some(state_dir),
        ask,
        secret_given,
    };
    if m.encryption.is_some() {
        let media = super::keyring::adopt(&dir, state_dir, root, &m, host, &unlock)?;
        drop(lock);
        info!(medium = %media.media_id, label = %media.label, path = %root.display(), "encrypted medium adopted");
        return Ok(Adopted {
            media,
            already: false,
        });
    }
    super::keyring::plaintext(root, &m, &unlock)?;
    let mut media = m.clone();
    media.host = host.to_string();
    match load(state_dir, &m.media_id)? {
        // Ours already, under another host name (the host was renamed): the same key.
        Some(key) if proven => key.seal(&mut media),
        _ => {
            enrol(state_dir, &mut media)?;
        }
    }
    let text = serde_yaml::to_string(&media).expect("a media file serializes");
    dir.atomic_write("media.yaml", text.as_bytes())?;
    drop(lock);
    info!(medium = %media.media_id, label = %media.label, path = %root.display(), "medium adopted");
    Ok(Adopted {
        media,
        already: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn media() -> MediaFile {
        MediaFile {
            format: 2,
            media_id: MediaId(
                uuid::Uuid::parse_str("5250cd7d-6caa-4a55-99f2-9526c1c59446").unwrap(),
            ),
            label: "Tray A".into(),
            host: "fileserver".into(),
            created: DateTime::parse_from_rfc3339("2026-11-29T19:19:40.123456789Z")
                .unwrap()
                .with_timezone(&Utc),
            encryption: None,
            mac: None,
        }
    }

    #[test]
    fn the_canonical_bytes_are_length_prefixed_fields() {
        let c = canonical(&media());
        let mut want = Vec::new();
        for f in [
            "trayback media.yaml v2",
            "2",
            "5250cd7d-6caa-4a55-99f2-9526c1c59446",
            "Tray A",
            "fileserver",
            "2026-11-29T19:19:40.123456789Z",
        ] {
            want.extend_from_slice(&(f.len() as u32).to_le_bytes());
            want.extend_from_slice(f.as_bytes());
        }
        assert_eq!(c, want);
    }

    #[test]
    fn a_sealed_file_verifies_and_any_change_breaks_it() {
        let key = MediumKey::from_bytes([7; 32]);
        let mut m = media();
        key.seal(&mut m);
        assert!(key.verifies(&m));
        // Round trip through YAML keeps the MAC valid.
        let back: MediaFile = serde_yaml::from_str(&serde_yaml::to_string(&m).unwrap()).unwrap();
        assert!(key.verifies(&back));
        assert!(!MediumKey::from_bytes([8; 32]).verifies(&m));
        for change in [
            |m: &mut MediaFile| m.host = "elsewhere".into(),
            |m: &mut MediaFile| m.label = "Tray B".into(),
            |m: &mut MediaFile| m.media_id = MediaId(uuid::Uuid::nil()),
            |m: &mut MediaFile| m.created += chrono::Duration::nanoseconds(1),
            |m: &mut MediaFile| m.format = 3,
            |m: &mut MediaFile| m.mac = Some("00".repeat(32)),
            |m: &mut MediaFile| m.mac = Some("not hex".into()),
            |m: &mut MediaFile| m.mac = None,
        ] {
            let mut c = m.clone();
            change(&mut c);
            assert!(!key.verifies(&c), "{c:?}");
        }
    }

    #[test]
    fn sub_keys_differ_by_label() {
        let key = MediumKey::from_bytes([1; 32]);
        assert_ne!(
            key.subkey(MAC_KEY_LABEL),
            key.subkey("trayback pack encryption v1")
        );
        assert_eq!(format!("{key:?}"), "MediumKey(…)");
    }

    #[test]
    fn prove_needs_the_key_and_a_good_mac() {
        let state = tempfile::tempdir().unwrap();
        let root = Path::new("/nowhere");
        let mut m = media();
        let why = |r: Result<Proof>| match r {
            Err(Error::Foreign { reason, .. }) => Some(reason.why),
            _ => None,
        };
        assert_eq!(why(prove(state.path(), root, &m)), Some(Unproven::NoMac));
        let mut fake = m.clone();
        MediumKey::from_bytes([9; 32]).seal(&mut fake);
        assert_eq!(why(prove(state.path(), root, &fake)), Some(Unproven::NoKey));
        enrol(state.path(), &mut m).unwrap();
        assert!(prove(state.path(), root, &m).is_ok());
        assert_eq!(
            why(prove(state.path(), root, &fake)),
            Some(Unproven::BadMac)
        );
        let dir = keys_dir(state.path());
        let file = key_path(state.path(), &m.media_id);
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        let e = prove(state.path(), root, &fake).unwrap_err().to_string();
        assert!(
            !e.contains('\n') && e.contains("5250cd7d") && e.contains("Tray A"),
            "{e}"
        );
        // Once this host saw the id encrypted, a plaintext ID file under it is a downgrade,
        // whatever its MAC.
        crate::medium::keyring::seen::record_media_generation(state.path(), &m.media_id, 1)
            .unwrap();
        assert_eq!(
            why(prove(state.path(), root, &m)),
            Some(Unproven::Downgraded)
        );
        assert!(Unproven::Downgraded.is_tampering());
    }
}
