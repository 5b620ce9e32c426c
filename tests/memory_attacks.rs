//! Memory against hostile media and source trees (the attack review of issue 13, findings
//! F1, F2, F5 and F7). Packs crafted to announce as many blobs as a reader accepts (FORMAT.md
//! "Pack files": at most 1 048 576 trailer entries), as frames of FRAME_MAX_MEMBERS tiny blobs
//! each, and trees shaped unlike tests/memory.rs's: a stranger's medium or tree must not make
//! a command's memory grow far past the bound that tests/memory.rs holds a real one to. The
//! ignored tests are known limits, measured, not yet met.

#[path = "support/util.rs"]
mod util;
use std::fs;
use trayback::crypt::Crypt;
use trayback::ids::{BlockId, PackId};
use trayback::store::pack::{frame, BlobKind, PackWriter};
use trayback::store::pack_rel;
use util::*;

/// A plaintext framed pack of `frames` frames of `members` 12-byte blobs each, written where a
/// medium's writer would put it; `valid`: each blob's id is that of its content, else every
/// blob is damaged (its id is not its content's).
fn hostile_pack(env: &Env, seed: u32, frames: u32, members: u32, valid: bool) {
    let id = PackId::random();
    let path = env.medium.join("trayback").join(pack_rel(&id));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut pw =
        PackWriter::new(id, fs::File::create(&path).unwrap(), &Crypt::Plain, true).unwrap();
    for f in 0..frames {
        // Each blob: 12 distinct bytes, its id that of its content (a valid blob).
        let raw: Vec<[u8; 12]> = (0..members)
            .map(|m| {
                let mut b = [0u8; 12];
                b[..4].copy_from_slice(&seed.to_le_bytes());
                b[4..8].copy_from_slice(&f.to_le_bytes());
                b[8..12].copy_from_slice(&m.to_le_bytes());
                b
            })
            .collect();
        let ids: Vec<BlockId> = raw
            .iter()
            .map(|b| BlockId::of(if valid { &b[..] } else { &b[1..] }))
            .collect();
        let c = frame::content((0..members).map(|_| 12u32), raw.concat());
        let enc = frame::encode(&Crypt::Plain, BlobKind::Data, &ids, &c, 3).unwrap();
        let blobs: Vec<(BlockId, u32)> = ids.iter().map(|i| (*i, 12)).collect();
        pw.append_frame(BlobKind::Data, &blobs, &enc).unwrap();
    }
    pw.finish(0, 0).unwrap();
}

/// A medium with `packs` crafted packs of 16 frames of 65 536 blobs: 1 048 576 entries each, the most a reader takes.
fn medium_with_dense_packs(packs: u32, valid: bool) -> Env {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    write(&env.src.join("a.txt"), b"hello\n");
    env.backup(&["--kind", "monthly"]);
    for s in 0..packs {
        hostile_pack(&env, s, 16, frame::FRAME_MAX_MEMBERS, valid);
    }
    write(&env.src.join("b.txt"), b"new content\n");
    env
}

/// F2: one 61 MiB pack of 1 048 576 valid blobs (what FORMAT.md says a reader
/// accepts) takes every command that opens the medium to ~256 MiB (backup, verify, media show).
#[test]
#[ignore = "atk13 F2: a pack of 1 048 576 entries costs ~256 MiB to open (bound 64)"]
fn a_pack_of_a_million_valid_blobs_keeps_memory_bounded() {
    let env = medium_with_dense_packs(1, true);
    let mut peaks = Vec::new();
    for args in [
        &[
            "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "daily",
        ][..],
        &["verify", "--medium", "{medium}", "--read-all"][..],
        &["media", "show", "{medium}"][..],
    ] {
        let (code, mib, _, err) = env.measured(args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        peaks.push((args[0], mib));
    }
    assert!(
        peaks.iter().all(|(_, p)| *p <= 64),
        "peak RSS, MiB: {peaks:?}"
    );
}

/// F1: verify --read-all kept a line (path and detail) per damaged blob of every pack until
/// it ended: four crafted 61 MiB packs of damaged blobs took it to ~2 GiB, ~0.5 GiB more per
/// pack. A pack's check now lists at most `MAX_BLOCKS_LISTED` blocks.
#[test]
fn verify_of_packs_of_damaged_blobs_keeps_memory_bounded() {
    let env = medium_with_dense_packs(4, false);
    let (code, mib, _, err) = env.measured(&["verify", "--medium", "{medium}", "--read-all"]);
    eprintln!("verify --read-all: exit {code:?}, peak {mib} MiB, {err}");
    // The crafted packs belong to no backup: backup 1 still verifies.
    assert_eq!(code, Some(0), "{err}");
    assert!(mib <= 300, "verify --read-all peaked at {mib} MiB");
}

/// 100 000 small files in 200 directories of 500 (tests/memory.rs has 2 000 of 50), each
/// directory with one file of 1 to 2 MiB (a third random, the rest text); on a medium
/// enrolled with the defaults.
fn wide_tree() -> Env {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    for d in 0..200u64 {
        let dir = env.src.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..500 {
            fs::write(dir.join(format!("s{f:03}")), format!("small {d} {f}\n")).unwrap();
        }
        let n = (1 << 20) + d as usize * (1 << 20) / 200;
        let mut big = bytes(d, n / 3);
        big.extend(
            format!("dir {d} big file\n")
                .repeat(n / 16 + 1)
                .bytes()
                .take(n - n / 3),
        );
        fs::write(dir.join("big"), big).unwrap();
    }
    env
}

/// F5: a full backup of 100 000 small files in 200 directories of 500, each
/// directory also holding one file of 1 to 2 MiB (a third random, the rest text), peaked at 68–73 MiB,
/// over tests/memory.rs's 64 MiB full-backup bound (63–64 with glibc's thresholds as before
/// b61eff3/07d2a4e: mmap at 1 MiB, trim at 128 KiB; 62 MiB without the 200 larger files).
#[test]
#[ignore = "atk13 F5: full backup of 100k small + 200 files of 1-2 MiB peaks at 68-73 MiB (bound 64)"]
fn a_full_backup_of_small_and_mid_sized_files_stays_under_its_bound() {
    let env = wide_tree();
    let args = [
        "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "monthly",
    ];
    let (code, mib, _, err) = env.measured(&args);
    assert_eq!(code, Some(0), "{err}");
    assert!(mib <= 64, "full backup peaked at {mib} MiB");
}

/// F7: a source tree of 100 000 small files (tests/memory.rs's shape), each also
/// hard-linked once outside the tree (what any local user can do to their files): the restore
/// plan holds every file of more than one name (ARCHITECTURE.md), here all of them, though no
/// other name is in the backup: 60–65 MiB against 32 without the links (bound 48; the full
/// backup 70 against 62).
#[test]
#[ignore = "atk13 F7: restore of 100k files hard-linked outside the tree peaks at 60-65 MiB (bound 48)"]
fn a_restore_of_files_linked_outside_the_tree_stays_under_the_bound() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let links = env.path("links");
    fs::create_dir_all(&links).unwrap();
    for d in 0..2000 {
        let dir = env.src.join(format!("d{:02}/s{d:04}", d / 50));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            let p = dir.join(format!("f{f:02}.txt"));
            fs::write(&p, format!("file {d} {f}\n")).unwrap();
            fs::hard_link(&p, links.join(format!("{d}-{f}"))).unwrap();
        }
    }
    env.backup(&["--kind", "monthly"]);
    let to = env.path("restored");
    let args = ["restore", "--medium", "{medium}", "--backup", "1", "--to"];
    let (code, mib, _, err) = env.measured(&[&args[..], &[to.to_str().unwrap()]].concat());
    assert_eq!(code, Some(0), "{err}");
    assert!(mib <= 48, "restore peaked at {mib} MiB");
}
