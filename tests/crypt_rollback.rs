//! Someone holding this host's tray while it is away puts back what it held before (issue 11,
//! an attack on the ID file's key-slot generation): every older ID file, with or without the
//! tree of its time, a crafted generation, duplicate YAML keys, another medium's slot or ID
//! file, Argon2id parameters at the window's edges, and damaged host records. Each is refused
//! with one line before anything is written.

#[path = "support/util.rs"]
mod util;
use std::fs;
use std::path::{Path, PathBuf};
use util::*;

fn media(env: &Env) -> PathBuf {
    env.medium.join("trayback/media.yaml")
}

/// `backup` to `env`'s medium must fail, with one line naming media.yaml and containing
/// `want`, and change nothing on the medium.
fn refused_before_any_write(env: &Env, what: &str, want: &str) {
    let before = fingerprint(&env.medium);
    let out = env.run(&[
        "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "daily",
    ]);
    let e = stderr(&out);
    assert!(!out.status.success(), "{what}: written to");
    assert_eq!(
        fingerprint(&env.medium),
        before,
        "{what}: the medium changed"
    );
    assert!(e.contains(want), "{what}: not {want:?}: {e}");
    assert_eq!(e.trim().lines().count(), 1, "{what}: one line: {e}");
}

/// Every ID file this host wrote, put back after a later change of the key slots (passphrase
/// set, changed, removed; host key rotated), is refused by every writer; so is each put back
/// with the tree of its time.
#[test]
fn every_older_id_file_put_back_is_refused_with_or_without_its_tree() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("f"), b"x");
    env.init();
    env.backup(&["--kind", "monthly"]);
    let pw = env.path("pw.txt");
    let mut olds = vec![];
    let snapshot = |olds: &mut Vec<(String, Vec<u8>, PathBuf)>, what: &str| {
        let copy = env.path(&format!("snap-{}", olds.len()));
        sh(std::process::Command::new("cp")
            .arg("-a")
            .arg(env.medium.join("trayback"))
            .arg(&copy));
        olds.push((what.to_string(), fs::read(media(&env)).unwrap(), copy));
    };
    snapshot(&mut olds, "enrolment (no passphrase)");
    fs::write(&pw, "first passphrase\n").unwrap();
    let set = ["media", "passphrase", "{medium}", "--passphrase-file"];
    env.ok(&[&set[..], &[pw.to_str().unwrap()]].concat());
    env.backup(&["--kind", "weekly"]);
    snapshot(&mut olds, "first passphrase");
    fs::write(&pw, "second passphrase\n").unwrap();
    env.ok(&[&set[..], &[pw.to_str().unwrap()]].concat());
    env.backup(&["--kind", "daily"]);
    snapshot(&mut olds, "second passphrase");
    env.ok(&["media", "passphrase", "{medium}", "--remove"]);
    snapshot(&mut olds, "passphrase removed");
    env.ok(&["media", "rotate-host-key", "{medium}"]);
    env.backup(&["--kind", "daily"]);
    let genuine = env.path("genuine");
    sh(std::process::Command::new("cp")
        .arg("-a")
        .arg(env.medium.join("trayback"))
        .arg(&genuine));
    for (what, old, tree) in &olds {
        fs::write(media(&env), old).unwrap();
        refused_before_any_write(&env, what, "tampered");
        for args in [
            vec!["media", "passphrase", "{medium}", "--remove"],
            vec!["media", "rotate-host-key", "{medium}"],
            vec!["media", "adopt", "{medium}", "--replace-key"],
        ] {
            let before = fingerprint(&env.medium);
            let out = env.run(&args);
            assert!(!out.status.success(), "{what}: {args:?} accepted it");
            assert_eq!(fingerprint(&env.medium), before, "{what}: {args:?} wrote");
        }
        // The whole trayback/ of that time (its tree, its packs) put back.
        fs::remove_dir_all(env.medium.join("trayback")).unwrap();
        sh(std::process::Command::new("cp")
            .arg("-a")
            .arg(tree)
            .arg(env.medium.join("trayback")));
        refused_before_any_write(&env, &format!("{what} with its tree"), "tampered");
        fs::remove_dir_all(env.medium.join("trayback")).unwrap();
        sh(std::process::Command::new("cp")
            .arg("-a")
            .arg(&genuine)
            .arg(env.medium.join("trayback")));
    }
    env.backup(&["--kind", "daily"]);
}

/// A format-4 ID file's generation removed, set to 0, to u64::MAX, past u64::MAX, negative,
/// or given twice (duplicate YAML keys, the second one larger), and other keys duplicated.
#[test]
fn a_crafted_generation_or_duplicate_keys_are_refused_with_one_line() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("f"), b"x");
    env.init();
    env.backup(&["--kind", "monthly"]);
    let genuine = fs::read_to_string(media(&env)).unwrap();
    let line = genuine
        .lines()
        .find(|l| l.trim_start().starts_with("generation:"))
        .unwrap()
        .to_string();
    let indent = &line[..line.len() - line.trim_start().len()];
    let host = genuine
        .lines()
        .find(|l| l.starts_with("host:"))
        .unwrap()
        .to_string();
    for (what, crafted, want) in [
        (
            "generation removed",
            genuine.replace(&format!("{line}\n"), ""),
            "generation",
        ),
        (
            "generation 0",
            genuine.replace(&line, &format!("{indent}generation: 0")),
            "generation",
        ),
        (
            "generation u64::MAX",
            genuine.replace(&line, &format!("{indent}generation: {}", u64::MAX)),
            "tampered",
        ),
        (
            "generation past u64::MAX",
            genuine.replace(&line, &format!("{indent}generation: 18446744073709551616")),
            "media.yaml",
        ),
        (
            "generation -1",
            genuine.replace(&line, &format!("{indent}generation: -1")),
            "media.yaml",
        ),
        (
            "generation twice",
            genuine.replace(&line, &format!("{line}\n{indent}generation: 99")),
            "does not parse",
        ),
        (
            "host twice",
            genuine.replace(&host, &format!("{host}\nhost: elsewhere")),
            "does not parse",
        ),
        (
            "media_id twice",
            genuine.replace(
                "media_id:",
                "media_id: 00000000-0000-0000-0000-000000000000\nmedia_id:",
            ),
            "does not parse",
        ),
    ] {
        assert_ne!(crafted, genuine, "{what}");
        fs::write(media(&env), &crafted).unwrap();
        refused_before_any_write(&env, what, want);
    }
    fs::write(media(&env), &genuine).unwrap();
    env.backup(&["--kind", "daily"]);
}

fn slot_block(yaml: &str, kind: &str) -> String {
    let start = yaml.find(&format!("- slot: {kind}")).unwrap();
    let rest = &yaml[start..];
    let end = rest[1..].find("- slot:").map_or(rest.len(), |i| i + 1);
    let end = rest[..end].find("\nmac:").map_or(end, |i| i + 1);
    rest[..end].to_string()
}

/// Another medium of this host's: its recovery slot put in this one's ID file; its ID file
/// under this medium's id; its ID file as it is, on this medium's disk.
#[test]
fn another_mediums_slot_or_id_file_is_refused() {
    let a = Env::new(MediumKind::Dir).unwrap();
    write(&a.src.join("f"), b"x");
    let key_a = a.init();
    a.backup(&["--kind", "monthly"]);
    // B is enrolled by the same host (the same state directory).
    let b_medium = a.path("medium-b");
    fs::create_dir(&b_medium).unwrap();
    let out = a.run(&[
        "media",
        "init",
        b_medium.to_str().unwrap(),
        "--label",
        "B",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key_b = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["recovery_key"]
        .as_str()
        .unwrap()
        .to_string();
    let ya = fs::read_to_string(media(&a)).unwrap();
    let yb = fs::read_to_string(b_medium.join("trayback/media.yaml")).unwrap();
    let (ida, idb) = (
        media_field(&a.medium, "media_id"),
        media_field(&b_medium, "media_id"),
    );

    let swapped = ya.replace(&slot_block(&ya, "recovery"), &slot_block(&yb, "recovery"));
    assert_ne!(swapped, ya);
    fs::write(media(&a), &swapped).unwrap();
    refused_before_any_write(&a, "B's recovery slot", "tampered");
    for key in [&key_a, &key_b] {
        let kf = a.path("k.txt");
        fs::write(&kf, format!("{key}\n")).unwrap();
        let out = a.run_as(
            &a.path("bare"),
            &[
                "list",
                "--medium",
                "{medium}",
                "--key-file",
                kf.to_str().unwrap(),
            ],
        );
        assert!(!out.status.success(), "a swapped recovery slot opened");
    }

    fs::write(media(&a), yb.replace(&idb, &ida)).unwrap();
    refused_before_any_write(&a, "B's ID file under A's id", "tampered");

    // B's ID file as it is: the disk claims to be B; A's records do not open with B's keys.
    fs::write(media(&a), &yb).unwrap();
    let before = fingerprint(&a.medium);
    let out = a.run(&["backup", "--medium", "{medium}", "--source", "{src}"]);
    assert!(!out.status.success(), "backed up to A's disk as B");
    assert_eq!(
        fingerprint(&a.medium),
        before,
        "B's ID file on A's disk: written"
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    fs::write(media(&a), &ya).unwrap();
    a.backup(&["--kind", "daily"]);
}

/// Argon2id parameters just outside the window (7 MiB, 257 MiB, t 0, p 0) and salts that are
/// not 16 bytes are refused at once, with one line, on a bare machine and on this host.
#[test]
fn kdf_window_edges_and_bad_salts_are_refused_at_once() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("f"), b"x");
    let key = env.init();
    let kf = env.path("recovery.txt");
    fs::write(&kf, format!("{key}\n")).unwrap();
    let genuine = fs::read_to_string(media(&env)).unwrap();
    let salt_line = genuine
        .lines()
        .find(|l| l.trim_start().starts_with("salt:"))
        .unwrap()
        .to_string();
    let indent = &salt_line[..salt_line.len() - salt_line.trim_start().len()];
    let field = |f: &str, from: &str, to: &str| {
        genuine.replacen(
            &format!("      {f}: {from}\n"),
            &format!("      {f}: {to}\n"),
            1,
        )
    };
    for (what, crafted, want) in [
        ("7 MiB", field("m_kib", "65536", "7168"), "outside"),
        ("257 MiB", field("m_kib", "65536", "263168"), "outside"),
        ("t 0", field("t", "3", "0"), "outside"),
        ("p 0", field("p", "1", "0"), "outside"),
        (
            "17-byte salt",
            genuine.replacen(&salt_line, &format!("{indent}salt: {}", "ab".repeat(17)), 1),
            "salt",
        ),
        (
            "huge salt",
            genuine.replacen(
                &salt_line,
                &format!("{indent}salt: {}", "ab".repeat(30000)),
                1,
            ),
            "media.yaml",
        ),
    ] {
        assert_ne!(crafted, genuine, "{what}");
        fs::write(media(&env), &crafted).unwrap();
        let t0 = std::time::Instant::now();
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
        let e = stderr(&out);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(e.contains(want), "{what}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{what}: {e}");
        assert!(
            t0.elapsed().as_secs_f64() < 2.0,
            "{what}: {:?}",
            t0.elapsed()
        );
        refused_before_any_write(&env, what, want);
    }
}

/// A plaintext medium given a recovery key by file, on this host (which enrolled it) and on
/// a bare machine: refused unread, one line.
#[test]
fn a_plaintext_medium_given_a_key_file_is_refused_here_and_on_a_bare_machine() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("f"), b"x");
    env.init_plaintext();
    env.backup(&["--kind", "monthly"]);
    let kf = env.path("k.txt");
    fs::write(&kf, "whatever it is\n").unwrap();
    for state in [env.state_dir(), env.path("bare")] {
        let out = env.run_as(
            &state,
            &[
                "list",
                "--medium",
                "{medium}",
                "--key-file",
                kf.to_str().unwrap(),
            ],
        );
        let e = stderr(&out);
        assert!(
            !out.status.success() && e.contains("not encrypted"),
            "{state:?}: {e}"
        );
        assert_eq!(e.trim().lines().count(), 1, "{e}");
    }
    env.ok(&["list", "--medium", "{medium}"]);
}

/// A way to damage a record.
type Damage<'a> = &'a dyn Fn(&Path);

/// `<state>/keys/<id>.media-generation` damaged: truncated, a directory, a dangling symlink,
/// a symlink to an endless file, a FIFO. A damaged record must refuse (fail closed) an older
/// ID file, never take it for "nothing seen". A dangling symlink used to read as no record
/// (`NotFound`), so the older ID file was proven and written to; a symlink to `/dev/zero` was
/// read whole (memory without bound), a FIFO blocked the writer.
#[test]
fn a_damaged_generation_record_fails_closed() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("f"), b"x");
    env.init();
    env.backup(&["--kind", "monthly"]);
    let old = fs::read(media(&env)).unwrap();
    let pw = env.path("pw.txt");
    fs::write(&pw, "a passphrase\n").unwrap();
    env.ok(&[
        "media",
        "passphrase",
        "{medium}",
        "--passphrase-file",
        pw.to_str().unwrap(),
    ]);
    let genuine = fs::read(media(&env)).unwrap();
    let id = media_field(&env.medium, "media_id");
    let record = env.state_dir().join(format!("keys/{id}.media-generation"));
    assert_eq!(fs::read_to_string(&record).unwrap(), "2\n");
    fs::write(media(&env), &old).unwrap();
    let damage: [(&str, Damage); 5] = [
        ("truncated", &|p| fs::write(p, "").unwrap()),
        ("a directory", &|p| fs::create_dir(p).unwrap()),
        ("a dangling symlink", &|p| {
            std::os::unix::fs::symlink("/nonexistent-trayback-record", p).unwrap()
        }),
        ("a symlink to /dev/zero", &|p| {
            std::os::unix::fs::symlink("/dev/zero", p).unwrap()
        }),
        ("a FIFO", &|p| {
            sh(std::process::Command::new("mkfifo").arg(p));
        }),
    ];
    for (what, damage) in damage {
        let _ = fs::remove_file(&record).or_else(|_| fs::remove_dir(&record));
        damage(&record);
        let before = fingerprint(&env.medium);
        let out = env.run(&["backup", "--medium", "{medium}", "--source", "{src}"]);
        assert!(
            !out.status.success(),
            "record {what}: an older ID file accepted"
        );
        assert_eq!(fingerprint(&env.medium), before, "record {what}: written");
        let e = stderr(&out);
        assert!(e.contains("media-generation"), "record {what}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "record {what}: {e}");
    }
    let _ = fs::remove_file(&record).or_else(|_| fs::remove_dir(&record));
    fs::write(&record, "2\n").unwrap();
    fs::write(media(&env), &genuine).unwrap();
    env.backup(&["--kind", "daily"]);
}

#[path = "support/lab.rs"]
mod lab;

/// Issue 11: "a medium whose ID file … was altered is refused before any write. The agent
/// notifies `tampered_medium`." This host's own tray, its ID file altered so that it no longer
/// reads (the format-4 generation line removed, which nobody without the data key could have
/// done to a genuine file): the agent refuses it, writes nothing and notifies it once as
/// tampered, since this host holds a key for the id the file names.
#[test]
fn this_hosts_tray_with_an_unreadable_id_file_is_notified_as_tampered() {
    altered_tray_is_notified_once_as_tampered(|_, genuine| {
        genuine
            .lines()
            .filter(|l| !l.trim_start().starts_with("generation:"))
            .map(|l| format!("{l}\n"))
            .collect()
    });
}

/// The same tray with its ID file replaced by a plaintext one under its id (made by
/// `media init --plaintext` elsewhere, its media id rewritten): a plaintext forgery of an
/// encrypted tray, refused and notified as tampered, not as an unknown disk.
#[test]
fn this_hosts_encrypted_tray_with_a_plaintext_id_file_is_notified_as_tampered() {
    altered_tray_is_notified_once_as_tampered(|lab, genuine| {
        let dir = lab.tmp.path().join("forger");
        let state = lab.tmp.path().join("forger-state");
        fs::create_dir_all(&dir).unwrap();
        let out = lab.run_as(
            &state,
            &[
                "media",
                "init",
                dir.to_str().unwrap(),
                "--label",
                "Forged",
                "--plaintext",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let id_line = |t: &str| {
            t.lines()
                .find(|l| l.starts_with("media_id:"))
                .unwrap()
                .to_string()
        };
        let forged = fs::read_to_string(dir.join("trayback/media.yaml")).unwrap();
        forged.replace(&id_line(&forged), &id_line(genuine))
    });
}

/// This host's tray, ejected, its `media.yaml` replaced by `alter(genuine)`, inserted again:
/// refused, not written, notified once as `tampered_medium`.
fn altered_tray_is_notified_once_as_tampered(alter: impl FnOnce(&lab::Lab, &str) -> String) {
    use lab::*;
    let mut lab = Lab::new("");
    write(&lab.src.join("f"), b"ours");
    let la = lab.label("A");
    let img = lab.image("a.img", &la, "64M");
    let dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    let out = lab.ctl(&["eject"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    lab.pull(&dev);
    lab.stop_agent();
    let mnt = lab.mount_rw(&img, "edit-mnt");
    let media = mnt.join("trayback/media.yaml");
    let genuine = fs::read_to_string(&media).unwrap();
    let altered = alter(&lab, &genuine);
    assert_ne!(altered, genuine);
    fs::write(&media, &altered).unwrap();
    sh(std::process::Command::new("umount").arg(&mnt));
    lab.start_agent();
    let before = lab.notes().len();
    let sum = sha(&img);
    insert_refused(&mut lab, &img, &la);
    // Any second notification (udev repeats its events) has had time to come.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let n = lab.notes()[before..].to_vec();
    lab.stop_agent();
    assert_eq!(sha(&img), sum, "the altered tray was written");
    assert_eq!(n.len(), 1, "notified once: {n:?}");
    assert_eq!(n[0]["event"], "tampered_medium", "{n:?}");
}
