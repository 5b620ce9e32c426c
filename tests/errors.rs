//! Bad input gets a one-line error naming what and where, a non-zero exit, and changes nothing.

#[path = "support/util.rs"]
mod util;
use std::fs;
use std::path::Path;
use util::*;

fn one_line_error(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    err
}

on_both_media!(bad_config_is_refused_and_nothing_written, |env: &Env| {
    env.init();
    write(&env.src.join("f"), b"x");
    let before = fingerprint(&env.medium);
    for (text_, needle) in [
        ("sources: [/tmp]\nexclud: ['*.o']\n", "exclud"),
        ("compression_level: 99\n", "compression_level"),
        ("sources: relative\n", "sources"),
        ("one_file_system: sometimes\n", "one_file_system"),
    ] {
        let cfg = env.path("bad.yaml");
        fs::write(&cfg, text_).unwrap();
        let out = env.run(&[
            "backup",
            "--medium",
            "{medium}",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        let err = one_line_error(&out);
        assert!(err.contains(needle) && err.contains("bad.yaml"), "{err}");
    }
    assert_eq!(
        fingerprint(&env.medium),
        before,
        "a refused backup changed the medium"
    );
});

on_both_media!(missing_and_unenrolled_media_are_refused, |env: &Env| {
    let out = env.run(&[
        "backup",
        "--medium",
        "/nonexistent/medium",
        "--source",
        "{src}",
    ]);
    assert!(one_line_error(&out).contains("/nonexistent/medium"));
    let before = fingerprint(&env.medium);
    let out = env.run(&["backup", "--medium", "{medium}", "--source", "{src}"]);
    assert!(one_line_error(&out).contains("not a trayback medium"));
    let out = env.run(&["list", "--medium", "{medium}"]);
    assert!(one_line_error(&out).contains("not a trayback medium"));
    assert_eq!(fingerprint(&env.medium), before);
});

on_both_media!(
    an_enrolled_medium_is_not_enrolled_again_without_force,
    |env: &Env| {
        env.init();
        write(&env.src.join("f"), b"x");
        env.backup(&[]);
        let before = fingerprint(&env.medium);
        let out = env.run(&["media", "init", "{medium}", "--label", "Other"]);
        assert!(one_line_error(&out).contains("already enrolled"));
        assert_eq!(fingerprint(&env.medium), before);
        env.ok(&["media", "init", "{medium}", "--label", "Other", "--force"]);
        let list: serde_json::Value =
            serde_json::from_str(&env.ok(&["list", "--medium", "{medium}", "--json"])).unwrap();
        assert_eq!(list, serde_json::json!([]));
    }
);

on_both_media!(a_second_writer_is_refused, |env: &Env| {
    env.init();
    write(&env.src.join("f"), b"x");
    // Hold the medium's lock as a running backup would.
    let lock = fs::File::open(env.medium.join("trayback/locks/lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let before = fingerprint(&env.medium);
    let out = env.run(&["backup", "--medium", "{medium}", "--source", "{src}"]);
    assert!(one_line_error(&out).contains("in use by another trayback process"));
    assert_eq!(fingerprint(&env.medium), before);
    // Readers are not blocked.
    env.ok(&["list", "--medium", "{medium}"]);
    drop(lock);
    env.backup(&[]);
});

#[test]
fn an_incremental_without_a_verified_parent_is_refused() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("f"), b"x");
    env.backup(&["--kind", "monthly", "--no-verify"]);
    let out = env.run(&[
        "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "daily", "--parent", "1",
    ]);
    assert!(one_line_error(&out).contains("not verified"));
}

#[test]
fn a_damaged_tree_file_is_named() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    fs::write(
        env.medium.join("trayback/tree.yaml"),
        "format: 1\nnext_id: [oops\n",
    )
    .unwrap();
    let out = env.run(&["list", "--medium", "{medium}"]);
    let err = one_line_error(&out);
    assert!(
        err.contains("tree.yaml") && err.contains("damaged"),
        "{err}"
    );
}

#[test]
fn a_file_changing_while_read_is_reported_and_the_backup_completes() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let growing = env.src.join("growing.log");
    write(&growing, &bytes(1, 64 << 20));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let g2 = growing.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().append(true).open(g2).unwrap();
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            f.write_all(b"more log\n").unwrap();
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
    let out = env.run(&[
        "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "monthly",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("PARTIAL")
            && stdout.contains("growing.log")
            && stdout.contains("changed while being read"),
        "{stdout}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--medium", "{medium}", "--json"])).unwrap();
    assert_eq!(list[0]["partial"], true);
    assert_eq!(list[0]["verified"], true);
}

/// A relative `$TRAYBACK_STATE_DIR` without a config file panicked ("defaults are valid").
#[test]
fn a_relative_state_dir_is_one_error_line() {
    let env = Env::new(MediumKind::Dir).unwrap();
    let out = env.run_as(
        Path::new("relative/state"),
        &["list", "--medium", "{medium}"],
    );
    let err = one_line_error(&out);
    assert!(
        err.contains("TRAYBACK_STATE_DIR") && !err.contains("panicked"),
        "{err}"
    );
}
