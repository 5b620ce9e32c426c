//! The ID file of an encrypted medium (FORMAT.md "media.yaml, format 4"): media of format 3,
//! made before the key-slot generation existed, keep working and are upgraded at their first
//! change of key slots, after which the format-3 file put back is a rollback; Argon2id
//! parameters outside the reader's window are refused before anything is derived.

#[path = "support/util.rs"]
mod util;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use util::*;

fn media_format(medium: &Path) -> String {
    media_field(medium, "format")
}

/// `tests/fixtures/format3-medium.tar.gz`: a directory medium enrolled and backed up by the
/// trayback before format 4 (media.yaml format 3, a passphrase slot), with the state directory
/// of the host that made it, its recovery key, its passphrase and the source it backed up
/// (`/tmp/tbfix/src` when it was made).
fn format3(env: &Env) {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format3-medium.tar.gz");
    sh(Command::new("tar")
        .arg("xzf")
        .arg(fixture)
        .arg("-C")
        .arg(env.tmp.path()));
    assert_eq!(media_format(&env.medium), "3");
}

#[test]
fn a_format_3_medium_is_read_and_written_and_upgraded_at_its_first_key_change() {
    let env = Env::new(MediumKind::Dir).unwrap();
    format3(&env);
    let bare = env.path("bare");
    let key = env.path("recovery.txt");
    let pw = env.path("passphrase.txt");
    let with = |secret: &Path, args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--key-file", secret.to_str().unwrap()]);
        env.run_as(&bare, &a)
    };
    // A bare machine restores it with the recovery key, byte for byte; the passphrase opens.
    let to = env.path("restored");
    let out = with(
        &key,
        &[
            "restore",
            "--medium",
            "{medium}",
            "--to",
            to.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // (Contents: the fixture's tar kept its source's times to the second only.)
    for f in ["hello.txt", "sub/lines.txt"] {
        let restored = fs::read(to.join("tmp/tbfix/src").join(f)).unwrap();
        assert_eq!(restored, fs::read(env.src.join(f)).unwrap(), "{f}");
    }
    assert!(with(&pw, &["list", "--medium", "{medium}"])
        .status
        .success());
    // So does the independent reader written from FORMAT.md.
    let py_out = env.path("py-out");
    let r = independent_reader(
        &env.medium,
        &key,
        Path::new("/tmp/tbfix/src/sub/lines.txt"),
        &py_out,
    );
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(
        fs::read(&py_out).unwrap(),
        fs::read(env.src.join("sub/lines.txt")).unwrap()
    );
    // The host that made it backs up to it; its key slots are untouched, so is its format.
    write(&env.src.join("new.txt"), b"after the upgrade of trayback");
    env.backup(&["--kind", "weekly"]);
    assert_eq!(media_format(&env.medium), "3");
    // Its tree is format 2 (made before frames): it keeps writing packs of version 2.
    for sub in fs::read_dir(env.medium.join("trayback/packs")).unwrap() {
        for p in fs::read_dir(sub.unwrap().path()).unwrap() {
            let b = fs::read(p.unwrap().path()).unwrap();
            assert_eq!(b[8..12], 2u32.to_le_bytes(), "a pack of another version");
        }
    }
    let v3 = fs::read(env.medium.join("trayback/media.yaml")).unwrap();
    // Its first change of key slots writes format 4, generation 1.
    env.ok(&["media", "passphrase", "{medium}", "--remove"]);
    assert_eq!(media_format(&env.medium), "4");
    let v4 = fs::read_to_string(env.medium.join("trayback/media.yaml")).unwrap();
    assert!(v4.contains("generation: 1"), "{v4}");
    assert!(!with(&pw, &["list", "--medium", "{medium}"])
        .status
        .success());
    assert!(with(&key, &["list", "--medium", "{medium}"])
        .status
        .success());
    env.backup(&["--kind", "daily"]);
    // The format-3 file put back (its passphrase slot with it) is a rollback: refused before
    // any write, read with a warning.
    fs::write(env.medium.join("trayback/media.yaml"), &v3).unwrap();
    let before = fingerprint(&env.medium);
    let out = env.run(&[
        "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "daily",
    ]);
    let e = stderr(&out);
    assert!(!out.status.success(), "written to a rolled-back ID file");
    assert!(
        e.contains("generation 0") && e.contains("generation 1") && e.contains("tampered"),
        "{e}"
    );
    assert_eq!(fingerprint(&env.medium), before);
    for args in [
        vec!["media", "passphrase", "{medium}", "--remove"],
        vec!["media", "rotate-host-key", "{medium}"],
        vec!["media", "adopt", "{medium}", "--replace-key"],
    ] {
        let out = env.run(&args);
        assert!(
            !out.status.success(),
            "{args:?} accepted a rolled-back ID file"
        );
        assert!(
            stderr(&out).contains("tampered"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(fingerprint(&env.medium), before, "{args:?} wrote");
    }
    let out = env.run(&["list", "--medium", "{medium}"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("older than generation 1"),
        "{}",
        stderr(&out)
    );
    // The limit FORMAT.md states: a machine that never saw the medium cannot tell, and the
    // removed passphrase opens the old file there (the data key never changed).
    assert!(with(&pw, &["list", "--medium", "{medium}"])
        .status
        .success());
}

/// The window of FORMAT.md: m ≤ 256 MiB, t ≤ 10, p ≤ 4. Before it, a crafted ID file could
/// make each try of a key cost 1 GiB and half a minute; outside it nothing is derived.
#[test]
fn argon2_parameters_outside_the_window_are_refused_before_anything_is_derived() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("f"), b"x");
    let key = env.init();
    env.backup(&["--kind", "monthly"]);
    let kf = env.path("recovery.txt");
    fs::write(&kf, format!("{key}\n")).unwrap();
    let media = env.medium.join("trayback/media.yaml");
    let genuine = fs::read_to_string(&media).unwrap();
    for (field, value) in [
        ("m_kib", "1048576"),
        ("t", "16"),
        ("p", "16"),
        ("m_kib", "4096"),
    ] {
        let crafted = genuine.replace(
            &format!("      {field}: {}\n", default_of(field)),
            &format!("      {field}: {value}\n"),
        );
        assert_ne!(crafted, genuine, "{field}");
        fs::write(&media, &crafted).unwrap();
        let t0 = Instant::now();
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
        assert!(!out.status.success(), "{field}={value} accepted");
        assert!(
            e.contains("media.yaml") && e.contains("outside what a reader accepts"),
            "{field}={value}: {e}"
        );
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert!(
            t0.elapsed().as_secs_f64() < 2.0,
            "{field}={value}: refused only after {:?}",
            t0.elapsed()
        );
        // This host refuses it as well, before it writes anything.
        let before = fingerprint(&env.medium);
        let out = env.run(&["backup", "--medium", "{medium}", "--source", "{src}"]);
        assert!(!out.status.success());
        assert_eq!(fingerprint(&env.medium), before);
    }
    fs::write(&media, &genuine).unwrap();
    env.backup(&["--kind", "daily"]);
}

fn default_of(field: &str) -> &'static str {
    match field {
        "m_kib" => "65536",
        "t" => "3",
        _ => "1",
    }
}
