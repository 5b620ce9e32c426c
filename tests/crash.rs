//! A backup killed with SIGKILL mid-write leaves every committed backup intact.

#[path = "support/util.rs"]
mod util;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use util::*;

fn packs_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

on_both_media!(sigkill_mid_backup_loses_nothing_committed, |env: &Env| {
    env.init();
    write(&env.src.join("first/a.txt"), b"committed before the crash");
    write(&env.src.join("first/b.bin"), &bytes(1, 3 << 20));
    let snap = env.path("snap");
    snapshot(&env.src, &snap);
    let b1 = env.backup(&["--kind", "monthly"]);
    // Each round: fresh incompressible data (several packs' worth), a backup killed with
    // SIGKILL at some point after it starts writing packs. A kill that lands after the commit
    // point leaves a committed backup, which must then verify like the rest; a kill before it
    // leaves nothing. At least one kill must land mid-write, or the test proved nothing.
    let mut committed = 1;
    let mut killed_mid_write = 0;
    for (round, delay_ms) in [(0u64, 0u64), (1, 30), (2, 120), (3, 300)] {
        for i in 0..6 {
            write(
                &env.src.join(format!("round-{round}/f{i}.bin")),
                &bytes(50 + 10 * round + i, 16 << 20),
            );
        }
        let mut child = Command::new(bin())
            .args([
                "backup",
                "--medium",
                env.medium.to_str().unwrap(),
                "--source",
                env.src.to_str().unwrap(),
                "--kind",
                "micro",
            ])
            .env("TRAYBACK_STATE_DIR", env.state_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it is writing (a pack in tmp/), then a little more, then kill -9.
        let tmp = env.medium.join("trayback/tmp");
        let t0 = Instant::now();
        while packs_in(&tmp) == 0 && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::Kill,
        )
        .ok();
        child.wait().unwrap();
        // Opening for writing runs recovery; every committed backup verifies in full.
        let out = env.run(&["verify", "--medium", "{medium}", "--all", "--read-all"]);
        assert!(
            out.status.success(),
            "round {round}: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let list: serde_json::Value =
            serde_json::from_str(&env.ok(&["list", "--medium", "{medium}", "--json"])).unwrap();
        let n = list.as_array().unwrap().len();
        assert!(
            n == committed || n == committed + 1,
            "round {round}: {list}"
        );
        if n == committed {
            killed_mid_write += 1;
        } else {
            eprintln!("round {round}: the kill came after the commit point");
            committed = n;
        }
        assert_eq!(packs_in(&tmp), 0, "round {round}: recovery emptied tmp/");
        let restored = env.restore(b1, &format!("restore{round}"));
        assert_same(&snap, &restored);
    }
    assert!(
        killed_mid_write >= 1,
        "no kill landed before the commit point"
    );
    // The medium still takes backups, and the one after the crashes is complete; its id was
    // given to no backup before, committed or killed (ids are never reused).
    let b2 = env.backup(&["--kind", "micro"]);
    assert!(
        b2 > 1 + 4,
        "backup {b2} reuses the id of a backup killed before its commit"
    );
    let restored = env.restore(b2, "after");
    assert_same(&env.src, &restored);
});
