//! The index: one listing blob per directory, a Merkle tree (FORMAT.md "Listings").
//!
//! A listing is the binary encoding of [`Listing`] (FORMAT.md has the bytes), stored as a blob
//! of kind `Listing` whose id is the SHA-256 of those bytes. Invariants:
//! - entries are sorted by name bytes, names are unique, and the encoding is deterministic,
//!   so an unchanged directory encodes to the same bytes and the same id as before;
//! - names are single path components (checked again by every reader that writes files);
//! - a listing is at most [`MAX_LISTING_LEN`] bytes, and decoding one allocates at most a
//!   small multiple of its length (every count is checked against the bytes left before
//!   anything is reserved for it), so a hostile listing costs memory in proportion to its size.

use base64::Engine;
use serde::{Serialize, Serializer};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::ids::BlockId;

/// The listing format of a medium whose content is cut into content-defined blocks.
pub const LISTING_FORMAT: u32 = 3;
/// The listing format of a medium with fixed 256 KiB blocks (tree format 1): the same bytes,
/// a stricter rule for a file's number of blocks.
pub const LISTING_FORMAT_FIXED: u32 = 2;
const LISTING_MAGIC: &[u8; 4] = b"TLST";
/// The longest listing (encoded, uncompressed) a reader accepts and a writer writes: 256 MiB,
/// a directory of a million entries at 268 bytes each (a file of up to five blocks with a
/// 60-byte name takes about 270). Decoding a listing allocates at most about 8 times its
/// length (the worst case: entries of one-byte xattrs; `tests/decode_alloc.rs` measures it).
pub const MAX_LISTING_LEN: usize = 256 << 20;
/// The fewest bytes an entry can take: a one-byte name, kind, the fixed fields, no xattrs.
const MIN_ENTRY: usize = 2 + 1 + 1 + 12 + 16 + 24 + 2;

/// Bytes that are usually UTF-8 (file names, symlink targets, xattr names). In the CLI's JSON
/// output, a string when they are valid UTF-8, else `{"hex": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn as_os(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

/// How bytes that are not UTF-8 show in JSON output.
#[derive(Serialize)]
struct HexBytes {
    hex: String,
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => s.serialize_str(t),
            Err(_) => HexBytes {
                hex: hex::encode(&self.0),
            }
            .serialize(s),
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Xattr {
    pub name: Bytes,
    pub value: Binary,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One directory entry with its attributes (from `lstat`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
    /// For files: the content, in order (FORMAT.md "Blobs and blob ids" bounds their number).
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
    /// An entry of `kind` named `name`, every attribute zero and nothing attached.
    pub fn new(name: Bytes, kind: EntryKind) -> Entry {
        Entry {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            dev: 0,
            ino: 0,
            nlink: 0,
            size: 0,
            blocks: Vec::new(),
            subtree: None,
            target: None,
            rdev: None,
            xattrs: Vec::new(),
        }
    }

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

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listing {
    pub format: u32,
    pub entries: Vec<Entry>,
}

impl Listing {
    pub fn new(entries: Vec<Entry>) -> Listing {
        Listing::with_format(LISTING_FORMAT, entries)
    }

    /// A listing of `format` ([`LISTING_FORMAT`] or [`LISTING_FORMAT_FIXED`], as the medium
    /// cuts content).
    pub fn with_format(format: u32, mut entries: Vec<Entry>) -> Listing {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Listing { format, entries }
    }

    /// The binary encoding (FORMAT.md "Listings"): deterministic, so an unchanged directory
    /// encodes to the same bytes and the same id.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(self.format, self.entries.len());
        // A listing in memory is encoded whole, whatever its length (a store refuses one
        // too long to put).
        w.limit = usize::MAX;
        for e in &self.entries {
            w.push(e);
        }
        w.finish()
            .expect("no limit on a listing encoded from memory")
    }

    /// Decode and check a listing: known format, every length inside the blob, names valid
    /// and strictly sorted, nothing left over.
    pub fn decode(bytes: &[u8]) -> Result<Listing, String> {
        let mut entries = Entries::new(bytes)?;
        let format = entries.format;
        let mut all: Vec<Entry> = Vec::with_capacity(entries.left);
        while let Some(e) = entries.next_entry()? {
            all.push(e);
        }
        Ok(Listing {
            format,
            entries: all,
        })
    }

    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.0.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }
}

fn kind_code(k: EntryKind) -> u8 {
    match k {
        EntryKind::File => 1,
        EntryKind::Dir => 2,
        EntryKind::Symlink => 3,
        EntryKind::Fifo => 4,
        EntryKind::Char => 5,
        EntryKind::Block => 6,
    }
}

fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    put_bytes16(out, &e.name.0);
    out.push(kind_code(e.kind));
    for v in [e.mode, e.uid, e.gid] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [e.mtime_ns, e.ctime_ns] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [e.dev, e.ino, e.nlink] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    match e.kind {
        EntryKind::File => {
            out.extend_from_slice(&e.size.to_le_bytes());
            out.extend_from_slice(&(e.blocks.len() as u32).to_le_bytes());
            for b in &e.blocks {
                out.extend_from_slice(&b.0);
            }
        }
        EntryKind::Dir => out.extend_from_slice(&e.subtree.unwrap_or(BlockId([0; 32])).0),
        EntryKind::Symlink => put_bytes32(out, e.target.as_ref().map_or(&[][..], |t| &t.0)),
        EntryKind::Char | EntryKind::Block => {
            out.extend_from_slice(&e.rdev.unwrap_or(0).to_le_bytes())
        }
        EntryKind::Fifo => {}
    }
    out.extend_from_slice(&(e.xattrs.len() as u16).to_le_bytes());
    for x in &e.xattrs {
        put_bytes16(out, &x.name.0);
        put_bytes32(out, &x.value.0);
    }
}

/// A listing encoded an entry at a time, in name order (the caller's), with the same bytes
/// as [`Listing::encode`]: a directory's listing without a `Vec<Entry>` of it. Past
/// [`MAX_LISTING_LEN`] it stops holding bytes (only counting them), and [`Writer::finish`]
/// says the listing is too long: a directory too large for the format costs no more memory
/// than the longest listing.
pub struct Writer {
    out: Vec<u8>,
    count: u32,
    /// Bytes the listing would have, once past the limit.
    over: Option<usize>,
    limit: usize,
}

/// A listing longer than the format allows ([`MAX_LISTING_LEN`]): how long it would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong(pub usize);

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "listing of {} bytes is longer than the format allows ({MAX_LISTING_LEN})",
            self.0
        )
    }
}

impl Writer {
    /// A listing of `format`, with room for about `hint` entries.
    pub fn new(format: u32, hint: usize) -> Writer {
        let mut out = Vec::with_capacity(12 + hint.min(1 << 16) * 128);
        out.extend_from_slice(LISTING_MAGIC);
        out.extend_from_slice(&format.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        Writer {
            out,
            count: 0,
            over: None,
            limit: MAX_LISTING_LEN,
        }
    }

    /// Add the next entry (its name sorts after the last one's).
    pub fn push(&mut self, e: &Entry) {
        self.count = self.count.saturating_add(1);
        if let Some(n) = &mut self.over {
            let mut one = Vec::new();
            encode_entry(e, &mut one);
            *n += one.len();
            return;
        }
        encode_entry(e, &mut self.out);
        if self.out.len() > self.limit {
            self.over = Some(self.out.len());
            self.out = Vec::new();
        }
    }

    /// The listing's bytes, or how long it would be if longer than the format allows.
    pub fn finish(mut self) -> Result<Vec<u8>, TooLong> {
        if let Some(n) = self.over {
            return Err(TooLong(n));
        }
        self.out[8..12].copy_from_slice(&self.count.to_le_bytes());
        Ok(self.out)
    }
}

/// A listing's entries decoded one at a time, with every check of [`Listing::decode`]:
/// memory for the blob and one entry, not a `Vec<Entry>` of the directory.
pub struct Entries<B: AsRef<[u8]>> {
    bytes: B,
    at: usize,
    format: u32,
    /// Entries in all, and not yet decoded.
    count: usize,
    left: usize,
    last: Option<Vec<u8>>,
}

impl<B: AsRef<[u8]>> Entries<B> {
    /// Check the header of listing `bytes`.
    pub fn new(bytes: B) -> Result<Entries<B>, String> {
        let b = bytes.as_ref();
        if b.len() > MAX_LISTING_LEN {
            return Err(format!(
                "listing of {} bytes is longer than the format allows ({MAX_LISTING_LEN})",
                b.len()
            ));
        }
        let mut r = Reader { bytes: b, at: 0 };
        if r.take(4)? != LISTING_MAGIC {
            return Err("not a listing (bad magic)".into());
        }
        let format = r.u32()?;
        if format != LISTING_FORMAT && format != LISTING_FORMAT_FIXED {
            return Err(format!("listing format {format} is not supported"));
        }
        let count = r.u32()? as usize;
        // Every entry takes at least MIN_ENTRY bytes: a hostile count cannot make us allocate.
        if count > b.len() / MIN_ENTRY {
            return Err(format!(
                "listing claims {count} entries in {} bytes",
                b.len()
            ));
        }
        let at = r.at;
        Ok(Entries {
            bytes,
            at,
            format,
            count,
            left: count,
            last: None,
        })
    }

    /// The number of entries the listing holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Entries not yet decoded.
    pub fn left(&self) -> usize {
        self.left
    }

    /// The listing's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    /// The next entry, `None` after the last (when nothing may follow it).
    pub fn next_entry(&mut self) -> Result<Option<Entry>, String> {
        let bytes = self.bytes.as_ref();
        let mut r = Reader { bytes, at: self.at };
        if self.left == 0 {
            if r.at != bytes.len() {
                return Err(format!(
                    "listing has {} bytes after its last entry",
                    bytes.len() - r.at
                ));
            }
            return Ok(None);
        }
        let e = decode_entry(&mut r, self.format == LISTING_FORMAT)?;
        if self.last.as_ref().is_some_and(|l| *l >= e.name.0) {
            return Err(format!(
                "listing entries out of order or repeated at {:?}",
                e.name.lossy()
            ));
        }
        self.last = Some(e.name.0.clone());
        self.at = r.at;
        self.left -= 1;
        Ok(Some(e))
    }
}

/// A bounds-checked cursor over a listing blob.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("listing ends inside a field at byte {}", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }
    fn u16(&mut self) -> Result<u16, String> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Result<i64, String> {
        self.array().map(i64::from_le_bytes)
    }
    fn bytes16(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u16()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn bytes32(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
}

/// One entry; `content_defined`: the listing's blocks are content-defined (format 3).
fn decode_entry(r: &mut Reader, content_defined: bool) -> Result<Entry, String> {
    let name = Bytes(r.bytes16()?);
    let kind = match r.array::<1>()?[0] {
        1 => EntryKind::File,
        2 => EntryKind::Dir,
        3 => EntryKind::Symlink,
        4 => EntryKind::Fifo,
        5 => EntryKind::Char,
        6 => EntryKind::Block,
        k => {
            return Err(format!(
                "listing entry {:?} has unknown kind {k}",
                name.lossy()
            ))
        }
    };
    let mut e = Entry::new(name, kind);
    e.mode = r.u32()?;
    e.uid = r.u32()?;
    e.gid = r.u32()?;
    e.mtime_ns = r.i64()?;
    e.ctime_ns = r.i64()?;
    e.dev = r.u64()?;
    e.ino = r.u64()?;
    e.nlink = r.u64()?;
    match kind {
        EntryKind::File => {
            e.size = r.u64()?;
            let n = r.u32()? as usize;
            if !crate::store::chunk::block_count_fits(content_defined, e.size, n as u64) {
                return Err(format!(
                    "listing entry {:?} has {n} blocks, which cannot hold its {} bytes",
                    e.name.lossy(),
                    e.size
                ));
            }
            let raw = r.take(n.checked_mul(32).ok_or("block count overflows")?)?;
            e.blocks = raw
                .chunks_exact(32)
                .map(|c| BlockId(c.try_into().expect("32-byte chunk")))
                .collect();
        }
        EntryKind::Dir => e.subtree = Some(BlockId(r.array()?)),
        EntryKind::Symlink => e.target = Some(Bytes(r.bytes32()?)),
        EntryKind::Char | EntryKind::Block => e.rdev = Some(r.u64()?),
        EntryKind::Fifo => {}
    }
    let nx = r.u16()? as usize;
    // Each xattr takes at least its two length fields: reserve only what the bytes can hold.
    if nx * 6 > r.bytes.len() - r.at {
        return Err(format!(
            "listing entry {:?} claims {nx} xattrs in the {} bytes left",
            e.name.lossy(),
            r.bytes.len() - r.at
        ));
    }
    e.xattrs.reserve_exact(nx);
    for _ in 0..nx {
        let name = Bytes(r.bytes16()?);
        let value = Binary(r.bytes32()?);
        e.xattrs.push(Xattr { name, value });
    }
    Ok(e)
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

    proptest! {
        /// Damaged or hostile bytes give an error, never a panic or a huge allocation.
        #[test]
        fn damaged_listings_are_refused(names in proptest::collection::btree_set(proptest::collection::vec(1u8..=255, 1..20), 1..8),
                                        cut in 0usize..10_000, flip in 0usize..10_000, noise in proptest::collection::vec(any::<u8>(), 0..300)) {
            let bytes = Listing::new(names.iter().map(|n| entry(n)).collect()).encode();
            let cut = cut % bytes.len();
            prop_assert!(Listing::decode(&bytes[..cut]).is_err());
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(Listing::decode(&longer).is_err());
            let mut flipped = bytes.clone();
            flipped[flip % bytes.len()] ^= 0xff;
            let _ = Listing::decode(&flipped);
            let _ = Listing::decode(&noise);
        }
    }

    #[test]
    fn a_huge_entry_count_is_refused_before_allocating() {
        let mut bytes = b"TLST".to_vec();
        bytes.extend_from_slice(&LISTING_FORMAT.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Listing::decode(&bytes).unwrap_err().contains("claims"));
    }

    /// A file's number of blocks must fit its size by the listing's rule (FORMAT.md), checked
    /// before the block ids are read.
    #[test]
    fn block_counts_that_cannot_hold_the_size_are_refused() {
        let kib = 1024u64;
        for (format, size, count, ok) in [
            (LISTING_FORMAT_FIXED, 256 * kib, 1, true),
            (LISTING_FORMAT_FIXED, 256 * kib + 1, 1, false),
            (LISTING_FORMAT_FIXED, 256 * kib + 1, 2, true),
            (LISTING_FORMAT_FIXED, 5, 0, false),
            (LISTING_FORMAT, 1024 * kib, 1, true),
            (LISTING_FORMAT, 1024 * kib + 1, 1, false),
            (LISTING_FORMAT, 256 * kib, 2, true),
            (LISTING_FORMAT, 256 * kib, 3, false),
            (LISTING_FORMAT, 0, 1, false),
        ] {
            let mut e = entry(b"f");
            e.size = size;
            e.blocks = vec![BlockId::of(b"x"); count];
            let bytes = Listing::with_format(format, vec![e]).encode();
            match Listing::decode(&bytes) {
                Ok(_) => assert!(ok, "{format} {size} {count} accepted"),
                Err(err) => assert!(
                    !ok && err.contains("cannot hold"),
                    "{format} {size} {count}: {err}"
                ),
            }
        }
    }

    #[test]
    fn repeated_names_are_refused() {
        let l = Listing {
            format: LISTING_FORMAT,
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
