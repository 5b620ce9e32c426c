//! The keys of an encrypted medium (`media.yaml` formats 3 and 4, FORMAT.md "Encryption"):
//! unlocking its data key with this host's key, the recovery key or the passphrase, proving it
//! is this host's, and changing its key slots.
//!
//! Invariants:
//! - the data key is on the medium only wrapped: by the host key (`<state_dir>/keys/<id>.key`,
//!   the file that holds a format-2 medium's key), by Argon2id of the recovery key, and
//!   optionally by Argon2id of a passphrase; each wrap binds the medium id and its slot;
//! - the media ID file (every field, every slot, its key-slot generation) is MACed with a
//!   sub-key of the data key ([`slots`]): whoever can unwrap the data key can tell an altered ID
//!   file, and nobody without it can make one that verifies; a writer refuses a medium whose
//!   MAC does not verify;
//! - every change of the key slots (passphrase, host key rotation, adoption) writes the ID
//!   file with its generation one higher, atomically under the writer lock, and then this host
//!   records that generation ([`seen`]); a writer refuses an ID file older than the newest this
//!   host saw (an old one put back, with a passphrase since removed), and the agent reports it
//!   tampered;
//! - a slot's Argon2id parameters are checked against the reader's window
//!   ([`crate::crypt::KDF_MAX`]) before use, and the ID file's other lengths before they are
//!   decoded;
//! - key material is zeroized after use and never logged; errors name the medium, never a key;
//! - a new host key is kept on the host first, as `<id>.key.next`, and put in place only once
//!   the medium carries its wrap.

pub mod seen;
mod slots;

use super::key::{self, ForeignReason, MediumKey, Proof, Unproven};
use super::{lock_writer, read_media, Beneath, MediaFile};
use crate::crypt::recovery::{Parsed, RecoveryKey};
use crate::crypt::{Crypt, Keys, SecretKey};
use crate::error::{Error, IoContext, Result};
use crate::fsio;
use crate::ids::MediaId;
use serde::Serialize;
pub use slots::{
    check, Cipher, Encryption, SlotKind, MEDIA_FORMAT_ENCRYPTED, MEDIA_FORMAT_ENCRYPTED_V3,
};
use slots::{generation, host_kek, replace_slot, seal, slot, verifies, Kdf, KeySlot};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::info;
use zeroize::Zeroizing;

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

/// The writer's proof for an encrypted medium: this host's key opens the host slot, the data
/// key's MAC verifies over the whole ID file, and the ID file is not older than the newest
/// this host saw (which is recorded, if this one is newer). Returns the unlocked keys.
pub fn prove(state_dir: &Path, root: &Path, m: &MediaFile) -> Result<(Proof, Crypt)> {
    let (dk, keys) = unlock_host(state_dir, root, m)?;
    drop(dk);
    remember(state_dir, m);
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

/// `Some` if `m`'s key slots are older than the newest generation this host saw of them.
fn rolled_back(state_dir: &Path, m: &MediaFile) -> Result<Option<Unproven>> {
    let found = generation(m);
    Ok(seen::media_generation(state_dir, &m.media_id)?
        .filter(|&seen| found < seen)
        .map(|seen| Unproven::RolledBack { found, seen }))
}

/// Unlock with this host's key, for a writer: the MAC must verify and the ID file must not be
/// rolled back.
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
    if let Some(why) = rolled_back(state_dir, m)? {
        return Err(foreign(root, m, why));
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
    /// A recovery key or passphrase was given for this medium (a file or a descriptor, not
    /// merely a prompt at hand): it must then be encrypted, and a plaintext one is refused
    /// unread (a plaintext ID file where a key was expected is what a forgery looks like).
    pub secret_given: bool,
}

impl<'a> Unlock<'a> {
    pub fn host(state_dir: &'a Path) -> Unlock<'a> {
        Unlock {
            state_dir: Some(state_dir),
            ..Unlock::default()
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
        let kek = kdf.derive(pw).map_err(|e| Error::Damaged {
            path: root.join("trayback/media.yaml"),
            detail: format!("{kind:?} key slot: {e}"),
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
/// altered (a label, a host name, a key slot), and one older than this host saw was put back:
/// the records, which authenticate on their own, are still read, with a warning; writers
/// refuse such a medium ([`prove`]).
pub fn unlock(root: &Path, m: &MediaFile, u: &Unlock) -> Result<Crypt> {
    if m.encryption.is_none() {
        return plaintext(root, m, u).map(|()| Crypt::Plain);
    }
    let dk = data_key(root, m, u)?;
    let keys = keys_of(m, &dk);
    let doubt = if !verifies(&keys, m) {
        Some(Unproven::Altered)
    } else if let Some(state_dir) = u.state_dir {
        rolled_back(state_dir, m)?
    } else {
        None
    };
    if let Some(why) = doubt {
        tracing::warn!(path = %root.display(), medium = %m.media_id, "{why}; reading it all the same (nothing will be written to it)");
    }
    Ok(Crypt::Sealed(Arc::new(keys)))
}

/// Whether a reader may take medium `m`, whose ID file says plaintext, as plaintext.
pub(super) fn plaintext(root: &Path, m: &MediaFile, u: &Unlock) -> Result<()> {
    let refuse = |why: String| {
        Err(Error::Damaged {
            path: root.join("trayback/media.yaml"),
            detail: format!("{why}; not reading it"),
        })
    };
    if let Some(state_dir) = u.state_dir {
        if super::host_knows_encrypted(state_dir, &m.media_id)? {
            return refuse(format!("medium {}: {}", m.media_id, Unproven::Downgraded));
        }
    }
    if u.secret_given {
        return refuse(format!(
            "a recovery key or passphrase was given, but medium {}'s ID file says it is not encrypted (format {}): a plaintext medium where an encrypted one is expected is what a forgery looks like (run without --key-file/--key-fd to read a medium you know to be plaintext)",
            m.media_id, m.format
        ));
    }
    Ok(())
}

/// A new encrypted medium's keys: a data key, a host key kept on the host, a recovery key
/// (returned, to be shown once) and, if given, a passphrase slot; `m` becomes format 4,
/// key-slot generation 1 (recorded by the caller once `m` is on the medium, [`enrolled`]).
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
    let kek = kdf
        .derive(recovery.secret())
        .map_err(|e| Error::Refused(e.to_string()))?;
    slots.push(KeySlot::new(
        SlotKind::Recovery,
        Some(kdf),
        &kek,
        &m.media_id,
        &dk,
    ));
    if let Some(p) = passphrase {
        slots.push(passphrase_slot(state_dir, &m.media_id, &dk, p)?);
    }
    m.encryption = Some(Encryption {
        cipher: Cipher::XChaCha20Poly1305,
        generation: None,
        keys: slots,
    });
    let keys = keys_of(m, &dk);
    seal(&keys, m, 1);
    key::store(state_dir, &m.media_id, &host)?;
    Ok((Crypt::Sealed(Arc::new(keys)), recovery))
}

/// After an enrolled medium's ID file is written: this host saw its key-slot generation.
pub fn enrolled(state_dir: &Path, m: &MediaFile) {
    remember(state_dir, m);
}

/// Record that this host saw `m`'s key-slot generation (proven, or written by it). What is on
/// the medium stands either way: a host that cannot keep the record (its state directory full
/// or read-only) only loses the detection of this file's rollback, and says so.
fn remember(state_dir: &Path, m: &MediaFile) {
    if let Err(e) = seen::record_media_generation(state_dir, &m.media_id, generation(m)) {
        tracing::warn!(medium = %m.media_id, cause = %e, "cannot record the generation of the medium's ID file on this host; putting an older one back would not be noticed");
    }
}

fn passphrase_slot(
    state_dir: &Path,
    id: &MediaId,
    dk: &SecretKey,
    passphrase: &str,
) -> Result<KeySlot> {
    if passphrase.is_empty() {
        return Err(Error::Refused(
            "an empty passphrase protects nothing".into(),
        ));
    }
    let kdf = Kdf::fresh().at(key::keys_dir(state_dir))?;
    let kek = kdf
        .derive(passphrase.as_bytes())
        .map_err(|e| Error::Refused(e.to_string()))?;
    Ok(KeySlot::new(SlotKind::Passphrase, Some(kdf), &kek, id, dk))
}

/// Write `m`, whose key slots changed, as the next key-slot generation: sealed with the data
/// key, atomically on the medium, then recorded on this host (after the medium: a crash in
/// between leaves the host behind, never ahead).
fn write_changed(dir: &Beneath, state_dir: &Path, m: &mut MediaFile, dk: &SecretKey) -> Result<()> {
    // The generation is authenticated, so only a holder of the data key could have set it
    // to the end of the range; even so, no wrap back to an older number.
    let next = generation(m).checked_add(1).ok_or_else(|| {
        Error::Refused(format!(
            "{}: the ID file's key-slot generation is at its limit; enrol a new medium",
            dir.shown("media.yaml").display()
        ))
    })?;
    seal(&keys_of(m, dk), m, next);
    let text = serde_yaml::to_string(m).expect("a media file serializes");
    dir.atomic_write("media.yaml", text.as_bytes())?;
    remember(state_dir, m);
    Ok(())
}

/// Wrap `dk` for a new host key in `m`'s host slot and write `m` ([`write_changed`]): the new
/// key waits beside the old one as `<id>.key.next` until the medium carries its wrap, so a
/// crash in between leaves a key that opens the medium either way; then it takes the old
/// one's place.
fn rewrap_for_new_host_key(
    dir: &Beneath,
    state_dir: &Path,
    m: &mut MediaFile,
    dk: &SecretKey,
) -> Result<()> {
    let kdir = key::keys_dir(state_dir);
    let host = MediumKey::generate().at(&kdir)?;
    let next = next_key_path(state_dir, &m.media_id);
    key::store_path(state_dir, &next, &host)?;
    let wrap = KeySlot::new(SlotKind::Host, None, &host_kek(&host), &m.media_id, dk);
    replace_slot(m, wrap);
    write_changed(dir, state_dir, m, dk)?;
    let dest = key::key_path(state_dir, &m.media_id);
    fs::rename(&next, &dest).at(&dest)?;
    fsio::fsync_dir(&kdir).at(&kdir)
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
            let slot = passphrase_slot(state_dir, &m.media_id, &dk, p)?;
            replace_slot(&mut m, slot);
            KeyChange::PassphraseSet
        }
        None => {
            slots::remove_slot(&mut m, SlotKind::Passphrase);
            KeyChange::PassphraseRemoved
        }
    };
    write_changed(&dir, state_dir, &mut m, &dk)?;
    info!(medium = %m.media_id, change = ?change, generation = generation(&m), "key slots changed");
    Ok(change)
}

/// Replace this host's key for the encrypted medium at `root` ([`rewrap_for_new_host_key`]).
pub fn rotate_host_key(state_dir: &Path, root: &Path) -> Result<KeyChange> {
    let (dir, _lock, mut m, dk) = lock_own(state_dir, root)?;
    rewrap_for_new_host_key(&dir, state_dir, &mut m, &dk)?;
    info!(medium = %m.media_id, generation = generation(&m), "host key rotated");
    Ok(KeyChange::HostKeyRotated)
}

/// Adopt an encrypted medium on this host (a replaced server): unlock it with the recovery
/// key or passphrase (or this host's key), wrap its data key for a new host key kept here,
/// name this host. Its backups and tree go on as they were. Refuses an altered ID file, and
/// one older than this host saw (adopting it would bring back the slots it had). The caller
/// holds the writer lock.
pub(super) fn adopt(
    dir: &Beneath,
    state_dir: &Path,
    root: &Path,
    m: &MediaFile,
    host: &str,
    unlock: &Unlock,
) -> Result<MediaFile> {
    let dk = data_key(root, m, unlock)?;
    if !verifies(&keys_of(m, &dk), m) {
        return Err(foreign(root, m, Unproven::Altered));
    }
    if let Some(why) = rolled_back(state_dir, m)? {
        return Err(foreign(root, m, why));
    }
    let mut media = m.clone();
    media.host = host.to_string();
    rewrap_for_new_host_key(dir, state_dir, &mut media, &dk)?;
    Ok(media)
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
