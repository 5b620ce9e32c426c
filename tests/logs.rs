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
    let (ok, text) = run_logged(env, kind, log, journal);
    assert!(ok, "backup failed:\n{text}");
    text
}

/// As [`backup_logged`], whether the backup succeeded (a partial one does not) and the log.
fn run_logged(env: &Env, kind: &str, log: &str, journal: bool) -> (bool, String) {
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
    (st.success(), fs::read_to_string(&path).unwrap())
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

/// Attack finding (atk-pkg, P2): a name in the source tree is written raw into a log line,
/// so a local user who can name a file the backup meets with a problem (here a sparse file
/// over the largest size a listing holds, skipped with a `backup problem` warning) makes
/// the journal show lines of their choosing: a forged `backup committed`, and with
/// journald's `<N>` level prefix at any priority (`<0>` is emerg, sent to every terminal).
#[test]
fn a_source_name_cannot_forge_journal_lines() {
    let env = Env::new(MediumKind::Dir).unwrap();
    write(&env.src.join("a.txt"), b"logged");
    let forged = "x\n<0>  INFO backup committed backup=999 files=0 new_bytes=0 partial=false";
    let big = fs::File::create(env.src.join(forged)).unwrap();
    // Over 1 TiB: larger than the largest file a listing holds (entry.rs MAX_FILE_SIZE).
    big.set_len((1 << 40) + 1).unwrap();
    drop(big);
    env.init_plaintext();

    // Partial (the oversized file is left out): exits non-zero.
    let (_, log) = run_logged(&env, "monthly", "journal.log", true);
    assert!(
        log.contains("backup problem") && log.contains("src/x\\n<0>  INFO"),
        "the oversized file is skipped with a warning, its name escaped:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("<0>")
            || (l.contains("backup=999") && !l.contains("backup problem path="))),
        "a name in the source tree forged a journal line:\n{log}"
    );
}
