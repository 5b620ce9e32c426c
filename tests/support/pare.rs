//! Helpers of the paring tests (room, room_failures, gc_failures, schedule_pare): a fixed
//! start time, JSON, the backups on a medium, backups at given times.
#![allow(dead_code)]

use super::util::Env;
use chrono::{DateTime, Utc};

/// The tests' first day.
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

/// The ids of the backups on the medium.
pub fn backup_ids(env: &Env) -> Vec<u64> {
    json(&env.ok(&["list", "--medium", "{medium}", "--json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_u64().unwrap())
        .collect()
}

/// Bytes free on the medium's file system for an unprivileged writer.
pub fn free(env: &Env) -> u64 {
    rustix::fs::statvfs(&env.medium)
        .map(|s| s.f_bavail * s.f_frsize)
        .unwrap()
}

/// A backup of `kind` at `at` (`--json`), as it went.
pub fn try_backup_at(env: &Env, kind: &str, at: DateTime<Utc>) -> std::process::Output {
    env.try_backup(&["--kind", kind, "--at", &at.to_rfc3339(), "--json"])
}

/// A backup of `kind` at `at`, which must succeed.
pub fn backup_at(env: &Env, kind: &str, at: DateTime<Utc>) {
    let out = try_backup_at(env, kind, at);
    assert!(
        out.status.success(),
        "backup --kind {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
