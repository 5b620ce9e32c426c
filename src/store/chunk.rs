//! Cutting a file's content into data blocks (FORMAT.md "Blobs and blob ids").
//!
//! A medium's tree format decides how: format 1 media keep fixed 256 KiB blocks (so their
//! incrementals still deduplicate against their own backups), format 2 media cut where the
//! content says (FastCDC 2020: the `fastcdc` crate's cut-point arithmetic and table), so an
//! insertion or deletion anywhere in a file costs a few blocks instead of every block after
//! it.
//!
//! Invariants:
//! - every block is at most [`MAX_BLOCK`] bytes (the data-block cap readers enforce); with
//!   content-defined cuts, every block but a file's last is at least [`MIN_BLOCK`];
//! - cuts depend only on the content and the medium's gear table, never on how reads
//!   happened to split it (the same bytes give the same blocks);
//! - on an encrypted medium the gear table is keyed from the medium's data key, so the block
//!   lengths the record headers show do not fingerprint known content for anyone without it.

use crate::crypt::SecretKey;
use fastcdc::v2020::{get_gear_with_seed, select_masks, Normalization};
use std::io;

/// Fixed blocks (tree format 1): every block but a file's last is exactly this long.
pub const FIXED_BLOCK: usize = 256 << 10;
/// Content-defined blocks (tree format 2): at least this long, except a file's last ...
pub const MIN_BLOCK: usize = 192 << 10;
/// ... about this long on average (spec [0012]: 256 KiB blocks; measured 252 KiB on random
/// data) ...
pub const AVG_BLOCK: usize = 256 << 10;
/// ... and never longer than this: the largest data block a reader accepts.
pub const MAX_BLOCK: usize = 1 << 20;
/// The average FastCDC is given, which only picks its masks: below [`MIN_BLOCK`], so only
/// the relaxed mask (16 bits) is ever used and a cut comes a mean 64 KiB after the minimum.
/// (64 KiB / 256 KiB / 1 MiB with FastCDC's normalization hashed three times the bytes, a
/// quarter more CPU for a full backup, for a 305 KiB mean and insertions that cost more:
/// ARCHITECTURE.md "Content-defined blocks" has the numbers.)
const MASK_AVG: usize = 128 << 10;
// [`Gear::cut`] tests the relaxed mask only: FastCDC's strict mask covers the bytes before
// the average, which must be below the minimum.
const _: () = assert!(MASK_AVG < MIN_BLOCK);

/// The sub-key label of an encrypted medium's gear table (FORMAT.md "Key hierarchy").
pub const LABEL_CHUNKER: &str = "trayback chunker v1";

/// How a medium cuts content into blocks.
#[derive(Clone)]
pub enum Chunker {
    /// Every [`FIXED_BLOCK`] bytes (tree format 1).
    Fixed,
    /// Content-defined, with this gear table (tree format 2).
    Content(Box<Gear>),
}

/// A FastCDC gear table and its left-shifted twin: read for every byte hashed, by every
/// thread reading files, so it has cache lines of its own (aligned, a whole number of lines)
/// and never shares one with anything written.
#[derive(Clone)]
#[repr(align(64))]
pub struct Gear {
    gear: [u64; 256],
    gear_ls: [u64; 256],
}

impl Gear {
    fn of(gear: &[u64]) -> Box<Gear> {
        let mut g = Box::new(Gear {
            gear: [0; 256],
            gear_ls: [0; 256],
        });
        for (i, v) in gear.iter().enumerate() {
            g.gear[i] = *v;
            g.gear_ls[i] = v << 1;
        }
        g
    }

    /// FastCDC 2020's cut in `data` (the `fastcdc` crate's `cut_gear` with this chunker's
    /// sizes: only the relaxed mask, since the average given is below the minimum), going
    /// on from `scan`, which holds where an earlier call with a prefix of `data` stopped.
    /// The same arithmetic, byte pairs and masks as `cut_gear`, so the same cuts (the unit
    /// test `cuts_are_fastcdcs` compares them).
    fn cut(&self, data: &[u8], scan: &mut Scan) -> usize {
        let remaining = data.len().min(MAX_BLOCK);
        if remaining <= MIN_BLOCK {
            return remaining;
        }
        let (_, mask_l) = select_masks(MASK_AVG, Normalization::Level1);
        let mask_l_ls = mask_l << 1;
        let src = &data[..remaining];
        let (mut index, mut hash) = match scan.pair {
            0 => (MIN_BLOCK / 2, 0u64),
            p => (p, scan.hash),
        };
        let limit = remaining / 2;
        while index < limit {
            let a = index * 2;
            hash = (hash << 2).wrapping_add(self.gear_ls[src[a] as usize]);
            if hash & mask_l_ls == 0 {
                return a;
            }
            hash = hash.wrapping_add(self.gear[src[a + 1] as usize]);
            if hash & mask_l == 0 {
                return a + 1;
            }
            index += 1;
        }
        *scan = Scan { pair: index, hash };
        remaining
    }

    /// The `fastcdc` crate's own table: plaintext media (whose blocks hide nothing anyway).
    pub fn public() -> Box<Gear> {
        Gear::of(&get_gear_with_seed(0).0)
    }

    /// A table keyed with `key` (an encrypted medium's chunker sub-key): entry `i` is the
    /// first 8 bytes (little-endian) of HMAC-SHA-256(key, the byte `i`).
    pub fn keyed(key: &SecretKey) -> Box<Gear> {
        let gear: Vec<u64> = (0..=255u8)
            .map(|i| {
                let mut mac = key.hmac();
                mac.update(&[i]);
                let out = mac.finish();
                u64::from_le_bytes(out[..8].try_into().expect("8 bytes"))
            })
            .collect();
        Gear::of(&gear)
    }
}

/// How far the search for a block's end got: the next byte pair to hash (0: none yet) and
/// the gear hash before it.
#[derive(Default)]
struct Scan {
    pair: usize,
    hash: u64,
}

/// How much [`Chunker::cut`] reads at a time: a block's worth, so a block is hashed and
/// compressed soon after it is read (reading 2 MiB ahead measured no different).
const READ_STEP: usize = 256 << 10;
/// The buffer [`Chunker::cut`] works in: the largest block and one read.
pub const CUT_BUFFER: usize = MAX_BLOCK + READ_STEP;

impl Chunker {
    /// Whether `count` blocks of this chunker can hold a file of `size` bytes (the rule a
    /// reader of this medium's listings applies, [`block_count_fits`]).
    pub fn fits(&self, size: u64, count: u64) -> bool {
        block_count_fits(matches!(self, Chunker::Content(_)), size, count)
    }

    /// The length of the next block at the front of `data` (non-empty), and whether it is
    /// final: a cut was found before the end of `data`, or the block is as long as blocks
    /// get. Otherwise the block may go on past `data`: more must be read (at the end of the
    /// file, it ends there), and `scan` keeps how far the search got, so the next call with
    /// the same block's bytes (and more after them) goes on from there instead of hashing
    /// them again. Blocks do not depend on how reads split the file: the cut found is the
    /// first of FastCDC's (`cut_gear`'s) for this block, however much follows it.
    fn next(&self, data: &[u8], scan: &mut Scan) -> (usize, bool) {
        match self {
            Chunker::Fixed => {
                let n = data.len().min(FIXED_BLOCK);
                (n, n == FIXED_BLOCK)
            }
            Chunker::Content(g) => {
                let n = g.cut(data, scan);
                (n, n < data.len() || n == MAX_BLOCK)
            }
        }
    }

    /// Cut everything `read` gives (until it returns 0) into blocks, handing each to `put`
    /// in order; `buf` is scratch of [`CUT_BUFFER`] bytes. Returns the bytes read.
    pub fn cut<E>(
        &self,
        buf: &mut [u8],
        read: &mut dyn FnMut(&mut [u8]) -> Result<usize, E>,
        put: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        assert!(
            buf.len() >= CUT_BUFFER,
            "a cut buffer of a block and a read"
        );
        let (mut start, mut len) = (0, 0);
        let mut total = 0u64;
        let mut eof = false;
        let mut scan = Scan::default();
        loop {
            if start < len {
                let (n, last) = self.next(&buf[start..len], &mut scan);
                debug_assert!(n > 0 && n <= MAX_BLOCK);
                if last || eof {
                    put(&buf[start..start + n])?;
                    scan = Scan::default();
                    start += n;
                    total += n as u64;
                    continue;
                }
            } else if eof {
                return Ok(total);
            }
            // The block goes on past what was read (always shorter than MAX_BLOCK here). It is
            // moved to the front first, so the buffer's first block and a read are all that
            // is ever touched: it stays in cache.
            if start > 0 {
                buf.copy_within(start..len, 0);
                len -= start;
                start = 0;
            }
            let end = len + READ_STEP;
            while !eof && len < end {
                match read(&mut buf[len..end])? {
                    0 => eof = true,
                    n => len += n,
                }
            }
        }
    }
}

/// How many blocks a file of `size` bytes may have: exactly `ceil(size / FIXED_BLOCK)` for
/// fixed blocks; for content-defined ones at least `ceil(size / MAX_BLOCK)` and at most
/// `floor(size / MIN_BLOCK) + 1` (none for an empty file).
pub fn block_count_fits(content_defined: bool, size: u64, count: u64) -> bool {
    if !content_defined {
        return count == size.div_ceil(FIXED_BLOCK as u64);
    }
    if size == 0 {
        return count == 0;
    }
    size.div_ceil(MAX_BLOCK as u64) <= count && count <= size / MIN_BLOCK as u64 + 1
}

/// Read into `buf` from `f`, retrying interrupted reads.
pub fn read_retry(f: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match f.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
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

    /// Blocks of `data` cut by `c`, reading it `step` bytes at a time.
    fn blocks(c: &Chunker, data: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; CUT_BUFFER];
        let mut at = 0;
        let mut out = Vec::new();
        let total = c
            .cut::<()>(
                &mut buf,
                &mut |b| {
                    let n = b.len().min(step).min(data.len() - at);
                    b[..n].copy_from_slice(&data[at..at + n]);
                    at += n;
                    Ok(n)
                },
                &mut |b| {
                    out.push(b.to_vec());
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(total, data.len() as u64);
        out
    }

    /// The blocks `fastcdc`'s own `cut_gear` finds in `data` held whole in memory.
    fn fastcdc_blocks(g: &Gear, data: &[u8]) -> Vec<usize> {
        let (mask_s, mask_l) = select_masks(MASK_AVG, Normalization::Level1);
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let (_, n) = fastcdc::v2020::cut_gear(
                &data[at..],
                MIN_BLOCK,
                MASK_AVG,
                MAX_BLOCK,
                mask_s,
                mask_l,
                mask_s << 1,
                mask_l << 1,
                &g.gear,
                &g.gear_ls,
            );
            out.push(n);
            at += n;
        }
        out
    }

    #[test]
    fn cuts_are_fastcdcs() {
        // Random runs, text-like runs (long blocks) and a zero run (blocks of MAX_BLOCK).
        let mut data = noise(5 << 20, 9);
        data.extend((0..(3 << 20)).map(|i| b"backup tray of the "[i % 19] ^ (i / 7919) as u8));
        data.extend(std::iter::repeat_n(0u8, 5 << 19));
        data.extend(noise(777_777, 10));
        let keyed = Gear::keyed(&SecretKey::from_bytes([3; 32]));
        for g in [Gear::public(), keyed] {
            let want = fastcdc_blocks(&g, &data);
            let c = Chunker::Content(g);
            for step in [1 << 20, 65_537, 4095, READ_STEP] {
                let got: Vec<usize> = blocks(&c, &data, step).iter().map(Vec::len).collect();
                assert_eq!(got, want, "reads of {step}");
            }
        }
    }

    #[test]
    fn the_public_table_is_fastcdcs() {
        let (gear, gear_ls) = get_gear_with_seed(0);
        let g = Gear::public();
        assert_eq!((&g.gear[..], &g.gear_ls[..]), (&gear[..], &gear_ls[..]));
    }

    #[test]
    fn fixed_blocks_are_256_kib() {
        let data = noise(3 * FIXED_BLOCK + 5, 1);
        let b = blocks(&Chunker::Fixed, &data, 100_000);
        let lens: Vec<usize> = b.iter().map(Vec::len).collect();
        assert_eq!(lens, [FIXED_BLOCK, FIXED_BLOCK, FIXED_BLOCK, 5]);
        assert_eq!(b.concat(), data);
        assert!(block_count_fits(false, data.len() as u64, 4));
        assert!(!block_count_fits(false, data.len() as u64, 5));
    }

    #[test]
    fn content_blocks_are_bounded_and_independent_of_reads() {
        let data = noise(9 << 20, 2);
        let c = Chunker::Content(Gear::public());
        let a = blocks(&c, &data, 1 << 20);
        let b = blocks(&c, &data, 4097);
        assert_eq!(a, b);
        assert_eq!(a.concat(), data);
        for x in &a[..a.len() - 1] {
            assert!((MIN_BLOCK..=MAX_BLOCK).contains(&x.len()), "{}", x.len());
        }
        assert!(block_count_fits(true, data.len() as u64, a.len() as u64));
        let avg = data.len() / a.len();
        assert!(
            (AVG_BLOCK / 2..AVG_BLOCK * 2).contains(&avg),
            "average {avg}"
        );
    }

    #[test]
    fn an_insertion_changes_few_blocks() {
        let data = noise(16 << 20, 3);
        let c = Chunker::Content(Gear::public());
        let before = blocks(&c, &data, 1 << 20);
        let mut changed = data.clone();
        changed.splice(8 << 20..8 << 20, [7u8; 100]);
        let after = blocks(&c, &changed, 1 << 20);
        let new = after.iter().filter(|b| !before.contains(b)).count();
        assert!(new <= 3, "{new} new blocks of {}", after.len());
    }

    #[test]
    fn a_keyed_table_cuts_elsewhere() {
        let data = noise(8 << 20, 4);
        let public = blocks(&Chunker::Content(Gear::public()), &data, 1 << 20);
        let k1 = SecretKey::from_bytes([1; 32]);
        let k2 = SecretKey::from_bytes([2; 32]);
        let a = blocks(&Chunker::Content(Gear::keyed(&k1)), &data, 1 << 20);
        let b = blocks(&Chunker::Content(Gear::keyed(&k2)), &data, 1 << 20);
        assert_ne!(a, public);
        assert_ne!(a, b);
        assert_eq!(a, blocks(&Chunker::Content(Gear::keyed(&k1)), &data, 333));
    }

    #[test]
    fn block_counts() {
        let m = MAX_BLOCK as u64;
        let n = MIN_BLOCK as u64;
        for (size, count, ok) in [
            (0, 0, true),
            (0, 1, false),
            (1, 0, false),
            (1, 1, true),
            (1, 2, false),
            (m, 1, true),
            (m + 1, 1, false),
            (m + 1, 2, true),
            (4 * n, 5, true),
            (4 * n, 6, false),
            (4 * n - 1, 4, true),
            (4 * n - 1, 5, false),
        ] {
            assert_eq!(block_count_fits(true, size, count), ok, "{size} {count}");
        }
    }
}
