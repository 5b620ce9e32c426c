//! Decoding untrusted bytes allocates in proportion to them: a listing at most a small
//! multiple of its length (whatever its counts claim), a pack record at most its capped
//! `raw_len`. Measured with a counting allocator (this test binary's only test, so nothing
//! else allocates meanwhile).

use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use trayback::ids::BlockId;
use trayback::listing::{Binary, Bytes, Entry, EntryKind, Listing, Xattr};
use trayback::store::pack::{self, BlobKind, Encoding};

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = NOW.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(n, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Bytes allocated at the peak of `f`, beyond what was allocated before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> usize {
    let base = NOW.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    drop(out);
    peak
}

/// The ratio the listing decoder keeps: allocation ≤ 12 × input + 4 KiB.
fn bounded(input: usize, peak: usize) -> bool {
    peak <= 12 * input + 4096
}

/// Listings built to cost the most memory per byte: one-byte names and many tiny xattrs.
fn worst_cases() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // Many entries with the smallest encoding (fifos, one-byte names).
    let fifos: Vec<Entry> = (0..200u32)
        .map(|i| Entry::new(Bytes(format!("{i:03}").into_bytes()), EntryKind::Fifo))
        .collect();
    out.push(Listing::new(fifos).encode());
    // One entry with 10 000 xattrs of one-byte names and empty values.
    let mut e = Entry::new(Bytes(b"x".to_vec()), EntryKind::Fifo);
    e.xattrs = (0..10_000)
        .map(|i: u32| Xattr {
            name: Bytes(vec![(i % 251) as u8 + 1]),
            value: Binary(Vec::new()),
        })
        .collect();
    out.push(Listing::new(vec![e]).encode());
    // A file whose block count claims more than the listing holds.
    let mut f = Entry::new(Bytes(b"f".to_vec()), EntryKind::File);
    f.size = 1;
    f.blocks = vec![BlockId::of(b"x")];
    let mut b = Listing::new(vec![f]).encode();
    let at = b.len() - 2 - 32 - 4;
    b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    out.push(b);
    out
}

#[test]
fn decoding_allocates_in_proportion_to_the_input() {
    for bytes in worst_cases() {
        let peak = peak_of(|| Listing::decode(&bytes));
        eprintln!(
            "{} bytes: peak {peak} ({:.1}x)",
            bytes.len(),
            peak as f64 / bytes.len() as f64
        );
        assert!(
            bounded(bytes.len(), peak),
            "{} bytes took {peak}",
            bytes.len()
        );
    }
    // A pack record claiming more than its kind's cap is refused before anything is allocated.
    let id = BlockId::of(b"x");
    for (kind, raw) in [(BlobKind::Data, 1u32 << 30), (BlobKind::Listing, u32::MAX)] {
        let e = pack::parse_record(&pack::record_header(&id, kind, Encoding::Zstd, raw, 9), 60);
        assert!(e.is_err(), "{kind:?} {raw}");
    }
    // A payload that inflates past its recorded length stops at that length.
    let big = zstd::bulk::compress(&vec![0u8; 1 << 20], 1).unwrap();
    let e = pack::Entry {
        id,
        kind: BlobKind::Data,
        encoding: Encoding::Zstd,
        raw_len: 4096,
        stored_len: big.len() as u32,
        offset: 60,
        at: 0,
        frame_len: 0,
    };
    let peak = peak_of(|| pack::decode(&trayback::crypt::Crypt::Plain, &e, &big));
    assert!(peak < 64 << 10, "{peak}");
    // Random and damaged bytes, too.
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(
            &(
                proptest::collection::vec(any::<u8>(), 0..2000),
                0usize..4,
                any::<usize>(),
                any::<u32>(),
            ),
            |(noise, base, at, value)| {
                let mut bytes = match base {
                    0 => noise.clone(),
                    b => worst_cases()[b - 1].clone(),
                };
                if !bytes.is_empty() && base > 0 {
                    let at = (at % bytes.len()) & !1;
                    for (i, v) in value.to_le_bytes().iter().enumerate() {
                        if let Some(x) = bytes.get_mut(at + i) {
                            *x = *v;
                        }
                    }
                }
                let peak = peak_of(|| Listing::decode(&bytes));
                prop_assert!(
                    bounded(bytes.len(), peak),
                    "{} bytes took {}",
                    bytes.len(),
                    peak
                );
                Ok(())
            },
        )
        .unwrap();
}
