//! The web interface's no-progress limit against real slow clients over TCP: clients that
//! dribble a request body hold no connection slot past `BODY_WAIT`, and downloads whose
//! readers stop reading hold neither a slot nor one of the two download permits past
//! `NO_PROGRESS` (without the limit, a third download would wait for ever).

#[path = "support/util.rs"]
mod util;
#[path = "support/web.rs"]
mod web;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use trayback::ui::{BODY_WAIT, HEAD_WAIT, MAX_CONNECTIONS, NO_PROGRESS};
use util::*;
use web::*;

fn media_id(env: &Env) -> String {
    let out = env.ok(&["media", "show", "{medium}", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["media"]["media_id"].as_str().unwrap().to_string()
}

#[test]
fn clients_dribbling_request_bodies_do_not_hold_the_connection_slots() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("a.txt"), b"a\n");
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    let ui = Ui::start(
        &env.state_dir(),
        &env.path("no-agent.sock"),
        &[&env.medium],
        None,
    );
    let id = media_id(&env);
    let (cookie, key) = ui.session();

    // More clients than slots, each sending a restore request's head and then its body a
    // byte a second (never finishing it within BODY_WAIT).
    let mut held: Vec<TcpStream> = (0..MAX_CONNECTIONS + 6)
        .map(|_| {
            let mut s = TcpStream::connect(&ui.host).unwrap();
            write!(
                s,
                "POST /api/media/{id}/restore HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\
                 X-Trayback-Key: {key}\r\nContent-Type: application/json\r\n\
                 Content-Length: 1000\r\n\r\n{{",
                ui.host
            )
            .unwrap();
            s
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dribbler = {
        let mut streams: Vec<TcpStream> = held.iter().map(|s| s.try_clone().unwrap()).collect();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for s in &mut streams {
                    let _ = s.write_all(b" ");
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    // A new request is answered once the dribblers are cut off, at BODY_WAIT.
    let t = Instant::now();
    let r = request(
        &ui.host,
        "GET",
        "/api/trays",
        &[("Cookie", &cookie), ("X-Trayback-Key", &key)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        t.elapsed() < BODY_WAIT + Duration::from_secs(8),
        "served after {:?}",
        t.elapsed()
    );
    // Each dribbler's connection was closed by the server (after a 408, which a reset
    // caused by the dribbler's next byte may hide).
    for (i, s) in held.iter_mut().enumerate().take(MAX_CONNECTIONS) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        };
        assert!(
            closed,
            "dribbler {i} still connected after {:?}",
            t.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    dribbler.join().unwrap();
}

/// Ask for a download of `path` in `backup`: the URL of its ticket.
fn ticket(ui: &Ui, cookie: &str, key: &str, id: &str, backup: u64, path: &str) -> String {
    let origin = ui.url("");
    let r = request(
        &ui.host,
        "POST",
        &format!("/api/media/{id}/download"),
        &[
            ("Cookie", cookie),
            ("X-Trayback-Key", key),
            ("Origin", &origin),
            ("Content-Type", "application/json"),
        ],
        serde_json::json!({ "backup": backup, "path": path })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["url"].as_str().unwrap().to_string()
}

#[test]
fn downloads_whose_readers_stop_reading_are_cut_off_and_free_their_permits() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    // Larger than what the socket buffers and the server's queue hold together.
    let big = bytes(7, 48 << 20);
    let file = env.src.join("big.bin");
    write(&file, &big);
    let b = env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    let ui = Ui::start(
        &env.state_dir(),
        &env.path("no-agent.sock"),
        &[&env.medium],
        None,
    );
    let id = media_id(&env);
    let (cookie, key) = ui.session();
    let path = file.to_str().unwrap();

    // Two downloads (every permit) whose readers take the head and then stop reading.
    let mut stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let url = ticket(&ui, &cookie, &key, &id, b, path);
            let mut s = TcpStream::connect(&ui.host).unwrap();
            write!(
                s,
                "GET {url} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
                ui.host
            )
            .unwrap();
            let mut head = [0u8; 1024];
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let n = s.read(&mut head).unwrap();
            assert!(
                head[..n].starts_with(b"HTTP/1.1 200"),
                "{}",
                text(&head[..n])
            );
            s
        })
        .collect();

    // A third download gets a permit once they are cut off (NO_PROGRESS), and is the file.
    let t = Instant::now();
    let url = ticket(&ui, &cookie, &key, &id, b, path);
    let r = request(&ui.host, "GET", &url, &[("Cookie", &cookie)], b"");
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == big, "the third download is not the file");
    assert!(
        took < NO_PROGRESS + Duration::from_secs(15),
        "the third download waited {took:?}"
    );
    // The stalled ones were closed: what they still read ends short of the file.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(
            rest.len() < big.len(),
            "a stalled reader got the whole file"
        );
    }
}

// ---- Attack findings (branch atk-ui) ----

/// Finding 1: a local user without the token, a session or a page key takes every connection
/// slot by opening connections that send nothing (each is closed after HEAD_WAIT, and opened
/// again): the logged-in administrator's request is not answered for as long as it goes on.
#[test]
#[ignore = "attack finding 1: idle connections of a user without a session exhaust the slots"]
fn connections_without_a_session_do_not_lock_the_administrator_out() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("a.txt"), b"a\n");
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    let ui = Ui::start(
        &env.state_dir(),
        &env.path("no-agent.sock"),
        &[&env.medium],
        None,
    );
    let (cookie, key) = ui.session();

    // The attacker: no token, no cookie; it opens connections (sending nothing) faster than
    // HEAD_WAIT closes them, at most 400 of its own at once.
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stop, host) = (stop.clone(), ui.host.clone());
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Connections the server closed are dropped.
                held.retain(|s| {
                    s.set_nonblocking(true).unwrap();
                    let mut b = [0u8; 256];
                    match (&*s).read(&mut b) {
                        Ok(0) => false,
                        Ok(_) => true,
                        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                    }
                });
                while held.len() < 400 {
                    match TcpStream::connect_timeout(
                        &host.parse().unwrap(),
                        Duration::from_millis(200),
                    ) {
                        Ok(s) => held.push(s),
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(2 * HEAD_WAIT);

    // The administrator's request, with its session and key: answered in seconds.
    let t = Instant::now();
    let got = std::thread::spawn({
        let (host, cookie, key) = (ui.host.clone(), cookie.clone(), key.clone());
        move || {
            request(
                &host,
                "GET",
                "/api/trays",
                &[("Cookie", &cookie), ("X-Trayback-Key", &key)],
                b"",
            )
            .status
        }
    });
    while !got.is_finished() && t.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let answered = got.is_finished();
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    assert!(
        answered && t.elapsed() < Duration::from_secs(5),
        "the administrator's request was not answered within {:?} while a user without a \
         session held idle connections",
        t.elapsed()
    );
}

/// The (size, backups) of each version of `path` as `v` (a versions answer) lists them.
fn sizes_and_backups(v: &serde_json::Value) -> Vec<(u64, Vec<u64>)> {
    v.as_array()
        .unwrap_or_else(|| panic!("no versions in {v}"))
        .iter()
        .map(|x| {
            let ids = x["backups"].as_array().unwrap();
            let ids = ids.iter().map(|b| b.as_u64().unwrap()).collect();
            (x["size"].as_u64().unwrap(), ids)
        })
        .collect()
}

/// Finding 3: the headers the interface keeps are keyed by the ID file and the backup id,
/// but a copy of a plaintext tray (an encrypted one refuses a tree older than it saw) (a `dd` clone, or the tray put back from an image of itself) has
/// the same ID file and, once it diverges, other backups under the same ids. After the
/// trays are swapped, the versions page answers from the other tray's header (here: an
/// error about a listing that is not on this medium; with shared blocks, another backup's
/// files), while the CLI reads the tray that is there.
#[test]
#[ignore = "attack finding 3: kept headers outlive a swap to a diverged copy of the same tray"]
fn versions_after_a_swap_to_a_diverged_copy_of_the_tray_are_that_copys() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    let notes = env.src.join("notes.txt");
    write(&notes, b"one\n");
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    // The copy, made while both hold backup 1 only.
    let copy = env.path("copy");
    sh(std::process::Command::new("cp")
        .arg("-a")
        .arg(&env.medium)
        .arg(&copy));
    write(&notes, b"two on the tray\n");
    let b2 = env.backup(&["--kind", "daily", "--at", "2026-03-03 09:00"]);

    let ui = Ui::start(
        &env.state_dir(),
        &env.path("no-agent.sock"),
        &[&env.medium],
        None,
    );
    let id = media_id(&env);
    let (cookie, key) = ui.session();
    let versions = || {
        let r = request(
            &ui.host,
            "GET",
            &format!("/api/media/{id}/versions?path={}", notes.to_str().unwrap()),
            &[("Cookie", &cookie), ("X-Trayback-Key", &key)],
            b"",
        );
        assert_eq!(r.status, 200, "versions: {}", r.text());
        sizes_and_backups(&r.json()["versions"])
    };
    assert_eq!(versions(), [(4, vec![1]), (16, vec![b2])]);

    // The tray is swapped for the copy (same path, as the same mount point would be), which
    // then gets a backup 2 of its own.
    std::fs::rename(&env.medium, env.path("tray")).unwrap();
    std::fs::rename(&copy, &env.medium).unwrap();
    write(&notes, b"three, on the copy: longer\n");
    assert_eq!(
        env.backup(&["--kind", "daily", "--at", "2026-03-04 09:00"]),
        b2
    );
    let cli: serde_json::Value = serde_json::from_str(&env.ok(&[
        "versions",
        "--medium",
        "{medium}",
        notes.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(sizes_and_backups(&cli), [(4, vec![1]), (27, vec![b2])]);
    assert_eq!(
        versions(),
        sizes_and_backups(&cli),
        "the page's versions are not the medium's"
    );
}

/// The most memory process `pid` has held (VmHWM), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb << 10
}

/// Finding 4: the interface keeps every header it reads (up to 100 000 a medium, 16 media),
/// and a header is as large as the medium makes it (up to 64 MiB of YAML: `problems`,
/// `sources`, `packs`). An altered plaintext tray whose headers are large makes one versions
/// request hold all of them at once, for as long as the interface runs: its memory follows
/// what the medium says, not a bound (before, headers were read one at a time).
#[test]
#[ignore = "attack finding 4: kept headers hold memory in proportion to the medium's headers"]
fn kept_headers_do_not_hold_memory_in_proportion_to_a_hostile_medium() {
    const BACKUPS: usize = 40;
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    let notes = env.src.join("notes.txt");
    write(&notes, b"one\n");
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    for i in 1..BACKUPS {
        let at = format!("2026-{:02}-{:02} 09:00", 3 + i / 28, 2 + i % 28);
        env.backup(&["--kind", "daily", "--at", &at]);
    }
    // Each header altered to list 2 MiB of problems (short ones: the most memory per byte).
    let problems = "- {path: /p, error: e}\n".repeat((2 << 20) / 23);
    for i in 1..=BACKUPS {
        let h = env
            .medium
            .join(format!("trayback/backups/{i:08}/header.yaml"));
        let text = std::fs::read_to_string(&h).unwrap();
        let text = text.replace("problems: []\n", &format!("problems:\n{problems}"));
        std::fs::write(&h, text).unwrap();
    }
    let ui = Ui::start(
        &env.state_dir(),
        &env.path("no-agent.sock"),
        &[&env.medium],
        None,
    );
    let id = media_id(&env);
    let (cookie, key) = ui.session();
    let get = |path: &str| {
        let r = request(
            &ui.host,
            "GET",
            path,
            &[("Cookie", &cookie), ("X-Trayback-Key", &key)],
            b"",
        );
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    };
    get("/api/trays");
    let start = peak_memory(ui.pid());
    // One header read: what reading one costs.
    get(&format!("/api/media/{id}/ls?backup=1&path=/"));
    let one = peak_memory(ui.pid()) - start;
    // Every header read, by one versions request.
    get(&format!(
        "/api/media/{id}/versions?path={}",
        notes.to_str().unwrap()
    ));
    let all = peak_memory(ui.pid()) - start;
    assert!(
        all < 3 * one + (32 << 20),
        "reading {BACKUPS} headers held {} MiB at the peak, reading one {} MiB",
        all >> 20,
        one >> 20
    );
}

/// Finding 5: a restore asked while both of the LONG_TASKS permits are held (here by two
/// downloads read at 16 × MIN_RATE, which the no-progress limit rightly lets run for as long
/// as they take) is neither started nor refused: its POST waits for a permit without a
/// limit (`ops::restore` awaits it before the operation exists), so the page shows nothing,
/// and each such request holds one of the browser's few connections and a server slot.
#[test]
#[ignore = "attack finding 5: a restore waits without limit for a permit held by downloads"]
fn a_restore_asked_while_the_permits_are_held_is_answered_at_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use trayback::ui::MIN_RATE;
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let big = bytes(7, 48 << 20);
    let file = env.src.join("big.bin");
    write(&file, &big);
    let b = env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    let ui = Ui::start(
        &env.state_dir(),
        &env.path("no-agent.sock"),
        &[&env.medium],
        None,
    );
    let id = media_id(&env);
    let (cookie, key) = ui.session();

    // Two downloads, each read steadily at 16 × MIN_RATE (48 MiB: minutes).
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let url = ticket(&ui, &cookie, &key, &id, b, file.to_str().unwrap());
            let mut s = TcpStream::connect(&ui.host).unwrap();
            write!(
                s,
                "GET {url} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
                ui.host
            )
            .unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (t, mut got, mut buf) = (Instant::now(), 0u64, [0u8; 4096]);
                while !stop.load(Ordering::Relaxed) {
                    let due = got as f64 / (16 * MIN_RATE) as f64;
                    let now = t.elapsed().as_secs_f64();
                    if due > now {
                        std::thread::sleep(Duration::from_secs_f64(due - now));
                    }
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n as u64,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));

    // A dry-run restore of the file under a directory: started or refused, at once.
    let t = Instant::now();
    let asked = std::thread::spawn({
        let (host, cookie, key, origin) =
            (ui.host.clone(), cookie.clone(), key.clone(), ui.url(""));
        let body = serde_json::json!({
            "backup": b, "paths": [file.to_str().unwrap()],
            "to": env.path("restored").to_str().unwrap(), "dry_run": true,
        });
        let path = format!("/api/media/{id}/restore");
        move || {
            request(
                &host,
                "POST",
                &path,
                &[
                    ("Cookie", &cookie),
                    ("X-Trayback-Key", &key),
                    ("Origin", &origin),
                    ("Content-Type", "application/json"),
                ],
                body.to_string().as_bytes(),
            )
            .status
        }
    });
    while !asked.is_finished() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let answered = asked.is_finished();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(
        answered && t.elapsed() < Duration::from_secs(5),
        "a restore asked while two downloads held the permits got no answer in {:?}",
        t.elapsed()
    );
}

/// The TCP sockets process `pid` holds open.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Finding 2: the no-progress limit cuts off a download whose reader takes a steady 4 times
/// MIN_RATE (`pace` promises a client reading at MIN_RATE or faster never runs into it). The
/// first megabytes fill the socket buffers at once (credit for them is not kept: `stalled`
/// never goes below zero), then a write stays blocked until the kernel has room for more,
/// which a reader at 64 KiB/s takes longer than NO_PROGRESS to make (at 16 × MIN_RATE it is
/// not cut). A browser behind a slow SSH tunnel sees the download fail after ~10 s.
#[test]
#[ignore = "attack finding 2: a reader at 4 × MIN_RATE is cut off by the no-progress limit"]
fn a_download_read_steadily_above_min_rate_is_not_cut_off() {
    use trayback::ui::MIN_RATE;
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let big = bytes(7, 48 << 20);
    let file = env.src.join("big.bin");
    write(&file, &big);
    let b = env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    let ui = Ui::start(
        &env.state_dir(),
        &env.path("no-agent.sock"),
        &[&env.medium],
        None,
    );
    let id = media_id(&env);
    let (cookie, key) = ui.session();
    let url = ticket(&ui, &cookie, &key, &id, b, file.to_str().unwrap());
    // The connections of the requests so far closed: what the server holds without it.
    std::thread::sleep(Duration::from_secs(1));
    let before = sockets_of(ui.pid());
    let mut s = TcpStream::connect(&ui.host).unwrap();
    write!(
        s,
        "GET {url} HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
        ui.host
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    // Read at 4 × MIN_RATE, in small reads spread evenly, for 3 × NO_PROGRESS.
    let rate = 4 * MIN_RATE;
    let t = Instant::now();
    let mut got = 0u64;
    let mut buf = [0u8; 4096];
    while t.elapsed() < 3 * NO_PROGRESS {
        let due = got as f64 / rate as f64;
        let now = t.elapsed().as_secs_f64();
        if due > now {
            std::thread::sleep(Duration::from_secs_f64(due - now));
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n as u64,
        }
    }
    // What the client has not read yet is in the sockets' buffers; whether the server
    // still serves the download is whether it still holds the connection.
    assert_eq!(
        sockets_of(ui.pid()),
        before + 1,
        "the server dropped a download read at {} KiB/s ({} × MIN_RATE) within {:?} ({got} \
         bytes read)",
        rate >> 10,
        rate / MIN_RATE,
        t.elapsed()
    );
}

/// Finding 6: a forecast that failed once is kept as failed for that tree: after a transient
/// fault while it ran in the background (a header that could not be read: a tray pulled or
/// a flaky cable mid-read, here a header moved away for a moment), the space page answers
/// that old error, the used space included, until the tree changes or the interface restarts,
/// although the medium reads again.
#[test]
#[ignore = "attack finding 6: a forecast failed by a transient fault fails the space page until the tree changes"]
fn the_space_page_recovers_once_the_medium_reads_again() {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init_plaintext();
    write(&env.src.join("a.txt"), b"a\n");
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    env.backup(&["--kind", "daily", "--at", "2026-03-03 09:00"]);
    let ui = Ui::start(
        &env.state_dir(),
        &env.path("no-agent.sock"),
        &[&env.medium],
        None,
    );
    let id = media_id(&env);
    let (cookie, key) = ui.session();
    let space = || {
        request(
            &ui.host,
            "GET",
            &format!("/api/media/{id}/space"),
            &[("Cookie", &cookie), ("X-Trayback-Key", &key)],
            b"",
        )
    };
    // A header unreadable for a moment, while the forecast is computed.
    let header = env.medium.join("trayback/backups/00000001/header.yaml");
    let away = env.path("header.away");
    std::fs::rename(&header, &away).unwrap();
    assert_eq!(space().status, 200, "the space page before the forecast");
    std::thread::sleep(Duration::from_secs(2));
    std::fs::rename(&away, &header).unwrap();
    assert_eq!(
        env.run(&["list", "--medium", "{medium}"]).status.code(),
        Some(0),
        "the medium reads again"
    );

    // The space page: answered (the forecast there, or being computed again).
    let t = Instant::now();
    let last = loop {
        let r = space();
        if r.status == 200 || t.elapsed() > Duration::from_secs(5) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        last.status,
        200,
        "the space page of a medium that reads again: {}",
        last.text()
    );
}

/// A directory medium with `names` (raw bytes) in `src/odd`, backed up; the interface
/// serving it, logged in: (env, ui, media id, cookie, key).
fn odd_names(names: &[&[u8]]) -> (Env, Ui, String, String, String) {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    for n in names {
        write(&env.src.join("odd").join(std::ffi::OsStr::from_bytes(n)), n);
    }
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    let ui = Ui::start(
        &env.state_dir(),
        &env.path("no-agent.sock"),
        &[&env.medium],
        None,
    );
    let id = media_id(&env);
    let (cookie, key) = ui.session();
    (env, ui, id, cookie, key)
}

/// Finding 7 (P3): two different names are shown alike: the byte 0xE9 (not UTF-8) is shown
/// `\xE9`, which is also how the four-character name `\xE9` is shown as it is
/// (`wire::shown` escapes only bytes that are not UTF-8, never a backslash).
#[test]
#[ignore = "attack finding 7: a name that is not UTF-8 and a name spelling its escape are shown alike"]
fn different_names_are_shown_differently() {
    let (env, ui, id, cookie, key) = odd_names(&[b"caf\xe9", b"caf\\xE9"]);
    let r = request(
        &ui.host,
        "GET",
        &format!(
            "/api/media/{id}/ls?backup=1&path={}",
            env.src.join("odd").to_str().unwrap()
        ),
        &[("Cookie", &cookie), ("X-Trayback-Key", &key)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let shown: Vec<String> = r.json()["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(shown.len(), 2);
    assert_ne!(shown[0], shown[1], "two names shown as one");
}

/// Finding 8 (P3): a key's `%` must be followed by two hex digits, but `%+9` is taken as the
/// byte 9 (`u8::from_str_radix` accepts a leading `+`), so a key is not one spelling of one
/// path and a malformed key is not refused as the message says.
#[test]
#[ignore = "attack finding 8: a key's %+H is decoded instead of refused"]
fn a_percent_not_followed_by_two_hex_digits_is_refused() {
    let (env, ui, id, cookie, key) = odd_names(&[b"a"]);
    let r = request(
        &ui.host,
        "GET",
        &format!(
            "/api/media/{id}/ls?backup=1&path={}/odd%25%2B9",
            env.src.to_str().unwrap()
        ),
        &[("Cookie", &cookie), ("X-Trayback-Key", &key)],
        b"",
    );
    assert!(
        r.status == 400 && r.text().contains("two hex digits"),
        "{}: {}",
        r.status,
        r.text()
    );
}
