//! Commands on a medium the agent holds (issue 15, item 4): every command that needs the
//! medium's writer lock works while the agent has the tray, without stopping the service —
//! the jobs run by the agent with progress streamed back, the key commands on a medium the
//! agent lends — and gives what it gives without the agent; a client killed mid-job or
//! mid-lend leaves the agent serving the tray. Real udevd, loop devices, the real binary;
//! root only (the tests fail without it).

#[path = "support/lab.rs"]
mod lab;
#[path = "support/util.rs"]
mod util;
use lab::*;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use util::*;

/// One command's result, comparable between a run with the agent and one without: the exit
/// status, stdout with the medium's mount point as `{mp}`, the error line, and the bytes new
/// of each backup in JSON (compared apart, within [`PARENTS_SLACK`]). Left out is what differs
/// from run to run whoever runs the job: the wall-clock end of a backup, random pack ids, the
/// file system's free bytes, and what depends on the metadata of the sources' parent
/// directories up to `/` (changed meanwhile by anything created in `/tmp`): the root
/// listing's id, and the compressed (stored, checked) and new sizes, in JSON and in the human
/// text.
fn comparable(out: &Output, mp: &Path) -> (Option<i32>, String, String, Vec<u64>) {
    let mp = mp.to_str().unwrap();
    let stdout = text(&out.stdout).replace(mp, "{mp}");
    let mut new = Vec::new();
    let stdout = match serde_json::from_str::<serde_json::Value>(&stdout) {
        Ok(mut v) => {
            strip(&mut v, &mut new);
            serde_json::to_string_pretty(&v).unwrap()
        }
        Err(_) => stdout
            .lines()
            .map(|l| {
                let cut = match l.starts_with("  content ") {
                    true => l.find(" read, ").map(|i| i + " read".len()),
                    false => l.find(" blocks checked ("),
                };
                cut.map_or(l, |i| &l[..i])
            })
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let errors = text(&out.stderr)
        .replace(mp, "{mp}")
        .lines()
        .filter(|l| l.starts_with("trayback:"))
        .collect::<Vec<_>>()
        .join("\n");
    (out.status.code(), stdout, errors, new)
}

/// How far the bytes new of one backup may differ between the two runs: the listings of the
/// sources' parent directories, one of which is new in one run and not in the other when
/// something was created in `/tmp` between the two (seen: 104 bytes against 0).
const PARENTS_SLACK: u64 = 4096;

/// Take out of `v` what differs between two runs; a backup's bytes new (in its header, or
/// its record in the tree) go to `new`.
fn strip(v: &mut serde_json::Value, new: &mut Vec<u64>) {
    match v {
        serde_json::Value::Object(o) => {
            if o.contains_key("stored") {
                new.extend(o.remove("new").and_then(|n| n.as_u64()));
            }
            new.extend(o.remove("bytes_new").and_then(|n| n.as_u64()));
            // What differs between two runs of the same commands: times, free space, and
            // compressed sizes (a listing's times change its compressed size by a byte).
            for k in [
                "finished",
                "packs",
                "free_bytes",
                "bytes_stored",
                "root",
                "stored",
                "bytes_checked",
            ] {
                o.remove(k);
            }
            o.values_mut().for_each(|v| strip(v, new));
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| strip(v, new)),
        _ => {}
    }
}

/// Every command that needs the writer lock, in an order that exercises each: backups with
/// every option, verify, pare (dry and real), repair, and the key commands.
fn commands(lab: &Lab, mp: &Path, t0: chrono::DateTime<chrono::Utc>) -> Vec<Vec<String>> {
    let at = |h: i64| (t0 + chrono::Duration::hours(h)).to_rfc3339();
    let mp = mp.to_str().unwrap().to_string();
    let other = lab.tmp.path().join("other-src");
    let config = lab.tmp.path().join("job.yaml");
    let passphrase = lab.tmp.path().join("passphrase");
    let cmd = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let lab_config = lab.config.to_str().unwrap();
    let with = |args: &[&str]| {
        let mut v = cmd(args);
        v.extend(cmd(&["--config", lab_config]));
        v
    };
    vec![
        with(&[
            "backup",
            "--medium",
            &mp,
            "--kind",
            "daily",
            "--at",
            &at(24),
        ]),
        // The agent's own config, with other sources.
        cmd(&[
            "backup",
            "--medium",
            &mp,
            "--kind",
            "micro",
            "--no-verify",
            "--source",
            other.to_str().unwrap(),
            "--at",
            &at(25),
            "--json",
        ]),
        // What is due (a micro), then nothing due at the same time.
        with(&["backup", "--medium", &mp, "--at", &at(26), "--json"]),
        with(&["backup", "--medium", &mp, "--at", &at(26)]),
        with(&[
            "backup", "--medium", &mp, "--kind", "weekly", "--parent", "99",
        ]),
        cmd(&["verify", "--medium", &mp, "--all", "--json"]),
        cmd(&["verify", "--medium", &mp, "99"]),
        with(&[
            "pare",
            "--medium",
            &mp,
            "--dry-run",
            "--at",
            &at(240),
            "--json",
        ]),
        with(&["pare", "--medium", &mp, "--at", &at(240), "--json"]),
        with(&["pare", "--medium", &mp, "--at", &at(240), "--free", "100T"]),
        cmd(&["verify", "--medium", &mp]),
        cmd(&[
            "backup",
            "--medium",
            &mp,
            "--config",
            config.to_str().unwrap(),
            "--kind",
            "micro",
            "--at",
            &at(241),
            "--json",
        ]),
        cmd(&[
            "media",
            "passphrase",
            &mp,
            "--passphrase-file",
            passphrase.to_str().unwrap(),
        ]),
        cmd(&["media", "rotate-host-key", &mp]),
        cmd(&["media", "adopt", &mp]),
        cmd(&["list", "--medium", &mp, "--json"]),
        // Last: with every backup unverified, the agent makes a monthly right after.
        cmd(&["repair", "--medium", &mp, "--tree"]),
    ]
}

/// The ask: each command run while the agent holds the tray gives the same result as
/// without the agent. The same commands run on a copy of the tray mounted by hand with no
/// agent (and a copy of the host's state), then on the tray the agent holds.
#[test]
fn every_lock_needing_command_on_a_held_medium_gives_what_it_gives_without_the_agent() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    write(&lab.src.join("b.tmp"), b"excluded by the job's config");
    write(&lab.src.join("data.bin"), &bytes(5, 3 << 20));
    write(&lab.tmp.path().join("other-src/o.txt"), b"another source");
    std::fs::write(
        lab.tmp.path().join("job.yaml"),
        format!("sources: [{}]\nexclude: ['*.tmp']\n", lab.src.display()),
    )
    .unwrap();
    std::fs::write(lab.tmp.path().join("passphrase"), "correct horse battery\n").unwrap();
    let la = lab.label("H");
    let img = lab.image("h.img", &la, "256M");
    let dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    lab.eject();
    lab.pull(&dev);
    let t0 = chrono::Utc::now();

    // Without the agent: a copy of the tray, and of the host's state (keys, generations).
    lab.stop_agent();
    let copy = lab.tmp.path().join("h-copy.img");
    sh(Command::new("cp")
        .args(["--sparse=always"])
        .arg(&img)
        .arg(&copy));
    let state_copy = lab.tmp.path().join("state-copy");
    sh(Command::new("cp")
        .arg("-a")
        .arg(lab.state_dir())
        .arg(&state_copy));
    let mp_copy = lab.mount_rw(&copy, "by-hand");
    let alone: Vec<_> = commands(&lab, &mp_copy, t0)
        .iter()
        .map(|c| {
            let args: Vec<&str> = c.iter().map(String::as_str).collect();
            comparable(&lab.run_as(&state_copy, &args), &mp_copy)
        })
        .collect();
    sh(Command::new("umount").arg(&mp_copy));

    // With the agent holding the tray.
    lab.start_agent();
    let _dev = lab.insert(&img);
    let s = lab.wait_for("the tray back", 30, |s| idle(s, &la));
    let mp = PathBuf::from(inserted(&s)[0]["mountpoint"].as_str().unwrap());
    let held: Vec<_> = commands(&lab, &mp, t0)
        .iter()
        .map(|c| {
            let args: Vec<&str> = c.iter().map(String::as_str).collect();
            let r = comparable(&lab.run(&args), &mp);
            // The agent kept the tray all along.
            let s = lab.status();
            assert!(
                inserted(&s).iter().any(|m| m["label"] == la.as_str()),
                "{args:?} lost the tray: {s:#}\n{}",
                lab.log()
            );
            r
        })
        .collect();
    for ((c, a), h) in commands(&lab, &mp, t0).iter().zip(&alone).zip(&held) {
        let (a_new, h_new) = (&a.3, &h.3);
        assert_eq!(
            (&a.0, &a.1, &a.2),
            (&h.0, &h.1, &h.2),
            "{c:?}: without the agent (left), held by it (right)"
        );
        assert_eq!(a_new.len(), h_new.len(), "{c:?}: {a_new:?} {h_new:?}");
        for (x, y) in a_new.iter().zip(h_new) {
            assert!(
                x.abs_diff(*y) <= PARENTS_SLACK,
                "{c:?}: bytes new {x} and {y}"
            );
        }
    }
    // Each ran as it should have (not all refused alike): what the commands did.
    let codes: Vec<Option<i32>> = alone.iter().map(|r| r.0).collect();
    assert_eq!(
        codes,
        [0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0].map(Some),
        "{alone:#?}"
    );
    assert!(alone[3].1.contains("nothing due"), "{:?}", alone[3]);
    assert!(alone[6].2.contains("not on this medium"), "{:?}", alone[6]);
    assert!(alone[12].1.contains("passphrase set"), "{:?}", alone[12]);
    assert!(alone[13].1.contains("key replaced"), "{:?}", alone[13]);
    assert!(alone[16].1.contains("tree rebuilt"), "{:?}", alone[16]);
    let log = lab.log();
    for line in [
        "pare asked for",
        "repair --tree asked for",
        "verify asked for",
        "medium lent to a command",
        "medium taken back",
    ] {
        assert!(log.contains(line), "no {line:?} in the agent's log:\n{log}");
    }
    // The agent still serves the tray, with the host key the rotation made.
    let out = lab.ctl(&["backup-now", "--json"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), lab.log());
    lab.eject();
}

/// The field report: `verify` on a tray the agent held said "medium is in use by another
/// trayback process". Now the CLI asks the agent, which verifies at once when idle and
/// streams progress back.
#[test]
fn verify_while_the_agent_holds_the_medium_runs_in_the_agent_with_progress() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    write(&lab.src.join("big.bin"), &bytes(7, 16 << 20));
    let la = lab.label("V");
    let img = lab.image("v.img", &la, "256M");
    let _dev = lab.insert(&img);
    let s = lab.wait_first_monthly(&la);
    let mp = inserted(&s)[0]["mountpoint"].as_str().unwrap().to_string();
    // Named by its mount point, and as the one inserted.
    for args in [
        vec!["verify", "--medium", mp.as_str(), "--read-all", "--json"],
        vec!["verify", "--all", "--json"],
    ] {
        let out = lab.run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            lab.log()
        );
        let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reports[0]["backup"], 1, "{reports}");
        assert_eq!(reports[0]["ok"], true, "{reports}");
    }
    assert!(lab.log().contains("verify asked for"), "{}", lab.log());
    // The protocol: progress lines, then the answer.
    let mut sock = std::os::unix::net::UnixStream::connect(&lab.socket).unwrap();
    sock.write_all(b"{\"cmd\":\"verify\",\"medium\":null,\"read_all\":true}\n")
        .unwrap();
    let lines: Vec<serde_json::Value> = std::io::BufReader::new(sock)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let (last, progress) = lines.split_last().unwrap();
    assert!(!progress.is_empty(), "{lines:?}");
    assert!(
        progress
            .iter()
            .all(|l| l["progress"].is_object() && l["progress"]["phase"] == "verify"),
        "{lines:?}"
    );
    assert_eq!(last["ok"], true, "{last}");
    assert!(last["progress"].is_null(), "{last}");
    // The medium stays in use: a micro after it, and eject works.
    write(&lab.src.join("b.txt"), b"two");
    lab.advance("15m");
    lab.wait_for("a micro", 20, |s| {
        newest(s, &la, "micro").is_some() && idle(s, &la)
    });
    lab.eject();
}

fn lent(s: &serde_json::Value, label: &str) -> bool {
    inserted(s)
        .iter()
        .any(|m| m["label"] == label && m["lent"] == true)
}

/// A lend lasts as long as its client's connection: a client that dies while holding the
/// medium's lock ends the lend, and the agent waits for the lock before it takes the medium
/// back and proves it again. A real key command killed at any moment of its lend leaves the
/// agent serving the tray.
#[test]
fn a_client_killed_mid_lend_leaves_the_agent_serving_the_tray() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    let la = lab.label("L");
    let img = lab.image("l.img", &la, "256M");
    let _dev = lab.insert(&img);
    let s = lab.wait_first_monthly(&la);
    let mp = PathBuf::from(inserted(&s)[0]["mountpoint"].as_str().unwrap());

    // A client borrows the medium ...
    let (answer, sock) = lend_raw(&lab, &la);
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(
        answer["data"]["mountpoint"],
        mp.to_str().unwrap(),
        "{answer}"
    );
    assert!(lent(&lab.status(), &la));
    // ... takes the writer lock, as a command does (the agent has let go of it) ...
    let lock = std::fs::File::open(mp.join("trayback/locks/lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .expect("the agent let go of the writer lock while the medium is lent");
    // ... and dies with it held: the lend ends, and the agent waits for the lock.
    drop(sock);
    let t0 = Instant::now();
    while !lab.log().contains("waiting for the command to let go") {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", lab.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(inserted(&lab.status())
        .iter()
        .any(|m| m["label"] == la.as_str()));
    drop(lock);
    lab.wait_for("the tray taken back", 10, |s| idle(s, &la) && !lent(s, &la));
    let out = lab.ctl(&["backup-now"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), lab.log());

    // A real command killed at any moment, the last one left to finish.
    for delay_ms in [0u64, 3, 10, 25, 60, 150, 400] {
        let mut child = lab.spawn(&["media", "rotate-host-key", mp.to_str().unwrap()]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        lab.wait_for("the tray taken back", 20, |s| idle(s, &la) && !lent(s, &la));
    }
    let out = lab.run(&["media", "rotate-host-key", mp.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), lab.log());
    write(&lab.src.join("b.txt"), b"two");
    let out = lab.ctl(&["backup-now", "--json"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), lab.log());
    assert!(
        lab.notes().iter().all(|n| n["label"] != la.as_str()),
        "{:#?}",
        lab.notes()
    );
    lab.eject();
}

/// A `backup` asked of the agent by a client that is killed is cancelled, as the CLI's own
/// would be; the agent goes on serving the tray.
#[test]
fn a_client_killed_mid_backup_cancels_it_and_the_agent_goes_on() {
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    let la = lab.label("K");
    let img = lab.image("k.img", &la, "1G");
    let _dev = lab.insert(&img);
    let s = lab.wait_first_monthly(&la);
    let mp = inserted(&s)[0]["mountpoint"].as_str().unwrap().to_string();
    write_big(&lab.src, 40);
    let mut child = lab.spawn(&["backup", "--medium", &mp, "--kind", "micro"]);
    lab.wait_for("the asked backup under way", 30, |s| {
        inserted(s)
            .iter()
            .any(|m| m["label"] == la.as_str() && m["job"]["bytes"].as_u64() > Some(0))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let s = lab.wait_for("the agent idle again", 30, |s| idle(s, &la));
    assert!(lab.log().contains("backup cancelled"), "{}", lab.log());
    assert_eq!(inserted(&s)[0]["backups"], 1, "{s:#}");
    let out = lab.ctl(&["backup-now", "--json"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), lab.log());
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Backup 2 was given to the cancelled backup: ids are never used twice (FORMAT.md).
    assert_eq!(o["data"]["backup"]["id"].as_u64(), Some(3), "{o}");
    let s = lab.wait_for("idle after backup-now", 30, |s| idle(s, &la));
    assert_eq!(inserted(&s)[0]["backups"], 2, "{s:#}");
    lab.eject();
}

/// The control socket is root's (mode 0600); even if its mode were loosened, the agent
/// answers another user's `status` but does nothing that changes a medium for them.
#[test]
fn only_root_may_ask_the_agent_to_change_a_medium() {
    require(&["setpriv"]);
    let mut lab = Lab::new("");
    write(&lab.src.join("a.txt"), b"one");
    let la = lab.label("P");
    let img = lab.image("p.img", &la, "256M");
    let _dev = lab.insert(&img);
    lab.wait_first_monthly(&la);
    use std::os::unix::fs::PermissionsExt;
    let perms = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    perms(lab.tmp.path(), 0o755);
    perms(&lab.socket, 0o666);
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .args(args)
            .env("TRAYBACK_SOCKET", &lab.socket)
            .output()
            .unwrap()
    };
    let status = as_nobody(&["status", "--json"]);
    for args in [vec!["backup-now"], vec!["eject"]] {
        let out = as_nobody(&args);
        assert!(!out.status.success(), "{args:?} as nobody succeeded");
        assert!(
            text(&out.stderr).contains("only root"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    perms(&lab.socket, 0o600);
    perms(lab.tmp.path(), 0o700);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let s = lab.status();
    assert_eq!(inserted(&s)[0]["backups"], 1, "{s:#}");
}
