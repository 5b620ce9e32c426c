//! Pack files: the byte layout (FORMAT.md "Pack files"), writing one and reading its trailer.
//!
//! A pack is `header | record* | trailer | footer`. Each record repeats its block's id and
//! lengths before the payload, so a pack can be read front to back without its trailer; the
//! trailer lists every record so the block index can be rebuilt from trailers alone.
//! A pack is written under `tmp/`, fsync'd and only then renamed into `packs/`: a pack in
//! `packs/` is always complete.
//!
//! Everything read back is untrusted (a medium that has been away may have been changed by
//! anyone). Every length is checked before it is used to allocate: a record's `raw_len` is
//! at most [`max_raw_len`] of its kind (a data block [`MAX_BLOCK`], a listing
//! [`MAX_LISTING_LEN`]) and its `stored_len` at most that too, checked where a record header
//! or trailer entry is parsed and again in [`decode`]; a trailer is read only if it fits the
//! file, and its entries tile the records between header and trailer exactly (one entry per
//! record, in order: a trailer cannot name one record many times). How a payload is encoded
//! and decoded, and the caps that keeps, is `codec`'s.

mod codec;
pub mod frame;

use crate::crypt::{Crypt, SEAL_OVERHEAD};
use crate::ids::{BlockId, PackId};
use crate::listing::MAX_LISTING_LEN;
use crate::store::MAX_BLOCK;
pub use codec::{check, compress, decode, encode, encode_raw, incompressible};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

pub const PACK_MAGIC: &[u8; 8] = b"TRAYPACK";
pub const PACK_END_MAGIC: &[u8; 8] = b"TRAYPEND";
pub const PACK_VERSION: u32 = 1;
/// The version of a pack of an encrypted medium: sealed records, a MAC over the trailer.
pub const PACK_VERSION_SEALED: u32 = 2;
/// The version of a pack that may hold frames (several blobs compressed together, FORMAT.md
/// "Frames"), on a plaintext medium ...
pub const PACK_VERSION_FRAMED: u32 = 3;
/// ... and on an encrypted one.
pub const PACK_VERSION_FRAMED_SEALED: u32 = 4;
pub const HEADER_LEN: u64 = 16;
pub const RECORD_HEADER_LEN: u64 = 44;
pub const TRAILER_ENTRY_LEN: usize = 52;
/// A trailer entry of a pack of version 3 or 4: the 52 bytes, then the blob's offset in its
/// frame's content and the frame's content length (both 0 for a blob record).
pub const TRAILER_ENTRY_LEN_FRAMED: usize = 60;
pub const FOOTER_LEN: u64 = 64;
/// A pack is closed once it reaches this size.
pub const PACK_TARGET: u64 = 32 << 20;
/// A pack is also closed once it holds this many blobs: an open pack's trailer entries and
/// pending ids, and the copies made when it is indexed, are per blob, so this bounds a
/// writer's memory by blobs, not bytes (small blobs in frames pack tightly: 2 000 000 small
/// text files filled packs of ~450 000 blobs, and a full backup of them peaked at 280 MiB;
/// 184 MiB with this cap). It also keeps a framed pack's trailer within [`MAX_PACK_RECORDS`]
/// whatever its frames compress to (a frame adds at most [`frame::FRAME_MAX_MEMBERS`]
/// entries past it).
pub const PACK_MAX_BLOBS: usize = 1 << 15;
/// The most records a pack may hold: a writer closes a pack once it reaches [`PACK_TARGET`]
/// bytes and every record takes at least its 44-byte header (so at most 762 601 records), or
/// once it holds [`PACK_MAX_BLOBS`] blobs (entries of frames); readers refuse a footer that
/// claims more (its trailer would be read into memory).
pub const MAX_PACK_RECORDS: u64 = 1 << 20;
const _: () = assert!(PACK_TARGET / RECORD_HEADER_LEN < MAX_PACK_RECORDS);
const _: () = assert!(PACK_MAX_BLOBS as u64 + frame::FRAME_MAX_MEMBERS as u64 <= MAX_PACK_RECORDS);
/// Footer flag: the pack was written by garbage collection, not by a backup.
pub const FLAG_GC: u32 = 1;
/// Footer flag: the pack holds listing blobs only.
pub const FLAG_LISTINGS: u32 = 2;

/// What a stored blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlobKind {
    /// File content.
    Data = 0,
    /// A directory listing (index node).
    Listing = 1,
}

/// How a payload is encoded. Values ≥ 0x80 are sealed (encrypted and authenticated,
/// FORMAT.md "Packs of an encrypted medium"): the encoding inside is the value less 0x80.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Encoding {
    Raw = 0,
    Zstd = 1,
    /// A blob in a frame (packs of version 3 and 4 only, FORMAT.md "Frames").
    Frame = 2,
    SealedRaw = 0x80,
    SealedZstd = 0x81,
    SealedFrame = 0x82,
}

impl Encoding {
    pub fn is_sealed(self) -> bool {
        matches!(
            self,
            Encoding::SealedRaw | Encoding::SealedZstd | Encoding::SealedFrame
        )
    }

    /// The encoding of the plaintext inside.
    pub fn inner(self) -> Encoding {
        match self {
            Encoding::SealedRaw => Encoding::Raw,
            Encoding::SealedZstd => Encoding::Zstd,
            Encoding::SealedFrame => Encoding::Frame,
            e => e,
        }
    }

    fn sealed(self) -> Encoding {
        match self {
            Encoding::Raw => Encoding::SealedRaw,
            Encoding::Zstd => Encoding::SealedZstd,
            Encoding::Frame => Encoding::SealedFrame,
            e => e,
        }
    }
}

/// The pack format version for a medium protected as `crypt` says, with frames or not.
pub fn version_for(crypt: &Crypt, framed: bool) -> u32 {
    match (crypt.is_sealed(), framed) {
        (false, false) => PACK_VERSION,
        (true, false) => PACK_VERSION_SEALED,
        (false, true) => PACK_VERSION_FRAMED,
        (true, true) => PACK_VERSION_FRAMED_SEALED,
    }
}

/// Whether packs of `version` may hold frames.
fn framed(version: u32) -> bool {
    matches!(version, PACK_VERSION_FRAMED | PACK_VERSION_FRAMED_SEALED)
}

/// One record of a pack, as its trailer lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: BlockId,
    pub kind: BlobKind,
    pub encoding: Encoding,
    pub raw_len: u32,
    pub stored_len: u32,
    /// Offset of the payload (just after the record header) in the pack file; for a blob
    /// in a frame, of the frame's payload (`stored_len` is then the frame's).
    pub offset: u64,
    /// For a blob in a frame: its offset in the frame's content (0 otherwise).
    pub at: u32,
    /// For a blob in a frame: the length of the frame's content (0 otherwise).
    pub frame_len: u32,
}

/// A pack's trailer and footer.
#[derive(Clone, Debug)]
pub struct Trailer {
    /// The backup that wrote the pack (0 for garbage collection).
    pub writer: u64,
    pub flags: u32,
    pub entries: Vec<Entry>,
}

fn kind_from(b: u8) -> Option<BlobKind> {
    match b {
        0 => Some(BlobKind::Data),
        1 => Some(BlobKind::Listing),
        _ => None,
    }
}

fn encoding_from(b: u8) -> Option<Encoding> {
    match b {
        0 => Some(Encoding::Raw),
        1 => Some(Encoding::Zstd),
        2 => Some(Encoding::Frame),
        0x80 => Some(Encoding::SealedRaw),
        0x81 => Some(Encoding::SealedZstd),
        0x82 => Some(Encoding::SealedFrame),
        _ => None,
    }
}

/// Encode the 44-byte header that precedes each payload.
pub fn record_header(
    id: &BlockId,
    kind: BlobKind,
    enc: Encoding,
    raw: u32,
    stored: u32,
) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[..32].copy_from_slice(&id.0);
    h[32] = kind as u8;
    h[33] = enc as u8;
    h[36..40].copy_from_slice(&raw.to_le_bytes());
    h[40..44].copy_from_slice(&stored.to_le_bytes());
    h
}

/// The largest uncompressed length a blob of `kind` may have (FORMAT.md "Pack files").
pub fn max_raw_len(kind: BlobKind) -> u32 {
    match kind {
        BlobKind::Data => MAX_BLOCK as u32,
        BlobKind::Listing => MAX_LISTING_LEN as u32,
    }
}

/// Why a blob of `kind` cannot be `raw_len` bytes long, if it cannot (writers check this
/// too, so that they never write what readers refuse).
pub fn check_raw_len(kind: BlobKind, raw_len: u64) -> Result<(), String> {
    let max = max_raw_len(kind);
    if raw_len > max as u64 {
        let what = match kind {
            BlobKind::Data => "data block",
            BlobKind::Listing => "listing",
        };
        return Err(format!(
            "{what} of {raw_len} bytes is longer than the format allows ({max})"
        ));
    }
    Ok(())
}

/// Decode and check a record header (or the first 44 bytes of a trailer entry): known kind
/// and encoding, lengths within the kind's cap, a raw payload exactly `raw_len` long.
pub fn parse_record(h: &[u8; 44], offset: u64) -> Result<Entry, String> {
    let id = BlockId(h[..32].try_into().unwrap());
    let kind = kind_from(h[32]).ok_or_else(|| format!("record {id} has unknown kind {}", h[32]))?;
    let encoding = encoding_from(h[33])
        .ok_or_else(|| format!("record {id} has unknown encoding {}", h[33]))?;
    let e = Entry {
        id,
        kind,
        encoding,
        raw_len: u32::from_le_bytes(h[36..40].try_into().unwrap()),
        stored_len: u32::from_le_bytes(h[40..44].try_into().unwrap()),
        offset,
        at: 0,
        frame_len: 0,
    };
    check_lengths(&e)?;
    Ok(e)
}

impl Entry {
    /// The stored bytes that are this blob's: its record's, or for a blob in a frame its share
    /// of the frame's (in proportion to its length), so a frame counts once over its blobs.
    pub fn stored_share(&self) -> u64 {
        if self.encoding.inner() == Encoding::Frame {
            (self.stored_len as u64 * self.raw_len as u64)
                .div_ceil(u64::from(self.frame_len).max(1))
        } else {
            self.stored_len as u64
        }
    }
}

/// The length rules every record keeps, checked before any length is used. A frame
/// record's header (encoding 2 or 0x82, its frame id) has its content's length as `raw_len`, at
/// most [`frame::FRAME_MAX`]; a trailer entry of a blob in a frame is checked further where
/// the trailer is read.
fn check_lengths(e: &Entry) -> Result<(), String> {
    if e.encoding.inner() == Encoding::Frame {
        let overhead = if e.encoding.is_sealed() {
            SEAL_OVERHEAD as u32
        } else {
            0
        };
        if e.raw_len > frame::FRAME_MAX
            || e.stored_len < overhead
            || e.stored_len > frame::FRAME_MAX + overhead
        {
            return Err(format!(
                "record {}: a frame of {} stored bytes for {} raw bytes breaks the frame caps",
                e.id, e.stored_len, e.raw_len
            ));
        }
        return Ok(());
    }
    check_raw_len(e.kind, e.raw_len as u64).map_err(|d| format!("record {}: {d}", e.id))?;
    // A writer stores a payload compressed only when that makes it smaller.
    // A sealed payload is its plaintext payload plus nonce and tag.
    let overhead = if e.encoding.is_sealed() {
        SEAL_OVERHEAD as u64
    } else {
        0
    };
    let (stored, raw) = (e.stored_len as u64, e.raw_len as u64);
    let stored_ok = match e.encoding.inner() {
        Encoding::Zstd => stored >= overhead && stored <= raw + overhead,
        _ => stored == raw + overhead,
    };
    if !stored_ok {
        return Err(format!(
            "record {}: {} stored bytes cannot hold {} raw bytes as {:?}",
            e.id, e.stored_len, e.raw_len, e.encoding
        ));
    }
    Ok(())
}

/// Decode a record header; `None` if it breaks a rule of [`parse_record`].
pub fn parse_record_header(h: &[u8; 44], offset: u64) -> Option<Entry> {
    parse_record(h, offset).ok()
}

/// Appends records to a new pack file.
pub struct PackWriter {
    pub id: PackId,
    crypt: Crypt,
    /// Version 3 or 4 (frames allowed), or 1 or 2.
    framed: bool,
    out: BufWriter<File>,
    pub len: u64,
    pub entries: Vec<Entry>,
}

impl PackWriter {
    /// A pack of version [`version_for`]`(crypt, framed)`.
    pub fn new(id: PackId, file: File, crypt: &Crypt, framed: bool) -> io::Result<PackWriter> {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&pack_header(crypt, framed))?;
        Ok(PackWriter {
            id,
            crypt: crypt.clone(),
            framed,
            out,
            len: HEADER_LEN,
            entries: Vec::new(),
        })
    }

    /// Whether the pack is to be closed: [`PACK_TARGET`] bytes or [`PACK_MAX_BLOBS`] blobs.
    pub fn is_full(&self) -> bool {
        self.len >= PACK_TARGET || self.entries.len() >= PACK_MAX_BLOBS
    }

    /// Append one record; returns its trailer entry.
    pub fn append(
        &mut self,
        id: BlockId,
        kind: BlobKind,
        enc: Encoding,
        raw_len: u32,
        payload: &[u8],
    ) -> io::Result<Entry> {
        let stored_len = payload.len() as u32;
        self.out
            .write_all(&record_header(&id, kind, enc, raw_len, stored_len))?;
        self.out.write_all(payload)?;
        let entry = Entry {
            id,
            kind,
            encoding: enc,
            raw_len,
            stored_len,
            offset: self.len + RECORD_HEADER_LEN,
            at: 0,
            frame_len: 0,
        };
        self.len += RECORD_HEADER_LEN + payload.len() as u64;
        self.entries.push(entry);
        Ok(entry)
    }

    /// Append one frame ([`frame::encode`]) holding `blobs` (id and length, in the order
    /// they were given to it), all of `kind`; returns their trailer entries. Only in a pack
    /// of version 3 or 4.
    pub fn append_frame(
        &mut self,
        kind: BlobKind,
        blobs: &[(BlockId, u32)],
        f: &frame::Encoded,
    ) -> io::Result<&[Entry]> {
        assert!(self.framed, "a frame in a pack of version 1 or 2");
        let stored_len = f.payload.len() as u32;
        let head = record_header(&f.id, kind, f.encoding, f.frame_len, stored_len);
        self.out.write_all(&head)?;
        self.out.write_all(&f.payload)?;
        let offset = self.len + RECORD_HEADER_LEN;
        let first = self.entries.len();
        let mut at = 0;
        for &(id, raw_len) in blobs {
            self.entries.push(Entry {
                id,
                kind,
                encoding: f.encoding,
                raw_len,
                stored_len,
                offset,
                at,
                frame_len: f.frame_len,
            });
            at += raw_len;
        }
        debug_assert_eq!(at + 4 + 4 * blobs.len() as u32, f.frame_len);
        self.len += RECORD_HEADER_LEN + f.payload.len() as u64;
        Ok(&self.entries[first..])
    }

    /// Write trailer and footer and fsync; the caller renames the file into place.
    pub fn finish(mut self, writer: u64, flags: u32) -> io::Result<(PackId, Vec<Entry>, u64)> {
        let trailer_offset = self.len;
        let entry_len = if self.framed {
            TRAILER_ENTRY_LEN_FRAMED
        } else {
            TRAILER_ENTRY_LEN
        };
        let mut trailer = Vec::with_capacity(self.entries.len() * entry_len);
        for e in &self.entries {
            trailer.extend_from_slice(&record_header(
                &e.id,
                e.kind,
                e.encoding,
                e.raw_len,
                e.stored_len,
            ));
            trailer.extend_from_slice(&e.offset.to_le_bytes());
            if self.framed {
                trailer.extend_from_slice(&e.at.to_le_bytes());
                trailer.extend_from_slice(&e.frame_len.to_le_bytes());
            }
        }
        self.out.write_all(&trailer)?;
        let mut footer = Vec::with_capacity(FOOTER_LEN as usize);
        footer.extend_from_slice(&writer.to_le_bytes());
        footer.extend_from_slice(&flags.to_le_bytes());
        footer.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        footer.extend_from_slice(&trailer_offset.to_le_bytes());
        let sum = trailer_sum(&self.crypt, self.framed, &self.id, &trailer, &footer);
        footer.extend_from_slice(&sum);
        footer.extend_from_slice(PACK_END_MAGIC);
        debug_assert_eq!(footer.len() as u64, FOOTER_LEN);
        self.out.write_all(&footer)?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let len = trailer_offset + trailer.len() as u64 + FOOTER_LEN;
        Ok((self.id, self.entries, len))
    }
}

fn pack_header(crypt: &Crypt, framed: bool) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(PACK_MAGIC);
    h[8..12].copy_from_slice(&version_for(crypt, framed).to_le_bytes());
    h
}

/// The footer's 32-byte check of the trailer: its SHA-256 on a plaintext medium; on an
/// encrypted one a MAC over the medium id, the pack id, the pack header, the trailer and the
/// footer's first 24 bytes (writer, flags, count, trailer offset).
fn trailer_sum(
    crypt: &Crypt,
    framed: bool,
    pack: &PackId,
    trailer: &[u8],
    footer24: &[u8],
) -> [u8; 32] {
    match crypt {
        Crypt::Plain => Sha256::digest(trailer).into(),
        Crypt::Sealed(k) => k.pack_mac(&[
            &pack.0,
            &pack_header(crypt, framed),
            trailer,
            &footer24[..24],
        ]),
    }
}

/// What a pack's footer says, read alone (the trailer's checksum is not checked here).
#[derive(Clone, Copy, Debug)]
pub struct Footer {
    pub writer: u64,
    pub flags: u32,
    pub count: u64,
}

/// A pack's footer, if it has one (magic in place) and its record count is possible: at most
/// [`MAX_PACK_RECORDS`], with a trailer that fits in the file.
pub fn read_footer(file: &File) -> Option<Footer> {
    let len = file.metadata().ok()?.len();
    let mut footer = [0u8; FOOTER_LEN as usize];
    file.read_exact_at(&mut footer, len.checked_sub(FOOTER_LEN)?)
        .ok()?;
    let count = u32::from_le_bytes(footer[12..16].try_into().unwrap()) as u64;
    let possible = count <= MAX_PACK_RECORDS
        && HEADER_LEN + count * TRAILER_ENTRY_LEN as u64 + FOOTER_LEN <= len;
    (&footer[56..64] == PACK_END_MAGIC && possible).then(|| Footer {
        writer: u64::from_le_bytes(footer[0..8].try_into().unwrap()),
        flags: u32::from_le_bytes(footer[8..12].try_into().unwrap()),
        count,
    })
}

/// Read and check a pack's header, footer and trailer. The trailer's entries must tile the
/// records area exactly as [`PackWriter`] lays it out (FORMAT.md "Pack files"): no entry
/// repeats or overlaps another's bytes, so indexing or checking a pack costs its size.
/// On an encrypted medium the trailer must authenticate (with the pack's own id), and a pack
/// of the other kind (plaintext on an encrypted medium, or the reverse) is refused.
pub fn read_trailer(crypt: &Crypt, pack: &PackId, file: &File) -> Result<Trailer, String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len < HEADER_LEN + FOOTER_LEN {
        return Err(format!("pack is {len} bytes, too short"));
    }
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| e.to_string())?;
    if &header[..8] != PACK_MAGIC {
        return Err("pack header magic is wrong".into());
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap());
    let framed = framed(version);
    if version != version_for(crypt, framed) {
        return Err(match (version, crypt.is_sealed()) {
            (PACK_VERSION | PACK_VERSION_FRAMED, true) => {
                "a plaintext pack on an encrypted medium (not written by this medium's writer)"
                    .into()
            }
            (PACK_VERSION_SEALED | PACK_VERSION_FRAMED_SEALED, false) => {
                "an encrypted pack on a plaintext medium".into()
            }
            _ => format!("pack format version {version} is not supported"),
        });
    }
    let entry_len = if framed {
        TRAILER_ENTRY_LEN_FRAMED
    } else {
        TRAILER_ENTRY_LEN
    };
    let mut footer = [0u8; FOOTER_LEN as usize];
    file.read_exact_at(&mut footer, len - FOOTER_LEN)
        .map_err(|e| e.to_string())?;
    if &footer[56..64] != PACK_END_MAGIC {
        return Err("pack footer magic is wrong (truncated pack?)".into());
    }
    let writer = u64::from_le_bytes(footer[0..8].try_into().unwrap());
    let flags = u32::from_le_bytes(footer[8..12].try_into().unwrap());
    let count = u32::from_le_bytes(footer[12..16].try_into().unwrap()) as u64;
    if count > MAX_PACK_RECORDS {
        return Err(format!(
            "pack footer claims {count} records (at most {MAX_PACK_RECORDS})"
        ));
    }
    let trailer_offset = u64::from_le_bytes(footer[16..24].try_into().unwrap());
    let trailer_len = count * entry_len as u64;
    // Checked: a hostile offset must not wrap around to match the length.
    let end = trailer_offset
        .checked_add(trailer_len)
        .and_then(|e| e.checked_add(FOOTER_LEN));
    if trailer_offset < HEADER_LEN || end != Some(len) {
        return Err("pack trailer offset does not match the file length".into());
    }
    let mut trailer = vec![0u8; trailer_len as usize];
    file.read_exact_at(&mut trailer, trailer_offset)
        .map_err(|e| e.to_string())?;
    let sum = trailer_sum(crypt, framed, pack, &trailer, &footer);
    if !bool::from(subtle_eq(&sum, &footer[24..56])) {
        return Err(match crypt {
            Crypt::Plain => "pack trailer checksum mismatch".into(),
            Crypt::Sealed(_) => {
                "pack trailer does not authenticate (altered, or not this medium's pack)".into()
            }
        });
    }
    let mut entries = Vec::with_capacity(count as usize);
    for chunk in trailer.chunks_exact(entry_len) {
        let offset = u64::from_le_bytes(chunk[44..52].try_into().unwrap());
        let mut e = parse_record(chunk[..44].try_into().unwrap(), offset)
            .map_err(|d| format!("pack trailer: {d}"))?;
        if framed {
            e.at = u32::from_le_bytes(chunk[52..56].try_into().unwrap());
            e.frame_len = u32::from_le_bytes(chunk[56..60].try_into().unwrap());
        }
        entries.push(e);
    }
    let next = tile(&entries, framed, trailer_offset)?;
    if next != trailer_offset {
        return Err(format!(
            "pack trailer's records end at byte {next}, not at the trailer ({trailer_offset})"
        ));
    }
    Ok(Trailer {
        writer,
        flags,
        entries,
    })
}

/// Check that trailer `entries` tile the records area exactly as a writer lays it out: each
/// record starts where the previous one ends, the first just after the header, none past the
/// trailer; the blobs of a frame are consecutive entries that name it alike and tile its
/// content after its table. So no two entries share or overlap bytes (FORMAT.md "Pack files",
/// "Frames"). Returns where the last record ends.
fn tile(entries: &[Entry], framed: bool, trailer_offset: u64) -> Result<u64, String> {
    let mut next = HEADER_LEN;
    let mut i = 0;
    while i < entries.len() {
        let e = &entries[i];
        let end = e.offset.saturating_add(e.stored_len as u64);
        if e.offset != next + RECORD_HEADER_LEN || end > trailer_offset {
            return Err(format!(
                "pack trailer entry {i} (for {}) does not start where the previous record ends",
                e.id
            ));
        }
        next = end;
        if e.encoding.inner() != Encoding::Frame {
            if e.at != 0 || e.frame_len != 0 {
                return Err(format!(
                    "pack trailer entry {i} (for {}) places a blob record in a frame",
                    e.id
                ));
            }
            i += 1;
            continue;
        }
        if !framed {
            return Err(format!(
                "pack trailer entry {i} (for {}): a frame in a pack of version 1 or 2",
                e.id
            ));
        }
        let n = entries[i..]
            .iter()
            .take_while(|f| f.offset == e.offset)
            .count();
        let head = frame::record_of(e, e.id);
        check_lengths(&head).map_err(|d| format!("pack trailer: {d}"))?;
        let mut at = 0;
        for (k, f) in entries[i..i + n].iter().enumerate() {
            let same = (f.kind, f.encoding, f.stored_len, f.frame_len)
                == (e.kind, e.encoding, e.stored_len, e.frame_len);
            if !same || u64::from(f.at) != at || n > frame::FRAME_MAX_MEMBERS as usize {
                return Err(format!(
                    "pack trailer entry {} (for {}) does not follow the blob before it in its frame",
                    i + k,
                    f.id
                ));
            }
            check_raw_len(f.kind, f.raw_len as u64)
                .map_err(|d| format!("pack trailer: record {}: {d}", f.id))?;
            at += u64::from(f.raw_len);
        }
        if at + 4 + 4 * n as u64 != u64::from(e.frame_len) {
            return Err(format!(
                "pack trailer: the blobs of the frame at byte {} fill {at} of its {} bytes",
                e.offset, e.frame_len
            ));
        }
        i += n;
    }
    Ok(next)
}

/// Salvage a pack whose trailer is unreadable: walk its records from the front and keep each
/// whose header is sane and whose content matches its id. Stops at the first bad record.
pub fn scan_records(crypt: &Crypt, bytes: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    if bytes.len() < HEADER_LEN as usize || &bytes[..8] != PACK_MAGIC {
        return out;
    }
    let framed = framed(u32::from_le_bytes(bytes[8..12].try_into().unwrap()));
    let mut pos = HEADER_LEN as usize;
    while pos + RECORD_HEADER_LEN as usize <= bytes.len() {
        let head: &[u8; 44] = bytes[pos..pos + 44].try_into().unwrap();
        let offset = (pos + 44) as u64;
        let Some(e) = parse_record_header(head, offset) else {
            break;
        };
        let end = offset as usize + e.stored_len as usize;
        let Some(found) = bytes
            .get(offset as usize..end)
            .and_then(|p| salvage(crypt, framed, &e, p))
        else {
            break;
        };
        out.extend(found);
        pos = end;
    }
    out
}

/// [`scan_records`] over a file, reading one record at a time (a payload is at most its
/// kind's cap), so salvaging a damaged pack never holds more than one record in memory.
pub fn scan_file(crypt: &Crypt, file: &File) -> Vec<Entry> {
    let mut out = Vec::new();
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return out;
    };
    let mut magic = [0u8; 12];
    if file.read_exact_at(&mut magic, 0).is_err() || &magic[..8] != PACK_MAGIC {
        return out;
    }
    let framed = framed(u32::from_le_bytes(magic[8..12].try_into().unwrap()));
    let mut pos = HEADER_LEN;
    let mut payload = Vec::new();
    while pos + RECORD_HEADER_LEN <= len && (out.len() as u64) < MAX_PACK_RECORDS {
        let mut head = [0u8; RECORD_HEADER_LEN as usize];
        if file.read_exact_at(&mut head, pos).is_err() {
            break;
        }
        let offset = pos + RECORD_HEADER_LEN;
        let Some(e) = parse_record_header(&head, offset) else {
            break;
        };
        let end = offset + e.stored_len as u64;
        if end > len {
            break;
        }
        payload.resize(e.stored_len as usize, 0);
        if file.read_exact_at(&mut payload, offset).is_err() {
            break;
        }
        let Some(found) = salvage(crypt, framed, &e, &payload) else {
            break;
        };
        out.extend(found);
        pos = end;
    }
    out
}

/// The entries a record found walking a pack from the front yields if it is intact: a blob
/// record itself, or each blob of a frame (frames only in a pack of version 3 or 4).
fn salvage(crypt: &Crypt, framed: bool, e: &Entry, payload: &[u8]) -> Option<Vec<Entry>> {
    if e.encoding.inner() != Encoding::Frame {
        return decode(crypt, e, payload).ok().map(|_| vec![*e]);
    }
    if !framed {
        return None;
    }
    let opened = frame::open(crypt, e, payload).ok()?;
    frame::entries_of(crypt, e, &opened).ok()
}

/// Constant-time equality of two 32-byte checks.
fn subtle_eq(a: &[u8; 32], b: &[u8]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    a.as_slice().ct_eq(b)
}
