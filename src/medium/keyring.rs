//! The keys of an encrypted medium (`media.yaml` format 3, FORMAT.md "Encryption"): its
//! data key wrapped in key slots, and unlocking it with this host's key, the recovery key or
//! the passphrase.
//!
//! Invariants:
//! - the data key is on the medium only wrapped: by the host key (`<state_dir>/keys/<id>.key`,
//!   the file that holds a format-2 medium's key), by Argon2id of the recovery key, and
//!   optionally by Argon2id of a passphrase; each wrap binds the medium id and its slot;
//! - the media ID file (every field, every slot) is MACed with a sub-key of the data key:
//!   whoever can unwrap the data key can tell an altered ID file, and nobody without it can
//!   make one that verifies; a writer refuses a medium whose MAC does not verify;
//! - a slot's Argon2id parameters are capped ([`crate::crypt::KDF_MAX`]) before use, and the
//!   ID file's other lengths are checked before they are decoded;
//! - key material is zeroized after use and never logged; errors name the medium, never a key;
//! - changing the key slots (passphrase, host key rotation, adoption) rewrites `media.yaml`
//!   atomically under the writer lock; a new host key is kept on the host first, as
//!   `<id>.key.next`, and put in place only once the medium carries its wrap.

use super::key::{self, canonical_fields, ForeignReason, MediumKey, Proof, Unproven};
use super::{lock_writer, read_media, Beneath, MediaFile};
use crate::crypt::recovery::{Parsed, RecoveryKey};
use crate::crypt::{self, Crypt, KdfParams, Keys, SecretKey, KDF_DEFAULT};
use crate::error::{Error, IoContext, Result};
use crate::fsio;
use crate::ids::MediaId;
use hmac::Mac;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::info;
use zeroize::Zeroizing;

/// The media ID file format of an encrypted medium.
pub const MEDIA_FORMAT_ENCRYPTED: u32 = 3;
pub const MAC_DOMAIN_V3: &str = "trayback media.yaml v3";
const MAX_SLOTS: usize = 8;

/// `encryption:` in a format-3 `media.yaml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    pub cipher: Cipher,
    pub keys: Vec<KeySlot>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Cipher {
    #[serde(rename = "xchacha20-poly1305")]
    XChaCha20Poly1305,
}

/// Which secret a slot's wrap opens with; the number is the last byte of the wrap's
/// associated data.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    Host = 1,
    Recovery = 2,
    Passphrase = 3,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeySlot {
    pub slot: SlotKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<Kdf>,
    /// The wrapped data key: 144 hex digits (nonce 24, key 32, tag 16 bytes).
    pub wrapped: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KdfAlgorithm {
    Argon2id,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Kdf {
    pub algorithm: KdfAlgorithm,
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
    /// 16 random bytes, 32 hex digits.
    pub salt: String,
}

impl Kdf {
    fn params(&self) -> KdfParams {
        KdfParams {
            m_kib: self.m_kib,
            t: self.t,
            p: self.p,
        }
    }

    fn fresh() -> std::io::Result<Kdf> {
        let mut salt = [0u8; 16];
        crypt::random_fill(&mut salt)?;
        Ok(Kdf {
            algorithm: KdfAlgorithm::Argon2id,
            m_kib: KDF_DEFAULT.m_kib,
            t: KDF_DEFAULT.t,
            p: KDF_DEFAULT.p,
            salt: hex::encode(salt),
        })
    }

    fn derive(&self, secret: &[u8]) -> std::result::Result<SecretKey, String> {
        let mut salt = [0u8; 16];
        hex::decode_to_slice(&self.salt, &mut salt).map_err(|_| "salt is not 32 hex digits")?;
        self.params().derive(secret, &salt)
    }
}

impl KeySlot {
    fn wrapped(&self) -> Option<Vec<u8>> {
        (self.wrapped.len() == 144)
            .then(|| hex::decode(&self.wrapped).ok())
            .flatten()
    }

    fn open(&self, kek: &SecretKey, id: &MediaId) -> Option<SecretKey> {
        crypt::unwrap(kek, id, self.slot as u8, &self.wrapped()?)
    }

    fn new(
        slot: SlotKind,
        kdf: Option<Kdf>,
        kek: &SecretKey,
        id: &MediaId,
        dk: &SecretKey,
    ) -> KeySlot {
        KeySlot {
            slot,
            kdf,
            wrapped: hex::encode(crypt::wrap(kek, id, slot as u8, dk)),
        }
    }
}

/// Check an `encryption:` section read from a disk before anything of it is used.
pub fn check(e: &Encryption) -> std::result::Result<(), String> {
    if e.keys.len() > MAX_SLOTS {
        return Err(format!("more than {MAX_SLOTS} key slots"));
    }
    for (i, s) in e.keys.iter().enumerate() {
        if e.keys[..i].iter().any(|o| o.slot == s.slot) {
            return Err(format!("two {:?} key slots", s.slot));
        }
        if s.wrapped().is_none() {
            return Err(format!(
                "{:?} key slot: the wrapped key is not 144 hex digits",
                s.slot
            ));
        }
        match (&s.kdf, s.slot) {
            (None, SlotKind::Host) => {}
            (Some(k), SlotKind::Recovery | SlotKind::Passphrase) => {
                k.params().check()?;
                if k.salt.len() != 32 || hex::decode(&k.salt).is_err() {
                    return Err(format!(
                        "{:?} key slot: the salt is not 32 hex digits",
                        s.slot
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "{:?} key slot: Argon2id parameters where none belong, or none where they do",
                    s.slot
                ))
            }
        }
    }
    Ok(())
}

/// The bytes a format-3 MAC covers: the six fields of format 2 (FORMAT.md) with domain
/// `"trayback media.yaml v3"`, then the cipher, the number of slots, and for each slot its
/// kind, its KDF (`"argon2id M T P SALT"`, or empty) and its wrapped key; every field a u32
/// little-endian length and its bytes.
pub fn canonical(m: &MediaFile) -> Vec<u8> {
    let mut fields: Vec<String> = canonical_fields(m, MAC_DOMAIN_V3);
    if let Some(e) = &m.encryption {
        fields.push("xchacha20-poly1305".into());
        fields.push(e.keys.len().to_string());
        for s in &e.keys {
            fields.push(
                match s.slot {
                    SlotKind::Host => "host",
                    SlotKind::Recovery => "recovery",
                    SlotKind::Passphrase => "passphrase",
                }
                .into(),
            );
            fields.push(match &s.kdf {
                Some(k) => format!("argon2id {} {} {} {}", k.m_kib, k.t, k.p, k.salt),
                None => String::new(),
            });
            fields.push(s.wrapped.clone());
        }
    }
    key::length_prefixed(&fields)
}

fn mac(keys: &Keys, m: &MediaFile) -> crypt::HmacSha256 {
    let mut h = keys.media_mac_key().hmac();
    h.update(&canonical(m));
    h
}

fn seal(keys: &Keys, m: &mut MediaFile) {
    m.format = MEDIA_FORMAT_ENCRYPTED;
    m.mac = Some(hex::encode(mac(keys, m).finalize().into_bytes()));
}

fn verifies(keys: &Keys, m: &MediaFile) -> bool {
    let Some(Ok(given)) = m.mac.as_deref().map(hex::decode) else {
        return false;
    };
    mac(keys, m).verify_slice(&given).is_ok()
}

fn host_kek(host_key: &MediumKey) -> SecretKey {
    host_key.secret().subkey(crypt::LABEL_HOST_WRAP)
}

fn slot(m: &MediaFile, kind: SlotKind) -> Option<&KeySlot> {
    m.encryption.as_ref()?.keys.iter().find(|s| s.slot == kind)
}

/// `<state_dir>/keys/<id>.key.next`: a rotated host key not yet in place.
fn next_key_path(state_dir: &Path, id: &MediaId) -> PathBuf {
    key::keys_dir(state_dir).join(format!("{id}.key.next"))
}

/// Unwrap the data key with this host's key: `Ok(None)` if the host holds none; an
/// interrupted rotation (a `.key.next` that opens the slot) is finished here.
fn unwrap_with_host(
    state_dir: &Path,
    m: &MediaFile,
) -> Result<Option<Result<SecretKey, Unproven>>> {
    let next = next_key_path(state_dir, &m.media_id);
    let current = key::load(state_dir, &m.media_id)?;
    let pending = key::load_path(&next)?;
    if current.is_none() && pending.is_none() {
        return Ok(None);
    }
    let Some(host_slot) = slot(m, SlotKind::Host) else {
        return Ok(Some(Err(Unproven::BadWrap)));
    };
    if let Some(dk) = current
        .as_ref()
        .and_then(|k| host_slot.open(&host_kek(k), &m.media_id))
    {
        return Ok(Some(Ok(dk)));
    }
    if let Some(dk) = pending
        .as_ref()
        .and_then(|k| host_slot.open(&host_kek(k), &m.media_id))
    {
        // Finish the interrupted change (best effort: the next open tries again).
        let _ = fs::rename(&next, key::key_path(state_dir, &m.media_id));
        return Ok(Some(Ok(dk)));
    }
    Ok(Some(Err(Unproven::BadWrap)))
}

fn keys_of(m: &MediaFile, dk: &SecretKey) -> Keys {
    Keys::derive(m.media_id, dk)
}

/// The writer's proof for a format-3 medium: this host's key opens the host slot and the
/// data key's MAC verifies over the whole ID file. Returns the unlocked keys.
pub fn prove(state_dir: &Path, root: &Path, m: &MediaFile) -> Result<(Proof, Crypt)> {
    let (dk, keys) = unlock_host(state_dir, root, m)?;
    drop(dk);
    Ok((
        Proof {
            media_id: m.media_id,
            mac: m.mac.clone().unwrap_or_default(),
        },
        Crypt::Sealed(Arc::new(keys)),
    ))
}

fn foreign(root: &Path, m: &MediaFile, why: Unproven) -> Error {
    Error::Foreign {
        path: root.to_path_buf(),
        reason: ForeignReason::new(m, why),
    }
}

fn unlock_host(state_dir: &Path, root: &Path, m: &MediaFile) -> Result<(SecretKey, Keys)> {
    let dk = match unwrap_with_host(state_dir, m)? {
        None => return Err(foreign(root, m, Unproven::NoKey)),
        Some(Err(why)) => return Err(foreign(root, m, why)),
        Some(Ok(dk)) => dk,
    };
    let keys = keys_of(m, &dk);
    if !verifies(&keys, m) {
        return Err(foreign(root, m, Unproven::Altered));
    }
    Ok((dk, keys))
}

/// Asks for the recovery key or passphrase of a medium (a prompt, a file, a descriptor).
/// `None`: no secret at hand.
pub type Ask<'a> = &'a dyn Fn(&MediaFile) -> Result<Option<Zeroizing<String>>>;

/// How a reader unlocks an encrypted medium: this host's key if `state_dir` holds one, else
/// the recovery key or passphrase that `ask` gives.
#[derive(Clone, Copy, Default)]
pub struct Unlock<'a> {
    pub state_dir: Option<&'a Path>,
    pub ask: Option<Ask<'a>>,
}

impl<'a> Unlock<'a> {
    pub fn host(state_dir: &'a Path) -> Unlock<'a> {
        Unlock {
            state_dir: Some(state_dir),
            ask: None,
        }
    }
}

/// Unwrap the data key with a typed secret: a recovery key if it reads as one, else a
/// passphrase.
fn unwrap_with_secret(root: &Path, m: &MediaFile, secret: &str) -> Result<SecretKey> {
    let wrong = |detail: &str| Error::WrongKey {
        path: root.to_path_buf(),
        media_id: m.media_id,
        detail: detail.to_string(),
    };
    let try_slot = |kind: SlotKind, pw: &[u8]| -> Result<Option<SecretKey>> {
        let Some(s) = slot(m, kind) else {
            return Ok(None);
        };
        let kdf = s
            .kdf
            .as_ref()
            .ok_or_else(|| wrong("a key slot lacks its parameters"))?;
        let kek = kdf.derive(pw).map_err(|d| Error::Damaged {
            path: root.join("trayback/media.yaml"),
            detail: d,
        })?;
        Ok(s.open(&kek, &m.media_id))
    };
    let parsed = RecoveryKey::parse(secret);
    if let Parsed::Key(k) = &parsed {
        if let Some(dk) = try_slot(SlotKind::Recovery, &k[..])? {
            return Ok(dk);
        }
    }
    if let Some(dk) = try_slot(SlotKind::Passphrase, secret.as_bytes())? {
        return Ok(dk);
    }
    Err(match parsed {
        Parsed::Typo => wrong("that recovery key has a typo (its check characters do not match)"),
        Parsed::Key(_) => wrong("that recovery key does not open this medium"),
        Parsed::NotAKey if slot(m, SlotKind::Passphrase).is_none() => {
            wrong("that is not a recovery key (nine groups of four characters), and the medium has no passphrase")
        }
        Parsed::NotAKey => wrong("that passphrase does not open this medium"),
    })
}

/// The data key of an encrypted medium, for a reader: this host's key if it holds one for
/// the medium, else the secret `ask` gives. The ID file must verify with it.
fn data_key(root: &Path, m: &MediaFile, u: &Unlock) -> Result<SecretKey> {
    if let Some(state_dir) = u.state_dir {
        if let Some(Ok(dk)) = unwrap_with_host(state_dir, m)? {
            return Ok(dk);
        }
    }
    let need = || Error::NeedKey {
        path: root.to_path_buf(),
        media_id: m.media_id,
    };
    let ask = u.ask.ok_or_else(need)?;
    let secret = ask(m)?.ok_or_else(need)?;
    unwrap_with_secret(root, m, secret.trim_end_matches(['\n', '\r']))
}

/// Unlock medium `m` for reading. An ID file that does not verify with the data key was
/// altered (a label, a host name, a key slot): the records, which authenticate on their own,
/// are still read, with a warning; writers refuse such a medium ([`prove`]).
pub fn unlock(root: &Path, m: &MediaFile, u: &Unlock) -> Result<Crypt> {
    if m.encryption.is_none() {
        // This host recorded tree generations of it, so it knew it encrypted: a plaintext
        // ID file now is a downgrade (a forged medium under its id), read by no one.
        if let Some(state_dir) = u.state_dir {
            if seen_generation(state_dir, &m.media_id)?.is_some() {
                return Err(Error::Damaged {
                    path: root.join("trayback/media.yaml"),
                    detail: format!(
                        "this host knows medium {} as encrypted, and its ID file now says plaintext: replaced (tampered); not reading it",
                        m.media_id
                    ),
                });
            }
        }
        return Ok(Crypt::Plain);
    }
    let dk = data_key(root, m, u)?;
    let keys = keys_of(m, &dk);
    if !verifies(&keys, m) {
        tracing::warn!(path = %root.display(), medium = %m.media_id, "{}; reading it all the same (nothing will be written to it)", Unproven::Altered);
    }
    Ok(Crypt::Sealed(Arc::new(keys)))
}

/// A new encrypted medium's keys: a data key, a host key kept on the host, a recovery key
/// (returned, to be shown once) and, if given, a passphrase slot; `m` becomes format 3.
pub fn enrol(
    state_dir: &Path,
    m: &mut MediaFile,
    passphrase: Option<&str>,
) -> Result<(Crypt, RecoveryKey)> {
    let kdir = key::keys_dir(state_dir);
    let dk = SecretKey::generate().at(&kdir)?;
    let host = MediumKey::generate().at(&kdir)?;
    let recovery = RecoveryKey::generate().at(&kdir)?;
    let mut slots = vec![KeySlot::new(
        SlotKind::Host,
        None,
        &host_kek(&host),
        &m.media_id,
        &dk,
    )];
    let kdf = Kdf::fresh().at(&kdir)?;
    let kek = kdf.derive(recovery.secret()).map_err(Error::Refused)?;
    slots.push(KeySlot::new(
        SlotKind::Recovery,
        Some(kdf),
        &kek,
        &m.media_id,
        &dk,
    ));
    if let Some(p) = passphrase {
        slots.push(passphrase_slot(&m.media_id, &dk, p)?);
    }
    m.encryption = Some(Encryption {
        cipher: Cipher::XChaCha20Poly1305,
        keys: slots,
    });
    let keys = keys_of(m, &dk);
    seal(&keys, m);
    key::store(state_dir, &m.media_id, &host)?;
    Ok((Crypt::Sealed(Arc::new(keys)), recovery))
}

fn passphrase_slot(id: &MediaId, dk: &SecretKey, passphrase: &str) -> Result<KeySlot> {
    if passphrase.is_empty() {
        return Err(Error::Refused(
            "an empty passphrase protects nothing".into(),
        ));
    }
    let kdf = Kdf::fresh().map_err(|e| Error::Refused(e.to_string()))?;
    let kek = kdf.derive(passphrase.as_bytes()).map_err(Error::Refused)?;
    Ok(KeySlot::new(SlotKind::Passphrase, Some(kdf), &kek, id, dk))
}

fn replace_slot(m: &mut MediaFile, s: KeySlot) {
    if let Some(e) = m.encryption.as_mut() {
        e.keys.retain(|o| o.slot != s.slot);
        e.keys.push(s);
        e.keys.sort_by_key(|s| s.slot as u8);
    }
}

fn write_media(dir: &Beneath, m: &MediaFile) -> Result<()> {
    let text = serde_yaml::to_string(m).expect("a media file serializes");
    dir.atomic_write("media.yaml", text.as_bytes())
}

/// What a change of key slots did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyChange {
    PassphraseSet,
    PassphraseRemoved,
    HostKeyRotated,
}

/// Open an encrypted medium of this host's for a change of its key slots: locked, proven.
fn lock_own(
    state_dir: &Path,
    root: &Path,
) -> Result<(Beneath, std::fs::File, MediaFile, SecretKey)> {
    let dir = Beneath::open(root)?;
    read_media(&dir)?;
    let lock = lock_writer(&dir)?;
    let m = read_media(&dir)?;
    if m.encryption.is_none() {
        return Err(Error::Refused(format!(
            "{}: a plaintext medium has no keys to change",
            root.display()
        )));
    }
    let (dk, _) = unlock_host(state_dir, root, &m)?;
    Ok((dir, lock, m, dk))
}

/// Set (or with `None` remove) the passphrase of this host's encrypted medium at `root`.
pub fn set_passphrase(
    state_dir: &Path,
    root: &Path,
    passphrase: Option<&str>,
) -> Result<KeyChange> {
    let (dir, _lock, mut m, dk) = lock_own(state_dir, root)?;
    let change = match passphrase {
        Some(p) => {
            let slot = passphrase_slot(&m.media_id, &dk, p)?;
            replace_slot(&mut m, slot);
            KeyChange::PassphraseSet
        }
        None => {
            if let Some(e) = m.encryption.as_mut() {
                e.keys.retain(|s| s.slot != SlotKind::Passphrase);
            }
            KeyChange::PassphraseRemoved
        }
    };
    seal(&keys_of(&m, &dk), &mut m);
    write_media(&dir, &m)?;
    info!(medium = %m.media_id, change = ?change, "key slots changed");
    Ok(change)
}

/// Replace this host's key for the encrypted medium at `root`: the new key is kept as
/// `<id>.key.next`, the medium's host slot rewrapped, then the new key put in place.
pub fn rotate_host_key(state_dir: &Path, root: &Path) -> Result<KeyChange> {
    let (dir, _lock, mut m, dk) = lock_own(state_dir, root)?;
    let host = MediumKey::generate().at(key::keys_dir(state_dir))?;
    let next = next_key_path(state_dir, &m.media_id);
    key::store_path(state_dir, &next, &host)?;
    let slot = KeySlot::new(SlotKind::Host, None, &host_kek(&host), &m.media_id, &dk);
    replace_slot(&mut m, slot);
    seal(&keys_of(&m, &dk), &mut m);
    write_media(&dir, &m)?;
    let dest = key::key_path(state_dir, &m.media_id);
    fs::rename(&next, &dest).at(&dest)?;
    fsio::fsync_dir(&key::keys_dir(state_dir)).at(key::keys_dir(state_dir))?;
    info!(medium = %m.media_id, "host key rotated");
    Ok(KeyChange::HostKeyRotated)
}

/// Adopt an encrypted medium on this host (a replaced server): unlock it with the recovery
/// key or passphrase, wrap its data key for a new host key kept here, name this host. Its
/// backups and tree go on as they were. The caller holds the writer lock.
pub(super) fn adopt(
    dir: &Beneath,
    state_dir: &Path,
    root: &Path,
    m: &MediaFile,
    host: &str,
    ask: Option<Ask>,
) -> Result<MediaFile> {
    let dk = data_key(
        root,
        m,
        &Unlock {
            state_dir: Some(state_dir),
            ask,
        },
    )?;
    if !verifies(&keys_of(m, &dk), m) {
        return Err(foreign(root, m, Unproven::Altered));
    }
    let host_key = MediumKey::generate().at(key::keys_dir(state_dir))?;
    let mut media = m.clone();
    media.host = host.to_string();
    replace_slot(
        &mut media,
        KeySlot::new(SlotKind::Host, None, &host_kek(&host_key), &m.media_id, &dk),
    );
    seal(&keys_of(&media, &dk), &mut media);
    // As in a rotation: the new key waits beside the old one until the medium carries its
    // wrap, so a crash in between leaves a key that opens the medium either way.
    let next = next_key_path(state_dir, &m.media_id);
    key::store_path(state_dir, &next, &host_key)?;
    write_media(dir, &media)?;
    let dest = key::key_path(state_dir, &m.media_id);
    fs::rename(&next, &dest).at(&dest)?;
    fsio::fsync_dir(&key::keys_dir(state_dir)).at(key::keys_dir(state_dir))?;
    Ok(media)
}

/// `<state_dir>/keys/<id>.generation`: the newest tree generation this host wrote to or
/// read from the medium (rollback detection, FORMAT.md "What encryption detects").
fn generation_path(state_dir: &Path, id: &MediaId) -> PathBuf {
    key::keys_dir(state_dir).join(format!("{id}.generation"))
}

pub fn seen_generation(state_dir: &Path, id: &MediaId) -> Result<Option<u64>> {
    let path = generation_path(state_dir, id);
    match fs::read_to_string(&path) {
        Ok(t) => match t.trim().parse() {
            Ok(g) => Ok(Some(g)),
            // Written without fsync (below): a host crash can leave it empty. Unknown, then.
            Err(_) => {
                tracing::warn!(path = %path.display(), "unreadable generation record; rollback of this medium's tree is not checked until the next write");
                Ok(None)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(&path),
    }
}

/// Record `generation` as the newest this host saw of medium `id`. Replaced by rename but not
/// fsync'd (it is written at every commit; two more fsyncs would cost a no-change backup a
/// third of its time): a host crash may lose the newest record, leaving an older or none.
pub fn record_generation(state_dir: &Path, id: &MediaId, generation: u64) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = generation_path(state_dir, id);
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

/// Keep a recovery key no one was there to be shown (the agent's auto-enrolment) in
/// `<state_dir>/keys/<id>.recovery`, root-only like the host keys beside it.
pub fn keep_recovery_key(state_dir: &Path, id: &MediaId, r: &RecoveryKey) -> Result<PathBuf> {
    let dir = key::keys_dir(state_dir);
    let path = dir.join(format!("{id}.recovery"));
    let text = Zeroizing::new(format!("{}\n", r.display().as_str()));
    fsio::atomic_write(&dir, &path, text.as_bytes()).at(&path)?;
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).at(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(kind: SlotKind, kdf: Option<Kdf>) -> KeySlot {
        KeySlot {
            slot: kind,
            kdf,
            wrapped: "ab".repeat(72),
        }
    }

    fn kdf() -> Kdf {
        Kdf {
            algorithm: KdfAlgorithm::Argon2id,
            m_kib: 65536,
            t: 3,
            p: 1,
            salt: "00".repeat(16),
        }
    }

    #[test]
    fn a_hostile_encryption_section_is_refused_before_use() {
        let ok = Encryption {
            cipher: Cipher::XChaCha20Poly1305,
            keys: vec![
                slot(SlotKind::Host, None),
                slot(SlotKind::Recovery, Some(kdf())),
            ],
        };
        assert!(check(&ok).is_ok());
        let bad = |f: &dyn Fn(&mut Encryption)| {
            let mut e = ok.clone();
            f(&mut e);
            check(&e).unwrap_err()
        };
        bad(&|e| e.keys.push(slot(SlotKind::Host, None)));
        bad(&|e| e.keys = vec![slot(SlotKind::Passphrase, Some(kdf())); 9]);
        bad(&|e| e.keys[0].wrapped.push('0'));
        bad(&|e| e.keys[0].wrapped = "zz".repeat(72));
        bad(&|e| e.keys[0].kdf = Some(kdf()));
        bad(&|e| e.keys[1].kdf = None);
        bad(&|e| e.keys[1].kdf.as_mut().unwrap().m_kib = u32::MAX);
        bad(&|e| e.keys[1].kdf.as_mut().unwrap().t = 1000);
        bad(&|e| e.keys[1].kdf.as_mut().unwrap().p = 0);
        bad(&|e| e.keys[1].kdf.as_mut().unwrap().salt = "00".into());
        let msg = bad(&|e| e.keys[1].kdf.as_mut().unwrap().m_kib = 1 << 30);
        assert!(msg.contains("exceed"), "{msg}");
    }
}
