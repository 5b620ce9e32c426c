//! Media prove they are ours (issue 9): a medium is written only when its `media.yaml` MAC
//! verifies with the key this host keeps for it; reading needs no key; `media adopt` is the
//! operator's explicit act that takes a medium for this host. These are plaintext media
//! (format 2); an encrypted medium's proof (format 3) is tested in `crypt.rs`.

#[path = "support/util.rs"]
mod util;
use std::fs;
use util::*;

fn key_file(env: &Env) -> std::path::PathBuf {
    let keys = env.state_dir().join("keys");
    let mut files: Vec<_> = fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.pop().unwrap()
}

fn refused(env: &Env, args: &[&str]) -> String {
    let out = env.run(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "trayback {args:?} should fail:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

#[test]
fn backup_to_a_medium_whose_key_is_missing_fails_changes_nothing_until_adopted() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("f.txt"), b"one");
    env.init_plaintext();
    let key = key_file(&env);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(key.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // Not verified yet: a verify that recorded its result would change the tree.
    env.backup(&["--kind", "monthly", "--no-verify"]);
    fs::remove_file(&key).unwrap();
    write(&env.src.join("f.txt"), b"two");
    let before = fingerprint(&env.medium);
    let err = refused(
        &env,
        &[
            "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "micro",
        ],
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("not proven") && err.contains("no key") && err.contains("media adopt"),
        "{err}"
    );
    // Every other writer refuses too.
    refused(&env, &["pare", "--medium", "{medium}"]);
    refused(&env, &["repair", "--medium", "{medium}", "--tree"]);
    refused(
        &env,
        &["media", "init", "{medium}", "--label", "X", "--force"],
    );
    // Verify reports, but does not record.
    let out = env.run(&["verify", "--medium", "{medium}", "--all"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("without recording"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        fingerprint(&env.medium),
        before,
        "an unproven medium was changed"
    );
    // Readers need no key.
    env.ok(&["list", "--medium", "{medium}"]);
    // The operator adopts it: writable again, with the same identity.
    let id_before = env.ok(&["media", "show", "{medium}", "--json"]);
    env.ok(&["media", "adopt", "{medium}"]);
    let id_after = env.ok(&["media", "show", "{medium}", "--json"]);
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&id_before).unwrap(),
        serde_json::from_str(&id_after).unwrap(),
    );
    assert_eq!(a["media"]["media_id"], b["media"]["media_id"]);
    assert_ne!(a["media"]["mac"], b["media"]["mac"], "a new key, a new MAC");
    env.ok(&["verify", "--medium", "{medium}", "--all"]);
    let tree = fs::read_to_string(env.medium.join("trayback/tree.yaml")).unwrap();
    assert!(tree.contains("verified: true"), "{tree}");
    assert_eq!(env.backup(&["--kind", "micro"]), 2);
}

#[test]
fn a_format_1_medium_is_read_but_written_only_once_adopted() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("f.txt"), b"one");
    env.init_plaintext();
    env.backup(&["--kind", "monthly"]);
    // As a release before issue 9 wrote it: format 1, no MAC, no key on the host.
    fs::remove_file(key_file(&env)).unwrap();
    let path = env.medium.join("trayback/media.yaml");
    let v1: String = fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("mac:"))
        .map(|l| l.replace("format: 2", "format: 1") + "\n")
        .collect();
    fs::write(&path, &v1).unwrap();
    env.ok(&["list", "--medium", "{medium}"]);
    let to = env.path("r");
    assert!(env.try_restore(1, &to).status.success());
    let err = refused(
        &env,
        &[
            "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "micro",
        ],
    );
    assert!(
        err.contains("format 1") && err.contains("media adopt"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), v1);
    env.ok(&["media", "adopt", "{medium}"]);
    let v2 = fs::read_to_string(&path).unwrap();
    assert!(v2.contains("format: 2") && v2.contains("mac: "), "{v2}");
    assert_eq!(env.backup(&["--kind", "micro"]), 2);
}

#[test]
fn a_disk_claiming_a_known_medium_id_is_not_adopted_over_it() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("f.txt"), b"one");
    env.init_plaintext();
    let real = fs::read_to_string(env.medium.join("trayback/media.yaml")).unwrap();
    let id_line = real.lines().find(|l| l.starts_with("media_id:")).unwrap();
    // Another directory, enrolled elsewhere, then made to claim the real medium's id.
    let fake = env.path("fake");
    fs::create_dir(&fake).unwrap();
    let other_state = env.path("other-host-state");
    let out = env.run_as(
        &other_state,
        &[
            "media",
            "init",
            fake.to_str().unwrap(),
            "--label",
            "Fake",
            "--plaintext",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fake_media = fake.join("trayback/media.yaml");
    let t = fs::read_to_string(&fake_media).unwrap();
    let fake_id = t.lines().find(|l| l.starts_with("media_id:")).unwrap();
    fs::write(&fake_media, t.replace(fake_id, id_line)).unwrap();
    let before = fingerprint(&fake);
    let fake_s = fake.to_str().unwrap();
    let err = refused(
        &env,
        &[
            "backup", "--medium", fake_s, "--source", "{src}", "--kind", "monthly",
        ],
    );
    assert!(err.contains("does not verify"), "{err}");
    let err = refused(&env, &["media", "adopt", fake_s]);
    assert!(err.contains("already holds a key"), "{err}");
    assert_eq!(fingerprint(&fake), before);
    // The real medium is still this host's.
    env.backup(&["--kind", "monthly"]);
}

/// A medium for a host running an older trayback: the tree format comes from the config's
/// `tree_format` (what the agent's enrolment of blank disks follows too) unless `--tree-format`
/// says otherwise, and a format this trayback does not make is refused with nothing written.
#[test]
fn a_new_medium_takes_the_tree_format_asked_for() {
    let env = Env::new(MediumKind::Dir).unwrap();
    let config = env.path("old-format.yaml");
    fs::write(
        &config,
        format!("sources: [{}]\ntree_format: 1\n", env.src.display()),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let tree = env.medium.join("trayback/tree.yaml");
    let init = |extra: &[&str]| {
        let mut args = vec!["media", "init", "{medium}", "--label", "Old", "--plaintext"];
        args.extend_from_slice(extra);
        env.run(&args)
    };
    assert!(init(&["--config", cfg]).status.success());
    assert!(fs::read_to_string(&tree)
        .unwrap()
        .starts_with("format: 1\n"));
    assert!(init(&["--config", cfg, "--tree-format", "2", "--force"])
        .status
        .success());
    assert!(fs::read_to_string(&tree)
        .unwrap()
        .starts_with("format: 2\n"));
    fs::remove_dir_all(env.medium.join("trayback")).unwrap();
    let out = init(&["--tree-format", "4"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--tree-format"));
    assert!(!env.medium.join("trayback").exists());
    fs::write(&config, "tree_format: 9\n").unwrap();
    let out = init(&["--config", cfg]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("tree_format"));
    assert!(!env.medium.join("trayback").exists());
}
