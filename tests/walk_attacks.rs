//! Attacks on the bounded walk and the search walk (beside tests/scale_attacks.rs): real
//! source trees, real backups by the real binary, the library's own readers over the medium
//! they made.

#[path = "support/util.rs"]
mod util;

use rustix::fs::{mkdirat, openat, Mode, OFlags};
use std::time::{Duration, Instant};
use trayback::medium::{Medium, Unlock};
use trayback::query;
use util::*;

/// This process's peak resident memory so far (`VmHWM`), MiB.
fn peak_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix(" kB"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kb >> 10
}

/// A chain of 1 500 directories with 250-byte names (a path of 376 000 bytes at the bottom;
/// the walk and the listings reach any depth), one backup of it (a 1 500-listing medium of
/// about half a megabyte), then a search that finds nothing. A walk that kept each
/// directory's whole path would hold 1 500² × 250 / 2 ≈ 280 MB here, quadratic in the depth a
/// local user chooses (the UI's fallback walk and its name index build use the same walk).
#[test]
fn a_search_over_a_deep_chain_costs_memory_in_proportion_to_the_medium() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let mut dir = openat(
        rustix::fs::CWD,
        &env.src,
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    for i in 0..1500 {
        let name = format!("d{i:04}{}", "y".repeat(245));
        mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        dir = openat(
            &dir,
            name.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
    }
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    let m = Medium::open_read(&env.medium, &Unlock::host(&env.state_dir())).unwrap();
    let before = peak_mib();
    let found = query::search(&m, "no-such-name", 10).unwrap();
    let grew = peak_mib().saturating_sub(before);
    assert!(found.found.is_empty());
    assert!(
        grew <= 64,
        "a search of a half-megabyte medium grew this process by {grew} MiB"
    );
}

/// A directory of several batches renamed while a backup is in it (a person tidying their
/// photos): between batches the walk lets go of its descriptor and reopens it by name, so
/// the names of the batches after the rename are left out ("cannot open directory again to
/// look at the rest of its names"); before the batches (main 3c44447) the descriptor was kept
/// while any of the directory's names was worked on, and every name was backed up. The first
/// batch holds a 96 MiB file; the directory is renamed while the backup reads it.
#[test]
fn a_directory_renamed_during_the_backup_is_backed_up_whole() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    let photos = env.src.join("photos");
    write(&photos.join("000-first.bin"), &bytes(7, 96 << 20));
    let n = 5000;
    for i in 0..n {
        write(
            &photos.join(format!("p{i:06}.jpg")),
            format!("{i}\n").as_bytes(),
        );
    }
    let child = env
        .command_as(
            &env.state_dir(),
            &[
                "backup",
                "--medium",
                "{medium}",
                "--source",
                "{src}",
                "--kind",
                "monthly",
                "--no-verify",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Renamed once the backup is reading the big file (16 MiB of it read: `rchar`).
    let rchar = || {
        std::fs::read_to_string(format!("/proc/{}/io", child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("rchar: ").map(|v| v.parse::<u64>().unwrap()))
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    while rchar() < 16 << 20 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the backup never read"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::rename(&photos, env.src.join("photos-2026")).unwrap();
    let out = child.wait_with_output().unwrap();
    let listed = env.ok(&["ls", "--medium", "{medium}", "-r", "1"]);
    let files = listed.lines().filter(|l| l.contains(".jpg")).count();
    assert_eq!(
        files,
        n,
        "every photo is in the backup (it said {}: {})",
        out.status,
        stderr(&out)
    );
}
