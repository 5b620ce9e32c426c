//! Issue 10 on real media: making room never pares a backup for nothing, never the last full,
//! nothing at all when it cannot free enough; the dry run shows what the real run does;
//! parents by the spec; the sizing advice of [0055]; sizes as people write them.

#[path = "support/pare.rs"]
mod pare;
#[path = "support/util.rs"]
mod util;
use chrono::Duration;
use pare::{backup_ids, json, t0, try_backup_at};
use std::fs;
use util::*;

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect()
}

fn free_bytes(env: &Env) -> u64 {
    json(&env.ok(&["media", "show", "{medium}", "--json"]))["free_bytes"]
        .as_u64()
        .unwrap()
}

#[test]
fn the_only_monthly_is_not_pared_for_nothing_when_micros_fill_the_medium() {
    // The reproduction: a 6 MiB monthly, then micros adding 1.5 MiB each on 26 MiB.
    let Some(env) = Env::with_size(MediumKind::Ext4, "26M") else {
        return;
    };
    env.init();
    write(&env.src.join("base.bin"), &bytes(1, 6 << 20));
    let out = try_backup_at(&env, "monthly", t0());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut failed = None;
    for i in 1..20 {
        write(
            &env.src.join(format!("micro-{i}.bin")),
            &bytes(100 + i, 3 << 19),
        );
        let before = backup_ids(&env);
        let out = try_backup_at(&env, "micro", t0() + Duration::minutes(15 * i as i64));
        if !out.status.success() {
            let v = json(&text(&out.stdout));
            assert_eq!(
                v["pared_before"].as_array().map_or(0, |a| a.len()),
                0,
                "pared for nothing: {v}"
            );
            assert_eq!(
                backup_ids(&env),
                before,
                "the failed backup changed the medium"
            );
            assert!(
                text(&out.stderr).contains("medium too small")
                    && text(&out.stderr).contains("step 118"),
                "{}",
                text(&out.stderr)
            );
            assert!(v["too_small"]["no_room"]["needed"].as_u64().unwrap() > 0);
            failed = Some(i);
            break;
        }
    }
    assert!(failed.is_some(), "the medium never filled up");
    assert!(backup_ids(&env).contains(&1), "the monthly is still there");
    let restored = env.restore(1, "r1");
    assert_eq!(
        fs::read(restored.join("base.bin")).unwrap(),
        bytes(1, 6 << 20)
    );
}

#[test]
fn pare_dry_run_shows_exactly_what_pare_does() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "64M") else {
        return;
    };
    env.init();
    write(&env.src.join("base.bin"), &bytes(1, 2 << 20));
    for day in 0..8i64 {
        write(
            &env.src.join(format!("day-{day}.bin")),
            &bytes(100 + day as u64, 4 << 20),
        );
        if day >= 2 {
            fs::remove_file(env.src.join(format!("day-{}.bin", day - 2))).unwrap();
        }
        env.ok(&[
            "backup",
            "--medium",
            "{medium}",
            "--source",
            "{src}",
            "--at",
            &(t0() + Duration::days(day)).to_rfc3339(),
        ]);
    }
    let at = (t0() + Duration::days(8)).to_rfc3339();
    let free = free_bytes(&env);
    let want = (free + (10 << 20)).to_string();
    let args = |dry: bool| {
        let mut a = vec![
            "pare", "--medium", "{medium}", "--at", &at, "--free", &want, "--json",
        ];
        if dry {
            a.push("--dry-run");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |dry: bool| {
        let a = args(dry);
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        json(&env.ok(&a))
    };
    let dry = run(true);
    let victims = &dry["to_free"]["victims"];
    assert!(!ids(victims).is_empty(), "nothing to pare: {dry}");
    assert!(
        victims
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["freed"].as_u64().unwrap() > 0),
        "{dry}"
    );
    let before = backup_ids(&env);
    let real = run(false);
    let mut shown: Vec<u64> = ids(&dry["now"]);
    shown.extend(ids(victims));
    assert_eq!(ids(&real["pared"]), shown, "dry run {dry}\nreal run {real}");
    // The whole plan, not only its victims: the same bytes each frees, the same choices
    // passed over, the same free space counted.
    assert_eq!(
        dry["to_free"], real["plan"]["room"],
        "dry run {dry}\nreal run {real}"
    );
    let after = backup_ids(&env);
    assert_eq!(
        after,
        before
            .into_iter()
            .filter(|i| !shown.contains(i))
            .collect::<Vec<_>>()
    );
    // Making room reclaims all a pare frees (no pack is left partly dead): the file
    // system gains what the plan counted on, give or take pack trailers and rounding.
    let planned: u64 = victims
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["freed"].as_u64().unwrap())
        .sum();
    let gained = real["free_bytes"].as_u64().unwrap().saturating_sub(free);
    assert!(
        gained >= planned - planned / 20,
        "the plan counted on {planned} bytes, the file system gained {gained}"
    );
    // What is left restores, and a full is among it.
    let kinds = json(&env.ok(&["list", "--medium", "{medium}", "--json"]));
    assert!(
        kinds
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["kind"] == "monthly"),
        "{kinds}"
    );
    for id in after {
        env.restore(id, &format!("r{id}"));
    }
}

#[test]
fn a_daily_is_based_on_the_newest_weekly_or_monthly_never_a_micro() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("f"), b"one");
    let out = try_backup_at(&env, "daily", t0());
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no verified weekly or monthly"),
        "{}",
        text(&out.stderr)
    );
    assert!(backup_ids(&env).is_empty());
    assert!(try_backup_at(&env, "monthly", t0()).status.success());
    assert!(try_backup_at(&env, "micro", t0() + Duration::minutes(15))
        .status
        .success());
    let out = try_backup_at(&env, "daily", t0() + Duration::minutes(30));
    assert!(out.status.success());
    assert_eq!(json(&text(&out.stdout))["backup"]["parent"], 1);
}

#[test]
fn media_init_warns_when_the_medium_is_smaller_than_one_and_a_half_times_the_sources() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "24M") else {
        return;
    };
    write(&env.src.join("big.bin"), &bytes(3, 20 << 20));
    let out = env.ok(&[
        "media", "init", "{medium}", "--label", "Small", "--source", "{src}",
    ]);
    assert!(
        out.contains("warning:") && out.contains("1.5 times"),
        "{out}"
    );
    let fresh = Env::new(MediumKind::Dir).unwrap();
    write(&fresh.src.join("small"), b"x");
    let out = fresh.ok(&[
        "media", "init", "{medium}", "--label", "Big", "--source", "{src}", "--json",
    ]);
    assert!(json(&out).get("undersized").is_none(), "{out}");
}

#[test]
fn sizes_as_people_write_them_and_simulate_from_a_medium() {
    for (cap, full) in [("3TB", "500GB"), ("3T", "2TiB"), ("2.5 TiB", "1.5T")] {
        let out = std::process::Command::new(bin())
            .args([
                "simulate",
                "--days",
                "2",
                "--capacity",
                cap,
                "--full-size",
                full,
                "--json",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{cap} {full}: {}", text(&out.stderr));
    }
    let out = std::process::Command::new(bin())
        .args(["simulate", "--days", "2", "--capacity", "3XB"])
        .output()
        .unwrap();
    assert!(!out.status.success() && text(&out.stderr).contains("unknown unit"));
    // --no-pare honours the capacity: what does not fit fails (issue 10).
    let out = std::process::Command::new(bin())
        .args([
            "simulate",
            "--days",
            "30",
            "--capacity",
            "3TB",
            "--full-size",
            "2T",
        ])
        .args(["--change-size", "micro=2G", "--no-pare", "--json"])
        .output()
        .unwrap();
    let t = text(&out.stdout);
    let s = &json(t.lines().last().unwrap())["summary"];
    assert!(s["failed"].as_u64().unwrap() > 0, "{s}");
    assert!(s["peak_used"].as_u64().unwrap() <= 3_000_000_000_000, "{s}");
    // Sizes measured from a medium's own backups.
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("base.bin"), &bytes(1, 1 << 20));
    for h in 0..4 {
        write(&env.src.join(format!("h{h}")), &bytes(10 + h, 64 << 10));
        env.ok(&[
            "backup",
            "--medium",
            "{medium}",
            "--source",
            "{src}",
            "--at",
            &(t0() + Duration::hours(h as i64)).to_rfc3339(),
        ]);
    }
    let out = env.ok(&[
        "simulate",
        "--days",
        "10",
        "--capacity",
        "20MB",
        "--from-medium",
        "{medium}",
        "--json",
    ]);
    let first = json(out.lines().next().unwrap());
    assert_eq!(first["event"], "measured", "{first}");
    let full = first["history"]["full_size"].as_u64().unwrap();
    assert!(full > 1 << 20 && full < 2 << 20, "{first}");
    let s = &json(out.lines().last().unwrap())["summary"];
    assert_eq!(s["broken"], 0);
    // How far back each kind reaches on this medium at its own change rate (a directory
    // medium: the capacity of the file system it is on, so nothing fails).
    let show = json(&env.ok(&["media", "show", "{medium}", "--reach", "--json"]));
    let reach = &show["reach"];
    assert_eq!(reach["failed"], 0, "{reach}");
    assert!(
        reach["days"]["monthly"].as_f64().unwrap() > 150.0,
        "{reach}"
    );
    assert!(reach["days"]["micro"].as_f64().unwrap() <= 7.0, "{reach}");
}

#[test]
fn making_room_reclaims_all_that_paring_frees_even_from_packs_mostly_live() {
    // Backup 2's one pack holds a file that stays (6 MiB) and one deleted later (1 MiB):
    // paring backup 2 frees the 1 MiB, which sits in a pack six-sevenths live.
    let Some(env) = Env::with_size(MediumKind::Ext4, "64M") else {
        return;
    };
    env.init();
    write(&env.src.join("base.bin"), &bytes(1, 2 << 20));
    let day = |d: i64| (t0() + Duration::days(d)).to_rfc3339();
    let backup = |d: i64| {
        env.ok(&[
            "backup",
            "--medium",
            "{medium}",
            "--source",
            "{src}",
            "--at",
            &day(d),
        ])
    };
    backup(0);
    write(&env.src.join("keep.bin"), &bytes(2, 6 << 20));
    write(&env.src.join("gone.bin"), &bytes(3, 1 << 20));
    backup(1);
    fs::remove_file(env.src.join("gone.bin")).unwrap();
    backup(2);
    let free = free_bytes(&env);
    let want = (free + (512 << 10)).to_string();
    let real = json(&env.ok(&[
        "pare",
        "--medium",
        "{medium}",
        "--at",
        &day(3),
        "--free",
        &want,
        "--json",
    ]));
    assert_eq!(ids(&real["pared"]), vec![2], "{real}");
    let gained = real["free_bytes"].as_u64().unwrap().saturating_sub(free);
    assert!(
        gained >= 1 << 20,
        "paring backup 2 should free gone.bin's 1 MiB; the file system gained {gained}: {real}"
    );
    let r = env.restore(3, "r3");
    assert_eq!(fs::read(r.join("keep.bin")).unwrap(), bytes(2, 6 << 20));
    env.ok(&["verify", "--medium", "{medium}", "--all"]);
}

#[test]
fn a_full_instead_when_only_the_incrementals_parent_would_make_room() {
    // Monthly 1, weekly 2 (a.bin, still in the sources), weekly 3 (big.bin), micro 4 (big.bin
    // gone): only weekly 3 holds big.bin. A daily's parent is weekly 3, which making room for
    // the daily must keep; a full has no parent to keep, so weekly 3 may go.
    let Some(env) = Env::with_size(MediumKind::Ext4, "64M") else {
        return;
    };
    env.init();
    let at = |h: i64| t0() + Duration::hours(h);
    write(&env.src.join("base.bin"), &bytes(1, 2 << 20));
    assert!(try_backup_at(&env, "monthly", at(0)).status.success());
    write(&env.src.join("a.bin"), &bytes(2, 1 << 20));
    assert!(try_backup_at(&env, "weekly", at(24)).status.success());
    write(&env.src.join("big.bin"), &bytes(3, 8 << 20));
    assert!(try_backup_at(&env, "weekly", at(48)).status.success());
    fs::remove_file(env.src.join("big.bin")).unwrap();
    assert!(try_backup_at(&env, "micro", at(49)).status.success());
    // A filler beside trayback/ leaves 10 MiB free; the daily needs 6 MiB and the reserve.
    write(&env.src.join("daily.bin"), &bytes(4, 6 << 20));
    let free = free_bytes(&env);
    let st = std::process::Command::new("fallocate")
        .args(["-l", &(free - (10 << 20)).to_string()])
        .arg(env.medium.join("filler"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = try_backup_at(&env, "daily", at(50));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = json(&text(&out.stdout));
    assert_eq!(v["kind"], "monthly", "{v}");
    assert_eq!(v["instead_of"], "daily", "{v}");
    // Weekly 2 frees only its own listing, weekly 3 big.bin; the monthly and the micro stay.
    assert_eq!(ids(&v["pared_before"]), vec![2, 3], "{v}");
    assert_eq!(v["backup"]["parent"], serde_json::Value::Null, "{v}");
    assert_eq!(backup_ids(&env), vec![1, 4, 5]);
    let r = env.restore(5, "r5");
    assert_eq!(fs::read(r.join("daily.bin")).unwrap(), bytes(4, 6 << 20));
    assert_eq!(fs::read(r.join("a.bin")).unwrap(), bytes(2, 1 << 20));
}

#[test]
fn a_backup_without_room_still_pares_micros_past_their_age_but_never_the_newest() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "64M") else {
        return;
    };
    env.init();
    write(&env.src.join("base.bin"), &bytes(1, 2 << 20));
    assert!(try_backup_at(&env, "monthly", t0()).status.success());
    for i in 1..=3u64 {
        // Each file stays in the sources: paring a micro frees only its listing.
        write(&env.src.join(format!("m{i}.bin")), &bytes(10 + i, 1 << 20));
        let at = t0() + Duration::minutes(15 * i as i64);
        assert!(try_backup_at(&env, "micro", at).status.success());
    }
    write(&env.src.join("late.bin"), &bytes(20, 4 << 20));
    let st = std::process::Command::new("fallocate")
        .args(["-l", &(free_bytes(&env) - (2 << 20)).to_string()])
        .arg(env.medium.join("filler"))
        .status()
        .unwrap();
    assert!(st.success());
    // Eight days on: no room for the micro due, but step 100 is retention, not room.
    let out = try_backup_at(&env, "micro", t0() + Duration::days(8));
    assert!(!out.status.success());
    let v = json(&text(&out.stdout));
    assert!(v["backup"].is_null(), "{v}");
    assert_eq!(ids(&v["pared_before"]), Vec::<u64>::new(), "{v}");
    assert_eq!(ids(&v["pared_after"]), vec![2, 3], "{v}");
    assert_eq!(backup_ids(&env), vec![1, 4], "the newest backup stays");
    let r = env.restore(4, "r4");
    assert_eq!(fs::read(r.join("m3.bin")).unwrap(), bytes(13, 1 << 20));
}
