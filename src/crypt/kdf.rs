//! Argon2id, the key derivation of the recovery and passphrase slots (FORMAT.md "media.yaml,
//! format 4"), and the window of parameters a reader accepts.
//!
//! The parameters come from the medium, which may be hostile: before anything is derived they
//! must lie in [`KDF_MIN`]..=[`KDF_MAX`], a window around what trayback writes
//! ([`KDF_DEFAULT`], 64 MiB, 3 passes, 1 lane). At the top of the window one try costs a
//! reader 256 MiB and, on the machines trayback runs on, a few seconds; a reader tries at most
//! two slots per secret typed. Anything outside is refused with one line, unread.

use super::{SecretKey, KEY_LEN};
use zeroize::Zeroizing;

/// Argon2id parameters of a key slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes over the memory.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

/// What a new slot uses: 64 MiB, 3 passes, 1 lane (about a fifth of a second).
pub const KDF_DEFAULT: KdfParams = KdfParams {
    m_kib: 64 * 1024,
    t: 3,
    p: 1,
};

/// The most a medium may ask of a reader: 4 times the default memory (256 MiB), 10 passes,
/// 4 lanes. Room to strengthen the defaults later, never a gigabyte or a minute per try.
pub const KDF_MAX: KdfParams = KdfParams {
    m_kib: 256 * 1024,
    t: 10,
    p: 4,
};

/// The least a reader accepts: 8 MiB, 1 pass, 1 lane (and Argon2's own rule, m ≥ 8p).
pub const KDF_MIN: KdfParams = KdfParams {
    m_kib: 8 * 1024,
    t: 1,
    p: 1,
};

/// Why a key could not be derived.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KdfError {
    #[error(
        "Argon2id parameters m={} KiB t={} p={} are outside what a reader accepts (m {}..={} KiB, t {}..={}, p {}..={}); refused without deriving anything",
        .0.m_kib, .0.t, .0.p, KDF_MIN.m_kib, KDF_MAX.m_kib, KDF_MIN.t, KDF_MAX.t, KDF_MIN.p, KDF_MAX.p
    )]
    OutOfRange(KdfParams),
    #[error("the Argon2id salt is not 32 hex digits")]
    BadSalt,
    #[error("Argon2id: {0}")]
    Argon2(argon2::Error),
}

impl KdfParams {
    /// Whether a reader accepts these parameters (checked before anything is derived).
    pub fn check(&self) -> Result<(), KdfError> {
        let within = |v: u32, lo: u32, hi: u32| (lo..=hi).contains(&v);
        if within(self.m_kib, KDF_MIN.m_kib.max(8 * self.p), KDF_MAX.m_kib)
            && within(self.t, KDF_MIN.t, KDF_MAX.t)
            && within(self.p, KDF_MIN.p, KDF_MAX.p)
        {
            Ok(())
        } else {
            Err(KdfError::OutOfRange(*self))
        }
    }

    /// Argon2id (version 0x13) of `secret` with `salt`: a 32-byte key.
    pub fn derive(&self, secret: &[u8], salt: &[u8]) -> Result<SecretKey, KdfError> {
        self.check()?;
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(KEY_LEN))
            .map_err(KdfError::Argon2)?;
        // The memory the derivation fills is wiped after it (argon2's `zeroize` feature wipes
        // its own intermediate hashes); it holds what the key-encryption key is computed from.
        let mut blocks = Zeroizing::new(vec![argon2::Block::default(); params.block_count()]);
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        a.hash_password_into_with_memory(secret, salt, out.as_mut(), &mut *blocks)
            .map_err(KdfError::Argon2)?;
        Ok(SecretKey::from_bytes(*out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_parameters_outside_the_window_are_refused_before_deriving() {
        for bad in [
            KdfParams {
                m_kib: KDF_MAX.m_kib + 1,
                ..KDF_DEFAULT
            },
            KdfParams {
                t: KDF_MAX.t + 1,
                ..KDF_DEFAULT
            },
            KdfParams {
                p: KDF_MAX.p + 1,
                ..KDF_DEFAULT
            },
            KdfParams {
                m_kib: KDF_MIN.m_kib - 1,
                ..KDF_DEFAULT
            },
            KdfParams {
                t: 0,
                ..KDF_DEFAULT
            },
            KdfParams {
                p: 0,
                ..KDF_DEFAULT
            },
            KdfParams {
                m_kib: u32::MAX,
                t: u32::MAX,
                p: u32::MAX,
            },
        ] {
            assert_eq!(
                bad.derive(b"x", &[0; 16]),
                Err(KdfError::OutOfRange(bad)),
                "{bad:?}"
            );
        }
        assert!(KDF_DEFAULT.check().is_ok() && KDF_MAX.check().is_ok());
        let e = KdfError::OutOfRange(KDF_MAX).to_string();
        assert!(e.contains("outside") && !e.contains('\n'), "{e}");
        let small = KDF_MIN;
        assert_eq!(
            small.derive(b"x", &[0; 16]).unwrap(),
            small.derive(b"x", &[0; 16]).unwrap()
        );
        assert_ne!(
            small.derive(b"x", &[0; 16]).unwrap(),
            small.derive(b"y", &[0; 16]).unwrap()
        );
    }
}
