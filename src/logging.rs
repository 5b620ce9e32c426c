//! The log: one line per event on stderr, `key=value` fields. To the journal (systemd
//! connected stderr to it) with the line's priority first (`<4>` a warning) and without our
//! timestamp (journald stamps each line) or colours; on a terminal with both.
//!
//! Every field and message is written with its control characters escaped: a file name
//! in a source tree, a medium's label or a name on a crafted medium can hold a newline,
//! and a line of its own in the journal (with a `<0>` priority prefix of its choosing) would
//! be a forged event.

use std::borrow::Cow;
use std::fmt::Write as _;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// Set up the log for the process; `TRAYBACK_LOG` filters it (default `warn`).
pub fn init() {
    let journal = stderr_is_journal();
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        let text = escape_controls(&text);
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{field}={text}")
        }
    })
    .delimited(" ");
    let log = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .fmt_fields(fields)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRAYBACK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        );
    if journal {
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_target(false);
        log.event_format(Priority(format)).init();
    } else {
        log.init();
    }
}

/// Each journal line starts with its syslog priority (`<4>` for a warning), which journald
/// takes from a line on a stream (sd-daemon(3)); without it every line is info.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// `s` with every control character written as an escape (`\n`, `\r`, `\t`, `\u{1b}`).
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
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

/// The agent's log events that are not notifications (those log their `EventKind`): the
/// `event=` field a reader of the journal filters on.
#[derive(Clone, Copy, Debug)]
pub enum LogEvent {
    MediumInserted,
    MediumReleased,
    MediumRemoved,
    MediumPulled,
    BackupStarting,
    BackupDone,
}

impl LogEvent {
    pub fn name(self) -> &'static str {
        match self {
            LogEvent::MediumInserted => "medium_inserted",
            LogEvent::MediumReleased => "medium_released",
            LogEvent::MediumRemoved => "medium_removed",
            LogEvent::MediumPulled => "medium_pulled",
            LogEvent::BackupStarting => "backup_starting",
            LogEvent::BackupDone => "backup_done",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_never_reach_the_log_raw() {
        assert_eq!(escape_controls("plain /home/a b"), "plain /home/a b");
        assert_eq!(
            escape_controls("x\n<0> INFO forged\r\t\u{1b}[31m\u{85}"),
            "x\\n<0> INFO forged\\r\\t\\u{1b}[31m\\u{85}"
        );
    }
}
