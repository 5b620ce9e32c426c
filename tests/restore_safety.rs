//! Restore as root in a tree others can write to: nothing a user swaps in while we restore
//! redirects a write, nothing in the way is followed, nothing newer is replaced without
//! `--overwrite`, and any depth restores within the default descriptor limit.

#[path = "support/util.rs"]
mod util;
use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use trayback::listing::{Bytes, Entry, EntryKind};
use util::*;

const NOBODY: u32 = 65534;

/// Everything about a tree that a stray root write could change: names, kinds, modes,
/// owners, sizes, contents, link targets (symlinks are not followed).
fn state(p: &Path) -> Vec<String> {
    use std::hash::{Hash, Hasher};
    let mut out = Vec::new();
    let mut todo = vec![p.to_path_buf()];
    while let Some(d) = todo.pop() {
        let md = fs::symlink_metadata(&d).unwrap();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let what = if md.file_type().is_symlink() {
            format!("-> {:?}", fs::read_link(&d).unwrap())
        } else if md.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            todo.extend(names);
            "dir".into()
        } else if md.is_file() {
            fs::read(&d).unwrap().hash(&mut h);
            format!("{} {:x}", md.len(), h.finish())
        } else {
            format!("{:?} mtime {}", md.file_type(), md.mtime())
        };
        out.push(format!(
            "{} {:o} {}:{} {}",
            d.display(),
            md.mode(),
            md.uid(),
            md.gid(),
            what
        ));
    }
    out.sort();
    out
}

fn set_mtime(p: &Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

fn in_place(env: &Env, id: u64, extra: &[&str]) -> Output {
    let id = id.to_string();
    let mut args = vec![
        "restore",
        "--medium",
        "{medium}",
        "--backup",
        &id,
        "--in-place",
    ];
    args.extend_from_slice(extra);
    env.run(&args)
}

/// A clean end: success, kept entries (3), or one line saying why it stopped.
fn assert_clean(out: &Output) {
    let code = out.status.code();
    assert!(
        matches!(code, Some(0 | 1 | 3)),
        "{code:?}: {}",
        text(&out.stderr)
    );
    if code == Some(1) {
        assert_eq!(
            text(&out.stderr).trim().lines().count(),
            1,
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_users_directory_swapped_for_a_symlink_while_restoring_never_redirects_root_writes() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    // pub/ and pub/userdir/ belong to a local user, who may rename and replace userdir.
    let pubdir = env.src.join("pub");
    let user = pubdir.join("userdir");
    for s in 0..8 {
        for f in 0..150 {
            write(&user.join(format!("s{s:02}/f{f:04}")), &bytes(f, 64));
        }
    }
    for f in 0..200 {
        write(&user.join(format!("f{f:04}")), b"user file");
    }
    symlink("f0000", user.join("link")).unwrap();
    fs::set_permissions(user.join("s00"), fs::Permissions::from_mode(0o777)).unwrap();
    if is_root() {
        chown_tree(&pubdir, NOBODY);
    }
    let b = env.backup(&["--kind", "monthly"]);
    // The victim: a directory of root's outside the target, with the same names, older.
    let victim = env.path("victim");
    for s in 0..8 {
        write(&victim.join(format!("s{s:02}/f0000")), b"root's file");
        set_mtime(&victim.join(format!("s{s:02}/f0000")), 1_000_000_000);
    }
    write(&victim.join("f0000"), b"root's file");
    set_mtime(&victim.join("f0000"), 1_000_000_000);
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o755)).unwrap();
    let before = state(&victim);
    let to = env.path("to");
    let to_user = to.join(user.strip_prefix("/").unwrap());
    let mut swaps = 0;
    for round in 0..9 {
        let (args, at): (Vec<&str>, &Path) = match round % 3 {
            0 => (vec!["--in-place"], &user),
            1 => (vec!["--in-place", "--overwrite"], &user),
            _ => (vec!["--to", to.to_str().unwrap()], &to_user),
        };
        if round % 3 == 2 && !to_user.exists() {
            env.restore(b, "to"); // the user's directory is there before the attack
            if is_root() {
                chown_tree(to_user.parent().unwrap(), NOBODY);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let attacker = {
            let (stop, count) = (stop.clone(), count.clone());
            let (at, victim) = (at.to_path_buf(), victim.clone());
            let real = at.with_file_name("userdir.real");
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if fs::rename(&at, &real).is_ok() {
                        if symlink(&victim, &at).is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                            std::thread::yield_now();
                            let _ = fs::remove_file(&at);
                        }
                        let _ = fs::rename(&real, &at);
                    }
                }
                real
            })
        };
        let id = b.to_string();
        let mut all = vec!["restore", "--medium", "{medium}", "--backup", &id];
        all.extend(args);
        let out = env.run(&all);
        stop.store(true, Ordering::Relaxed);
        let real = attacker.join().unwrap();
        swaps += count.load(Ordering::Relaxed);
        // Tidy up whatever the attack left.
        if fs::symlink_metadata(at).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(at).unwrap();
        }
        if real.exists() {
            if at.exists() {
                fs::remove_dir_all(&real).unwrap();
            } else {
                fs::rename(&real, at).unwrap();
            }
        }
        eprintln!(
            "round {round}: exit {:?} {}",
            out.status.code(),
            text(&out.stderr).trim()
        );
        assert_clean(&out);
        assert_eq!(state(&victim), before, "round {round}: the victim changed");
    }
    assert!(swaps > 0, "the attack never ran");
}

#[test]
fn symlinks_where_the_backup_has_directories_are_never_followed() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("a/b/file"), b"b");
    write(&env.src.join("a/c/file"), b"c");
    let b = env.backup(&["--kind", "monthly"]);
    let outside = env.path("outside");
    write(&outside.join("keep"), b"keep");
    let before = state(&outside);
    let rel = env.src.strip_prefix("/").unwrap();

    // --to: a symlink below the target, deeper than its first level.
    let to = env.path("to");
    fs::create_dir_all(to.join(rel).join("a")).unwrap();
    symlink(&outside, to.join(rel).join("a/b")).unwrap();
    let out = env.try_restore(b, &to);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("kept symlink"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(fs::read(to.join(rel).join("a/c/file")).unwrap(), b"c");
    assert_eq!(state(&outside), before);

    // --to: the target itself a symlink.
    let linked = env.path("linked");
    symlink(&outside, &linked).unwrap();
    let out = env.try_restore(b, &linked);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("symlink"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(state(&outside), before);

    // --in-place: kept without --overwrite, replaced by a real directory with it.
    fs::remove_dir_all(env.src.join("a/b")).unwrap();
    symlink(&outside, env.src.join("a/b")).unwrap();
    let out = in_place(&env, b, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("kept symlink"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(state(&outside), before);
    let out = in_place(&env, b, &["--overwrite"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(fs::symlink_metadata(env.src.join("a/b")).unwrap().is_dir());
    assert_eq!(fs::read(env.src.join("a/b/file")).unwrap(), b"b");
    assert_eq!(state(&outside), before);
}

#[test]
fn in_place_without_overwrite_replaced_newer_entries_of_other_kinds() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let s = &env.src;
    write(&s.join("f"), b"old");
    write(&s.join("ff"), b"old ff");
    symlink("old-target", s.join("s")).unwrap();
    symlink("t1", s.join("ls")).unwrap();
    for p in ["p", "lp"] {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            s.join(p),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o640),
            0,
        )
        .unwrap();
    }
    write(&s.join("h1"), b"linked");
    fs::hard_link(s.join("h1"), s.join("h2")).unwrap();
    write(&s.join("dd/inner"), b"inner");
    for p in ["f", "ff", "s", "ls", "p", "lp", "h1", "dd/inner", "dd"] {
        set_mtime(&s.join(p), 1_500_000_000);
    }
    let b = env.backup(&["--kind", "monthly"]);

    // After the backup, each name gets something newer.
    let newer = |p: &str| {
        let p = s.join(p);
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            fs::remove_dir_all(&p).unwrap()
        } else {
            fs::remove_file(&p).unwrap()
        }
        p
    };
    write(&newer("s"), b"user s"); // a file where the backup has a symlink
    write(&newer("p"), b"user p"); // a file where it has a FIFO
    write(&newer("h2"), b"user h2"); // a file at a hard link's second name
    symlink("t2", newer("ls")).unwrap(); // a newer symlink
    set_mtime(&s.join("lp"), 1_900_000_000); // a newer FIFO
    symlink("user-link", newer("f")).unwrap(); // a symlink where it has a file
    write(&newer("dd"), b"user dd"); // a file where it has a directory
    newer("ff");
    let deep: PathBuf = std::iter::once("ff".to_string())
        .chain((0..40).map(|i| format!("d{i}")))
        .collect();
    write(&s.join(&deep).join("x"), b"deep"); // a directory where it has a file
    let kept = ["s", "p", "h2", "ls", "lp", "f", "dd", "ff"];
    let before = state(s);

    let out = in_place(&env, b, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    for k in kept {
        assert!(
            said.contains(&format!("{} ", s.join(k).display())),
            "{k}: {said}"
        );
    }
    assert!(
        said.contains("kept newer symlink") && said.contains("kept newer FIFO"),
        "{said}"
    );
    assert!(said.contains("where the backup has a directory"), "{said}");
    assert_eq!(state(s), before, "something kept was replaced");
    let json = in_place(&env, b, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["kept"].as_array().unwrap().len(), kept.len(), "{v}");
    assert_eq!(state(s), before);

    let out = in_place(&env, b, &["--overwrite"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(fs::read_link(s.join("s")).unwrap(), Path::new("old-target"));
    assert_eq!(fs::read_link(s.join("ls")).unwrap(), Path::new("t1"));
    assert!(fs::symlink_metadata(s.join("p"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        fs::symlink_metadata(s.join("lp")).unwrap().mtime(),
        1_500_000_000
    );
    assert_eq!(fs::read(s.join("f")).unwrap(), b"old");
    assert_eq!(fs::read(s.join("ff")).unwrap(), b"old ff");
    assert_eq!(fs::read(s.join("dd/inner")).unwrap(), b"inner");
    let (h1, h2) = (
        fs::metadata(s.join("h1")).unwrap(),
        fs::metadata(s.join("h2")).unwrap(),
    );
    assert_eq!(
        (h1.ino(), fs::read(s.join("h2")).unwrap()),
        (h2.ino(), b"linked".to_vec())
    );
}

/// Open `names` one after another below `at`, without following symlinks.
fn descend(at: &Path, names: impl Iterator<Item = &'static str>) -> std::os::fd::OwnedFd {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd = rustix::fs::open(at, flags, Mode::empty()).unwrap();
    for n in names {
        fd = rustix::fs::openat(&fd, n, flags, Mode::empty()).unwrap();
    }
    fd
}

const DEEP: usize = 10_000;

/// Restore with the default limit of 1024 descriptors and a main-thread stack of 1 MiB
/// (so a recursive walk of the plan would overflow).
fn restore_bounded(env: &Env, id: u64, to: &Path) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["restore", "--medium"])
        .env("TRAYBACK_STATE_DIR", env.state_dir())
        .arg(&env.medium)
        .args(["--backup", &id.to_string(), "--to"])
        .arg(to);
    unsafe {
        cmd.pre_exec(|| {
            use rustix::process::{setrlimit, Resource, Rlimit};
            let lim = |n| Rlimit {
                current: Some(n),
                maximum: Some(n),
            };
            setrlimit(Resource::Nofile, lim(1024))?;
            setrlimit(Resource::Stack, lim(1 << 20))?;
            Ok(())
        });
    }
    cmd.output().unwrap()
}

fn check_deep(bottom_parent: &Path) {
    let fd = descend(bottom_parent, std::iter::repeat_n("d", DEEP - 1));
    let f = rustix::fs::openat(
        &fd,
        "leaf",
        rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut fs::File::from(f), &mut data).unwrap();
    assert_eq!(data, b"at the bottom");
    let st = rustix::fs::fstat(&fd).unwrap();
    assert_eq!(
        st.st_mode & 0o7777,
        0o750,
        "directory attributes at the bottom"
    );
}

#[test]
fn a_10000_deep_tree_restores_within_1024_descriptors_and_a_small_stack() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("leaf"), b"at the bottom");
    env.backup(&["--kind", "monthly"]);
    // Craft the deep tree on the medium: deep/d/d/.../d/leaf, a file every 100 levels.
    let m = trayback::medium::Medium::open_read(
        &env.medium,
        &trayback::medium::Unlock::host(&env.state_dir()),
    )
    .unwrap();
    let h = m.header(trayback::ids::BackupId(1)).unwrap();
    let mut leaf = None;
    trayback::index::walk(&m, &h.root, Path::new("/"), &mut |_, e| {
        if e.name.0 == b"leaf" {
            leaf = Some(e.clone());
        }
        Ok(trayback::index::Step::Descend)
    })
    .unwrap();
    drop(m);
    let leaf = leaf.unwrap();
    let id = craft_backup(&env, |m| {
        let mut sub = put_listing(m, vec![leaf.clone()]);
        let mut top = Vec::new();
        for level in (0..DEEP).rev() {
            let mut d = Entry::new(
                Bytes(if level == 0 {
                    b"deep".to_vec()
                } else {
                    b"d".to_vec()
                }),
                EntryKind::Dir,
            );
            d.mode = 0o750;
            d.mtime_ns = 1_500_000_000_000_000_000;
            d.subtree = Some(sub);
            let mut entries = vec![d];
            if level % 100 == 0 {
                let mut f = leaf.clone();
                f.name = Bytes(b"f".to_vec());
                entries.push(f);
            }
            if level == 0 {
                top = entries; // into src's own listing
            } else {
                sub = put_listing(m, entries);
            }
        }
        top
    });
    let to = env.path("to");
    let out = restore_bounded(&env, id, &to);
    assert!(out.status.success(), "{}", text(&out.stderr));
    check_deep(&to.join(env.src.strip_prefix("/").unwrap()).join("deep"));
}

#[test]
fn a_10000_deep_tree_backs_up_and_restores() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd = rustix::fs::open(&env.src, flags, Mode::empty()).unwrap();
    rustix::fs::mkdirat(&fd, "deep", Mode::from_raw_mode(0o750)).unwrap();
    fd = rustix::fs::openat(&fd, "deep", flags, Mode::empty()).unwrap();
    for _ in 0..DEEP - 1 {
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o750)).unwrap();
        fd = rustix::fs::openat(&fd, "d", flags, Mode::empty()).unwrap();
    }
    let leaf = rustix::fs::openat(
        &fd,
        "leaf",
        OFlags::WRONLY | OFlags::CREATE,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    std::io::Write::write_all(&mut fs::File::from(leaf), b"at the bottom").unwrap();
    let id = env.backup(&["--kind", "monthly"]);
    let to = env.path("to");
    let out = restore_bounded(&env, id, &to);
    assert!(out.status.success(), "{}", text(&out.stderr));
    check_deep(&to.join(env.src.strip_prefix("/").unwrap()).join("deep"));
}

#[test]
fn a_kept_first_hard_link_name_is_not_linked_to_by_the_other_names() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let s = &env.src;
    write(&s.join("h1"), b"backed up");
    fs::hard_link(s.join("h1"), s.join("h2")).unwrap();
    fs::hard_link(s.join("h1"), s.join("h3")).unwrap();
    set_mtime(&s.join("h1"), 1_500_000_000);
    let b = env.backup(&["--kind", "monthly"]);
    // h1 becomes a newer, separate file; h2 and h3 go away.
    fs::remove_file(s.join("h1")).unwrap();
    write(&s.join("h1"), b"user's newer h1");
    fs::remove_file(s.join("h2")).unwrap();
    fs::remove_file(s.join("h3")).unwrap();
    let out = in_place(&env, b, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(fs::read(s.join("h1")).unwrap(), b"user's newer h1");
    assert_eq!(fs::read(s.join("h2")).unwrap(), b"backed up");
    let (h1, h2, h3) = (
        fs::metadata(s.join("h1")).unwrap(),
        fs::metadata(s.join("h2")).unwrap(),
        fs::metadata(s.join("h3")).unwrap(),
    );
    assert_eq!(h2.ino(), h3.ino());
    assert_ne!(h1.ino(), h2.ino());
}
