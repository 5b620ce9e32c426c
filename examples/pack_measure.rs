//! Measure what compressing data blocks in groups, with a dictionary, at other levels or with
//! long-distance matching would store, against today's per-block zstd (issue 13 item 4).
//!
//!     cargo run --release --example pack_measure -- DIR...
//!
//! Cuts every regular file under each DIR (sorted walk) into content-defined blocks with the
//! plaintext gear table, drops duplicate blocks, and reports for each strategy the total
//! stored bytes and the single-thread CPU time of compression (and of decompression).
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::time::Instant;
use trayback::store::chunk::{Chunker, Gear, CUT_BUFFER};
use trayback::store::pack::{compress, Encoding};

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            walk(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

/// zstd at `level`, optionally with long-distance matching and a window of 2^wlog.
fn z(level: i32, ldm: bool, data: &[u8]) -> Vec<u8> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::bulk::Compressor::new(level).unwrap();
    if ldm {
        c.set_parameter(CParameter::EnableLongDistanceMatching(true))
            .unwrap();
    }
    c.compress(data).unwrap()
}

struct Run {
    name: String,
    stored: u64,
    secs: f64,
    dsecs: f64,
}

fn main() {
    let chunker = Chunker::Content(Gear::public());
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut seen = HashSet::new();
    let mut raw_total = 0u64;
    let mut buf = vec![0u8; CUT_BUFFER];
    for d in std::env::args().skip(1) {
        let mut files = Vec::new();
        walk(std::path::Path::new(&d), &mut files);
        for p in files {
            let mut f = std::fs::File::open(&p).unwrap();
            chunker
                .cut::<std::io::Error>(
                    &mut buf,
                    &mut |b| trayback::store::chunk::read_retry(&mut f, b),
                    &mut |b| {
                        if seen.insert(Sha256::digest(b)) {
                            raw_total += b.len() as u64;
                            blocks.push(b.to_vec());
                        }
                        Ok(())
                    },
                )
                .unwrap();
        }
    }
    eprintln!(
        "{} unique blocks, {:.1} MiB",
        blocks.len(),
        raw_total as f64 / 1048576.0
    );
    // Which blocks today's sampling stores raw (random data): kept raw by every strategy.
    let t = Instant::now();
    let per: Vec<(Encoding, Vec<u8>)> = blocks.iter().map(|b| compress(b, 3)).collect();
    let base_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (e, p) in &per {
        if *e == Encoding::Zstd {
            zstd::bulk::decompress(p, 1 << 20).unwrap();
        }
    }
    let mut runs = vec![Run {
        name: "per block zstd 3 (today)".into(),
        stored: per.iter().map(|(_, p)| p.len() as u64 + 44).sum(),
        secs: base_secs,
        dsecs: t.elapsed().as_secs_f64(),
    }];
    let compressible: Vec<bool> = per.iter().map(|(e, _)| *e == Encoding::Zstd).collect();
    let raw_stored: u64 = blocks
        .iter()
        .zip(&compressible)
        .filter(|(_, c)| !**c)
        .map(|(b, _)| b.len() as u64 + 44)
        .sum();
    for level in [4, 5, 6] {
        let t = Instant::now();
        let s: u64 = blocks
            .iter()
            .map(|b| compress(b, level).1.len() as u64 + 44)
            .sum();
        runs.push(Run {
            name: format!("per block zstd {level}"),
            stored: s,
            secs: t.elapsed().as_secs_f64(),
            dsecs: 0.0,
        });
    }
    let t = Instant::now();
    let s: u64 = blocks
        .iter()
        .zip(&compressible)
        .map(|(b, c)| {
            if *c {
                z(3, true, b).len().min(b.len()) as u64 + 44
            } else {
                b.len() as u64 + 44
            }
        })
        .sum();
    runs.push(Run {
        name: "per block zstd 3 + long-distance".into(),
        stored: s,
        secs: t.elapsed().as_secs_f64() + 0.0,
        dsecs: 0.0,
    });
    // Groups: consecutive compressible blocks, one frame per ~target bytes (raw blocks apart).
    for (target, level, ldm) in [
        (1usize << 20, 3, false),
        (2 << 20, 3, false),
        (4 << 20, 3, false),
        (2 << 20, 3, true),
        (1 << 20, 1, false),
        (2 << 20, 2, false),
    ] {
        let t = Instant::now();
        let mut stored = raw_stored;
        let mut frames = Vec::new();
        let mut group: Vec<u8> = Vec::new();
        let mut n = 0u64;
        let flush = |group: &mut Vec<u8>, n: &mut u64, frames: &mut Vec<(Vec<u8>, usize)>| {
            if !group.is_empty() {
                let c = z(level, ldm, group);
                frames.push((c, group.len()));
                group.clear();
                *n = 0;
            }
        };
        for (b, c) in blocks.iter().zip(&compressible) {
            if !*c {
                continue;
            }
            group.extend_from_slice(b);
            n += 1;
            if group.len() >= target {
                flush(&mut group, &mut n, &mut frames);
            }
        }
        flush(&mut group, &mut n, &mut frames);
        let secs = t.elapsed().as_secs_f64();
        let count = compressible.iter().filter(|c| **c).count() as u64;
        // Per block: a 44-byte header + 8 bytes of offset in the frame; per frame 16 bytes.
        stored += frames.iter().map(|(f, _)| f.len() as u64 + 16).sum::<u64>() + count * 52;
        let t = Instant::now();
        for (f, len) in &frames {
            zstd::bulk::decompress(f, *len).unwrap();
        }
        runs.push(Run {
            name: format!(
                "groups of ~{} MiB, zstd {level}{}",
                target >> 20,
                if ldm { " + long-distance" } else { "" }
            ),
            stored,
            secs,
            dsecs: t.elapsed().as_secs_f64(),
        });
    }
    // A dictionary per pack: the compressible blocks of each ~32 MiB, a 110 KiB dictionary
    // trained on them (stored once per pack), each block compressed with it.
    let t = Instant::now();
    let mut stored = raw_stored;
    let mut pack: Vec<&Vec<u8>> = Vec::new();
    let mut len = 0usize;
    let mut packs = Vec::new();
    for (b, c) in blocks.iter().zip(&compressible) {
        if *c {
            pack.push(b);
            len += b.len();
            if len >= 32 << 20 {
                packs.push(std::mem::take(&mut pack));
                len = 0;
            }
        }
    }
    packs.push(pack);
    let mut train_secs = 0.0;
    for p in &packs {
        if p.is_empty() {
            continue;
        }
        let tt = Instant::now();
        // Samples: each block cut into 16 KiB pieces (zdict wants many small samples).
        let samples: Vec<&[u8]> = p.iter().flat_map(|b| b.chunks(16 << 10)).collect();
        let dict = zstd::dict::from_samples(&samples, 110 << 10).unwrap_or_default();
        train_secs += tt.elapsed().as_secs_f64();
        stored += dict.len() as u64;
        let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict).unwrap();
        for b in p {
            stored += c.compress(b).unwrap().len().min(b.len()) as u64 + 44;
        }
    }
    runs.push(Run {
        name: format!("dictionary per 32 MiB pack, zstd 3 (training {train_secs:.1} s)"),
        stored,
        secs: t.elapsed().as_secs_f64(),
        dsecs: 0.0,
    });
    let base = runs[0].stored as f64;
    println!(
        "raw {:.1} MiB in {} unique blocks",
        raw_total as f64 / 1048576.0,
        blocks.len()
    );
    println!(
        "{:<56} {:>10} {:>8} {:>9} {:>9}",
        "strategy", "MiB", "vs today", "comp s", "decomp s"
    );
    for r in &runs {
        println!(
            "{:<56} {:>10.1} {:>8.4} {:>9.2} {:>9.2}",
            r.name,
            r.stored as f64 / 1048576.0,
            r.stored as f64 / base,
            r.secs,
            r.dsecs
        );
    }
}
