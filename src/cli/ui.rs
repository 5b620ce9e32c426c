//! `trayback ui`: serve the web interface (the library's `ui`) and print its login URL.

use super::load_config;
use anyhow::Result;
use clap::Args;
use std::io::Write;
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
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "open {url}");
            let _ = writeln!(
                out,
                "(root can read it again in {}; stop with Ctrl-C)",
                crate::ui::url_file(&state).display()
            );
            let _ = out.flush();
        },
    )?;
    Ok(0)
}
