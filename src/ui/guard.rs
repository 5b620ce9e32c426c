//! Who may use the web interface, and what every answer carries.
//!
//! Invariants, checked on every request before any handler runs:
//! - the `Host` header is one of the listening address's own names (`127.0.0.1:PORT`,
//!   `localhost:PORT`, …), so a page of another site that rebinds its DNS name to 127.0.0.1
//!   is refused (DNS rebinding);
//! - the login token (random, 256 bits) is the only way in: `/login?token=T` compares it in
//!   constant time and answers with a session cookie (`HttpOnly`, `SameSite=Strict`) and a
//!   redirect to a URL without the token; every other path needs a live session;
//! - the session's key, handed to the page in the redirect's fragment (never sent to the
//!   server in a URL) and kept in the page origin's storage, must come in the
//!   `X-Trayback-Key` header of every `/api/` request, reads included. It is the CSRF token
//!   (another site cannot set the header without a CORS preflight, which is never granted),
//!   and it keeps a cookie the browser also sends to other ports of 127.0.0.1 (cookies do not
//!   separate ports) useless there: storage does separate them;
//! - a state change is a POST with that key and, when the browser sends one, an `Origin`
//!   that is this server's;
//! - every answer, refusals included, carries a strict Content-Security-Policy (no inline
//!   script or style, nothing from elsewhere), `frame-ancestors 'none'`, `no-referrer` and
//!   `no-store`.

use crate::agent::Locked;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

use super::App;

/// The session cookie's name.
pub const COOKIE: &str = "trayback_session";
/// The header every `/api/` request carries the session's key in.
pub const KEY_HEADER: &str = "x-trayback-key";
/// Sessions kept at once; a new login past this drops the oldest.
const MAX_SESSIONS: usize = 32;

pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

struct Session {
    key: String,
    /// Order of login (the oldest is dropped first).
    seq: u64,
}

/// The login token, the sessions, and the host names this server answers to.
pub struct Guard {
    token: String,
    hosts: Vec<String>,
    sessions: Mutex<HashMap<String, Session>>,
    logins: std::sync::atomic::AtomicU64,
}

/// 32 random bytes, hex.
pub fn random_hex() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    crate::crypt::random_fill(&mut b)?;
    Ok(hex::encode(b))
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Guard {
    pub fn new(listen: SocketAddr) -> std::io::Result<Guard> {
        Ok(Guard {
            token: random_hex()?,
            hosts: host_names(listen),
            sessions: Mutex::new(HashMap::new()),
            logins: Default::default(),
        })
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    fn host_ok(&self, headers: &HeaderMap) -> Option<String> {
        let host = headers.get(header::HOST)?.to_str().ok()?;
        self.hosts
            .iter()
            .find(|h| h.eq_ignore_ascii_case(host))
            .cloned()
    }

    /// A new session for a login with `token`: (session id, key), or `None` for a wrong token.
    fn login(&self, token: &str) -> Option<(String, String)> {
        if !same(token, &self.token) {
            return None;
        }
        let (id, key) = (random_hex().ok()?, random_hex().ok()?);
        let mut s = self.sessions.locked();
        if s.len() >= MAX_SESSIONS {
            if let Some(oldest) = s.iter().min_by_key(|(_, v)| v.seq).map(|(k, _)| k.clone()) {
                s.remove(&oldest);
            }
        }
        s.insert(
            id.clone(),
            Session {
                key: key.clone(),
                seq: self
                    .logins
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            },
        );
        Some((id, key))
    }

    /// The key of the session named by the request's cookie.
    fn session_key(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, COOKIE)?;
        let s = self.sessions.locked();
        s.iter()
            .find(|(k, _)| same(k, &id))
            .map(|(_, v)| v.key.clone())
    }
}

/// The `Host` values a browser sends to `listen`.
pub(super) fn host_names(listen: SocketAddr) -> Vec<String> {
    let port = listen.port();
    let mut v = vec![match listen {
        SocketAddr::V4(a) => format!("{}:{port}", a.ip()),
        SocketAddr::V6(a) => format!("[{}]:{port}", a.ip()),
    }];
    if listen.ip().is_loopback() {
        v.push(format!("localhost:{port}"));
    }
    v
}

/// The value of cookie `name` in the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{why}\n"),
    )
        .into_response()
}

/// The headers every answer carries.
pub fn harden(resp: &mut Response) {
    let h = resp.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
}

/// The middleware: host, login, session, key, origin; then the handler; then the headers.
pub async fn check(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let mut resp = decide(&app, req, next).await;
    harden(&mut resp);
    resp
}

async fn decide(app: &App, req: Request, next: Next) -> Response {
    let g = &app.guard;
    let Some(host) = g.host_ok(req.headers()) else {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this server answers only to its own address (Host header refused)",
        );
    };
    let path = req.uri().path().to_string();
    if path == "/login" {
        return login(g, &req);
    }
    let Some(key) = g.session_key(req.headers()) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "not logged in: open the URL `trayback ui` printed (root can read it again in the \
             state directory, ui/url)",
        );
    };
    let is_api = path.starts_with("/api/");
    if is_api {
        let sent = req
            .headers()
            .get(KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same(sent, &key) {
            return refuse(
                StatusCode::FORBIDDEN,
                "missing or wrong page key (X-Trayback-Key): open the URL `trayback ui` printed again",
            );
        }
    }
    // A logged-in request: its connection keeps its slot (`conns`).
    if let Some(conn) = req.extensions().get::<Arc<super::conns::Conn>>() {
        conn.logged_in();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if !is_api {
            return refuse(StatusCode::METHOD_NOT_ALLOWED, "only GET here");
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            if origin.to_str().ok() != Some(&format!("http://{host}")) {
                return refuse(StatusCode::FORBIDDEN, "cross-origin request refused");
            }
        }
    }
    let req = match super::pace::read_body(req).await {
        Ok(req) => req,
        Err((status, why)) => return refuse(status, why),
    };
    next.run(req).await
}

fn login(g: &Guard, req: &Request) -> Response {
    let token = req
        .uri()
        .query()
        .and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "token")
        })
        .map(|(_, v)| v)
        .unwrap_or("");
    match g.login(token) {
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "wrong or missing token: open the URL `trayback ui` printed",
        ),
        Some((id, key)) => {
            let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/");
            let mut r = (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, format!("/#key={key}"))],
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_the_listening_address_and_localhost() {
        assert_eq!(
            host_names("127.0.0.1:8750".parse().unwrap()),
            ["127.0.0.1:8750", "localhost:8750"]
        );
        assert_eq!(
            host_names("[::1]:9".parse().unwrap()),
            ["[::1]:9", "localhost:9"]
        );
        assert_eq!(host_names("10.0.0.2:80".parse().unwrap()), ["10.0.0.2:80"]);
    }

    #[test]
    fn a_wrong_token_makes_no_session() {
        let g = Guard::new("127.0.0.1:1".parse().unwrap()).unwrap();
        assert!(g.login("").is_none());
        assert!(g.login(&g.token()[1..]).is_none());
        let (id, key) = g.login(g.token()).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("a=b; {COOKIE}={id}").parse().unwrap(),
        );
        assert_eq!(g.session_key(&h), Some(key));
        for _ in 0..MAX_SESSIONS {
            g.login(g.token()).unwrap();
        }
        assert_eq!(g.session_key(&h), None, "the oldest session was dropped");
    }
}
