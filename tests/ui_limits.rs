//! The web interface's no-progress limit against real slow clients over TCP: clients that
//! dribble a request body hold no connection slot past `BODY_WAIT`, and downloads whose
//! readers stop reading hold neither a slot nor one of the two download permits past
//! `NO_PROGRESS` and its credit (without the limit, a third download would be refused as
//! busy for ever).

#[path = "support/util.rs"]
mod util;
#[path = "support/web.rs"]
mod web;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use trayback::ui::{BODY_WAIT, MAX_CONNECTIONS, NO_PROGRESS};
use util::*;
use web::*;

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
    let r = ui.get(&cookie, &key, "/api/trays");
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

    // A third download is refused at once while they hold the permits (busy), and gets a
    // permit once they are cut off (NO_PROGRESS, after the credit their buffers earned, at
    // most NO_PROGRESS more), and is the file.
    let t = Instant::now();
    let limit = 2 * NO_PROGRESS + Duration::from_secs(15);
    let r = ask_ticket(&ui, &cookie, &key, &id, b, path);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("busy"), "{}", r.text());
    let r = loop {
        let r = ask_ticket(&ui, &cookie, &key, &id, b, path);
        let r = match r.status {
            200 => {
                let url = r.json()["url"].as_str().unwrap().to_string();
                request(&ui.host, "GET", &url, &[("Cookie", &cookie)], b"")
            }
            _ => r,
        };
        if r.status != 429 || t.elapsed() > limit {
            break r;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == big, "the third download is not the file");
    assert!(took < limit, "the third download waited {took:?}");
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
