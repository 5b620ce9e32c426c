//! Configuration: `trayback.yaml`, parsed strictly and validated once into [`Config`].
//!
//! Unknown keys and bad values are errors that name the key and the line (serde_yaml's
//! location); nothing downstream re-checks what this module accepted.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the agent and CLI look when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/trayback/trayback.yaml";

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
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub sources: Vec<PathBuf>,
    pub exclude: Vec<String>,
    pub exclude_set: GlobSet,
    pub one_file_system: bool,
    pub compression_level: i32,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_raw(RawConfig::default(), Path::new("<built-in>")).expect("defaults are valid")
    }
}

impl Config {
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
        let compression_level = raw.compression_level.unwrap_or(3);
        if !(1..=19).contains(&compression_level) {
            return Err(bad(format!(
                "compression_level: {compression_level} is out of range (1 to 19)"
            )));
        }
        Ok(Config {
            sources,
            exclude,
            exclude_set,
            one_file_system: raw.one_file_system.unwrap_or(true),
            compression_level,
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
        assert!(parse("sources: [relative/path]")
            .unwrap_err()
            .contains("sources"));
        assert!(parse("one_file_system: maybe")
            .unwrap_err()
            .contains("one_file_system"));
        assert!(parse("exclude: ['a[']").unwrap_err().contains("exclude"));
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
