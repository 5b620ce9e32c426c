//! Media whose tree.yaml format was edited (a format this trayback does not know, or
//! one that disagrees with the blocks the medium holds).

#[path = "support/util.rs"]
mod util;
use std::fs;
use util::*;

fn set_format(env: &Env, format: &str) -> String {
    let tree = env.medium.join("trayback/tree.yaml");
    let text = fs::read_to_string(&tree).unwrap();
    let rest = text.split_once('\n').unwrap().1;
    let edited = format!("format: {format}\n{rest}");
    fs::write(&tree, &edited).unwrap();
    edited
}

/// A tree of format 0 is refused naming the formats this trayback reads (1 to 3), not
/// "version 3" alone (it reads media of formats 1 and 2 as well).
#[test]
fn an_unknown_tree_format_is_refused_naming_the_formats_read() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    set_format(&env, "0");
    let out = env.run(&["ls", "--medium", "{medium}"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("tree.yaml") && err.contains("1 to 3"), "{err}");
}

/// A tree of a newer format (4: a later trayback's) is not this trayback's to rebuild:
/// `repair --tree` rewrote it as format 2 or 3, so this trayback (and the newer one, reading
/// a tree it then takes for its own older format) went on writing to it by the old rules.
#[test]
fn repair_leaves_a_tree_of_a_newer_format_alone() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    write(&env.src.join("a.txt"), b"a\n");
    env.backup(&["--kind", "monthly"]);
    let edited = set_format(&env, "4");
    let out = env.run(&["repair", "--medium", "{medium}", "--tree"]);
    let now = fs::read_to_string(env.medium.join("trayback/tree.yaml")).unwrap();
    assert!(
        !out.status.success() && now == edited,
        "repair --tree: {:?} {}; tree.yaml now:\n{now}",
        out.status.code(),
        text(&out.stdout)
    );
}

/// An incremental onto a medium edited from format 3 down to 1 keeps an unchanged file's
/// content-defined blocks in its fixed-block listing (when their count is that of fixed
/// blocks; else it refuses in one line): verified and restored byte for byte.
#[test]
fn an_incremental_onto_a_format_edited_down_restores_byte_for_byte() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    let big = bytes(1, 3_000_000);
    write(&env.src.join("big.bin"), &big);
    write(&env.src.join("a.txt"), b"a\n");
    env.backup(&["--kind", "monthly"]);
    set_format(&env, "1");
    write(&env.src.join("a.txt"), b"changed\n");
    let id = env.backup(&["--kind", "daily"]);
    env.ok(&["verify", "--medium", "{medium}", "--read-all"]);
    let got = fs::read(env.restore(id, "r").join("big.bin")).unwrap();
    assert!(got == big, "restored {} bytes, differs", got.len());
}

/// A format-1 medium (made for a host running an older trayback) whose
/// listing packs are lost: `repair --tree` finds no root listing to tell fixed blocks by and
/// rebuilt it as format 2 (its packs are of version 1), without a word (attack review of
/// issue 13, F6); the older trayback then refused the whole medium, and new backups cut
/// content-defined blocks into it. The old tree's format is kept.
#[test]
fn repair_keeps_a_format_1_medium_at_format_1() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.ok(&[
        "media",
        "init",
        "{medium}",
        "--label",
        "Old",
        "--plaintext",
        "--tree-format",
        "1",
    ]);
    write(&env.src.join("big.bin"), &bytes(1, 3_000_000));
    env.backup(&["--kind", "monthly"]);
    // Delete the packs of listings (footer flag bit 1); the data packs stay.
    for sub in fs::read_dir(env.medium.join("trayback/packs")).unwrap() {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let b = fs::read(&p).unwrap();
            let flags = u32::from_le_bytes(b[b.len() - 56..b.len() - 52].try_into().unwrap());
            if flags & 2 != 0 {
                fs::remove_file(&p).unwrap();
            }
        }
    }
    let out = env.ok(&["repair", "--medium", "{medium}", "--tree"]);
    let tree = fs::read_to_string(env.medium.join("trayback/tree.yaml")).unwrap();
    assert!(
        tree.starts_with("format: 1\n"),
        "repair said: {out}\ntree.yaml:\n{tree}"
    );
}
