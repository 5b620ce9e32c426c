//! `trayback ui`: serve the web interface (the library's `ui`) and say where its login URL is.
//!
//! The URL holds the login token, so it is printed only to a terminal (or when asked with
//! `--print-url`): under systemd stdout goes to the journal, which more than root may read.
//! Otherwise only the path of the root-only URL file is printed.

use super::load_config;
use anyhow::Result;
use clap::Args;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct UiArgs {
    /// The address to listen on (port 0: any free port). Beyond 127.0.0.1 or ::1 the login
    /// URL and session travel unencrypted.
    #[arg(long, default_value = crate::ui::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// A directory medium to show besides the trays the agent holds (repeatable).
    #[arg(long = "medium")]
    pub media: Vec<PathBuf>,
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The agent's control socket (default $TRAYBACK_SOCKET or /run/trayback/agent.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Print the login URL even when stdout is not a terminal (a pipe or the journal, which
    /// users other than root may read). Without it, only the URL file's path is printed there.
    #[arg(long)]
    pub print_url: bool,
}

pub fn run(a: UiArgs) -> Result<u8> {
    let config = load_config(a.config.as_deref(), &[])?;
    let state = config.agent.state_dir.clone();
    crate::ui::run(
        crate::ui::Options {
            listen: a.listen,
            media: a.media,
            config,
            socket: a.socket.unwrap_or_else(crate::agent::socket_path),
        },
        &mut |url| {
            let file = crate::ui::url_file(&state);
            let mut out = std::io::stdout().lock();
            if a.print_url || out.is_terminal() {
                let _ = writeln!(out, "open {url}");
                let _ = writeln!(
                    out,
                    "(root can read it again in {}; stop with Ctrl-C)",
                    file.display()
                );
            } else {
                let _ = writeln!(
                    out,
                    "the login URL is in {} (root only; --print-url prints it here)",
                    file.display()
                );
            }
            let _ = out.flush();
        },
    )?;
    Ok(0)
}
