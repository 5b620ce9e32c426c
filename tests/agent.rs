//! The hot-plug agent end to end: real systemd-udevd, real ext4 images on loop devices, the
//! real binary. Root only (the tests fail without it; CI runs as root). The agent's clock is moved
//! with the hidden `test-clock` command so days pass in seconds.

#[path = "support/lab.rs"]
mod lab;
#[path = "support/util.rs"]
mod util;
use lab::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use util::*;

#[test]
fn insert_rotate_and_restore_from_either_medium() {
    let mut lab = Lab::new("");
    write(&lab.src.join("docs/a.txt"), b"first version");
    write(&lab.src.join("data.bin"), &bytes(1, 400_000));
    let (la, lb) = (lab.label("A"), lab.label("B"));
    let img_a = lab.image("a.img", &la, "96M");
    let img_b = lab.image("b.img", &lb, "96M");

    // Insert blank A: a monthly full appears with no other command.
    let dev_a = lab.insert(&img_a);
    let s = lab.wait_for("a monthly on A", 30, |s| {
        newest(s, &la, "monthly").is_some() && idle(s, &la)
    });
    let mp_a = PathBuf::from(inserted(&s)[0]["mountpoint"].as_str().unwrap());
    // Change files, advance time: micro backups on A, parents on A.
    write(&lab.src.join("docs/a.txt"), b"second version");
    lab.advance("15m");
    lab.wait_for("a micro on A", 30, |s| {
        newest(s, &la, "micro").is_some() && idle(s, &la)
    });
    write(&lab.src.join("docs/new.txt"), b"added");
    lab.advance("15m");
    lab.wait_for("a second micro on A", 30, |s| {
        newest(s, &la, "micro") == Some(3) && idle(s, &la)
    });
    // Status shows how far back each kind will reach at A's change rate (issue 10).
    let s = lab.wait_for("the reach of A", 30, |s| !inserted(s)[0]["reach"].is_null());
    let reach = &inserted(&s)[0]["reach"];
    for kind in ["monthly", "weekly", "daily", "micro"] {
        let days = reach["days"][kind].as_f64();
        assert!(days.is_some_and(|d| d > 0.0), "{kind}: {reach}");
    }
    assert!(reach["history"]["full_size"].as_u64().unwrap() >= 400_000);
    let human = lab.ctl(&["status"]);
    assert!(
        text(&human.stdout).contains("history reaches back"),
        "{}",
        text(&human.stdout)
    );
    let backups = list(&lab, &mp_a);
    assert_eq!(
        backups
            .iter()
            .map(|b| (b["kind"].as_str().unwrap(), b["parent"].as_u64()))
            .collect::<Vec<_>>(),
        vec![("monthly", None), ("micro", Some(1)), ("micro", Some(2))]
    );
    assert!(backups.iter().all(|b| b["verified"] == true));

    // Pull A; insert blank B: a full backup on B.
    lab.pull(&dev_a);
    lab.wait_for("A gone", 20, |s| inserted(s).is_empty());
    write(&lab.src.join("docs/b-only.txt"), b"made while B was in");
    let snap_b = lab.tmp.path().join("snap-b");
    snapshot(&lab.src, &snap_b);
    let dev_b = lab.insert(&img_b);
    lab.wait_for("a monthly on B", 30, |s| {
        newest(s, &lb, "monthly").is_some() && idle(s, &lb)
    });
    lab.pull(&dev_b);
    lab.wait_for("B gone", 20, |s| inserted(s).is_empty());

    // Re-insert A after two days: the next backup on A is a daily whose parent is on A.
    lab.advance("2d");
    let snap_a = lab.tmp.path().join("snap-a");
    snapshot(&lab.src, &snap_a);
    let dev_a = lab.insert(&img_a);
    let s = lab.wait_for("a daily on A", 30, |s| {
        newest(s, &la, "daily").is_some() && idle(s, &la)
    });
    let mp_a = PathBuf::from(inserted(&s)[0]["mountpoint"].as_str().unwrap());
    let backups = list(&lab, &mp_a);
    let daily = backups.iter().find(|b| b["kind"] == "daily").unwrap();
    assert_eq!(
        daily["parent"], 1,
        "the daily is based on A's own monthly: {backups:?}"
    );
    assert_eq!(
        backups.iter().filter(|b| b["kind"] == "daily").count(),
        1,
        "one backup of the highest kind due, not a burst"
    );
    // status knows where B is and what it holds.
    let s = lab.status();
    let away: Vec<_> = s["known"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["label"] == lb)
        .collect();
    assert_eq!(away.len(), 1, "{s:#}");
    assert!(away[0]["newest_backup"]["id"].as_u64().is_some());

    // Eject A: exit 0 and "safe to remove" once unmounted.
    let out = lab.ctl(&["eject"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("safe to remove"));
    assert!(
        !mp_a.exists() || fs::read_dir(&mp_a).unwrap().next().is_none(),
        "still mounted"
    );
    lab.wait_note("safe_to_remove", 10);
    lab.pull(&dev_a);

    // Each medium alone restores the whole source as it was at its newest backup.
    let ma = lab.mount_ro(&img_a, "check-a");
    assert_same(&snap_a, &lab.restore_latest(&ma, "restore-a"));
    let mb = lab.mount_ro(&img_b, "check-b");
    assert_same(&snap_b, &lab.restore_latest(&mb, "restore-b"));
    let _ = Command::new("umount").arg(&ma).status();
    let _ = Command::new("umount").arg(&mb).status();
    // After more than the configured days away, status warns (and a notification goes out).
    lab.advance("8d");
    let s = lab.status();
    assert!(
        s["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("away")),
        "{s:#}"
    );
    lab.wait_note("medium_away", 10);
}

#[test]
fn foreign_and_other_hosts_disks_are_never_written() {
    let mut lab = Lab::new("");
    write(&lab.src.join("f"), b"x");
    // A foreign disk: no media ID file, a label that does not match.
    let foreign = lab.image("foreign.img", "HOLIDAY-PHOTOS", "64M");
    // Another host's medium (enrolled with that host's keys, not this one's: a medium this
    // host holds a key for whose `host:` is altered is tampered, tests/crypt_attacks.rs),
    // under a label auto-enrolment matches; made with `mkfs.ext4 -d`, never mounted here.
    let root = lab.tmp.path().join("prep");
    fs::create_dir(&root).unwrap();
    let out = Command::new(bin())
        .args(["media", "init"])
        .arg(&root)
        .args(["--label", "theirs"])
        .env(
            "TRAYBACK_STATE_DIR",
            lab.tmp.path().join("other-host-state"),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let media = root.join("trayback/media.yaml");
    let text_ = replace_line(
        &fs::read_to_string(&media).unwrap(),
        "host:",
        "host: some-other-host",
    );
    fs::write(&media, text_).unwrap();
    let other = lab.tmp.path().join("other.img");
    sh(Command::new("truncate").args(["-s", "64M"]).arg(&other));
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", &lab.label("OTHER"), "-d"])
        .arg(&root)
        .arg(&other));
    let (sum_foreign, sum_other) = (sha(&foreign), sha(&other));

    let d1 = lab.insert(&foreign);
    let t0 = Instant::now();
    while !lab.notes().iter().any(|n| {
        n["event"] == "unknown_medium"
            && n["message"].as_str().unwrap_or("").contains("foreign disk")
    }) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no notification naming the foreign disk: {:?}\n{}",
            lab.notes(),
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let d2 = lab.insert(&other);
    let t0 = Instant::now();
    while !lab.notes().iter().any(|n| {
        n["message"]
            .as_str()
            .unwrap_or("")
            .contains("belongs to host")
    }) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no notification for the other host's medium: {:?}",
            lab.notes()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(inserted(&lab.status()).is_empty(), "neither disk is in use");
    lab.pull(&d1);
    lab.pull(&d2);
    assert_eq!(sha(&foreign), sum_foreign, "the foreign disk was written");
    assert_eq!(
        sha(&other),
        sum_other,
        "the other host's medium was written"
    );
}

#[test]
fn pulled_mid_backup_the_agent_survives_and_the_medium_recovers() {
    let mut lab = Lab::new("");
    write(&lab.src.join("small.txt"), b"committed first");
    let la = lab.label("P");
    let img = lab.image("p.img", &la, "1G");
    let dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    let snap = lab.tmp.path().join("snap1");
    snapshot(&lab.src, &snap);
    // A big change, so the next micro takes a while; pull the tray while it writes.
    write_big(&lab.src, 10);
    lab.advance("15m");
    lab.wait_for("the micro writing", 30, |s| {
        inserted(s)
            .iter()
            .any(|m| m["job"]["bytes"].as_u64().unwrap_or(0) > 8 << 20)
    });
    lab.pull(&dev);
    lab.wait_for("the medium gone", 30, |s| inserted(s).is_empty());
    assert!(
        lab.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent died:\n{}",
        lab.log()
    );
    // One notification, naming the backup the pull cancelled (#2, the micro).
    let n = lab.wait_note("medium_pulled", 10);
    assert_eq!(n["backup"], 2, "{n}");
    assert_eq!(n["label"], la, "{n}");
    assert!(
        n["message"].as_str().unwrap().contains("micro backup #2"),
        "{n}"
    );
    let others: Vec<_> = lab
        .notes()
        .into_iter()
        .filter(|n| n["event"] != "medium_pulled" && n["label"] == la)
        .collect();
    assert!(others.is_empty(), "{others:#?}");
    // The agent serves the next insertion: recovery removes the partial backup, and the
    // micro, still due, is made again.
    let _dev = lab.insert(&img);
    lab.wait_for("the micro after re-insertion", 60, |s| {
        newest(s, &la, "micro").is_some() && idle(s, &la)
    });
    let out = lab.ctl(&["eject"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mp = lab.mount_rw(&img, "check");
    let backups = list(&lab, &mp);
    // A loop device detached while mounted lives on until the mount lets go, so the micro
    // under way may still reach its commit point before it notices: then it stays, whole
    // (committed, its verify cut short), and the re-insertion makes another. Either way
    // nothing partial remains.
    let kinds: Vec<_> = backups
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds == ["monthly", "micro"] || kinds == ["monthly", "micro", "micro"],
        "the monthly and the new micro (or the pulled one, committed whole): {backups:?}"
    );
    assert!(backups.iter().all(|b| b["partial"] == false), "{backups:?}");
    lab.cli(&[
        "verify",
        "--medium",
        mp.to_str().unwrap(),
        "--all",
        "--read-all",
    ]);
    let to = lab.tmp.path().join("r1");
    lab.cli(&[
        "restore",
        "--medium",
        mp.to_str().unwrap(),
        "--backup",
        "1",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_same(&snap, &to.join(lab.src.strip_prefix("/").unwrap()));
    assert_same(&lab.src, &lab.restore_latest(&mp, "r2"));
    let _ = Command::new("umount").arg(&mp).status();
}

#[test]
fn eject_during_a_full_backup_aborts_it_and_leaves_a_medium_that_verifies() {
    let mut lab = Lab::new("");
    write(&lab.src.join("first.txt"), b"small");
    let la = lab.label("E");
    let img = lab.image("e.img", &la, "1G");
    let _dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    write_big(&lab.src, 20);
    // A month later the next monthly (not a micro) runs; eject aborts it.
    lab.advance("28d");
    lab.wait_for("the monthly writing", 30, |s| {
        inserted(s)
            .iter()
            .any(|m| m["job"]["kind"] == "monthly" && m["job"]["bytes"].as_u64().unwrap_or(0) > 0)
    });
    let out = lab.ctl(&["eject"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("safe to remove"),
        "{}",
        text(&out.stdout)
    );
    assert!(inserted(&lab.status()).is_empty());
    let mp = lab.mount_rw(&img, "check");
    lab.cli(&[
        "verify",
        "--medium",
        mp.to_str().unwrap(),
        "--all",
        "--read-all",
    ]);
    assert_eq!(
        list(&lab, &mp).len(),
        1,
        "the aborted monthly left nothing behind"
    );
    let _ = Command::new("umount").arg(&mp).status();
}

#[test]
fn sigterm_aborts_cleanly_and_unmounts() {
    let mut lab = Lab::new("");
    write(&lab.src.join("f"), b"x");
    let la = lab.label("S");
    let img = lab.image("s.img", &la, "64M");
    let _dev = lab.insert(&img);
    let s = lab.wait_first_monthly(&la);
    let mp = PathBuf::from(inserted(&s)[0]["mountpoint"].as_str().unwrap());
    let mut child = lab.agent.take().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::Term,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}");
    let mounts = text(
        &Command::new("findmnt")
            .args(["-rn", "-o", "TARGET"])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(
        !mounts.lines().any(|m| Path::new(m) == mp),
        "still mounted after SIGTERM"
    );
}

#[test]
fn the_udev_rule_marks_candidates_and_the_unit_is_valid() {
    let mut lab = Lab::new("");
    let img = lab.image("u.img", &lab.label("U"), "64M");
    let dev = lab.insert(&img);
    let name = Path::new(&dev)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let out = Command::new("udevadm")
        .args(["info", "--query=property", "--name", &dev])
        .output()
        .unwrap();
    let props = text(&out.stdout);
    assert!(props.contains("TRAYBACK_CANDIDATE=1"), "{props}");
    assert!(
        props.contains("SYSTEMD_WANTS=trayback-agent.service")
            || props.contains("trayback-agent.service"),
        "{props}"
    );
    let out = Command::new("udevadm")
        .args(["test", &format!("/sys/class/block/{name}")])
        .output()
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains("90-trayback.rules"),
        "udevadm test did not read our rule:\n{all}"
    );
    if Command::new("udevadm")
        .args(["verify", "--help"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        let out = Command::new("udevadm")
            .args(["verify", "udev-rules/90-trayback.rules"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "udevadm verify: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    } else {
        eprintln!("note: this udevadm has no `verify`; checked with `udevadm test` only");
    }
    if tool("systemd-analyze") {
        let dir = lab.tmp.path().join("units");
        fs::create_dir(&dir).unwrap();
        let unit = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/trayback-agent.service"),
        )
        .unwrap();
        fs::write(
            dir.join("trayback-agent.service"),
            unit.replace("@bindir@/trayback", bin().to_str().unwrap())
                .replace("@docdir@", "/usr/share/doc/trayback"),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify"])
            .arg(dir.join("trayback-agent.service"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd-analyze verify: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    } else {
        eprintln!("note: systemd-analyze is not installed; the unit was not verified");
    }
    // install-system writes the rule, unit and config under a root of our choosing.
    let root = lab.tmp.path().join("root");
    let out = Command::new(bin())
        .args(["install-system", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(root.join("etc/udev/rules.d/90-trayback.rules").exists());
    assert!(root
        .join("etc/systemd/system/trayback-agent.service")
        .exists());
    assert!(root.join("usr/local/bin/trayback").exists());
    // The unit's documentation is installed with it.
    let unit = fs::read_to_string(root.join("etc/systemd/system/trayback-agent.service")).unwrap();
    let docs: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Documentation="))
        .flat_map(|l| l.split_whitespace())
        .collect();
    assert!(!docs.is_empty(), "{unit}");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/trayback agent\n"),
        "{unit}"
    );
    for d in docs {
        let path = d.strip_prefix("file://").expect("file:// documentation");
        assert!(
            root.join(path.trim_start_matches('/')).is_file(),
            "Documentation={d} is not installed"
        );
    }
    // A named binary is installed; something else is refused, with nothing written.
    let root2 = lab.tmp.path().join("root2");
    let out = Command::new("/bin/sh")
        .args([
            "-c",
            "cd / && exec \"$0\" install-system --root \"$1\" --binary \"$0\"",
        ])
        .arg(bin())
        .arg(&root2)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fs::read(root2.join("usr/local/bin/trayback")).unwrap(),
        fs::read(bin()).unwrap()
    );
    let root3 = lab.tmp.path().join("root3");
    let out = Command::new(bin())
        .args(["install-system", "--binary", "/etc/hostname", "--root"])
        .arg(&root3)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim().lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    assert!(!root3.exists(), "something was written");
    lab.pull(&dev);
}

#[test]
fn with_two_media_only_the_last_inserted_is_written_and_a_clone_is_refused() {
    let mut lab = Lab::new("  multiple_media: last_inserted\n");
    write(&lab.src.join("f.txt"), b"one");
    let (la, lb) = (lab.label("A"), lab.label("B"));
    let img_a = lab.image("a.img", &la, "64M");
    let img_b = lab.image("b.img", &lb, "64M");
    let _da = lab.insert(&img_a);
    lab.wait_for("a monthly on A", 30, |s| {
        newest(s, &la, "monthly").is_some() && idle(s, &la)
    });
    let db = lab.insert(&img_b);
    lab.wait_for("a monthly on B", 30, |s| {
        newest(s, &lb, "monthly").is_some() && idle(s, &lb)
    });
    write(&lab.src.join("f.txt"), b"two");
    lab.advance("15m");
    let s = lab.wait_for("a micro on B", 30, |s| {
        newest(s, &lb, "micro").is_some() && idle(s, &lb)
    });
    assert_eq!(
        newest(&s, &la, "micro"),
        None,
        "A is not written while B, inserted last, is in"
    );
    assert!(inserted(&s)
        .iter()
        .any(|m| m["label"] == la && m["writing"] == false));
    // Reading commands need --medium when two media are in.
    let out = Command::new(bin())
        .args(["list"])
        .env("TRAYBACK_SOCKET", &lab.socket)
        .output()
        .unwrap();
    assert!(
        !out.status.success() && text(&out.stderr).contains("several media"),
        "{}",
        text(&out.stderr)
    );
    // Named by a backup-now, A is written all the same (an explicit request; it used to
    // wait for ever).
    let out = lab.ctl(&["backup-now", &la, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(o["data"]["backup"]["kind"], "micro", "{o}");
    // A byte-for-byte copy of A (same file system and media ID) is refused.
    let clone = lab.tmp.path().join("a-copy.img");
    fs::copy(&img_a, &clone).unwrap();
    let dc = lab.insert(&clone);
    let n = lab.wait_note("duplicate_medium", 20);
    assert!(n["message"].as_str().unwrap().contains("copy"), "{n}");
    assert_eq!(inserted(&lab.status()).len(), 2);
    lab.pull(&dc);
    // B goes: A is the last inserted again.
    lab.pull(&db);
    lab.wait_for("B gone", 30, |s| inserted(s).len() == 1 && idle(s, &la));
    // With one medium in, reading commands default to it.
    let out = Command::new(bin())
        .args(["list", "--json"])
        .env("TRAYBACK_SOCKET", &lab.socket)
        .env("TRAYBACK_STATE_DIR", lab.state_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let l: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l.as_array().unwrap().len(), 2);
    let out = lab.ctl(&["backup-now", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_medium_too_small_for_the_backup_is_reported_and_left_as_it_was() {
    let mut lab = Lab::new("");
    write(&lab.src.join("big.bin"), &bytes(3, 40 << 20));
    let la = lab.label("T");
    let img = lab.image("t.img", &la, "24M");
    let _d = lab.insert(&img);
    let n = lab.wait_note("medium_too_small", 30);
    assert!(
        n["message"].as_str().unwrap().contains("medium too small"),
        "{n}"
    );
    let s = lab.wait_for("the job to end", 30, |s| idle(s, &la));
    assert_eq!(newest(&s, &la, "monthly"), None);
    // Regression: a failed job was retried at once, in a busy loop that flooded notifications
    // and starved `eject`. It now waits a micro interval before trying again.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lab.notes()
            .iter()
            .filter(|n| n["event"] == "medium_too_small")
            .count(),
        1,
        "{:?}",
        lab.notes()
    );
    lab.advance("15m");
    let t0 = Instant::now();
    while lab
        .notes()
        .iter()
        .filter(|n| n["event"] == "medium_too_small")
        .count()
        < 2
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no retry after the micro interval"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = lab.ctl(&["eject"]);
    assert!(out.status.success());
    let mp = lab.mount_ro(&img, "check");
    assert!(list(&lab, &mp).is_empty());
    assert!(
        fs::read_dir(mp.join("trayback/packs"))
            .unwrap()
            .next()
            .is_none(),
        "no pack left behind"
    );
    let _ = Command::new("umount").arg(&mp).status();
}

#[test]
fn a_failing_backup_is_notified_and_the_medium_stays_usable() {
    let mut lab = Lab::new("");
    // The only source vanishes: the backup fails with a message naming it.
    fs::remove_dir_all(&lab.src).unwrap();
    let la = lab.label("F");
    let img = lab.image("f.img", &la, "64M");
    let _d = lab.insert(&img);
    let n = lab.wait_note("backup_failed", 30);
    assert!(
        n["message"]
            .as_str()
            .unwrap()
            .contains(lab.src.to_str().unwrap()),
        "{n}"
    );
    assert_eq!(n["label"], la);
    // The source comes back: a backup-now succeeds on the same medium.
    write(&lab.src.join("f"), b"back");
    let out = lab.ctl(&["backup-now", "--json"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let s = lab.wait_for("a monthly", 20, |s| {
        newest(s, &la, "monthly").is_some() && idle(s, &la)
    });
    assert!(inserted(&s)[0]["last_error"].is_null(), "{s:#}");
}

#[test]
fn a_strangers_stick_claiming_this_host_is_never_written_nor_registered() {
    let mut lab = Lab::new("");
    write(&lab.src.join("secret.txt"), b"not for strangers");
    // One real medium, enrolled and backed up, then taken away.
    let la = lab.label("A");
    let img_a = lab.image("a.img", &la, "64M");
    let dev_a = lab.insert(&img_a);
    let s = lab.wait_first_monthly(&la);
    let real_id = inserted(&s)[0]["media_id"].as_str().unwrap().to_string();
    let out = lab.ctl(&["eject"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    lab.pull(&dev_a);
    let register = lab.state_dir().join("register.yaml");
    let reg_before = fs::read(&register).unwrap();
    let host = host_name();
    // 1: the real medium's id copied, format 2 with a MAC made with another key.
    // 2: the real medium's id copied, format 1 without a MAC.
    // 3: its own id, a MAC from another host's key, `host:` this host.
    let id_line = format!("media_id: {real_id}");
    let host_line = format!("host: {host}");
    let imgs = [
        stranger(&lab, "s1.img", "Evil-1", true, |t| {
            replace_line(
                &replace_line(&t, "media_id:", &id_line),
                "host:",
                &host_line,
            )
        }),
        stranger(&lab, "s2.img", "Evil-2", true, |t| {
            let t = replace_line(&t, "media_id:", &id_line);
            let t = replace_line(&t, "format:", "format: 1");
            t.lines()
                .filter(|l| !l.starts_with("mac:"))
                .map(|l| format!("{l}\n"))
                .collect()
        }),
        stranger(&lab, "s3.img", "Evil-3", true, |t| {
            replace_line(&t, "host:", &host_line)
        }),
        // 4: encrypted, the real medium's id and this host's name copied: its key slot does
        // not open with the key this host holds for that id.
        stranger(&lab, "s4.img", "Evil-4", false, |t| {
            replace_line(
                &replace_line(&t, "media_id:", &id_line),
                "host:",
                &host_line,
            )
        }),
    ];
    // 1 and 2 put a plaintext ID file under the id of a medium this host knows encrypted:
    // that tray, its ID file replaced (issue 11), not merely a stranger.
    let why = [
        "now says plaintext",
        "now says plaintext",
        "no key",
        "tampered",
    ];
    let event = [
        "tampered_medium",
        "tampered_medium",
        "unknown_medium",
        "tampered_medium",
    ];
    for (i, img) in imgs.iter().enumerate() {
        let label = format!("Evil-{}", i + 1);
        let sum = sha(img);
        let dev = lab.insert(img);
        let n = wait_note_for(&lab, &label, 30);
        let msg = n["message"].as_str().unwrap();
        assert_eq!(n["event"], event[i], "{n}");
        assert!(
            msg.contains("not proven") && msg.contains(why[i]) && !msg.contains('\n'),
            "{label}: {msg}"
        );
        assert!(inserted(&lab.status()).is_empty(), "{label} is in use");
        assert!(!mounted(&dev), "{label} is still mounted");
        // Give a wrong decision time to show, then check nothing was written.
        std::thread::sleep(Duration::from_millis(500));
        lab.pull(&dev);
        assert_eq!(sha(img), sum, "{label} was written");
        assert_eq!(
            lab.notes().iter().filter(|n| n["label"] == label).count(),
            1,
            "one notification for {label}: {:?}",
            lab.notes()
        );
    }
    assert_eq!(
        fs::read(&register).unwrap(),
        reg_before,
        "the register was updated from a stranger's disk"
    );
    // The real medium is still ours.
    let _dev = lab.insert(&img_a);
    lab.wait_for("A back", 30, |s| idle(s, &la));
}

#[test]
fn the_shipped_config_does_not_enrol_a_blank_trayback_stick() {
    let shipped = include_str!("../config/trayback.yaml");
    assert!(
        !shipped
            .lines()
            .any(|l| l.trim_start().starts_with("auto_enrol_label:")),
        "the shipped config enrols sticks"
    );
    let mut lab = Lab::custom(
        |l| {
            let t = l.tmp.path().display();
            let src = format!("sources:\n  - {}\n", l.src.display());
            let (head, rest) = shipped.split_once("sources:\n").unwrap();
            let rest = &rest[rest.find("\n\n").unwrap()..];
            format!("{head}{src}{rest}")
                .replace("devices: []", "devices: ['/dev/loop*']")
                .replace("run_dir: /run/trayback", &format!("run_dir: {t}/run"))
                .replace(
                    "state_dir: /var/lib/trayback",
                    &format!("state_dir: {t}/state"),
                )
                .replace(
                    "# notify_command: /usr/local/bin/trayback-notify",
                    &format!("notify_command: {t}/notify.sh"),
                )
        },
        &[],
    );
    assert!(fs::read_to_string(&lab.config)
        .unwrap()
        .contains("notify_command: /"));
    write(&lab.src.join("f"), b"x");
    let img = lab.image("x.img", "TRAYBACK-X", "64M");
    let sum = sha(&img);
    let dev = lab.insert(&img);
    let n = wait_note_for(&lab, "TRAYBACK-X", 30);
    assert_eq!(n["event"], "unknown_medium", "{n}");
    assert!(
        n["message"].as_str().unwrap().contains("foreign disk"),
        "{n}"
    );
    assert!(inserted(&lab.status()).is_empty());
    std::thread::sleep(Duration::from_millis(500));
    lab.pull(&dev);
    assert_eq!(
        sha(&img),
        sum,
        "a blank stick was written by the default config"
    );
    assert!(!lab.state_dir().join("keys").exists(), "a key was made");
}

#[test]
fn a_panicking_backup_job_is_unmounted_and_notified_and_the_others_go_on() {
    a_panicking_medium("job");
}

#[test]
fn a_panicking_medium_task_is_unmounted_and_notified_and_the_others_go_on() {
    a_panicking_medium("task");
}

/// The hidden test hook makes medium P's task panic `at` its first job (`job`: in the
/// engine's `spawn_blocking`, `task`: in the async task itself).
fn a_panicking_medium(at: &str) {
    let lp = format!("TBT{}-P", std::process::id() % 100000);
    let hook = format!("{at}:{lp}");
    let mut lab = Lab::custom(
        |l| l.default_config(""),
        &[("TRAYBACK_TEST_PANIC", hook.as_str())],
    );
    assert_eq!(lab.label("P"), lp);
    write(&lab.src.join("f.txt"), b"data");
    let lq = lab.label("Q");
    let img_p = lab.image("p.img", &lp, "64M");
    let img_q = lab.image("q.img", &lq, "64M");
    // Q is in and backed up first; P comes while Q stays.
    let _dev_q = lab.insert(&img_q);
    lab.wait_first_monthly(&lq);
    let dev_p = lab.insert(&img_p);
    let n = lab.wait_note("backup_failed", 30);
    let msg = n["message"].as_str().unwrap();
    assert!(
        msg.contains("panicked") && msg.contains("safe to remove"),
        "{n}"
    );
    assert_eq!(n["label"], lp);
    lab.wait_for("P forgotten", 20, |s| {
        inserted(s).iter().all(|m| m["label"] != lp.as_str())
    });
    assert!(!mounted(&dev_p), "P is still mounted after its task failed");
    let warnings = lab.status()["warnings"].to_string();
    assert!(warnings.contains("panicked"), "{warnings}");
    // Eject answers for it, sensibly.
    let out = lab.ctl(&["eject", &lp]);
    assert!(
        out.status.success() && text(&out.stdout).contains("safe to remove"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The agent goes on: Q is still in and gets its next backup.
    write(&lab.src.join("f.txt"), b"changed");
    lab.advance("15m");
    lab.wait_for("a micro on Q", 30, |s| {
        newest(s, &lq, "micro").is_some() && idle(s, &lq)
    });
    assert!(
        lab.agent.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent died:\n{}",
        lab.log()
    );
    lab.pull(&dev_p);
    let mp = lab.mount_ro(&img_p, "check-p");
    assert!(list(&lab, &mp).is_empty(), "nothing committed on P");
    let _ = Command::new("umount").arg(&mp).status();
}

#[test]
fn identification_of_a_dirty_xfs_replays_nothing() {
    require(&["mkfs.xfs", "xfs_io"]);
    let mut lab = Lab::new("");
    // Made while no agent runs: the mounts below must not be raced by an identification.
    lab.stop_agent();
    let img = lab.tmp.path().join("dirty.img");
    sh(Command::new("truncate").args(["-s", "320M"]).arg(&img));
    sh(Command::new("mkfs.xfs")
        .args(["-q", "-L", "HOLIDAY-XFS"])
        .arg(&img));
    let mp = lab.mount_rw(&img, "prep");
    for i in 0..3 {
        write(&mp.join(format!("f{i}")), &bytes(i, 1 << 20));
    }
    sh(&mut Command::new("sync"));
    write(&mp.join("after-sync"), b"only in the log");
    // Shut the file system down without flushing the log: it needs recovery.
    sh(Command::new("xfs_io")
        .args(["-x", "-c", "shutdown"])
        .arg(&mp));
    sh(Command::new("umount").arg(&mp));
    let sum = sha(&img);
    // The test means something only if a plain read-only mount would replay the log.
    let copy = lab.tmp.path().join("copy.img");
    sh(Command::new("cp")
        .args(["--sparse=always"])
        .arg(&img)
        .arg(&copy));
    let dev = text(
        &Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&copy)
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    let probe = lab.tmp.path().join("probe");
    fs::create_dir(&probe).unwrap();
    sh(Command::new("mount")
        .args(["-o", "ro"])
        .arg(&dev)
        .arg(&probe));
    sh(Command::new("umount").arg(&probe));
    sh(Command::new("losetup").args(["-d", &dev]));
    assert_ne!(
        sha(&copy),
        sum,
        "the log was not dirty; the test proves nothing"
    );
    fs::remove_file(&copy).unwrap();
    // A blank XFS medium for the second half, made before the agent runs again.
    let lx = lab.label("X");
    let img_x = lab.tmp.path().join("x.img");
    sh(Command::new("truncate").args(["-s", "320M"]).arg(&img_x));
    sh(Command::new("mkfs.xfs").args(["-q", "-L", &lx]).arg(&img_x));
    lab.start_agent();

    let dev = lab.insert(&img);
    let n = wait_note_for(&lab, "HOLIDAY-XFS", 30);
    assert!(
        n["message"].as_str().unwrap().contains("foreign disk"),
        "{n}"
    );
    std::thread::sleep(Duration::from_millis(300));
    lab.pull(&dev);
    assert_eq!(sha(&img), sum, "identifying the disk replayed its log");

    // An XFS medium is used as any other: enrolled, backed up.
    write(&lab.src.join("f"), b"on xfs");
    let _dx = lab.insert(&img_x);
    lab.wait_first_monthly(&lx);
}

#[test]
fn a_btrfs_medium_is_identified_without_log_replay_and_used() {
    require(&["mkfs.btrfs"]);
    let mut lab = Lab::new("");
    write(&lab.src.join("f"), b"on btrfs");
    let lb = lab.label("B");
    let img = lab.tmp.path().join("b.img");
    sh(Command::new("truncate").args(["-s", "256M"]).arg(&img));
    sh(Command::new("mkfs.btrfs").args(["-q", "-L", &lb]).arg(&img));
    let d = lab.insert(&img);
    lab.wait_first_monthly(&lb);
    // (This disk's lines only: loop devices of other processes on the machine are seen too.)
    assert!(
        !lab.log()
            .lines()
            .any(|l| l.contains(&format!("{d}: cannot mount"))),
        "the identification mount options were refused:\n{}",
        lab.log()
    );
}

#[test]
fn a_journal_replay_that_changes_the_media_id_file_is_refused_before_any_write() {
    let mut lab = Lab::new("");
    write(&lab.src.join("f"), b"x");
    let la = lab.label("J");
    let img = lab.image("j.img", &la, "64M");
    let dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    let out = lab.ctl(&["eject"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    lab.pull(&dev);
    // A crash image: media.yaml replaced by a committed journal transaction that was never
    // checkpointed. Read-only without replay (noload) it shows the proven file; read-write,
    // the new one.
    lab.stop_agent();
    let crash = lab.tmp.path().join("crash.img");
    let (mut proven, mut changed) = (String::new(), String::new());
    ext4_crash_image(&lab, &img, &crash, |mp| {
        let media = mp.join("trayback/media.yaml");
        proven = fs::read_to_string(&media).unwrap();
        changed = proven.replace(&format!("label: {la}"), "label: replayed");
        assert_ne!(changed, proven, "media.yaml has no label line to change");
        let tmp = mp.join("trayback/tmp/media.yaml.new");
        fs::write(&tmp, &changed).unwrap();
        fs::rename(&tmp, &media).unwrap();
    });
    // The test means something only if the two views differ as intended.
    let view = |options: &str, name: &str| {
        let probe = lab.tmp.path().join(format!("{name}.img"));
        sh(Command::new("cp")
            .args(["--sparse=always"])
            .arg(&crash)
            .arg(&probe));
        let mp = lab.mount(&probe, name, options);
        let media = fs::read_to_string(mp.join("trayback/media.yaml"));
        sh(Command::new("umount").arg(&mp));
        fs::remove_file(&probe).unwrap();
        media.unwrap_or_else(|e| panic!("the crash image's media.yaml ({options}): {e}"))
    };
    assert_eq!(
        view("loop,ro,noload", "probe-noload"),
        proven,
        "the crash image without journal replay does not show the proven media.yaml"
    );
    assert_eq!(
        view("loop", "probe-replay"),
        changed,
        "the crash image's journal replay does not show the changed media.yaml"
    );
    let register = lab.state_dir().join("register.yaml");
    let reg_before = fs::read(&register).unwrap();
    lab.start_agent();
    let dev = lab.insert(&crash);
    let n = lab.wait_note("unknown_medium", 30);
    let msg = n["message"].as_str().unwrap();
    assert!(
        msg.contains("changed between"),
        "{n}\nagent log:\n{}",
        lab.log()
    );
    assert!(inserted(&lab.status()).is_empty());
    assert!(!mounted(&dev), "still mounted");
    std::thread::sleep(Duration::from_millis(300));
    lab.pull(&dev);
    assert_eq!(
        fs::read(&register).unwrap(),
        reg_before,
        "the register was updated"
    );
    let mp = lab.mount_ro(&crash, "check");
    assert!(fs::read_to_string(mp.join("trayback/media.yaml"))
        .unwrap()
        .contains("label: replayed"));
    assert_eq!(list(&lab, &mp).len(), 1, "nothing was backed up");
    let _ = Command::new("umount").arg(&mp).status();
}

#[test]
fn a_file_system_type_the_udev_rule_does_not_name_is_never_mounted() {
    require(&["mkfs.vfat"]);
    let mut lab = Lab::new("");
    // A FAT stick, labelled as auto-enrolment would want.
    let img = lab.tmp.path().join("fat.img");
    sh(Command::new("truncate").args(["-s", "32M"]).arg(&img));
    sh(Command::new("mkfs.vfat").args(["-n", "TBTFAT"]).arg(&img));
    let sum = sha(&img);
    let dev = lab.insert(&img);
    let n = lab.wait_note("unknown_medium", 30);
    let msg = n["message"].as_str().unwrap();
    assert!(
        msg.contains("\"vfat\"") && msg.contains("not one trayback uses"),
        "{n}"
    );
    assert!(!lab.log().contains("cannot mount"), "{}", lab.log());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lab.notes().len(), 1, "{:?}", lab.notes());
    lab.pull(&dev);
    assert_eq!(sha(&img), sum);
}
