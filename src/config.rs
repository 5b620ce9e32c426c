//! Configuration: `trayback.yaml`, parsed strictly and validated once into [`Config`].
//!
//! Unknown keys and bad values are errors that name the key and the line (serde_yaml's
//! location); nothing downstream re-checks what this module accepted.
//!
//! Every duration and count has a range ([`MAX_INTERVAL_DAYS`] and friends), checked here:
//! the schedule adds these intervals to backup times (at most the year 9999, see
//! `tree::latest`), and with at most ten years added nothing can leave chrono's range.

use crate::pare::Policy;
use crate::schedule::{Monthly, Schedule};
use crate::tree::TreeFormat;
use chrono::{Duration, NaiveTime};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the agent and CLI look when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/trayback/trayback.yaml";

/// Overrides `agent.state_dir` (the register and the per-medium keys); tests point it into a
/// temporary directory.
pub const STATE_DIR_ENV: &str = "TRAYBACK_STATE_DIR";

/// The state directory when none is configured: `/var/lib/trayback` for root; for other
/// users `$XDG_STATE_HOME/trayback`, else `~/.local/state/trayback`.
pub fn default_state_dir() -> PathBuf {
    let system = PathBuf::from("/var/lib/trayback");
    if rustix::process::geteuid().is_root() {
        return system;
    }
    let abs = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").and_then(abs) {
        return x.join("trayback");
    }
    match std::env::var_os("HOME").and_then(abs) {
        Some(h) => h.join(".local/state/trayback"),
        None => system,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {}: {detail}", path.display())]
    Invalid { path: PathBuf, detail: String },
    #[error("config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The file as written (every key optional; defaults from the spec).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    sources: Option<Vec<PathBuf>>,
    exclude: Option<Vec<String>>,
    one_file_system: Option<bool>,
    compression_level: Option<i32>,
    /// New media are encrypted unless this is `false` (FORMAT.md "Encryption").
    encrypt: Option<bool>,
    /// The tree format of new media (FORMAT.md "Versioning"); the newest unless set.
    tree_format: Option<u32>,
    schedule: Option<RawSchedule>,
    pare: Option<RawPare>,
    agent: Option<RawAgent>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    auto_enrol_label: Option<String>,
    devices: Option<Vec<String>>,
    multiple_media: Option<MultipleMedia>,
    eject_waits_for_micro: Option<bool>,
    away_warning_days: Option<u32>,
    notify_command: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    metrics_file: Option<PathBuf>,
}

/// With two media inserted at once: write to both, or only to the one inserted last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MultipleMedia {
    All,
    LastInserted,
}

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Blank file systems whose label matches are enrolled automatically (only when the
    /// configuration says so: no default).
    pub auto_enrol_label: Option<globset::GlobMatcher>,
    pub auto_enrol_pattern: Option<String>,
    /// Device nodes the agent considers (empty: every file system not mounted elsewhere).
    pub devices: Option<GlobSet>,
    pub multiple_media: MultipleMedia,
    pub eject_waits_for_micro: bool,
    pub away_warning_days: u32,
    pub notify_command: Option<PathBuf>,
    pub run_dir: PathBuf,
    /// The register and the per-medium keys: `$TRAYBACK_STATE_DIR`, else `agent.state_dir`,
    /// else [`default_state_dir`].
    pub state_dir: PathBuf,
    /// The OpenMetrics file the agent rewrites for node_exporter's textfile collector:
    /// `agent.metrics_file`, else [`NODE_EXPORTER_TEXTFILE_DIR`]`/trayback.prom` when that
    /// directory exists, else `trayback.prom` in the state directory.
    pub metrics_file: PathBuf,
}

/// Debian's prometheus-node-exporter reads `*.prom` files here (its textfile collector).
pub const NODE_EXPORTER_TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    micro_interval: Option<String>,
    daily_at: Option<String>,
    weekly_every_days: Option<u32>,
    monthly_every_days: Option<u32>,
    monthly_day: Option<u32>,
    monthly_at: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPare {
    micro_max_age_days: Option<u32>,
    many_backups: Option<usize>,
    dailies_kept: Option<usize>,
    weeklies_kept: Option<usize>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub sources: Vec<PathBuf>,
    pub exclude: Vec<String>,
    pub exclude_set: GlobSet,
    pub one_file_system: bool,
    pub compression_level: i32,
    /// Whether new media (`media init`, the agent's auto-enrolment) are encrypted.
    pub encrypt: bool,
    /// The tree format of new media (`media init`, the agent's auto-enrolment): the newest,
    /// unless a host running an older trayback must use the same disks.
    pub tree_format: TreeFormat,
    pub schedule: Schedule,
    pub pare: Policy,
    pub agent: Agent,
}

/// The longest interval (`micro_interval`, `weekly_every_days`), in days.
pub const MAX_INTERVAL_DAYS: u32 = 366;
/// The longest `monthly_every_days`: ten years.
pub const MAX_MONTHLY_DAYS: u32 = 3660;
/// The longest `micro_max_age_days` and `away_warning_days`: a hundred years.
pub const MAX_AGE_DAYS: u32 = 36600;
/// The largest `many_backups`, `dailies_kept`, `weeklies_kept`.
pub const MAX_KEPT: usize = 1_000_000;

/// "15m", "90s", "1h", "2d" (a bare number is minutes); from 1 second to
/// [`MAX_INTERVAL_DAYS`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 15m, 1h, 90s)"))?;
    let d = match unit {
        "s" => Duration::try_seconds(n),
        "" | "m" | "min" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h or d)")),
    };
    let max = Duration::days(MAX_INTERVAL_DAYS as i64);
    match d {
        Some(d) if d <= Duration::zero() => Err(format!("{s:?} must be longer than zero")),
        Some(d) if d <= max => Ok(d),
        _ => Err(format!(
            "{s:?} is out of range (1s to {MAX_INTERVAL_DAYS}d)"
        )),
    }
}

/// `value` if it is within `lo..=hi`, else an error naming `key` and the range.
fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<T, String> {
    if value < lo || value > hi {
        return Err(format!("{key}: {value} is out of range ({lo} to {hi})"));
    }
    Ok(value)
}

fn parse_time_of_day(s: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s, "%H:%M")
        .map_err(|_| format!("{s:?} is not a time of day (HH:MM, UTC)"))
}

/// The built-in config. Panics when `$TRAYBACK_STATE_DIR` is set but not absolute: commands
/// use [`Config::builtin`], which says so in one error line.
impl Default for Config {
    fn default() -> Self {
        Config::builtin().expect("defaults are valid")
    }
}

impl Config {
    /// The built-in config (no file): fails only on a bad `$TRAYBACK_STATE_DIR`.
    pub fn builtin() -> Result<Config, ConfigError> {
        Config::from_raw(RawConfig::default(), Path::new("<built-in>"))
    }

    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parse config text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| ConfigError::Invalid {
                path: path.to_path_buf(),
                detail: e.to_string(),
            })?
        };
        Config::from_raw(raw, path)
    }

    fn from_raw(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
        let bad = |detail: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            detail,
        };
        let sources = raw.sources.unwrap_or_default();
        for s in &sources {
            if !s.is_absolute() {
                return Err(bad(format!("sources: {:?} is not an absolute path", s)));
            }
        }
        let exclude = raw.exclude.unwrap_or_default();
        let exclude_set = build_excludes(&exclude).map_err(|e| bad(format!("exclude: {e}")))?;
        let tree_format = match raw.tree_format {
            None => TreeFormat::NEWEST,
            Some(n) => TreeFormat::try_from(n).map_err(|e| bad(format!("tree_format: {e}")))?,
        };
        let compression_level = raw.compression_level.unwrap_or(3);
        if !(1..=19).contains(&compression_level) {
            return Err(bad(format!(
                "compression_level: {compression_level} is out of range (1 to 19)"
            )));
        }
        let rs = raw.schedule.unwrap_or_default();
        let mut schedule = Schedule::default();
        if let Some(m) = &rs.micro_interval {
            schedule.micro_interval =
                parse_duration(m).map_err(|e| bad(format!("schedule.micro_interval: {e}")))?;
        }
        if let Some(d) = &rs.daily_at {
            schedule.daily_at =
                Some(parse_time_of_day(d).map_err(|e| bad(format!("schedule.daily_at: {e}")))?);
        }
        if let Some(w) = rs.weekly_every_days {
            let w = in_range("schedule.weekly_every_days", w, 1, MAX_INTERVAL_DAYS).map_err(bad)?;
            schedule.weekly_every = Duration::days(w as i64);
        }
        match (rs.monthly_every_days, rs.monthly_day, &rs.monthly_at) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(bad(
                    "schedule: give monthly_every_days or monthly_day/monthly_at, not both".into(),
                ))
            }
            (Some(n), None, None) => {
                let n =
                    in_range("schedule.monthly_every_days", n, 1, MAX_MONTHLY_DAYS).map_err(bad)?;
                schedule.monthly = Monthly::EveryDays(n)
            }
            (None, day, at) if day.is_some() || at.is_some() => {
                let day = day.unwrap_or(1);
                if !(1..=28).contains(&day) {
                    return Err(bad(format!(
                        "schedule.monthly_day: {day} is out of range (1 to 28)"
                    )));
                }
                let at = match at {
                    Some(a) => parse_time_of_day(a)
                        .map_err(|e| bad(format!("schedule.monthly_at: {e}")))?,
                    None => NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
                };
                schedule.monthly = Monthly::DayOfMonth { day, at };
            }
            _ => {}
        }
        let rp = raw.pare.unwrap_or_default();
        let mut pare = Policy::default();
        if let Some(d) = rp.micro_max_age_days {
            let d = in_range("pare.micro_max_age_days", d, 0, MAX_AGE_DAYS).map_err(bad)?;
            pare.micro_max_age = if d == 0 {
                None
            } else {
                Some(Duration::days(d as i64))
            };
        }
        for (key, v, slot) in [
            ("pare.many_backups", rp.many_backups, &mut pare.many_backups),
            ("pare.dailies_kept", rp.dailies_kept, &mut pare.dailies_kept),
            (
                "pare.weeklies_kept",
                rp.weeklies_kept,
                &mut pare.weeklies_kept,
            ),
        ] {
            if let Some(v) = v {
                *slot = in_range(key, v, 1, MAX_KEPT).map_err(bad)?;
            }
        }
        let ra = raw.agent.unwrap_or_default();
        let glob = |key: &str, p: &str| {
            Glob::new(p)
                .map(|g| g.compile_matcher())
                .map_err(|e| bad(format!("{key}: {p:?}: {e}")))
        };
        let auto_enrol_label = match &ra.auto_enrol_label {
            Some(p) => Some(glob("agent.auto_enrol_label", p)?),
            None => None,
        };
        let devices = match &ra.devices {
            Some(d) if !d.is_empty() => {
                let mut b = GlobSetBuilder::new();
                for p in d {
                    b.add(Glob::new(p).map_err(|e| bad(format!("agent.devices: {p:?}: {e}")))?);
                }
                Some(b.build().map_err(|e| bad(format!("agent.devices: {e}")))?)
            }
            _ => None,
        };
        for (key, dir) in [
            ("agent.run_dir", &ra.run_dir),
            ("agent.state_dir", &ra.state_dir),
            ("agent.metrics_file", &ra.metrics_file),
        ] {
            if dir.as_ref().is_some_and(|d| !d.is_absolute()) {
                return Err(bad(format!("{key}: must be an absolute path")));
            }
        }
        let state_dir = match std::env::var_os(STATE_DIR_ENV).filter(|v| !v.is_empty()) {
            Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
            Some(_) => return Err(bad(format!("{STATE_DIR_ENV}: must be an absolute path"))),
            None => ra.state_dir.unwrap_or_else(default_state_dir),
        };
        let metrics_file = ra.metrics_file.unwrap_or_else(|| {
            let textfiles = Path::new(NODE_EXPORTER_TEXTFILE_DIR);
            if textfiles.is_dir() {
                textfiles.join("trayback.prom")
            } else {
                state_dir.join("trayback.prom")
            }
        });
        let agent = Agent {
            auto_enrol_label,
            auto_enrol_pattern: ra.auto_enrol_label.clone(),
            devices,
            multiple_media: ra.multiple_media.unwrap_or(MultipleMedia::All),
            eject_waits_for_micro: ra.eject_waits_for_micro.unwrap_or(true),
            away_warning_days: in_range(
                "agent.away_warning_days",
                ra.away_warning_days.unwrap_or(7),
                0,
                MAX_AGE_DAYS,
            )
            .map_err(bad)?,
            notify_command: ra.notify_command,
            run_dir: ra.run_dir.unwrap_or_else(|| "/run/trayback".into()),
            state_dir,
            metrics_file,
        };
        Ok(Config {
            agent,
            sources,
            exclude,
            exclude_set,
            one_file_system: raw.one_file_system.unwrap_or(true),
            compression_level,
            encrypt: raw.encrypt.unwrap_or(true),
            tree_format,
            schedule,
            pare,
        })
    }

    /// Replace the sources (the CLI's `--source`).
    pub fn with_sources(mut self, sources: Vec<PathBuf>) -> Result<Config, ConfigError> {
        for s in &sources {
            if !s.is_absolute() {
                return Err(ConfigError::Invalid {
                    path: "--source".into(),
                    detail: format!("{:?} is not an absolute path", s),
                });
            }
        }
        self.sources = sources;
        Ok(self)
    }
}

/// Exclude patterns: a pattern with a `/` matches the whole absolute path, one without
/// matches the file name alone (`*.tmp`, `.cache`).
pub fn build_excludes(patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let pat = if p.contains('/') {
            p.clone()
        } else {
            format!("**/{p}")
        };
        let g = globset::GlobBuilder::new(&pat)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("{p:?}: {e}"))?;
        b.add(g);
    }
    let _ = Glob::new; // (GlobBuilder is the configurable form of Glob)
    b.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("t.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_shipped_default_config_is_valid() {
        let c = parse(include_str!("../config/trayback.yaml")).unwrap();
        assert!(!c.sources.is_empty());
        // Regression: the shipped config enrolled any blank stick labelled TRAYBACK*.
        assert!(
            c.agent.auto_enrol_label.is_none(),
            "no automatic enrolment by default"
        );
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let e = parse("sources: [/a]\nsourcs: [/b]\n").unwrap_err();
        assert!(e.contains("sourcs") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(parse("compression_level: 40")
            .unwrap_err()
            .contains("compression_level"));
        for bad in ["tree_format: 0", "tree_format: 4"] {
            assert!(parse(bad).unwrap_err().contains("tree_format"), "{bad}");
        }
        assert!(parse("sources: [relative/path]")
            .unwrap_err()
            .contains("sources"));
        assert!(parse("one_file_system: maybe")
            .unwrap_err()
            .contains("one_file_system"));
        assert!(parse("exclude: ['a[']").unwrap_err().contains("exclude"));
    }

    #[test]
    fn schedule_and_pare_keys() {
        let c = parse("schedule:\n  micro_interval: 5m\n  daily_at: '02:30'\n  monthly_day: 1\n  monthly_at: '03:00'\npare:\n  micro_max_age_days: 3\n  dailies_kept: 42\n").unwrap();
        assert_eq!(c.schedule.micro_interval, Duration::minutes(5));
        assert_eq!(
            c.schedule.daily_at,
            Some(NaiveTime::from_hms_opt(2, 30, 0).unwrap())
        );
        assert!(matches!(
            c.schedule.monthly,
            Monthly::DayOfMonth { day: 1, .. }
        ));
        assert_eq!(c.pare.micro_max_age, Some(Duration::days(3)));
        assert_eq!(c.pare.dailies_kept, 42);
        assert_eq!(c.pare.many_backups, 80);
        assert!(parse("schedule:\n  micro_interval: 0m\n")
            .unwrap_err()
            .contains("schedule.micro_interval"));
        assert!(parse("schedule:\n  daily_at: 25:00\n")
            .unwrap_err()
            .contains("schedule.daily_at"));
        assert!(
            parse("schedule:\n  monthly_every_days: 28\n  monthly_day: 3\n")
                .unwrap_err()
                .contains("not both")
        );
        assert!(parse("pare:\n  dailies_kept: 0\n")
            .unwrap_err()
            .contains("pare.dailies_kept"));
        assert!(parse("pare:\n  bogus: 1\n").unwrap_err().contains("bogus"));
        let c = parse("agent:\n  auto_enrol_label: 'TRAYBACK*'\n  devices: ['/dev/sd*']\n  multiple_media: last_inserted\n").unwrap();
        assert!(c.agent.auto_enrol_label.unwrap().is_match("TRAYBACK-A"));
        assert!(c.agent.devices.unwrap().is_match("/dev/sdb1"));
        assert_eq!(c.agent.multiple_media, MultipleMedia::LastInserted);
        assert!(parse("agent:\n  multiple_media: some\n")
            .unwrap_err()
            .contains("multiple_media"));
        assert!(parse("agent:\n  run_dir: run\n")
            .unwrap_err()
            .contains("agent.run_dir"));
    }

    /// Values that once passed validation and then panicked in the schedule.
    #[test]
    fn huge_durations_and_counts_are_refused_naming_the_key_and_range() {
        for (text, key, range) in [
            (
                "schedule:\n  micro_interval: 9223372036854775807s\n",
                "schedule.micro_interval",
                "1s to 366d",
            ),
            (
                "schedule:\n  micro_interval: 9223372036854775807d\n",
                "schedule.micro_interval",
                "1s to 366d",
            ),
            (
                "schedule:\n  micro_interval: 367d\n",
                "schedule.micro_interval",
                "1s to 366d",
            ),
            (
                "schedule:\n  monthly_every_days: 4294967295\n",
                "schedule.monthly_every_days",
                "1 to 3660",
            ),
            (
                "schedule:\n  monthly_every_days: 0\n",
                "schedule.monthly_every_days",
                "1 to 3660",
            ),
            (
                "schedule:\n  weekly_every_days: 4294967295\n",
                "schedule.weekly_every_days",
                "1 to 366",
            ),
            (
                "pare:\n  micro_max_age_days: 4294967295\n",
                "pare.micro_max_age_days",
                "0 to 36600",
            ),
            (
                "pare:\n  many_backups: 18446744073709551615\n",
                "pare.many_backups",
                "1 to 1000000",
            ),
            (
                "pare:\n  dailies_kept: 0\n",
                "pare.dailies_kept",
                "1 to 1000000",
            ),
            (
                "agent:\n  away_warning_days: 4294967295\n",
                "agent.away_warning_days",
                "0 to 36600",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key) && e.contains(range), "{text}: {e}");
        }
        let c = parse("schedule:\n  micro_interval: 366d\n  monthly_every_days: 3660\n").unwrap();
        assert_eq!(c.schedule.micro_interval, Duration::days(366));
    }

    #[test]
    fn excludes_match_names_or_whole_paths() {
        let s = build_excludes(&["*.tmp".into(), "/home/*/.cache".into()]).unwrap();
        assert!(s.is_match("/home/a/x.tmp"));
        assert!(s.is_match("/home/a/.cache"));
        assert!(!s.is_match("/home/a/b/.cache"));
        assert!(!s.is_match("/home/a/x.tmpl"));
    }
}
