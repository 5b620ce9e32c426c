//! Fleet metrics: the agent's [`Status`] in the OpenMetrics text format, for Prometheus
//! (`trayback status --format openmetrics`, and the file the agent keeps for node_exporter's
//! textfile collector).
//!
//! Invariants: every number comes from the typed status the CLI and the web interface show
//! (nothing is decided again here); names follow Prometheus conventions (`trayback_` prefix,
//! `_seconds`, `_bytes`); every label value is escaped (a medium's label is user
//! data: quotes, backslashes and newlines cannot break a line); the text ends with `# EOF`.

use crate::status::{BackupRef, Status};
use crate::tree::Kind;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Every metric family, in the order they are written. All are gauges: their sample names
/// are the family's in both OpenMetrics and the older text format node_exporter's textfile
/// collector reads (a counter's sample is `_total` in one and its `TYPE` line in the other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    AgentUp,
    StatusTimestampSeconds,
    Warnings,
    LastFailureTimestampSeconds,
    MediumInserted,
    MediumLastSeenTimestampSeconds,
    MediumNewestBackupTimestampSeconds,
    MediumBackups,
    MediumLastVerifyOk,
    MediumLastVerifyTimestampSeconds,
    MediumFreeBytes,
    MediumUsedBytes,
    MediumSizeBytes,
    MediumParedBackups,
    MediumJobRunning,
    MediumJobStartedTimestampSeconds,
    MediumJobBytes,
}

impl Metric {
    const ALL: [Metric; 17] = [
        Metric::AgentUp,
        Metric::StatusTimestampSeconds,
        Metric::Warnings,
        Metric::LastFailureTimestampSeconds,
        Metric::MediumInserted,
        Metric::MediumLastSeenTimestampSeconds,
        Metric::MediumNewestBackupTimestampSeconds,
        Metric::MediumBackups,
        Metric::MediumLastVerifyOk,
        Metric::MediumLastVerifyTimestampSeconds,
        Metric::MediumFreeBytes,
        Metric::MediumUsedBytes,
        Metric::MediumSizeBytes,
        Metric::MediumParedBackups,
        Metric::MediumJobRunning,
        Metric::MediumJobStartedTimestampSeconds,
        Metric::MediumJobBytes,
    ];

    fn name(self) -> &'static str {
        match self {
            Metric::AgentUp => "trayback_agent_up",
            Metric::StatusTimestampSeconds => "trayback_status_timestamp_seconds",
            Metric::Warnings => "trayback_warnings",
            Metric::LastFailureTimestampSeconds => "trayback_last_failure_timestamp_seconds",
            Metric::MediumInserted => "trayback_medium_inserted",
            Metric::MediumLastSeenTimestampSeconds => "trayback_medium_last_seen_timestamp_seconds",
            Metric::MediumNewestBackupTimestampSeconds => {
                "trayback_medium_newest_backup_timestamp_seconds"
            }
            Metric::MediumBackups => "trayback_medium_backups",
            Metric::MediumLastVerifyOk => "trayback_medium_last_verify_ok",
            Metric::MediumLastVerifyTimestampSeconds => {
                "trayback_medium_last_verify_timestamp_seconds"
            }
            Metric::MediumFreeBytes => "trayback_medium_free_bytes",
            Metric::MediumUsedBytes => "trayback_medium_used_bytes",
            Metric::MediumSizeBytes => "trayback_medium_size_bytes",
            Metric::MediumParedBackups => "trayback_medium_pared_backups",
            Metric::MediumJobRunning => "trayback_medium_job_running",
            Metric::MediumJobStartedTimestampSeconds => {
                "trayback_medium_job_started_timestamp_seconds"
            }
            Metric::MediumJobBytes => "trayback_medium_job_bytes",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Metric::AgentUp => "1 while the agent runs and answers; 0 when it stopped or did not answer.",
            Metric::StatusTimestampSeconds => "When the agent made this status (its clock).",
            Metric::Warnings => "Warnings `trayback status` shows (media away too long, clock jumps, failing media).",
            Metric::LastFailureTimestampSeconds => "The newest failure notified since the agent started (backup or verify failed, medium too small, failing, tampered or pulled during a job).",
            Metric::MediumInserted => "1 when the medium is inserted and mounted by the agent, 0 when it is away.",
            Metric::MediumLastSeenTimestampSeconds => "When this host last saw the medium (now, while it is inserted).",
            Metric::MediumNewestBackupTimestampSeconds => "Start of the newest verified backup of each kind on the medium.",
            Metric::MediumBackups => "Backups on the inserted medium.",
            Metric::MediumLastVerifyOk => "1 when the newest verification on the inserted medium found no damage, 0 when it found damage.",
            Metric::MediumLastVerifyTimestampSeconds => "When the newest verification on the inserted medium ended.",
            Metric::MediumFreeBytes => "Free bytes on the inserted medium's file system.",
            Metric::MediumUsedBytes => "Used bytes on the inserted medium's file system.",
            Metric::MediumSizeBytes => "Size of the inserted medium's file system.",
            Metric::MediumParedBackups => "Backups pared on the medium since it was inserted (a gauge, not a counter: node_exporter's textfile collector reads the older text format, where a counter's TYPE line names its _total sample).",
            Metric::MediumJobRunning => "1 while a backup runs on the medium (label kind), else 0.",
            Metric::MediumJobStartedTimestampSeconds => "Start of the running backup.",
            Metric::MediumJobBytes => "Bytes the running backup has read so far.",
        }
    }
}

/// The samples of each family (indexed by [`Metric`]), filled by [`render`].
struct Families([Vec<(String, f64)>; Metric::ALL.len()]);

impl Families {
    fn add(&mut self, m: Metric, labels: &[(&str, &str)], value: f64) {
        self.0[m as usize].push((labels_text(labels), value));
    }
}

/// What the metrics describe: the agent and its status.
#[derive(Clone, Copy, Debug)]
pub enum Agent<'a> {
    /// Running, with its status.
    Running(&'a Status),
    /// Its last status, written as it stopped.
    Stopped(&'a Status),
    /// No agent runs (no socket, or nobody listening).
    NotRunning,
}

/// The agent's state as OpenMetrics text.
pub fn render(agent: Agent<'_>) -> String {
    let mut f = Families(std::array::from_fn(|_| Vec::new()));
    let (up, status) = match agent {
        Agent::Running(s) => (1.0, Some(s)),
        Agent::Stopped(s) => (0.0, Some(s)),
        Agent::NotRunning => (0.0, None),
    };
    f.add(Metric::AgentUp, &[], up);
    if let Some(s) = status {
        add_status(&mut f, s);
    }
    let mut out = String::new();
    for (m, samples) in Metric::ALL.into_iter().zip(&f.0) {
        if samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# TYPE {} gauge", m.name());
        let _ = writeln!(out, "# HELP {} {}", m.name(), m.help());
        for (labels, v) in samples {
            let _ = writeln!(out, "{}{labels} {}", m.name(), number(*v));
        }
    }
    out.push_str("# EOF\n");
    out
}

fn add_status(f: &mut Families, s: &Status) {
    f.add(Metric::StatusTimestampSeconds, &[], secs(s.now));
    f.add(Metric::Warnings, &[], s.warnings.len() as f64);
    if let Some(fail) = &s.last_failure {
        let media_id = fail.media_id.map(|id| id.to_string()).unwrap_or_default();
        let labels = [
            ("event", fail.event.name()),
            ("media_id", media_id.as_str()),
            ("label", fail.label.as_deref().unwrap_or("")),
        ];
        f.add(Metric::LastFailureTimestampSeconds, &labels, secs(fail.at));
    }
    for m in &s.inserted {
        let id = m.media_id.to_string();
        let who = [("media_id", id.as_str()), ("label", m.label.as_str())];
        f.add(Metric::MediumInserted, &who, 1.0);
        f.add(Metric::MediumLastSeenTimestampSeconds, &who, secs(s.now));
        add_newest(f, &who, &m.newest);
        f.add(Metric::MediumBackups, &who, m.backups as f64);
        if let Some(v) = m.last_verify {
            f.add(Metric::MediumLastVerifyOk, &who, v.ok as u8 as f64);
            f.add(Metric::MediumLastVerifyTimestampSeconds, &who, secs(v.at));
        }
        if let Some(free) = m.free_bytes {
            f.add(Metric::MediumFreeBytes, &who, free as f64);
        }
        if let Some(size) = m.size_bytes {
            f.add(Metric::MediumSizeBytes, &who, size as f64);
            if let Some(free) = m.free_bytes {
                f.add(
                    Metric::MediumUsedBytes,
                    &who,
                    size.saturating_sub(free) as f64,
                );
            }
        }
        f.add(Metric::MediumParedBackups, &who, m.pared as f64);
        match &m.job {
            Some(j) => {
                let kind = j.kind.to_string();
                let with_kind = [who[0], who[1], ("kind", kind.as_str())];
                f.add(Metric::MediumJobRunning, &with_kind, 1.0);
                f.add(
                    Metric::MediumJobStartedTimestampSeconds,
                    &with_kind,
                    secs(j.started),
                );
                f.add(Metric::MediumJobBytes, &with_kind, j.bytes as f64);
            }
            None => f.add(Metric::MediumJobRunning, &who, 0.0),
        }
    }
    for a in &s.known {
        let who = [
            ("media_id", a.media_id.as_str()),
            ("label", a.label.as_str()),
        ];
        f.add(Metric::MediumInserted, &who, 0.0);
        if let Some(t) = a.last_seen {
            f.add(Metric::MediumLastSeenTimestampSeconds, &who, secs(t));
        }
        add_newest(f, &who, &a.newest);
    }
}

fn add_newest(f: &mut Families, who: &[(&str, &str); 2], newest: &BTreeMap<Kind, BackupRef>) {
    for (k, b) in newest {
        let kind = k.to_string();
        let labels = [who[0], who[1], ("kind", kind.as_str())];
        f.add(
            Metric::MediumNewestBackupTimestampSeconds,
            &labels,
            secs(b.started),
        );
    }
}

fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Integers without a fraction, others as Rust prints them (both valid OpenMetrics numbers).
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// `{a="x",b="y"}`, or nothing without labels.
fn labels_text(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A label value as OpenMetrics quotes it: backslash, double quote and line feed escaped.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_label_values_stay_on_one_line() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let l = labels_text(&[("label", "x\"}\n# EOF\n")]);
        assert!(!l.contains('\n'), "{l}");
        assert_eq!(l, "{label=\"x\\\"}\\n# EOF\\n\"}");
    }

    #[test]
    fn without_an_agent_only_up_is_zero() {
        assert_eq!(
            render(Agent::NotRunning),
            "# TYPE trayback_agent_up gauge\n# HELP trayback_agent_up 1 while the agent runs and answers; 0 when it stopped or did not answer.\ntrayback_agent_up 0\n# EOF\n"
        );
    }
}
