//! The web interface (`trayback ui`) against real media: its safety rules over raw HTTP
//! (no token, a wrong token, no page key, a cross-site POST, a wrong Host, a body too large,
//! a path with `..`, the token file root's alone), and its pages in a real browser (Debian's
//! headless Chromium through WebDriver): the tree has one node per line of `trayback tree`, a
//! file's versions are the backups that changed it, restoring a chosen version through the
//! page gives exactly its bytes, a download is the file, and eject through the page unmounts
//! the tray the real agent holds (loop device, udevd). Screenshots of the main pages are
//! saved (`scripts/ui-screenshots.sh` puts them in docs/).

#[path = "support/lab.rs"]
mod lab;
#[path = "support/util.rs"]
mod util;
#[path = "support/web.rs"]
mod web;

use serde_json::json;
use std::time::{Duration, Instant};
use trayback::ui::{HEAD_WAIT, MAX_CONNECTIONS, MAX_OPS};
use util::*;
use web::*;

/// A directory medium with a small history: a monthly, a chain of four micros, a daily with
/// a micro, a weekly; `notes.txt` changed before some of them. Returns the env and, for each
/// backup in order, the content `notes.txt` had in it.
fn history() -> (Env, Vec<Vec<u8>>) {
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    write(&env.src.join("docs/report.odt"), &bytes(1, 300_000));
    write(&env.src.join("photos/cat.jpg"), &bytes(2, 40_000));
    let notes = env.src.join("docs/notes.txt");
    let steps: &[(&str, &str, Option<&[u8]>)] = &[
        ("monthly", "2026-03-02 09:00", Some(b"first draft\n")),
        ("micro", "2026-03-02 09:15", None),
        ("micro", "2026-03-02 09:30", Some(b"second draft, longer\n")),
        ("micro", "2026-03-02 09:45", None),
        ("micro", "2026-03-02 10:00", Some(b"third\n")),
        ("daily", "2026-03-03 09:00", None),
        ("micro", "2026-03-03 13:15", Some(b"the 1:15 PM version\n")),
        ("weekly", "2026-03-09 09:00", None),
    ];
    let mut contents = Vec::new();
    let mut now: Vec<u8> = Vec::new();
    for (kind, at, change) in steps {
        if let Some(c) = change {
            write(&notes, c);
            now = c.to_vec();
        }
        env.backup(&["--kind", kind, "--at", at]);
        contents.push(now.clone());
    }
    (env, contents)
}

fn no_agent(env: &Env) -> std::path::PathBuf {
    env.path("no-agent.sock")
}

#[test]
fn requests_without_the_token_the_key_or_the_right_host_are_refused() {
    let (env, _) = history();
    let ui = Ui::start(&env.state_dir(), &no_agent(&env), &[&env.medium], None);
    let id = media_id(&env);
    let h = ui.host.as_str();

    // The token file: root's alone, in a directory only root enters.
    let file = env.state_dir().join("ui/url");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), ui.login);
    assert!(
        is_root(),
        "this test needs root (to try reading the URL as nobody); run it as root, as CI does"
    );
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new("cat")
        .arg(&file)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody read the login URL");

    // Nothing without a session: pages, scripts, the API.
    for path in [
        "/",
        "/static/common.js",
        "/api/trays",
        &format!("/m/{id}/tree"),
    ] {
        let r = request(h, "GET", path, &[], b"");
        assert_eq!(r.status, 401, "{path}: {r:?}");
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(r.header("referrer-policy").as_deref(), Some("no-referrer"));
    }
    let r = request(h, "GET", "/login?token=00", &[], b"");
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());

    // The token gives a session cookie and a redirect to a URL without the token.
    let r = request(h, "GET", &login_path(&ui.login), &[], b"");
    assert_eq!(r.status, 303);
    let set = r.header("set-cookie").unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let location = r.header("location").unwrap();
    assert!(location.starts_with("/#key=") && !location.contains("token"));
    let (cookie, key) = ui.session();
    let with = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        let mut v = vec![("Cookie", cookie.clone())];
        v.extend(extra.iter().cloned());
        v
    };
    let send = |method: &str, path: &str, hs: Vec<(&'static str, String)>, body: &[u8]| {
        let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(h, method, path, &hs, body)
    };

    // The cookie alone opens pages, not the API: the page key is needed (reads included).
    assert_eq!(send("GET", "/", with(&[]), b"").status, 200);
    assert_eq!(send("GET", "/api/trays", with(&[]), b"").status, 403);
    let r = send(
        "GET",
        "/api/trays",
        with(&[("X-Trayback-Key", key.clone())]),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["trays"][0]["media_id"], id);

    // A cross-site POST (the cookie, no key) restores nothing; nor one with a foreign Origin.
    let target = env.path("csrf-target");
    let body = json!({"backup": 1, "to": target.to_str().unwrap()}).to_string();
    let restore = format!("/api/media/{id}/restore");
    let json_type = ("Content-Type", "application/json".to_string());
    let r = send(
        "POST",
        &restore,
        with(&[json_type.clone(), ("Origin", "http://evil.example".into())]),
        body.as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = send(
        "POST",
        &restore,
        with(&[
            json_type.clone(),
            ("X-Trayback-Key", key.clone()),
            ("Origin", "http://evil.example".into()),
        ]),
        body.as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(!target.exists(), "a refused restore wrote something");

    // A wrong Host (DNS rebinding) is refused before anything else.
    for host in ["evil.example", "evil.example:80", "127.0.0.2:1"] {
        let r = send(
            "GET",
            "/api/trays",
            with(&[("Host", host.into()), ("X-Trayback-Key", key.clone())]),
            b"",
        );
        assert_eq!(r.status, 421, "Host {host}: {}", r.text());
    }
    let r = request(
        h,
        "GET",
        &login_path(&ui.login),
        &[("Host", "evil.example")],
        b"",
    );
    assert_eq!(r.status, 421, "login through a foreign Host");

    // Bounded: a body over 64 KiB, a path with "..", a relative target.
    let k = ("X-Trayback-Key", key.clone());
    let big = vec![b'x'; 100_000];
    let r = send(
        "POST",
        &restore,
        with(&[json_type.clone(), k.clone()]),
        &big,
    );
    assert_eq!(r.status, 413, "{}", r.text());
    let r = send(
        "GET",
        &format!("/api/media/{id}/versions?path=/a/../../etc/shadow"),
        with(std::slice::from_ref(&k)),
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains(".."));
    let rel = json!({"backup": 1, "to": "relative/dir"}).to_string();
    let r = send(
        "POST",
        &restore,
        with(&[json_type.clone(), k.clone()]),
        rel.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn the_login_url_is_not_printed_to_a_pipe_or_the_journal() {
    // As under systemd: stdout is not a terminal (here a pipe) and no --print-url.
    let (env, _) = history();
    let mut child = ui_command(&env.state_dir(), &no_agent(&env), &[&env.medium], None)
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    let file = env.state_dir().join("ui/url");
    let login = std::fs::read_to_string(&file).unwrap();
    let _ = child.kill();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    let _ = child.wait();
    let token = login.trim().split("token=").nth(1).unwrap();
    assert!(token.len() >= 32, "{login}");
    let printed = first + &rest;
    assert!(
        !printed.contains(token),
        "the token was printed: {printed:?}"
    );
    assert!(
        printed.contains(file.to_str().unwrap()),
        "the URL file's path was not printed: {printed:?}"
    );
}

/// Connections that hold every slot of `ui`: `kept` that had one answer and stay open
/// (kept alive), then ones that never send a byte, [`MAX_CONNECTIONS`] and a few more.
fn hold_every_slot(ui: &Ui, cookie: &str, kept: usize) -> Vec<std::net::TcpStream> {
    use std::io::{Read, Write};
    let mut held = Vec::new();
    for i in 0..MAX_CONNECTIONS + 6 {
        let mut s = std::net::TcpStream::connect(&ui.host).unwrap();
        if i < kept {
            write!(
                s,
                "GET / HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
                ui.host
            )
            .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", text(&buf[..n]));
        }
        held.push(s);
    }
    // Let the server take them all.
    std::thread::sleep(Duration::from_millis(500));
    held
}

/// Whether the server closed `s` (reading what it still had to say first).
fn closed_by_server(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 64 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn idle_connections_are_closed_in_time_and_sigterm_ends_the_server_with_all_held() {
    let (env, _) = history();
    let mut ui = Ui::start(&env.state_dir(), &no_agent(&env), &[&env.medium], None);
    let (cookie, key) = ui.session();

    // Every slot held by idle connections (kept-alive ones among them): a new request is
    // answered at once (a connection that never sent a byte gives its slot up to it), and
    // every idle one is closed at HEAD_WAIT.
    let held_at = Instant::now();
    let mut held = hold_every_slot(&ui, &cookie, 4);
    let t = Instant::now();
    let r = ui.get(&cookie, &key, "/api/trays");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "served after {:?}",
        t.elapsed()
    );
    std::thread::sleep((HEAD_WAIT + Duration::from_secs(2)).saturating_sub(held_at.elapsed()));
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            closed_by_server(s),
            "idle connection {i} still open after {:?}",
            t.elapsed()
        );
    }

    // With every slot held again, SIGTERM ends it at once (well before HEAD_WAIT frees a
    // slot), and the URL file goes with it.
    let _held = hold_every_slot(&ui, &cookie, 4);
    let status = ui.terminate(Duration::from_secs(4));
    assert!(status.success(), "{status}");
    assert!(
        !env.state_dir().join("ui/url").exists(),
        "the URL file is left"
    );
}

/// A peer on `socket` that takes every connection and never answers (a stuck or hostile
/// agent); it lives as long as the test process.
fn stuck_agent(socket: &std::path::Path) {
    let l = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            held.push(s);
        }
    });
}

#[test]
fn a_stuck_agent_delays_status_by_a_bound_and_running_operations_are_bounded() {
    let (env, _) = history();
    let socket = env.path("stuck-agent.sock");
    stuck_agent(&socket);
    let ui = Ui::start(&env.state_dir(), &socket, &[&env.medium], None);
    let id = media_id(&env);
    let (cookie, key) = ui.session();
    let get = |path: String| {
        let (host, cookie, key) = (ui.host.clone(), cookie.clone(), key.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let hs = [
                ("Cookie", cookie.as_str()),
                ("X-Trayback-Key", key.as_str()),
            ];
            (request(&host, "GET", &path, &hs, b""), t.elapsed())
        })
    };
    // Both ask the agent for its status: answered after STATUS_WAIT, saying why.
    let trays = get("/api/trays".into());
    let other = "0b5e6c3a-9f1d-4a7e-8c2b-1d2e3f4a5b6c";
    let tree = get(format!("/api/media/{other}/tree"));
    let bound = trayback::agent::STATUS_WAIT + Duration::from_secs(5);
    let (r, took) = trays.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(took < bound, "trays answered after {took:?}");
    let v = r.json();
    let why = v["agent_error"].as_str().unwrap_or_default();
    assert!(why.contains("did not answer"), "{v}");
    assert_eq!(v["trays"][0]["media_id"], id, "{v}");
    let (r, took) = tree.join().unwrap();
    assert!(took < bound, "tree answered after {took:?}");
    assert_eq!(r.status, 404, "{}", r.text());
    let why = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        why.contains(other) && why.contains("did not answer"),
        "the agent's error is not carried: {why}"
    );

    // Backup-now waits on the stuck agent: MAX_OPS of them run, one more is refused, and
    // the operations list stays at MAX_OPS.
    let hs = [
        ("Cookie", cookie.as_str()),
        ("X-Trayback-Key", key.as_str()),
        ("Origin", &ui.url("")),
    ];
    let path = format!("/api/trays/{id}/backup-now");
    for i in 0..MAX_OPS {
        let r = request(&ui.host, "POST", &path, &hs, b"");
        assert_eq!(r.status, 200, "backup-now {i}: {}", r.text());
    }
    let r = request(&ui.host, "POST", &path, &hs, b"");
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("running"), "{}", r.text());
    let r = request(&ui.host, "GET", "/api/ops", &hs[..2], b"");
    let ops = r.json();
    assert_eq!(ops.as_array().unwrap().len(), MAX_OPS, "{ops}");
    assert!(ops.as_array().unwrap().iter().all(|o| o["done"].is_null()));
}

#[test]
fn the_trays_page_polls_once_and_redraws_only_what_it_shows() {
    // An ext4 loop-device medium: its free space (shown) stays put, unlike a directory on a
    // busy /tmp; the server's clock (not shown for it) moves on every poll.
    let b = Browser::start();
    let env = Env::with_size(MediumKind::Ext4, "64M")
        .expect("an ext4 loop-device medium needs root and mkfs.ext4");
    env.init();
    write(&env.src.join("a.txt"), b"a\n");
    env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    let ui = Ui::start(&env.state_dir(), &no_agent(&env), &[&env.medium], None);
    b.goto(&ui.login);
    b.wait_text(".tray h2", "Test");
    let polls = "return performance.getEntriesByType('resource')
                   .filter((e) => e.name.includes('/api/trays')).length;";
    let before = b.exec(polls, json!([])).as_u64().unwrap();
    b.exec(
        "window.tbCard = document.querySelector('.tray'); return null;",
        json!([]),
    );
    std::thread::sleep(Duration::from_millis(5500));
    let after = b.exec(polls, json!([])).as_u64().unwrap();
    assert!(
        (1..=2).contains(&(after - before)),
        "{} polls in 5.5 s",
        after - before
    );
    let same = b.exec(
        "return document.querySelector('.tray') === window.tbCard;",
        json!([]),
    );
    assert_eq!(
        same,
        json!(true),
        "the trays page was redrawn though nothing shown changed"
    );
}

#[test]
fn the_pages_show_the_tree_the_versions_and_restore_a_chosen_version() {
    let b = Browser::start();
    let (env, contents) = history();
    let ui = Ui::start(&env.state_dir(), &no_agent(&env), &[&env.medium], None);
    let id = media_id(&env);
    let shots = screenshot_dir();

    // Login: the token is exchanged and leaves the address bar.
    let t0 = std::time::Instant::now();
    b.goto(&ui.login);
    let card = b.wait_text(&format!(".tray[data-media='{id}'] h2"), "Test");
    assert!(card.contains("directory"), "{card}");
    assert_eq!(b.current_url(), ui.url("/"));
    b.screenshot(&shots.join("ui-trays.png"));
    eprintln!("trays page: {:?}", t0.elapsed());

    // The tree: one node per line of `trayback tree`, every backup in one node.
    b.goto(&ui.url(&format!("/m/{id}/tree")));
    b.find("svg#tree g.node");
    let drawn = env.ok(&["tree", "--medium", "{medium}"]);
    let counts = b.attrs("svg#tree g.node", "data-count");
    assert_eq!(counts.len(), drawn.lines().count(), "{drawn}");
    let sum: usize = counts.iter().map(|c| c.parse::<usize>().unwrap()).sum();
    assert_eq!(sum, contents.len());
    assert_eq!(b.all("svg#timeline circle.dot").len(), contents.len());
    b.screenshot(&shots.join("ui-tree.png"));
    eprintln!("tree page: {:?}", t0.elapsed());

    // Find the file by name, then its versions: one row per backup, "changed" where the
    // file's content differs from the backup before.
    b.goto(&ui.url(&format!("/m/{id}/files")));
    b.type_into(&b.find("#search"), "NOTES");
    b.click(&b.find("#find"));
    b.wait_text("li.hit", "notes.txt");
    b.click(&b.find("li.hit button.versions"));
    b.wait("the versions", 20, |b| {
        (b.all("#versions tr.version").len() == contents.len()).then_some(())
    });
    let mut seen: Vec<(u64, bool)> = b
        .attrs("#versions tr.version", "data-backup")
        .iter()
        .zip(b.attrs("#versions tr.version", "data-changed"))
        .map(|(id, changed)| (id.parse().unwrap(), changed == "true"))
        .collect();
    seen.sort();
    let expected: Vec<(u64, bool)> = contents
        .iter()
        .enumerate()
        .map(|(i, c)| ((i + 1) as u64, i == 0 || contents[i - 1] != *c))
        .collect();
    assert_eq!(seen, expected);
    b.screenshot(&shots.join("ui-versions.png"));
    eprintln!("versions: {:?}", t0.elapsed());

    // Restore the version of backup 3 under a chosen directory: exactly its bytes.
    b.click(&b.find("#versions tr.version[data-backup='3'] button.restore-version"));
    b.wait_text("#restore ul.picked li", "notes.txt");
    let target = env.path("restored-by-page");
    b.type_into(&b.find("#target-dir"), target.to_str().unwrap());
    b.click(&b.find("#restore-go"));
    let summary = b.wait("the restore's result", 30, |b| {
        b.text_of("#restore-result.ok .summary, #restore-result.failed .summary")
    });
    assert!(summary.starts_with("restored 1 files"), "{summary}");
    let restored = target
        .join(env.src.strip_prefix("/").unwrap())
        .join("docs/notes.txt");
    assert_eq!(std::fs::read(&restored).unwrap(), contents[2]);
    b.screenshot(&shots.join("ui-restore.png"));
    eprintln!("restore: {:?}", t0.elapsed());

    // In place, as `restore --in-place` does: the file there now is newer than backup 3's,
    // so it is kept and listed; with "replace" ticked it becomes backup 3's version.
    let live = env.src.join("docs/notes.txt");
    let now = std::fs::read(&live).unwrap();
    for (overwrite, expect) in [(false, &now), (true, &contents[2])] {
        b.click(&b.find("#versions tr.version[data-backup='3'] button.restore-version"));
        // The restore panel is drawn anew (without the last result) for the version picked.
        b.wait("a fresh restore panel", 20, |b| {
            b.text_of("#restore-result .summary")
                .is_none()
                .then_some(())
        });
        b.wait_text("#restore ul.picked li", "notes.txt");
        b.click(&b.find("#to-original"));
        if overwrite {
            b.click(&b.find("#overwrite"));
        }
        b.click(&b.find("#restore-go"));
        let summary = b.wait("the in-place restore's result", 30, |b| {
            b.text_of("#restore-result.ok .summary, #restore-result.failed .summary")
        });
        assert_eq!(
            summary.contains("1 kept as they were"),
            !overwrite,
            "{summary}"
        );
        assert_eq!(&std::fs::read(&live).unwrap(), expect, "{summary}");
    }

    // Download the 1:15 PM version (backup 7) through the page's own API calls: its bytes.
    let path = env.src.join("docs/notes.txt");
    let got = b.exec_async(
        "const done = arguments[arguments.length - 1];
         TB.api('/api/media/' + arguments[0] + '/download', {backup: 7, path: arguments[1]})
           .then((r) => fetch(r.url)).then((r) => r.arrayBuffer())
           .then((buf) => done(Array.from(new Uint8Array(buf))))
           .catch((e) => done('failed: ' + e.message));",
        json!([id, path.to_str().unwrap()]),
    );
    let got: Vec<u8> = serde_json::from_value(got.clone()).unwrap_or_else(|_| panic!("{got}"));
    assert_eq!(got, contents[6]);

    // The space page draws its charts.
    b.goto(&ui.url(&format!("/m/{id}/space")));
    b.find("svg#forecast path.line");
    b.find("svg#reach rect.bar");
    b.screenshot(&shots.join("ui-space.png"));
    eprintln!("space: {:?}", t0.elapsed());
}

#[test]
fn backup_now_and_eject_through_the_page_on_a_tray_the_agent_holds() {
    let b = Browser::start();
    let mut lab = lab::Lab::new("");
    write(&lab.src.join("letter.txt"), b"Dear tray,\n");
    let label = lab.label("ui");
    let img = lab.image("tray.img", &label, "256M");
    let dev = lab.insert(&img);
    lab.wait_first_monthly(&label);
    let ui = Ui::start(&lab.state_dir(), &lab.socket, &[], Some(&lab.config));

    b.goto(&ui.login);
    let card = ".tray[data-state='inserted']".to_string();
    b.wait_text(&format!("{card} h2"), &label);
    assert!(lab::mounted(&dev));

    // Backup now: the agent makes one, and the page says which.
    let before = lab::newest(&lab.status(), &label, "micro");
    b.click(&b.find(&format!("{card} button.backup-now")));
    let said = b.wait("the backup's result", 60, |b| {
        b.text_of(&format!("{card} .result.ok, {card} .result.failed"))
    });
    assert!(said.contains("made, verified"), "{said}");
    let after = lab::newest(&lab.status(), &label, "micro");
    assert!(
        after.is_some() && after != before,
        "{before:?} -> {after:?}"
    );
    b.screenshot(&screenshot_dir().join("ui-trays-inserted.png"));

    // Eject: the page says it is safe to remove, and it is: unmounted.
    b.click(&b.find(&format!("{card} button.eject")));
    let said = b.wait("the eject's result", 60, |b| {
        b.text_of(".tray .result.ok[data-op='eject'], .tray .result.failed[data-op='eject']")
    });
    assert!(said.contains("safe to remove"), "{said}");
    assert!(
        !lab::mounted(&dev),
        "{dev} is still mounted after the page said {said:?}"
    );
    b.screenshot(&screenshot_dir().join("ui-ejected.png"));
}

#[test]
fn a_name_that_is_not_utf8_is_shown_escaped_and_restored_and_downloaded_alone() {
    use std::os::unix::ffi::OsStrExt;
    let b = Browser::start();
    let env = Env::new(MediumKind::Dir).unwrap();
    env.init();
    let dir = env.src.join("odd");
    let file = dir.join(std::ffi::OsStr::from_bytes(b"caf\xe9 notes.txt"));
    write(&file, b"a Latin-1 name\n");
    write(&dir.join("plain.txt"), b"plain\n");
    let backup = env.backup(&["--kind", "monthly", "--at", "2026-03-02 09:00"]);
    let ui = Ui::start(&env.state_dir(), &no_agent(&env), &[&env.medium], None);
    let id = media_id(&env);
    b.goto(&ui.login);
    b.wait_text(".tray h2", "Test");

    // The directory on the files page: the name with its byte shown as \xE9.
    let at = format!(
        "/m/{id}/files?backup={backup}&path={}",
        dir.to_str().unwrap()
    );
    b.goto(&ui.url(&at));
    let row = "#listing tr.entry.file[data-key$='caf%E9%20notes.txt']";
    assert!(b.text(&b.find(row)).contains("caf\\xE9 notes.txt"));

    // Its versions, then "restore this version" under a chosen directory: only it, exactly.
    b.click(&b.find(&format!("{row} button.versions")));
    b.wait("the versions", 20, |b| {
        (b.all("#versions tr.version").len() == 1).then_some(())
    });
    assert!(b
        .wait_text("#versions h2", "caf\\xE9 notes.txt")
        .contains("/odd/"));
    b.click(&b.find("#versions tr.version button.restore-version"));
    b.wait_text("#restore ul.picked li", "caf\\xE9 notes.txt");
    let target = env.path("restored");
    b.type_into(&b.find("#target-dir"), target.to_str().unwrap());
    b.click(&b.find("#restore-go"));
    let summary = b.wait("the restore's result", 30, |b| {
        b.text_of("#restore-result.ok .summary, #restore-result.failed .summary")
    });
    assert!(summary.starts_with("restored 1 files"), "{summary}");
    let under = target.join(dir.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(under.join(file.file_name().unwrap())).unwrap(),
        b"a Latin-1 name\n"
    );
    assert!(!under.join("plain.txt").exists(), "more than the one file");

    // Downloaded by the key the page holds for it: its bytes.
    let key = b.attr(&b.find(row), "data-key").unwrap();
    let got = b.exec_async(
        "const done = arguments[arguments.length - 1];
         TB.api('/api/media/' + arguments[0] + '/download', {backup: arguments[1], path: arguments[2]})
           .then((r) => fetch(r.url)).then((r) => r.arrayBuffer())
           .then((buf) => done(Array.from(new Uint8Array(buf))))
           .catch((e) => done('failed: ' + e.message));",
        json!([id, backup, key]),
    );
    let got: Vec<u8> = serde_json::from_value(got.clone()).unwrap_or_else(|_| panic!("{got}"));
    assert_eq!(got, b"a Latin-1 name\n");
}
