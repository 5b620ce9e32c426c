//! Garbage collection and making room on a damaged or full medium (issue 10, from a second
//! attack): a collection that failed never poisons the next one, survivors' record overhead
//! is counted, a retry makes what the first try chose, a rotted block or a bad sector does not
//! stop collection, duplicates are checked once. One known limit is kept as an ignored test.

#[path = "support/pare.rs"]
mod pare;
#[path = "support/util.rs"]
mod util;
use chrono::{DateTime, Duration, Utc};
use pare::*;
use std::fs;
use std::process::Command;
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

/// Leave `leave` bytes free (a preallocated filler).
fn fill_to(env: &Env, leave: u64) {
    let have = free(env);
    sh(Command::new("fallocate")
        .args(["-l", &(have - leave).to_string()])
        .arg(env.medium.join("filler")));
    sh(&mut Command::new("sync"));
}

/// A trailer entry: id, raw_len, stored_len, payload offset.
type TrailerEntry = ([u8; 32], u32, u32, u64);

/// Each data pack on the medium with its footer (writer, flags) and trailer entries.
fn packs(env: &Env) -> Vec<(std::path::PathBuf, u64, u32, Vec<TrailerEntry>)> {
    let mut out = Vec::new();
    for sub in fs::read_dir(env.medium.join("trayback/packs")).unwrap() {
        for p in fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = p.unwrap().path();
            let d = fs::read(&p).unwrap();
            let foot = d.len() - 64;
            let writer = u64::from_le_bytes(d[foot..foot + 8].try_into().unwrap());
            let flags = u32::from_le_bytes(d[foot + 8..foot + 12].try_into().unwrap());
            let count = u32::from_le_bytes(d[foot + 12..foot + 16].try_into().unwrap()) as usize;
            let toff = u64::from_le_bytes(d[foot + 16..foot + 24].try_into().unwrap()) as usize;
            // Trailer entries: 52 bytes, 60 in packs of version 3 (FORMAT.md "Frames").
            let size = if d[8] == 3 { 60 } else { 52 };
            let entries = (0..count)
                .map(|i| {
                    let e = &d[toff + size * i..toff + size * (i + 1)];
                    (
                        e[..32].try_into().unwrap(),
                        u32::from_le_bytes(e[36..40].try_into().unwrap()),
                        u32::from_le_bytes(e[40..44].try_into().unwrap()),
                        u64::from_le_bytes(e[44..52].try_into().unwrap()),
                    )
                })
                .collect();
            out.push((p, writer, flags, entries));
        }
    }
    out
}

/// Finding 1 (high). `Store::collect_garbage` (and its model `share::Packs::reclaimable`)
/// checks that a pack's survivors fit as `alive_len + GC_MARGIN`, where `alive_len` is the
/// survivors' payload bytes only. Every survivor also costs a 44-byte record header and a
/// 52-byte trailer entry in the new pack: a pack of many small blobs (40 000 small files:
/// 640 KB of payload, 3.8 MB of headers and trailer) needs far more than the check allows.
/// With 2.3 MB free (and no root reserve: `-m 0`, as on xfs), `pare --free` pares daily #2
/// (the plan and the dry run say it frees 6 MB), then GC runs into ENOSPC writing the
/// rewritten pack: the pare is committed and nothing is freed; every later making room counts
/// that pack's 6 MB as reclaimable and fails the same way.
#[test]
fn a_pack_of_many_small_blobs_is_not_rewritten_into_enospc() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "128M") else {
        return;
    };
    let dev = text(
        &Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&env.medium)
            .output()
            .unwrap()
            .stdout,
    );
    sh(Command::new("tune2fs").args(["-m", "0", dev.trim()]));
    env.init_plaintext();
    write(&env.src.join("base.bin"), &bytes(1, 4_000_000));
    backup_at(&env, "monthly", t0());
    for d in 0..40u64 {
        let dir = env.src.join(format!("small/d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..1000u64 {
            write(
                &dir.join(format!("f{i:04}")),
                &bytes(1_000_000 + d * 1000 + i, 16),
            );
        }
    }
    write(&env.src.join("big.bin"), &bytes(2, 6_000_000));
    backup_at(&env, "daily", t0() + Duration::days(1));
    fs::remove_file(env.src.join("big.bin")).unwrap();
    backup_at(&env, "daily", t0() + Duration::days(2));
    backup_at(
        &env,
        "micro",
        t0() + Duration::days(2) + Duration::minutes(15),
    );
    fill_to(&env, 2_300_000);
    let at = t0() + Duration::days(2) + Duration::minutes(20);
    let was = free(&env);
    let want = was + 3_000_000;
    let dry = json(&text(&pare_free(&env, want, at, true).stdout));
    let before = backup_ids(&env);
    let out = pare_free(&env, want, at, false);
    let after = backup_ids(&env);
    let gained = free(&env).saturating_sub(was);
    env.ok(&["verify", "--medium", "{medium}", "--all", "--read-all"]);
    assert!(
        after == before || gained >= 1 << 20,
        "pared {:?} (dry run: {}) and the file system gained {gained} bytes:\n{}",
        before
            .iter()
            .filter(|i| !after.contains(i))
            .collect::<Vec<_>>(),
        dry["to_free"]["victims"],
        text(&out.stderr)
    );
}

/// Finding 2 (medium). A pack whose live blob fails to decode (bit rot) is kept by
/// `Store::collect_garbage` ("keeps a pack whose blob fails to decode"), but the room plan's
/// model (`Store::survey` -> `share::Packs::reclaimable`) does not know it and counts that
/// pack's dead bytes as reclaimed. `pare --free` pares daily #2 for its 6 MB (what the dry
/// run shows), garbage collection keeps the pack, and nothing is freed: history pared for
/// nothing.
#[test]
fn a_rotted_block_does_not_make_a_pare_free_nothing() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "96M") else {
        return;
    };
    env.init_plaintext();
    write(&env.src.join("base.bin"), &bytes(1, 4_000_000));
    backup_at(&env, "monthly", t0());
    write(&env.src.join("keep.bin"), &bytes(3, 100_000));
    write(&env.src.join("big.bin"), &bytes(2, 6_000_000));
    backup_at(&env, "daily", t0() + Duration::days(1));
    fs::remove_file(env.src.join("big.bin")).unwrap();
    backup_at(&env, "daily", t0() + Duration::days(2));
    backup_at(
        &env,
        "micro",
        t0() + Duration::days(2) + Duration::minutes(15),
    );
    // Rot one byte of keep.bin's block (live in #3 and #4) in daily #2's data pack.
    let mut rotted = false;
    for (p, writer, flags, entries) in packs(&env) {
        if writer != 2 || flags & 2 != 0 {
            continue;
        }
        for (_, raw, _, off) in entries {
            if raw == 100_000 {
                let mut d = fs::read(&p).unwrap();
                d[off as usize + 500] ^= 0x55;
                fs::write(&p, &d).unwrap();
                rotted = true;
            }
        }
    }
    assert!(rotted);
    sh(&mut Command::new("sync"));
    sh(Command::new("sh").args(["-c", "echo 3 > /proc/sys/vm/drop_caches"]));
    let at = t0() + Duration::days(2) + Duration::minutes(20);
    let was = free(&env);
    let want = was + 3_000_000;
    let dry = json(&text(&pare_free(&env, want, at, true).stdout));
    let before = backup_ids(&env);
    let out = pare_free(&env, want, at, false);
    let after = backup_ids(&env);
    let gained = free(&env).saturating_sub(was);
    assert!(
        after == before || gained >= 1 << 20,
        "pared {:?} (dry run: {}) and the file system gained {gained} bytes:\n{}",
        before
            .iter()
            .filter(|i| !after.contains(i))
            .collect::<Vec<_>>(),
        dry["to_free"]["victims"],
        text(&out.stderr)
    );
}

/// Finding 3 (medium). `Store::survey` decides whether a non-indexed copy of a live blob is
/// garbage by reading the indexed copy back whole (`self.read(&e.id).is_err()`), once per
/// copy, with nothing remembered. A block of zeros (256 KiB raw, ~30 bytes stored) repeated
/// in a pack costs ~120 bytes of medium per copy and a 256 KiB decompress + SHA-256 per copy
/// per survey. One 32 MiB pack of such copies (what an interrupted GC over a medium full of
/// zero-filled files, or anyone with the disk in hand, leaves) makes every room plan and
/// every garbage collection (`pare --dry-run --free`, `pare`, each backup that needs room,
/// each of `make_room`'s rounds) take minutes; a medium of such packs, hours.
#[test]
fn duplicate_copies_do_not_make_the_survey_read_the_indexed_copy_each_time() {
    use trayback::ids::{BlockId, PackId};
    use trayback::store::pack::{self, BlobKind, PackWriter};
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    write(&env.src.join("zeros.bin"), &vec![0u8; 256 * 1024]);
    write(&env.src.join("data.bin"), &bytes(1, 1 << 20));
    backup_at(&env, "monthly", t0());
    // A pack (written by "garbage collection") holding 250 000 copies of the zero block.
    let raw = vec![0u8; 256 * 1024];
    let id = BlockId::of(&raw);
    let (enc, payload) = pack::encode(&trayback::crypt::Crypt::Plain, &id, BlobKind::Data, &raw, 3);
    let pid: PackId = "ffffffffffffffffffffffffffffffff".parse().unwrap();
    let dir = env.medium.join("trayback/packs/ff");
    fs::create_dir_all(&dir).unwrap();
    let f = fs::File::create(dir.join(format!("{pid}.pack"))).unwrap();
    let mut w = PackWriter::new(pid, f, &trayback::crypt::Crypt::Plain, false).unwrap();
    for _ in 0..250_000 {
        w.append(id, BlobKind::Data, enc, raw.len() as u32, &payload)
            .unwrap();
    }
    w.finish(0, pack::FLAG_GC).unwrap();
    let on_disk = dir_bytes(&env.medium.join("trayback"));
    let t = std::time::Instant::now();
    let out = env.run(&[
        "pare",
        "--medium",
        "{medium}",
        "--dry-run",
        "--free",
        "18446744073709551615",
        "--at",
        &(t0() + Duration::hours(1)).to_rfc3339(),
        "--json",
    ]);
    let took = t.elapsed();
    eprintln!(
        "{on_disk} bytes on the medium; pare --dry-run --free took {took:?}: {}",
        text(&out.stderr)
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "a {on_disk}-byte medium made one room plan take {took:?}"
    );
}

/// Finding 4 (medium). One rotted listing blob of an old backup (here daily #2's, which
/// nothing else references) stops all making room and all garbage collection on the medium
/// for good: `maintain::sharing` (the room plan's blob graph) and `maintain::live_blobs`
/// (GC's live set) read every listing of every backup with `?`, so the room plan errors
/// instead of planning. The very backup whose index is damaged — the oldest daily, the
/// chart's first choice — is never pared, and no backup that needs room is ever made again.
#[test]
#[ignore = "known limit: a damaged listing stops room planning (what is live below it is unknown); pare that backup by hand"]
fn one_rotted_listing_does_not_stop_making_room_for_good() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "96M") else {
        return;
    };
    env.init_plaintext();
    write(&env.src.join("base.bin"), &bytes(1, 4_000_000));
    backup_at(&env, "monthly", t0());
    fs::create_dir_all(env.src.join("old")).unwrap();
    write(&env.src.join("old/a.bin"), &bytes(2, 6_000_000));
    backup_at(&env, "daily", t0() + Duration::days(1));
    fs::remove_dir_all(env.src.join("old")).unwrap();
    write(&env.src.join("b.bin"), &bytes(3, 6_000_000));
    backup_at(&env, "daily", t0() + Duration::days(2));
    backup_at(
        &env,
        "micro",
        t0() + Duration::days(2) + Duration::minutes(15),
    );
    // Rot daily #2's first listing blob (unique to it).
    let mut rotted = false;
    for (p, writer, flags, entries) in packs(&env) {
        if writer == 2 && flags & 2 != 0 {
            let (_, _, stored, off) = entries[0];
            let mut d = fs::read(&p).unwrap();
            d[off as usize + stored as usize / 2] ^= 0x55;
            fs::write(&p, &d).unwrap();
            rotted = true;
        }
    }
    assert!(rotted);
    sh(&mut Command::new("sync"));
    sh(Command::new("sh").args(["-c", "echo 3 > /proc/sys/vm/drop_caches"]));
    let was = free(&env);
    let at = t0() + Duration::days(2) + Duration::minutes(20);
    // Paring either daily frees 6 MB; 3 MB more than is free is asked for.
    let out = pare_free(&env, was + 3_000_000, at, false);
    assert!(
        out.status.success() && free(&env) > was + (2 << 20),
        "pare --free with 12 MB of dailies to pare: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// An `LD_PRELOAD` shim: `pread` of the byte at `EIO_OFF` in a file whose path contains
/// `EIO_FILE` fails with EIO (a bad sector; device-mapper is not available everywhere).
fn eio_shim(env: &Env) -> Option<std::path::PathBuf> {
    let c = env.path("eio.c");
    let so = env.path("eio.so");
    fs::write(
        &c,
        r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
static ssize_t (*real)(int, void *, size_t, off_t);
ssize_t pread64(int fd, void *buf, size_t n, off_t off) {
    if (!real) real = (ssize_t (*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread64");
    const char *name = getenv("EIO_FILE"), *o = getenv("EIO_OFF");
    if (name && o) {
        char p[64], t[4096];
        snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
        ssize_t l = readlink(p, t, sizeof t - 1);
        long long bad = atoll(o);
        if (l > 0) {
            t[l] = 0;
            if (strstr(t, name) && off <= bad && bad < off + (off_t)n) {
                errno = EIO;
                return -1;
            }
        }
    }
    return real(fd, buf, n, off);
}
ssize_t pread(int fd, void *buf, size_t n, off_t off) { return pread64(fd, buf, n, off); }
"#,
    )
    .unwrap();
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&so)
        .arg(&c)
        .arg("-ldl")
        .status()
        .ok()?
        .success();
    ok.then_some(so)
}

/// Finding 5 (medium). A bad sector (EIO) under a live blob of a pack that also holds garbage:
/// `Store::collect_garbage` keeps a pack whose blob fails to *decode*, but a blob that fails
/// to *read* (`self.read_payload(..)?`) aborts the whole collection. `pare --free` pares
/// daily #2 for its 6 MB (the model counts that pack as rewritable), then errors out with
/// the pare committed and nothing freed; so does every later making room (every backup that
/// needs room fails, and the other packs' garbage is never reclaimed either).
#[test]
fn a_bad_sector_under_a_live_block_does_not_stop_garbage_collection() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "96M") else {
        return;
    };
    let Some(shim) = eio_shim(&env) else {
        eprintln!("SKIPPED: no C compiler for the EIO shim");
        return;
    };
    env.init_plaintext();
    write(&env.src.join("base.bin"), &bytes(1, 4_000_000));
    backup_at(&env, "monthly", t0());
    write(&env.src.join("keep.bin"), &bytes(3, 100_000));
    write(&env.src.join("big.bin"), &bytes(2, 6_000_000));
    backup_at(&env, "daily", t0() + Duration::days(1));
    fs::remove_file(env.src.join("big.bin")).unwrap();
    backup_at(&env, "daily", t0() + Duration::days(2));
    backup_at(
        &env,
        "micro",
        t0() + Duration::days(2) + Duration::minutes(15),
    );
    let mut bad = None;
    for (p, writer, flags, entries) in packs(&env) {
        if writer == 2 && flags & 2 == 0 {
            for (_, raw, _, off) in entries {
                if raw == 100_000 {
                    let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                    bad = Some((name, off + 50_000));
                }
            }
        }
    }
    let (file, off) = bad.unwrap();
    let at = (t0() + Duration::days(2) + Duration::minutes(20)).to_rfc3339();
    let was = free(&env);
    let before = backup_ids(&env);
    let out = Command::new(bin())
        .args(["pare", "--medium"])
        .arg(&env.medium)
        .args(["--free", &(was + 3_000_000).to_string(), "--at", &at])
        .env("TRAYBACK_LOG", "warn")
        .env("TRAYBACK_STATE_DIR", env.state_dir())
        .env("LD_PRELOAD", &shim)
        .env("EIO_FILE", &file)
        .env("EIO_OFF", off.to_string())
        .output()
        .unwrap();
    // The unreadable pack is kept (its other blocks may be needed), the collection goes on
    // and the pare does not fail. (What that pack's garbage was planned to free is not had:
    // a known limit on a disk with bad sectors, which verify and the agent report.)
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = backup_ids(&env);
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    env.ok(&["verify", "--medium", "{medium}", "--all"]);
}

/// An `LD_PRELOAD` shim: the first `write` to a pack being written in `tmp/` fails with
/// ENOSPC (the backup outgrew its estimate: files grew during the walk, or many small files'
/// record headers and trailer entries, which the estimate does not count).
fn enospc_once_shim(env: &Env) -> Option<std::path::PathBuf> {
    let c = env.path("enospc.c");
    let so = env.path("enospc.so");
    fs::write(
        &c,
        r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
static ssize_t (*real)(int, const void *, size_t);
static int fired;
ssize_t write(int fd, const void *buf, size_t n) {
    if (!real) real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (!__atomic_load_n(&fired, __ATOMIC_SEQ_CST)) {
        char p[64], t[4096];
        snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
        ssize_t l = readlink(p, t, sizeof t - 1);
        if (l > 5) {
            t[l] = 0;
            if (strstr(t, "/trayback/tmp/") && !strcmp(t + l - 5, ".pack")
                && !__atomic_exchange_n(&fired, 1, __ATOMIC_SEQ_CST)) {
                errno = ENOSPC;
                return -1;
            }
        }
    }
    return real(fd, buf, n);
}
"#,
    )
    .unwrap();
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&so)
        .arg(&c)
        .arg("-ldl")
        .status()
        .ok()?
        .success();
    ok.then_some(so)
}

/// Finding 6 (high). `job::run` retries a backup that hit ENOSPC with `room_for_backup(..,
/// due, ..)` — the *original* due backup, not what the first round decided. When the first
/// round made a full instead of the daily (its parent, weekly #2, could only go that way)
/// and pared that parent, the retry plans the daily on parent #2, which is gone: the plan
/// fits (room was made), `backup::run` fails with "no such backup", and the job ends with the
/// weekly pared and no backup at all. (Had the retry's plan differed, `out.kind`/`instead_of`
/// from the first round would misreport what was made.)
#[test]
fn a_backup_retried_after_enospc_is_the_one_the_first_round_chose() {
    let Some(env) = Env::with_size(MediumKind::Ext4, "64M") else {
        return;
    };
    let Some(shim) = enospc_once_shim(&env) else {
        eprintln!("SKIPPED: no C compiler for the ENOSPC shim");
        return;
    };
    env.init_plaintext();
    write(&env.src.join("base.bin"), &bytes(1, 16 << 20));
    backup_at(&env, "monthly", t0());
    write(&env.src.join("w.bin"), &bytes(2, 16 << 20));
    backup_at(&env, "weekly", t0() + Duration::days(1));
    fs::remove_file(env.src.join("w.bin")).unwrap();
    for i in 0..2 {
        write(&env.src.join(format!("m{i}")), &bytes(10 + i, 1000));
        backup_at(
            &env,
            "micro",
            t0() + Duration::days(1) + Duration::minutes(15 * (i as i64 + 1)),
        );
    }
    assert_eq!(backup_ids(&env), vec![1, 2, 3, 4]);
    write(&env.src.join("n.bin"), &bytes(3, 14 << 20));
    let at = (t0() + Duration::days(2)).to_rfc3339();
    let out = Command::new(bin())
        .args(["backup", "--medium"])
        .arg(&env.medium)
        .arg("--source")
        .arg(&env.src)
        .args(["--kind", "daily", "--json", "--at", &at])
        .env("TRAYBACK_LOG", "warn")
        .env("TRAYBACK_STATE_DIR", env.state_dir())
        .env("LD_PRELOAD", &shim)
        .output()
        .unwrap();
    let after = backup_ids(&env);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    assert!(
        v["backup"]["id"].is_u64(),
        "the weekly was pared and no backup made: backups now {after:?}; outcome {v}\n{}",
        text(&out.stderr)
    );
}

/// Finding 7 (critical). A garbage collection that fails with ENOSPC part-way (finding 1)
/// leaves the store's open GC pack writer behind (`Store::collect_garbage` returns on the
/// error without `abort`; `Store::begin` resets neither `current` nor `pending`), and that
/// writer is broken: `PackWriter::append` buffered a record header whose payload never got
/// written, so every later record sits 44+ bytes from where its trailer entry says. The agent
/// keeps the same `Medium` for the next job of the session: once there is room (the next
/// job's pares deleted a wholly dead pack, a file was removed), the next collection appends
/// to that writer, closes it as a pack, indexes the misplaced records, and deletes the old
/// packs — the only good copies of blocks that backups #3 and #4 (committed, verified)
/// reference. Reproduced here with the library calls `job::run` makes (pare, collect, then
/// collect again on the same open medium): 17-byte files make a BufWriter flush fall between
/// a record's header and its payload, and 1.85 MB free makes that flush fail; the second
/// collection then deletes the old pack and `verify` finds 5622 files of #3 and #4 damaged.
#[test]
fn a_gc_that_failed_with_enospc_does_not_poison_the_next_one() {
    use trayback::ids::BackupId;
    use trayback::medium::{Medium, Wait};
    use trayback::store::Reclaim;
    let Some(env) = Env::with_size(MediumKind::Ext4, "128M") else {
        return;
    };
    let dev = text(
        &Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&env.medium)
            .output()
            .unwrap()
            .stdout,
    );
    sh(Command::new("tune2fs").args(["-m", "0", dev.trim()]));
    env.init_plaintext();
    write(&env.src.join("base.bin"), &bytes(1, 4_000_000));
    backup_at(&env, "monthly", t0());
    for d in 0..40u64 {
        let dir = env.src.join(format!("small/d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..1000u64 {
            write(
                &dir.join(format!("f{i:04}")),
                &bytes(1_000_000 + d * 1000 + i, 17),
            );
        }
    }
    write(&env.src.join("big.bin"), &bytes(2, 6_000_000));
    backup_at(&env, "daily", t0() + Duration::days(1));
    fs::remove_file(env.src.join("big.bin")).unwrap();
    backup_at(&env, "daily", t0() + Duration::days(2));
    backup_at(
        &env,
        "micro",
        t0() + Duration::days(2) + Duration::minutes(15),
    );
    fill_to(&env, 1_850_000);
    {
        let mut m = Medium::open_write(&env.medium, 3, &env.state_dir()).unwrap();
        trayback::maintain::pare_one(
            &mut m,
            BackupId(2),
            trayback::pare::Reason::Step132OldestDaily,
        )
        .unwrap();
        let first = trayback::maintain::collect_garbage(&mut m, Wait::No, Reclaim::All);
        // Counting survivors' record overhead, collection now leaves a pack it cannot rewrite
        // in the free space rather than meet ENOSPC; if it fails all the same, the writer it
        // left must not be appended to by the next collection.
        eprintln!(
            "first collection: {first:?}; tmp/: {:?}",
            fs::read_dir(env.medium.join("trayback/tmp"))
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .collect::<Vec<_>>()
        );
        // Room appears (the next job's pares, a file removed).
        fs::remove_file(env.medium.join("filler")).unwrap();
        let second = trayback::maintain::collect_garbage(&mut m, Wait::No, Reclaim::All);
        eprintln!("second collection: {second:?}");
    }
    let out = env.run(&["verify", "--medium", "{medium}", "--all", "--read-all"]);
    assert!(
        out.status.success(),
        "committed backups damaged after a second GC on the same open medium:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
            .lines()
            .take(12)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let to = env.path("r4");
    let r = env.try_restore(4, &to);
    assert!(
        r.status.success(),
        "restore of #4: {}",
        text(&r.stderr)
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
