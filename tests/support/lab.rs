//! The agent tests' lab: real systemd-udevd with trayback's rule, real ext4 images on loop
//! devices, the real binary as the agent, notifications collected in a file. One scenario at
//! a time (agents see every loop device). Included by each agent test file.
#![allow(dead_code)]

use super::util::*;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Agents see every loop device: one scenario at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn tool(name: &str) -> bool {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .any(|d| Path::new(d).join(name).exists())
}

/// The agent tests need root and real tools: without them they fail, saying so (CI runs as
/// root, with what scripts/setup.sh installs); they never pass by skipping.
pub fn require(tools: &[&str]) {
    assert!(
        is_root(),
        "this test needs root (real loop devices, mounts and udevd); run it as root, as CI does"
    );
    for t in tools {
        assert!(
            tool(t),
            "this test needs {t} (scripts/setup.sh installs it); not found"
        );
    }
}

/// Start systemd-udevd if it is not running, and install our rule where udevd reads it.
pub fn udevd_with_rule() {
    require(&["udevadm", "losetup", "mkfs.ext4"]);
    let running = Command::new("pgrep")
        .args(["-x", "systemd-udevd"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !running {
        let bin = [
            "/lib/systemd/systemd-udevd",
            "/usr/lib/systemd/systemd-udevd",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists());
        let bin = bin.expect("the agent tests need systemd-udevd (scripts/setup.sh installs udev)");
        sh(Command::new(bin).arg("--daemon"));
        let t0 = Instant::now();
        while !Command::new("pgrep")
            .args(["-x", "systemd-udevd"])
            .output()
            .unwrap()
            .status
            .success()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "systemd-udevd did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fs::create_dir_all("/run/udev/rules.d").unwrap();
    fs::write(
        "/run/udev/rules.d/90-trayback.rules",
        include_str!("../../udev-rules/90-trayback.rules"),
    )
    .unwrap();
    // The shipped rule takes only removable or hot-pluggable disks: the lab's loop devices
    // are marked as such by a test rule.
    fs::write(
        "/run/udev/rules.d/89-trayback-test-loop.rules",
        include_str!("89-trayback-test-loop.rules"),
    )
    .unwrap();
    sh(Command::new("udevadm").args(["control", "--reload"]));
}

pub struct Lab {
    pub tmp: tempfile::TempDir,
    pub src: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub notes: PathBuf,
    pub prefix: String,
    pub agent: Option<Child>,
    pub agent_env: Vec<(String, String)>,
    pub devices: Vec<String>,
    /// Every device this lab has inserted, pulled or not.
    ours: Vec<String>,
    pub _serial: std::sync::MutexGuard<'static, ()>,
}

impl Lab {
    pub fn new(extra_config: &str) -> Lab {
        Lab::custom(|l| l.default_config(extra_config), &[])
    }

    /// The tests' usual config: this lab's source, loop devices only, auto-enrolment of
    /// labels with this run's prefix, state and notifications in the lab.
    pub fn default_config(&self, extra_config: &str) -> String {
        format!(
            "sources: [{src}]\nagent:\n  auto_enrol_label: '{prefix}*'\n  devices: ['/dev/loop*']\n  run_dir: {t}/run\n  state_dir: {t}/state\n  notify_command: {n}\n{extra_config}",
            src = self.src.display(),
            prefix = self.prefix,
            t = self.tmp.path().display(),
            n = self.tmp.path().join("notify.sh").display()
        )
    }

    /// A lab whose config is `config(&lab)` and whose agent gets `env`.
    pub fn custom(config: impl FnOnce(&Lab) -> String, env: &[(&str, &str)]) -> Lab {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        udevd_with_rule();
        let tmp = tempfile::Builder::new()
            .prefix("trayback-agent")
            .tempdir()
            .unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        let prefix = format!("TBT{}", std::process::id() % 100000);
        let notes = tmp.path().join("notes.jsonl");
        let notify = tmp.path().join("notify.sh");
        fs::write(&notify, format!("#!/bin/sh\ncat >> {}\n", notes.display())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&notify, fs::Permissions::from_mode(0o755)).unwrap();
        let socket = tmp.path().join("agent.sock");
        let mut lab = Lab {
            config: tmp.path().join("trayback.yaml"),
            tmp,
            src,
            socket,
            notes,
            prefix,
            agent: None,
            agent_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            devices: Vec::new(),
            ours: Vec::new(),
            _serial: serial,
        };
        fs::write(&lab.config, config(&lab)).unwrap();
        lab.start_agent();
        lab
    }

    /// The host state of this lab's agent (register, keys): never the real host's.
    pub fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    pub fn start_agent(&mut self) {
        // The agent starts by enumerating udev's database: it must not find a loop device a
        // test's own `mount -o loop` just released (its file system still recorded, the device
        // already detached: mounting it fails with EIO and the agent reports that disk).
        let _ = Command::new("udevadm")
            .args(["settle", "-t", "10"])
            .status();
        let log = fs::File::create(self.tmp.path().join("agent.log")).unwrap();
        let child = Command::new(bin())
            .args(["agent", "--test-clock", "--config"])
            .arg(&self.config)
            .arg("--socket")
            .arg(&self.socket)
            .env("TRAYBACK_LOG", "info")
            .env("TRAYBACK_STATE_DIR", self.state_dir())
            .envs(self.agent_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
        let t0 = Instant::now();
        while !self.socket.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the agent did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.tmp.path().join("agent.log")).unwrap_or_default()
    }

    pub fn image(&self, name: &str, label: &str, size: &str) -> PathBuf {
        let img = self.tmp.path().join(name);
        sh(Command::new("truncate").args(["-s", size]).arg(&img));
        sh(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label])
            .arg(&img));
        img
    }

    pub fn label(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// Attach an image: the kernel and udevd announce a new file system.
    pub fn insert(&mut self, img: &Path) -> String {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(img)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {}", text(&out.stderr));
        let dev = text(&out.stdout).trim().to_string();
        let _ = Command::new("udevadm")
            .args(["settle", "-t", "10"])
            .status();
        self.track(&dev);
        dev
    }

    /// Count `dev` (attached by the test itself) as one of this lab's trays: pulled at the
    /// end, and its notifications among [`Lab::notes`].
    pub fn track(&mut self, dev: &str) {
        self.devices.push(dev.to_string());
        self.ours.push(dev.to_string());
    }

    /// Pull a tray: the file system vanishes under the agent (as hotplug-lab.sh does).
    pub fn pull(&mut self, dev: &str) {
        let mounts = Command::new("findmnt")
            .args(["-rn", "-S", dev, "-o", "TARGET"])
            .output()
            .unwrap();
        for m in text(&mounts.stdout).lines() {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        sh(Command::new("losetup").args(["-d", dev]));
        let _ = Command::new("udevadm")
            .args(["settle", "-t", "10"])
            .status();
        self.devices.retain(|d| d != dev);
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("TRAYBACK_SOCKET", &self.socket)
            .output()
            .unwrap()
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.ctl(&["status", "--json"]);
        assert!(out.status.success(), "status: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn advance(&self, by: &str) {
        let out = self.ctl(&["test-clock", by]);
        assert!(out.status.success(), "test-clock: {}", text(&out.stderr));
    }

    /// Step the agent's wall clock (only it, as `date -s` does) by `by`: `-1d`, `2h`.
    pub fn step(&self, by: &str) {
        let out = self.ctl(&["test-clock", "--step", by]);
        assert!(
            out.status.success(),
            "test-clock --step: {}",
            text(&out.stderr)
        );
    }

    /// Poll the status until `pred` holds.
    pub fn wait_for(
        &self,
        what: &str,
        secs: u64,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            let s = self.status();
            if pred(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}; status {s:#}\nagent log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until medium `label` has its first monthly and the agent is idle on it.
    pub fn wait_first_monthly(&self, label: &str) -> serde_json::Value {
        self.wait_for("the first monthly", 30, |s| {
            newest(s, label, "monthly").is_some() && idle(s, label)
        })
    }

    /// The agent's notifications, but those about a device this lab never inserted: the labs
    /// of one test binary run side by side, and each agent watches every `/dev/loop*` (one
    /// lab's tray is an unknown disk to another's agent).
    pub fn notes(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(&self.notes)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|n| {
                n["device"]
                    .as_str()
                    .is_none_or(|d| self.ours.iter().any(|o| o == d))
            })
            .collect()
    }

    pub fn wait_note(&self, event: &str, secs: u64) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            if let Some(n) = self.notes().into_iter().find(|n| n["event"] == event) {
                return n;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "no {event} notification; got {:?}\nagent log:\n{}",
                self.notes(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Mount an image (detached from the agent) read-only somewhere of our own.
    pub fn mount_ro(&self, img: &Path, name: &str) -> PathBuf {
        self.mount(img, name, "loop,ro,noload")
    }

    /// Mount an image read-write (verify writes the tree's verified flags).
    pub fn mount_rw(&self, img: &Path, name: &str) -> PathBuf {
        self.mount(img, name, "loop")
    }

    pub fn mount(&self, img: &Path, name: &str, options: &str) -> PathBuf {
        let mp = self.tmp.path().join(name);
        fs::create_dir_all(&mp).unwrap();
        sh(Command::new("mount")
            .args(["-o", options])
            .arg(img)
            .arg(&mp));
        mp
    }

    /// Run trayback as a command of this host would (this lab's state and agent socket),
    /// with host state `state`.
    pub fn run_as(&self, state: &Path, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("TRAYBACK_STATE_DIR", state)
            .env("TRAYBACK_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Run trayback as a command of this host (its state, its agent).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_as(&self.state_dir(), args)
    }

    /// Start trayback as a command of this host, its output discarded (to be killed).
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new(bin())
            .args(args)
            .env("TRAYBACK_STATE_DIR", self.state_dir())
            .env("TRAYBACK_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// `trayback eject`, which must succeed.
    pub fn eject(&self) {
        let out = self.ctl(&["eject"]);
        assert!(out.status.success(), "eject: {}", text(&out.stderr));
    }

    /// [`Lab::run`], and it must succeed: its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "trayback {args:?}: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub fn restore_latest(&self, medium: &Path, name: &str) -> PathBuf {
        let to = self.tmp.path().join(name);
        self.cli(&[
            "restore",
            "--medium",
            medium.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ]);
        to.join(self.src.strip_prefix("/").unwrap())
    }
}

impl Lab {
    /// Stop the agent (SIGTERM, then SIGKILL after 30 s).
    pub fn stop_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&c),
                rustix::process::Signal::Term,
            );
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_file(&self.socket);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_agent();
        let mounts = Command::new("findmnt")
            .args(["-rn", "-o", "TARGET"])
            .output()
            .unwrap();
        for m in text(&mounts.stdout)
            .lines()
            .filter(|m| m.starts_with(self.tmp.path().to_str().unwrap()))
        {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        for d in self.devices.drain(..) {
            let _ = Command::new("losetup").args(["-d", &d]).status();
        }
    }
}

pub fn inserted(s: &serde_json::Value) -> Vec<serde_json::Value> {
    s["inserted"].as_array().cloned().unwrap_or_default()
}

pub fn newest(s: &serde_json::Value, label: &str, kind: &str) -> Option<u64> {
    inserted(s)
        .into_iter()
        .find(|m| m["label"] == label)
        .and_then(|m| m["newest"][kind]["id"].as_u64())
}

pub fn idle(s: &serde_json::Value, label: &str) -> bool {
    inserted(s)
        .iter()
        .any(|m| m["label"] == label && m["job"].is_null())
}

/// 384 MiB of new incompressible data (8 files), so the next backup takes a while.
pub fn write_big(src: &Path, seed: u64) {
    for i in 0..8 {
        write(
            &src.join(format!("big-{i}.bin")),
            &bytes(seed + i, 48 << 20),
        );
    }
}

pub fn sha(p: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(p).unwrap()))
}

/// The backups on `medium`, read with `lab`'s host keys (media are encrypted by default).
pub fn list(lab: &Lab, medium: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(bin())
        .args(["list", "--json", "--medium"])
        .arg(medium)
        .env("TRAYBACK_STATE_DIR", lab.state_dir())
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Make `crash` a crash image of the clean, unmounted ext4 image `clean`: its journal holds one
/// committed, never checkpointed transaction that makes the file system what `change` makes of
/// it on a read-write mount, while every block outside the journal but the superblock (which
/// gains `needs_recovery`) is still `clean`'s. So a `noload` mount shows `clean` and a mount
/// that replays the journal shows the change.
///
/// Built offline, without kernel timing: `change` runs on a scratch copy that is then cleanly
/// unmounted; the blocks that copy changed (but the journal's own and the superblock's) are
/// written into the journal of a second copy of `clean` with debugfs (`journal_open`,
/// `journal_write`, `journal_close`, which sets `needs_recovery`). Copying a mounted image
/// instead catches the kernel's asynchronous write-back of committed metadata at whatever
/// point it has reached: some, all or none of the blocks in place.
pub fn ext4_crash_image(lab: &Lab, clean: &Path, crash: &Path, change: impl FnOnce(&Path)) {
    let scratch = lab.tmp.path().join("crash-changed.img");
    sh(Command::new("cp")
        .args(["--sparse=always"])
        .arg(clean)
        .arg(&scratch));
    let mp = lab.mount_rw(&scratch, "crash-prep");
    change(&mp);
    sh(Command::new("umount").arg(&mp));

    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(clean)
        .output()
        .unwrap();
    assert!(out.status.success(), "dumpe2fs: {}", text(&out.stderr));
    let block_size: usize = text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no block size from dumpe2fs:\n{}", text(&out.stdout)));
    let out = Command::new("debugfs")
        .args(["-R", "blocks <8>"])
        .arg(clean)
        .output()
        .unwrap();
    let journal: std::collections::HashSet<usize> = text(&out.stdout)
        .split_whitespace()
        .map(|b| {
            b.parse()
                .unwrap_or_else(|_| panic!("debugfs listed the journal's blocks as {b:?}"))
        })
        .collect();
    assert!(
        !journal.is_empty(),
        "no journal blocks from debugfs: {}",
        text(&out.stderr)
    );
    // The block holding the primary superblock (byte 1024): debugfs writes it itself.
    let superblock = 1024 / block_size;

    let (before, after) = (fs::read(clean).unwrap(), fs::read(&scratch).unwrap());
    assert_eq!(before.len(), after.len());
    let mut blocks = Vec::new();
    let mut contents = Vec::new();
    for (i, (b, a)) in before
        .chunks(block_size)
        .zip(after.chunks(block_size))
        .enumerate()
    {
        if b != a && i != superblock && !journal.contains(&i) {
            blocks.push(i.to_string());
            contents.extend_from_slice(a);
        }
    }
    assert!(!blocks.is_empty(), "the change changed no block");
    fs::remove_file(&scratch).unwrap();
    let data = lab.tmp.path().join("crash-transaction.bin");
    fs::write(&data, &contents).unwrap();
    let script = lab.tmp.path().join("crash-transaction.debugfs");
    fs::write(
        &script,
        format!(
            "journal_open\njournal_write -b {} {}\njournal_close\n",
            blocks.join(","),
            data.display()
        ),
    )
    .unwrap();

    sh(Command::new("cp")
        .args(["--sparse=always"])
        .arg(clean)
        .arg(crash));
    // debugfs reports a failed command on its output, not in its exit status.
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(crash)
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let complaints: Vec<&str> = said.lines().filter(|l| !l.starts_with("debugfs")).collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "debugfs could not write the crash transaction:\n{said}"
    );
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(crash)
        .output()
        .unwrap();
    let header = text(&out.stdout);
    assert!(
        header
            .lines()
            .any(|l| l.starts_with("Filesystem features:") && l.contains("needs_recovery")),
        "the crash image does not need recovery:\n{header}"
    );
}

/// Insert `img` and expect it recognised as medium `label` with at least `backups`
/// committed backups, the first of them a monthly that verifies; then eject and pull it.
pub fn expect_recognised(lab: &mut Lab, img: &Path, label: &str, backups: u64) {
    let dev = lab.insert(img);
    let s = lab.wait_for("the pulled copy recognised", 30, |s| {
        inserted(s)
            .iter()
            .any(|m| m["label"] == label && m["backups"].as_u64() >= Some(backups.max(1)))
            && idle(s, label)
    });
    assert!(newest(&s, label, "monthly").is_some(), "{s:#}");
    lab.eject();
    lab.pull(&dev);
    lab.wait_for("the medium gone", 30, |s| inserted(s).is_empty());
    let bad: Vec<_> = lab
        .notes()
        .into_iter()
        .filter(|n| n["event"] != "safe_to_remove" && n["label"] == label)
        .collect();
    assert!(bad.is_empty(), "{bad:#?}\nagent log:\n{}", lab.log());
}

pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Is anything mounted from `dev`?
pub fn mounted(dev: &str) -> bool {
    let out = Command::new("findmnt")
        .args(["-rn", "-S", dev, "-o", "TARGET"])
        .output()
        .unwrap();
    !text(&out.stdout).trim().is_empty()
}

/// Wait for one notification about the disk labelled `label`.
pub fn wait_note_for(lab: &Lab, label: &str, secs: u64) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        if let Some(n) = lab.notes().into_iter().find(|n| n["label"] == label) {
            return n;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "no notification for {label}; got {:?}\nagent log:\n{}",
            lab.notes(),
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Insert a disk the agent must refuse: its one notification, once the agent has let go of
/// the disk (unmounted), which is then pulled.
pub fn insert_refused(lab: &mut Lab, img: &Path, label: &str) -> serde_json::Value {
    let dev = lab.insert(img);
    let n = wait_note_for(lab, label, 30);
    let t0 = Instant::now();
    while mounted(&dev) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.pull(&dev);
    n
}

/// Borrow medium `label` over the raw socket (`lend`): the agent's answer, and the
/// connection that keeps the lend (dropping it ends the lend).
pub fn lend_raw(lab: &Lab, label: &str) -> (serde_json::Value, std::os::unix::net::UnixStream) {
    use std::io::{BufRead, Write};
    let mut sock = std::os::unix::net::UnixStream::connect(&lab.socket).unwrap();
    sock.write_all(format!("{{\"cmd\":\"lend\",\"medium\":\"{label}\"}}\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(&sock)
        .read_line(&mut answer)
        .unwrap();
    (serde_json::from_str(&answer).unwrap(), sock)
}

/// A stranger's stick: an ext4 image holding a `trayback/` enrolled by another host's keys
/// (made with `mkfs.ext4 -d`, never mounted here), its media.yaml then changed by `edit`.
pub fn stranger(
    lab: &Lab,
    name: &str,
    media_label: &str,
    plaintext: bool,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let root = lab.tmp.path().join(format!("{name}-root"));
    fs::create_dir(&root).unwrap();
    let out = Command::new(bin())
        .args(["media", "init"])
        .arg(&root)
        .args(["--label", media_label])
        .args(plaintext.then_some("--plaintext"))
        .env("TRAYBACK_STATE_DIR", lab.tmp.path().join("stranger-state"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let media = root.join("trayback/media.yaml");
    fs::write(&media, edit(fs::read_to_string(&media).unwrap())).unwrap();
    let img = lab.tmp.path().join(name);
    sh(Command::new("truncate").args(["-s", "64M"]).arg(&img));
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", &format!("STRANGER-{media_label}"), "-d"])
        .arg(&root)
        .arg(&img));
    img
}

pub fn replace_line(text_: &str, key: &str, with: &str) -> String {
    text_
        .lines()
        .map(|l| {
            if l.starts_with(key) {
                with.to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
