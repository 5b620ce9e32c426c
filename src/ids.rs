//! Typed identifiers: blocks and listing blobs (`BlockId`, a SHA-256), packs (`PackId`),
//! backups (`BackupId`, a per-medium sequence number) and media (`MediaId`, a UUID).
//!
//! Every id has one text form (lower-case hex, or decimal for backups) used in file names,
//! YAML, JSON and the CLI; `Display` and `FromStr` are exact inverses.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The SHA-256 of a block's uncompressed content (or of a listing blob's encoded bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub [u8; 32]);

impl BlockId {
    pub fn of(data: &[u8]) -> BlockId {
        BlockId(Sha256::digest(data).into())
    }
    /// The first `n` hex digits, for humans.
    pub fn short(&self, n: usize) -> String {
        let mut s = self.to_string();
        s.truncate(n);
        s
    }
}

/// A pack file's name: 16 random bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 16]);

impl PackId {
    pub fn random() -> PackId {
        PackId(*uuid::Uuid::new_v4().as_bytes())
    }
}

/// A backup's number on its medium: 1 for the first, never reused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackupId(pub u64);

/// A medium's identity: the UUID in its media ID file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MediaId(pub uuid::Uuid);

#[derive(Debug, thiserror::Error)]
#[error("not a valid {what}: {text:?}")]
pub struct ParseIdError {
    what: &'static str,
    text: String,
}

macro_rules! hex_id {
    ($t:ident, $n:expr, $what:expr) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), self)
            }
        }
        impl FromStr for $t {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, ParseIdError> {
                let mut out = [0u8; $n];
                hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError {
                    what: $what,
                    text: s.to_string(),
                })?;
                Ok($t(out))
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$t, E> {
                        s.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}
hex_id!(BlockId, 32, "block id");
hex_id!(PackId, 16, "pack id");

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
impl FromStr for BackupId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        s.trim_start_matches('#')
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(BackupId)
            .ok_or(ParseIdError {
                what: "backup id (a positive number)",
                text: s.to_string(),
            })
    }
}
impl fmt::Display for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl FromStr for MediaId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        uuid::Uuid::parse_str(s)
            .map(MediaId)
            .map_err(|_| ParseIdError {
                what: "media id",
                text: s.chars().take(64).collect(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn block_id_text_round_trips(bytes in proptest::array::uniform32(any::<u8>())) {
            let id = BlockId(bytes);
            prop_assert_eq!(id.to_string().parse::<BlockId>().unwrap(), id);
        }
        #[test]
        fn backup_id_text_round_trips(n in 1u64..u64::MAX) {
            prop_assert_eq!(BackupId(n).to_string().parse::<BackupId>().unwrap(), BackupId(n));
        }
    }

    #[test]
    fn bad_ids_are_refused() {
        assert!("xyz".parse::<BlockId>().is_err());
        assert!("0".parse::<BackupId>().is_err());
        assert!("-3".parse::<BackupId>().is_err());
        assert_eq!("#7".parse::<BackupId>().unwrap(), BackupId(7));
    }
}
