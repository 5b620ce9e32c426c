//! The `encryption:` section of an encrypted medium's `media.yaml` (formats 3 and 4, FORMAT.md
//! "media.yaml, format 4"): its key slots, its generation, the checks made before any of it is
//! used, and the MAC over the whole ID file.
//!
//! Invariants:
//! - [`check`] runs on every section read from a disk before anything in it is used: slot
//!   count, one slot of each kind, wrap lengths, Argon2id parameters within the reader's window
//!   ([`crate::crypt::KDF_MAX`]), salts, and a generation exactly when the format has one;
//! - the MAC ([`seal`], [`verifies`]) covers every field and every slot, and in format 4 the
//!   generation, under a sub-key of the data key: nobody without the data key can make an ID
//!   file that verifies, nor make an old one look newer;
//! - a slot's wrap binds the medium id and the slot's kind.

use super::super::key::{self, canonical_fields, MediumKey};
use super::super::MediaFile;
use crate::crypt::{self, KdfError, KdfParams, Keys, SecretKey, KDF_DEFAULT};
use crate::ids::MediaId;
use serde::{Deserialize, Serialize};

/// The media ID file format an encrypted medium is written in: format 3 and a key-slot
/// generation.
pub const MEDIA_FORMAT_ENCRYPTED: u32 = 4;
/// Encrypted media before the generation (still read; written as format 4 at the first change
/// of their key slots).
pub const MEDIA_FORMAT_ENCRYPTED_V3: u32 = 3;
const MAC_DOMAIN_V3: &str = "trayback media.yaml v3";
const MAC_DOMAIN_V4: &str = "trayback media.yaml v4";
const MAX_SLOTS: usize = 8;

/// `encryption:` in a format-3 or format-4 `media.yaml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    pub cipher: Cipher,
    /// Format 4: 1 at enrolment, one more at every change of the key slots (passphrase set or
    /// removed, host key rotated, adoption). Absent in format 3, which counts as 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
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

impl SlotKind {
    fn name(self) -> &'static str {
        match self {
            SlotKind::Host => "host",
            SlotKind::Recovery => "recovery",
            SlotKind::Passphrase => "passphrase",
        }
    }
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

    /// New parameters: the defaults and a fresh salt.
    pub fn fresh() -> std::io::Result<Kdf> {
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

    fn salt(&self) -> Result<[u8; 16], KdfError> {
        let mut salt = [0u8; 16];
        hex::decode_to_slice(&self.salt, &mut salt).map_err(|_| KdfError::BadSalt)?;
        Ok(salt)
    }

    /// The key-encryption key for `secret` (parameters and salt checked first).
    pub fn derive(&self, secret: &[u8]) -> Result<SecretKey, KdfError> {
        let salt = self.salt()?;
        self.params().derive(secret, &salt)
    }
}

impl KeySlot {
    fn wrapped(&self) -> Option<Vec<u8>> {
        (self.wrapped.len() == 144)
            .then(|| hex::decode(&self.wrapped).ok())
            .flatten()
    }

    /// The data key, if this slot's wrap opens with `kek`.
    pub fn open(&self, kek: &SecretKey, id: &MediaId) -> Option<SecretKey> {
        crypt::unwrap(kek, id, self.slot as u8, &self.wrapped()?)
    }

    pub fn new(
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

/// Check an `encryption:` section of a format-`format` ID file read from a disk before
/// anything of it is used.
pub fn check(e: &Encryption, format: u32) -> Result<(), String> {
    match (format, e.generation) {
        (MEDIA_FORMAT_ENCRYPTED_V3, None) => {}
        (MEDIA_FORMAT_ENCRYPTED, Some(g)) if g >= 1 => {}
        (MEDIA_FORMAT_ENCRYPTED, _) => {
            return Err("format 4 needs a key-slot generation of at least 1".into())
        }
        _ => return Err(format!("format {format} has no key-slot generation")),
    }
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
                let checked = k.params().check().and_then(|()| k.salt().map(drop));
                checked.map_err(|e| format!("{:?} key slot: {e}", s.slot))?;
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

/// The key-slot generation of an encrypted ID file: format 3 has none and counts as 0.
pub fn generation(m: &MediaFile) -> u64 {
    m.encryption
        .as_ref()
        .and_then(|e| e.generation)
        .unwrap_or(0)
}

/// The bytes a format-3 or format-4 MAC covers: the six fields of format 2 (FORMAT.md) with
/// domain `"trayback media.yaml v3"` or `"… v4"`, then the cipher, in format 4 the
/// generation, the number of slots, and for each slot its kind, its KDF
/// (`"argon2id M T P SALT"`, or empty) and its wrapped key; every field a u32 little-endian
/// length and its bytes.
pub fn canonical(m: &MediaFile) -> Vec<u8> {
    let v4 = m.format == MEDIA_FORMAT_ENCRYPTED;
    let mut fields: Vec<String> =
        canonical_fields(m, if v4 { MAC_DOMAIN_V4 } else { MAC_DOMAIN_V3 });
    if let Some(e) = &m.encryption {
        fields.push("xchacha20-poly1305".into());
        if v4 {
            fields.push(e.generation.unwrap_or(0).to_string());
        }
        fields.push(e.keys.len().to_string());
        for s in &e.keys {
            fields.push(s.slot.name().into());
            fields.push(match &s.kdf {
                Some(k) => format!("argon2id {} {} {} {}", k.m_kib, k.t, k.p, k.salt),
                None => String::new(),
            });
            fields.push(s.wrapped.clone());
        }
    }
    key::length_prefixed(&fields)
}

fn mac(keys: &Keys, m: &MediaFile) -> crypt::MacState {
    let mut h = keys.media_mac_key().hmac();
    h.update(&canonical(m));
    h
}

/// Make `m` a format-4 ID file of key-slot generation `generation`, MACed with `keys`.
pub fn seal(keys: &Keys, m: &mut MediaFile, generation: u64) {
    m.format = MEDIA_FORMAT_ENCRYPTED;
    if let Some(e) = m.encryption.as_mut() {
        e.generation = Some(generation);
    }
    m.mac = Some(hex::encode(mac(keys, m).finish()));
}

/// Whether `m`'s MAC verifies with `keys` (constant time).
pub fn verifies(keys: &Keys, m: &MediaFile) -> bool {
    let Some(Ok(given)) = m.mac.as_deref().map(hex::decode) else {
        return false;
    };
    mac(keys, m).verify(&given)
}

/// The key that wraps the data key in the host slot, from this host's key for the medium.
pub fn host_kek(host_key: &MediumKey) -> SecretKey {
    host_key.secret().subkey(crypt::LABEL_HOST_WRAP)
}

/// `m`'s slot of `kind`, if it has one.
pub fn slot(m: &MediaFile, kind: SlotKind) -> Option<&KeySlot> {
    m.encryption.as_ref()?.keys.iter().find(|s| s.slot == kind)
}

/// Put `s` in place of `m`'s slot of its kind (or add it), keeping the slots in kind order.
pub fn replace_slot(m: &mut MediaFile, s: KeySlot) {
    if let Some(e) = m.encryption.as_mut() {
        e.keys.retain(|o| o.slot != s.slot);
        e.keys.push(s);
        e.keys.sort_by_key(|s| s.slot as u8);
    }
}

/// Remove `m`'s slot of `kind`, if any.
pub fn remove_slot(m: &mut MediaFile, kind: SlotKind) {
    if let Some(e) = m.encryption.as_mut() {
        e.keys.retain(|s| s.slot != kind);
    }
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
            generation: Some(1),
            keys: vec![
                slot(SlotKind::Host, None),
                slot(SlotKind::Recovery, Some(kdf())),
            ],
        };
        assert!(check(&ok, 4).is_ok());
        let v3 = Encryption {
            generation: None,
            ..ok.clone()
        };
        assert!(check(&v3, 3).is_ok());
        assert!(check(&v3, 4).is_err(), "format 4 without a generation");
        assert!(check(&ok, 3).is_err(), "format 3 with a generation");
        let bad = |f: &dyn Fn(&mut Encryption)| {
            let mut e = ok.clone();
            f(&mut e);
            check(&e, 4).unwrap_err()
        };
        bad(&|e| e.generation = Some(0));
        bad(&|e| e.keys.push(slot(SlotKind::Host, None)));
        bad(&|e| e.keys = vec![slot(SlotKind::Passphrase, Some(kdf())); 9]);
        bad(&|e| e.keys[0].wrapped.push('0'));
        bad(&|e| e.keys[0].wrapped = "zz".repeat(72));
        bad(&|e| e.keys[0].kdf = Some(kdf()));
        bad(&|e| e.keys[1].kdf = None);
        bad(&|e| e.keys[1].kdf.as_mut().unwrap().m_kib = u32::MAX);
        bad(&|e| e.keys[1].kdf.as_mut().unwrap().t = 1000);
        bad(&|e| e.keys[1].kdf.as_mut().unwrap().t = 11);
        bad(&|e| e.keys[1].kdf.as_mut().unwrap().p = 0);
        bad(&|e| e.keys[1].kdf.as_mut().unwrap().p = 5);
        bad(&|e| e.keys[1].kdf.as_mut().unwrap().salt = "00".into());
        let msg = bad(&|e| e.keys[1].kdf.as_mut().unwrap().m_kib = (256 << 10) + 1);
        assert!(msg.contains("outside") && msg.contains("Recovery"), "{msg}");
    }
}
