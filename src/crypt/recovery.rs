//! The recovery key: 20 random bytes a person can print and type back.
//!
//! Written as 36 characters of Crockford's base32 (`0-9 A-Z` without `I L O U`) in nine
//! groups of four, `XXXX-XXXX-…`: 32 characters for the 160 bits of the secret, then 4 for a
//! 20-bit check (the first 20 bits of SHA-256 of `"trayback recovery key v1"` followed by the
//! secret), so a typo is told apart from a wrong key. Reading is forgiving: case, spaces and
//! hyphens do not matter, `O` reads as `0` and `I`, `L` as `1`.
//!
//! The secret is the Argon2id password of the medium's recovery slot (FORMAT.md).

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const SECRET_LEN: usize = 20;
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CHARS: usize = 36;

/// A recovery key's secret bytes, zeroized on drop.
pub struct RecoveryKey(Zeroizing<[u8; SECRET_LEN]>);

impl std::fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryKey(…)")
    }
}

/// What reading a typed recovery key found. The secret is wiped on drop and never shown by
/// `Debug`.
#[derive(PartialEq, Eq)]
pub enum Parsed {
    Key(Zeroizing<[u8; SECRET_LEN]>),
    /// 36 characters of the alphabet whose check does not match: a typo.
    Typo,
    /// Not shaped like a recovery key at all (so perhaps a passphrase).
    NotAKey,
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Parsed::Key(_) => "Key(…)",
            Parsed::Typo => "Typo",
            Parsed::NotAKey => "NotAKey",
        })
    }
}

fn check(secret: &[u8; SECRET_LEN]) -> u32 {
    let d = Sha256::new()
        .chain_update(b"trayback recovery key v1")
        .chain_update(secret)
        .finalize();
    (u32::from(d[0]) << 12) | (u32::from(d[1]) << 4) | (u32::from(d[2]) >> 4)
}

fn value(c: u8) -> Option<u32> {
    let c = match c.to_ascii_uppercase() {
        b'O' => b'0',
        b'I' | b'L' => b'1',
        c => c,
    };
    ALPHABET.iter().position(|&a| a == c).map(|v| v as u32)
}

impl RecoveryKey {
    pub fn generate() -> std::io::Result<RecoveryKey> {
        let mut k = Zeroizing::new([0u8; SECRET_LEN]);
        super::random_fill(k.as_mut())?;
        Ok(RecoveryKey(k))
    }

    pub fn secret(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// The printable form, `XXXX-XXXX-…` (nine groups).
    pub fn display(&self) -> Zeroizing<String> {
        let mut bits = Zeroizing::new(Vec::with_capacity(CHARS));
        // 160 bits: 32 characters of 5 bits, most significant first.
        let mut acc: u64 = 0;
        let mut n = 0;
        for &b in self.0.iter() {
            acc = (acc << 8) | u64::from(b);
            n += 8;
            while n >= 5 {
                n -= 5;
                bits.push(ALPHABET[((acc >> n) & 31) as usize]);
            }
        }
        let c = check(&self.0);
        for shift in [15, 10, 5, 0] {
            bits.push(ALPHABET[((c >> shift) & 31) as usize]);
        }
        let mut out = Zeroizing::new(String::with_capacity(CHARS + 8));
        for (i, ch) in bits.iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                out.push('-');
            }
            out.push(*ch as char);
        }
        out
    }

    pub fn parse(text: &str) -> Parsed {
        let chars: Zeroizing<Vec<u8>> = Zeroizing::new(
            text.bytes()
                .filter(|c| !c.is_ascii_whitespace() && *c != b'-')
                .collect(),
        );
        if chars.len() != CHARS {
            return Parsed::NotAKey;
        }
        let Some(vals) = chars
            .iter()
            .map(|&c| value(c))
            .collect::<Option<Vec<u32>>>()
        else {
            return Parsed::NotAKey;
        };
        let vals = Zeroizing::new(vals);
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        let mut acc: u64 = 0;
        let mut n = 0;
        let mut at = 0;
        for &v in &vals[..32] {
            acc = (acc << 5) | u64::from(v);
            n += 5;
            if n >= 8 {
                n -= 8;
                secret[at] = (acc >> n) as u8;
                at += 1;
            }
        }
        let given = vals[32..].iter().fold(0u32, |a, &v| (a << 5) | v);
        if given != check(&secret) {
            return Parsed::Typo;
        }
        Parsed::Key(secret)
    }

    pub fn from_secret(secret: [u8; SECRET_LEN]) -> RecoveryKey {
        RecoveryKey(Zeroizing::new(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_key_reads_back_forgivingly_and_typos_are_caught() {
        let k = RecoveryKey::from_secret([0xA5; SECRET_LEN]);
        let shown = k.display();
        assert_eq!(shown.len(), 36 + 8);
        assert_eq!(shown.split('-').count(), 9);
        assert_eq!(
            RecoveryKey::parse(&shown),
            Parsed::Key(Zeroizing::new([0xA5; SECRET_LEN]))
        );
        let sloppy = shown.to_lowercase().replace('-', " ");
        assert_eq!(
            RecoveryKey::parse(&sloppy),
            Parsed::Key(Zeroizing::new([0xA5; SECRET_LEN]))
        );
        // One character changed anywhere is a typo (the check covers all 160 bits).
        for i in (0..shown.len()).filter(|i| i % 5 != 4) {
            let mut t = shown.as_bytes().to_vec();
            t[i] = if t[i] == b'7' { b'8' } else { b'7' };
            let t = String::from_utf8(t).unwrap();
            assert_eq!(RecoveryKey::parse(&t), Parsed::Typo, "{t}");
        }
        assert_eq!(RecoveryKey::parse("correct horse"), Parsed::NotAKey);
        let g = RecoveryKey::generate().unwrap();
        assert_eq!(
            RecoveryKey::parse(&g.display()),
            Parsed::Key(Zeroizing::new(*g.secret()))
        );
    }
}
