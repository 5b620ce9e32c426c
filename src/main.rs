//! The `trayback` binary: parse arguments, set up logging, run, map the result to an exit
//! status. No logic here.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = trayback::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRAYBACK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match trayback::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("trayback: {e:#}");
            ExitCode::FAILURE
        }
    }
}
