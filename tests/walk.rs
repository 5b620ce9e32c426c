//! The backup walk: a source tree of any depth backs up exactly with a bounded stack and
//! bounded descriptors, and a tree changing under the walk never crashes it nor makes it
//! follow a symlink.

#[path = "support/util.rs"]
mod util;
use rustix::fs::{Mode, OFlags};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use trayback::ids::BackupId;
use trayback::listing::{EntryKind, Listing};
use trayback::medium::Medium;
use util::*;

fn open_dir_at(dir: &OwnedFd, name: &str) -> OwnedFd {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

fn write_at(dir: &OwnedFd, name: &str, data: &[u8]) {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&fd, data).unwrap();
}

/// `depth` directories `d` nested under `top`, made relative to each other (the full path is
/// longer than `PATH_MAX`); every `every` levels a file `f<level>` and a directory `e` holding
/// a file, beside the next `d`; a file `bottom` at the bottom. Returns the deepest directory.
fn make_deep(top: &Path, depth: usize, every: usize) -> OwnedFd {
    let mut dir = rustix::fs::open(top, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    for level in 0..depth {
        rustix::fs::mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).unwrap();
        if level % every == 0 {
            write_at(
                &dir,
                &format!("f{level}"),
                format!("level {level}\n").as_bytes(),
            );
            rustix::fs::mkdirat(&dir, "e", Mode::from_raw_mode(0o750)).unwrap();
            write_at(&open_dir_at(&dir, "e"), "in-e", b"e");
        }
        dir = open_dir_at(&dir, "d");
    }
    write_at(&dir, "bottom", b"bottom\n");
    dir
}

/// The listing of the source directory in backup `id`.
fn src_listing(m: &Medium, env: &Env, id: u64) -> Listing {
    let h = m.header(BackupId(id)).unwrap();
    let mut l = m.listing(&h.root).unwrap();
    for c in env.src.components().skip(1) {
        let e = l.get(c.as_os_str().as_bytes()).unwrap().clone();
        l = m.listing(&e.subtree.unwrap()).unwrap();
    }
    l
}

/// Check, reading the listings level by level (no recursion), that backup `id` holds the
/// tree [`make_deep`] made, with `bottom` holding `bottom`.
fn check_deep(env: &Env, id: u64, depth: usize, every: usize, bottom: &[u8]) {
    let m = Medium::open_read(
        &env.medium,
        &trayback::medium::Unlock::host(&env.state_dir()),
    )
    .unwrap();
    let mut l = src_listing(&m, env, id);
    for level in 0..depth {
        if level % every == 0 {
            let f = l.get(format!("f{level}").as_bytes()).unwrap_or_else(|| {
                panic!("level {level}: f{level} missing");
            });
            assert_eq!(f.size, format!("level {level}\n").len() as u64);
            let e = l.get(b"e").unwrap();
            assert_eq!(e.mode, 0o750, "level {level}");
            let inside = m.listing(&e.subtree.unwrap()).unwrap();
            assert!(inside.get(b"in-e").is_some(), "level {level}");
            assert_eq!(l.entries.len(), 3, "level {level}");
        } else {
            assert_eq!(l.entries.len(), 1, "level {level}");
        }
        let d = l
            .get(b"d")
            .unwrap_or_else(|| panic!("level {level}: d missing"));
        assert_eq!(d.kind, EntryKind::Dir);
        l = m.listing(&d.subtree.unwrap()).unwrap();
    }
    assert_eq!(l.entries.len(), 1);
    let b = l.get(b"bottom").expect("the bottom file");
    let content: Vec<u8> = b
        .blocks
        .iter()
        .flat_map(|id| m.read_block(id).unwrap())
        .collect();
    assert_eq!(content, bottom);
}

/// Run trayback with at most `nofile` descriptors open.
fn run_limited(env: &Env, nofile: u32, args: &[&str]) -> Output {
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("{medium}", env.medium.to_str().unwrap())
                .replace("{src}", env.src.to_str().unwrap())
        })
        .collect();
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(bin())
        .args(&args)
        .env("TRAYBACK_LOG", "warn")
        .env("TRAYBACK_STATE_DIR", env.state_dir())
        .output()
        .unwrap()
}

fn backup_json(out: &Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "backup failed or partial:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["backup"].clone()
}

#[test]
fn a_10000_deep_source_tree_backs_up() {
    const DEPTH: usize = 10_000;
    const EVERY: usize = 100;
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let deepest = make_deep(&env.src, DEPTH, EVERY);
    // Far fewer descriptors than levels: the walk must not hold one per level.
    let backup = [
        "backup", "--medium", "{medium}", "--source", "{src}", "--json", "--kind", "monthly",
    ];
    let h = backup_json(&run_limited(&env, 64, &backup));
    assert_eq!(h["problems"], serde_json::json!([]));
    let levels = DEPTH as u64 + (DEPTH / EVERY) as u64;
    let above = env.src.components().count() as u64 - 1;
    assert_eq!(h["counts"]["dirs"], levels + above);
    assert_eq!(h["counts"]["files"], 2 * (DEPTH / EVERY) as u64 + 1);
    check_deep(&env, 1, DEPTH, EVERY, b"bottom\n");
    // `ls -r` lists every level too, and the medium verifies.
    let ls = env.ok(&["ls", "--medium", "{medium}", "-r", "1", "{src}"]);
    assert_eq!(
        ls.lines().count() as u64,
        levels + h["counts"]["files"].as_u64().unwrap()
    );
    env.ok(&["verify", "--medium", "{medium}"]);

    // An incremental reads the one file that changed, 10 000 levels down.
    write_at(&deepest, "bottom", b"changed at the bottom\n");
    let micro = [
        "backup", "--medium", "{medium}", "--source", "{src}", "--json", "--kind", "micro",
    ];
    let h2 = backup_json(&run_limited(&env, 64, &micro));
    assert_eq!(h2["counts"]["files_read"], 1);
    assert_eq!(h2["counts"]["dirs"], h["counts"]["dirs"]);
    check_deep(&env, 2, DEPTH, EVERY, b"changed at the bottom\n");

    // The estimate before a backup walks the same way.
    let m = Medium::open_read(
        &env.medium,
        &trayback::medium::Unlock::host(&env.state_dir()),
    )
    .unwrap();
    let config = trayback::config::Config::default()
        .with_sources(vec![env.src.clone()])
        .unwrap();
    let none = AtomicBool::new(false);
    let unchanged = trayback::backup::estimate(&m, &config, Some(BackupId(2)), &none).unwrap();
    // Only listings above the source can be new (other programs write in /tmp).
    assert!(unchanged < 10_000, "{unchanged}");
    write_at(&deepest, "bottom", b"again");
    let changed = trayback::backup::estimate(&m, &config, Some(BackupId(2)), &none).unwrap();
    // Every level's listing is new.
    assert!(changed > unchanged + DEPTH as u64 * 60, "{changed}");
}

#[test]
fn a_500_deep_tree_a_user_made_backs_up_when_run_as_root() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    // What any user can make under /home: 500 levels, about 1 KB of path.
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    make_deep(&env.src, 500, 50);
    sh(Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&env.src));
    let out = env.run(&[
        "backup", "--medium", "{medium}", "--source", "{src}", "--json",
    ]);
    let h = backup_json(&out);
    assert_eq!(h["problems"], serde_json::json!([]));
    check_deep(&env, 1, 500, 50, b"bottom\n");
    env.ok(&["verify", "--medium", "{medium}"]);
    let m = Medium::open_read(
        &env.medium,
        &trayback::medium::Unlock::host(&env.state_dir()),
    )
    .unwrap();
    let l = src_listing(&m, &env, 1);
    assert_eq!(l.get(b"d").unwrap().uid, 65534);
}

/// Exchange two names of `dir` (atomically), again and again until `stop`.
fn keep_exchanging(
    dir: &Path,
    a: &str,
    b: &str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let dir = dir.to_path_buf();
    let (a, b) = (a.to_string(), b.to_string());
    std::thread::spawn(move || {
        let fd = rustix::fs::open(&dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        while !stop.load(Ordering::Relaxed) {
            rustix::fs::renameat_with(&fd, &*a, &fd, &*b, rustix::fs::RenameFlags::EXCHANGE)
                .unwrap();
        }
    })
}

#[test]
fn a_tree_changing_under_the_walk_is_never_followed_out_and_never_crashes_it() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let outside = env.path("outside");
    write(&outside.join("secret-file"), b"not part of the source");
    let src = &env.src;
    // Directories big enough that the walk is inside them while they are swapped.
    for dir in ["x", "z", "a", "b"] {
        for i in 0..100 {
            write(&src.join(format!("{dir}/sub{i}/file")), &bytes(i, 100));
        }
    }
    // x and y (a symlink out of the source), z and w (a file), a and b (two directories)
    // keep trading places; v keeps appearing and vanishing.
    std::os::unix::fs::symlink(&outside, src.join("y")).unwrap();
    write(&src.join("w"), b"a file");
    let stop = Arc::new(AtomicBool::new(false));
    let mut churn = vec![
        keep_exchanging(src, "x", "y", stop.clone()),
        keep_exchanging(src, "z", "w", stop.clone()),
        keep_exchanging(src, "a", "b", stop.clone()),
    ];
    let (s2, v) = (stop.clone(), src.join("v"));
    churn.push(std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            let _ = std::fs::create_dir_all(v.join("1/2/3/4"));
            let _ = std::fs::remove_dir_all(&v);
        }
    }));
    let mut ids = Vec::new();
    let mut problems = Vec::new();
    for kind in ["monthly", "micro", "micro", "monthly", "micro", "micro"] {
        let out = env.run(&[
            "backup", "--medium", "{medium}", "--source", "{src}", "--json", "--kind", kind,
        ]);
        let code = out.status.code();
        assert!(
            code == Some(0) || code == Some(3),
            "backup crashed ({:?}):\n{}",
            out.status,
            text(&out.stderr)
        );
        assert!(
            !text(&out.stderr).contains("panicked"),
            "{}",
            text(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push(v["backup"]["id"].as_u64().unwrap());
        problems.extend(v["backup"]["problems"].as_array().unwrap().clone());
    }
    stop.store(true, Ordering::Relaxed);
    for t in churn {
        t.join().unwrap();
    }
    eprintln!("problems recorded: {problems:#?}");
    // Nothing from outside the source is in any backup: every listing, level by level.
    let m = Medium::open_read(
        &env.medium,
        &trayback::medium::Unlock::host(&env.state_dir()),
    )
    .unwrap();
    for id in ids {
        let mut todo = vec![src_listing(&m, &env, id)];
        while let Some(l) = todo.pop() {
            for e in &l.entries {
                assert_ne!(
                    OsStr::from_bytes(&e.name.0),
                    "secret-file",
                    "backup {id} followed a symlink out of the source"
                );
                if let Some(sub) = e.subtree {
                    todo.push(m.listing(&sub).unwrap());
                }
            }
        }
    }
}

/// A directory of more names than the walk takes in one batch (1024): listed whole and in
/// order; an unchanged one keeps its listing (same id); a change in the last batch alone
/// (the batches before written from the parent's listing) and a name gone from the middle
/// batch and one added are stored exactly (checked by restoring each backup).
#[test]
fn a_directory_of_several_batches_backs_up_and_keeps_or_rewrites_its_listing() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let big = env.src.join("big");
    std::fs::create_dir(&big).unwrap();
    let n = 2600;
    let name = |i: usize| format!("f{i:05}");
    for i in 0..n {
        write(&big.join(name(i)), format!("file {i}\n").as_bytes());
    }
    let m = || {
        Medium::open_read(
            &env.medium,
            &trayback::medium::Unlock::host(&env.state_dir()),
        )
        .unwrap()
    };
    let big_id = |id: u64| src_listing(&m(), &env, id).get(b"big").unwrap().subtree;
    let first = env.backup(&["--kind", "monthly"]);
    let l = m().listing(&big_id(first).unwrap()).unwrap();
    let names: Vec<_> = l.entries.iter().map(|e| e.name.lossy()).collect();
    assert_eq!(names, (0..n).map(name).collect::<Vec<_>>());
    let same = env.backup(&["--kind", "micro"]);
    assert_eq!(
        big_id(same),
        big_id(first),
        "an unchanged directory keeps its listing"
    );

    write(&big.join(name(2500)), b"changed in the last batch\n");
    let last = env.backup(&["--kind", "micro"]);
    assert_ne!(big_id(last), big_id(first));
    let want_last = env.path("want-last");
    snapshot(&env.src, &want_last);

    std::fs::remove_file(big.join(name(1500))).unwrap();
    write(&big.join("f01500a"), b"added in the middle batch\n");
    let middle = env.backup(&["--kind", "micro"]);
    assert_same(&env.src, &env.restore(middle, "restored-middle"));
    assert_same(&want_last, &env.restore(last, "restored-last"));
}
