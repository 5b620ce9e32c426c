//! Frames (pack versions 3 and 4, FORMAT.md "Frames"): consecutive blobs of one kind
//! compressed together as one zstd frame, each still addressed by its own id.
//!
//! A frame's content (what its zstd frame inflates to) is `the blobs' bytes, in order |
//! u32 len × count | u32 count`; its record header carries the frame's id ([`frame_id`]: the
//! hash, keyed on an encrypted medium, of its blobs' ids in order) where a blob record has an
//! id, encoding 2 (0x82 sealed), the content's length as `raw_len` (at most
//! [`FRAME_MAX`]) and the payload's as `stored_len`. A trailer entry of a blob in a frame
//! names the frame (its payload's offset, its lengths) and the blob's place in its content.
//!
//! Invariants: nothing is allocated for a frame before its claimed length is checked against
//! [`FRAME_MAX`] (decompression stops there); a blob is taken out of a frame only at a place
//! the frame's own table names, and its id is recomputed from its bytes (keyed on an
//! encrypted medium) whatever the seal says; a frame is sealed as a whole, with its record
//! header as associated data, exactly as a blob record is; a reader takes the frame's id from
//! the trailer entries naming it, never from the medium's record header, so a frame moved,
//! swapped or brought from another pack does not open (sealed) or is refused (plaintext).

use super::{codec, record_header, BlobKind, Encoding, Entry};
use crate::crypt::{self, Crypt, SEAL_OVERHEAD};
use crate::ids::BlockId;

/// A writer closes a frame once its blobs reach this many bytes (measured: 1 MiB pieces
/// store 3.8% less than 256 KiB blocks compressed alone on the `mixed` bench preset, and
/// 31% less on `many-small`, for less CPU; 2 MiB pieces 0.5% less again, for twice the
/// memory of every frame a writer or reader holds; `examples/pack_measure.rs`).
pub const FRAME_TARGET: usize = 1 << 20;
/// The largest frame content a reader accepts: [`FRAME_TARGET`] less a byte plus the largest
/// data block (1 MiB) and the table fits; more is damage, refused before allocating.
pub const FRAME_MAX: u32 = 4 << 20;
/// The most blobs a frame may hold (its table is read before anything else of it).
pub const FRAME_MAX_MEMBERS: u32 = 1 << 16;
const _: () = assert!(FRAME_TARGET + (1 << 20) + 4 + 4 * (1 << 16) <= FRAME_MAX as usize);

/// The place of each blob in a frame's content: (offset, length), checked to tile the
/// content exactly up to the table at its end.
pub fn members(content: &[u8]) -> Result<Vec<(u32, u32)>, String> {
    let short = "frame content shorter than its table";
    let count_at = content.len().checked_sub(4).ok_or(short)?;
    let count = u32::from_le_bytes(content[count_at..].try_into().unwrap());
    if count == 0 || count > FRAME_MAX_MEMBERS {
        return Err(format!(
            "frame claims {count} blobs (1 to {FRAME_MAX_MEMBERS})"
        ));
    }
    let table_at = count_at.checked_sub(4 * count as usize).ok_or(short)?;
    let mut at = 0u64;
    let mut out = Vec::with_capacity(count as usize);
    for len in content[table_at..count_at].chunks_exact(4) {
        let len = u32::from_le_bytes(len.try_into().unwrap());
        out.push((at as u32, len));
        at += len as u64;
    }
    if at != table_at as u64 {
        return Err(format!(
            "frame table covers {at} bytes of a {}-byte content",
            content.len()
        ));
    }
    Ok(out)
}

/// A frame's content: `data` (the blobs, concatenated) followed by its table of `lens` and
/// their count (appended in place: no copy of the blobs).
pub fn content(lens: impl ExactSizeIterator<Item = u32>, mut data: Vec<u8>) -> Vec<u8> {
    let count = lens.len() as u32;
    data.reserve_exact(4 * count as usize + 4);
    for n in lens {
        data.extend_from_slice(&n.to_le_bytes());
    }
    data.extend_from_slice(&count.to_le_bytes());
    data
}

/// Each blob of a frame's `content` (as [`content`] made it), in order.
pub fn blobs(content: &[u8]) -> impl Iterator<Item = &[u8]> {
    members(content)
        .unwrap_or_default()
        .into_iter()
        .map(move |(at, len)| &content[at as usize..(at + len) as usize])
}

/// The id in a frame's record header: the hash (keyed on an encrypted medium, as a blob id)
/// of `"trayback frame v1"` and the ids of the blobs in it, in order (FORMAT.md "Frames").
pub fn frame_id<'a>(crypt: &Crypt, ids: impl IntoIterator<Item = &'a BlockId>) -> BlockId {
    let mut bytes = b"trayback frame v1".to_vec();
    for id in ids {
        bytes.extend_from_slice(&id.0);
    }
    crypt.block_id(&bytes)
}

/// A frame ready for its record: id, encoding, content length, payload.
pub struct Encoded {
    pub id: BlockId,
    pub encoding: Encoding,
    pub frame_len: u32,
    pub payload: Vec<u8>,
}

/// Compress a frame's content ([`content`], blobs of `kind` whose ids are `ids`) at `level`
/// and, on an encrypted medium, seal it with its record header as associated data. `None`
/// when that would not be smaller than the content (the writer then stores the blobs as
/// records of their own), or when the content breaks a frame's limits.
pub fn encode(
    crypt: &Crypt,
    kind: BlobKind,
    ids: &[BlockId],
    c: &[u8],
    level: i32,
) -> Option<Encoded> {
    if c.len() > FRAME_MAX as usize || members(c).map_or(true, |m| m.len() != ids.len()) {
        return None;
    }
    let id = frame_id(crypt, ids);
    let compressed = codec::compress_frame(c, level)?;
    if compressed.len() >= c.len() {
        return None;
    }
    let frame_len = c.len() as u32;
    let Crypt::Sealed(keys) = crypt else {
        return Some(Encoded {
            id,
            encoding: Encoding::Frame,
            frame_len,
            payload: compressed,
        });
    };
    let stored = (compressed.len() + SEAL_OVERHEAD) as u32;
    let head = record_header(&id, kind, Encoding::SealedFrame, frame_len, stored);
    Some(Encoded {
        id,
        encoding: Encoding::SealedFrame,
        frame_len,
        payload: keys.seal(&crypt::blob_ad(&keys.media_id, &head), &compressed),
    })
}

/// The record header of the frame that holds trailer entry `e` (a blob in a frame) and whose
/// id is `id` ([`frame_id`] of the entries naming it), as an entry: the frame's content
/// length as `raw_len`.
pub fn record_of(e: &Entry, id: BlockId) -> Entry {
    Entry {
        id,
        raw_len: e.frame_len,
        at: 0,
        frame_len: 0,
        ..*e
    }
}

/// A frame opened and inflated, its table checked.
pub struct Opened {
    content: Vec<u8>,
    /// Each blob's (offset, length) in `content`, in increasing offset order.
    places: Vec<(u32, u32)>,
}

/// Open and inflate a frame record's payload (`head`: its record header, as [`record_of`]
/// gives it or a pack's record says), and check its table: the content, at most
/// [`FRAME_MAX`] bytes, exactly `head.raw_len` long.
pub fn open(crypt: &Crypt, head: &Entry, payload: &[u8]) -> Result<Opened, String> {
    let content = codec::open_frame(crypt, head, payload)?;
    let places = members(&content)?;
    Ok(Opened { content, places })
}

/// Whether a sealed frame's payload authenticates with `head` (its record header): the tag
/// alone, nothing decrypted, as `verify` checks a sealed blob record after writing.
pub fn authentic(crypt: &Crypt, head: &Entry, payload: &[u8]) -> Result<(), String> {
    codec::check_frame_seal(crypt, head, payload)
}

impl Opened {
    /// The content's length (what keeping this frame open holds).
    pub fn content_len(&self) -> usize {
        self.content.len()
    }

    /// Blob `e` (a trailer entry of a blob in this frame): at a place the frame's table
    /// names, and with the id its bytes hash to.
    pub fn blob(&self, crypt: &Crypt, e: &Entry) -> Result<&[u8], String> {
        blob(crypt, e, &self.content, &self.places)
    }
}

fn blob<'a>(
    crypt: &Crypt,
    e: &Entry,
    content: &'a [u8],
    places: &[(u32, u32)],
) -> Result<&'a [u8], String> {
    if content.len() != e.frame_len as usize {
        return Err(format!(
            "frame of {} bytes where {} were recorded",
            content.len(),
            e.frame_len
        ));
    }
    if places.binary_search(&(e.at, e.raw_len)).is_err() {
        return Err(format!(
            "no blob of {} bytes at {} in its frame",
            e.raw_len, e.at
        ));
    }
    super::check_raw_len(e.kind, e.raw_len as u64)?;
    let b = &content[e.at as usize..(e.at + e.raw_len) as usize];
    if crypt.block_id(b) != e.id {
        return Err(codec::mismatch(crypt).into());
    }
    Ok(b)
}

/// The trailer entries of the blobs in a frame whose record header is `head` (at
/// `head.offset`) and whose content is `content` (checked by [`open`]): ids computed from
/// the bytes, as salvage needs them, and their [`frame_id`] checked against the header's.
pub fn entries_of(crypt: &Crypt, head: &Entry, frame: &Opened) -> Result<Vec<Entry>, String> {
    let content = &frame.content;
    for &(_, len) in &frame.places {
        super::check_raw_len(head.kind, len as u64)?;
    }
    let entries: Vec<Entry> = frame
        .places
        .iter()
        .map(|&(at, len)| Entry {
            id: crypt.block_id(&content[at as usize..(at + len) as usize]),
            raw_len: len,
            at,
            frame_len: head.raw_len,
            ..*head
        })
        .collect();
    if frame_id(crypt, entries.iter().map(|e| &e.id)) != head.id {
        return Err("a frame whose blobs are not those its record header names".into());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(frame_len: u32, stored_len: u32) -> Entry {
        Entry {
            id: BlockId([0; 32]),
            kind: BlobKind::Data,
            encoding: Encoding::Frame,
            raw_len: frame_len,
            stored_len,
            offset: 60,
            at: 0,
            frame_len: 0,
        }
    }

    #[test]
    fn blobs_come_back_only_from_places_the_table_names() {
        let (a, b) = (vec![1u8; 5000], vec![2u8; 7000]);
        let c = content([5000, 7000].into_iter(), [a.clone(), b.clone()].concat());
        let ids = [BlockId::of(&a), BlockId::of(&b)];
        let f = encode(&Crypt::Plain, BlobKind::Data, &ids, &c, 3).unwrap();
        let opened = open(
            &Crypt::Plain,
            &head(f.frame_len, f.payload.len() as u32),
            &f.payload,
        )
        .unwrap();
        let entry = |at, len, id| Entry {
            id,
            raw_len: len,
            at,
            frame_len: f.frame_len,
            ..head(0, f.payload.len() as u32)
        };
        let ea = entry(0, 5000, BlockId::of(&a));
        assert_eq!(opened.blob(&Crypt::Plain, &ea).unwrap(), &a[..]);
        let eb = entry(5000, 7000, BlockId::of(&b));
        assert_eq!(opened.blob(&Crypt::Plain, &eb).unwrap(), &b[..]);
        // A place straddling two blobs, or the right place with another id, is refused.
        assert!(opened
            .blob(&Crypt::Plain, &entry(1, 5000, BlockId::of(&a)))
            .is_err());
        assert!(opened
            .blob(&Crypt::Plain, &entry(0, 5000, BlockId::of(&b)))
            .is_err());
    }

    #[test]
    fn a_frame_whose_blobs_are_not_those_its_header_names_is_not_salvaged() {
        let (a, b) = (vec![1u8; 5000], vec![2u8; 7000]);
        let c = content([5000, 7000].into_iter(), [a.clone(), b.clone()].concat());
        let ids = [BlockId::of(&a), BlockId::of(&b)];
        let f = encode(&Crypt::Plain, BlobKind::Data, &ids, &c, 3).unwrap();
        assert_eq!(f.id, frame_id(&Crypt::Plain, &ids));
        let n = f.payload.len() as u32;
        let opened = open(&Crypt::Plain, &head(f.frame_len, n), &f.payload).unwrap();
        let named = |id| Entry {
            id,
            ..head(f.frame_len, f.payload.len() as u32)
        };
        let found = entries_of(&Crypt::Plain, &named(f.id), &opened).unwrap();
        assert_eq!(found.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
        // The same blobs in another order, or another frame's id, do not match.
        let swapped = frame_id(&Crypt::Plain, [&ids[1], &ids[0]]);
        assert!(entries_of(&Crypt::Plain, &named(swapped), &opened).is_err());
        assert!(entries_of(&Crypt::Plain, &named(BlockId([0; 32])), &opened).is_err());
    }

    #[test]
    fn hostile_frames_are_refused_before_allocating() {
        // A table that claims more blobs than allowed, or lengths past the content.
        let mut c = content([3].into_iter(), b"abc".to_vec());
        let n = c.len();
        c[n - 4..].copy_from_slice(&(FRAME_MAX_MEMBERS + 1).to_le_bytes());
        assert!(members(&c).is_err());
        let mut c = content([3, 2].into_iter(), b"abcde".to_vec());
        c[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(members(&c).is_err());
        assert!(members(&[]).is_err());
        // A frame record claiming more than FRAME_MAX, or inflating past its claim.
        let big = vec![7u8; 100_000];
        let c = content([100_000].into_iter(), big);
        let f = encode(&Crypt::Plain, BlobKind::Data, &[BlockId([0; 32])], &c, 3).unwrap();
        let n = f.payload.len() as u32;
        assert!(open(&Crypt::Plain, &head(FRAME_MAX + 1, n), &f.payload).is_err());
        assert!(open(&Crypt::Plain, &head(f.frame_len - 1, n), &f.payload).is_err());
        assert!(open(&Crypt::Plain, &head(f.frame_len + 1, n), &f.payload).is_err());
    }
}
