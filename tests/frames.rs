//! Frames (FORMAT.md "Frames"): a new medium compresses consecutive blobs together, each
//! still read, verified and restored by its own id; a medium of tree format 2 keeps writing
//! packs without frames for as long as it exists.

#[path = "support/util.rs"]
mod util;
use std::fs;
use std::path::Path;
use trayback::store::pack::frame::FRAME_MAX_MEMBERS;
use util::*;

/// Each pack's header version and how many of its trailer entries are blobs in frames.
fn packs(medium: &Path) -> Vec<(u32, usize)> {
    let mut out = Vec::new();
    for sub in fs::read_dir(medium.join("trayback/packs")).unwrap() {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            let b = fs::read(f.unwrap().path()).unwrap();
            let version = u32::from_le_bytes(b[8..12].try_into().unwrap());
            let footer = &b[b.len() - 64..];
            let count = u32::from_le_bytes(footer[12..16].try_into().unwrap()) as usize;
            let toff = u64::from_le_bytes(footer[16..24].try_into().unwrap()) as usize;
            let size = if version == 3 { 60 } else { 52 };
            let framed = (0..count).filter(|i| b[toff + size * i + 33] == 2).count();
            out.push((version, framed));
        }
    }
    out
}

/// Flip a byte in the middle of the first `most` frame records (encoding 2) of the medium's
/// packs, walking each pack's records from the front (all of them if `None`); how many.
fn damage_frames(medium: &Path, most: Option<usize>) -> usize {
    let mut n = 0;
    for sub in fs::read_dir(medium.join("trayback/packs")).unwrap() {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let mut b = fs::read(&path).unwrap();
            let toff = u64::from_le_bytes(b[b.len() - 48..b.len() - 40].try_into().unwrap());
            let mut pos = 16;
            while most.is_none_or(|m| n < m) && pos + 44 <= toff as usize {
                let stored = u32::from_le_bytes(b[pos + 40..pos + 44].try_into().unwrap());
                if b[pos + 33] == 2 {
                    b[pos + 44 + stored as usize / 2] ^= 0x55;
                    n += 1;
                }
                pos += 44 + stored as usize;
            }
            fs::write(&path, &b).unwrap();
        }
    }
    n
}

fn source(env: &Env) {
    for i in 0..400 {
        write(
            &env.src.join(format!("d{}/t{i}.txt", i % 7)),
            &words(i, 50 + i as usize),
        );
    }
    write(&env.src.join("big.txt"), &words(999, 700_000));
    write(&env.src.join("random.bin"), &bytes(3, 1 << 20));
}

fn restores_byte_for_byte(env: &Env) {
    env.ok(&["verify", "--medium", "{medium}", "--read-all"]);
    let to = env.path("restored");
    env.ok(&[
        "restore",
        "--medium",
        "{medium}",
        "--to",
        to.to_str().unwrap(),
    ]);
    let landed = to.join(env.src.strip_prefix("/").unwrap());
    for rel in ["d3/t3.txt", "d0/t399.txt", "big.txt", "random.bin"] {
        assert_eq!(
            fs::read(landed.join(rel)).unwrap(),
            fs::read(env.src.join(rel)).unwrap(),
            "{rel}"
        );
    }
    fs::remove_dir_all(&to).unwrap();
}

#[test]
fn a_new_medium_stores_small_files_in_frames_and_restores_each_by_its_id() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    source(&env);
    env.backup(&["--kind", "monthly"]);
    let tree = fs::read_to_string(env.medium.join("trayback/tree.yaml")).unwrap();
    assert!(tree.starts_with("format: 3\n"), "{tree}");
    let p = packs(&env.medium);
    assert!(p.iter().all(|(v, _)| *v == 3), "{p:?}");
    // 400 small files and the big file's blocks in frames (the random block is stored as it
    // is, and listings are records of their own).
    let framed: usize = p.iter().map(|(_, n)| n).sum();
    assert!(framed >= 400, "{p:?}");
    restores_byte_for_byte(&env);
    // An incremental that changes one small file deduplicates against blobs in frames.
    write(&env.src.join("d3/t3.txt"), b"changed");
    let b2 = env.backup(&["--kind", "micro"]);
    let new = env.header(b2)["bytes"]["new"].as_u64().unwrap();
    // The changed file and the listings above it (the others' blocks are found in frames).
    assert!(new < 16 << 10, "{new} bytes new for a 7-byte change");
    restores_byte_for_byte(&env);
}

#[test]
fn a_medium_of_tree_format_2_keeps_writing_packs_without_frames() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    // What trayback before frames enrolled: tree format 2.
    let tree = env.medium.join("trayback/tree.yaml");
    let t = fs::read_to_string(&tree).unwrap();
    fs::write(&tree, t.replacen("format: 3", "format: 2", 1)).unwrap();
    source(&env);
    env.backup(&["--kind", "monthly"]);
    write(&env.src.join("d3/t3.txt"), b"changed");
    env.backup(&["--kind", "micro"]);
    let p = packs(&env.medium);
    assert!(p.iter().all(|&(v, n)| v == 1 && n == 0), "{p:?}");
    assert!(fs::read_to_string(&tree)
        .unwrap()
        .starts_with("format: 2\n"));
    restores_byte_for_byte(&env);
    // Rebuilding the tree keeps format 2: the medium has packs of version 1.
    env.ok(&["repair", "--medium", "{medium}", "--tree"]);
    assert!(fs::read_to_string(&tree)
        .unwrap()
        .starts_with("format: 2\n"));
}

/// One byte changed inside a frame: verify names damage, and the blobs of other frames still
/// restore (a frame is opened as a whole; zstd's checksum and each blob's id catch it).
#[test]
fn a_damaged_frame_is_reported_by_verify() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    source(&env);
    env.backup(&["--kind", "monthly"]);
    assert_eq!(damage_frames(&env.medium, Some(1)), 1, "no frame found");
    let out = env.run(&["verify", "--medium", "{medium}", "--read-all"]);
    assert!(!out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_pack_of_small_blobs_in_frames_is_closed_by_its_count_of_blobs() {
    // 60 000 distinct small files (~100 bytes: ~10 000 to a 1 MiB frame) compress to far
    // less than a pack's 32 MiB, but a pack is also closed at 32 768 blobs (a frame may add
    // up to 65 536 past it): a writer's memory follows an open pack's blobs, and a reader
    // refuses a trailer of over 1 048 576.
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    let text = |i: usize| format!("{i} ").repeat(100 / (i.to_string().len() + 1));
    for i in 0..60_000 {
        write(
            &env.src.join(format!("d{}/f{i}.txt", i / 1000)),
            text(i).as_bytes(),
        );
    }
    let id = env.backup(&["--kind", "monthly"]);
    let p = packs(&env.medium);
    let framed: Vec<usize> = p.iter().map(|(_, n)| *n).filter(|n| *n > 0).collect();
    assert!(framed.len() >= 2, "{p:?}");
    let most = trayback::store::PACK_MAX_BLOBS + FRAME_MAX_MEMBERS as usize;
    assert!(framed.iter().all(|n| *n <= most), "{p:?}");
    assert!(framed.iter().sum::<usize>() >= 60_000, "{p:?}");
    env.ok(&["verify", "--medium", "{medium}", "--read-all"]);
    let landed = env.restore(id, "restored");
    assert_eq!(
        fs::read(landed.join("d59/f59999.txt")).unwrap(),
        text(59_999).as_bytes()
    );
}

/// A pack's check lists at most 1 000 damaged blocks (a crafted pack of a million damaged
/// blobs took verify to 2 GiB), and past them the pack counts as damaged whole: verify then
/// reads the blocks it needs from it one by one, so every file that lost its content is still
/// named, with and without `--read-all`, and a damaged frame is opened once, not once a blob.
#[test]
fn every_file_of_a_pack_with_over_a_thousand_damaged_blocks_is_named_by_verify() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    let n = 3000;
    for i in 0..n {
        write(
            &env.src.join(format!("d{}/f{i}.txt", i % 10)),
            &words(i as u64, 60),
        );
    }
    env.backup(&["--kind", "monthly"]);
    assert!(damage_frames(&env.medium, None) > 0, "no frame found");
    for extra in [&[][..], &["--read-all"][..]] {
        let mut args = vec!["verify", "--medium", "{medium}"];
        args.extend_from_slice(extra);
        let out = env.run(&args);
        assert!(!out.status.success(), "{}", stderr(&out));
        let said = text(&out.stdout);
        assert!(
            said.contains("more damaged blocks than the 1000 listed"),
            "{said}"
        );
        let named = (0..n)
            .filter(|i| said.contains(&format!("/d{}/f{i}.txt\n", i % 10)))
            .count();
        assert_eq!(named, n, "verify {extra:?} named {named} of {n} files");
    }
}
