//! `repair --tree` given a stranger's tree.yaml, hostile in shape (it reads the old tree's
//! claimed format since 51eeb25; the attack review of that change, findings A1, A2, A4).

#[path = "support/util.rs"]
mod util;
use std::fs;
use util::*;

fn medium_with_tree(tree: &[u8]) -> Env {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    write(&env.src.join("a.txt"), b"a\n");
    env.backup(&["--kind", "monthly"]);
    fs::write(env.medium.join("trayback/tree.yaml"), tree).unwrap();
    env
}

/// A1: a tree.yaml of 16 MiB (MAX_TREE_FILE is 64) of one-letter list items: `repair --tree`
/// (and `ls`, through read_tree) held every YAML event of the file, ~135 bytes an item:
/// 535 MiB here, ~2.2 GiB for a 64 MiB file. The tree is now parsed a backup's record at a
/// time, each at most 64 KiB.
#[test]
fn repair_tree_of_a_huge_tree_yaml_keeps_memory_bounded() {
    let mut items = b"format: 3\nx:\n".to_vec();
    items.extend(b"- a\n".repeat(4 << 20));
    let mut one_part = b"format: 3\nnext_id: 2\nbackups:\n- id: 1\n  x:\n".to_vec();
    one_part.extend(b"  - a\n".repeat(2 << 20));
    for tree in [items, one_part] {
        let env = medium_with_tree(&tree);
        for args in [
            &["ls", "--medium", "{medium}"][..],
            &["repair", "--medium", "{medium}", "--tree"][..],
        ] {
            let (code, mib, secs, err) = env.measured(args);
            eprintln!("{args:?}: exit {code:?}, peak {mib} MiB, {secs:.1} s, {err}");
            assert!(matches!(code, Some(0) | Some(1)), "{args:?}: {err}");
            assert!(mib <= 128, "{args:?} peaked at {mib} MiB");
        }
    }
}

/// The same bound holds for a tree that is all it claims: 200 000 backups' records (a tray
/// that takes a micro every 15 minutes for five years and is never pared), each parsed on
/// its own, listed by `list`.
#[test]
fn a_tree_of_200_000_backups_reads_in_bounded_memory() {
    let mut t = b"format: 3\nnext_id: 200002\nbackups:\n".to_vec();
    for id in 2..200_002u64 {
        t.extend(
            format!(
                "- id: {id}\n  kind: monthly\n  parent: null\n  started: 2026-01-01T00:00:00Z\n  \
                 finished: 2026-01-01T00:00:01Z\n  verified: true\n  partial: false\n  \
                 bytes_total: 1\n  bytes_new: 1\n  bytes_stored: 1\n"
            )
            .as_bytes(),
        );
    }
    let env = medium_with_tree(&t);
    let (code, mib, secs, err) = env.measured(&["list", "--medium", "{medium}"]);
    eprintln!("exit {code:?}, peak {mib} MiB, {secs:.1} s, {err}");
    assert_eq!(code, Some(0), "{err}");
    assert!(mib <= 128, "list peaked at {mib} MiB");
}

/// A2: deeply nested flow sequences after the format: parsing is quadratic in the depth
/// (8 Ki '[' 0.3 s, 32 Ki 2.2 s; 1 Mi ran over 10 min of CPU and was killed), for
/// `repair --tree` and, through read_tree, every command that opens the medium.
#[test]
fn repair_tree_of_a_deeply_nested_tree_yaml_does_not_crash() {
    let mut t = b"format: 3\nx: ".to_vec();
    t.extend(b"[".repeat(128 << 10));
    let env = medium_with_tree(&t);
    let (code, mib, secs, err) = env.measured(&["repair", "--medium", "{medium}", "--tree"]);
    eprintln!("exit {code:?}, peak {mib} MiB, {secs:.1} s, {err}");
    assert!(matches!(code, Some(0) | Some(1)), "{err}");
    assert!(secs < 10.0, "repair --tree took {secs:.1} s");
    let tree = fs::read_to_string(env.medium.join("trayback/tree.yaml")).unwrap();
    assert!(tree.starts_with("format: 3\n"), "{tree:.200}");
}

/// A3: aliases that expand exponentially (billion laughs) after the format.
#[test]
fn repair_tree_of_an_alias_bomb_finishes() {
    let mut t = String::from("format: 3\na0: &a0 [x,x,x,x,x,x,x,x,x,x]\n");
    for i in 1..12 {
        let p = i - 1;
        t +=
            &format!("a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n");
    }
    let env = medium_with_tree(t.as_bytes());
    let (code, mib, secs, err) = env.measured(&["repair", "--medium", "{medium}", "--tree"]);
    eprintln!("exit {code:?}, peak {mib} MiB, {secs:.1} s, {err}");
    assert!(matches!(code, Some(0) | Some(1)), "{err}");
    assert!(secs < 30.0 && mib <= 128, "{secs} s, {mib} MiB");
}

/// A4: a newer format (4) written so that a reader of `format: u32` does not take it (here a
/// duplicated key; likewise any tree.yaml that does not parse whole as YAML): the refusal of a
/// newer format is bypassed and the tree rewritten as format 3, exit 0.
#[test]
fn repair_leaves_a_tree_claiming_format_4_twice_alone() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    write(&env.src.join("a.txt"), b"a\n");
    env.backup(&["--kind", "monthly"]);
    let path = env.medium.join("trayback/tree.yaml");
    let old = fs::read_to_string(&path).unwrap();
    let rest = old.split_once('\n').unwrap().1;
    let edited = format!("format: 4\n{rest}format: 4\n");
    fs::write(&path, &edited).unwrap();
    let out = env.run(&["repair", "--medium", "{medium}", "--tree"]);
    let now = fs::read_to_string(&path).unwrap();
    eprintln!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !out.status.success() && now == edited,
        "repair --tree exit {:?}; tree.yaml now starts {:.40}",
        out.status.code(),
        now
    );
}

/// One record and aliases of it under lines `-` alone (one part: only a line starting `- `
/// begins one; the attack review of the per-record parse): each alias became a record, so a
/// 64 MiB tree could still grow to ~1 GiB of them. A part is one backup, or refused.
#[test]
fn a_tree_of_aliased_records_is_refused() {
    let mut t = b"format: 3\nnext_id: 3\nbackups:\n- &a\n  id: 2\n  kind: monthly\n  \
        parent: null\n  started: 2026-01-01T00:00:00Z\n  finished: 2026-01-01T00:00:01Z\n  \
        verified: true\n  partial: false\n  bytes_total: 1\n  bytes_new: 1\n  bytes_stored: 1\n"
        .to_vec();
    t.extend(b"-\n  *a\n".repeat(5000));
    let env = medium_with_tree(&t);
    let (code, _, _, err) = env.measured(&["list", "--medium", "{medium}"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not one backup"), "{err}");
}
