//! Dirty XFS and btrfs (issue 15, items 2 and 3): a tray of this host's pulled while its
//! medium is held only in the file system's log (XFS) or log tree (btrfs) is recovered with
//! its backup; a stranger's, carrying a label auto-enrol matches, is refused without a byte of
//! it changed. (ext4's are in agent_field.rs and agent_attacks.rs.) Real images on loop
//! devices, real udevd, the real binary; root, xfsprogs and btrfs-progs (the tests fail
//! without them).

#[path = "support/lab.rs"]
mod lab;
#[path = "support/util.rs"]
mod util;
use lab::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use util::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fs {
    Xfs,
    Btrfs,
}

/// An image of `fs` labelled `label` that holds a trayback medium (enrolled with host state
/// `state`, one backup of the lab's source) only in its log: a read-only mount that replays
/// nothing shows no media ID file. Made with the lab's agent stopped.
///
/// XFS: `media init` and `backup` fsync what they write, which forces the log to the disk;
/// the file system is then shut down without flushing anything more (`xfs_io shutdown`, as a
/// pull would), so the metadata in place is still the blank file system's. btrfs: mounted with
/// a long commit interval, fsync writes to the log tree; the image is copied as it is then
/// (a tray pulled before the next transaction commit).
fn held_only_in_its_log(lab: &Lab, fs: Fs, label: &str, state: &Path) -> PathBuf {
    let img = lab.tmp.path().join(format!("{label}.img"));
    // btrfs: small enough that the restore kit's binary does not fit (its fsync'd rename of
    // megabytes commits a transaction, and the medium would be in place without the log).
    let size = match fs {
        Fs::Xfs => "320M",
        Fs::Btrfs => "64M",
    };
    sh(Command::new("truncate").args(["-s", size]).arg(&img));
    match fs {
        Fs::Xfs => sh(Command::new("mkfs.xfs").args(["-q", "-L", label]).arg(&img)),
        Fs::Btrfs => sh(Command::new("mkfs.btrfs")
            .args(["-q", "--mixed", "-L", label])
            .arg(&img)),
    };
    let options = match fs {
        Fs::Xfs => "loop",
        Fs::Btrfs => "loop,commit=300",
    };
    let mp = lab.mount(&img, &format!("{label}-prep"), options);
    let mps = mp.to_str().unwrap();
    let src = lab.src.to_str().unwrap();
    for args in [
        vec!["media", "init", mps, "--label", label],
        vec!["backup", "--medium", mps, "--source", src],
    ] {
        let out = lab.run_as(state, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    let dirty = match fs {
        Fs::Xfs => {
            sh(Command::new("xfs_io")
                .args(["-x", "-c", "shutdown"])
                .arg(&mp));
            img.clone()
        }
        Fs::Btrfs => {
            let copy = lab.tmp.path().join(format!("{label}-pulled.img"));
            sh(Command::new("cp")
                .args(["--sparse=always"])
                .arg(&img)
                .arg(&copy));
            copy
        }
    };
    sh(Command::new("umount").arg(&mp));
    // The test means something only if, without replay, the medium is not there.
    let probe = lab.tmp.path().join("probe.img");
    sh(Command::new("cp")
        .args(["--sparse=always"])
        .arg(&dirty)
        .arg(&probe));
    let no_replay = match fs {
        Fs::Xfs => "loop,ro,norecovery",
        Fs::Btrfs => "loop,ro,rescue=nologreplay",
    };
    let view = lab.mount(&probe, "probe", no_replay);
    let shown = view.join("trayback/media.yaml").exists();
    sh(Command::new("umount").arg(&view));
    std::fs::remove_file(&probe).unwrap();
    assert!(
        !shown,
        "{fs:?}: the medium is in place without a log replay; the test proves nothing"
    );
    dirty
}

fn tools(fs: Fs) {
    match fs {
        Fs::Xfs => require(&["mkfs.xfs", "xfs_io", "xfs_logprint"]),
        Fs::Btrfs => require(&["mkfs.btrfs"]),
    }
}

/// This host's tray, enrolled by `media init` (which registers its file system before the
/// first write), pulled with everything only in its log: recognised with its backup.
fn ours_is_recovered(fs: Fs) {
    tools(fs);
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    lab.stop_agent();
    // (XFS labels have at most 12 bytes.)
    let la = lab.label(if fs == Fs::Xfs { "X" } else { "B" });
    let dirty = held_only_in_its_log(&lab, fs, &la, &lab.state_dir());
    lab.start_agent();
    expect_recognised(&mut lab, &dirty, &la, 1);
    assert!(
        lab.log().contains("mounting read-write to recover it"),
        "{}",
        lab.log()
    );
    assert!(!lab.log().contains("--force"), "{}", lab.log());
}

/// A stranger's disk, dirty, carrying a label auto-enrol matches: refused, unchanged.
fn a_strangers_is_refused_untouched(fs: Fs) {
    tools(fs);
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    lab.stop_agent();
    let la = lab.label(if fs == Fs::Xfs { "XS" } else { "BS" });
    let other = lab.tmp.path().join("other-host-state");
    let dirty = held_only_in_its_log(&lab, fs, &la, &other);
    let before = sha(&dirty);
    lab.start_agent();
    let n = insert_refused(&mut lab, &dirty, &la);
    assert_eq!(n["event"], "unknown_medium", "{n}");
    let msg = n["message"].as_str().unwrap();
    assert!(msg.contains("log needs replaying"), "{n}");
    assert!(!msg.contains("--force"), "{n}");
    assert_eq!(before, sha(&dirty), "the stranger's disk was changed: {n}");
    assert!(
        !lab.log().contains("mounting read-write to recover it"),
        "{}",
        lab.log()
    );
}

#[test]
fn our_xfs_tray_held_only_in_its_log_is_recovered() {
    ours_is_recovered(Fs::Xfs);
}

#[test]
fn a_strangers_dirty_xfs_with_our_label_is_refused_and_left_as_it_was() {
    a_strangers_is_refused_untouched(Fs::Xfs);
}

#[test]
fn our_btrfs_tray_held_only_in_its_log_tree_is_recovered() {
    ours_is_recovered(Fs::Btrfs);
}

#[test]
fn a_strangers_dirty_btrfs_with_our_label_is_refused_and_left_as_it_was() {
    a_strangers_is_refused_untouched(Fs::Btrfs);
}

/// Finding: on a host without xfsprogs (the kernel mounts XFS without it; Debian does not
/// install it by default), or with a log `xfs_logprint` cannot read, trayback cannot tell a
/// dirty XFS log, and took a stranger's dirty XFS carrying a label auto-enrol matches for
/// blank: it mounted it read-write to enrol it, and the kernel replayed the stranger's log.
/// Now a stranger's disk whose log cannot be told clean is not mounted read-write.
#[test]
fn a_strangers_xfs_whose_log_cannot_be_read_is_not_replayed() {
    tools(Fs::Xfs);
    // The agent finds no xfs_logprint: xfsprogs lives in /usr/sbin.
    let mut lab = Lab::custom(|l| l.default_config(""), &[("PATH", "/usr/bin:/bin")]);
    assert!(
        !Path::new("/usr/bin/xfs_logprint").exists() && !Path::new("/bin/xfs_logprint").exists()
    );
    write(&lab.src.join("a.txt"), b"one");
    lab.stop_agent();
    let la = lab.label("XN");
    let other = lab.tmp.path().join("other-host-state");
    let dirty = held_only_in_its_log(&lab, Fs::Xfs, &la, &other);
    let before = sha(&dirty);
    lab.start_agent();
    let n = insert_refused(&mut lab, &dirty, &la);
    assert_eq!(before, sha(&dirty), "the stranger's disk was changed: {n}");
    assert_eq!(n["event"], "unknown_medium", "{n}");
    let msg = n["message"].as_str().unwrap();
    assert!(msg.contains("cannot tell whether its XFS log"), "{n}");
}
