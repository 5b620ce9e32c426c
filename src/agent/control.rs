//! The control socket: newline-delimited JSON requests and responses between the CLI and the
//! agent over a Unix socket that only root can open.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

pub const DEFAULT_SOCKET: &str = "/run/trayback/agent.sock";

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

/// How far a long request (verify) has come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub files: u64,
    pub bytes: u64,
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
    let mut s = UnixStream::connect(socket).map_err(|e| {
        format!(
            "{}: cannot reach the trayback agent: {e} (it starts when a tray is inserted, or by `systemctl start trayback-agent`)",
            socket.display()
        )
    })?;
    let mut line = serde_json::to_vec(req).unwrap();
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut reader = BufReader::new(s);
    loop {
        let mut answer = String::new();
        let n = reader
            .read_line(&mut answer)
            .map_err(|e| format!("{}: {e}", socket.display()))?;
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
