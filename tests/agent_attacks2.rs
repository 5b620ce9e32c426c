//! The agent under attack, second round (issue 15's agent work: identification of dirty
//! disks, lends): a stranger's ext4 with inodes on its orphan list, an eject while a command
//! holds a lent medium. Real images on loop devices, real udevd, the real binary; root only
//! (the tests fail without it).

#[path = "support/lab.rs"]
mod lab;
#[path = "support/util.rs"]
mod util;
use lab::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use util::*;

/// Put a file of `img` (an unmounted ext4 image) on its orphan list, unlinked, as a disk
/// pulled while a program held a deleted file open is left: a read-write mount deletes it.
fn with_an_orphan(lab: &Lab, img: &Path) {
    require(&["debugfs", "dumpe2fs"]);
    let data = lab.tmp.path().join("orphan-data");
    write(&data, b"an open, deleted file");
    let debugfs = |args: &[&str]| {
        let out = Command::new("debugfs")
            .args(args)
            .arg(img)
            .output()
            .unwrap();
        assert!(out.status.success(), "debugfs: {}", text(&out.stderr));
        text(&out.stdout)
    };
    debugfs(&["-w", "-R", &format!("write {} f", data.display())]);
    let stat = debugfs(&["-R", "stat /f"]);
    let ino: u64 = stat
        .split_whitespace()
        .skip_while(|w| *w != "Inode:")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no inode number from debugfs: {stat}"));
    let script = lab.tmp.path().join("orphan.debugfs");
    std::fs::write(
        &script,
        format!("unlink /f\nsif <{ino}> links_count 0\nssv last_orphan {ino}\n"),
    )
    .unwrap();
    debugfs(&["-w", "-f", script.to_str().unwrap()]);
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(img)
        .output()
        .unwrap();
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.starts_with("First orphan inode:") && l.ends_with(&ino.to_string())),
        "the image has no orphan list: {}",
        text(&out.stdout)
    );
}

/// Finding: identifying a disk wrote to it. ext4 deletes the inodes on its orphan list when
/// it is mounted, even read-only with `noload` ("orphan cleanup on readonly fs"), unless the
/// block device itself is read-only; so any ext4 disk inserted — a stranger's, whatever its
/// label — that was pulled while a program held a deleted file open was changed by the agent
/// looking at it (and on a disk whose journal still needed replaying, the cleanup ran on
/// metadata the journal would overwrite). Now the device is read-only in the kernel while it
/// is identified.
#[test]
fn an_ext4_disk_with_orphan_inodes_is_not_written_by_identification() {
    let mut lab = Lab::new("");
    // Not the auto-enrol label: a foreign disk, only looked at.
    let label = format!("X-{}", lab.prefix);
    let img = lab.image("orphans.img", &label, "64M");
    with_an_orphan(&lab, &img);
    let before = sha(&img);
    let dev = lab.insert(&img);
    let n = wait_note_for(&lab, &label, 30);
    let t0 = Instant::now();
    while mounted(&dev) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // (Read before the pull: insert_refused would not tell.)
    let writable = std::fs::read_to_string(format!(
        "/sys/class/block/{}/ro",
        dev.trim_start_matches("/dev/")
    ))
    .unwrap();
    lab.pull(&dev);
    assert_eq!(n["event"], "unknown_medium", "{n}");
    assert_eq!(
        before,
        sha(&img),
        "the foreign disk was changed by its identification; note: {n}"
    );
    assert_eq!(
        writable.trim(),
        "0",
        "the device was left read-only after identification"
    );
}

/// Finding: an eject while a command holds the medium lent (`media passphrase`,
/// `rotate-host-key`, `adopt`) waited, silently, for the lend to end — up to ten minutes
/// with a command left at a prompt. Now it says at once that the medium is lent; once the
/// lend ends, eject works.
#[test]
fn an_eject_while_the_medium_is_lent_answers_at_once() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    let la = lab.label("E");
    let img = lab.image("e.img", &la, "256M");
    let _dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    let (answer, sock) = lend_raw(&lab, &la);
    assert_eq!(answer["ok"], true, "{answer}");
    let mut eject = Command::new(bin())
        .arg("eject")
        .env("TRAYBACK_SOCKET", &lab.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let answered = loop {
        if eject.try_wait().unwrap().is_some() {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = eject.kill();
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = eject.wait_with_output().unwrap();
    drop(sock);
    assert!(answered, "eject waited for the lend to end");
    assert!(!out.status.success(), "eject of a lent medium succeeded");
    let err = text(&out.stderr);
    assert!(err.contains("lent"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    lab.wait_for("the medium taken back", 20, |s| {
        inserted(s)
            .iter()
            .any(|m| m["label"] == la.as_str() && m["lent"] == false)
            && idle(s, &la)
    });
    lab.eject();
}
