//! The agent under attack (issue 15, from an attack on it): idle or endless clients on the
//! control socket, a host that cannot record a tree generation, I/O errors that are not the
//! medium's, a backup id and a reader at work, a stranger's dirty disk carrying our label.
//! Root + udevd only (the tests fail without them).

#[path = "support/lab.rs"]
mod lab;
#[path = "support/util.rs"]
mod util;
use lab::*;
use std::io::Write;
use std::time::{Duration, Instant};
use util::*;

fn agent_pid(lab: &Lab) -> u32 {
    lab.agent.as_ref().unwrap().id()
}

/// utime+stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

/// Finding: connections that never send a line are held forever (no timeout, no cap). Once
/// they use up the agent's descriptors (systemd's default soft limit is 1024; lowered here to
/// 128 to keep the test fast), `accept` fails with EMFILE on every poll and `answer::serve`
/// `continue`s at once: the agent spins a CPU and no `status`/`eject`/`backup-now` is answered
/// (nor can a job open files on a medium) until the idle clients go away.
#[test]
fn idle_connections_neither_lock_out_the_cli_nor_spin_the_agent() {
    let lab = Lab::new("");
    let pid = agent_pid(&lab);
    sh(std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg("--nofile=128:128"));
    let mut idle = Vec::new();
    for _ in 0..200 {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(&lab.socket) {
            idle.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(pid) - t0;
    // `status` with a bounded wait (the CLI itself would wait forever).
    let mut child = std::process::Command::new(bin())
        .args(["status", "--json"])
        .env("TRAYBACK_SOCKET", &lab.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t1 = Instant::now();
    let answered = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.success();
        }
        if t1.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(idle);
    // ticks are 1/100 s: 2 s of wall time, more than half a second of CPU is a spin.
    assert!(
        spent < 50,
        "the agent spent {spent} ticks of CPU in 2 s while idle clients held its descriptors"
    );
    assert!(
        answered,
        "status was not answered while idle clients were connected"
    );
}

/// Finding: a request line has no length limit (`lines().next_line()` in `answer::serve`):
/// a client that never sends a newline makes the agent buffer everything it sends.
#[test]
fn a_request_line_without_end_does_not_grow_the_agent_without_bound() {
    let lab = Lab::new("");
    let pid = agent_pid(&lab);
    let before = rss_kib(pid);
    let mut s = std::os::unix::net::UnixStream::connect(&lab.socket).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..256 {
        if s.write_all(&chunk).is_err() {
            break; // the agent closed the connection: good
        }
        sent += chunk.len();
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(pid);
    drop(s);
    assert!(
        after < before + 64 * 1024,
        "agent RSS {before} KiB -> {after} KiB after {} MiB without a newline",
        sent >> 20
    );
}

/// A source file system mounted for the test (XFS on a loop device, so it can be shut down:
/// every call on it then returns EIO, as a dying source disk or a broken network mount does).
struct SourceFs {
    mp: std::path::PathBuf,
}

impl SourceFs {
    fn new(dir: &std::path::Path) -> SourceFs {
        require(&["mkfs.xfs", "xfs_io"]);
        let img = dir.join("src-xfs.img");
        let mp = dir.join("srcfs");
        std::fs::create_dir_all(&mp).unwrap();
        sh(std::process::Command::new("truncate")
            .args(["-s", "300M"])
            .arg(&img));
        sh(std::process::Command::new("mkfs.xfs").arg("-q").arg(&img));
        sh(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mp));
        SourceFs { mp }
    }

    fn shut_down(&self) {
        sh(std::process::Command::new("xfs_io")
            .args(["-x", "-c", "shutdown"])
            .arg(&self.mp));
    }
}

impl Drop for SourceFs {
    fn drop(&mut self) {
        // `mount -o loop` detaches its loop device on the unmount.
        let _ = std::process::Command::new("umount").arg(&self.mp).status();
    }
}

/// Finding: `Error::is_medium_failing` is any EIO/EROFS, wherever it came from. A *source*
/// whose stat fails with EIO (`backup::resolve_sources`: `symlink_metadata(s).at(s)?`) fails
/// the job with an `Error::Io` the agent takes for the medium's: a healthy tray is notified
/// `medium_failing` ("check or replace the disk"), marked failing and never written again
/// until re-inserted — while the disk actually failing is the source's.
#[test]
fn an_io_error_on_a_source_does_not_mark_a_healthy_medium_failing() {
    let outer = tempfile::Builder::new()
        .prefix("trayback-att15src")
        .tempdir()
        .unwrap();
    require(&[]);
    // Made while no lab agent runs (an agent grabs any loop device it sees unmounted).
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let srcfs = SourceFs::new(outer.path());
    drop(guard);
    let data = srcfs.mp.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), b"one").unwrap();
    let mut lab = Lab::custom(
        |l| {
            replace_line(
                &l.default_config(""),
                "sources",
                &format!("sources: [{}]", data.display()),
            )
        },
        &[],
    );
    let la = lab.label("S");
    let img = lab.image("s.img", &la, "256M");
    let _dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    // The source disk dies.
    srcfs.shut_down();
    lab.advance("15m");
    let t0 = Instant::now();
    let ours = |lab: &Lab| -> Vec<serde_json::Value> {
        lab.notes()
            .into_iter()
            .filter(|n| n["label"] == la.as_str())
            .collect()
    };
    while ours(&lab).is_empty() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let notes = ours(&lab);
    let s = lab.status();
    drop(lab);
    drop(srcfs);
    assert!(
        notes.iter().all(|n| n["event"] != "medium_failing"),
        "a source's I/O error was notified as the medium failing: {notes:#?}\nstatus: {s:#}"
    );
}

/// Finding: `Medium::recover` returns early when a reader holds `locks/readers` ("readers at
/// work; recovery leaves deletions for later") *before* it moves `tree.next_id` past the id
/// of a backup killed mid-write. The next backup, made while a restore/list/verify reads the
/// medium, is given the killed backup's id again — beside that backup's leftover packs.
/// FORMAT.md and issue 15: backup ids are never reused.
#[test]
fn a_backup_id_is_not_reused_when_recovery_runs_while_a_reader_is_at_work() {
    let Some(env) = Env::new(MediumKind::Dir) else {
        return;
    };
    env.init();
    write(&env.src.join("a.txt"), b"one");
    let b1 = env.backup(&["--kind", "monthly"]);
    for i in 0..6 {
        write(
            &env.src.join(format!("big/f{i}.bin")),
            &bytes(100 + i, 16 << 20),
        );
    }
    let mut child = std::process::Command::new(bin())
        .args([
            "backup",
            "--medium",
            env.medium.to_str().unwrap(),
            "--source",
        ])
        .arg(&env.src)
        .args(["--kind", "micro"])
        .env("TRAYBACK_STATE_DIR", env.state_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once it has written a pack (one finished in store/, not only in tmp/).
    let killed_id = b1 + 1;
    let t0 = Instant::now();
    let tmp = env.medium.join("trayback/tmp");
    while std::fs::read_dir(&tmp).map(|r| r.count()).unwrap_or(0) == 0
        && t0.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(40));
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::Kill,
    );
    child.wait().unwrap();
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--medium", "{medium}", "--json"])).unwrap();
    if list.as_array().unwrap().len() != 1 {
        eprintln!("the kill came after the commit point; nothing shown");
        return;
    }
    // A reader at work (a restore, a list) while the next backup opens the medium.
    let readers = std::fs::File::open(env.medium.join("trayback/locks/readers")).unwrap();
    rustix::fs::flock(&readers, rustix::fs::FlockOperation::LockShared).unwrap();
    write(&env.src.join("c.txt"), b"three");
    let b2 = env.backup(&["--kind", "micro"]);
    drop(readers);
    assert!(
        b2 > killed_id,
        "backup {b2} reuses the id of backup {killed_id}, killed before its commit"
    );
}

/// Finding (by design of the early-pull fix, but a stranger's disk paid for it): a disk that
/// merely carried a label auto-enrol matches and a journal needing replay was mounted
/// read-write before anything proved it ours; the kernel replayed the stranger's journal —
/// arbitrary blocks of their file system — and the agent then refused the disk as another's.
/// Now only a file system this host enrolled a medium on is replayed: the stranger's disk is
/// refused, untouched, with one line saying to recover it where it was written.
#[test]
fn a_strangers_dirty_disk_with_our_label_is_refused_and_left_as_it_was() {
    let mut lab = Lab::new("");
    let la = lab.label("Z");
    let clean = lab.image("stranger-blank.img", &la, "64M");
    let crash = lab.tmp.path().join("stranger-dirty.img");
    let other_state = lab.tmp.path().join("other-host-state");
    lab.stop_agent();
    ext4_crash_image(&lab, &clean, &crash, |mp| {
        let out = std::process::Command::new(bin())
            .args(["media", "init", mp.to_str().unwrap(), "--label", "theirs"])
            .env("TRAYBACK_STATE_DIR", &other_state)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    });
    let before = sha(&crash);
    lab.start_agent();
    let dev = lab.insert(&crash);
    let n = wait_note_for(&lab, &la, 30);
    let t0 = Instant::now();
    while mounted(&dev) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let replayed = lab.log().contains("mounting read-write to recover it");
    lab.pull(&dev);
    let after = sha(&crash);
    assert_eq!(n["event"], "unknown_medium", "{n}");
    let msg = n["message"].as_str().unwrap();
    assert!(msg.contains("journal needs replaying"), "{n}");
    assert!(!msg.contains("--force"), "{n}");
    assert_eq!(
        before, after,
        "the stranger's disk was changed (journal replayed read-write: {replayed}); note: {n}"
    );
}

/// Finding (same root, another path): the host's own state directory going read-only (the
/// system disk remounted read-only after errors) makes `keyring::record_generation` fail with
/// EROFS inside the medium's commit; the agent takes it for the *tray* failing and notifies
/// `medium_failing` ("check or replace the disk") for a healthy tray.
#[test]
fn a_read_only_state_directory_does_not_mark_a_healthy_medium_failing() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    let la = lab.label("R");
    let img = lab.image("r.img", &la, "256M");
    let _dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    let state = lab.state_dir();
    sh(std::process::Command::new("mount")
        .args(["--bind"])
        .arg(&state)
        .arg(&state));
    sh(std::process::Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(&state));
    write(&lab.src.join("b.txt"), b"two");
    lab.advance("15m");
    let t0 = Instant::now();
    let ours = |lab: &Lab| -> Vec<serde_json::Value> {
        lab.notes()
            .into_iter()
            .filter(|n| n["label"] == la.as_str())
            .collect()
    };
    while ours(&lab).is_empty() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let notes = ours(&lab);
    let _ = std::process::Command::new("umount").arg(&state).status();
    assert!(
        notes.iter().all(|n| n["event"] != "medium_failing"),
        "the host's read-only state directory was notified as the tray failing: {notes:#?}\n{}",
        lab.log()
    );
}

/// Finding: `Medium::commit_backup` treats an error from `save_tree` as "not committed" and
/// removes `backups/<id>/` — but `save_tree` writes the medium's `tree.yaml` first and only
/// then records the generation in the host's state (`keyring::record_generation`). When that
/// second step fails (host state read-only or full), the medium's tree.yaml lists a backup
/// whose header directory was just deleted: the tray is left damaged.
#[test]
fn a_failed_host_generation_record_leaves_the_medium_consistent() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    let la = lab.label("G");
    let img = lab.image("g.img", &la, "256M");
    let dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    let state = lab.state_dir();
    sh(std::process::Command::new("mount")
        .args(["--bind"])
        .arg(&state)
        .arg(&state));
    sh(std::process::Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(&state));
    write(&lab.src.join("b.txt"), b"two");
    lab.advance("15m");
    let t0 = Instant::now();
    while !lab.notes().iter().any(|n| n["label"] == la.as_str())
        && t0.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.stop_agent();
    let _ = std::process::Command::new("umount").arg(&state).status();
    lab.pull(&dev);
    let mp = lab.mount_ro(&img, "check");
    let out = std::process::Command::new(bin())
        .args(["verify", "--medium"])
        .arg(&mp)
        .args(["--all", "--json"])
        .env("TRAYBACK_STATE_DIR", &state)
        .output()
        .unwrap();
    let _ = std::process::Command::new("umount").arg(&mp).status();
    assert!(
        out.status.success(),
        "the medium is damaged after a failed commit:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
