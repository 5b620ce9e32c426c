//! Fleet metrics: the agent's [`Status`] in the OpenMetrics text format, for Prometheus
//! (`trayback status --format openmetrics`, and the file the agent keeps for node_exporter's
//! textfile collector).
//!
//! Invariants: every number comes from the typed status the CLI and the web interface show
//! (nothing is decided again here); names follow Prometheus conventions (`trayback_` prefix,
//! `_seconds`, `_bytes`, `_total`); every label value is escaped (a medium's label is user
//! data: quotes, backslashes and newlines cannot break a line); the text ends with `# EOF`.

use crate::status::{BackupRef, Status};
use crate::tree::Kind;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write;

/// One metric family: its samples, written under one `# TYPE` and `# HELP`.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, f64)>,
}

/// The families in the order they are written, filled by [`render`].
struct Families(Vec<Family>);

impl Families {
    fn add(&mut self, name: &'static str, labels: &[(&str, &str)], value: f64) {
        let f = self
            .0
            .iter_mut()
            .find(|f| f.name == name)
            .expect("every family is declared in FAMILIES");
        f.samples.push((labels_text(labels), value));
    }
}

/// Every family: name, type, help. Counters are named without `_total` (OpenMetrics adds it
/// to the sample).
const FAMILIES: &[(&str, &str, &str)] = &[
    ("trayback_agent_up", "gauge", "1 while the agent runs and answers; 0 when it stopped or did not answer."),
    ("trayback_status_timestamp_seconds", "gauge", "When the agent made this status (its clock)."),
    ("trayback_warnings", "gauge", "Warnings `trayback status` shows (media away too long, clock jumps, failing media)."),
    ("trayback_last_failure_timestamp_seconds", "gauge", "The newest failure notified since the agent started (backup or verify failed, medium too small, failing, tampered or pulled during a job)."),
    ("trayback_medium_inserted", "gauge", "1 when the medium is inserted and mounted by the agent, 0 when it is away."),
    ("trayback_medium_last_seen_timestamp_seconds", "gauge", "When this host last saw the medium (now, while it is inserted)."),
    ("trayback_medium_newest_backup_timestamp_seconds", "gauge", "Start of the newest verified backup of each kind on the medium."),
    ("trayback_medium_backups", "gauge", "Backups on the inserted medium."),
    ("trayback_medium_last_verify_ok", "gauge", "1 when the newest verification on the inserted medium found no damage, 0 when it found damage."),
    ("trayback_medium_last_verify_timestamp_seconds", "gauge", "When the newest verification on the inserted medium ended."),
    ("trayback_medium_free_bytes", "gauge", "Free bytes on the inserted medium's file system."),
    ("trayback_medium_used_bytes", "gauge", "Used bytes on the inserted medium's file system."),
    ("trayback_medium_size_bytes", "gauge", "Size of the inserted medium's file system."),
    ("trayback_medium_pared_backups", "gauge", "Backups pared on the medium since it was inserted (a gauge, not a counter: node_exporter's textfile collector reads the older text format, where a counter's TYPE line names its _total sample)."),
    ("trayback_medium_job_running", "gauge", "1 while a backup runs on the medium (label kind), else 0."),
    ("trayback_medium_job_started_timestamp_seconds", "gauge", "Start of the running backup."),
    ("trayback_medium_job_bytes", "gauge", "Bytes the running backup has read so far."),
];

/// The status as OpenMetrics text; `up` is whether the agent is running (false: it answered
/// last before stopping, or `status` is `None` when it did not answer).
pub fn render(status: Option<&Status>, up: bool) -> String {
    let mut f = Families(
        FAMILIES
            .iter()
            .map(|(name, kind, help)| Family {
                name,
                kind,
                help,
                samples: Vec::new(),
            })
            .collect(),
    );
    f.add(
        "trayback_agent_up",
        &[],
        (up && status.is_some()) as u8 as f64,
    );
    if let Some(s) = status {
        add_status(&mut f, s);
    }
    let mut out = String::new();
    for fam in &f.0 {
        if fam.samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# TYPE {} {}", fam.name, fam.kind);
        let _ = writeln!(out, "# HELP {} {}", fam.name, fam.help);
        // Gauges only: their sample names are the family's in both OpenMetrics and the older
        // text format node_exporter's textfile collector reads.
        for (labels, v) in &fam.samples {
            let _ = writeln!(out, "{}{labels} {}", fam.name, number(*v));
        }
    }
    out.push_str("# EOF\n");
    out
}

fn add_status(f: &mut Families, s: &Status) {
    f.add("trayback_status_timestamp_seconds", &[], secs(s.now));
    f.add("trayback_warnings", &[], s.warnings.len() as f64);
    if let Some(fail) = &s.last_failure {
        let labels = [
            ("event", fail.event.as_str()),
            ("media_id", fail.media_id.as_deref().unwrap_or("")),
            ("label", fail.label.as_deref().unwrap_or("")),
        ];
        f.add(
            "trayback_last_failure_timestamp_seconds",
            &labels,
            secs(fail.at),
        );
    }
    for m in &s.inserted {
        let id = m.media_id.to_string();
        let who = [("media_id", id.as_str()), ("label", m.label.as_str())];
        f.add("trayback_medium_inserted", &who, 1.0);
        f.add(
            "trayback_medium_last_seen_timestamp_seconds",
            &who,
            secs(s.now),
        );
        add_newest(f, &who, &m.newest);
        f.add("trayback_medium_backups", &who, m.backups as f64);
        if let Some(v) = m.last_verify {
            f.add("trayback_medium_last_verify_ok", &who, v.ok as u8 as f64);
            f.add(
                "trayback_medium_last_verify_timestamp_seconds",
                &who,
                secs(v.at),
            );
        }
        f.add("trayback_medium_free_bytes", &who, m.free_bytes as f64);
        if m.size_bytes > 0 {
            let used = m.size_bytes.saturating_sub(m.free_bytes);
            f.add("trayback_medium_used_bytes", &who, used as f64);
            f.add("trayback_medium_size_bytes", &who, m.size_bytes as f64);
        }
        f.add("trayback_medium_pared_backups", &who, m.pared as f64);
        match &m.job {
            Some(j) => {
                let kind = j.kind.to_string();
                let with_kind = [who[0], who[1], ("kind", kind.as_str())];
                f.add("trayback_medium_job_running", &with_kind, 1.0);
                f.add(
                    "trayback_medium_job_started_timestamp_seconds",
                    &with_kind,
                    secs(j.started),
                );
                f.add("trayback_medium_job_bytes", &with_kind, j.bytes as f64);
            }
            None => f.add("trayback_medium_job_running", &who, 0.0),
        }
    }
    for a in &s.known {
        let who = [
            ("media_id", a.media_id.as_str()),
            ("label", a.label.as_str()),
        ];
        f.add("trayback_medium_inserted", &who, 0.0);
        if let Some(t) = a.last_seen {
            f.add("trayback_medium_last_seen_timestamp_seconds", &who, secs(t));
        }
        add_newest(f, &who, &a.newest);
    }
}

fn add_newest(f: &mut Families, who: &[(&str, &str); 2], newest: &BTreeMap<Kind, BackupRef>) {
    for (k, b) in newest {
        let kind = k.to_string();
        let labels = [who[0], who[1], ("kind", kind.as_str())];
        f.add(
            "trayback_medium_newest_backup_timestamp_seconds",
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
            render(None, true),
            "# TYPE trayback_agent_up gauge\n# HELP trayback_agent_up 1 while the agent runs and answers; 0 when it stopped or did not answer.\ntrayback_agent_up 0\n# EOF\n"
        );
    }
}
