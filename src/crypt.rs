//! Encryption at rest (FORMAT.md "Encryption"): the key hierarchy of an encrypted medium and
//! the two operations every record goes through, sealing and opening.
//!
//! - A medium's **data key** is 32 random bytes; it never goes anywhere unwrapped. Every key
//!   used is a sub-key, `HMAC-SHA-256(key = data key, message = label)` with a label of its
//!   own ([`SecretKey::subkey`]), so no key serves two purposes.
//! - Records are sealed with **XChaCha20-Poly1305**: a fresh random 24-byte nonce per record
//!   (random nonces of 192 bits never repeat in practice), stored in front of the ciphertext
//!   and its 16-byte tag. The associated data binds each record to its medium and to its
//!   place (see the `*_ad` functions), so a record copied from another medium, moved, or
//!   altered by one bit fails to open.
//! - Block ids of an encrypted medium are `HMAC-SHA-256(key = id sub-key, message = bytes)`
//!   ([`Crypt::block_id`]): equal content still deduplicates, and an id says nothing about
//!   the content to whoever lacks the key. A plaintext medium keeps plain SHA-256.
//!
//! Invariants:
//! - key material is wiped when dropped and never formatted (`Debug` prints an ellipsis): key
//!   bytes ([`SecretKey`], [`zeroize::Zeroizing`], the parsed recovery key); the AEAD's key
//!   and ChaCha20 state (`chacha20poly1305`, `chacha20` with their `zeroize` feature); Poly1305
//!   states (`poly1305`'s `zeroize` feature, enabled here); the keyed HMAC states of block
//!   ids, trailers and the ID file ([`MacState`], which wipes what the `hmac` crate does not);
//!   Argon2id's memory and intermediate hashes ([`kdf`], with `argon2`'s `zeroize` feature).
//!   Not wiped: stack temporaries inside the primitives' compression functions (see [`mac`]);
//! - opening never allocates more than the sealed bytes it is given, whose length callers cap
//!   before reading them.

pub mod kdf;
pub mod mac;
pub mod recovery;

pub use kdf::{KdfError, KdfParams, KDF_DEFAULT, KDF_MAX, KDF_MIN};
pub use mac::MacState;

use crate::ids::{BlockId, MediaId};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// What sealing adds to a record: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Sub-key labels (FORMAT.md "Key hierarchy").
pub const LABEL_ENCRYPTION: &str = "trayback encryption v1";
pub const LABEL_BLOCK_ID: &str = "trayback blob id v1";
pub const LABEL_PACK_MAC: &str = "trayback pack trailer v1";
pub const LABEL_MEDIA_MAC: &str = "trayback media.yaml mac v1";
pub const LABEL_HOST_WRAP: &str = "trayback host wrap v1";

/// 32 bytes of key, zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

/// Fill `buf` from the kernel's random source.
pub fn random_fill(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        filled +=
            rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(())
}

impl SecretKey {
    pub fn generate() -> std::io::Result<SecretKey> {
        let mut k = SecretKey([0; KEY_LEN]);
        random_fill(&mut k.0)?;
        Ok(k)
    }

    pub fn from_bytes(b: [u8; KEY_LEN]) -> SecretKey {
        SecretKey(b)
    }

    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The sub-key for one use: HMAC-SHA-256(key = self, message = label).
    pub fn subkey(&self, label: &str) -> SecretKey {
        let mut mac = self.hmac();
        mac.update(label.as_bytes());
        SecretKey(mac.finish())
    }

    /// HMAC-SHA-256 keyed with this key (wiped when dropped).
    pub fn hmac(&self) -> MacState {
        MacState::new(&self.0)
    }
}

/// Seal `plain` with `key`: `nonce (24) | ciphertext | tag (16)`.
pub fn seal(aead: &XChaCha20Poly1305, ad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
    out.resize(NONCE_LEN, 0);
    random_fill(&mut out).expect("the kernel's random source works");
    out.extend_from_slice(plain);
    let (nonce, body) = out.split_at_mut(NONCE_LEN);
    let tag = aead
        .encrypt_in_place_detached(XNonce::from_slice(nonce), ad, body)
        .expect("a record is far below XChaCha20's length limit");
    out.extend_from_slice(&tag);
    out
}

/// Open what [`seal`] made; `None` if it does not authenticate (wrong key, other associated
/// data, any changed bit) or is too short to be sealed.
pub fn open(aead: &XChaCha20Poly1305, ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut out = body.to_vec();
    aead.decrypt_in_place_detached(XNonce::from_slice(nonce), ad, &mut out, tag.into())
        .ok()?;
    Some(out)
}

pub fn aead(key: &SecretKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.bytes().into())
}

/// The keys of one unlocked encrypted medium, derived from its data key.
pub struct Keys {
    pub media_id: MediaId,
    aead: XChaCha20Poly1305,
    /// The AEAD key itself, for [`Keys::authentic`].
    enc: SecretKey,
    /// HMAC state keyed with the block-id sub-key (cloned per id: cheaper than keying).
    ids: MacState,
    pack_mac: MacState,
    media_mac: SecretKey,
    /// Keys the gear table of content-defined blocks ([`crate::store::chunk::Gear::keyed`]).
    chunker: SecretKey,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys({}, …)", self.media_id)
    }
}

impl Keys {
    pub fn derive(media_id: MediaId, data_key: &SecretKey) -> Keys {
        let enc = data_key.subkey(LABEL_ENCRYPTION);
        Keys {
            media_id,
            aead: aead(&enc),
            enc,
            ids: data_key.subkey(LABEL_BLOCK_ID).hmac(),
            pack_mac: data_key.subkey(LABEL_PACK_MAC).hmac(),
            media_mac: data_key.subkey(LABEL_MEDIA_MAC),
            chunker: data_key.subkey(crate::store::chunk::LABEL_CHUNKER),
        }
    }

    /// The key of the medium's gear table (content-defined block boundaries).
    pub fn chunker_key(&self) -> &SecretKey {
        &self.chunker
    }

    /// The key that MACs the media ID file.
    pub fn media_mac_key(&self) -> &SecretKey {
        &self.media_mac
    }

    pub fn seal(&self, ad: &[u8], plain: &[u8]) -> Vec<u8> {
        seal(&self.aead, ad, plain)
    }

    pub fn open(&self, ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        open(&self.aead, ad, sealed)
    }

    /// Whether `sealed` authenticates with `ad`, without decrypting it: the Poly1305 tag
    /// of XChaCha20-Poly1305 checked alone (what [`Keys::open`] checks before it decrypts).
    /// A third of the work of opening: what `verify` needs to know that the medium returns
    /// exactly what was sealed.
    pub fn authentic(&self, ad: &[u8], sealed: &[u8]) -> bool {
        use chacha20::cipher::{KeyIvInit, StreamCipher};
        use poly1305::universal_hash::{KeyInit as _, UniversalHash};
        if sealed.len() < SEAL_OVERHEAD {
            return false;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut cipher = chacha20::XChaCha20::new(self.enc.bytes().into(), nonce.into());
        let mut mac_key = Zeroizing::new([0u8; 32]);
        cipher.apply_keystream(mac_key.as_mut());
        let mut mac = poly1305::Poly1305::new(mac_key.as_ref().into());
        mac.update_padded(ad);
        mac.update_padded(body);
        let mut lengths = poly1305::Block::default();
        lengths[..8].copy_from_slice(&(ad.len() as u64).to_le_bytes());
        lengths[8..].copy_from_slice(&(body.len() as u64).to_le_bytes());
        mac.update(&[lengths]);
        mac.verify(tag.into()).is_ok()
    }

    /// The MAC over a pack's trailer (FORMAT.md "Packs of an encrypted medium").
    pub fn pack_mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = self.pack_mac.clone();
        m.update(self.media_id.0.as_bytes());
        for p in parts {
            m.update(p);
        }
        m.finish()
    }
}

/// Associated data of a blob record: domain, medium, and the record's 44-byte header (id,
/// kind, encoding, lengths).
pub fn blob_ad(media_id: &MediaId, record_header: &[u8; 44]) -> [u8; 76] {
    let mut ad = [0u8; 76];
    ad[..16].copy_from_slice(b"trayback blob v1");
    ad[16..32].copy_from_slice(media_id.0.as_bytes());
    ad[32..].copy_from_slice(record_header);
    ad
}

/// Associated data of a sealed file (tree, header): domain, medium, and the file's
/// 24-byte envelope head (magic, version, kind, counter).
pub fn file_ad(media_id: &MediaId, head: &[u8; 24]) -> [u8; 56] {
    let mut ad = [0u8; 56];
    ad[..16].copy_from_slice(b"trayback file v1");
    ad[16..32].copy_from_slice(media_id.0.as_bytes());
    ad[32..].copy_from_slice(head);
    ad
}

/// Associated data of a wrapped data key: domain, medium, and which slot.
pub fn wrap_ad(media_id: &MediaId, slot: u8) -> [u8; 37] {
    let mut ad = [0u8; 37];
    ad[..20].copy_from_slice(b"trayback key wrap v1");
    ad[20..36].copy_from_slice(media_id.0.as_bytes());
    ad[36] = slot;
    ad
}

/// How a medium's records are protected: plaintext (checked by SHA-256 alone), or sealed.
#[derive(Clone, Debug, Default)]
pub enum Crypt {
    #[default]
    Plain,
    Sealed(Arc<Keys>),
}

/// A streaming block-id hasher: SHA-256, or HMAC-SHA-256 with the id key.
pub enum IdHasher {
    Plain(Sha256),
    Keyed(MacState),
}

impl IdHasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            IdHasher::Plain(h) => h.update(data),
            IdHasher::Keyed(h) => h.update(data),
        }
    }

    pub fn finish(self) -> BlockId {
        BlockId(match self {
            IdHasher::Plain(h) => h.finalize().into(),
            IdHasher::Keyed(h) => h.finish(),
        })
    }
}

impl Crypt {
    pub fn keys(&self) -> Option<&Keys> {
        match self {
            Crypt::Plain => None,
            Crypt::Sealed(k) => Some(k),
        }
    }

    pub fn is_sealed(&self) -> bool {
        matches!(self, Crypt::Sealed(_))
    }

    pub fn hasher(&self) -> IdHasher {
        match self {
            Crypt::Plain => IdHasher::Plain(Sha256::new()),
            Crypt::Sealed(k) => IdHasher::Keyed(k.ids.clone()),
        }
    }

    /// The id of a blob: SHA-256 on a plaintext medium, keyed on an encrypted one.
    pub fn block_id(&self, data: &[u8]) -> BlockId {
        match self {
            Crypt::Plain => BlockId::of(data),
            Crypt::Sealed(_) => {
                let mut h = self.hasher();
                h.update(data);
                h.finish()
            }
        }
    }
}

/// Wrap `data_key` with `kek` for slot `slot` of medium `media_id`: 72 bytes.
pub fn wrap(kek: &SecretKey, media_id: &MediaId, slot: u8, data_key: &SecretKey) -> Vec<u8> {
    seal(&aead(kek), &wrap_ad(media_id, slot), data_key.bytes())
}

/// Unwrap what [`wrap`] made; `None` if it does not open with `kek`.
pub fn unwrap(kek: &SecretKey, media_id: &MediaId, slot: u8, wrapped: &[u8]) -> Option<SecretKey> {
    if wrapped.len() != KEY_LEN + SEAL_OVERHEAD {
        return None;
    }
    let plain = Zeroizing::new(open(&aead(kek), &wrap_ad(media_id, slot), wrapped)?);
    Some(SecretKey(plain.as_slice().try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> MediaId {
        MediaId(uuid::Uuid::from_bytes([3; 16]))
    }

    #[test]
    fn sealed_records_open_only_with_their_key_and_associated_data() {
        let k = aead(&SecretKey::from_bytes([1; 32]));
        let s = seal(&k, b"ad", b"hello");
        assert_eq!(s.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(open(&k, b"ad", &s).unwrap(), b"hello");
        assert!(open(&k, b"other", &s).is_none());
        assert!(open(&aead(&SecretKey::from_bytes([2; 32])), b"ad", &s).is_none());
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 1;
            assert!(open(&k, b"ad", &t).is_none(), "bit flipped at {i}");
        }
        assert!(open(&k, b"ad", &s[..SEAL_OVERHEAD - 1]).is_none());
        // The tag alone says the same as opening.
        let keys = Keys::derive(id(), &SecretKey::from_bytes([9; 32]));
        let big = vec![5u8; 100_000];
        let sealed = keys.seal(b"ad", &big);
        assert!(keys.authentic(b"ad", &sealed));
        assert!(!keys.authentic(b"da", &sealed));
        for i in [0, 23, 24, 5000, sealed.len() - 1] {
            let mut t = sealed.clone();
            t[i] ^= 0x80;
            assert!(!keys.authentic(b"ad", &t), "bit flipped at {i}");
            assert!(keys.open(b"ad", &t).is_none());
        }
        assert_ne!(seal(&k, b"ad", b"hello"), s, "a fresh nonce each time");
    }

    #[test]
    fn keyed_ids_differ_from_sha256_and_by_key() {
        let a = Crypt::Sealed(Arc::new(Keys::derive(
            id(),
            &SecretKey::from_bytes([1; 32]),
        )));
        let b = Crypt::Sealed(Arc::new(Keys::derive(
            id(),
            &SecretKey::from_bytes([2; 32]),
        )));
        assert_eq!(Crypt::Plain.block_id(b"x"), BlockId::of(b"x"));
        assert_ne!(a.block_id(b"x"), BlockId::of(b"x"));
        assert_ne!(a.block_id(b"x"), b.block_id(b"x"));
        assert_eq!(a.block_id(b"x"), a.block_id(b"x"));
    }

    #[test]
    fn a_wrapped_key_unwraps_only_in_its_slot_of_its_medium() {
        let kek = SecretKey::from_bytes([5; 32]);
        let dk = SecretKey::from_bytes([6; 32]);
        let w = wrap(&kek, &id(), 1, &dk);
        assert_eq!(w.len(), 72);
        assert_eq!(unwrap(&kek, &id(), 1, &w), Some(dk));
        assert!(unwrap(&kek, &id(), 2, &w).is_none());
        assert!(unwrap(&kek, &MediaId(uuid::Uuid::nil()), 1, &w).is_none());
        assert!(unwrap(&SecretKey::from_bytes([7; 32]), &id(), 1, &w).is_none());
    }
}
