//! The agent's commands: `agent`, `status`, `eject`, `backup-now`, `install-system`, and the
//! test-only `test-clock`.

use super::load_config;
use super::output::{human, print_json};
use crate::agent::{self, Request, Response};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const UDEV_RULE: &str = include_str!("../../udev-rules/90-trayback.rules");
pub const SYSTEMD_UNIT: &str = include_str!("../../systemd/trayback-agent.service");
pub const DEFAULT_CONFIG: &str = include_str!("../../config/trayback.yaml");

#[derive(Args, Debug)]
pub struct AgentArgs {
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The control socket (default $TRAYBACK_SOCKET or /run/trayback/agent.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Let `trayback test-clock advance` move the agent's clock (for tests).
    #[arg(long, hide = true)]
    pub test_clock: bool,
}

pub fn run_agent(a: AgentArgs) -> Result<u8> {
    let config = load_config(a.config.as_deref(), &[])?;
    if config.sources.is_empty() {
        bail!(
            "no sources configured: set `sources` in {}",
            a.config
                .as_deref()
                .unwrap_or(Path::new(crate::config::DEFAULT_PATH))
                .display()
        );
    }
    agent::run(agent::Options {
        config,
        socket: a.socket.unwrap_or_else(agent::socket_path),
        test_clock: a.test_clock,
    })?;
    Ok(0)
}

fn ask(req: &Request) -> Result<Response> {
    let r = agent::call(&agent::socket_path(), req).map_err(anyhow::Error::msg)?;
    Ok(r)
}

fn answer(r: Response) -> Result<serde_json::Value> {
    if r.ok {
        Ok(r.data)
    } else {
        bail!("{}", r.error.unwrap_or_else(|| "the agent refused".into()))
    }
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn status(a: StatusArgs) -> Result<u8> {
    let s = answer(ask(&Request::Status)?)?;
    if a.json {
        print_json(&s)?;
        return Ok(0);
    }
    let empty = vec![];
    let inserted = s["inserted"].as_array().unwrap_or(&empty);
    if inserted.is_empty() {
        println!("no medium inserted");
    }
    for m in inserted {
        println!(
            "inserted: {} ({}) on {} at {}",
            m["label"].as_str().unwrap_or("?"),
            m["media_id"].as_str().unwrap_or("?"),
            m["device"].as_str().unwrap_or("?"),
            m["mountpoint"].as_str().unwrap_or("?")
        );
        if let Some(newest) = m["newest"].as_object() {
            for (k, v) in newest {
                println!(
                    "  last {k:<8} #{} at {}",
                    v["id"],
                    v["started"].as_str().unwrap_or("?")
                );
            }
        }
        match m["job"].as_object() {
            Some(j) => println!(
                "  running: {} backup since {} ({} files, {})",
                j["kind"].as_str().unwrap_or("?"),
                j["started"].as_str().unwrap_or("?"),
                j["files"],
                human(j["bytes"].as_u64().unwrap_or(0))
            ),
            None => println!("  next due: {}", m["next_due"].as_str().unwrap_or("-")),
        }
        println!(
            "  free: {}{}",
            human(m["free_bytes"].as_u64().unwrap_or(0)),
            if m["writing"] == false {
                " (not written: another medium was inserted last)"
            } else {
                ""
            }
        );
        if let Some(e) = m["last_error"].as_str() {
            println!("  last error: {e}");
        }
    }
    for k in s["known"].as_array().unwrap_or(&empty) {
        let newest = k["newest_backup"]
            .as_object()
            .map(|n| {
                format!(
                    "newest backup #{} at {}",
                    n["id"],
                    n["started"].as_str().unwrap_or("?")
                )
            })
            .unwrap_or_else(|| "no backups".into());
        println!(
            "away: {} ({}), last seen {}, {newest}",
            k["label"].as_str().unwrap_or("?"),
            k["media_id"].as_str().unwrap_or("?"),
            k["last_seen"].as_str().unwrap_or("never")
        );
    }
    for w in s["warnings"].as_array().unwrap_or(&empty) {
        println!("warning: {}", w.as_str().unwrap_or_default());
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct MediumSel {
    /// Which inserted medium (label, media id, device or mount point); optional with one.
    pub medium: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn eject(a: MediumSel) -> Result<u8> {
    let r = answer(ask(&Request::Eject { medium: a.medium })?)?;
    if a.json {
        print_json(&r)?;
    } else {
        println!("{}", r["message"].as_str().unwrap_or("safe to remove"));
    }
    Ok(0)
}

pub fn backup_now(a: MediumSel) -> Result<u8> {
    let r = ask(&Request::BackupNow { medium: a.medium })?;
    let ok = r.ok;
    if a.json {
        print_json(&r)?;
    } else if let Some(b) = r.data["backup"].as_u64() {
        println!(
            "backup #{b} ({}) made, verified: {}",
            r.data["kind"].as_str().unwrap_or("?"),
            r.data["verified"]
        );
    }
    if !ok {
        bail!("{}", r.error.unwrap_or_else(|| "backup failed".into()));
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct TestClockArgs {
    /// How far to move the agent's clock forward (90s, 15m, 2h, 3d).
    pub advance: String,
}

pub fn test_clock(a: TestClockArgs) -> Result<u8> {
    let d = crate::config::parse_duration(&a.advance).map_err(anyhow::Error::msg)?;
    let r = answer(ask(&Request::AdvanceClock {
        seconds: d.num_seconds(),
    })?)?;
    println!("agent clock now {}", r["now"].as_str().unwrap_or("?"));
    Ok(0)
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Install under this root (for packaging); "/" installs for real.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Show what would be written.
    #[arg(long)]
    pub dry_run: bool,
}

/// Install the binary, udev rule, systemd unit and a default config (kept if present).
pub fn install_system(a: InstallArgs) -> Result<u8> {
    let exe = std::env::current_exe()?;
    let at = |p: &str| a.root.join(p.trim_start_matches('/'));
    let files: Vec<(PathBuf, Vec<u8>, u32, bool)> = vec![
        (
            at("/usr/local/bin/trayback"),
            std::fs::read(&exe).context("reading this binary")?,
            0o755,
            true,
        ),
        (
            at("/etc/udev/rules.d/90-trayback.rules"),
            UDEV_RULE.as_bytes().to_vec(),
            0o644,
            true,
        ),
        (
            at("/etc/systemd/system/trayback-agent.service"),
            SYSTEMD_UNIT.as_bytes().to_vec(),
            0o644,
            true,
        ),
        (
            at("/etc/trayback/trayback.yaml"),
            DEFAULT_CONFIG.as_bytes().to_vec(),
            0o600,
            false,
        ),
    ];
    for (path, data, mode, replace) in &files {
        if !replace && path.exists() {
            println!("kept     {}", path.display());
            continue;
        }
        println!(
            "{} {}",
            if a.dry_run { "would write" } else { "wrote   " },
            path.display()
        );
        if a.dry_run {
            continue;
        }
        std::fs::create_dir_all(path.parent().unwrap())?;
        let tmp = path.with_extension("trayback-new");
        std::fs::write(&tmp, data)?;
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(*mode))?;
        std::fs::rename(&tmp, path)?;
    }
    if !a.dry_run && a.root == Path::new("/") {
        for (cmd, args) in [
            ("udevadm", vec!["control", "--reload"]),
            ("systemctl", vec!["daemon-reload"]),
            ("systemctl", vec!["enable", "trayback-agent.service"]),
        ] {
            match Command::new(cmd).args(&args).status() {
                Ok(s) if s.success() => println!("ran      {cmd} {}", args.join(" ")),
                Ok(s) => println!("note     {cmd} {} exited with {s}", args.join(" ")),
                Err(_) => println!("note     {cmd} not found; skipped {cmd} {}", args.join(" ")),
            }
        }
        println!("edit /etc/trayback/trayback.yaml (sources), then insert a tray.");
    }
    Ok(0)
}
