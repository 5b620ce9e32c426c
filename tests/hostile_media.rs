//! A medium is untrusted input: crafted entries under `trayback/` are refused with one clear
//! line, and nothing outside the medium changes (the victim directories are fingerprinted
//! before and after). Regression tests are named after the attack that once worked.

#[path = "support/util.rs"]
mod util;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use util::*;

/// A medium with one verified backup of a few files, and a victim directory beside it.
fn medium_with_victim(kind: MediumKind) -> Option<(Env, std::path::PathBuf)> {
    let env = Env::new(kind)?;
    env.init();
    write(&env.src.join("a.txt"), b"alpha");
    write(&env.src.join("d/b.bin"), &bytes(1, 300_000));
    env.backup(&["--kind", "monthly"]);
    let victim = env.path("victim");
    fs::create_dir_all(victim.join("sub")).unwrap();
    write(&victim.join("keep.txt"), b"do not touch");
    write(&victim.join("sub/also.txt"), b"nor this");
    write(&victim.join("00000099/header.yaml"), b"looks like a backup");
    Some((env, victim))
}

/// Every command that opens a medium for writing or reading, as the CLI runs them.
const WRITERS: &[&[&str]] = &[
    &["verify", "--medium", "{medium}"],
    &[
        "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "monthly",
    ],
    &["pare", "--medium", "{medium}"],
];

/// Replace `trayback/<entry>` with a symlink to `target`; every writer must refuse with one
/// line naming the entry, and the victim must not change.
fn refused_when_linked(env: &Env, victim: &Path, entry: &str, target: &Path) {
    let p = env.medium.join("trayback").join(entry);
    // Beside trayback/, on the medium's own file system (a rename cannot cross).
    let saved = env.medium.join("saved-entry");
    if p.exists() || fs::symlink_metadata(&p).is_ok() {
        fs::rename(&p, &saved).unwrap();
    }
    symlink(target, &p).unwrap();
    let before = fingerprint(victim);
    for args in WRITERS {
        let out = env.run(args);
        let err = text(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} with {entry} linked succeeded"
        );
        assert!(
            err.contains("refused") && err.contains(entry.split('/').next().unwrap()),
            "{args:?} with {entry} linked: {err}"
        );
        assert!(
            err.trim().lines().count() == 1,
            "one line expected, got: {err}"
        );
    }
    assert_eq!(before, fingerprint(victim), "victim changed ({entry})");
    fs::remove_file(&p).unwrap();
    if fs::symlink_metadata(&saved).is_ok() {
        fs::rename(&saved, &p).unwrap();
    }
    // With the entry back, the medium works.
    env.ok(&["verify", "--medium", "{medium}"]);
}

on_both_media!(
    symlinked_tmp_backups_packs_or_locks_are_refused_and_nothing_outside_changes,
    |env: &Env| {
        let victim = env.path("victim");
        fs::create_dir_all(victim.join("sub")).unwrap();
        write(&victim.join("keep.txt"), b"do not touch");
        write(&victim.join("00000099/header.yaml"), b"looks like a backup");
        env.init();
        write(&env.src.join("a.txt"), b"alpha");
        env.backup(&["--kind", "monthly"]);
        for entry in ["tmp", "backups", "packs", "locks"] {
            refused_when_linked(env, &victim, entry, &victim);
        }
        // A dangling lock link would have made root create the file it names.
        let planted = env.path("created-by-root");
        refused_when_linked(env, &victim, "locks/lock", &planted);
        assert!(!planted.exists(), "the lock link was followed");
    }
);

#[test]
fn packs_linked_to_another_medium_leave_that_medium_untouched() {
    let (env, _) = medium_with_victim(MediumKind::Dir).unwrap();
    let (other, _) = medium_with_victim(MediumKind::Dir).unwrap();
    let other_packs = other.medium.join("trayback/packs");
    let before = fingerprint(&other.medium);
    refused_when_linked(&env, &other.medium, "packs", &other_packs);
    assert_eq!(before, fingerprint(&other.medium));
    other.ok(&["verify", "--medium", "{medium}", "--read-all"]);
}

/// Run trayback and give up after `limit`: a hang is a failure, not a wait.
fn run_bounded(env: &Env, args: &[&str], limit: Duration) -> (std::process::ExitStatus, String) {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{medium}", env.medium.to_str().unwrap()))
        .collect();
    let mut child = Command::new(bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status, err);
        }
        if t.elapsed() > limit {
            child.kill().unwrap();
            panic!("trayback {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn media_yaml_as_dev_zero_a_fifo_or_a_secret_is_refused_quickly_and_never_quoted() {
    let (env, _) = medium_with_victim(MediumKind::Dir).unwrap();
    let media = env.medium.join("trayback/media.yaml");
    let saved = env.path("media.yaml.saved");
    fs::rename(&media, &saved).unwrap();
    let secret = env.path("root-only");
    write(&secret, b"root:SECRET-HASH:19000:0:99999:7:::\n");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let fifo = env.path("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    for (what, how) in [
        ("/dev/zero", Some(Path::new("/dev/zero"))),
        ("a secret", Some(secret.as_path())),
        ("a fifo (linked)", Some(fifo.as_path())),
        ("a fifo (in place)", None),
    ] {
        match how {
            Some(target) => symlink(target, &media).unwrap(),
            None => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &media,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .unwrap();
            }
        }
        for args in [
            &["list", "--medium", "{medium}"][..],
            &["verify", "--medium", "{medium}"][..],
            &["media", "show", "{medium}"][..],
        ] {
            let (status, err) = run_bounded(&env, args, Duration::from_secs(20));
            assert!(!status.success(), "{what}: {args:?} succeeded");
            assert_eq!(status.code(), Some(1), "{what}: {args:?}: {status} {err}");
            assert!(err.contains("media.yaml"), "{what}: {err}");
            assert!(
                !err.contains("SECRET"),
                "{what}: the error quotes the file: {err}"
            );
        }
        fs::remove_file(&media).unwrap();
    }
    // A media.yaml holding garbage is not quoted either.
    write(&media, b"format: 1\nmedia_id: SECRET-VALUE\n");
    let (_, err) = run_bounded(
        &env,
        &["list", "--medium", "{medium}"],
        Duration::from_secs(20),
    );
    assert!(
        err.contains("media.yaml") && !err.contains("SECRET"),
        "{err}"
    );
    fs::rename(&saved, &media).unwrap();
    env.ok(&["verify", "--medium", "{medium}"]);
}

/// Peak RSS of a finished child, in KiB (`wait4`'s `ru_maxrss`).
#[allow(clippy::zombie_processes)] // reaped by `wait4` below, which also gives its peak RSS
fn run_measured(env: &Env, args: &[&str]) -> (bool, String, u64) {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{medium}", env.medium.to_str().unwrap()))
        .collect();
    let child = Command::new(bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = rustix::process::Pid::from_child(&child);
    let mut err = String::new();
    let mut stderr = child.stderr.unwrap();
    std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
    let mut status = 0i32;
    let mut usage = std::mem::MaybeUninit::<libc_rusage>::zeroed();
    // SAFETY: wait4 fills `status` and `usage`, both valid for writes, for our own child.
    let r = unsafe {
        wait4(
            pid.as_raw_nonzero().get(),
            &mut status,
            0,
            usage.as_mut_ptr(),
        )
    };
    assert_eq!(r, pid.as_raw_nonzero().get());
    // SAFETY: wait4 succeeded and initialised `usage`.
    let usage = unsafe { usage.assume_init() };
    let exited_ok = status & 0x7f == 0 && (status >> 8) & 0xff == 0;
    (exited_ok, err, usage.ru_maxrss as u64)
}

#[repr(C)]
struct libc_rusage {
    ru_utime: [i64; 2],
    ru_stime: [i64; 2],
    ru_maxrss: i64,
    rest: [i64; 13],
}

extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, usage: *mut libc_rusage) -> i32;
}

#[test]
fn a_2_gib_pack_without_footer_is_refused_without_being_read() {
    let (env, _) = medium_with_victim(MediumKind::Dir).unwrap();
    let dir = env.medium.join("trayback/packs/ab");
    fs::create_dir_all(&dir).unwrap();
    let big = dir.join("ab000000000000000000000000000000.pack");
    let f = fs::File::create(&big).unwrap();
    std::io::Write::write_all(&mut &f, b"TRAYPACK\x01\0\0\0\0\0\0\0").unwrap();
    f.set_len(2 << 30).unwrap(); // sparse: no disk used
    drop(f);
    for args in [
        &["list", "--medium", "{medium}"][..],
        &["verify", "--medium", "{medium}", "--read-all"][..],
        &["ls", "--medium", "{medium}", "-r"][..],
    ] {
        let t = Instant::now();
        let (_, err, rss_kib) = run_measured(&env, args);
        eprintln!(
            "{args:?}: {:.2}s, peak RSS {} MiB",
            t.elapsed().as_secs_f64(),
            rss_kib / 1024
        );
        assert!(rss_kib < 100 * 1024, "{args:?}: {rss_kib} KiB: {err}");
    }
    let (_, err, _) = run_measured(&env, &["verify", "--medium", "{medium}", "--read-all"]);
    assert!(err.is_empty() || !err.contains("panicked"), "{err}");
    // The backups themselves are intact and restore.
    let r = env.restore(1, "restored");
    assert_same(&env.src, &r);
}

#[test]
fn a_medium_is_private_and_nobody_cannot_read_it() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to run as nobody");
        return;
    }
    let (env, _) = medium_with_victim(MediumKind::Dir).unwrap();
    let t = env.medium.join("trayback");
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&t), 0o700);
    for e in walk_files(&t) {
        let m = mode(&e);
        let is_dir = fs::symlink_metadata(&e).unwrap().is_dir();
        assert_eq!(m, if is_dir { 0o700 } else { 0o600 }, "{}", e.display());
    }
    // A medium made by an older trayback (0755) is made private on the next write.
    fs::set_permissions(&t, fs::Permissions::from_mode(0o755)).unwrap();
    env.backup(&["--kind", "monthly"]);
    assert_eq!(mode(&t), 0o700);
    // `nobody` cannot restore root's files from it.
    fs::set_permissions(env.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(bin())
        .args(["restore", "--medium"])
        .arg(&env.medium)
        .args(["--to", "/tmp"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("Permission denied"), "{err}");
}

fn walk_files(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![p.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap().path();
            if fs::symlink_metadata(&e).unwrap().is_dir() {
                todo.push(e.clone());
            }
            out.push(e);
        }
    }
    out
}

#[test]
fn a_reader_that_has_started_never_loses_its_blocks_to_a_pare() {
    use trayback::ids::BackupId;
    use trayback::medium::Medium;
    // A loop-device medium: its free space is its own, so "1 MiB more than is free" is a
    // request paring backup 1 (2 MiB of its own) meets; the room plan pares nothing for a
    // request it cannot meet (issue 10).
    let Some(env) = Env::with_size(MediumKind::Ext4, "64M") else {
        return;
    };
    env.init();
    write(&env.src.join("old.bin"), &bytes(7, 2 << 20));
    let b1 = env.backup(&["--kind", "monthly"]);
    fs::remove_file(env.src.join("old.bin")).unwrap();
    write(&env.src.join("new.bin"), &bytes(8, 1 << 20));
    env.backup(&["--kind", "monthly"]);
    // A reader opens the medium and is about to restore backup 1...
    let reader = Medium::open_read(
        &env.medium,
        &trayback::medium::Unlock::host(&env.state_dir()),
    )
    .unwrap();
    let h1 = reader.header(BackupId(b1)).unwrap();
    // ...while a writer pares by the plan for more space: it pares backup 1 (the oldest
    // monthly; the newest stays) and then waits for the reader before reclaiming.
    let before = dir_bytes(&env.medium);
    let (medium, state) = (env.medium.clone(), env.state_dir());
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["media", "show", "{medium}", "--json"])).unwrap();
    let want = (show["free_bytes"].as_u64().unwrap() + (1 << 20)).to_string();
    let pare = std::thread::spawn(move || {
        Command::new(bin())
            .env("TRAYBACK_STATE_DIR", state)
            .args(["pare", "--json", "--free", &want, "--medium"])
            .arg(&medium)
            .output()
            .unwrap()
    });
    let t = Instant::now();
    while Medium::open_read(
        &env.medium,
        &trayback::medium::Unlock::host(&env.state_dir()),
    )
    .unwrap()
    .tree()
    .get(BackupId(b1))
    .is_some()
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "backup 1 never pared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    // Every block of backup 1 is still readable by the reader that started before.
    let mut blocks = 0;
    trayback::index::walk(&reader, &h1.root, Path::new("/"), &mut |_, e| {
        for b in &e.blocks {
            reader.read_block(b).unwrap();
            blocks += 1;
        }
        Ok(trayback::index::Step::Descend)
    })
    .unwrap();
    assert!(blocks >= 8, "{blocks}");
    assert!(
        !pare.is_finished(),
        "the pare reclaimed space under a reader"
    );
    drop(reader);
    let out = pare.join().unwrap();
    assert!(
        text(&out.stdout).contains("\"id\": 1"),
        "{}",
        text(&out.stdout)
    );
    let verify = env.run(&["verify", "--medium", "{medium}", "--all", "--read-all"]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    assert!(
        dir_bytes(&env.medium) < before,
        "space not reclaimed after the reader left"
    );
}

#[test]
fn verify_and_every_reading_command_work_on_a_read_only_mount() {
    let Some((env, _)) = medium_with_victim(MediumKind::Ext4) else {
        return;
    };
    sh(Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&env.medium));
    for args in [
        &["verify", "--medium", "{medium}", "--read-all"][..],
        &["list", "--medium", "{medium}"][..],
        &["tree", "--medium", "{medium}"][..],
        &["ls", "--medium", "{medium}", "-r"][..],
        &["versions", "--medium", "{medium}", "{src}/a.txt"][..],
        &["media", "show", "{medium}"][..],
    ] {
        env.ok(args);
    }
    let r = env.restore(1, "restored");
    assert_same(&env.src, &r);
    let out = env.run(&["backup", "--medium", "{medium}", "--source", "{src}"]);
    assert!(!out.status.success());
    sh(Command::new("mount")
        .args(["-o", "remount,rw"])
        .arg(&env.medium));
}

#[test]
fn a_users_15_tb_sparse_file_neither_pares_history_nor_fails_every_backup() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "128M") else {
        return;
    };
    env.init();
    write(&env.src.join("a.bin"), &bytes(3, 20 << 20));
    env.backup(&["--kind", "monthly"]);
    env.backup(&["--kind", "micro"]);
    let f = fs::File::create(env.src.join("sparse")).unwrap();
    f.set_len(15 << 40).unwrap();
    drop(f);
    let out = env.run(&[
        "backup", "--medium", "{medium}", "--source", "{src}", "--kind", "micro", "--json",
    ]);
    // Made, partial: the file is left out with a recorded problem; nothing pared for it.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pared_before"], serde_json::json!([]), "{v}");
    let problems = v["backup"]["problems"].to_string();
    assert!(
        problems.contains("larger than the largest file"),
        "{problems}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--medium", "{medium}", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
}

#[test]
fn recovery_removes_leftovers_whatever_their_names() {
    use std::os::unix::ffi::OsStrExt;
    let (env, _) = medium_with_victim(MediumKind::Dir).unwrap();
    let t = env.medium.join("trayback");
    let odd = std::ffi::OsStr::from_bytes(b"left\xffover");
    write(&t.join("tmp").join(odd), b"x");
    fs::create_dir_all(t.join("backups").join(odd).join("sub")).unwrap();
    env.backup(&["--kind", "monthly"]);
    assert_eq!(fs::read_dir(t.join("tmp")).unwrap().count(), 0);
    assert!(!t.join("backups").join(odd).exists());
}
