//! The index: one listing blob per directory, a Merkle tree (FORMAT.md "Listings").
//!
//! A listing is the JSON encoding of [`Listing`], stored as a blob of kind `Listing` whose id
//! is the SHA-256 of that JSON. Invariants:
//! - entries are sorted by name bytes, names are unique, and the encoding is deterministic,
//!   so an unchanged directory encodes to the same bytes and the same id as before;
//! - names are single path components (checked again by every reader that writes files).

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::ids::BlockId;

pub const LISTING_FORMAT: u32 = 1;

/// Bytes that are usually UTF-8 (file names, symlink targets, xattr names). Encoded as a JSON
/// string when they are valid UTF-8, else as `{"hex": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn from_os(s: &OsStr) -> Bytes {
        Bytes(s.as_bytes().to_vec())
    }
    pub fn as_os(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BytesRepr {
    Text(String),
    Hex { hex: String },
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => s.serialize_str(t),
            Err(_) => BytesRepr::Hex {
                hex: hex::encode(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match BytesRepr::deserialize(d)? {
            BytesRepr::Text(t) => Ok(Bytes(t.into_bytes())),
            BytesRepr::Hex { hex } => hex::decode(hex)
                .map(Bytes)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Binary values (xattr values, ACLs): standard base64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binary(pub Vec<u8>);

impl Serialize for Binary {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Binary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Binary)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Bytes,
    pub value: Binary,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One directory entry with its attributes (from `lstat`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: Bytes,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification and status-change times, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// For files: the content, in order; each block but the last is exactly 256 KiB.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<BlockId>,
    /// For directories: the id of the directory's own listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlockId>,
    /// For symlinks: the target, as stored by the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Bytes>,
    /// For character and block devices: the device number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
}

impl Entry {
    /// A content id for humans: the SHA-256 of the concatenated block ids.
    pub fn content_id(&self) -> BlockId {
        let mut all = Vec::with_capacity(self.blocks.len() * 32);
        for b in &self.blocks {
            all.extend_from_slice(&b.0);
        }
        BlockId::of(&all)
    }

    /// Same content and attributes (what `diff` calls unchanged). Inode numbers and ctime
    /// are ignored: they say how the file was found, not what it is.
    pub fn same_as(&self, o: &Entry) -> bool {
        self.kind == o.kind
            && self.mode == o.mode
            && self.uid == o.uid
            && self.gid == o.gid
            && self.mtime_ns == o.mtime_ns
            && self.size == o.size
            && self.blocks == o.blocks
            && self.subtree == o.subtree
            && self.target == o.target
            && self.rdev == o.rdev
            && self.xattrs == o.xattrs
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listing {
    pub format: u32,
    pub entries: Vec<Entry>,
}

impl Listing {
    pub fn new(mut entries: Vec<Entry>) -> Listing {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Listing {
            format: LISTING_FORMAT,
            entries,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("listings always encode")
    }

    /// Decode and check a listing: known format, names valid and strictly sorted.
    pub fn decode(bytes: &[u8]) -> Result<Listing, String> {
        let l: Listing =
            serde_json::from_slice(bytes).map_err(|e| format!("listing does not parse: {e}"))?;
        if l.format != LISTING_FORMAT {
            return Err(format!("listing format {} is not supported", l.format));
        }
        for w in l.entries.windows(2) {
            if w[0].name >= w[1].name {
                return Err(format!(
                    "listing entries out of order or repeated at {:?}",
                    w[1].name.lossy()
                ));
            }
        }
        Ok(l)
    }

    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.0.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// Why a name cannot be a single path component, if it cannot.
pub fn bad_name(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("has an empty name")
    } else if name == b"." || name == b".." {
        Some("is named \".\" or \"..\" (path traversal)")
    } else if name.contains(&b'/') {
        Some("contains '/' (an absolute path or a path through another directory)")
    } else if name.contains(&0) {
        Some("contains a NUL byte")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(name: &[u8]) -> Entry {
        Entry {
            name: Bytes(name.to_vec()),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
            ctime_ns: 2,
            dev: 3,
            ino: 4,
            nlink: 1,
            size: 5,
            blocks: vec![BlockId::of(b"x")],
            subtree: None,
            target: None,
            rdev: None,
            xattrs: vec![Xattr {
                name: Bytes(b"user.a".to_vec()),
                value: Binary(vec![0, 255]),
            }],
        }
    }

    proptest! {
        #[test]
        fn listings_round_trip(names in proptest::collection::btree_set(proptest::collection::vec(1u8..=255, 1..20), 0..20)) {
            let l = Listing::new(names.iter().map(|n| entry(n)).collect());
            let back = Listing::decode(&l.encode()).unwrap();
            prop_assert_eq!(back.encode(), l.encode());
            prop_assert_eq!(back, l);
        }
    }

    #[test]
    fn repeated_names_are_refused() {
        let l = Listing {
            format: 1,
            entries: vec![entry(b"a"), entry(b"a")],
        };
        assert!(Listing::decode(&l.encode())
            .unwrap_err()
            .contains("repeated"));
    }

    #[test]
    fn traversal_names_are_bad() {
        for n in [&b".."[..], b".", b"", b"a/b", b"/etc", b"a\0"] {
            assert!(bad_name(n).is_some(), "{n:?}");
        }
        assert!(bad_name(b"...").is_none());
        assert!(bad_name(b"\xff\xfe").is_none());
    }
}
