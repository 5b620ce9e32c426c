//! The `trayback` binary: parse arguments, set up logging, run, map the result to an exit
//! status. No logic here.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    exit_quietly_on_broken_pipe();
    let cli = trayback::cli::Cli::parse();
    // One line per event, `key=value` fields. To the journal (systemd connected stderr to
    // it) without our timestamp (journald stamps each line) and without colours; on a
    // terminal with both.
    let journal = stderr_is_journal();
    let log = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRAYBACK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        );
    if journal {
        log.without_time().with_target(false).init();
    } else {
        log.init();
    }
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

/// systemd's `JOURNAL_STREAM` names the device and inode of the stream it connected to the
/// journal; stderr is the journal when they are stderr's (not merely inherited from a parent
/// whose stderr was).
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    v.to_str()
        .and_then(|v| v.split_once(':'))
        .is_some_and(|(dev, ino)| {
            dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
        })
}

/// `trayback list | head -1`: a reader that goes away is not an error (ripgrep's rule). The
/// library's work is done before anything is printed; `println!` panics on the closed pipe,
/// and this turns that one panic into a quiet exit 0.
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}
