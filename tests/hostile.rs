//! A hostile index (`..`, absolute names, symlink tricks) never makes restore write outside
//! its target.

#[path = "support/util.rs"]
mod util;
use std::fs;
use trayback::ids::BackupId;
use trayback::listing::{Bytes, Entry, EntryKind};
use trayback::medium::Medium;
use util::*;

/// Commit a copy of backup 1 whose listing of `src` gains `extra`, as backup 2.
fn craft(env: &Env, extra: Vec<Entry>) -> u64 {
    craft_backup(env, |_| extra)
}

fn file_entry(name: &[u8], env: &Env) -> Entry {
    // Reuse a real stored block so only the name is hostile.
    let m = Medium::open_read(
        &env.medium,
        &trayback::medium::Unlock::host(&env.state_dir()),
    )
    .unwrap();
    let h = m.header(BackupId(1)).unwrap();
    let mut found = None;
    trayback::index::walk(&m, &h.root, std::path::Path::new("/"), &mut |_, e| {
        if e.kind == EntryKind::File && found.is_none() {
            found = Some(e.clone());
        }
        Ok(trayback::index::Step::Descend)
    })
    .unwrap();
    let mut e = found.unwrap();
    e.name = Bytes(name.to_vec());
    e
}

fn setup() -> Env {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("payload"), b"attacker-controlled");
    env.backup(&["--kind", "monthly"]);
    env
}

fn assert_refused(env: &Env, id: u64, needle: &str) {
    let target = env.path("target");
    let out = env.try_restore(id, &target);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "restore of a hostile backup succeeded"
    );
    assert!(
        err.contains("restore refused") && err.contains(needle),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // Nothing written anywhere: not outside, and not even inside the target.
    assert!(!env.path("x").exists() && !env.path("evil").exists());
    assert!(!target.exists() || fs::read_dir(&target).unwrap().next().is_none());
}

#[test]
fn dot_dot_entries_are_refused() {
    let env = setup();
    let id = craft(&env, vec![file_entry(b"..", &env)]);
    assert_refused(&env, id, "\"..\"");
}

#[test]
fn names_with_slashes_and_absolute_names_are_refused() {
    let env = setup();
    let id = craft(&env, vec![file_entry(b"../../x", &env)]);
    assert_refused(&env, id, "'/'");
    let env = setup();
    let abs = env.path("evil");
    let id = craft(
        &env,
        vec![file_entry(abs.to_str().unwrap().as_bytes(), &env)],
    );
    assert_refused(&env, id, "'/'");
    let env = setup();
    let id = craft(&env, vec![file_entry(b"/etc/x", &env)]);
    assert_refused(&env, id, "'/'");
}

#[test]
fn a_symlink_and_a_directory_of_the_same_name_are_refused() {
    let env = setup();
    let mut link = file_entry(b"d", &env);
    link.kind = EntryKind::Symlink;
    link.blocks.clear();
    link.size = 0;
    link.target = Some(Bytes(env.tmp.path().to_str().unwrap().as_bytes().to_vec()));
    let mut dir = file_entry(b"d", &env);
    dir.kind = EntryKind::Dir;
    dir.blocks.clear();
    dir.size = 0;
    dir.subtree = Some(trayback::ids::BlockId::of(b"whatever"));
    let id = craft(&env, vec![link, dir]);
    let target = env.path("target");
    let out = env.try_restore(id, &target);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("repeated"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn restore_never_writes_through_a_symlink_in_the_target() {
    let env = setup();
    // The target already has a symlink where the backup has a directory.
    let target = env.path("target");
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir_all(&target).unwrap();
    let first = env.src.components().nth(1).unwrap().as_os_str().to_owned(); // "tmp"
    std::os::unix::fs::symlink(&outside, target.join(&first)).unwrap();
    let out = env.try_restore(1, &target);
    // Kept and reported (exit 3, "problems"), never followed.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("kept symlink"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "wrote through the symlink"
    );
}

#[test]
fn a_name_longer_than_name_max_is_refused_before_anything_is_created() {
    let env = setup();
    let id = craft(&env, vec![file_entry(&[b'n'; 256], &env)]);
    assert_refused(&env, id, "NAME_MAX");
    // Deeper down too: not even the directories above it are created.
    let env = setup();
    let long = file_entry(&[b'x'; 300], &env);
    let mut sub = file_entry(b"sub", &env);
    let id = craft_backup(&env, |m| {
        sub.kind = EntryKind::Dir;
        sub.blocks.clear();
        sub.size = 0;
        sub.subtree = Some(put_listing(m, vec![long]));
        vec![sub]
    });
    assert_refused(&env, id, "NAME_MAX");
    // 255 bytes is allowed.
    let env = setup();
    let id = craft(&env, vec![file_entry(&[b'm'; 255], &env)]);
    let to = env.restore(id, "ok");
    assert!(to.join("m".repeat(255)).exists());
}

/// A file whose number of blocks cannot hold its size (FORMAT.md "Listings": 100 MiB in one
/// block, over the 1 MiB data-block cap) is refused when its listing is decoded, before any
/// block is read or anything restored; `verify` names it as damage too.
#[test]
fn a_block_list_that_cannot_hold_the_file_size_is_refused() {
    let env = setup();
    let mut f = file_entry(b"short", &env);
    f.size = 100 << 20;
    let id = craft(&env, vec![f]);
    let target = env.path("target");
    let out = env.try_restore(id, &target);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "restored: {err}");
    assert!(err.contains("cannot hold"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!target.exists() || fs::read_dir(&target).unwrap().next().is_none());
    let out = env.run(&["verify", "--medium", "{medium}", &id.to_string()]);
    assert!(!out.status.success());
    assert!(
        (text(&out.stdout) + &text(&out.stderr)).contains("cannot hold"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Blocks that hold more than the size a file records (a count that fits, a size one byte
/// short of its one block) are refused as damage before a byte past the size is written.
#[test]
fn blocks_longer_than_the_recorded_size_are_refused() {
    let env = setup();
    let mut f = file_entry(b"shorter", &env);
    f.size -= 1;
    let id = craft(&env, vec![f]);
    let target = env.path("target");
    let out = env.try_restore(id, &target);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "restored: {err}");
    assert!(err.contains("more than the"), "{err}");
    let restored = fs::read_dir(&target).ok().map(|_| {
        let p = target
            .join(env.src.strip_prefix("/").unwrap())
            .join("shorter");
        fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    });
    assert!(restored.unwrap_or(0) == 0, "{restored:?}");
}
