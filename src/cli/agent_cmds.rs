//! The agent's commands: `agent`, `status`, `eject`, `backup-now`, `install-system`, and the
//! test-only `test-clock`. (How the other commands reach a medium the agent holds is
//! `cli::held`.)

use super::docs;
use super::load_config;
use super::output::{self, human, print_json};
use crate::agent::{self, Request, Response};
use crate::job::Outcome;
use crate::status::{ClockNow, Ejected};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const UDEV_RULE: &str = include_str!("../../udev-rules/90-trayback.rules");
pub const SYSTEMD_UNIT: &str = include_str!("../../systemd/trayback-agent.service");
/// The web interface's unit: installed, not enabled. Both units carry `@bindir@` and
/// `@docdir@`, filled in by [`docs::unit`] for the layout installed.
pub const UI_UNIT: &str = include_str!("../../systemd/trayback-ui.service");
pub const DEFAULT_CONFIG: &str = include_str!("../../config/trayback.yaml");
/// Installed where the unit's `Documentation=` points.
pub const README: &str = include_str!("../../README.md");
pub const FORMAT: &str = include_str!("../../FORMAT.md");

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

/// The answer's data as the type the request answers with, or the agent's refusal.
fn answer<T: serde::de::DeserializeOwned>(r: Response) -> Result<T> {
    if r.ok {
        r.data_as().map_err(anyhow::Error::msg)
    } else {
        bail!("{}", r.error.unwrap_or_else(|| "the agent refused".into()))
    }
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// text (for people), json, or openmetrics (for Prometheus: with no agent running it
    /// prints trayback_agent_up 0 and exits 0; a socket this user may not use is an error).
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
    Openmetrics,
}

pub fn status(a: StatusArgs) -> Result<u8> {
    let format = if a.json { StatusFormat::Json } else { a.format };
    // No agent is a fact the metrics report (trayback_agent_up 0); a socket that refuses
    // this caller is an error: it says nothing of the agent.
    let socket = agent::socket_path();
    let asked = agent::ask_status(&socket).map_err(anyhow::Error::msg)?;
    if format == StatusFormat::Openmetrics {
        print!(
            "{}",
            crate::metrics::render(match &asked {
                Some(s) => crate::metrics::Agent::Running(s),
                None => crate::metrics::Agent::NotRunning,
            })
        );
        return Ok(0);
    }
    let Some(s) = asked else {
        bail!("{}", agent::not_running(&socket));
    };
    if format == StatusFormat::Json {
        print_json(&s)?;
        return Ok(0);
    }
    let at = |t: &chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    if s.inserted.is_empty() {
        println!("no medium inserted");
    }
    for m in &s.inserted {
        println!(
            "inserted: {} ({}) on {} at {}",
            m.label.escape_debug(),
            m.media_id,
            m.device.display(),
            m.mountpoint.display()
        );
        for (k, b) in &m.newest {
            println!("  last {k:<8} #{} at {}", b.id, at(&b.started));
        }
        match &m.job {
            Some(j) => println!("  {}", j.summary()),
            None => println!("  next due: {}", m.next_due.as_ref().map_or("-".into(), at)),
        }
        if m.lent {
            println!(
                "  lent to a command (media passphrase, rotate-host-key, adopt) until it ends"
            );
        }
        println!(
            "  free: {}{}",
            m.free_bytes.map_or("unknown".into(), human),
            if m.writing {
                ""
            } else {
                " (not written: another medium was inserted last)"
            }
        );
        if let Some(r) = &m.reach {
            output::print_reach(r, "  ");
        }
        if let Some(e) = &m.last_error {
            println!("  last error: {e}");
        }
    }
    for k in &s.known {
        let newest = k.newest_backup.map_or_else(
            || "no backups".into(),
            |n| format!("newest backup #{} at {}", n.id, at(&n.started)),
        );
        println!(
            "away: {} ({}), last seen {}, {newest}",
            k.label.escape_debug(),
            k.media_id,
            k.last_seen.as_ref().map_or("never".into(), at)
        );
    }
    for w in &s.warnings {
        println!("warning: {w}");
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
    let r: Ejected = answer(ask(&Request::Eject { medium: a.medium })?)?;
    if a.json {
        print_json(&r)?;
    } else {
        println!("{}", r.message);
    }
    Ok(0)
}

pub fn backup_now(a: MediumSel) -> Result<u8> {
    let r = ask(&Request::BackupNow { medium: a.medium })?;
    let outcome: Option<Outcome> = r.data_as().ok();
    if a.json {
        print_json(&r)?;
    } else if let Some(h) = outcome.as_ref().and_then(|o| o.backup.as_ref()) {
        let verified = match outcome.as_ref().and_then(Outcome::verified) {
            Some(true) => "yes",
            Some(false) => "NO (damage found)",
            None => "not yet",
        };
        println!("backup #{} ({}) made, verified: {verified}", h.id, h.kind);
    }
    if !r.ok {
        bail!("{}", r.error.unwrap_or_else(|| "backup failed".into()));
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct TestClockArgs {
    /// How far to move the agent's clock forward (90s, 15m, 2h, 3d); with --step, how far
    /// to step its wall clock (a leading `-` steps it back).
    #[arg(allow_hyphen_values = true)]
    pub advance: String,
    /// Step only the wall clock (as `date -s` does), forward or back; without it, time
    /// passes (both the wall clock and the boot-time clock move, as over a suspend).
    #[arg(long)]
    pub step: bool,
}

pub fn test_clock(a: TestClockArgs) -> Result<u8> {
    let (sign, text) = match a.advance.strip_prefix('-') {
        Some(rest) if a.step => (-1, rest),
        _ => (1, a.advance.as_str()),
    };
    let d = crate::config::parse_duration(text).map_err(anyhow::Error::msg)?;
    let r: ClockNow = answer(ask(&Request::AdvanceClock {
        seconds: sign * d.num_seconds(),
        step: a.step,
    })?)?;
    println!("agent clock now {}", r.now.to_rfc3339());
    Ok(0)
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The binary to install (default: the one running, e.g. target/release/trayback).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Install under this root (for packaging); "/" installs for real.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Show what would be written.
    #[arg(long)]
    pub dry_run: bool,
}

/// Install the binary, the generated files of the source layout (udev rule, units, man
/// pages, completions), the docs, and a default config (kept if present).
pub fn install_system(a: InstallArgs) -> Result<u8> {
    let exe = match &a.binary {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding this binary")?,
    };
    let at = |p: &Path| a.root.join(p.strip_prefix("/").unwrap_or(p));
    let binary = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
    if !binary.starts_with(b"\x7fELF") {
        bail!(
            "{}: not an executable (ELF) file; give the trayback binary, e.g. target/release/trayback",
            exe.display()
        );
    }
    let l = &docs::SOURCE;
    let doc = Path::new(l.doc);
    let mut files: Vec<(PathBuf, Vec<u8>, u32, bool)> = vec![
        (at(&Path::new(l.bin).join("trayback")), binary, 0o755, true),
        (
            at(&doc.join("README.md")),
            README.as_bytes().to_vec(),
            0o644,
            true,
        ),
        (
            at(&doc.join("FORMAT.md")),
            FORMAT.as_bytes().to_vec(),
            0o644,
            true,
        ),
    ];
    for (path, data) in docs::generated(l)? {
        files.push((at(&path), data, 0o644, true));
    }
    files.push((
        at(Path::new(crate::config::DEFAULT_PATH)),
        DEFAULT_CONFIG.as_bytes().to_vec(),
        0o600,
        false,
    ));
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
