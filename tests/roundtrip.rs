//! Round trips on real files: every file kind, a full backup, changes of every sort, an
//! incremental, and each backup restored and compared exactly with the tree as it was.

#[path = "support/util.rs"]
mod util;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use util::*;

on_both_media!(
    every_backup_restores_exactly_as_the_tree_was,
    |env: &Env| {
        env.init();
        make_rich_tree(&env.src);
        let snap1 = env.path("snap1");
        snapshot(&env.src, &snap1);
        let b1 = env.backup(&["--kind", "monthly"]);

        // modify, add, delete, chmod, touch
        write(&env.src.join("docs/readme.txt"), b"changed content\n");
        write(&env.src.join("new/dir/added.txt"), &bytes(9, 300_000));
        fs::remove_file(env.src.join("deep/a/b/c/d/file")).unwrap();
        fs::set_permissions(
            env.src.join("docs/report.bin"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let t = rustix::fs::Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123_456_789,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            env.src.join("empty"),
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        let snap2 = env.path("snap2");
        snapshot(&env.src, &snap2);
        let b2 = env.backup(&["--kind", "daily"]);

        let h2 = env.header(b2);
        assert_eq!(h2["parent"].as_u64(), Some(b1));
        // readme + its hard link (changed), added.txt (new), report.bin (chmod), empty (touch)
        // are re-read; sparse.img and the two oddly named files are taken from the parent.
        assert_eq!(h2["counts"]["files_read"], 5, "{h2:?}");
        assert_eq!(h2["counts"]["files_unchanged"], 3, "{h2:?}");

        let r1 = env.restore(b1, "restore1");
        assert_same(&snap1, &r1);
        let r2 = env.restore(b2, "restore2");
        assert_same(&snap2, &r2);

        // Holes stay holes: 22 MiB apparent, about 1 MiB allocated.
        let md = fs::metadata(r1.join("sparse.img")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(md.len(), (21 << 20) + 4096);
        assert!(
            md.blocks() * 512 < 2 << 20,
            "sparse file restored with {} bytes allocated",
            md.blocks() * 512
        );
        // Hard links are restored as links.
        assert_eq!(
            fs::metadata(r2.join("hardlink-to-readme")).unwrap().ino(),
            fs::metadata(r2.join("docs/readme.txt")).unwrap().ino()
        );
        // The diff of the incremental names exactly what changed.
        let diff = env.ok(&["diff", "--medium", "{medium}", &b2.to_string()]);
        for p in [
            "docs/readme.txt",
            "new/dir/added.txt",
            "deep/a/b/c/d/file",
            "docs/report.bin",
            "empty",
        ] {
            assert!(diff.contains(p), "diff does not name {p}:\n{diff}");
        }
        assert!(!diff.contains("sparse.img"), "{diff}");
    }
);

on_both_media!(partial_restore_and_versions, |env: &Env| {
    env.init();
    write(&env.src.join("a/file.txt"), b"v1");
    write(&env.src.join("b/other.txt"), b"other");
    let b1 = env.backup(&["--kind", "monthly"]);
    write(&env.src.join("a/file.txt"), b"version two");
    env.backup(&["--kind", "micro"]);
    env.backup(&["--kind", "micro"]);
    let file = env.src.join("a/file.txt");
    let v = env.ok(&[
        "versions",
        "--medium",
        "{medium}",
        file.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v[0]["size"], 2);
    assert_eq!(v[1]["backups"].as_array().unwrap().len(), 2);

    let to = env.path("partial");
    env.ok(&[
        "restore",
        "--medium",
        "{medium}",
        "--backup",
        &b1.to_string(),
        "--to",
        to.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    let landed = to.join(file.strip_prefix("/").unwrap());
    assert_eq!(fs::read(&landed).unwrap(), b"v1");
    assert!(!to
        .join(env.src.join("b").strip_prefix("/").unwrap())
        .exists());
});

#[test]
fn in_place_restore_keeps_newer_files_unless_overwrite() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let f = env.src.join("doc.txt");
    write(&f, b"old");
    let t = rustix::fs::Timespec {
        tv_sec: 1_500_000_000,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        &f,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    write(&env.src.join("gone.txt"), b"deleted later");
    let b = env.backup(&["--kind", "monthly"]);
    write(&f, b"newer edit");
    fs::remove_file(env.src.join("gone.txt")).unwrap();
    let out = env.run(&[
        "restore",
        "--medium",
        "{medium}",
        "--backup",
        &b.to_string(),
        "--in-place",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("kept newer file"));
    assert_eq!(fs::read(&f).unwrap(), b"newer edit");
    assert_eq!(
        fs::read(env.src.join("gone.txt")).unwrap(),
        b"deleted later"
    );
    env.ok(&[
        "restore",
        "--medium",
        "{medium}",
        "--backup",
        &b.to_string(),
        "--in-place",
        "--overwrite",
    ]);
    assert_eq!(fs::read(&f).unwrap(), b"old");
}

#[test]
fn sockets_are_skipped_and_counted() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("f"), b"x");
    let _l = std::os::unix::net::UnixListener::bind(env.src.join("sock")).unwrap();
    let b = env.backup(&["--kind", "monthly"]);
    assert_eq!(env.header(b)["counts"]["sockets_skipped"], 1);
}

/// Back up `env.src` as a user who cannot read `unreadable` (mode 000): as root, as `nobody`,
/// who then owns the medium, its key and the rest of the source.
fn backup_unable_to_read(env: &Env, unreadable: &[std::path::PathBuf]) -> std::process::Output {
    let mut cmd = std::process::Command::new(if is_root() { "setpriv" } else { "env" });
    if is_root() {
        let nobody = 65534;
        std::os::unix::fs::chown(env.tmp.path(), Some(nobody), Some(nobody)).unwrap();
        fs::set_permissions(env.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&env.src)
            .arg(&env.medium)
            .arg(env.state_dir()) // the medium's key: the user's own
            .status()
            .unwrap();
        for p in unreadable {
            std::os::unix::fs::chown(p, Some(0), Some(0)).unwrap();
        }
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    }
    for p in unreadable {
        fs::set_permissions(p, fs::Permissions::from_mode(0o000)).unwrap();
    }
    cmd.arg(bin())
        .env("TRAYBACK_STATE_DIR", env.state_dir())
        .args([
            "backup",
            "--medium",
            env.medium.to_str().unwrap(),
            "--source",
            env.src.to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

#[test]
fn unreadable_files_make_a_partial_backup_that_names_them() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("ok"), b"x");
    write(&env.src.join("secret"), b"y");
    fs::create_dir(env.src.join("locked")).unwrap();
    write(&env.src.join("locked/inside"), b"z");
    let out = backup_unable_to_read(&env, &[env.src.join("secret"), env.src.join("locked")]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("PARTIAL") && stdout.contains("secret") && stdout.contains("locked"),
        "{stdout}"
    );
    assert!(stdout.contains("verified"), "{stdout}");
    let h = env.header(1);
    assert_eq!(h["partial"], true);
    assert_eq!(h["problems"].as_array().unwrap().len(), 2, "{h:?}");
}

/// A header listed every problem: a tree of unreadable files made one as large as its
/// names, past the 64 MiB readers take, and the backup committed could not be read. A
/// header lists the first 1 000 and counts the rest; the backup reads, restores and
/// parents the next.
#[test]
fn a_backup_with_more_problems_than_a_header_lists_counts_the_rest() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("ok"), b"x");
    let unreadable: Vec<_> = (0..1200)
        .map(|i| {
            let p = env.src.join(format!("secret-{i:04}"));
            write(&p, b"y");
            p
        })
        .collect();
    let out = backup_unable_to_read(&env, &unreadable);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("PARTIAL: 1200 problems") && stdout.contains("and 200 more"),
        "{stdout:.2000}"
    );
    let h = env.header(1);
    assert_eq!(h["problems"].as_array().unwrap().len(), 1000, "{h:.2000}");
    assert_eq!(h["problems_unlisted"], 200);
    let restored = env.restore(1, "r");
    assert_eq!(fs::read(restored.join("ok")).unwrap(), b"x");
}

#[test]
fn a_source_reached_through_a_symlinked_directory_is_backed_up() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("docs/f.txt"), b"through a link");
    let link = env.path("via");
    std::os::unix::fs::symlink(env.tmp.path(), &link).unwrap();
    let via = link.join("src");
    let out = env.ok(&[
        "backup",
        "--medium",
        "{medium}",
        "--source",
        via.to_str().unwrap(),
        "--kind",
        "monthly",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = v["backup"]["id"].as_u64().unwrap();
    // The header names the real directory, and the walk from / reached it.
    let real = fs::canonicalize(&env.src).unwrap();
    assert_eq!(env.header(id)["sources"][0], real.to_str().unwrap());
    assert_eq!(env.header(id)["counts"]["files"], 1);
    let to = env.path("restored");
    assert!(env.try_restore(id, &to).status.success());
    let landed = to.join(real.strip_prefix("/").unwrap()).join("docs/f.txt");
    assert_eq!(fs::read(landed).unwrap(), b"through a link");
}

#[test]
fn a_medium_inside_the_source_is_left_out_even_when_named_relatively() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("data/f.txt"), b"data");
    fs::create_dir(env.src.join("disk")).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(in_test_tree_format(args))
            .current_dir(&env.src)
            .env("TRAYBACK_LOG", "warn")
            .env("TRAYBACK_STATE_DIR", env.state_dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    run(&["media", "init", "disk", "--label", "Inside", "--plaintext"]);
    let src = env.src.to_str().unwrap();
    run(&[
        "backup", "--medium", "disk", "--source", src, "--kind", "monthly",
    ]);
    run(&[
        "backup", "--medium", "disk", "--source", src, "--kind", "micro",
    ]);
    let listed = run(&["ls", "--medium", "disk", "--json", "2", src]);
    assert!(
        listed.contains("data") && !listed.contains("disk"),
        "{listed}"
    );
    let h: serde_json::Value = serde_yaml::from_str(
        &fs::read_to_string(env.src.join("disk/trayback/backups/00000002/header.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(h["counts"]["excluded"], 1);
    assert_eq!(h["counts"]["files"], 1);
}

#[test]
fn overlapping_and_unsorted_paths_restore_each_entry_once() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("a/x/1"), b"a-x-1");
    write(&env.src.join("a/y"), b"a-y");
    write(&env.src.join("b/2"), b"b-2");
    write(&env.src.join("c"), b"not asked for");
    let b = env.backup(&["--kind", "monthly"]);
    let to = env.path("paths");
    let p = |rel: &str| env.src.join(rel).to_str().unwrap().to_string();
    let (b_, ax, a) = (p("b"), p("a/x"), p("a"));
    let out = env.ok(&[
        "restore",
        "--medium",
        "{medium}",
        "--backup",
        &b.to_string(),
        "--to",
        to.to_str().unwrap(),
        "--json",
        &b_,
        &ax,
        &a,
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["files"], 3, "{v}");
    let landed = to.join(env.src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(landed.join("a/x/1")).unwrap(), b"a-x-1");
    assert_eq!(fs::read(landed.join("a/y")).unwrap(), b"a-y");
    assert_eq!(fs::read(landed.join("b/2")).unwrap(), b"b-2");
    assert!(!landed.join("c").exists());
}
