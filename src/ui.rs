//! `trayback ui`: a web interface to the trays, their trees and every file's versions
//! (spec [0052]–[0053], [0056]), served on the local machine.
//!
//! A process of its own, not part of the agent: the agent stays small, and its loop is never
//! blocked or put at risk by HTTP. The interface reads media through the library like the CLI
//! (`Medium::open_read`, which takes the medium's shared readers' lock, so it reads a tray the
//! agent holds; an encrypted one is unlocked with this host's key from the state directory),
//! and asks the agent over its control socket for status, backup-now and eject. Engine calls
//! run in `spawn_blocking`: reading media at most [`ENGINE_TASKS`] at once, restores and
//! downloads at most [`LONG_TASKS`]; a status asked of the agent is answered within
//! [`crate::agent::STATUS_WAIT`] or fails; backup-now and eject wait for the agent as long as
//! its job takes, as operations of which at most [`MAX_OPS`] run at once (more are refused).
//!
//! Safety (see `guard`): it listens on 127.0.0.1 unless told otherwise; a random token in the
//! URL it prints (and writes to `<state_dir>/ui/url`, root-only) is exchanged for a session
//! cookie; every request is checked (Host, session, the page key on every API call, Origin on
//! every POST); requests are bounded (headers in size and time, bodies at [`MAX_BODY`],
//! connections at [`MAX_CONNECTIONS`] (one without a logged-in request gives its slot up to a
//! newer one: `conns`), an idle one closed after [`HEAD_WAIT`], one whose
//! client sends its body too slowly or stops reading closed too: `pace`); paths from
//! the browser go through the same library functions as the CLI's arguments.

mod api;
mod assets;
mod conns;
mod guard;
mod kept;
mod media;
mod ops;
mod pace;
mod warm;
mod wire;

pub use ops::MAX_OPS;
pub use pace::{BODY_WAIT, MIN_RATE, NO_PROGRESS};

use crate::config::Config;
use anyhow::{bail, Context, Result};
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The address `trayback ui` listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8750";
/// The largest request body (restore and download requests are a few hundred bytes).
pub const MAX_BODY: usize = 64 << 10;
/// The largest request head (request line and headers).
pub const MAX_HEAD: usize = 64 << 10;
/// Connections served at once. A new one takes the slot of the oldest without a logged-in
/// request (`conns`); with every slot held by logged-in ones, it waits in the backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's head.
pub const HEAD_WAIT: Duration = Duration::from_secs(10);
/// How long a stop (SIGTERM, SIGINT) waits for engine calls still running.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// Engine calls (opening and reading media) at once.
pub const ENGINE_TASKS: usize = 4;
/// Long jobs (restores, downloads) at once.
pub const LONG_TASKS: usize = 2;

pub struct Options {
    pub listen: SocketAddr,
    /// Directory media to show besides the ones the agent has inserted.
    pub media: Vec<PathBuf>,
    pub config: Config,
    /// The agent's control socket.
    pub socket: PathBuf,
}

/// What every handler shares.
pub struct App {
    guard: guard::Guard,
    cfg: Config,
    socket: PathBuf,
    dirs: Vec<PathBuf>,
    ops: ops::Ops,
    engine: tokio::sync::Semaphore,
    long: Arc<tokio::sync::Semaphore>,
    tickets: api::Tickets,
    kept: Arc<kept::Kept>,
}

/// Where the login URL is kept for root: `<state_dir>/ui/url`.
pub fn url_file(state_dir: &Path) -> PathBuf {
    state_dir.join("ui").join("url")
}

/// Write the login URL to [`url_file`]: the directory 0700, the file 0600 (made inside the
/// 0700 directory, so never readable by others on the way).
fn write_url(state_dir: &Path, url: &str) -> Result<PathBuf> {
    let file = url_file(state_dir);
    let dir = file.parent().expect("a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("{}: cannot create", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("{}: cannot make it private", dir.display()))?;
    crate::fsio::atomic_write(dir, &file, format!("{url}\n").as_bytes())
        .with_context(|| format!("{}: cannot write", file.display()))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("{}: cannot make it private", file.display()))?;
    Ok(file)
}

/// Bind, write the login URL, give it to `ready`, and serve until SIGINT or SIGTERM.
pub fn run(opts: Options, ready: &mut dyn FnMut(&str)) -> Result<()> {
    if opts.listen.ip().is_unspecified() {
        bail!(
            "--listen {}: name one address (127.0.0.1, ::1 or one of this machine's), not all of them",
            opts.listen
        );
    }
    if !opts.listen.ip().is_loopback() {
        warn!(listen = %opts.listen, "listening beyond this machine: the login URL and the session travel unencrypted");
    }
    for d in &opts.media {
        crate::medium::Medium::identify(d)?;
    }
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("--listen {}: cannot listen", opts.listen))?;
    let addr = listener.local_addr()?;
    let guard = guard::Guard::new(addr)?;
    let url = format!(
        "http://{}/login?token={}",
        guard::host_names(addr)[0],
        guard.token()
    );
    let file = write_url(&opts.config.agent.state_dir, &url)?;
    let app = Arc::new(App {
        guard,
        cfg: opts.config,
        socket: opts.socket,
        dirs: opts.media,
        ops: ops::Ops::default(),
        engine: tokio::sync::Semaphore::new(ENGINE_TASKS),
        long: Arc::new(tokio::sync::Semaphore::new(LONG_TASKS)),
        tickets: api::Tickets::default(),
        kept: Arc::default(),
    });
    ready(&url);
    warm::warm_all(&app);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = rt.block_on(serve(listener, app));
    let _ = std::fs::remove_file(&file);
    // Connections still open are dropped; an engine call still running is not waited for
    // long (a restore in progress stops with the process, as it would on a kill).
    rt.shutdown_timeout(SHUTDOWN_WAIT);
    r
}

fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(assets::trays_page))
        .route("/m/{id}/{page}", get(assets::medium_page))
        .route("/static/{name}", get(assets::asset))
        .route("/api/trays", get(api::trays))
        .route("/api/trays/{id}/backup-now", post(ops::backup_now))
        .route("/api/trays/{id}/eject", post(ops::eject))
        .route("/api/ops", get(ops::list))
        .route("/api/media/{id}/tree", get(api::tree))
        .route("/api/media/{id}/ls", get(api::ls))
        .route("/api/media/{id}/versions", get(api::versions))
        .route("/api/media/{id}/search", get(api::search))
        .route("/api/media/{id}/space", get(api::space))
        .route("/api/media/{id}/download", post(api::download_ticket))
        .route("/api/media/{id}/restore", post(ops::restore))
        .route("/download/{ticket}", get(api::download))
        .fallback(assets::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            guard::check,
        ))
        .with_state(app)
}

async fn serve(listener: std::net::TcpListener, app: Arc<App>) -> Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tokio::signal::unix::{signal, SignalKind};
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let router = routes(app);
    let conns = conns::Conns::new(MAX_CONNECTIONS);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    info!(addr = %listener.local_addr()?, "serving the web interface");
    loop {
        // A connection, then a slot for it (`conns`); a signal ends the wait for either
        // (with every slot held by a logged-in client, it is still noticed at once).
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(cause = %e, "web interface: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        pace::small_send_buffer(&stream);
        let slot = tokio::select! {
            s = conns.slot() => s,
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        // The guard finds the connection in each request, to mark it logged in.
        let svc = hyper_util::service::TowerToHyperService::new(
            router.clone().layer(axum::Extension(slot.conn.clone())),
        );
        tokio::spawn(async move {
            let conn = slot.conn.clone();
            let _slot = slot;
            let mut b = hyper::server::conn::http1::Builder::new();
            // The head timeout runs from the moment a request is awaited: on a new
            // connection and on a kept-alive one after each answer, so an idle connection
            // is closed after HEAD_WAIT (the test `idle_connections_...` shows it). What
            // the client is sent must move on (`pace`).
            b.timer(TokioTimer::new())
                .header_read_timeout(HEAD_WAIT)
                .max_buf_size(MAX_HEAD);
            let stream = pace::Paced::new(conns::Heard::new(stream, conn.clone()));
            tokio::select! {
                _ = b.serve_connection(TokioIo::new(stream), svc) => {}
                // Its slot was given to a newer connection.
                _ = conn.killed() => {}
            }
        });
    }
    info!("web interface stopped");
    Ok(())
}
