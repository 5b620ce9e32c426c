//! Logs fit journald: run by systemd, stderr is the journal (`JOURNAL_STREAM` names it), and
//! a backup logs one line per event with its fields, without timestamps (journald stamps
//! lines), colours or progress bars. On a file that is not the journal, lines keep their
//! timestamp. Never a progress bar or an escape sequence when stderr is not a terminal.

#[path = "support/util.rs"]
mod util;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use util::*;

/// Run a backup with stderr to `log`, as the journal when `journal` is set; the log text.
fn backup_logged(env: &Env, kind: &str, log: &str, journal: bool) -> String {
    let path = env.path(log);
    let f = fs::File::create(&path).unwrap();
    let meta = fs::metadata(&path).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["backup", "--medium"])
        .arg(&env.medium)
        .arg("--source")
        .arg(&env.src)
        .args(["--kind", kind])
        .env("TRAYBACK_LOG", "info")
        .env("TRAYBACK_STATE_DIR", env.state_dir())
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f);
    if journal {
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    let st = cmd.status().unwrap();
    assert!(
        st.success(),
        "backup failed:\n{}",
        fs::read_to_string(&path).unwrap()
    );
    fs::read_to_string(&path).unwrap()
}

#[test]
fn backup_logs_fit_the_journal() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("a.txt"), b"logged");
    env.init_plaintext();

    let log = backup_logged(&env, "monthly", "journal.log", true);
    assert!(!log.contains('\x1b') && !log.contains('\r'), "{log:?}");
    let committed = log
        .lines()
        .find(|l| l.contains("backup committed"))
        .unwrap_or_else(|| panic!("no `backup committed` line:\n{log}"));
    assert!(committed.contains("backup=1"), "{committed}");
    assert!(
        log.lines()
            .any(|l| l.contains("backup verified") && l.contains("backup=1")),
        "{log}"
    );
    for l in log.lines() {
        assert!(
            l.trim_start().starts_with("INFO") || l.trim_start().starts_with("WARN"),
            "a journal line starts with its level, no timestamp: {l:?}"
        );
    }

    // Not the journal (JOURNAL_STREAM absent): each line keeps its timestamp; still no
    // colours or progress bars on a file.
    write(&env.src.join("b.txt"), b"more");
    let log = backup_logged(&env, "micro", "file.log", false);
    assert!(!log.contains('\x1b') && !log.contains('\r'), "{log:?}");
    assert!(log.lines().count() > 0);
    for l in log.lines() {
        assert!(
            l.as_bytes().first().is_some_and(u8::is_ascii_digit),
            "a line on a file starts with its time: {l:?}"
        );
    }
}
