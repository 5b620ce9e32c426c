//! The control socket: newline-delimited JSON requests and responses between the CLI and the
//! agent over a Unix socket that only root can open (and whose peer the agent checks is root
//! for anything but `status`).
//!
//! A long request (a job on a medium the agent holds) is answered by progress lines, then the
//! answer; a `lend` by one answer, after which the medium is the client's until it closes the
//! connection.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_SOCKET: &str = "/run/trayback/agent.sock";
/// How long a client waits for the answer to `status` (the agent answers it at once; a
/// stuck or hostile peer on the socket must not hold a caller, such as the web interface,
/// for ever). Other requests may take as long as a backup and have no such bound.
pub const STATUS_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Back up now on one inserted medium (by label, media id or device; any if only one).
    BackupNow {
        medium: Option<String>,
    },
    /// Finish or abort the job, unmount, power down; answers once safe to remove.
    Eject {
        medium: Option<String>,
    },
    /// Verify backups on an inserted medium (the one the agent holds), streaming progress:
    /// `backup` (default the newest), or `all`.
    Verify {
        medium: Option<String>,
        #[serde(default)]
        backup: Option<crate::ids::BackupId>,
        #[serde(default)]
        all: bool,
        #[serde(default)]
        read_all: bool,
    },
    /// `backup` on a medium the agent holds: the job `backup` runs, on the agent's medium,
    /// with the CLI's `--config` (as the text it read) and `--source`s, else the agent's own.
    Backup {
        medium: Option<String>,
        #[serde(default)]
        ask: crate::job::Ask,
        #[serde(default)]
        at: Option<chrono::DateTime<chrono::Utc>>,
        #[serde(default)]
        no_verify: bool,
        #[serde(default)]
        config: Option<ConfigFile>,
        #[serde(default)]
        sources: Vec<PathBuf>,
    },
    /// `pare` (not a dry run) on a medium the agent holds.
    Pare {
        medium: Option<String>,
        #[serde(default)]
        at: Option<chrono::DateTime<chrono::Utc>>,
        #[serde(default)]
        free: Option<u64>,
        #[serde(default)]
        config: Option<ConfigFile>,
    },
    /// `repair --tree` on a medium the agent holds.
    Repair {
        medium: Option<String>,
    },
    /// Lend the medium to the client for as long as this connection stays open: the agent
    /// pauses the medium's task and lets go of its writer lock (the mount stays), answers
    /// with [`crate::status::Lent`], and when the connection closes, for whatever reason,
    /// opens and proves the medium again (`media passphrase`, `rotate-host-key`, `adopt`).
    Lend {
        medium: Option<String>,
    },
    /// `media init` enrolled the file system on device `devnum` (a disk the agent may have
    /// refused as blank or foreign): identify it again once nobody else has it mounted.
    Enrolled {
        devnum: u64,
    },
    /// Move a `--test-clock` agent's clock: forward (time passing, a suspend), or with
    /// `step` only its wall clock, either way (`date -s`).
    AdvanceClock {
        seconds: i64,
        #[serde(default)]
        step: bool,
    },
}

/// A config file as the CLI read it (`--config`): the agent parses this text, so the job runs
/// with what the CLI read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub text: String,
}

impl Request {
    /// Does the request change a medium or the agent (anything but `status`)? Only root may
    /// ask for that.
    pub fn changes(&self) -> bool {
        !matches!(self, Request::Status)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
    /// A progress line of a long request (files and bytes so far); the answer follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// How far a long request (a job) has come: files and bytes so far in its `phase`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub files: u64,
    pub bytes: u64,
    #[serde(default)]
    pub phase: Phase,
}

/// What a progress line counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Backup,
    #[default]
    Verify,
}

impl Response {
    /// A success carrying `data`, one of the types of [`crate::status`] (or a job outcome).
    pub fn ok(data: &impl Serialize) -> Response {
        Response {
            ok: true,
            error: None,
            data: serde_json::to_value(data).expect("answers serialize"),
            progress: None,
        }
    }

    /// A failure that still carries what was done (a job's outcome).
    pub fn failed(error: String, data: &impl Serialize) -> Response {
        Response {
            ok: false,
            error: Some(error),
            data: serde_json::to_value(data).expect("answers serialize"),
            progress: None,
        }
    }

    /// The data as the type the request answers with.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.data.clone())
            .map_err(|e| format!("bad answer from the agent: {e}"))
    }

    pub fn err(e: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(e.into()),
            data: serde_json::Value::Null,
            progress: None,
        }
    }

    /// A progress line.
    pub fn progress(p: Progress) -> Response {
        Response {
            ok: true,
            error: None,
            data: serde_json::Value::Null,
            progress: Some(p),
        }
    }
}

/// The socket path: `$TRAYBACK_SOCKET`, else the default.
pub fn socket_path() -> PathBuf {
    std::env::var_os("TRAYBACK_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_SOCKET.into())
}

/// Send one request and wait for the answer (the CLI side).
pub fn call(socket: &Path, req: &Request) -> Result<Response, String> {
    call_with_progress(socket, req, &mut |_| {})
}

/// Send one request and wait for the answer, passing each progress line before it to
/// `progress`.
pub fn call_with_progress(
    socket: &Path,
    req: &Request,
    progress: &mut dyn FnMut(Progress),
) -> Result<Response, String> {
    let mut reader = BufReader::new(send(socket, req)?);
    answer(socket, &mut reader, progress)
}

/// A medium lent by the agent ([`Request::Lend`]): it is the holder's until it is given back
/// or dropped (or the process ends), when the agent takes it back.
pub struct Lease {
    connection: BufReader<UnixStream>,
    socket: PathBuf,
}

impl Lease {
    /// Let go of the medium and wait until the agent holds it again (its ID file read again
    /// and proven), so that whatever runs next finds it held. The agent's refusal to take it
    /// back (the tray went, or it is another medium now) is the error.
    pub fn give_back(mut self) -> Result<(), String> {
        self.connection
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| format!("{}: {e}", self.socket.display()))?;
        let r = answer(&self.socket, &mut self.connection, &mut |_| {})?;
        if r.ok {
            Ok(())
        } else {
            Err(r
                .error
                .unwrap_or_else(|| "the agent did not take it back".into()))
        }
    }
}

/// Ask the agent to lend a medium; the answer ([`crate::status::Lent`], or the refusal) and,
/// when it was lent, the lease that keeps it.
pub fn lend(socket: &Path, medium: Option<String>) -> Result<(Response, Option<Lease>), String> {
    let mut reader = BufReader::new(send(socket, &Request::Lend { medium })?);
    let r = answer(socket, &mut reader, &mut |_| {})?;
    let lease = r.ok.then_some(Lease {
        connection: reader,
        socket: socket.to_path_buf(),
    });
    Ok((r, lease))
}

fn send(socket: &Path, req: &Request) -> Result<UnixStream, String> {
    let s = UnixStream::connect(socket).map_err(|e| unreached(socket, &e))?;
    request(s, socket, req)
}

/// The agent's status, or `None` when no agent runs (no socket, or nobody listening on
/// it). Any other failure, such as a caller the socket refuses, is an error: it says
/// nothing about whether the agent runs.
pub fn ask_status(socket: &Path) -> Result<Option<crate::status::Status>, String> {
    let s = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(unreached(socket, &e)),
    };
    let mut reader = BufReader::new(request(s, socket, &Request::Status)?);
    let r = answer(socket, &mut reader, &mut |_| {})?;
    if !r.ok {
        return Err(r.error.unwrap_or_else(|| "the agent refused".into()));
    }
    r.data_as().map(Some)
}

/// A failure to connect that means no agent is running.
fn absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

fn unreached(socket: &Path, e: &std::io::Error) -> String {
    if absent(e) {
        return format!("{} ({e})", not_running(socket));
    }
    format!("{}: cannot reach the trayback agent: {e}", socket.display())
}

/// What to say when no agent runs.
pub fn not_running(socket: &Path) -> String {
    format!(
        "{}: no trayback agent is running (it starts when a tray is inserted, or by `systemctl start trayback-agent`)",
        socket.display()
    )
}

/// Send `req` on a connected socket.
fn request(mut s: UnixStream, socket: &Path, req: &Request) -> Result<UnixStream, String> {
    if matches!(req, Request::Status) {
        for set in [UnixStream::set_read_timeout, UnixStream::set_write_timeout] {
            set(&s, Some(STATUS_WAIT)).map_err(|e| format!("{}: {e}", socket.display()))?;
        }
    }
    let mut line = serde_json::to_vec(req).unwrap();
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    Ok(s)
}

/// Read progress lines, passing each to `progress`, until the answer.
fn answer(
    socket: &Path,
    reader: &mut BufReader<UnixStream>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Response, String> {
    loop {
        let mut answer = String::new();
        let n = reader.read_line(&mut answer).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                "{}: the agent did not answer within {} s",
                socket.display(),
                STATUS_WAIT.as_secs()
            ),
            _ => format!("{}: {e}", socket.display()),
        })?;
        if n == 0 {
            return Err(format!(
                "{}: the agent closed the connection without an answer",
                socket.display()
            ));
        }
        let r: Response = serde_json::from_str(&answer)
            .map_err(|e| format!("{}: bad answer from the agent: {e}", socket.display()))?;
        match r.progress {
            Some(p) => progress(p),
            None => return Ok(r),
        }
    }
}
