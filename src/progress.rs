//! Progress of a long job (files, bytes, rate, ETA): counters the engine bumps from any
//! thread, and an optional terminal bar the CLI attaches. The library never draws by itself.

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Meter {
    files: AtomicU64,
    bytes: AtomicU64,
    bar: Option<ProgressBar>,
}

impl Meter {
    /// Counters only.
    pub fn hidden() -> Meter {
        Meter::default()
    }

    /// A bar on stderr for `what` ("backup", "verify", "restore"); `total` bytes when known.
    pub fn bar(what: &str, total: Option<u64>) -> Meter {
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::new_spinner(),
        };
        let template = if total.is_some() {
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}"
        } else {
            "{prefix:>8} {spinner} {bytes} {binary_bytes_per_sec} {msg}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap()
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Meter {
            bar: Some(bar),
            ..Meter::default()
        }
    }

    pub fn set_total(&self, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    pub fn add(&self, files: u64, bytes: u64) {
        let f = self.files.fetch_add(files, Ordering::Relaxed) + files;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(bytes);
            if files > 0 {
                b.set_message(format!("{f} files"));
            }
        }
    }

    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
