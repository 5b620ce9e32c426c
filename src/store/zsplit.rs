//! Compressing a block whose front or back is incompressible (random or already compressed
//! bytes) without making zstd search those parts for matches.
//!
//! A content-defined block can straddle a change of content: a run of random bytes then
//! text, say. zstd at level 3 gains nothing on the random part but spends as long searching
//! it as it spends on text (the full backup of `bench/compare`'s mixed preset sent 200 MiB
//! more random bytes through zstd with content-defined blocks than with fixed ones, whose
//! blocks there are wholly one or the other). So a block whose first or last pieces do not
//! shrink is stored as one zstd frame (FORMAT.md "Pack files": the payload is still a single
//! frame any zstd decoder reads) made of raw blocks for those parts and zstd's own blocks for
//! the rest, compressed alone.
//!
//! Invariants: the frame produced decompresses to exactly the input (its header records the
//! content size, and zstd's compressed blocks only refer back within the part compressed,
//! which starts with zstd's initial state: only raw blocks come before it); any doubt about
//! the part compressed (a frame this module does not expect) falls back to compressing the
//! whole block.

/// The granularity of the search for an incompressible front and back.
const PIECE: usize = 16 << 10;
/// The bytes of a piece tested (as `codec`'s whole-block test does).
pub const SAMPLE: usize = 4096;
/// The largest block a zstd frame may hold (RFC 8878 `Block_Maximum_Size`).
const ZSTD_BLOCK: usize = 128 << 10;
const MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();

/// Compress `raw` into a single zstd frame: with `compress` (a whole frame, as zstd's bulk
/// API makes) as a whole, or, when its front or back pieces do not shrink (`incompressible`
/// of a [`SAMPLE`]), with those parts as raw blocks and only the rest compressed.
pub fn compress(
    raw: &[u8],
    compress: &mut dyn FnMut(&[u8]) -> Option<Vec<u8>>,
    incompressible: &mut dyn FnMut(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let n = raw.len();
    if n < 4 * PIECE {
        return compress(raw);
    }
    // Samples at the start of each piece from the front: if pieces 0..k do not shrink, the
    // change of content lies in piece k-1 at the earliest, so pieces 0..k-1 stay raw.
    let pieces = n / PIECE;
    let lead = (0..pieces)
        .take_while(|&i| incompressible(&raw[i * PIECE..i * PIECE + SAMPLE]))
        .count();
    if lead == pieces {
        // No piece shrinks: as `codec` treats a block none of whose samples shrink.
        return None;
    }
    let front = lead.saturating_sub(1) * PIECE;
    // The same from the back (samples at each piece's end), within what the front left.
    let trail = (0..(n - front) / PIECE)
        .take_while(|&i| incompressible(&raw[n - i * PIECE - SAMPLE..n - i * PIECE]))
        .count();
    let back = trail.saturating_sub(1) * PIECE;
    if front == 0 && back == 0 {
        return compress(raw);
    }
    if front + back >= n {
        return None;
    }
    let middle = compress(&raw[front..n - back])?;
    join(raw, front, back, &middle).or_else(|| compress(raw))
}

/// One frame: `raw[..front]` as raw blocks, the blocks of `middle` (a frame of
/// `raw[front..n - back]`), `raw[n - back..]` as raw blocks. None if `middle` is not a frame
/// of the kind expected (no dictionary, no checksum, blocks that end exactly at its end).
fn join(raw: &[u8], front: usize, back: usize, middle: &[u8]) -> Option<Vec<u8>> {
    let blocks = frame_blocks(middle)?;
    let mut out = Vec::with_capacity(front + back + middle.len() + 64);
    // Header: single segment (the window is the whole content), 4-byte content size, no
    // checksum, no dictionary.
    out.extend_from_slice(&MAGIC);
    out.push(0b1010_0000);
    out.extend_from_slice(&u32::try_from(raw.len()).ok()?.to_le_bytes());
    raw_blocks(&mut out, &raw[..front], false);
    let (body, last) = blocks;
    let at = out.len();
    out.extend_from_slice(&middle[body..]);
    if back > 0 {
        out[at + last - body] &= !1;
        raw_blocks(&mut out, &raw[raw.len() - back..], true);
    }
    Some(out)
}

/// Append `data` as raw blocks; the last one marked last if `end`.
fn raw_blocks(out: &mut Vec<u8>, data: &[u8], end: bool) {
    let count = data.len().div_ceil(ZSTD_BLOCK);
    for (i, b) in data.chunks(ZSTD_BLOCK).enumerate() {
        let head = (b.len() as u32) << 3 | (end && i + 1 == count) as u32;
        out.extend_from_slice(&head.to_le_bytes()[..3]);
        out.extend_from_slice(b);
    }
}

/// Where the blocks of frame `f` start and where its last block's header is, if `f` is one
/// frame with no dictionary and no checksum whose blocks end exactly at its end.
fn frame_blocks(f: &[u8]) -> Option<(usize, usize)> {
    if f.get(..4)? != MAGIC {
        return None;
    }
    let fhd = *f.get(4)?;
    let (fcs, single, checksum, dict) = (fhd >> 6, fhd >> 5 & 1, fhd >> 2 & 1, fhd & 3);
    if checksum != 0 || dict != 0 || fhd & 0b1_1000 != 0 {
        return None;
    }
    let fcs_len = [single as usize, 2, 4, 8][fcs as usize];
    let body = 5 + (1 - single as usize) + fcs_len;
    let mut at = body;
    loop {
        let h = f.get(at..at + 3)?;
        let h = u32::from_le_bytes([h[0], h[1], h[2], 0]);
        let len = match h >> 1 & 3 {
            0 | 2 => (h >> 3) as usize,
            1 => 1,
            _ => return None,
        };
        if h & 1 == 1 {
            return (at + 3 + len == f.len()).then_some((body, at));
        }
        at += 3 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn text(n: usize) -> Vec<u8> {
        let words = ["backup ", "tray ", "medium ", "verify ", "the ", "of "];
        let mut out = Vec::new();
        let mut i = 7usize;
        while out.len() < n {
            i = i.wrapping_mul(31).wrapping_add(17);
            out.extend_from_slice(words[i % words.len()].as_bytes());
        }
        out.truncate(n);
        out
    }

    /// The whole-block test of `codec`, at zstd's fastest level.
    fn shrinks_not(s: &[u8]) -> bool {
        zstd::bulk::compress(s, 1).map_or(true, |c| c.len() * 100 > s.len() * 97)
    }

    fn pack(raw: &[u8]) -> (Vec<u8>, usize) {
        let mut searched = 0;
        let out = compress(
            raw,
            &mut |b| {
                searched += b.len();
                zstd::bulk::compress(b, 3).ok()
            },
            &mut shrinks_not,
        )
        .unwrap();
        (out, searched)
    }

    #[test]
    fn mixed_blocks_round_trip_and_skip_the_random_parts() {
        let r = |n, s| noise(n, s);
        let cases: Vec<(Vec<Vec<u8>>, usize)> = vec![
            // (parts, at most this many bytes searched)
            (vec![r(300 << 10, 1), text(200 << 10)], (200 + 16) << 10),
            (vec![text(200 << 10), r(300 << 10, 2)], (200 + 16) << 10),
            (
                vec![r(100 << 10, 3), text(500 << 10), r(400 << 10, 4)],
                (500 + 32) << 10,
            ),
            (vec![r(70_001, 5), text(123_457)], 123_457 + (32 << 10)),
            (vec![text(1 << 20)], 1 << 20),
            (vec![r(16 << 10, 6), text(48 << 10)], 64 << 10),
        ];
        for (parts, bound) in cases {
            let raw = parts.concat();
            let (z, searched) = pack(&raw);
            assert!(searched <= bound, "{searched} searched, bound {bound}");
            assert!(z.len() < raw.len());
            assert_eq!(zstd::bulk::decompress(&z, raw.len()).unwrap(), raw);
            // A streaming decoder (as `zstd -d` and the independent reader use) agrees.
            assert_eq!(zstd::stream::decode_all(&z[..]).unwrap(), raw);
        }
    }

    #[test]
    fn a_block_that_shrinks_nowhere_is_not_compressed() {
        let raw = noise(300 << 10, 7);
        let mut called = false;
        let out = compress(
            &raw,
            &mut |b| {
                called = true;
                zstd::bulk::compress(b, 3).ok()
            },
            &mut shrinks_not,
        );
        assert!(out.is_none() && !called);
    }

    #[test]
    fn unexpected_frames_are_not_joined() {
        let mut with_sum = zstd::bulk::Compressor::new(3).unwrap();
        with_sum
            .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .expect("checksum parameter");
        let f = with_sum.compress(&text(10_000)).unwrap();
        assert!(frame_blocks(&f).is_none());
        let plain = zstd::bulk::compress(&text(10_000), 3).unwrap();
        assert!(frame_blocks(&plain).is_some());
        assert!(frame_blocks(&plain[..plain.len() - 1]).is_none());
        assert!(frame_blocks(b"not zstd").is_none());
    }
}
