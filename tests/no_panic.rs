//! Nothing on a medium may make trayback panic, hang or use unbounded memory (issue 9, item 4).
//!
//! Every reading command runs as the real binary under GNU `time` (which reports the child's
//! peak RSS from `wait4`), in its own process group, killed after [`TIMEOUT`]: a panic (exit
//! 101), a signal (an abort, a stack overflow), a hang or a peak RSS over [`MAX_RSS_MIB`]
//! fails the test. The property test damages one file of a real small medium at random; the
//! regression tests are the attacks reported, one each, named after what broke.
//!
//! `TRAYBACK_BIN=/path/to/old/trayback cargo test --test no_panic` runs the same attacks on
//! another build (the media are still made by this one), to see them work there.

#[path = "support/util.rs"]
mod util;

use proptest::prelude::*;
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use trayback::crypt::Crypt;
use trayback::ids::{BackupId, BlockId, PackId};
use trayback::index::{self, Step};
use trayback::listing::{Bytes, Entry, EntryKind, Listing, MAX_LISTING_LEN};
use trayback::medium::{BackupWriter, Medium, Staged};
use trayback::store::chunk::MIN_BLOCK;
use trayback::store::pack::{self, BlobKind, Encoding, PackWriter};
use trayback::store::MAX_BLOCK;
use util::*;

/// A command still running after this long is a hang.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The most memory a command may use on a small damaged medium.
const MAX_RSS_MIB: u64 = 200;

/// How one bounded run of the binary ended.
#[derive(Debug)]
struct Ran {
    args: Vec<String>,
    code: Option<i32>,
    signal: Option<i32>,
    max_rss_kib: u64,
    elapsed: Duration,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// No panic, no signal, peak RSS under `mib`; returns self for more checks.
    fn sane(&self, mib: u64) -> &Ran {
        assert!(
            self.signal.is_none(),
            "{:?} killed by signal {:?}:\n{}",
            self.args,
            self.signal,
            self.stderr
        );
        assert_ne!(
            self.code,
            Some(101),
            "{:?} panicked:\n{}",
            self.args,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "{:?} panicked:\n{}",
            self.args,
            self.stderr
        );
        assert!(
            self.max_rss_kib < mib * 1024,
            "{:?} peaked at {} MiB RSS (limit {mib} MiB)",
            self.args,
            self.max_rss_kib / 1024
        );
        self
    }

    fn failed(&self) -> &Ran {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "{:?} succeeded on a hostile medium:\n{}",
            self.args,
            self.stdout
        );
        self
    }

    fn mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }
}

/// Run trayback with `args` under `time`, killing it (and failing) after `timeout`.
fn run_bounded(args: &[String], timeout: Duration) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let (out, err, stat) = (
        dir.path().join("out"),
        dir.path().join("err"),
        dir.path().join("stat"),
    );
    let t0 = Instant::now();
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "%M %x", "-o"])
        .arg(&stat)
        .arg(std::env::var_os("TRAYBACK_BIN").map_or_else(bin, PathBuf::from))
        .args(args)
        .env("TRAYBACK_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .expect("GNU time (/usr/bin/time) runs; scripts/setup.sh installs it");
    let pid = rustix::process::Pid::from_child(&child);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t0.elapsed() > timeout {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::Kill);
            let _ = child.wait();
            panic!("trayback {args:?} still running after {timeout:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = t0.elapsed();
    let (code, signal, max_rss_kib) = time_stat(&stat);
    let head = |p: &Path| {
        let mut b = fs::read(p).unwrap_or_default();
        b.truncate(1 << 20);
        String::from_utf8_lossy(&b).into_owned()
    };
    Ran {
        args: args.to_vec(),
        code,
        signal,
        max_rss_kib,
        elapsed,
        stdout: head(&out),
        stderr: head(&err),
    }
}

/// What GNU time wrote to `stat` (`-f "%M %x"`, and a line naming a terminating signal):
/// the exit code (none when killed), the signal, and the peak RSS in KiB.
fn time_stat(stat: &Path) -> (Option<i32>, Option<i32>, u64) {
    let stat = fs::read_to_string(stat).unwrap_or_default();
    let signal = stat.lines().find_map(|l| {
        l.strip_prefix("Command terminated by signal ")
            .and_then(|s| s.trim().parse().ok())
    });
    let last: Vec<&str> = stat
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let max_rss_kib = last.first().and_then(|s| s.parse().ok()).unwrap_or(0);
    let code = match signal {
        Some(_) => None,
        None => last.get(1).and_then(|s| s.parse().ok()),
    };
    (code, signal, max_rss_kib)
}

fn args(medium: &Path, a: &[&str]) -> Vec<String> {
    a.iter()
        .map(|s| s.replace("{medium}", medium.to_str().unwrap()))
        .collect()
}

/// Every reading command, on backup `b` (and `a` for diff), restoring to `scratch`; `media
/// show --json` marks every live blob.
fn reading_commands(medium: &Path, a: u64, b: u64, file: &str, scratch: &Path) -> Vec<Vec<String>> {
    let (a, b) = (a.to_string(), b.to_string());
    let to = scratch.join("restored");
    vec![
        args(medium, &["ls", "--medium", "{medium}", &b, "-r"]),
        args(medium, &["list", "--medium", "{medium}"]),
        args(medium, &["tree", "--medium", "{medium}"]),
        args(
            medium,
            &["verify", "--medium", "{medium}", &b, "--read-all"],
        ),
        args(
            medium,
            &[
                "restore",
                "--medium",
                "{medium}",
                "--backup",
                &b,
                "--to",
                to.to_str().unwrap(),
            ],
        ),
        args(medium, &["diff", "--medium", "{medium}", &a, &b]),
        args(medium, &["versions", "--medium", "{medium}", file]),
        args(medium, &["media", "show", "{medium}", "--json"]),
    ]
}

// ---------------------------------------------------------------------------------------
// Crafting media with the library

/// The first file entry of backup `id`, and its path.
fn a_file(m: &Medium, id: u64) -> (PathBuf, Entry) {
    let h = m.header(BackupId(id)).unwrap();
    let mut found = None;
    index::walk(m, &h.root, Path::new("/"), &mut |rel, e| {
        if e.kind == EntryKind::File && e.size > 0 && found.is_none() {
            found = Some((rel.to_path_buf(), e.clone()));
        }
        Ok(Step::Descend)
    })
    .unwrap();
    found.unwrap()
}

fn dir_entry(name: &[u8], sub: BlockId) -> Entry {
    let mut e = Entry::new(Bytes(name.to_vec()), EntryKind::Dir);
    e.mode = 0o755;
    e.subtree = Some(sub);
    e
}

/// The blobs a writer wrote, durable (the writer is done with the medium).
fn stage(w: BackupWriter) -> Staged {
    w.finish().unwrap()
}

/// Commit the staged backup, whose root listing is `root`, with backup 1's header
/// otherwise and `counts` entries (as files), verified as backup 1 was.
fn commit(m: &mut Medium, staged: Staged, root: BlockId, dirs: u64, files: u64) -> u64 {
    let id = m.tree().next_id;
    let mut h = m.header(BackupId(1)).unwrap();
    h.id = id;
    h.root = root;
    h.packs = staged.packs.clone();
    h.parent = Some(BackupId(1));
    h.counts.dirs = dirs;
    h.counts.files = files;
    h.counts.symlinks = 0;
    h.counts.specials = 0;
    m.commit_backup(staged, &h).unwrap();
    m.mark_verified(id, true).unwrap();
    id.0
}

/// Replace the listing of the directory at `dir` (a path in backup 1) with `bytes` (any
/// bytes, stored under their own hash), re-storing the listings above it: a new backup whose
/// every hash is right and whose listing at `dir` is whatever `bytes` are.
fn replace_listing(m: &mut Medium, dir: &Path, bytes: &[u8]) -> u64 {
    let h1 = m.header(BackupId(1)).unwrap();
    let w = m.begin_backup(false).unwrap();
    let comps: Vec<Vec<u8>> = index::components(dir)
        .unwrap()
        .iter()
        .map(|c| std::os::unix::ffi::OsStrExt::as_bytes(*c).to_vec())
        .collect();
    let mut chain = vec![m.listing(&h1.root).unwrap()];
    for c in &comps {
        let e = chain.last().unwrap().get(c).unwrap().clone();
        chain.push(m.listing(&e.subtree.unwrap()).unwrap());
    }
    chain.pop();
    let mut child = w.put(BlobKind::Listing, bytes).unwrap();
    for c in comps.iter().rev() {
        let mut l = chain.pop().unwrap();
        l.entries
            .iter_mut()
            .find(|e| &e.name.0 == c)
            .unwrap()
            .subtree = Some(child);
        child = w.put(BlobKind::Listing, &l.encode()).unwrap();
    }
    let staged = stage(w);
    commit(
        m,
        staged,
        child,
        h1.counts.dirs,
        h1.counts.files + h1.counts.symlinks + h1.counts.specials,
    )
}

/// Write a pack holding one record, as given (lengths unchecked), at `name` under `packs/`.
fn write_pack(
    medium: &Path,
    name: &str,
    rec: (BlockId, BlobKind, Encoding, u32, &[u8]),
    flags: u32,
) {
    let id: PackId = name.parse().unwrap();
    let dir = medium.join("trayback/packs").join(&name[..2]);
    fs::create_dir_all(&dir).unwrap();
    let f = fs::File::create(dir.join(format!("{name}.pack"))).unwrap();
    let mut w = PackWriter::new(id, f, &Crypt::Plain, false).unwrap();
    w.append(rec.0, rec.1, rec.2, rec.3, rec.4).unwrap();
    w.finish(1, flags).unwrap();
}

/// A zstd frame of `len` zero bytes, made in 1 MiB steps (the test never holds `len` bytes).
fn zeros_zstd(len: usize) -> Vec<u8> {
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        enc.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    enc.finish().unwrap()
}

/// Every pack of the medium, with whether it holds listings.
fn packs(medium: &Path) -> Vec<(PathBuf, bool)> {
    let mut out = Vec::new();
    for d in fs::read_dir(medium.join("trayback/packs")).unwrap() {
        for p in fs::read_dir(d.unwrap().path()).unwrap() {
            let p = p.unwrap().path();
            let f = fs::File::open(&p).unwrap();
            let listings =
                pack::read_footer(&f).is_some_and(|f| f.flags & pack::FLAG_LISTINGS != 0);
            out.push((p, listings));
        }
    }
    out.sort();
    out
}

/// A medium with one monthly of a few files.
fn pack_id(p: &Path) -> trayback::ids::PackId {
    p.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

fn small_medium() -> Env {
    let env = Env::new(MediumKind::Dir).unwrap();
    // Hostile records are forged in plaintext (an encrypted medium's do not authenticate).
    env.init_plaintext();
    write(&env.src.join("a.txt"), b"hello");
    write(&env.src.join("victim.bin"), &bytes(1, 300_000));
    write(&env.src.join("sub/b.txt"), b"world");
    env.backup(&["--kind", "monthly"]);
    env
}

fn report(what: &str, runs: &[Ran]) {
    for r in runs {
        eprintln!(
            "{what}: {} -> {:?}, peak RSS {:.1} MiB, {:.2} s",
            r.args[0],
            r.code,
            r.mib(),
            r.elapsed.as_secs_f64()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Regression tests: the attacks reported

/// 42 listings (~8 KB) whose directories `a` and `b` both point at the listing below: 2^41
/// paths. Every walk stops at the header's count of entries.
#[test]
fn a_listing_dag_bomb_is_refused_in_bounded_memory() {
    let env = small_medium();
    let mut m = Medium::open_write(&env.medium, 3, &env.state_dir()).unwrap();
    let (file_path, file) = a_file(&m, 1);
    let w = m.begin_backup(false).unwrap();
    let mut child = w
        .put(BlobKind::Listing, &Listing::new(vec![file]).encode())
        .unwrap();
    let mut bytes = 0;
    for _ in 0..41 {
        let l = Listing::new(vec![dir_entry(b"a", child), dir_entry(b"b", child)]).encode();
        bytes += l.len();
        child = w.put(BlobKind::Listing, &l).unwrap();
    }
    eprintln!("DAG bomb: 42 listings, {bytes} bytes");
    let h1 = m.header(BackupId(1)).unwrap();
    let staged = stage(w);
    let b = commit(&mut m, staged, child, h1.counts.dirs, h1.counts.files);
    drop(m);
    let cmds = reading_commands(
        &env.medium,
        1,
        b,
        file_path.to_str().unwrap(),
        env.tmp.path(),
    );
    let mut runs = Vec::new();
    for c in cmds {
        let r = run_bounded(&c, TIMEOUT);
        r.sane(MAX_RSS_MIB);
        if ["ls", "restore", "diff"].contains(&c[0].as_str()) {
            r.failed();
            assert!(
                r.stderr.contains("more entries than its header counts"),
                "{:?}: {}",
                c,
                r.stderr
            );
        }
        if c[0] == "verify" {
            assert_eq!(r.code, Some(4), "{}", r.stdout);
            assert!(r.stdout.contains("more entries"), "{}", r.stdout);
        }
        runs.push(r);
    }
    report("DAG bomb", &runs);
    assert!(!env.tmp.path().join("restored").exists());
}

/// A data block whose record says 1 GiB raw (a 1 GiB zstd frame of zeros, ~33 KB stored),
/// as the only copy of a real block: refused when the trailer is read.
#[test]
fn a_block_claiming_1_gib_raw_is_refused_in_bounded_memory() {
    let env = small_medium();
    let m = Medium::open_read(
        &env.medium,
        &trayback::medium::Unlock::host(&env.state_dir()),
    )
    .unwrap();
    let (file_path, file) = a_file(&m, 1);
    drop(m);
    for (p, listings) in packs(&env.medium) {
        if !listings {
            fs::remove_file(p).unwrap();
        }
    }
    let bomb = zeros_zstd(1 << 30);
    eprintln!("1 GiB block bomb: {} bytes stored", bomb.len());
    write_pack(
        &env.medium,
        "00000000000000000000000000000001",
        (
            file.blocks[0],
            BlobKind::Data,
            Encoding::Zstd,
            1 << 30,
            &bomb,
        ),
        0,
    );
    let mut runs = Vec::new();
    for c in reading_commands(
        &env.medium,
        1,
        1,
        file_path.to_str().unwrap(),
        env.tmp.path(),
    ) {
        let r = run_bounded(&c, TIMEOUT);
        r.sane(MAX_RSS_MIB);
        if ["verify", "restore"].contains(&c[0].as_str()) {
            r.failed();
        }
        runs.push(r);
    }
    report("1 GiB data block", &runs);
}

/// The listing version of the bomb: the root listing's only copy inflates to the largest
/// length a listing may have (256 MiB of zeros), or claims 1 GiB. The first is hashed in a
/// streaming pass and refused without being held; the second is refused when parsed.
#[test]
fn a_listing_bomb_is_refused_in_bounded_memory() {
    for (raw_len, name) in [
        (MAX_LISTING_LEN, "00000000000000000000000000000002"),
        (1 << 30, "00000000000000000000000000000003"),
    ] {
        let env = small_medium();
        let m = Medium::open_read(
            &env.medium,
            &trayback::medium::Unlock::host(&env.state_dir()),
        )
        .unwrap();
        let (file_path, _) = a_file(&m, 1);
        let root = m.header(BackupId(1)).unwrap().root;
        drop(m);
        for (p, listings) in packs(&env.medium) {
            if listings {
                fs::remove_file(p).unwrap();
            }
        }
        let bomb = zeros_zstd(raw_len);
        write_pack(
            &env.medium,
            name,
            (
                root,
                BlobKind::Listing,
                Encoding::Zstd,
                raw_len as u32,
                &bomb,
            ),
            pack::FLAG_LISTINGS,
        );
        let mut runs = Vec::new();
        for c in reading_commands(
            &env.medium,
            1,
            1,
            file_path.to_str().unwrap(),
            env.tmp.path(),
        ) {
            let r = run_bounded(&c, TIMEOUT);
            r.sane(MAX_RSS_MIB);
            if !["list", "tree"].contains(&c[0].as_str()) {
                assert!(r.code != Some(0) || c[0] == "diff", "{:?}: {}", c, r.stdout);
            }
            runs.push(r);
        }
        report(&format!("listing bomb of {raw_len} bytes"), &runs);
    }
}

/// Sparse 4 GiB pack files (free on disk): one whose footer claims a trailer of 82 million
/// records, one with no footer at all (salvaged by walking its records). Neither is read
/// into memory.
#[test]
fn sparse_huge_packs_are_refused_in_bounded_memory() {
    let env = small_medium();
    let len: u64 = 4 << 30;
    let dir = env.medium.join("trayback/packs/00");
    fs::create_dir_all(&dir).unwrap();
    for (name, footer) in [
        ("00000000000000000000000000000004", true),
        ("00000000000000000000000000000005", false),
    ] {
        let f = fs::File::create(dir.join(format!("{name}.pack"))).unwrap();
        f.set_len(len).unwrap();
        use std::os::unix::fs::FileExt;
        let mut head = b"TRAYPACK".to_vec();
        head.extend_from_slice(&1u32.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        f.write_all_at(&head, 0).unwrap();
        if footer {
            let count = (len - 16 - 64) / 52;
            let mut foot = Vec::new();
            foot.extend_from_slice(&1u64.to_le_bytes());
            foot.extend_from_slice(&pack::FLAG_LISTINGS.to_le_bytes());
            foot.extend_from_slice(&(count as u32).to_le_bytes());
            foot.extend_from_slice(&(len - 64 - count * 52).to_le_bytes());
            foot.extend_from_slice(&[0u8; 32]);
            foot.extend_from_slice(b"TRAYPEND");
            f.write_all_at(&foot, len - 64).unwrap();
        }
    }
    let mut runs = Vec::new();
    for c in reading_commands(&env.medium, 1, 1, "/x", env.tmp.path()) {
        let r = run_bounded(&c, TIMEOUT);
        r.sane(MAX_RSS_MIB);
        runs.push(r);
    }
    report("sparse 4 GiB packs", &runs);
}

/// Config values that passed validation and then panicked in the schedule.
#[test]
fn huge_config_durations_and_counts_are_refused_naming_the_key() {
    let env = Env::new(MediumKind::Dir).unwrap();
    for (yaml, key) in [
        (
            "schedule:\n  micro_interval: 9223372036854775807s\n",
            "schedule.micro_interval",
        ),
        (
            "schedule:\n  monthly_every_days: 4294967295\n",
            "schedule.monthly_every_days",
        ),
        (
            "schedule:\n  weekly_every_days: 4294967295\n",
            "schedule.weekly_every_days",
        ),
        (
            "pare:\n  micro_max_age_days: 4294967295\n",
            "pare.micro_max_age_days",
        ),
    ] {
        let cfg = env.path("c.yaml");
        fs::write(&cfg, yaml).unwrap();
        let r = run_bounded(
            &args(&cfg, &["simulate", "--days", "60", "--config", "{medium}"]),
            TIMEOUT,
        );
        r.sane(MAX_RSS_MIB).failed();
        assert!(
            r.stderr.contains(key) && r.stderr.contains("out of range"),
            "{yaml}: {}",
            r.stderr
        );
    }
    let r = run_bounded(
        &args(&env.medium, &["simulate", "--days", "4294967295"]),
        TIMEOUT,
    );
    r.sane(MAX_RSS_MIB).failed();
}

/// A tree.yaml with `started: +262142-12-31T23:59:59Z` is refused when it is read.
#[test]
fn a_far_future_time_in_tree_yaml_is_refused() {
    let env = small_medium();
    let path = env.medium.join("trayback/tree.yaml");
    let text = fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    for l in text.lines() {
        if l.trim_start().starts_with("started:") {
            out.push_str("  started: +262142-12-31T23:59:59Z\n");
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    fs::write(&path, out).unwrap();
    for c in [
        vec!["list", "--medium", "{medium}"],
        vec!["tree", "--medium", "{medium}"],
        vec!["due", "--medium", "{medium}"],
        vec!["ls", "--medium", "{medium}", "1"],
        vec!["verify", "--medium", "{medium}", "1"],
    ] {
        let r = run_bounded(&args(&env.medium, &c), TIMEOUT);
        r.sane(MAX_RSS_MIB).failed();
        assert!(
            r.stderr.contains("tree.yaml") && r.stderr.contains("9999"),
            "{c:?}: {}",
            r.stderr
        );
    }
}

/// tree.yaml with one parent chain `n` deep (a monthly and `n - 1` dailies).
fn deep_tree_yaml(n: u64) -> String {
    let mut s = format!("format: 1\nnext_id: {}\nbackups:\n", n + 1);
    for id in 1..=n {
        let (kind, parent) = if id == 1 {
            ("monthly", "null".to_string())
        } else {
            ("daily", (id - 1).to_string())
        };
        let t = 1_700_000_000 + id * 60;
        let at = chrono::DateTime::from_timestamp(t as i64, 0)
            .unwrap()
            .to_rfc3339();
        s.push_str(&format!(
            "- id: {id}\n  kind: {kind}\n  parent: {parent}\n  started: {at}\n  finished: {at}\n  verified: true\n  partial: false\n  bytes_total: 1\n  bytes_new: 1\n  bytes_stored: 1\n"
        ));
    }
    s
}

/// `tree` once overflowed its stack on a 30 000-deep parent chain; 100 000 deep draws (with
/// indentation capped) and checks in seconds.
#[test]
fn a_30_000_and_a_100_000_deep_parent_chain_draws_and_checks() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    for n in [30_000, 100_000] {
        fs::write(env.medium.join("trayback/tree.yaml"), deep_tree_yaml(n)).unwrap();
        let mut runs = Vec::new();
        for c in [
            vec!["tree", "--medium", "{medium}"],
            vec!["list", "--medium", "{medium}"],
            vec!["due", "--medium", "{medium}"],
        ] {
            let r = run_bounded(&args(&env.medium, &c), Duration::from_secs(60));
            r.sane(MAX_RSS_MIB * 2);
            assert_eq!(r.code, Some(0), "{c:?}: {}", r.stderr);
            assert!(
                r.elapsed < Duration::from_secs(30),
                "{c:?} took {:?}",
                r.elapsed
            );
            runs.push(r);
        }
        assert!(
            runs[0].stdout.starts_with("#1 monthly"),
            "{}",
            &runs[0].stdout[..200]
        );
        report(&format!("{n}-deep chain"), &runs);
    }
}

/// A medium whose backup 2 is a chain of `depth` directories `d/d/…` with one file at the
/// bottom (crafted through the medium's writer).
fn deep_chain(depth: u64) -> (Env, u64) {
    let env = small_medium();
    let mut m = Medium::open_write(&env.medium, 3, &env.state_dir()).unwrap();
    let (_, file) = a_file(&m, 1);
    let w = m.begin_backup(false).unwrap();
    let mut child = w
        .put(BlobKind::Listing, &Listing::new(vec![file]).encode())
        .unwrap();
    for _ in 0..depth {
        child = w
            .put(
                BlobKind::Listing,
                &Listing::new(vec![dir_entry(b"d", child)]).encode(),
            )
            .unwrap();
    }
    let staged = stage(w);
    let b = commit(&mut m, staged, child, depth, 1);
    (env, b)
}

/// A directory tree 10 000 levels deep (crafted: no file system lets a real one be backed
/// up by path) lists, verifies and diffs, on no more stack than any other.
#[test]
fn a_10_000_deep_directory_tree_lists_and_verifies() {
    let (env, b) = deep_chain(10_000);
    let mut runs = Vec::new();
    for c in [
        vec!["ls", "--medium", "{medium}", "-r", &b.to_string()],
        vec![
            "verify",
            "--medium",
            "{medium}",
            &b.to_string(),
            "--read-all",
        ],
        vec!["diff", "--medium", "{medium}", "1", &b.to_string()],
        vec!["media", "show", "{medium}", "--json"],
    ] {
        let r = run_bounded(&args(&env.medium, &c), Duration::from_secs(60));
        r.sane(MAX_RSS_MIB * 2);
        assert_eq!(r.code, Some(0), "{c:?}: {}", r.stderr);
        runs.push(r);
    }
    report("10 000-deep directories", &runs);
}

/// 100 000 levels: verify and the live-blob walk of `media show` once recursed per level and
/// overflowed the stack; the explicit stacks hold one path and one listing per level.
#[test]
fn a_100_000_deep_directory_tree_verifies_without_overflowing_the_stack() {
    let (env, b) = deep_chain(100_000);
    let mut runs = Vec::new();
    for c in [
        vec![
            "verify",
            "--medium",
            "{medium}",
            &b.to_string(),
            "--read-all",
        ],
        vec!["media", "show", "{medium}", "--json"],
    ] {
        let r = run_bounded(&args(&env.medium, &c), Duration::from_secs(60));
        r.sane(MAX_RSS_MIB);
        assert_eq!(r.code, Some(0), "{c:?}: {}", r.stderr);
        runs.push(r);
    }
    report("100 000-deep directories", &runs);
}

// ---------------------------------------------------------------------------------------
// The property test

/// A medium made by the real binary (a monthly and a daily of a few files), and a file's path.
/// The fixture, plaintext or encrypted (then with its recovery key).
fn fixture_with(encrypted: bool) -> ((Env, PathBuf), String) {
    let env = Env::new(MediumKind::Dir).unwrap();
    let key = if encrypted {
        env.init()
    } else {
        env.init_plaintext();
        String::new()
    };
    write(&env.src.join("a.txt"), b"hello");
    write(&env.src.join("victim.bin"), &bytes(1, 300_000));
    write(&env.src.join("sub/b.txt"), b"world");
    std::os::unix::fs::symlink("a.txt", env.src.join("link")).unwrap();
    env.backup(&["--kind", "monthly"]);
    write(&env.src.join("sub/c.txt"), &bytes(2, 5000));
    write(&env.src.join("a.txt"), b"hello again");
    env.backup(&["--kind", "daily"]);
    let file = env.src.join("a.txt");
    ((env, file), key)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// The medium's files a mutation may hit: packs, headers, tree.yaml (sorted).
fn targets(medium: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = packs(medium).into_iter().map(|(p, _)| p).collect();
    let sealed = medium.join("trayback/tree.sealed").exists();
    let (header, tree) = match sealed {
        true => ("header.sealed", "tree.sealed"),
        false => ("header.yaml", "tree.yaml"),
    };
    for d in fs::read_dir(medium.join("trayback/backups")).unwrap() {
        out.push(d.unwrap().path().join(header));
    }
    out.push(medium.join("trayback").join(tree));
    if sealed {
        // The key slots and MAC too: a reader must refuse or read, never misbehave.
        out.push(medium.join("trayback/media.yaml"));
    }
    out.sort();
    out
}

#[derive(Clone, Debug)]
enum Op {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate {
        at: usize,
    },
    Lengthen {
        extra: Vec<u8>,
    },
    Overwrite {
        at: usize,
        noise: Vec<u8>,
    },
    /// A little-endian u32 written at `at` (a length or count field, when it lands on one).
    Huge {
        at: usize,
        value: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let huge = prop_oneof![
        Just(u32::MAX),
        Just(1u32 << 30),
        Just(MAX_BLOCK as u32 + 1),
        Just(MAX_LISTING_LEN as u32),
        Just(u16::MAX as u32),
        any::<u32>()
    ];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Op::Flip { at, mask }),
        any::<usize>().prop_map(|at| Op::Truncate { at }),
        proptest::collection::vec(any::<u8>(), 1..200).prop_map(|extra| Op::Lengthen { extra }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(at, noise)| Op::Overwrite { at, noise }),
        (any::<usize>(), huge).prop_map(|(at, value)| Op::Huge { at, value }),
    ]
}

/// Apply `op` to `bytes`; positions are taken modulo the length. Huge values land on the
/// 4-byte boundaries where lengths and counts live in packs and listings.
fn apply(op: &Op, bytes: &mut Vec<u8>) {
    let n = bytes.len().max(1);
    match op {
        Op::Flip { at, mask } => {
            if !bytes.is_empty() {
                bytes[at % n] ^= mask;
            }
        }
        Op::Truncate { at } => bytes.truncate(at % n),
        Op::Lengthen { extra } => bytes.extend_from_slice(extra),
        Op::Overwrite { at, noise } => {
            for (i, b) in noise.iter().enumerate() {
                if let Some(x) = bytes.get_mut(at % n + i) {
                    *x = *b;
                }
            }
        }
        Op::Huge { at, value } => {
            let at = (at % n) & !3;
            for (i, b) in value.to_le_bytes().iter().enumerate() {
                if let Some(x) = bytes.get_mut(at + i) {
                    *x = *b;
                }
            }
        }
    }
}

/// What a case damages: one file of the medium, or (with every hash right) one listing.
#[derive(Clone, Debug)]
enum Damage {
    File {
        which: usize,
        op: Op,
    },
    /// The listing of `/`, of the source directory or of `sub`, re-stored as a new backup.
    Listing {
        which: usize,
        op: Op,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => (any::<usize>(), op()).prop_map(|(which, op)| Damage::File { which, op }),
        1 => (0usize..3, op()).prop_map(|(which, op)| Damage::Listing { which, op }),
    ]
}

/// Damage one pack, header, tree.yaml or listing of a real medium: every reading command ends
/// with success or an error, never a panic, a signal or a hang, in bounded memory. 150 cases
/// take about 40 s; PROPTEST_CASES=5000 hunts for longer.
#[test]
fn damaged_media_never_panic_hang_or_balloon() {
    damaged_media_run(false, 150);
}

/// The same on an encrypted medium, read on a machine without its host key (unlocked with the
/// recovery key): its sealed tree, headers, packs and key slots damaged. 30 cases (each
/// command derives the key with Argon2id).
#[test]
fn damaged_encrypted_media_never_panic_hang_or_balloon() {
    damaged_media_run(true, 30);
}

fn damaged_media_run(encrypted: bool, default_cases: u32) {
    let ((env, file), key) = fixture_with(encrypted);
    let key_file = env.path("recovery.txt");
    fs::write(&key_file, &key).unwrap();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_cases);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&damage(), |d| {
        let scratch = tempfile::tempdir().unwrap();
        let medium = scratch.path().join("medium");
        copy_dir(&env.medium, &medium);
        let (mut a, mut b) = (1, 2);
        match &d {
            Damage::File { which, op } => {
                let t = targets(&medium);
                let path = &t[which % t.len()];
                let mut bytes = fs::read(path).unwrap();
                apply(op, &mut bytes);
                fs::write(path, bytes).unwrap();
            }
            Damage::Listing { which, op } => {
                let dir =
                    [PathBuf::from("/"), env.src.clone(), env.src.join("sub")][*which].clone();
                // This copy's own host state: each case starts from the same medium, which
                // a shared state directory would take for rolled back after the first.
                let state = scratch.path().join("state");
                copy_dir(&env.state_dir(), &state);
                let mut m = Medium::open_write(&medium, 3, &state).unwrap();
                let h = m.header(BackupId(1)).unwrap();
                let chain = index::lookup(&m, &h.root, &dir).unwrap().unwrap();
                let id = chain.last().map_or(h.root, |e| e.subtree.unwrap());
                let mut bytes = m.read_block(&id).unwrap();
                apply(op, &mut bytes);
                b = replace_listing(&mut m, &dir, &bytes);
                a = 2;
            }
        }
        for mut c in reading_commands(&medium, a, b, file.to_str().unwrap(), scratch.path()) {
            if encrypted {
                c.extend(["--key-file".into(), key_file.to_str().unwrap().into()]);
            }
            run_bounded(&c, TIMEOUT).sane(MAX_RSS_MIB);
            let _ = fs::remove_dir_all(scratch.path().join("restored"));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Trailers that repeat or overlap records; a DAG of listings under forged header counts

/// Run trayback like [`run_bounded`], but with stdout piped: keep its first `keep` bytes,
/// then close the pipe (a command whose output is unbounded must stop on the broken pipe).
fn run_piped(args: &[String], keep: usize, timeout: Duration) -> Ran {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let (err, stat) = (dir.path().join("err"), dir.path().join("stat"));
    let t0 = Instant::now();
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "%M %x", "-o"])
        .arg(&stat)
        .arg(std::env::var_os("TRAYBACK_BIN").map_or_else(bin, PathBuf::from))
        .args(args)
        .env("TRAYBACK_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .expect("GNU time (/usr/bin/time) runs; scripts/setup.sh installs it");
    let pid = rustix::process::Pid::from_child(&child);
    // A watchdog: the reads below block, so the timeout is enforced from another thread.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dog = {
        let (done, killed) = (done.clone(), killed.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                if t0.elapsed() > timeout {
                    killed.store(true, std::sync::atomic::Ordering::Release);
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::Kill);
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut stdout = Vec::new();
    let mut pipe = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    while stdout.len() < keep {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => stdout.extend_from_slice(&buf[..n]),
        }
    }
    drop(pipe);
    let _ = child.wait();
    done.store(true, std::sync::atomic::Ordering::Release);
    dog.join().unwrap();
    assert!(
        !killed.load(std::sync::atomic::Ordering::Acquire),
        "trayback {args:?} still running after {timeout:?}: a hang"
    );
    let elapsed = t0.elapsed();
    let (code, signal, max_rss_kib) = time_stat(&stat);
    Ran {
        args: args.to_vec(),
        code,
        signal,
        max_rss_kib,
        elapsed,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&fs::read(&err).unwrap_or_default()).into_owned(),
    }
}

/// Write a pack file of `records` (id, kind, raw payload) followed by a trailer of
/// `trailer` entries (offsets as given) with a right checksum.
fn write_raw_pack(
    path: &Path,
    records: &[(BlockId, BlobKind, &[u8])],
    trailer: &[pack::Entry],
    flags: u32,
) {
    use sha2::{Digest, Sha256};
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    f.write_all(b"TRAYPACK").unwrap();
    f.write_all(&1u32.to_le_bytes()).unwrap();
    f.write_all(&0u32.to_le_bytes()).unwrap();
    let mut at = 16u64;
    for (id, kind, raw) in records {
        let n = raw.len() as u32;
        f.write_all(&pack::record_header(id, *kind, Encoding::Raw, n, n))
            .unwrap();
        f.write_all(raw).unwrap();
        at += 44 + raw.len() as u64;
    }
    let mut hash = Sha256::new();
    for e in trailer {
        let mut t =
            pack::record_header(&e.id, e.kind, e.encoding, e.raw_len, e.stored_len).to_vec();
        t.extend_from_slice(&e.offset.to_le_bytes());
        hash.update(&t);
        f.write_all(&t).unwrap();
    }
    f.write_all(&1u64.to_le_bytes()).unwrap();
    f.write_all(&flags.to_le_bytes()).unwrap();
    f.write_all(&(trailer.len() as u32).to_le_bytes()).unwrap();
    f.write_all(&at.to_le_bytes()).unwrap();
    f.write_all(&hash.finalize()).unwrap();
    f.write_all(b"TRAYPEND").unwrap();
    f.flush().unwrap();
}

/// A backup's one data pack rewritten so that its trailer lists a large record (a block of
/// at least 192 KiB) 16 384 times more (4 GiB of reads), all hashes right: verify refused
/// that trailer as damage within seconds instead of reading 5000 times the pack's size and
/// saying "verified". And listing packs whose trailers give 2^20 distinct ids for one
/// record (an index of millions of entries from a few packs): refused, salvaged, bounded.
#[test]
fn trailer_entries_that_repeat_or_overlap_a_record_are_refused() {
    let env = small_medium();
    let m = Medium::open_read(
        &env.medium,
        &trayback::medium::Unlock::host(&env.state_dir()),
    )
    .unwrap();
    let h = m.header(BackupId(1)).unwrap();
    drop(m);
    // The data pack holding a large block of victim.bin.
    let (path, t) = packs(&env.medium)
        .into_iter()
        .filter(|(_, listings)| !listings)
        .find_map(|(p, _)| {
            let t = pack::read_trailer(&Crypt::Plain, &pack_id(&p), &fs::File::open(&p).unwrap())
                .unwrap();
            t.entries
                .iter()
                .any(|e| e.raw_len as usize >= MIN_BLOCK)
                .then_some((p, t))
        })
        .expect("a pack with a full block");
    assert!(h
        .packs
        .iter()
        .any(|p| path.to_str().unwrap().contains(&p.to_string())));
    let bytes = fs::read(&path).unwrap();
    let big = *t
        .entries
        .iter()
        .find(|e| e.raw_len as usize >= MIN_BLOCK)
        .unwrap();
    let records: Vec<(BlockId, BlobKind, Vec<u8>)> = t
        .entries
        .iter()
        .map(|e| {
            let raw = pack::decode(
                &Crypt::Plain,
                e,
                &bytes[e.offset as usize..][..e.stored_len as usize],
            )
            .unwrap();
            (e.id, e.kind, raw)
        })
        .collect();
    // Rewritten raw, so offsets are recomputed; then the big record listed again and again.
    let mut entries = Vec::new();
    let mut at = 16u64;
    for (id, kind, raw) in &records {
        entries.push(pack::Entry {
            id: *id,
            kind: *kind,
            encoding: Encoding::Raw,
            raw_len: raw.len() as u32,
            stored_len: raw.len() as u32,
            offset: at + 44,
            at: 0,
            frame_len: 0,
        });
        at += 44 + raw.len() as u64;
    }
    let big_at = entries.iter().find(|e| e.id == big.id).unwrap().offset;
    let honest = entries.clone();
    entries.extend(std::iter::repeat_n(
        pack::Entry {
            encoding: Encoding::Raw,
            stored_len: big.raw_len,
            offset: big_at,
            ..big
        },
        1 << 14,
    ));
    let recs: Vec<(BlockId, BlobKind, &[u8])> = records
        .iter()
        .map(|(i, k, r)| (*i, *k, r.as_slice()))
        .collect();
    // The honest rewrite reads back: the rule accepts what writers make.
    write_raw_pack(&path, &recs, &honest, t.flags);
    assert_eq!(
        pack::read_trailer(
            &Crypt::Plain,
            &pack_id(&path),
            &fs::File::open(&path).unwrap()
        )
        .unwrap()
        .entries,
        honest
    );
    write_raw_pack(&path, &recs, &entries, t.flags);
    let err = pack::read_trailer(
        &Crypt::Plain,
        &pack_id(&path),
        &fs::File::open(&path).unwrap(),
    )
    .unwrap_err();
    assert!(
        err.contains("does not start where the previous record ends"),
        "{err}"
    );
    let r = run_bounded(
        &args(
            &env.medium,
            &["verify", "--medium", "{medium}", "1", "--read-all"],
        ),
        TIMEOUT,
    );
    r.sane(MAX_RSS_MIB);
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
    assert_eq!(r.code, Some(4), "{}\n{}", r.stdout, r.stderr);
    let mut runs = vec![r];

    // Listing packs: one 4 KiB listing record, 2^20 trailer entries of distinct ids at it.
    let listing = Listing::new(vec![]).encode();
    let lid = BlockId::of(&listing);
    for n in 0..3u8 {
        let name = format!("ee{n:030}");
        let dir = env.medium.join("trayback/packs/ee");
        fs::create_dir_all(&dir).unwrap();
        let fake: Vec<pack::Entry> = (0..(1u32 << 20))
            .map(|i| {
                let mut id = [n; 32];
                id[..4].copy_from_slice(&i.to_le_bytes());
                pack::Entry {
                    id: BlockId(id),
                    kind: BlobKind::Listing,
                    encoding: Encoding::Raw,
                    raw_len: listing.len() as u32,
                    stored_len: listing.len() as u32,
                    offset: 60,
                    at: 0,
                    frame_len: 0,
                }
            })
            .collect();
        write_raw_pack(
            &dir.join(format!("{name}.pack")),
            &[(lid, BlobKind::Listing, &listing)],
            &fake,
            pack::FLAG_LISTINGS,
        );
    }
    for c in [
        args(&env.medium, &["list", "--medium", "{medium}"]),
        args(&env.medium, &["media", "show", "{medium}", "--json"]),
    ] {
        let r = run_bounded(&c, TIMEOUT);
        r.sane(MAX_RSS_MIB);
        runs.push(r);
    }
    report("repeating trailers", &runs);
}

/// 48 listings whose directories `a` and `b` both point at the listing below (2^47 paths)
/// in a backup whose header counts u64::MAX/2 files: the header's bound is no bound. Every
/// command ends in bounded memory, in time bounded by what it prints: verify checks each
/// listing once, ls -r and diff stream (and stop when stdout closes), restore is refused
/// by its own cap (whole backup) or by sizing the DAG first (a path in it).
#[test]
fn a_listing_dag_with_forged_header_counts_is_bounded_in_every_command() {
    let env = small_medium();
    let mut m = Medium::open_write(&env.medium, 3, &env.state_dir()).unwrap();
    let (_, file) = a_file(&m, 1);
    let w = m.begin_backup(false).unwrap();
    let mut child = w
        .put(
            BlobKind::Listing,
            &Listing::new(vec![file.clone()]).encode(),
        )
        .unwrap();
    for _ in 0..47 {
        let l = Listing::new(vec![dir_entry(b"a", child), dir_entry(b"b", child)]).encode();
        child = w.put(BlobKind::Listing, &l).unwrap();
    }
    let staged = stage(w);
    let b = commit(&mut m, staged, child, 0, u64::MAX / 2);
    // The same DAG over a file whose block is missing: 2^47 damaged paths.
    let mut lost = file.clone();
    lost.blocks[0] = BlockId([0x5a; 32]);
    let w = m.begin_backup(false).unwrap();
    let mut child = w
        .put(BlobKind::Listing, &Listing::new(vec![lost]).encode())
        .unwrap();
    for _ in 0..47 {
        let l = Listing::new(vec![dir_entry(b"a", child), dir_entry(b"b", child)]).encode();
        child = w.put(BlobKind::Listing, &l).unwrap();
    }
    let staged = stage(w);
    let damaged = commit(&mut m, staged, child, 0, u64::MAX / 2);
    drop(m);
    let bs = b.to_string();
    let to = env.tmp.path().join("restored");
    let to = to.to_str().unwrap();
    let limit = Duration::from_secs(20);
    let mut runs = Vec::new();
    // Unbounded output: read 4 MiB, then close the pipe.
    for c in [
        args(&env.medium, &["ls", "--medium", "{medium}", &bs, "-r"]),
        args(
            &env.medium,
            &["ls", "--medium", "{medium}", &bs, "-r", "--json"],
        ),
        args(&env.medium, &["diff", "--medium", "{medium}", "1", &bs]),
    ] {
        let r = run_piped(&c, 4 << 20, TIMEOUT);
        r.sane(MAX_RSS_MIB);
        assert!(r.stdout.len() >= 4 << 20, "{c:?}: {}", r.stderr);
        assert!(r.elapsed < limit, "{c:?}: {:?}", r.elapsed);
        runs.push(r);
    }
    let r = run_bounded(
        &args(
            &env.medium,
            &["verify", "--medium", "{medium}", &bs, "--read-all"],
        ),
        TIMEOUT,
    );
    r.sane(MAX_RSS_MIB);
    assert!(r.elapsed < limit, "{:?}", r.elapsed);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    runs.push(r);
    // Damage below a repeated listing is named once in full and then by each directory that
    // repeats it (47 of them), never by every path: reporting does not expand the DAG.
    let r = run_bounded(
        &args(
            &env.medium,
            &[
                "verify",
                "--medium",
                "{medium}",
                &damaged.to_string(),
                "--json",
            ],
        ),
        TIMEOUT,
    );
    r.sane(MAX_RSS_MIB);
    assert!(r.elapsed < limit, "{:?}", r.elapsed);
    assert_eq!(r.code, Some(4), "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let affected = v.as_array().map_or(&v, |a| &a[0])["affected"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        (2..=48 + 47).contains(&affected),
        "{affected}: {}",
        r.stdout
    );
    runs.push(r);
    for (c, refusal) in [
        (
            args(
                &env.medium,
                &[
                    "restore",
                    "--medium",
                    "{medium}",
                    "--backup",
                    &bs,
                    "--to",
                    to,
                    "--dry-run",
                ],
            ),
            "more than trayback restores at once",
        ),
        (
            args(
                &env.medium,
                &[
                    "restore", "--medium", "{medium}", "--backup", &bs, "--to", to,
                ],
            ),
            "more than trayback restores at once",
        ),
        (
            args(
                &env.medium,
                &[
                    "restore",
                    "--medium",
                    "{medium}",
                    "--backup",
                    &bs,
                    "--to",
                    to,
                    "--dry-run",
                    "/a",
                ],
            ),
            "more than trayback restores at once",
        ),
    ] {
        let r = run_bounded(&c, TIMEOUT);
        r.sane(MAX_RSS_MIB).failed();
        assert!(r.elapsed < limit, "{c:?}: {:?}", r.elapsed);
        assert!(r.stderr.contains(refusal), "{c:?}: {}", r.stderr);
        assert!(r.stderr.contains("header.yaml"), "{c:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{c:?}: {}", r.stderr);
        runs.push(r);
    }
    report("DAG with forged counts", &runs);
    assert!(!env.tmp.path().join("restored").exists());
}
