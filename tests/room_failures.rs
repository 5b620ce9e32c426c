//! Making room when things go wrong (issue 10, from an attack on it): a full file system, a
//! damaged pack trailer, garbage left by an interrupted collection, a crash leftover in
//! `tmp/`, a crafted medium, sources that outgrew the last backup, rolling data, a rotted
//! block with an intact duplicate. Each test states the promise: nothing is pared for
//! nothing, every pare is reported, the dry run is the run, memory stays bounded, committed
//! data is never lost. (Doc comments below say what each once broke.)

#[path = "support/pare.rs"]
mod pare;
#[path = "support/util.rs"]
mod util;
use chrono::{DateTime, Duration, Utc};
use pare::*;
use std::fs;
use std::io::Write;
use util::*;

fn pare_free(env: &Env, n: u64, at: DateTime<Utc>, dry: bool) -> std::process::Output {
    let n = n.to_string();
    let at = at.to_rfc3339();
    let mut a = vec![
        "pare", "--medium", "{medium}", "--free", &n, "--at", &at, "--json",
    ];
    if dry {
        a.push("--dry-run");
    }
    env.run(&a)
}

fn verify_all(env: &Env) {
    env.ok(&["verify", "--medium", "{medium}", "--all", "--read-all"]);
}

/// Fill the medium's file system (root's reserve too) to `leave` bytes free.
fn fill(env: &Env, leave: u64) {
    let p = env.medium.join("filler");
    let mut f = fs::File::create(&p).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
    f.sync_all().unwrap();
}

/// A monthly, then dailies that each add a file kept from then on and a file deleted the day
/// after, in one pack: paring a daily leaves its pack partly live (GC must rewrite it).
fn dailies_with_partly_dead_packs(env: &Env, n: i64) {
    write(&env.src.join("base.bin"), &bytes(1, 8 << 20));
    backup_at(env, "monthly", t0());
    fs::create_dir_all(env.src.join("keep")).unwrap();
    for d in 1..=n {
        write(
            &env.src.join(format!("keep/a{d}")),
            &bytes(100 + d as u64, 3 << 20),
        );
        write(
            &env.src.join(format!("b{d}")),
            &bytes(200 + d as u64, 3 << 20),
        );
        backup_at(env, "daily", t0() + Duration::days(d));
        fs::remove_file(env.src.join(format!("b{d}"))).unwrap();
    }
    backup_at(
        env,
        "micro",
        t0() + Duration::days(n) + Duration::minutes(15),
    );
}

#[test]
fn a_full_file_system_never_makes_room_plans_pare_for_nothing() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "160M") else {
        return;
    };
    env.init_plaintext();
    dailies_with_partly_dead_packs(&env, 6);
    let all = backup_ids(&env);
    fill(&env, 1 << 20);
    let at = t0() + Duration::days(6) + Duration::minutes(20);
    let start_free = free(&env);
    for round in 0..4 {
        let before = backup_ids(&env);
        let out = pare_free(&env, 5 << 20, at, false);
        let after = backup_ids(&env);
        let gained = free(&env).saturating_sub(start_free);
        verify_all(&env); // committed data is intact: the loss is history pared for nothing
        assert!(
            after == before || gained >= 1 << 20, // each pare was planned to free ~3 MB
            "round {round}: pared {:?} (of {all:?}) and the file system gained {gained} bytes:\n{}",
            before
                .iter()
                .filter(|i| !after.contains(i))
                .collect::<Vec<_>>(),
            text(&out.stderr)
        );
    }
}

#[test]
fn a_damaged_pack_trailer_does_not_make_room_plans_pare_for_nothing() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "96M") else {
        return;
    };
    env.init_plaintext();
    write(&env.src.join("base.bin"), &bytes(1, 6 << 20));
    backup_at(&env, "monthly", t0());
    for d in 1..=3 {
        let f = env.src.join(format!("d{d}"));
        write(&f, &bytes(10 + d as u64, 3 << 20));
        backup_at(&env, "daily", t0() + Duration::days(d));
        fs::remove_file(f).unwrap();
    }
    backup_at(
        &env,
        "micro",
        t0() + Duration::days(3) + Duration::minutes(15),
    );
    // Flip one byte in the trailer of the monthly's data pack (writer 1, not listings).
    let mut damaged = false;
    for sub in fs::read_dir(env.medium.join("trayback/packs")).unwrap() {
        for p in fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = p.unwrap().path();
            let mut d = fs::read(&p).unwrap();
            let foot = d.len() - 64;
            let writer = u64::from_le_bytes(d[foot..foot + 8].try_into().unwrap());
            let flags = u32::from_le_bytes(d[foot + 8..foot + 12].try_into().unwrap());
            let trailer = u64::from_le_bytes(d[foot + 16..foot + 24].try_into().unwrap()) as usize;
            if writer == 1 && flags & 2 == 0 && !damaged {
                d[trailer + 10] ^= 0xff;
                fs::write(&p, &d).unwrap();
                damaged = true;
            }
        }
    }
    assert!(damaged);
    // (verify --read-all reports the trailer; every record still reads and restores.)
    env.restore(1, "r1");
    let at = t0() + Duration::days(3) + Duration::minutes(20);
    for round in 0..3 {
        let before = backup_ids(&env);
        let was = free(&env);
        let out = pare_free(&env, was + (2 << 20), at, false);
        let after = backup_ids(&env);
        let gained = free(&env).saturating_sub(was);
        eprintln!(
            "round {round}: {before:?} -> {after:?} gained {gained}: {}",
            text(&out.stderr)
        );
        assert!(
            after == before || gained >= 1 << 20, // each pare was planned to free ~3 MB
            "round {round}: pared {:?}, the file system gained {gained} bytes:\n{}",
            before
                .iter()
                .filter(|i| !after.contains(i))
                .collect::<Vec<_>>(),
            text(&out.stderr)
        );
    }
}

#[test]
fn garbage_left_by_an_interrupted_gc_is_reclaimed_when_making_room() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "40M") else {
        return;
    };
    env.init_plaintext();
    write(&env.src.join("base.bin"), &bytes(1, 6_000_000));
    backup_at(&env, "monthly", t0());
    write(&env.src.join("big.bin"), &bytes(2, 12_000_000));
    backup_at(&env, "daily", t0() + Duration::hours(1));
    fs::remove_file(env.src.join("big.bin")).unwrap();
    backup_at(&env, "micro", t0() + Duration::minutes(75));
    assert_eq!(backup_ids(&env), vec![1, 2, 3]);
    let at = (t0() + Duration::minutes(80)).to_rfc3339();
    // A reader (a restore, `ls`) holds the medium: the pare commits, then waits to GC. It is
    // killed there (the agent's job cancelled, the machine shut down, kill -9: the same).
    let readers = fs::File::open(env.medium.join("trayback/locks/readers")).unwrap();
    rustix::fs::flock(&readers, rustix::fs::FlockOperation::LockShared).unwrap();
    let want = (free(&env) + 5_000_000).to_string();
    let mut child = std::process::Command::new(bin())
        .args(["pare", "--medium"])
        .arg(&env.medium)
        .args(["--free", &want, "--at", &at])
        .env("TRAYBACK_LOG", "warn")
        .env("TRAYBACK_STATE_DIR", env.state_dir())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while backup_ids(&env) != vec![1, 3] {
        assert!(t.elapsed().as_secs() < 30, "the pare never committed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(readers);
    verify_all(&env); // nothing committed lost
                      // 11 MiB of #2 is dead on the medium. A micro backup adding 14 MB fits once it is
                      // reclaimed (12.7 MiB free + 11.4 MiB dead), but the room plan does not count it and no
                      // command ever reclaims it.
    write(&env.src.join("new.bin"), &bytes(3, 14_000_000));
    let out = env.run(&[
        "backup",
        "--medium",
        "{medium}",
        "--source",
        "{src}",
        "--kind",
        "micro",
        "--at",
        &(t0() + Duration::minutes(90)).to_rfc3339(),
    ]);
    assert!(
        out.status.success(),
        "a backup that fits once the garbage is reclaimed was refused:\n{}",
        text(&out.stderr)
    );
}

#[test]
fn the_dry_run_equals_the_real_run_after_a_crash_leftover() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "64M") else {
        return;
    };
    env.init_plaintext();
    write(&env.src.join("base.bin"), &bytes(1, 6_000_000));
    backup_at(&env, "monthly", t0());
    for d in 1..=3 {
        let f = env.src.join(format!("d{d}"));
        write(&f, &bytes(10 + d as u64, 3_000_000));
        backup_at(&env, "daily", t0() + Duration::days(d));
        fs::remove_file(f).unwrap();
    }
    backup_at(
        &env,
        "micro",
        t0() + Duration::days(3) + Duration::minutes(15),
    );
    // What a backup killed mid-write leaves in tmp/ (recovery deletes it on the next write).
    write(
        &env.medium
            .join("trayback/tmp/0123456789abcdef0123456789abcdef.pack"),
        &bytes(9, 20_000_000),
    );
    let at = t0() + Duration::days(3) + Duration::minutes(20);
    let want = free(&env) + 5_000_000;
    let dry = json(&text(&pare_free(&env, want, at, true).stdout));
    let real = json(&text(&pare_free(&env, want, at, false).stdout));
    let shown: Vec<u64> = dry["to_free"]["victims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    let done: Vec<u64> = real["pared"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(shown, done, "dry run {dry}\nreal run {real}");
}

/// `media show --reach` (and `simulate --from-medium`) on a stranger's disk: the room plan's
/// blob graph (`maintain::sharing`) keeps every reference of every distinct listing, so a
/// few hundred KB of well-compressing listings make it hold gigabytes (the other readers,
/// `verify` and `live_blobs`, hold one listing at a time or distinct blobs only).
#[test]
fn reach_on_a_crafted_medium_holds_bounded_memory() {
    use trayback::listing::{Bytes, Entry, EntryKind};
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    write(&env.src.join("payload"), b"x");
    env.backup(&["--kind", "monthly"]);
    const K: usize = 64; // distinct listings
    const N: usize = 1 << 20; // references each (32 MiB raw, a few KB stored)
    let blk = trayback::ids::BlockId([7; 32]);
    craft_backup(&env, |w| {
        (0..K)
            .map(|k| {
                let mut f = Entry::new(Bytes(format!("f{k}").into_bytes()), EntryKind::File);
                f.size = (N as u64) << 18;
                f.blocks = vec![blk; N];
                let mut d = Entry::new(Bytes(format!("d{k:04}").into_bytes()), EntryKind::Dir);
                d.mode = 0o755;
                d.subtree = Some(put_listing(w, vec![f]));
                d
            })
            .collect()
    });
    let on_disk = dir_bytes(&env.medium.join("trayback"));
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(bin())
        .args(["media", "show"])
        .arg(&env.medium)
        .arg("--reach")
        .env("TRAYBACK_LOG", "warn")
        .env("TRAYBACK_STATE_DIR", env.state_dir())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    let rss_kb: u64 = err.lines().last().unwrap().trim().parse().unwrap();
    eprintln!("medium {on_disk} bytes on disk; media show --reach peak RSS {rss_kb} KiB");
    // One listing's worth (32 MiB raw + its decoded ids, 64 MiB) is what the format allows a
    // reader to hold at once; allow twice that (without counting repeats: 256 MiB more).
    assert!(
        rss_kb < 2 * 96 * 1024,
        "{on_disk} bytes of medium made `media show --reach` hold {} MiB",
        rss_kb / 1024
    );
}

/// `maintain::needed_for_backup` asks for the last backup's total (plus margin) whenever that
/// fits, without looking at what changed. When the sources grew by more than that, no room is
/// made: the backup runs into ENOSPC, and so does every retry, though the room plan could make
/// room (here: paring the dailies frees 25 MiB; the backup needs ~4 MiB more than is free).
#[test]
fn a_backup_larger_than_the_last_one_gets_room() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "128M") else {
        return;
    };
    env.init_plaintext();
    write(&env.src.join("base.bin"), &bytes(1, 8 << 20));
    backup_at(&env, "monthly", t0());
    for d in 1..=5 {
        let f = env.src.join(format!("d{d}"));
        write(&f, &bytes(10 + d as u64, 5 << 20));
        backup_at(&env, "daily", t0() + Duration::days(d));
        fs::remove_file(f).unwrap();
    }
    backup_at(
        &env,
        "micro",
        t0() + Duration::days(5) + Duration::minutes(15),
    );
    // Root may use the reserved blocks too: make the new data exceed all of it.
    let st = rustix::fs::statvfs(&env.medium).unwrap();
    let root_free = st.f_bfree * st.f_frsize;
    write(
        &env.src.join("new.bin"),
        &bytes(99, (root_free + (4 << 20)) as usize),
    );
    for r in 0..2 {
        let out = env.run(&[
            "backup",
            "--medium",
            "{medium}",
            "--source",
            "{src}",
            "--kind",
            "micro",
            "--json",
            "--at",
            &(t0() + Duration::days(5) + Duration::minutes(30 + r)).to_rfc3339(),
        ]);
        assert!(
            out.status.success(),
            "attempt {r}: {} free, 25 MiB of dailies to pare, yet:\n{}",
            free(&env),
            text(&out.stderr)
        );
    }
}

/// When garbage collection fails after the room plan's pares are committed (here ENOSPC), the
/// job's outcome says nothing was pared (`pared_before: []`): `job::run` drops what
/// `make_room` did on its `Err` path.
#[test]
fn every_pare_made_is_reported() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "160M") else {
        return;
    };
    env.init_plaintext();
    dailies_with_partly_dead_packs(&env, 6);
    fill(&env, 0);
    write(&env.src.join("new.bin"), &bytes(77, 4 << 20));
    let before = backup_ids(&env);
    let out = env.run(&[
        "backup",
        "--medium",
        "{medium}",
        "--source",
        "{src}",
        "--kind",
        "micro",
        "--json",
        "--at",
        &(t0() + Duration::days(6) + Duration::minutes(30)).to_rfc3339(),
    ]);
    let v = json(&text(&out.stdout));
    let after = backup_ids(&env);
    let gone: Vec<u64> = before.into_iter().filter(|i| !after.contains(i)).collect();
    let reported: Vec<u64> = v["pared_before"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(reported, gone, "{v}");
}

/// A rolling workload (data turned over in a week: logs, recordings, dumps; every version
/// lives in a week of consecutive backups) on a medium ten times the data: once it fills,
/// every pare the chart offers frees nothing on its own, the room plan passes each over
/// (`Skip::FreesNothing`, judged one at a time against a tree where the ones passed over
/// stay), no new full fits either, and no backup is ever made again. Micro backups past their
/// age are not pared meanwhile (step 100 runs only after a backup was made).
#[test]
fn simulate_a_rolling_workload_on_a_roomy_medium_keeps_backing_up() {
    let out = std::process::Command::new(bin())
        .args([
            "simulate",
            "--days",
            "70",
            "--capacity",
            "64M",
            "--full-size",
            "6M",
        ])
        .args([
            "--change-size",
            "weekly=6M",
            "--change-size",
            "daily=877714",
        ])
        .args(["--change-size", "micro=9362", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut run = 0u64;
    let mut longest = 0u64;
    for l in text(&out.stdout).lines() {
        let e = json(l);
        match e["event"].as_str() {
            Some("failed") => {
                run += 1;
                longest = longest.max(run);
            }
            Some("created") => run = 0,
            _ => {}
        }
    }
    assert!(
        longest < 96,
        "{longest} backups in a row (15 minutes apart) failed on a medium 10x the data"
    );
}

/// The rolling workload on a real medium (PASSES: contrast with the simulate test above): each
/// day a 3 MB file comes and the one from three days before goes, so each file lives in three
/// consecutive dailies and no daily's files are its own. The medium keeps going only because
/// each backup's own listing blobs (a few hundred bytes) make every pare "free something", so
/// the plan accumulates pares until whole files come free; `simulate`'s model has no such
/// bytes and stops for good.
#[test]
fn rolling_files_on_a_real_medium_keep_backing_up() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "64M") else {
        return;
    };
    env.init_plaintext();
    write(&env.src.join("base.bin"), &bytes(1, 4 << 20));
    backup_at(&env, "monthly", t0());
    for d in 1..=30i64 {
        write(
            &env.src.join(format!("f{d}")),
            &bytes(1000 + d as u64, 3 << 20),
        );
        if d > 3 {
            fs::remove_file(env.src.join(format!("f{}", d - 3))).unwrap();
        }
        let out = env.run(&[
            "backup",
            "--medium",
            "{medium}",
            "--source",
            "{src}",
            "--kind",
            "daily",
            "--at",
            &(t0() + Duration::days(d)).to_rfc3339(),
        ]);
        assert!(
            out.status.success(),
            "day {d}: {} backups on the medium, 13 MB of live data on 64 MB:\n{}",
            backup_ids(&env).len(),
            text(&out.stderr)
        );
    }
}

/// Two copies of a blob (what a GC killed between writing its new pack and deleting the old
/// one leaves): the index names one (data packs: the smaller pack id). If that copy has rotted,
/// the next garbage collection (any: routine or making room) counts the intact copy's pack as
/// dead ("live && indexed_here" in `Store::collect_garbage`) and deletes it: the only intact
/// copy of the full's data is gone. FORMAT.md: "any intact copy will do".
#[test]
fn gc_keeps_the_only_intact_copy_when_the_indexed_one_is_damaged() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    write(&env.src.join("base.bin"), &bytes(1, 3 << 20));
    backup_at(&env, "monthly", t0());
    write(&env.src.join("d"), &bytes(2, 1 << 20));
    backup_at(&env, "daily", t0() + Duration::days(1));
    fs::remove_file(env.src.join("d")).unwrap();
    backup_at(
        &env,
        "micro",
        t0() + Duration::days(1) + Duration::minutes(15),
    );
    let packs = env.medium.join("trayback/packs");
    let mut orig = None;
    for sub in fs::read_dir(&packs).unwrap() {
        for p in fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = p.unwrap().path();
            let d = fs::read(&p).unwrap();
            let foot = d.len() - 64;
            let writer = u64::from_le_bytes(d[foot..foot + 8].try_into().unwrap());
            let flags = u32::from_le_bytes(d[foot + 8..foot + 12].try_into().unwrap());
            if writer == 1 && flags & 2 == 0 {
                orig = Some(p);
            }
        }
    }
    let orig = orig.unwrap();
    let dup = packs.join("00/00000000000000000000000000000001.pack");
    fs::create_dir_all(dup.parent().unwrap()).unwrap();
    let mut d = fs::read(&orig).unwrap();
    d[160] ^= 0xff; // rot in the first record's payload of the copy the index will name
    fs::write(&dup, &d).unwrap();
    // Any GC: the routine pare of micro backups past their age.
    env.ok(&[
        "pare",
        "--medium",
        "{medium}",
        "--at",
        &(t0() + Duration::days(9)).to_rfc3339(),
    ]);
    assert!(
        orig.exists(),
        "GC deleted {} though it held the only intact copy of blocks of backup 1",
        orig.display()
    );
}
