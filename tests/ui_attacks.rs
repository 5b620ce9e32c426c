//! Attacks on the web interface (branch atk-ui), each a finding (each was `#[ignore]`d until
//! it was fixed): slots held by a user without a session, the no-progress
//! limit cutting readers faster than MIN_RATE, a restore waiting without limit for a permit,
//! kept headers (a swap to a diverged copy, memory), a failed forecast kept, and how path
//! keys are shown and read.

#[path = "support/util.rs"]
mod util;
#[path = "support/web.rs"]
mod web;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trayback::ui::{HEAD_WAIT, MIN_RATE, NO_PROGRESS};
use util::*;
use web::*;

/// `trayback ui` serving one directory medium, logged in.
struct Served {
    env: Env,
    ui: Ui,
    id: String,
    cookie: String,
    key: String,
}

/// A directory medium (`plaintext` or encrypted) that `fill` backs up, served.
fn served(plaintext: bool, fill: impl FnOnce(&Env)) -> Served {
    let env = Env::new(MediumKind::Dir).unwrap();
    if plaintext {
        env.init_plaintext();
    } else {
        env.init();
    }
    fill(&env);
    let ui = Ui::serving(&env);
    let id = media_id(&env);
    let (cookie, key) = ui.session();
    Served {
        env,
        ui,
        id,
        cookie,
        key,
    }
}

impl Served {
    /// GET `path` with the session and the page key.
    fn get(&self, path: &str) -> Reply {
        self.ui.get(&self.cookie, &self.key, path)
    }

    /// A download of `path` in backup 1 asked for and its GET sent: the connection.
    fn download(&self, path: &str) -> TcpStream {
        let url = ticket(&self.ui, &self.cookie, &self.key, &self.id, 1, path);
        let mut s = TcpStream::connect(&self.ui.host).unwrap();
        write!(
            s,
            "GET {url} HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\n\r\n",
            self.ui.host, self.cookie
        )
        .unwrap();
        s
    }
}

/// A 48 MiB file `big.bin` backed up as backup 1: its path.
fn big_file(env: &Env) -> String {
    let file = env.src.join("big.bin");
    write(&file, &bytes(7, 48 << 20));
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    file.to_str().unwrap().to_string()
}

/// Read `s` at `rate` bytes a second, in small reads spread evenly, while `go` says so and
/// the connection gives bytes: the bytes read.
fn read_at(mut s: TcpStream, rate: u64, go: impl Fn() -> bool) -> u64 {
    let (t, mut got, mut buf) = (Instant::now(), 0u64, [0u8; 4096]);
    while go() {
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
    got
}

/// Whether `f`, run on a thread, ends within `within` (it is left running if not).
fn ends_within<T: Send + 'static>(
    within: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> bool {
    let t = Instant::now();
    let h = std::thread::spawn(f);
    while !h.is_finished() && t.elapsed() < within {
        std::thread::sleep(Duration::from_millis(100));
    }
    h.is_finished()
}

/// Finding 1: a local user without the token, a session or a page key takes every connection
/// slot by opening connections that send nothing (each is closed after HEAD_WAIT, and opened
/// again): the logged-in administrator's request is not answered for as long as it goes on.
#[test]
fn connections_without_a_session_do_not_lock_the_administrator_out() {
    let s = served(false, |env| {
        write(&env.src.join("a.txt"), b"a\n");
        env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    });

    // The attacker: no token, no cookie; it opens connections (sending nothing) faster than
    // HEAD_WAIT closes them, at most 400 of its own at once.
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stop, host) = (stop.clone(), s.ui.host.clone());
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Connections the server closed are dropped.
                held.retain(|c| {
                    c.set_nonblocking(true).unwrap();
                    match (&*c).read(&mut [0u8; 256]) {
                        Ok(0) => false,
                        Ok(_) => true,
                        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                    }
                });
                while held.len() < 400 {
                    let addr = host.parse().unwrap();
                    match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                        Ok(c) => held.push(c),
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(2 * HEAD_WAIT);

    // The administrator's request, with its session and key: answered in seconds.
    let (host, cookie, key) = (s.ui.host.clone(), s.cookie.clone(), s.key.clone());
    let answered = ends_within(Duration::from_secs(5), move || {
        let auth = [("Cookie", &cookie[..]), ("X-Trayback-Key", &key[..])];
        request(&host, "GET", "/api/trays", &auth, b"").status
    });
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    assert!(
        answered,
        "the administrator's request was not answered within 5 s while a user without a \
         session held idle connections"
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
fn a_download_read_steadily_above_min_rate_is_not_cut_off() {
    let mut file = String::new();
    let s = served(false, |env| file = big_file(env));
    // The connections of the requests so far closed: what the server holds without it.
    let url = ticket(&s.ui, &s.cookie, &s.key, &s.id, 1, &file);
    std::thread::sleep(Duration::from_secs(1));
    let before = sockets_of(s.ui.pid());
    let mut c = TcpStream::connect(&s.ui.host).unwrap();
    write!(
        c,
        "GET {url} HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\n\r\n",
        s.ui.host, s.cookie
    )
    .unwrap();

    // Read at 4 × MIN_RATE for 3 × NO_PROGRESS. What the client has not read yet is in the
    // sockets' buffers; whether the server still serves the download is whether it still
    // holds the connection.
    // (A second handle keeps the connection open after `read_at` is done with it, until the
    // count below: a close by the client would be counted as the server's.)
    let _open = c.try_clone().unwrap();
    let t = Instant::now();
    let got = read_at(c, 4 * MIN_RATE, || t.elapsed() < 3 * NO_PROGRESS);
    assert_eq!(
        sockets_of(s.ui.pid()),
        before + 1,
        "the server dropped a download read at 64 KiB/s (4 × MIN_RATE) within {:?} ({got} \
         bytes read)",
        t.elapsed()
    );
}

/// Finding 5: a restore asked while both of the LONG_TASKS permits are held (here by two
/// downloads read at 16 × MIN_RATE, which the no-progress limit rightly lets run for as long
/// as they take) is neither started nor refused: its POST waits for a permit without a
/// limit (`ops::restore` awaits it before the operation exists), so the page shows nothing,
/// and each such request holds one of the browser's few connections and a server slot.
#[test]
fn a_restore_asked_while_the_permits_are_held_is_answered_at_once() {
    let mut file = String::new();
    let s = served(false, |env| file = big_file(env));

    // Two downloads, each read steadily at 16 × MIN_RATE (48 MiB: minutes).
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (c, stop) = (s.download(&file), stop.clone());
            std::thread::spawn(move || read_at(c, 16 * MIN_RATE, || !stop.load(Ordering::Relaxed)))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));

    // A dry-run restore of the file under a directory: started or refused, at once.
    let body = serde_json::json!({
        "backup": 1, "paths": [file], "dry_run": true,
        "to": s.env.path("restored").to_str().unwrap(),
    })
    .to_string();
    let (host, path, origin) = (
        s.ui.host.clone(),
        format!("/api/media/{}/restore", s.id),
        s.ui.url(""),
    );
    let (cookie, key) = (s.cookie.clone(), s.key.clone());
    let answered = ends_within(Duration::from_secs(5), move || {
        let headers = [
            ("Cookie", &cookie[..]),
            ("X-Trayback-Key", &key[..]),
            ("Origin", &origin[..]),
            ("Content-Type", "application/json"),
        ];
        request(&host, "POST", &path, &headers, body.as_bytes()).status
    });
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(
        answered,
        "a restore asked while two downloads held the permits got no answer within 5 s"
    );
}

/// The (size, backups) of each version as `v` (a versions answer) lists them.
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
/// but a copy of a plaintext tray (a `dd` clone, or the tray put back from an image of
/// itself; an encrypted one refuses a tree older than it saw) has the same ID file and, once
/// it diverges, other backups under the same ids. After the trays are swapped, the versions
/// page answers from the other tray's header (here: an error about a listing that is not on
/// this medium; with shared blocks, another backup's files), while the CLI reads the tray
/// that is there.
#[test]
fn versions_after_a_swap_to_a_diverged_copy_of_the_tray_are_that_copys() {
    let mut copy_at = std::path::PathBuf::new();
    let s = served(true, |env| {
        write(&env.src.join("notes.txt"), b"one\n");
        env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
        // The copy, made while both hold backup 1 only.
        copy_at = env.path("copy");
        sh(std::process::Command::new("cp")
            .arg("-a")
            .arg(&env.medium)
            .arg(&copy_at));
        write(&env.src.join("notes.txt"), b"two on the tray\n");
        env.backup(&["--kind", "daily", "--at", "2026-03-03 09:00"]);
    });
    let notes = s.env.src.join("notes.txt");
    let versions = || {
        let r = s.get(&format!(
            "/api/media/{}/versions?path={}",
            s.id,
            notes.to_str().unwrap()
        ));
        assert_eq!(r.status, 200, "versions: {}", r.text());
        sizes_and_backups(&r.json()["versions"])
    };
    assert_eq!(versions(), [(4, vec![1]), (16, vec![2])]);

    // The tray is swapped for the copy (same path, as the same mount point would be), which
    // then gets a backup 2 of its own.
    std::fs::rename(&s.env.medium, s.env.path("tray")).unwrap();
    std::fs::rename(&copy_at, &s.env.medium).unwrap();
    write(&notes, b"three, on the copy: longer\n");
    assert_eq!(
        s.env
            .backup(&["--kind", "daily", "--at", "2026-03-04 09:00"]),
        2
    );
    let cli: serde_json::Value = serde_json::from_str(&s.env.ok(&[
        "versions",
        "--medium",
        "{medium}",
        notes.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(sizes_and_backups(&cli), [(4, vec![1]), (27, vec![2])]);
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
fn kept_headers_do_not_hold_memory_in_proportion_to_a_hostile_medium() {
    const BACKUPS: usize = 40;
    let s = served(true, |env| {
        write(&env.src.join("notes.txt"), b"one\n");
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
    });
    let get = |path: &str| {
        let r = s.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    };
    get("/api/trays");
    let start = peak_memory(s.ui.pid());
    // One header read: what reading one costs.
    get(&format!("/api/media/{}/ls?backup=1&path=/", s.id));
    let one = peak_memory(s.ui.pid()) - start;
    // Every header read, by one versions request.
    let notes = s.env.src.join("notes.txt");
    get(&format!(
        "/api/media/{}/versions?path={}",
        s.id,
        notes.to_str().unwrap()
    ));
    let all = peak_memory(s.ui.pid()) - start;
    assert!(
        all < 3 * one + (32 << 20),
        "reading {BACKUPS} headers held {} MiB at the peak, reading one {} MiB",
        all >> 20,
        one >> 20
    );
}

/// Finding 6: a forecast that failed once is kept as failed for that tree: after a transient
/// fault while it ran in the background (a header that could not be read: a tray pulled or
/// a flaky cable mid-read, here a header moved away for a moment), the space page answers
/// that old error, the used space included, until the tree changes or the interface restarts,
/// although the medium reads again.
#[test]
fn the_space_page_recovers_once_the_medium_reads_again() {
    let s = served(true, |env| {
        write(&env.src.join("a.txt"), b"a\n");
        env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
        env.backup(&["--kind", "daily", "--at", "2026-03-03 09:00"]);
    });
    let space = || s.get(&format!("/api/media/{}/space", s.id));
    // A header unreadable for a moment, while the forecast is computed.
    let header = s.env.medium.join("trayback/backups/00000001/header.yaml");
    let away = s.env.path("header.away");
    std::fs::rename(&header, &away).unwrap();
    assert_eq!(space().status, 200, "the space page before the forecast");
    std::thread::sleep(Duration::from_secs(2));
    std::fs::rename(&away, &header).unwrap();
    assert_eq!(
        s.env.run(&["list", "--medium", "{medium}"]).status.code(),
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

/// A directory medium with `names` (raw bytes) in `src/odd`, backed up, served.
fn odd_names(names: &[&[u8]]) -> Served {
    use std::os::unix::ffi::OsStrExt;
    served(false, |env| {
        for n in names {
            let p = env.src.join("odd").join(std::ffi::OsStr::from_bytes(n));
            write(&p, n);
        }
        env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    })
}

/// Finding 7 (P3): two different names are shown alike: the byte 0xE9 (not UTF-8) is shown
/// `\xE9`, which is also how the four-character name `\xE9` is shown as it is
/// (`wire::shown` escapes only bytes that are not UTF-8, never a backslash).
#[test]
fn different_names_are_shown_differently() {
    let s = odd_names(&[b"caf\xe9", b"caf\\xE9"]);
    let dir = s.env.src.join("odd");
    let r = s.get(&format!(
        "/api/media/{}/ls?backup=1&path={}",
        s.id,
        dir.to_str().unwrap()
    ));
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
fn a_percent_not_followed_by_two_hex_digits_is_refused() {
    let s = odd_names(&[b"a"]);
    // The key `<src>/odd%+9`, sent URL-encoded.
    let r = s.get(&format!(
        "/api/media/{}/ls?backup=1&path={}/odd%25%2B9",
        s.id,
        s.env.src.to_str().unwrap()
    ));
    assert!(
        r.status == 400 && r.text().contains("two hex digits"),
        "{}: {}",
        r.status,
        r.text()
    );
}
