//! The agent in the field (issue 15): wall clocks that jump, trays pulled early, disks that
//! fail, disks enrolled by hand, install text. Real systemd-udevd, real ext4 images on loop
//! devices, the real binary; root only (the tests fail without it). The agent's clock is
//! moved with the hidden `test-clock` command; one test sets the real wall clock (to itself).
//! (Commands on a medium the agent holds: agent_held.rs; dirty XFS and btrfs:
//! agent_dirty.rs.)

#[path = "support/lab.rs"]
mod lab;
#[path = "support/util.rs"]
mod util;
use lab::*;
use std::time::{Duration, Instant};
use util::*;

/// The backups on a medium: every one dated no earlier than its parent, and ids in order of
/// their dates.
fn assert_dated_in_order(backups: &[serde_json::Value]) {
    let started = |b: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(b["started"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("started of {b}: {e}"))
    };
    for b in backups {
        if let Some(p) = b["parent"].as_u64() {
            let parent = backups.iter().find(|x| x["id"] == p).unwrap();
            assert!(
                started(b) >= started(parent),
                "backup {} is older than its parent {p}: {backups:#?}",
                b["id"]
            );
        }
    }
    for w in backups.windows(2) {
        assert!(started(&w[1]) >= started(&w[0]), "{backups:#?}");
    }
}

fn warnings(s: &serde_json::Value) -> Vec<String> {
    s["warnings"]
        .as_array()
        .map(|w| w.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn backups_go_on_in_order_when_the_wall_clock_steps_back_and_forward() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    let la = lab.label("C");
    let img = lab.image("c.img", &la, "256M");
    let _dev = lab.insert(&img);
    lab.wait_first_monthly(&la);

    // The wall clock steps back a day: status says so, and the schedule keeps its pace.
    lab.step("-1d");
    let s = lab.status();
    assert!(
        warnings(&s).iter().any(|w| w.contains("moved backwards")),
        "{s:#}"
    );
    write(&lab.src.join("b.txt"), b"two");
    lab.advance("15m");
    let t0 = Instant::now();
    lab.wait_for("a micro after the step back", 10, |s| {
        newest(s, &la, "micro").is_some() && idle(s, &la)
    });
    eprintln!("micro after a step back: {:?}", t0.elapsed());
    // Logged once, not at every look at the clock.
    assert_eq!(
        lab.log().matches("the wall clock moved backwards").count(),
        1,
        "{}",
        lab.log()
    );

    // Stepped forward two days: the daily is due at once, not after a stale sleep.
    lab.step("2d");
    let t0 = Instant::now();
    let s = lab.wait_for("a daily after the step forward", 10, |s| {
        newest(s, &la, "daily").is_some() && idle(s, &la)
    });
    eprintln!("daily after a step forward: {:?}", t0.elapsed());
    assert!(
        !warnings(&s).iter().any(|w| w.contains("moved backwards")),
        "the wall clock caught up: {s:#}"
    );
    // The step forward is said too (what fell due in the day skipped was made at once).
    assert!(
        warnings(&s).iter().any(|w| w.contains("jumped forward by")),
        "{s:#}"
    );
    let m = &inserted(&s)[0];
    let next = chrono::DateTime::parse_from_rfc3339(m["next_due"].as_str().unwrap()).unwrap();
    let now = chrono::DateTime::parse_from_rfc3339(s["now"].as_str().unwrap()).unwrap();
    assert!(next > now, "next due {next} is already past at {now}");

    // A suspend-like gap (both clocks move): the backup due meanwhile starts at once.
    lab.advance("3h");
    let t0 = Instant::now();
    lab.wait_for("a micro after the gap", 10, |s| {
        inserted(s).iter().any(|m| m["backups"].as_u64() == Some(4)) && idle(s, &la)
    });
    eprintln!("micro after a suspend-like gap: {:?}", t0.elapsed());

    let out = lab.ctl(&["eject"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mp = lab.mount_ro(&img, "check");
    let backups = list(&lab, &mp);
    assert_eq!(backups.len(), 4, "{backups:#?}");
    assert_dated_in_order(&backups);
}

#[test]
fn a_medium_dated_ahead_of_the_clock_keeps_its_pace_after_a_restart() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    let la = lab.label("R");
    let img = lab.image("r.img", &la, "256M");
    let _dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    lab.advance("1d");
    lab.wait_for("the daily", 20, |s| {
        newest(s, &la, "daily").is_some() && idle(s, &la)
    });
    // A restarted agent's clock is the real one: the medium's backups are a day ahead of it.
    lab.stop_agent();
    lab.start_agent();
    lab.wait_for("the medium back", 20, |s| idle(s, &la));
    write(&lab.src.join("b.txt"), b"two");
    lab.advance("15m");
    let t0 = Instant::now();
    lab.wait_for("the micro, 15 minutes after the daily", 10, |s| {
        newest(s, &la, "micro").is_some() && idle(s, &la)
    });
    eprintln!("micro on a medium dated ahead: {:?}", t0.elapsed());
    let out = lab.ctl(&["eject"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mp = lab.mount_ro(&img, "check");
    let backups = list(&lab, &mp);
    assert_eq!(backups.len(), 3, "{backups:#?}");
    assert_dated_in_order(&backups);
}

/// CLOCK_REALTIME cannot be namespaced: this sets the machine's wall clock, to the time it
/// reads (a step back of microseconds), which is enough for the kernel to cancel every
/// `TFD_TIMER_CANCEL_ON_SET` timer.
#[test]
fn setting_the_real_wall_clock_wakes_the_agents_wait_at_once() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    let la = lab.label("W");
    let img = lab.image("w.img", &la, "256M");
    let _dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    // Let the medium's task settle into its 15-minute wait.
    std::thread::sleep(Duration::from_millis(500));
    let before = lab.log().matches("the wall clock was set").count();
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    rustix::time::clock_settime(rustix::time::ClockId::Realtime, now).unwrap();
    let t0 = Instant::now();
    while lab.log().matches("the wall clock was set").count() == before {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the agent did not notice the clock being set:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("woke after a real clock set: {:?}", t0.elapsed());
    // And it went back to waiting for the same deadline, with nothing due.
    let s = lab.wait_for("idle again", 5, |s| idle(s, &la));
    assert_eq!(inserted(&s)[0]["backups"], 1, "{s:#}");
}

/// Copy the image under a loop device as it is now: what a tray pulled at this moment holds
/// (the file system's unwritten buffers are not in it, as they would not be on the disk).
/// A copy of `img` as a tray pulled now would be, with the tree generation this host had
/// seen of its media by then (an encrypted medium's older tree is refused as a rollback by a
/// host that saw a newer one: the copy stands for the tray as it was when pulled).
fn pulled_copy(lab: &Lab, img: &std::path::Path, name: &str) -> (std::path::PathBuf, Generations) {
    // Read before the copy: a generation is recorded only once its tree is on the disk, so
    // the copy holds that one or a newer.
    let seen = generations(lab);
    let copy = lab.tmp.path().join(name);
    sh(std::process::Command::new("cp")
        .args(["--sparse=always"])
        .arg(img)
        .arg(&copy));
    (copy, seen)
}

/// The host's record of each medium's newest tree generation.
type Generations = Vec<(std::path::PathBuf, Vec<u8>)>;

fn generations(lab: &Lab) -> Generations {
    let keys = lab.state_dir().join("keys");
    std::fs::read_dir(&keys)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "generation"))
                .map(|p| {
                    let b = std::fs::read(&p).unwrap();
                    (p, b)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn put_back(g: &Generations) {
    for (p, b) in g {
        std::fs::write(p, b).unwrap();
    }
}

#[test]
fn a_tray_pulled_in_its_first_minute_is_recognised_with_its_backups() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    let la = lab.label("Y");
    let img = lab.image("y.img", &la, "256M");
    let dev = lab.insert(&img);
    // Pulled as soon as the agent has enrolled it (its first backup may be under way) ...
    lab.wait_for("the medium enrolled", 30, |s| {
        inserted(s).iter().any(|m| m["label"] == la)
    });
    let mut copies = vec![(pulled_copy(&lab, &img, "at-enrolment.img"), 0)];
    // ... right after its first backup, a second later, and after a micro.
    lab.wait_first_monthly(&la);
    copies.push((pulled_copy(&lab, &img, "after-monthly.img"), 1));
    std::thread::sleep(Duration::from_secs(1));
    copies.push((pulled_copy(&lab, &img, "a-second-later.img"), 1));
    write(&lab.src.join("b.txt"), b"two");
    lab.advance("15m");
    lab.wait_for("the micro", 20, |s| {
        newest(s, &la, "micro").is_some() && idle(s, &la)
    });
    copies.push((pulled_copy(&lab, &img, "after-micro.img"), 2));
    lab.pull(&dev);
    lab.wait_for("the medium gone", 30, |s| inserted(s).is_empty());
    let _ = std::fs::remove_file(&lab.notes);
    // Without any journal replay, each copy already shows the medium and its committed
    // backups: they are in place, not only in the journal. (Looked at with the agent
    // stopped: it would take the probe's loop device for a tray.)
    lab.stop_agent();
    for ((copy, g), backups) in copies.iter().filter(|(_, b)| *b > 0) {
        put_back(g);
        let probe = lab.tmp.path().join("probe.img");
        sh(std::process::Command::new("cp")
            .args(["--sparse=always"])
            .arg(copy)
            .arg(&probe));
        let mp = lab.mount(&probe, "probe", "loop,ro,noload");
        let n = list(&lab, &mp).len() as u64;
        sh(std::process::Command::new("umount").arg(&mp));
        std::fs::remove_file(&probe).unwrap();
        assert!(n >= *backups, "{}: {n} backups in place", copy.display());
    }
    lab.start_agent();
    for ((copy, g), backups) in &copies {
        put_back(g);
        expect_recognised(&mut lab, copy, &la, *backups);
    }
}

/// The field report: a disk pulled soon after enrolment held everything only in its journal;
/// read-only without replay it looked blank, and the agent tried to enrol it again ("use
/// --force to wipe it"). Now a file system whose journal needs replaying and that claims to
/// be ours is recovered read-write and recognised.
#[test]
fn a_medium_held_only_in_its_journal_is_recovered_not_taken_for_blank() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    let la = lab.label("J");
    let clean = lab.image("blank.img", &la, "64M");
    let crash = lab.tmp.path().join("journal-only.img");
    let state = lab.state_dir();
    let src = lab.src.clone();
    // The crash image is made on loop mounts the agent must not see.
    lab.stop_agent();
    ext4_crash_image(&lab, &clean, &crash, |mp| {
        for args in [
            vec!["media", "init", mp.to_str().unwrap(), "--label", &la],
            vec![
                "backup",
                "--medium",
                mp.to_str().unwrap(),
                "--source",
                src.to_str().unwrap(),
            ],
        ] {
            let out = std::process::Command::new(bin())
                .args(&args)
                .env("TRAYBACK_STATE_DIR", &state)
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        }
    });
    // The test means something only if, without replay, the copy looks blank.
    let probe = lab.tmp.path().join("probe.img");
    sh(std::process::Command::new("cp")
        .args(["--sparse=always"])
        .arg(&crash)
        .arg(&probe));
    let mp = lab.mount(&probe, "probe", "loop,ro,noload");
    assert!(
        !mp.join("trayback").exists(),
        "the crash image is not blank without replay"
    );
    sh(std::process::Command::new("umount").arg(&mp));
    std::fs::remove_file(&probe).unwrap();

    lab.start_agent();
    expect_recognised(&mut lab, &crash, &la, 1);
    assert!(
        !lab.log().contains("--force"),
        "a message suggested --force:\n{}",
        lab.log()
    );
}

/// Makes a loop device's backing file immutable while it lives: every write to the device
/// then fails with EIO (as a dying disk's do), reads still work. (No device-mapper on the test
/// machines: dm-error/dm-flakey cannot be used.)
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(img: &std::path::Path) -> Immutable {
        sh(std::process::Command::new("chattr").arg("+i").arg(img));
        Immutable(img.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_failing_disk_is_notified_once_and_not_written_again_and_the_others_go_on() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    let la = lab.label("X");
    let img = lab.image("x.img", &la, "256M");
    let _dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    // The disk fails: every write to it is an I/O error from now on.
    let failing = Immutable::set(&img);
    for i in 0..4 {
        write(&lab.src.join(format!("new-{i}.bin")), &bytes(i, 8 << 20));
    }
    lab.advance("15m");
    let n = lab.wait_note("medium_failing", 60);
    eprintln!("medium_failing: {n}");
    assert_eq!(n["label"], la, "{n}");
    let msg = n["message"].as_str().unwrap();
    assert!(msg.contains("check or replace the disk"), "{n}");
    // Not retried: more intervals pass, no job runs, nothing more is notified.
    for _ in 0..3 {
        lab.advance("15m");
        std::thread::sleep(Duration::from_millis(300));
    }
    let s = lab.wait_for("the failing medium idle", 10, |s| idle(s, &la));
    assert!(
        warnings(&s).iter().any(|w| w.contains("I/O errors")),
        "{s:#}"
    );
    let out = lab.ctl(&["backup-now", &la]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("I/O errors"),
        "{}",
        text(&out.stderr)
    );
    // Another medium is served meanwhile.
    let lb = lab.label("OK");
    let img_b = lab.image("ok.img", &lb, "256M");
    let _dev_b = lab.insert(&img_b);
    lab.wait_first_monthly(&lb);
    let notes: Vec<_> = lab
        .notes()
        .into_iter()
        .filter(|n| n["label"] == la)
        .collect();
    assert_eq!(
        notes.len(),
        1,
        "one notification for the failing disk: {notes:#?}"
    );
    // Pulled and inserted again, still failing: tried again, and notified again, once.
    lab.pull(&_dev);
    lab.wait_for("the failing medium gone", 30, |s| {
        inserted(s).iter().all(|m| m["label"] != la.as_str())
    });
    // (An immutable file cannot be attached: attach it, then make it fail at once.)
    drop(failing);
    let out = std::process::Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let failing = Immutable::set(&img);
    lab.track(text(&out.stdout).trim());
    let t0 = Instant::now();
    let failing_notes = |lab: &Lab| {
        lab.notes()
            .into_iter()
            .filter(|n| n["label"] == la.as_str() && n["event"] == "medium_failing")
            .count()
    };
    while failing_notes(&lab) < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{:?}\n{}",
            lab.notes(),
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let notes: Vec<_> = lab
        .notes()
        .into_iter()
        .filter(|n| n["label"] == la.as_str())
        .collect();
    assert_eq!(notes.len(), 2, "{notes:#?}\n{}", lab.log());
    drop(failing);
}

/// udev repeats events for a device (`add`, `change`, and `change` again when a rule or a
/// tool asks): a disk refused is notified once per insertion.
#[test]
fn a_foreign_disk_is_notified_once_whatever_events_udev_sends() {
    let mut lab = Lab::new("");
    let img = lab.image("foreign.img", "SOMEONES-DISK", "64M");
    let dev = lab.insert(&img);
    wait_note_for(&lab, "SOMEONES-DISK", 30);
    for action in ["change", "add", "change"] {
        sh(std::process::Command::new("udevadm")
            .args(["trigger", "--settle", &format!("--action={action}")])
            .arg(&dev));
    }
    std::thread::sleep(Duration::from_millis(500));
    // (Only this disk's: loop devices of other processes on the machine are seen too.)
    let ours = |lab: &Lab| -> Vec<serde_json::Value> {
        lab.notes()
            .into_iter()
            .filter(|n| n["label"] == "SOMEONES-DISK")
            .collect()
    };
    let notes = ours(&lab);
    assert_eq!(notes.len(), 1, "{notes:#?}\nagent log:\n{}", lab.log());
    // Pulled and inserted again: a new insertion, notified again.
    lab.pull(&dev);
    let _dev = lab.insert(&img);
    let t0 = Instant::now();
    while ours(&lab).len() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", lab.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // A copy of an inserted medium (a cloned disk): one duplicate_medium notification, not
    // one per event.
    write(&lab.src.join("a.txt"), b"one");
    let la = lab.label("D");
    let img = lab.image("d.img", &la, "64M");
    let _d = lab.insert(&img);
    lab.wait_first_monthly(&la);
    let copy = lab.tmp.path().join("d-copy.img");
    sh(std::process::Command::new("cp")
        .args(["--sparse=always"])
        .arg(&img)
        .arg(&copy));
    let twin = lab.insert(&copy);
    let duplicates = |lab: &Lab| {
        lab.notes()
            .into_iter()
            .filter(|n| n["event"] == "duplicate_medium")
            .count()
    };
    let t0 = Instant::now();
    while duplicates(&lab) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "{}", lab.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    for action in ["change", "add", "change"] {
        sh(std::process::Command::new("udevadm")
            .args(["trigger", "--settle", &format!("--action={action}")])
            .arg(&twin));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(duplicates(&lab), 1, "{:#?}", lab.notes());
}

/// The field report: after `mount … && trayback media init … && umount` the agent did nothing
/// until the disk was re-plugged. Now `media init` tells the agent, which uses the disk once
/// it is unmounted.
#[test]
fn a_disk_enrolled_by_hand_while_the_agent_runs_is_used_without_a_replug() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    // A label auto-enrol does not match: the agent refuses the blank disk.
    let img = lab.image("m.img", "MANUAL", "256M");
    let dev = lab.insert(&img);
    wait_note_for(&lab, "MANUAL", 30);
    let mp = lab.tmp.path().join("by-hand");
    std::fs::create_dir(&mp).unwrap();
    sh(std::process::Command::new("mount").arg(&dev).arg(&mp));
    let la = lab.label("Manual");
    let out = std::process::Command::new(bin())
        .args(["media", "init"])
        .arg(&mp)
        .args(["--label", &la])
        .env("TRAYBACK_SOCKET", &lab.socket)
        .env("TRAYBACK_STATE_DIR", lab.state_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("once it is unmounted"),
        "{}",
        text(&out.stdout)
    );
    // Still mounted by hand: the agent waits.
    std::thread::sleep(Duration::from_millis(700));
    assert!(inserted(&lab.status()).is_empty());
    sh(std::process::Command::new("umount").arg(&mp));
    let t0 = Instant::now();
    lab.wait_first_monthly(&la);
    eprintln!("first monthly after the unmount: {:?}", t0.elapsed());
    let notes: Vec<_> = lab
        .notes()
        .into_iter()
        .filter(|n| n["label"] == "MANUAL" || n["label"] == la)
        .collect();
    assert_eq!(notes.len(), 1, "only the first refusal: {notes:#?}");
}

/// The field report: the rule marked the system disk a candidate too. Now only removable or
/// hot-pluggable disks are (in the tests, loop devices over lab images, by a test rule), and
/// with `agent.devices` unset the agent leaves every other disk alone.
#[test]
fn an_internal_disk_is_never_a_candidate_and_a_hot_pluggable_one_is() {
    let mut lab = Lab::custom(
        |l| {
            format!(
                "sources: [{src}]\nagent:\n  auto_enrol_label: '{prefix}*'\n  run_dir: {t}/run\n  state_dir: {t}/state\n  notify_command: {n}\n",
                src = l.src.display(),
                prefix = l.prefix,
                t = l.tmp.path().display(),
                n = l.tmp.path().join("notify.sh").display()
            )
        },
        &[],
    );
    write(&lab.src.join("a.txt"), b"one");
    // An "internal" disk: its image is not in a lab, so nothing marks it hot-pluggable.
    let internal_dir = tempfile::Builder::new()
        .prefix("tb-internal")
        .tempdir()
        .unwrap();
    let li = lab.label("In");
    let internal = internal_dir.path().join("internal.img");
    sh(std::process::Command::new("truncate")
        .args(["-s", "64M"])
        .arg(&internal));
    sh(std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", &li])
        .arg(&internal));
    let dev = lab.insert(&internal);
    let props = std::process::Command::new("udevadm")
        .args(["info", "--query=property", "--name", &dev])
        .output()
        .unwrap();
    let props = text(&props.stdout);
    assert!(props.contains(&format!("ID_FS_LABEL={li}")), "{props}");
    assert!(!props.contains("TRAYBACK_CANDIDATE"), "{props}");
    // A hot-pluggable one next to it is used.
    let la = lab.label("Hot");
    let img = lab.image("hot.img", &la, "64M");
    let _hot = lab.insert(&img);
    let s = lab.wait_first_monthly(&la);
    assert_eq!(inserted(&s).len(), 1, "{s:#}");
    assert!(
        lab.notes().iter().all(|n| n["label"] != li.as_str()),
        "{:?}",
        lab.notes()
    );
    lab.pull(&dev);
}
