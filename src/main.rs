//! The `trayback` binary: parse arguments, set up logging, run, map the result to an exit
//! status. No logic here.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    exit_quietly_on_broken_pipe();
    let cli = trayback::cli::Cli::parse();
    trayback::logging::init();
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
