//! Attacks on frames (FORMAT.md "Frames", pack versions 3 and 4): a frame swapped for another
//! on an encrypted medium, sizes that count a frame once per blob, restores that open a frame
//! once per blob, a backup's memory with frames in flight, and garbage collection of frames
//! that are partly live. Real binary, real media (directories), real files.

#[path = "support/util.rs"]
mod util;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use util::*;

/// A record of a pack as it lies on the medium: the pack, where its 44-byte header starts,
/// kind, encoding, raw_len and stored_len.
#[derive(Debug, Clone)]
struct Record {
    pack: PathBuf,
    at: usize,
    kind: u8,
    encoding: u8,
    raw_len: u32,
    stored_len: u32,
}

/// Every record of every pack, walked from the front up to the trailer.
fn records(medium: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    for sub in fs::read_dir(medium.join("trayback/packs")).unwrap() {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            let pack = f.unwrap().path();
            let b = fs::read(&pack).unwrap();
            let footer = &b[b.len() - 64..];
            let trailer = u64::from_le_bytes(footer[16..24].try_into().unwrap()) as usize;
            let mut at = 16;
            while at < trailer {
                let h = &b[at..at + 44];
                let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
                let r = Record {
                    pack: pack.clone(),
                    at,
                    kind: h[32],
                    encoding: h[33],
                    raw_len: u32_at(36),
                    stored_len: u32_at(40),
                };
                at += 44 + r.stored_len as usize;
                out.push(r);
            }
        }
    }
    out
}

/// `n` small text files (about 3 KB each) in 40 directories.
fn small_files(src: &Path, n: u64) {
    for i in 0..n {
        write(
            &src.join(format!("d{:02}/f{i:05}.txt", i % 40)),
            &words(i, 500),
        );
    }
}

/// Finding F1 (P2). On an encrypted medium a frame is sealed with its record header alone
/// (zero id, kind, encoding, lengths) as associated data: nothing binds the sealed bytes to
/// the blobs the trailer says are in it, nor to its pack or place. Two frames of equal
/// lengths swapped on the medium both still authenticate, so `verify` (which checks only the
/// tag of a sealed record, as FORMAT.md says a keyed id in the associated data allows) calls
/// the backup verified while every blob of both frames is lost to restore.
#[test]
fn a_frame_swapped_for_another_of_equal_lengths_fails_verify() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    // 84 blocks of one repeated byte each, 100 KiB (one block per file): 4 frames of 21
    // blocks with equal content lengths, and equal compressed lengths.
    for i in 0..84u8 {
        write(
            &env.src.join(format!("c{i:03}.bin")),
            &vec![i + 1; 100 << 10],
        );
    }
    env.backup(&["--kind", "monthly"]);
    let frames: Vec<Record> = records(&env.medium)
        .into_iter()
        .filter(|r| r.encoding == 0x82 && r.kind == 0)
        .collect();
    let (a, b) = frames
        .iter()
        .enumerate()
        .find_map(|(i, a)| {
            frames[i + 1..]
                .iter()
                .find(|b| {
                    b.pack == a.pack && (b.raw_len, b.stored_len) == (a.raw_len, a.stored_len)
                })
                .map(|b| (a.clone(), b.clone()))
        })
        .expect("two data frames of equal lengths in one pack");
    let mut bytes = fs::read(&a.pack).unwrap();
    let n = a.stored_len as usize;
    let pa: Vec<u8> = bytes[a.at + 44..a.at + 44 + n].to_vec();
    let pb: Vec<u8> = bytes[b.at + 44..b.at + 44 + n].to_vec();
    bytes[a.at + 44..a.at + 44 + n].copy_from_slice(&pb);
    bytes[b.at + 44..b.at + 44 + n].copy_from_slice(&pa);
    fs::write(&a.pack, &bytes).unwrap();
    // The blocks are gone: a restore stops at the first one.
    let to = env.path("restored");
    let r = env.try_restore(1, &to);
    assert!(!r.status.success(), "restore of swapped frames succeeded");
    // And verify must say so.
    let v = env.run(&["verify", "--medium", "{medium}"]);
    assert!(
        !v.status.success(),
        "verify calls a backup verified whose frames were swapped (restore: {}): {}",
        stderr(&r),
        text(&v.stdout)
    );
}

/// Finding F2 (P2). A trailer entry of a blob in a frame carries the *frame's* stored length,
/// and `maintain::usage` / `maintain::sharing` (src/maintain.rs:59, :123) sum it per blob: a
/// frame of 700 small files counts 700 times. `media show --json` reports live bytes hundreds
/// of times the packs' bytes, and `media show --reach` (and the web UI's forecast, the
/// agent's) sizes a full backup by the same count.
#[test]
fn live_bytes_count_each_frame_once() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    small_files(&env.src, 2000);
    env.backup(&["--kind", "monthly"]);
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["media", "show", "{medium}", "--json"])).unwrap();
    let (live, packs) = (
        v["live_bytes"].as_u64().unwrap(),
        v["packs_bytes"].as_u64().unwrap(),
    );
    assert!(
        live <= packs,
        "{live} live bytes in {packs} bytes of packs (nothing is garbage yet)"
    );
}

/// The user-mode CPU time of `trayback args` to the end, which must succeed (the system
/// time of a restore is the file system's, the same with frames or without).
fn cpu_of(env: &Env, args: &[&str]) -> std::time::Duration {
    let u = run_measured(
        env.command_as(&env.state_dir(), args)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert_eq!(u.code, Some(0), "trayback {args:?} failed");
    u.user
}

/// Finding F3 (P2). The reader keeps one decompressed frame per thread (src/store.rs
/// `read_framed`). After an incremental that changed every other file, a restore reads
/// small files alternately from the full backup's frames and the incremental's, so each
/// 3 KB file decompresses a whole 2 MiB frame: measured 75 times the user CPU of the same
/// restore from a medium of tree format 2 (10 000 files: 11.2 s against 0.15 s; 38 s
/// against 10 s of wall time; this test's 4 000 files: 4.3 s against 0.03 s). Such
/// interleaving is what any history of incrementals has.
#[test]
fn a_restore_after_an_incremental_opens_each_frame_about_once() {
    let mut cpu = Vec::new();
    for format in [3, 2] {
        let env = Env::new(MediumKind::Dir).unwrap();
        env.init_plaintext();
        if format == 2 {
            // What trayback before frames enrolled: it keeps writing packs without frames.
            let tree = env.medium.join("trayback/tree.yaml");
            let t = fs::read_to_string(&tree).unwrap();
            fs::write(&tree, t.replacen("format: 3", "format: 2", 1)).unwrap();
        }
        small_files(&env.src, 4000);
        env.backup(&["--kind", "monthly"]);
        // Every other file of each directory.
        for i in (0..4000).filter(|i| (i / 40) % 2 == 0) {
            let p = env.src.join(format!("d{:02}/f{i:05}.txt", i % 40));
            let mut b = fs::read(&p).unwrap();
            b.extend_from_slice(b"changed");
            fs::write(&p, b).unwrap();
        }
        env.backup(&["--kind", "micro"]);
        let to = env.path("restored");
        cpu.push(cpu_of(
            &env,
            &[
                "restore",
                "--medium",
                "{medium}",
                "--to",
                to.to_str().unwrap(),
            ],
        ));
        let landed = to.join(env.src.strip_prefix("/").unwrap());
        assert_eq!(
            fs::read(landed.join("d02/f00042.txt")).unwrap(),
            fs::read(env.src.join("d02/f00042.txt")).unwrap()
        );
    }
    let (framed, unframed) = (cpu[0], cpu[1]);
    eprintln!("restore user CPU with frames {framed:?}, without {unframed:?}");
    assert!(
        framed <= unframed * 3 + std::time::Duration::from_millis(500),
        "restore user CPU with frames {framed:?}, without {unframed:?}"
    );
}

/// A full backup of a few large compressible files holds a frame's blobs, its content and
/// its compressed bytes on every walk thread that fills one. With 2 MiB frames (before
/// bfab3c0) this peaked at 54–60 MiB for 8 files of 6.5 MiB on the 2-core VM (24 MiB on a
/// medium of tree format 2), over the 48 MiB bound of tests/memory.rs, whose 100 000 tiny
/// files never fill frames in parallel; with 1 MiB frames, 28–31 MiB.
#[test]
fn a_full_backup_of_large_compressible_files_stays_under_the_memory_bound() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    for i in 0..8 {
        write(
            &env.src.join(format!("big{i}.txt")),
            &words(100 + i, 1_200_000),
        );
    }
    let log = env.path("cmd.err");
    let u = run_measured(
        env.command_as(
            &env.state_dir(),
            &[
                "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "monthly",
            ],
        )
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap()),
    );
    assert_eq!(u.code, Some(0), "{}", fs::read_to_string(&log).unwrap());
    let mib = u.peak_kib / 1024;
    assert!(mib <= 48, "full backup peaked at {mib} MiB");
}

/// Garbage collection of frames that are partly live: a micro backup's frames hold blocks
/// the daily after it shares and blocks nothing else uses; paring the micro rewrites its
/// packs (each survivor taken out of its frame and written anew), and the daily still
/// verifies and restores byte for byte.
#[test]
fn paring_a_backup_whose_frames_are_partly_shared_keeps_every_survivor() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    small_files(&env.src, 3000);
    let change = |every: usize, mark: &str| {
        for i in (0..3000).step_by(every) {
            let p = env.src.join(format!("d{:02}/f{i:05}.txt", i % 40));
            let mut b = fs::read(&p).unwrap();
            b.extend_from_slice(mark.as_bytes());
            fs::write(&p, b).unwrap();
        }
    };
    let at = |h: u32| format!("2026-03-02T{h:02}:00:00Z");
    env.backup(&["--kind", "monthly", "--at", &at(0)]);
    change(4, " v2");
    env.backup(&["--kind", "micro", "--at", &at(1)]);
    let micro_packs: Vec<PathBuf> = {
        let h = env.header(2);
        h["packs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let p = p.as_str().unwrap();
                env.medium
                    .join(format!("trayback/packs/{}/{p}.pack", &p[..2]))
            })
            .collect()
    };
    assert!(micro_packs.iter().all(|p| p.exists()), "{micro_packs:?}");
    // Half the micro's blocks change again: the other half stays live through the daily.
    change(8, " v3");
    env.backup(&["--kind", "daily", "--at", &at(2)]);
    let out = env.ok(&[
        "pare",
        "--medium",
        "{medium}",
        "--at",
        "2026-03-20T00:00:00Z",
    ]);
    assert!(out.contains("#2"), "{out}");
    assert!(
        micro_packs.iter().any(|p| !p.exists()),
        "garbage collection rewrote none of the micro's packs"
    );
    env.ok(&["verify", "--medium", "{medium}", "--read-all"]);
    let landed = env.restore(3, "restored");
    for i in [0, 4, 8, 12, 2999] {
        let rel = format!("d{:02}/f{i:05}.txt", i % 40);
        assert_eq!(
            fs::read(landed.join(&rel)).unwrap(),
            fs::read(env.src.join(&rel)).unwrap(),
            "{rel}"
        );
    }
}
