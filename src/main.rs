//! The `trayback` binary: parse arguments, set up logging, run, map the result to an exit
//! status. No logic here.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    flat_heap();
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

/// Keep glibc's heap from growing past what is in use. By default it gives each of the walk's
/// and the verify's threads an arena of its own (up to 8 per core) and, after a large buffer
/// is freed, serves buffers up to 32 MiB from those arenas instead of `mmap`: at 2 000 000
/// files that left ~115 MiB of a full backup's 270 MiB peak RSS in freed, unreturned memory.
/// Two arenas at most, shared by the threads, and fixed thresholds, so that what is freed goes
/// back to the system beyond a bound: buffers over 4 MiB are their own `mmap`, and an arena
/// keeps at most 8 MiB free at its top (so up to 16 MiB held free; README "Benchmarks" has
/// what each setting measured).
/// Not lower: a full backup makes and frees a ~1 MiB buffer several times per frame written
/// (content, compressed, sealed, and verify's inflated copy); with a 1 MiB `mmap` threshold
/// and glibc's 128 KiB trim threshold each of them was fresh pages from the kernel, and the
/// page faults took 0.5 s of a 4.2 s full backup of preset mixed (perf: `exc_page_fault`,
/// `do_anonymous_page`, `unmap_page_range`).
fn flat_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
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
