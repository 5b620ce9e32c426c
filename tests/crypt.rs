//! Encryption at rest (issue 11): a tray enrolled with the shipped defaults holds no readable
//! name or content, restores on a machine that never saw it with only its recovery key (or
//! passphrase) and touches nothing on the medium doing so, and every tampering tried here —
//! flipped bits in each kind of record, packs swapped between two media, a replaced or
//! altered ID file, a rolled-back tree — is refused with a message naming the file.

#[path = "support/util.rs"]
mod util;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use util::*;

const NAME_MARK: &str = "quarterly-payroll-CONFIDENTIAL";
const CONTENT_MARK: &[u8] = b"The merger with Globex closes on the 14th; tell no one.";

/// A source with marked names and contents (compressible, so that zstd runs too).
fn marked_source(env: &Env) {
    let mut text = Vec::new();
    for _ in 0..2000 {
        text.extend_from_slice(CONTENT_MARK);
        text.push(b'\n');
    }
    write(&env.src.join(format!("{NAME_MARK}/{NAME_MARK}.txt")), &text);
    write(&env.src.join("random.bin"), &bytes(7, 600_000));
    write(&env.src.join("short.txt"), CONTENT_MARK);
    fs::write(env.src.join(".link-target"), b"x").unwrap();
    std::os::unix::fs::symlink(NAME_MARK, env.src.join("link")).unwrap();
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn key_file(env: &Env, key: &str) -> PathBuf {
    let p = env.path("recovery.txt");
    fs::write(&p, format!("{key}\n")).unwrap();
    p
}

fn flip(path: &Path, at: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x04], at).unwrap();
}

fn packs(medium: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in fs::read_dir(medium.join("trayback/packs")).unwrap() {
        for p in fs::read_dir(sub.unwrap().path()).unwrap() {
            out.push(p.unwrap().path());
        }
    }
    out.sort();
    out
}

/// A listing pack has footer flag 2.
fn is_listing_pack(p: &Path) -> bool {
    let b = fs::read(p).unwrap();
    let flags = u32::from_le_bytes(b[b.len() - 56..b.len() - 52].try_into().unwrap());
    flags & 2 != 0
}

fn every_file_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn a_tray_enrolled_with_the_defaults_holds_no_readable_name_or_content() {
    let env = Env::new(MediumKind::Ext4).unwrap_or_else(|| Env::new(MediumKind::Dir).unwrap());
    marked_source(&env);
    let key = env.init();
    assert_eq!(
        key.len(),
        44,
        "a recovery key is shown at enrolment: {key:?}"
    );
    env.backup(&["--kind", "monthly"]);
    fs::write(env.src.join("short.txt"), [CONTENT_MARK, b" (v2)"].concat()).unwrap();
    env.backup(&["--kind", "weekly"]);
    // The medium's own files, then (on ext4) the raw image: names and content nowhere.
    let files = every_file_bytes(&env.medium.join("trayback"));
    assert!(files.len() > 5);
    for (p, b) in &files {
        assert!(
            !contains(b, NAME_MARK.as_bytes()),
            "{} holds a name",
            p.display()
        );
        assert!(
            !contains(b, &CONTENT_MARK[..24]),
            "{} holds content",
            p.display()
        );
        assert!(!contains(b, b"random.bin"), "{} holds a name", p.display());
    }
    if let Some(img) = env.image() {
        sh(Command::new("umount").arg(&env.medium));
        let raw = fs::read(img).unwrap();
        assert!(
            !contains(&raw, NAME_MARK.as_bytes()),
            "the image holds a name"
        );
        assert!(
            !contains(&raw, &CONTENT_MARK[..24]),
            "the image holds content"
        );
        // The control: the same strings are found in a plaintext medium's image.
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(img)
            .arg(&env.medium));
    }
    let plain = Env::new(MediumKind::Dir).unwrap();
    marked_source(&plain);
    plain.init_plaintext();
    plain.backup(&["--kind", "monthly"]);
    let found = every_file_bytes(&plain.medium.join("trayback"))
        .iter()
        .any(|(_, b)| contains(b, NAME_MARK.as_bytes()));
    assert!(found, "the control: a plaintext medium shows its names");
}

fn assert_refused_naming(out: &std::process::Output, file: &str) {
    assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
    let e = stderr(out);
    assert!(e.contains(file), "the error does not name {file}: {e}");
    assert!(e.trim().lines().count() <= 3, "one clear error: {e}");
}

#[test]
fn a_fresh_machine_restores_with_only_the_recovery_key_and_touches_nothing() {
    let env = Env::new(MediumKind::Ext4).unwrap_or_else(|| Env::new(MediumKind::Dir).unwrap());
    make_rich_tree(&env.src);
    marked_source(&env);
    let key = env.init();
    env.backup(&["--kind", "monthly"]);
    write(&env.src.join("docs/readme.txt"), b"changed\n");
    env.backup(&["--kind", "weekly"]);
    if env.kind == MediumKind::Ext4 {
        sh(Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&env.medium));
    }
    let before = fingerprint(&env.medium);
    let fresh = env.path("fresh-state");
    let kf = key_file(&env, &key);
    let kf = kf.to_str().unwrap();
    // No key: one clear line saying what to give.
    let out = env.run_as(&fresh, &["list", "--medium", "{medium}"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("recovery key or passphrase"),
        "{}",
        stderr(&out)
    );
    // A wrong key and a typo are told apart.
    let other = Env::new(MediumKind::Dir).unwrap();
    let other_key = other.init();
    let wrong = env.path("wrong.txt");
    fs::write(&wrong, &other_key).unwrap();
    let out = env.run_as(
        &fresh,
        &[
            "list",
            "--medium",
            "{medium}",
            "--key-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert!(stderr(&out).contains("does not open"), "{}", stderr(&out));
    let typo = env.path("typo.txt");
    let mut t = key.clone().into_bytes();
    t[0] = if t[0] == b'7' { b'8' } else { b'7' };
    fs::write(&typo, &t).unwrap();
    let out = env.run_as(
        &fresh,
        &[
            "list",
            "--medium",
            "{medium}",
            "--key-file",
            typo.to_str().unwrap(),
        ],
    );
    assert!(stderr(&out).contains("typo"), "{}", stderr(&out));
    // Every reading command works with the key alone.
    for args in [
        vec!["list", "--medium", "{medium}", "--key-file", kf],
        vec!["tree", "--medium", "{medium}", "--key-file", kf],
        vec!["ls", "-r", "--medium", "{medium}", "--key-file", kf],
        vec![
            "versions",
            "--medium",
            "{medium}",
            "--key-file",
            kf,
            &format!("{}/docs/readme.txt", env.src.display()),
        ],
        vec![
            "verify",
            "--all",
            "--read-all",
            "--medium",
            "{medium}",
            "--key-file",
            kf,
        ],
    ] {
        let out = env.run_as(&fresh, &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    // A tray carries its restore kit: the README, and this very binary, which reads it.
    if env.kind == MediumKind::Ext4 {
        let readme = fs::read_to_string(env.medium.join("README-RESTORE.txt")).unwrap();
        assert!(
            readme.contains("recovery key") && readme.contains("restore --medium"),
            "{readme}"
        );
        let kit = env.medium.join("trayback-restore");
        assert_eq!(fs::read(&kit).unwrap(), fs::read(bin()).unwrap());
        let out = Command::new(&kit)
            .args(["list", "--medium"])
            .arg(&env.medium)
            .args(["--key-file", kf])
            .env("TRAYBACK_STATE_DIR", &fresh)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let ls = text(
        &env.run_as(
            &fresh,
            &["ls", "-r", "--medium", "{medium}", "--key-file", kf],
        )
        .stdout,
    );
    assert!(ls.contains(NAME_MARK), "{ls}");
    // Restore with the key on a descriptor, byte for byte.
    let to = env.path("restored");
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"exec 3<"$1"; exec "$2" restore --medium "$3" --key-fd 3 --to "$4""#)
        .arg("bash")
        .arg(kf)
        .arg(bin())
        .arg(&env.medium)
        .arg(&to)
        .env("TRAYBACK_STATE_DIR", &fresh)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same(&env.src, &to.join(env.src.strip_prefix("/").unwrap()));
    assert_eq!(
        fingerprint(&env.medium),
        before,
        "a reader changed the medium"
    );
    assert!(
        !fresh.join("keys").exists(),
        "a reader kept a key on the bare machine"
    );
}

#[test]
fn a_passphrase_unlocks_too_and_adoption_with_the_recovery_key_continues_the_tree() {
    let env = Env::new(MediumKind::Dir).unwrap();
    make_rich_tree(&env.src);
    let key = env.init();
    env.backup(&["--kind", "monthly"]);
    let pw = env.path("pw.txt");
    fs::write(&pw, "correct horse battery staple\n").unwrap();
    env.ok(&[
        "media",
        "passphrase",
        "{medium}",
        "--passphrase-file",
        pw.to_str().unwrap(),
    ]);
    let fresh = env.path("bare");
    let out = env.run_as(
        &fresh,
        &[
            "list",
            "--medium",
            "{medium}",
            "--key-file",
            pw.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Rotating this host's key keeps the medium writable here.
    env.ok(&["media", "rotate-host-key", "{medium}"]);
    env.backup(&["--kind", "weekly"]);
    // A new server adopts the medium with the recovery key and continues its tree.
    let server2 = env.path("server2");
    let kf = key_file(&env, &key);
    let out = env.run_as(
        &server2,
        &[
            "media",
            "adopt",
            "{medium}",
            "--key-file",
            kf.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    write(&env.src.join("new.txt"), b"after the move");
    let out = env.run_as(
        &server2,
        &[
            "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "daily", "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let list = text(
        &env.run_as(&server2, &["list", "--medium", "{medium}", "--json"])
            .stdout,
    );
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3, "{list}");
    // The old host's key no longer opens it: refused as tampered, not written.
    let out = env.run(&[
        "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "daily",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("tampered"), "{}", stderr(&out));
    // The passphrase still opens it, and can be removed.
    let out = env.run_as(&server2, &["media", "passphrase", "{medium}", "--remove"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run_as(
        &fresh,
        &[
            "list",
            "--medium",
            "{medium}",
            "--key-file",
            pw.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
}

/// A medium with two backups, its recovery key, and the bytes of its first tree file.
fn two_backups(env: &Env) -> (String, Vec<u8>) {
    make_rich_tree(&env.src);
    let key = env.init();
    env.backup(&["--kind", "monthly"]);
    let tree1 = fs::read(env.medium.join("trayback/tree.sealed")).unwrap();
    write(&env.src.join("docs/readme.txt"), b"changed\n");
    env.backup(&["--kind", "weekly"]);
    (key, tree1)
}

#[test]
fn flipped_bits_in_every_kind_of_record_are_found_and_name_the_file() {
    // A data pack: verify fails, naming the pack and the file it affects.
    let env = Env::new(MediumKind::Dir).unwrap();
    two_backups(&env);
    let data = packs(&env.medium)
        .into_iter()
        .find(|p| !is_listing_pack(p))
        .unwrap();
    flip(&data, 100);
    let out = env.run(&["verify", "--medium", "{medium}", "--all", "--read-all"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let o = text(&out.stdout);
    assert!(
        o.contains(data.file_name().unwrap().to_str().unwrap()),
        "{o}"
    );
    assert!(o.contains("does not authenticate"), "{o}");
    assert!(
        o.contains("affected paths:") && o.contains(env.src.to_str().unwrap()),
        "{o}"
    );

    // A pack's trailer: the pack is reported, its records still salvaged one by one.
    let env = Env::new(MediumKind::Dir).unwrap();
    two_backups(&env);
    let p = packs(&env.medium)
        .into_iter()
        .find(|p| !is_listing_pack(p))
        .unwrap();
    let len = fs::metadata(&p).unwrap().len();
    flip(&p, len - 64 - 10);
    let out = env.run(&["verify", "--medium", "{medium}", "--all"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        text(&out.stdout).contains("trailer does not authenticate"),
        "{}",
        text(&out.stdout)
    );

    // A listing pack.
    let env = Env::new(MediumKind::Dir).unwrap();
    two_backups(&env);
    let l = packs(&env.medium)
        .into_iter()
        .find(|p| is_listing_pack(p))
        .unwrap();
    flip(&l, 80);
    let out = env.run(&["verify", "--medium", "{medium}", "--all"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));

    // A header and the tree: refused, naming the file.
    let env = Env::new(MediumKind::Dir).unwrap();
    two_backups(&env);
    flip(
        &env.medium.join("trayback/backups/00000002/header.sealed"),
        40,
    );
    let out = env.run(&["ls", "--medium", "{medium}", "2"]);
    assert_refused_naming(&out, "header.sealed");
    assert!(
        stderr(&out).contains("does not authenticate"),
        "{}",
        stderr(&out)
    );
    flip(&env.medium.join("trayback/tree.sealed"), 60);
    let out = env.run(&["list", "--medium", "{medium}"]);
    assert_refused_naming(&out, "tree.sealed");
    let out = env.run(&["backup", "--medium", "{medium}", "--source", "{src}"]);
    assert_refused_naming(&out, "tree.sealed");
}

#[test]
fn packs_swapped_between_two_media_and_moved_headers_do_not_authenticate() {
    let a = Env::new(MediumKind::Dir).unwrap();
    two_backups(&a);
    let b = Env::new(MediumKind::Dir).unwrap();
    two_backups(&b);
    // B's data pack put in place of A's (under A's pack's name, and under its own).
    let pa = packs(&a.medium)
        .into_iter()
        .find(|p| !is_listing_pack(p))
        .unwrap();
    let pb = packs(&b.medium)
        .into_iter()
        .find(|p| !is_listing_pack(p))
        .unwrap();
    fs::copy(&pb, &pa).unwrap();
    let dest = a
        .medium
        .join("trayback/packs")
        .join(pb.parent().unwrap().file_name().unwrap());
    fs::create_dir_all(&dest).unwrap();
    fs::copy(&pb, dest.join(pb.file_name().unwrap())).unwrap();
    let out = a.run(&["verify", "--medium", "{medium}", "--all", "--read-all"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let o = text(&out.stdout);
    assert!(o.contains(pa.file_name().unwrap().to_str().unwrap()), "{o}");
    assert!(o.contains("does not authenticate"), "{o}");
    // A header moved to another backup's directory.
    let h1 = a.medium.join("trayback/backups/00000001/header.sealed");
    let h2 = a.medium.join("trayback/backups/00000002/header.sealed");
    fs::copy(&h1, &h2).unwrap();
    let out = a.run(&["ls", "--medium", "{medium}", "2"]);
    assert_refused_naming(&out, "header.sealed");
    // B's tree on A.
    fs::copy(
        b.medium.join("trayback/tree.sealed"),
        a.medium.join("trayback/tree.sealed"),
    )
    .unwrap();
    let out = a.run(&["list", "--medium", "{medium}"]);
    assert_refused_naming(&out, "tree.sealed");
}

#[test]
fn a_replaced_or_altered_id_file_is_refused_before_any_write() {
    let a = Env::new(MediumKind::Dir).unwrap();
    two_backups(&a);
    let media = a.medium.join("trayback/media.yaml");
    let original = fs::read_to_string(&media).unwrap();
    // An altered label, and a key slot replaced with another medium's.
    let b = Env::new(MediumKind::Dir).unwrap();
    b.init();
    let theirs = fs::read_to_string(b.medium.join("trayback/media.yaml")).unwrap();
    let wrap = |t: &str| {
        t.lines()
            .find(|l| l.trim_start().starts_with("wrapped:"))
            .unwrap()
            .to_string()
    };
    for (what, altered) in [
        ("label", original.replace("label: Test", "label: Tost")),
        (
            "host slot",
            original.replacen(&wrap(&original), &wrap(&theirs), 1),
        ),
    ] {
        fs::write(&media, &altered).unwrap();
        let before = fingerprint(&a.medium);
        let out = a.run(&[
            "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "daily",
        ]);
        assert!(!out.status.success(), "{what}: written");
        assert!(
            stderr(&out).contains("tampered"),
            "{what}: {}",
            stderr(&out)
        );
        assert_eq!(
            fingerprint(&a.medium),
            before,
            "{what}: something was written"
        );
    }
    // Replaced whole by another medium's ID file: its keys do not open this medium's records.
    fs::write(&media, &theirs).unwrap();
    // (the host holds B's key too, as one host enrolled both)
    let keys_b: Vec<_> = fs::read_dir(b.state_dir().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for k in keys_b {
        fs::copy(&k, a.state_dir().join("keys").join(k.file_name().unwrap())).unwrap();
    }
    let before = fingerprint(&a.medium);
    let out = a.run(&[
        "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "daily",
    ]);
    assert_refused_naming(&out, "tree.sealed");
    assert_eq!(fingerprint(&a.medium), before, "something was written");
    fs::write(&media, &original).unwrap();
    a.backup(&["--kind", "daily"]);
}

#[test]
fn a_rolled_back_tree_is_refused_by_this_host() {
    let env = Env::new(MediumKind::Dir).unwrap();
    let (key, tree1) = two_backups(&env);
    fs::write(env.medium.join("trayback/tree.sealed"), &tree1).unwrap();
    let before = fingerprint(&env.medium);
    let out = env.run(&[
        "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "daily",
    ]);
    assert_refused_naming(&out, "tree.sealed");
    assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    let out = env.run(&["list", "--medium", "{medium}"]);
    assert_refused_naming(&out, "tree.sealed");
    assert_eq!(fingerprint(&env.medium), before);
    // What cannot be detected: a machine that never saw the medium has no newer generation
    // to compare with (FORMAT.md, "What encryption detects").
    let kf = key_file(&env, &key);
    let out = env.run_as(
        &env.path("bare"),
        &[
            "list",
            "--medium",
            "{medium}",
            "--key-file",
            kf.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
}

#[test]
fn an_independent_reader_written_from_format_md_restores_a_file_byte_for_byte() {
    let env = Env::new(MediumKind::Dir).unwrap();
    marked_source(&env);
    // Several content-defined blocks (a new medium's tree is format 2, its listings format 3).
    write(&env.src.join("docs/big.bin"), &bytes(3, 3_000_000));
    let key = env.init();
    env.backup(&["--kind", "monthly"]);
    let kf = key_file(&env, &key);
    for rel in [
        format!("{NAME_MARK}/{NAME_MARK}.txt"),
        "docs/big.bin".into(),
    ] {
        let want = env.src.join(&rel);
        let out = env.path("py-out");
        let r = independent_reader(&env.medium, &kf, &want, &out);
        assert!(r.status.success(), "{}", stderr(&r));
        assert_eq!(fs::read(&out).unwrap(), fs::read(&want).unwrap(), "{rel}");
    }
}

#[test]
fn a_trays_restore_kit_is_refreshed_when_the_binary_changes_and_a_directory_gets_none() {
    let dir = Env::new(MediumKind::Dir).unwrap();
    dir.init();
    assert!(!dir.medium.join("README-RESTORE.txt").exists());
    let Some(env) = Env::new(MediumKind::Ext4) else {
        return;
    };
    write(&env.src.join("f"), b"x");
    env.init();
    let readme = env.medium.join("README-RESTORE.txt");
    let kit = env.medium.join("trayback-restore");
    let first = fs::read_to_string(&readme).unwrap();
    // As a writer with another binary left it: an older README and binary.
    fs::write(&readme, first.replace("sha256", "sha256 of an older build")).unwrap();
    fs::write(&kit, b"an older trayback").unwrap();
    env.backup(&["--kind", "monthly"]);
    assert_eq!(fs::read_to_string(&readme).unwrap(), first);
    assert_eq!(fs::read(&kit).unwrap(), fs::read(bin()).unwrap());
    // Up to date: not rewritten.
    let mtime = fs::metadata(&kit).unwrap().modified().unwrap();
    env.backup(&["--kind", "weekly"]);
    assert_eq!(fs::metadata(&kit).unwrap().modified().unwrap(), mtime);
}

/// On a terminal (a pseudo-terminal from `script`), the recovery key is asked for and typed,
/// with echo off: it never appears on the screen.
#[test]
fn the_recovery_key_is_typed_at_a_prompt_without_echo() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("f.txt"), b"typed");
    let key = env.init();
    env.backup(&["--kind", "monthly"]);
    let cmd = format!("{} list --medium {}", bin().display(), env.medium.display());
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"(sleep 1; printf '%s\n' "$1") | script -qec "$2" /dev/null"#)
        .arg("bash")
        .arg(&key)
        .arg(&cmd)
        .env("TRAYBACK_STATE_DIR", env.path("bare"))
        .output()
        .unwrap();
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}{}", stderr(&out));
    assert!(screen.contains("recovery key or passphrase"), "{screen}");
    assert!(screen.contains("monthly"), "{screen}");
    assert!(!screen.contains(&key[..9]), "the key was echoed: {screen}");
}
