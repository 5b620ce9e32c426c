//! The web interface's test kit: the real `trayback ui` as a child process, raw HTTP/1.1
//! requests over a TCP socket (to send what a browser would not: a wrong Host, a forged
//! Origin, no key), and a small WebDriver client driving Debian's headless `chromium`
//! through `chromedriver` (the W3C protocol over HTTP: sessions, elements, scripts,
//! screenshots). Included by the UI tests.
#![allow(dead_code)]

use super::util::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `trayback ui`, started on a free port of 127.0.0.1; killed when dropped.
pub struct Ui {
    child: Child,
    /// The login URL it printed.
    pub login: String,
    /// `127.0.0.1:PORT`.
    pub host: String,
}

/// The `trayback ui` command serving `media` (directory media) and the agent at `socket`,
/// with host state `state`, on a free port of 127.0.0.1; its stdout piped.
pub fn ui_command(state: &Path, socket: &Path, media: &[&Path], config: Option<&Path>) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(["ui", "--listen", "127.0.0.1:0", "--socket"])
        .arg(socket)
        .env("TRAYBACK_STATE_DIR", state)
        .env("TRAYBACK_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for m in media {
        cmd.arg("--medium").arg(m);
    }
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd
}

impl Ui {
    /// Serve `media` (directory media) and the agent at `socket`, with host state `state`;
    /// the login URL printed to the pipe (`--print-url`).
    pub fn start(state: &Path, socket: &Path, media: &[&Path], config: Option<&Path>) -> Ui {
        let mut child = ui_command(state, socket, media, config)
            .arg("--print-url")
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let login = first
            .strip_prefix("open ")
            .unwrap_or_else(|| panic!("trayback ui printed {first:?}"))
            .trim()
            .to_string();
        let host = login
            .strip_prefix("http://")
            .and_then(|r| r.split('/').next())
            .unwrap()
            .to_string();
        Ui { child, login, host }
    }

    /// Serve `env`'s medium (a directory) with its host state, and no agent.
    pub fn serving(env: &Env) -> Ui {
        let socket = env.path("no-agent.sock");
        Ui::start(&env.state_dir(), &socket, &[&env.medium], None)
    }

    /// Send SIGTERM and wait at most `within` for the exit; its status, or a panic.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::Term,
        )
        .unwrap();
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t.elapsed() < within,
                "trayback ui still runs {within:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id of `trayback ui`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host)
    }

    /// Log in as a browser does: the session cookie and the page key.
    pub fn session(&self) -> (String, String) {
        let r = request(&self.host, "GET", &login_path(&self.login), &[], b"");
        assert_eq!(r.status, 303, "{r:?}");
        let cookie = r.header("set-cookie").unwrap();
        let key = r
            .header("location")
            .unwrap()
            .strip_prefix("/#key=")
            .unwrap()
            .to_string();
        (cookie.split(';').next().unwrap().to_string(), key)
    }

    /// GET `path` in the session `cookie`, with its page key.
    pub fn get(&self, cookie: &str, key: &str, path: &str) -> Reply {
        request(
            &self.host,
            "GET",
            path,
            &[("Cookie", cookie), ("X-Trayback-Key", key)],
            b"",
        )
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path and query of a login URL.
pub fn login_path(login: &str) -> String {
    let rest = login.strip_prefix("http://").unwrap();
    rest[rest.find('/').unwrap()..].to_string()
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    pub fn text(&self) -> String {
        text(&self.body)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request to `addr` (`Host: addr` unless `headers` names a Host), connection
/// closed after it.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // A server may refuse before reading the whole body: a failed write is its answer.
    let _ = s.write_all(body);
    // Read until the reply is complete (its length, the last chunk, or the end of the
    // connection): a server may keep the connection open.
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        if complete(&raw) {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    parse_reply(&raw)
}

/// Whether `raw` holds a whole reply.
fn complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = text(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return body.len() >= len;
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    false
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", text(raw)));
    let head = text(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(text(&rest[..nl]).trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = out;
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// A free TCP port on 127.0.0.1 (for chromedriver).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's headless Chromium, driven through chromedriver; both end when dropped.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Start chromedriver and a headless Chromium; fails, saying so, without them (the
    /// suite's setup installs them, so a missing browser is a broken setup, not a skip).
    pub fn start() -> Browser {
        let chromium = Path::new("/usr/bin/chromium");
        let driver = Path::new("/usr/bin/chromedriver");
        assert!(
            chromium.exists() && driver.exists(),
            "the browser tests need Debian's chromium and chromium-driver (scripts/setup.sh installs them)"
        );
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let profile = tempfile::Builder::new()
            .prefix("trayback-chromium")
            .tempdir()
            .unwrap();
        let mut b = Browser {
            driver: child,
            port,
            session: String::new(),
            _profile: profile,
        };
        let t0 = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let r = b.call("GET", "/status", None);
                if r["ready"] == true {
                    break;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", b._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let r = b.call("POST", "/session", Some(caps));
        b.session = r["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        b
    }

    /// One WebDriver command; its `value`. A WebDriver error panics with its message.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let addr = format!("127.0.0.1:{}", self.port);
        let mut headers = vec![];
        if method == "POST" {
            headers.push(("Content-Type", "application/json"));
        }
        let r = request(&addr, method, path, &headers, body.as_bytes());
        let v = r.json();
        assert!(
            r.status == 200,
            "WebDriver {method} {path}: {} {}",
            r.status,
            v["value"]["message"]
        );
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        self.call("GET", &self.s("/url"), None)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Every element matching `css` now.
    pub fn all(&self, css: &str) -> Vec<String> {
        let v = self.call(
            "POST",
            &self.s("/elements"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e[ELEMENT].as_str().unwrap().to_string())
            .collect()
    }

    /// Wait up to `secs` for `f` to give a value.
    pub fn wait<T>(&self, what: &str, secs: u64, f: impl Fn(&Browser) -> Option<T>) -> T {
        let t0 = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}; page text:\n{}",
                self.page_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The first element matching `css`, waiting up to 20 s for it.
    pub fn find(&self, css: &str) -> String {
        self.wait(css, 20, |b| b.all(css).into_iter().next())
    }

    /// The first element matching `css` whose text contains `text`.
    pub fn find_text(&self, css: &str, text: &str) -> String {
        self.wait(&format!("{css} with {text:?}"), 20, |b| {
            b.all(css).into_iter().find(|e| b.text(e).contains(text))
        })
    }

    pub fn text(&self, el: &str) -> String {
        self.call("GET", &self.s(&format!("/element/{el}/text")), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn attr(&self, el: &str, name: &str) -> Option<String> {
        self.call(
            "GET",
            &self.s(&format!("/element/{el}/attribute/{name}")),
            None,
        )
        .as_str()
        .map(String::from)
    }

    pub fn click(&self, el: &str) {
        self.call(
            "POST",
            &self.s(&format!("/element/{el}/click")),
            Some(json!({})),
        );
    }

    pub fn type_into(&self, el: &str, text: &str) {
        self.call(
            "POST",
            &self.s(&format!("/element/{el}/clear")),
            Some(json!({})),
        );
        self.call(
            "POST",
            &self.s(&format!("/element/{el}/value")),
            Some(json!({ "text": text })),
        );
    }

    /// Run `script` (a function body; `arguments` are `args`) in the page.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Run `script` that calls `arguments[arguments.length - 1](result)` when done.
    pub fn exec_async(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/async"),
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The text of the first element matching `css` now (read in one step in the page, so a
    /// redraw cannot make it stale), or `None`.
    pub fn text_of(&self, css: &str) -> Option<String> {
        self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .as_str()
        .map(String::from)
    }

    /// Attribute `name` of every element matching `css` now.
    pub fn attrs(&self, css: &str, name: &str) -> Vec<String> {
        let v = self.exec(
            "return Array.from(document.querySelectorAll(arguments[0])).map((e) => e.getAttribute(arguments[1]));",
            json!([css, name]),
        );
        serde_json::from_value::<Vec<Option<String>>>(v)
            .unwrap()
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect()
    }

    /// Wait up to 20 s for an element matching `css` whose text contains `text`; its text.
    pub fn wait_text(&self, css: &str, text: &str) -> String {
        self.wait(&format!("{css} with {text:?}"), 20, |b| {
            b.text_of(css).filter(|t| t.contains(text))
        })
    }

    pub fn page_text(&self) -> String {
        self.all("body")
            .first()
            .map(|b| self.text(b))
            .unwrap_or_default()
    }

    /// Save a PNG of the window.
    pub fn screenshot(&self, to: &Path) {
        use base64::Engine;
        let v = self.call("GET", &self.s("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, png).unwrap();
    }

    pub fn window(&self, width: u32, height: u32) {
        self.call(
            "POST",
            &self.s("/window/rect"),
            Some(json!({"width": width, "height": height})),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let addr = format!("127.0.0.1:{}", self.port);
            let _ = std::panic::catch_unwind(|| {
                request(
                    &addr,
                    "DELETE",
                    &format!("/session/{}", self.session),
                    &[],
                    b"",
                )
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where screenshots go: `$TRAYBACK_SCREENSHOTS` (scripts/ui-screenshots.sh sets `docs/`),
/// else under the target directory.
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("TRAYBACK_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots"))
}

/// The media id of `env`'s medium (`media show --json`).
pub fn media_id(env: &Env) -> String {
    let out = env.ok(&["media", "show", "{medium}", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["media"]["media_id"].as_str().unwrap().to_string()
}

/// Ask for a download of `path` in `backup`: the URL of its ticket.
pub fn ticket(ui: &Ui, cookie: &str, key: &str, id: &str, backup: u64, path: &str) -> String {
    let r = ask_ticket(ui, cookie, key, id, backup, path);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["url"].as_str().unwrap().to_string()
}

/// The answer to a request for a download ticket (see [`ticket`]).
pub fn ask_ticket(ui: &Ui, cookie: &str, key: &str, id: &str, backup: u64, path: &str) -> Reply {
    let origin = ui.url("");
    request(
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
    )
}
