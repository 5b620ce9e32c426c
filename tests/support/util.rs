//! Test harness: runs the real `trayback` binary in temporary directories, on a plain
//! directory medium or (as root) on a real ext4 file system on a loop device.
//!
//! The tests' helpers all live in `tests/support/` and are included by path
//! (`#[path = "support/util.rs"] mod util;`), so none is a test binary of its own: this
//! harness; `lab.rs`, the agent tests' lab (udevd, loop devices, the agent; it uses this
//! one as `super::util`); `pare.rs`, the paring tests' helpers.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trayback"))
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediumKind {
    Dir,
    Ext4,
}

/// A temporary workspace: `src/` to back up, a medium, and room for restores.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub src: PathBuf,
    pub medium: PathBuf,
    pub kind: MediumKind,
    image: Option<PathBuf>,
}

impl Env {
    /// `None` when the kind cannot be had here (ext4 needs root, mount and mkfs.ext4).
    pub fn new(kind: MediumKind) -> Option<Env> {
        Env::with_size(kind, "768M")
    }

    pub fn with_size(kind: MediumKind, size: &str) -> Option<Env> {
        let tmp = tempfile::Builder::new()
            .prefix("trayback-test")
            .tempdir()
            .unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        let medium = tmp.path().join("medium");
        fs::create_dir(&medium).unwrap();
        let mut image = None;
        if kind == MediumKind::Ext4 {
            if !is_root()
                || !Path::new("/sbin/mkfs.ext4").exists()
                    && !Path::new("/usr/sbin/mkfs.ext4").exists()
            {
                eprintln!("SKIPPED: an ext4 loop-device medium needs root and mkfs.ext4");
                return None;
            }
            let img = tmp.path().join("medium.img");
            sh(Command::new("truncate").args(["-s", size]).arg(&img));
            sh(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "TRAYBACK-TEST"])
                .arg(&img));
            sh(Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&medium));
            image = Some(img);
        }
        Some(Env {
            tmp,
            src,
            medium,
            kind,
            image,
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// This test's host state (the per-medium keys): never the real host's.
    pub fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// Run trayback with `args`; `{medium}` and `{src}` are replaced.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_as(&self.state_dir(), args)
    }

    /// Run trayback as [`Env::run`] does, but as a host whose state directory is `state`
    /// (another machine: one that never saw the medium).
    pub fn run_as(&self, state: &Path, args: &[&str]) -> Output {
        self.command_as(state, args).output().unwrap()
    }

    /// The command [`Env::run_as`] runs, not started.
    pub fn command_as(&self, state: &Path, args: &[&str]) -> Command {
        let args: Vec<String> = in_test_tree_format(args)
            .iter()
            .map(|a| {
                a.replace("{medium}", self.medium.to_str().unwrap())
                    .replace("{src}", self.src.to_str().unwrap())
            })
            .collect();
        let mut cmd = Command::new(bin());
        cmd.args(&args)
            .env("TRAYBACK_LOG", "warn")
            .env("TRAYBACK_STATE_DIR", state)
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Run `trayback args` to the end, measured (`wait4`): its exit code, peak RSS in MiB,
    /// seconds and standard error.
    pub fn measured(&self, args: &[&str]) -> (Option<i32>, u64, f64, String) {
        let log = self.path("cmd.err");
        let t = std::time::Instant::now();
        let u = run_measured(
            self.command_as(&self.state_dir(), args)
                .stdout(std::process::Stdio::null())
                .stderr(fs::File::create(&log).unwrap()),
        );
        (
            u.code,
            u.peak_kib / 1024,
            t.elapsed().as_secs_f64(),
            fs::read_to_string(&log).unwrap_or_default(),
        )
    }

    /// The loop device's image file, for an ext4 medium.
    pub fn image(&self) -> Option<&Path> {
        self.image.as_deref()
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "trayback {args:?} failed ({}):\n{}\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Enrol the medium with the shipped defaults (encrypted); returns its recovery key.
    pub fn init(&self) -> String {
        let out = self.ok(&["media", "init", "{medium}", "--label", "Test", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        if let Some(want) = old_tree_format() {
            let shown = self.ok(&["media", "show", "{medium}", "--json"]);
            let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
            assert_eq!(shown["tree_format"].to_string(), want, "{shown}");
        }
        v["recovery_key"].as_str().unwrap_or_default().to_string()
    }

    /// Enrol the medium in plaintext (`--plaintext`): for tests that read or forge records.
    pub fn init_plaintext(&self) {
        self.ok(&[
            "media",
            "init",
            "{medium}",
            "--label",
            "Test",
            "--plaintext",
        ]);
        if let Some(want) = old_tree_format() {
            let tree = std::fs::read_to_string(self.medium.join("trayback/tree.yaml")).unwrap();
            assert!(tree.starts_with(&format!("format: {want}\n")), "{tree}");
        }
    }

    /// A backup of `src` with the given extra args, as it went.
    pub fn try_backup(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["backup", "--medium", "{medium}", "--source", "{src}"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Back up `src` with the given extra args; returns the new backup's id.
    pub fn backup(&self, extra: &[&str]) -> u64 {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = self.try_backup(&args);
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 3,
            "backup failed ({code}):\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["backup"]["id"].as_u64().unwrap()
    }

    /// Backup `id`'s header (read through the library: it may be sealed), as JSON.
    pub fn header(&self, id: u64) -> serde_json::Value {
        use trayback::medium::{Medium, Unlock};
        let state = self.state_dir();
        let m = Medium::open_read(&self.medium, &Unlock::host(&state)).unwrap();
        serde_json::to_value(m.header(trayback::ids::BackupId(id)).unwrap()).unwrap()
    }

    /// Total bytes of every file under the medium's `trayback/`.
    pub fn medium_bytes(&self) -> u64 {
        dir_bytes(&self.medium.join("trayback"))
    }

    /// Run `restore --backup ID --to TARGET` (TARGET may already exist); its output.
    pub fn try_restore(&self, id: u64, target: &Path) -> Output {
        self.run(&[
            "restore",
            "--medium",
            "{medium}",
            "--backup",
            &id.to_string(),
            "--to",
            target.to_str().unwrap(),
        ])
    }

    /// Restore backup `id` into a fresh directory; returns where the source landed.
    pub fn restore(&self, id: u64, name: &str) -> PathBuf {
        let to = self.path(name);
        let out = self.try_restore(id, &to);
        assert!(
            out.status.success(),
            "restore of {id} failed:
{}
{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        to.join(self.src.strip_prefix("/").unwrap())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.image.is_some() {
            let _ = Command::new("umount").arg(&self.medium).status();
        }
    }
}

/// What a finished child used, from `wait4` (the kernel's count): its exit code (`None`
/// if it did not exit), peak RSS in KiB, and CPU time in user and in system mode.
pub struct Usage {
    pub code: Option<i32>,
    pub peak_kib: u64,
    pub user: std::time::Duration,
    pub system: std::time::Duration,
}

/// Run `cmd` to the end (its stdout and stderr as `cmd` says) and measure it with `wait4`.
// The child is reaped by `wait4`, which `Child` does not know of.
#[allow(clippy::zombie_processes)]
pub fn run_measured(cmd: &mut Command) -> Usage {
    let child = cmd.spawn().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, filled by wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into the two locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4 failed");
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec as u64)
            + std::time::Duration::from_micros(t.tv_usec as u64)
    };
    Usage {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        peak_kib: usage.ru_maxrss as u64,
        user: tv(usage.ru_utime),
        system: tv(usage.ru_stime),
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

/// The value of top-level field `field` in `medium`'s `trayback/media.yaml`.
pub fn media_field(medium: &Path, field: &str) -> String {
    let t = fs::read_to_string(medium.join("trayback/media.yaml")).unwrap();
    let prefix = format!("{field}: ");
    t.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap()
        .trim()
        .to_string()
}

/// Run `tests/independent_reader.py` (a reader of encrypted media written from FORMAT.md
/// alone): the file at `path` in the newest backup of `medium`, unlocked with the recovery key
/// in `key_file`, written to `out`.
pub fn independent_reader(medium: &Path, key_file: &Path, path: &Path, out: &Path) -> Output {
    Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent_reader.py"))
        .arg(medium)
        .arg(key_file)
        .arg(path)
        .arg(out)
        .output()
        .unwrap()
}

/// Run and require success; returns stdout.
pub fn sh(cmd: &mut Command) -> String {
    let mut out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    // Every test's agent identifies every loop device (`devices: ['/dev/loop*']`), holding
    // it exclusively, read-only in the kernel, for a moment (a second or two; at most ten
    // for an XFS log check): a mount of a new loop device may meet that hold. It ends, so
    // a mount is tried again for a while.
    let t0 = std::time::Instant::now();
    while !out.status.success()
        && cmd.get_program() == "mount"
        && text(&out.stderr).contains("already mounted or mount point busy")
        && t0.elapsed() < std::time::Duration::from_secs(15)
    {
        std::thread::sleep(std::time::Duration::from_millis(250));
        out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    }
    assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

pub fn dir_bytes(p: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        n += if md.is_dir() {
            dir_bytes(&e.path())
        } else {
            md.len()
        };
    }
    n
}

/// Every file under `p` with its content hash, for before/after snapshots of a medium.
pub fn fingerprint(p: &Path) -> Vec<(PathBuf, u64, u64)> {
    use std::hash::{Hash, Hasher};
    let mut out = Vec::new();
    fn go(p: &Path, out: &mut Vec<(PathBuf, u64, u64)>) {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for n in names {
            let md = fs::symlink_metadata(&n).unwrap();
            if md.is_dir() {
                out.push((n.clone(), 0, 0));
                go(&n, out);
            } else {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                fs::read(&n).unwrap_or_default().hash(&mut h);
                out.push((n, md.len(), h.finish()));
            }
        }
    }
    go(p, &mut out);
    out
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap();
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(name).unwrap();
    rustix::fs::lsetxattr(p, c.as_c_str(), value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// A POSIX access ACL in the kernel's xattr form: owner rw, user `uid` r, group r, mask r,
/// other none.
pub fn acl_user_read(uid: u32) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, uid),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// A tree with every kind of file trayback handles.
pub fn make_rich_tree(src: &Path) {
    write(&src.join("docs/readme.txt"), b"hello, world\n");
    write(&src.join("docs/report.bin"), &bytes(1, 700_000));
    write(&src.join("empty"), b"");
    write(&src.join("deep/a/b/c/d/file"), &bytes(2, 1000));
    fs::create_dir_all(src.join("emptydir")).unwrap();
    symlink("docs/readme.txt", src.join("link-to-readme")).unwrap();
    symlink("/nonexistent/target", src.join("dangling")).unwrap();
    fs::hard_link(src.join("docs/readme.txt"), src.join("hardlink-to-readme")).unwrap();
    // A sparse file: 1 MiB of data, a 20 MiB hole, 4 KiB of data.
    let f = fs::File::create(src.join("sparse.img")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&bytes(3, 1 << 20), 0).unwrap();
    f.write_all_at(&bytes(4, 4096), 21 << 20).unwrap();
    drop(f);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    if is_root() {
        let dev = rustix::fs::makedev(1, 3);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("null-dev"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            dev,
        )
        .unwrap();
        std::os::unix::fs::lchown(src.join("docs/report.bin"), Some(1234), Some(5678)).unwrap();
    }
    set_xattr(&src.join("docs/readme.txt"), "user.comment", b"important");
    set_xattr(&src.join("docs"), "user.dirnote", &[0, 1, 2, 255]);
    set_xattr(
        &src.join("docs/report.bin"),
        "system.posix_acl_access",
        &acl_user_read(4242),
    );
    fs::set_permissions(src.join("deep/a"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(src.join("empty"), fs::Permissions::from_mode(0o4755)).unwrap();
    // Non-UTF-8 name.
    write(
        &src.join(OsStr::new(std::str::from_utf8(b"caf\xc3\xa9").unwrap())),
        b"utf8 name",
    );
    use std::os::unix::ffi::OsStrExt;
    write(&src.join(OsStr::from_bytes(b"latin1-\xe9")), b"latin1 name");
}

/// Copy a tree exactly (content, modes, owners, times, xattrs, hard links, holes).
pub fn snapshot(src: &Path, dest: &Path) {
    sh(Command::new("cp")
        .args(["-a", "--sparse=always"])
        .arg(src)
        .arg(dest));
}

/// Assert that two trees are identical.
pub fn assert_same(a: &Path, b: &Path) {
    let diffs = trayback::compare::trees(
        a,
        b,
        trayback::compare::Options {
            owner: is_root(),
            ..Default::default()
        },
    );
    assert!(
        diffs.is_empty(),
        "{} differs from {}:\n{}",
        a.display(),
        b.display(),
        diffs.join("\n")
    );
}

/// Generate a `#[test]` for each medium kind from a `fn(&Env)` body.
#[macro_export]
macro_rules! on_both_media {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn on_directory() {
                let env = Env::new(MediumKind::Dir).unwrap();
                ($body)(&env);
            }
            #[test]
            fn on_ext4_loop_device() {
                if let Some(env) = Env::new(MediumKind::Ext4) {
                    ($body)(&env);
                }
            }
        }
    };
}

/// Commit a copy of backup 1 whose listing of `src` gains the entries `extra` returns, as a
/// new backup; `extra` may store listings of its own with [`put_listing`]. Returns its id.
pub fn craft_backup(
    env: &Env,
    extra: impl FnOnce(&trayback::medium::BackupWriter) -> Vec<trayback::listing::Entry>,
) -> u64 {
    use trayback::ids::BackupId;
    use trayback::listing::Listing;
    use trayback::medium::Medium;
    use trayback::store::pack::BlobKind;
    let mut m = Medium::open_write(&env.medium, 3, &env.state_dir()).unwrap();
    let h1 = m.header(BackupId(1)).unwrap();
    let w = m.begin_backup(false).unwrap();
    let id = w.id();
    // Rebuild the path from / down to src with the extra entries in src's listing.
    let comps: Vec<_> = env
        .src
        .components()
        .skip(1)
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut chain = vec![m.listing(&h1.root).unwrap()];
    for c in &comps {
        let e = chain
            .last()
            .unwrap()
            .get(std::os::unix::ffi::OsStrExt::as_bytes(c.as_os_str()))
            .unwrap()
            .clone();
        chain.push(m.listing(&e.subtree.unwrap()).unwrap());
    }
    let mut entries = chain.pop().unwrap().entries;
    entries.extend(extra(&w));
    let mut child = w
        .put(BlobKind::Listing, &Listing::new(entries).encode())
        .unwrap();
    for c in comps.iter().rev() {
        let mut l = chain.pop().unwrap();
        let name = std::os::unix::ffi::OsStrExt::as_bytes(c.as_os_str()).to_vec();
        l.entries
            .iter_mut()
            .find(|e| e.name.0 == name)
            .unwrap()
            .subtree = Some(child);
        child = w.put(BlobKind::Listing, &l.encode()).unwrap();
    }
    let staged = w.finish().unwrap();
    drop(w);
    let mut h = h1.clone();
    h.id = id;
    h.root = child;
    h.packs = staged.packs.clone();
    // The crafted entries are not counted one by one: a bound generous enough for any of them
    // (a walk never visits more entries than the header counts).
    h.counts.files += 1_000_000;
    m.commit_backup(staged, &h).unwrap();
    m.mark_verified(id, true).unwrap();
    id.0
}

/// Store a listing of `entries` with the writer [`craft_backup`] hands out; its id.
pub fn put_listing(
    w: &trayback::medium::BackupWriter,
    entries: Vec<trayback::listing::Entry>,
) -> trayback::ids::BlockId {
    w.put(
        trayback::store::pack::BlobKind::Listing,
        &trayback::listing::Listing::new(entries).encode(),
    )
    .unwrap()
}

/// `n` words from a small vocabulary, deterministic in `seed`: compressible text.
pub fn words(seed: u64, n: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "tray", "block", "pack", "frame", "verify", "the", "of", "restore",
    ];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut out = Vec::with_capacity(n * 6);
    for _ in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(WORDS[(x >> 61) as usize].as_bytes());
        out.push(b' ');
    }
    out
}

/// The tree format scripts/test.sh asks new media to have when it runs tests again on media of
/// an older format (`TRAYBACK_TREE_FORMAT`); None: the newest.
fn old_tree_format() -> Option<String> {
    std::env::var("TRAYBACK_TREE_FORMAT").ok()
}

/// `args` of a trayback command, with `--tree-format` added to a `media init` that names no
/// format of its own (neither the flag nor a `--config`) when scripts/test.sh asks for media
/// of an older format: every medium a test makes through [`Env`] (or this) has it.
pub fn in_test_tree_format(args: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let names_one = args
        .iter()
        .any(|a| a.starts_with("--tree-format") || a.starts_with("--config"));
    if let (["media", "init", ..], false, Some(f)) = (args, names_one, old_tree_format()) {
        out.extend(["--tree-format".to_string(), f]);
    }
    out
}
