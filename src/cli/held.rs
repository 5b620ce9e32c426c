//! The commands that need a medium's writer lock, on a medium the agent holds (the lock is
//! the agent's): the jobs — `backup`, `verify`, `pare`, `repair --tree` — are run by the
//! agent on its medium, with progress streamed back and the result printed exactly as the
//! command prints its own; the key commands — `media passphrase`, `rotate-host-key`,
//! `adopt` — borrow the medium from the agent and run here, so their secrets never leave
//! this process. Also `media init`'s notice to the agent.
//!
//! A command reaches the agent only after the lock said the medium is held; without an
//! agent, the lock error stands as it was.

use super::plan::{print_pare_done, PareArgs};
use super::{meter, print_backup_done, print_verify_reports, BackupArgs, VerifyArgs};
use crate::agent::{self, ConfigFile, Phase, Request, Response};
use crate::error::Error;
use crate::medium::{MediaFile, Medium};
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};

/// The agent's socket and the medium at `root`, if an agent may be the holder of its lock
/// (`locked`); else the lock error.
fn holder(root: &Path, locked: PathBuf) -> Result<(PathBuf, MediaFile)> {
    let socket = agent::socket_path();
    if !socket.exists() {
        return Err(Error::Locked(locked).into());
    }
    Ok((socket, Medium::identify(root)?))
}

/// The config file as read here (`--config`), for the agent to parse the same text.
fn config_file(path: Option<&Path>) -> Result<Option<ConfigFile>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    Ok(Some(ConfigFile {
        path: path.to_path_buf(),
        text,
    }))
}

/// Send a job to the agent, showing its progress on the bars of its phases; the answer,
/// or the agent's refusal.
fn run_job(
    root: &Path,
    req: &Request,
    bars: &[(Phase, &crate::progress::Meter)],
) -> Result<Response> {
    let mut seen: Vec<agent::Progress> = vec![agent::Progress::default(); bars.len()];
    // A job queued behind a running backup shows nothing until it starts: say why.
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "{}: the agent holds this medium; it runs this as soon as the medium is idle",
            root.display()
        );
    }
    let r = agent::call_with_progress(&agent::socket_path(), req, &mut |p| {
        if let Some(i) = bars.iter().position(|(phase, _)| *phase == p.phase) {
            bars[i].1.add(
                p.files.saturating_sub(seen[i].files),
                p.bytes.saturating_sub(seen[i].bytes),
            );
            seen[i] = p;
        }
    })
    .map_err(|e| anyhow!("{}: the agent holds this medium, and {e}", root.display()));
    for (_, b) in bars {
        b.finish();
    }
    let r = r?;
    // Refused before the job ran: the agent's line says why (and names the medium).
    if !r.ok && r.data.is_null() {
        bail!(
            "{}",
            r.error
                .unwrap_or_else(|| format!("{}: the agent refused", root.display()))
        );
    }
    Ok(r)
}

/// `backup` on a medium the agent holds.
pub(super) fn backup(
    a: &BackupArgs,
    root: &Path,
    cfg: &crate::config::Config,
    ask: crate::job::Ask,
    locked: PathBuf,
) -> Result<u8> {
    let (_, media) = holder(root, locked)?;
    let req = Request::Backup {
        medium: Some(media.media_id.to_string()),
        ask,
        at: a.at,
        no_verify: a.no_verify,
        config: config_file(a.config.as_deref())?,
        // Made absolute as the config was loaded.
        sources: if a.sources.is_empty() {
            Vec::new()
        } else {
            cfg.sources.clone()
        },
    };
    let (b, v) = (meter("backup", None, a.json), meter("verify", None, a.json));
    let r = run_job(root, &req, &[(Phase::Backup, &b), (Phase::Verify, &v)])?;
    let done: crate::job::Done = r.data_as().map_err(anyhow::Error::msg)?;
    print_backup_done(&media.label, root, &done, a.json)
}

/// `verify` on a medium the agent holds.
pub(super) fn verify(a: &VerifyArgs, root: &Path, locked: PathBuf) -> Result<u8> {
    let (_, media) = holder(root, locked)?;
    let req = Request::Verify {
        medium: Some(media.media_id.to_string()),
        backup: a.id,
        all: a.all,
        read_all: a.read_all,
    };
    let bar = meter("verify", None, a.json);
    let r = run_job(root, &req, &[(Phase::Verify, &bar)])?;
    let reports: Vec<crate::verify::Report> = r.data_as().map_err(anyhow::Error::msg)?;
    print_verify_reports(&reports, a.json)
}

/// `pare` (not a dry run) on a medium the agent holds.
pub(super) fn pare(a: &PareArgs, root: &Path, locked: PathBuf) -> Result<u8> {
    let (_, media) = holder(root, locked)?;
    let req = Request::Pare {
        medium: Some(media.media_id.to_string()),
        at: a.at,
        free: a.free,
        config: config_file(a.config.as_deref())?,
    };
    let r = run_job(root, &req, &[])?;
    let done: crate::maintain::PareDone = r.data_as().map_err(anyhow::Error::msg)?;
    print_pare_done(root, &done, a.json)
}

/// `repair --tree` on a medium the agent holds: its notes.
pub(super) fn repair(root: &Path, locked: PathBuf) -> Result<Vec<String>> {
    let (_, media) = holder(root, locked)?;
    let req = Request::Repair {
        medium: Some(media.media_id.to_string()),
    };
    let r = run_job(root, &req, &[])?;
    r.data_as().map_err(anyhow::Error::msg)
}

/// Run `change` on the medium at `dir`; when the agent holds it, borrow it from the agent for
/// as long as `change` runs (the agent takes it back, and proves it again, when this process
/// lets go of the lease or ends).
pub(super) fn lent<T>(dir: &Path, change: impl Fn(&Path) -> crate::error::Result<T>) -> Result<T> {
    let locked = match change(dir) {
        Err(Error::Locked(locked)) => locked,
        r => return Ok(r?),
    };
    let (socket, media) = holder(dir, locked.clone())?;
    let (r, lease) = agent::lend(&socket, Some(media.media_id.to_string()))
        .map_err(|e| anyhow!("{}: the agent holds this medium, and {e}", dir.display()))?;
    let Some(lease) = lease else {
        bail!(
            "{}: {}",
            Error::Locked(locked),
            r.error
                .unwrap_or_else(|| "the agent did not lend it".into())
        );
    };
    let changed = change(dir);
    let back = lease.give_back();
    let changed = changed?;
    back.map_err(|e| {
        anyhow!(
            "{}: done, but the agent did not take the medium back: {e}",
            dir.display()
        )
    })?;
    Ok(changed)
}

/// Tell a running agent that the disk under `dir` was enrolled, so that it uses it once it is
/// unmounted, without a re-plug. Nothing is said when no agent runs or it cannot see the disk.
pub(super) fn tell_agent_enrolled(dir: &Path, json: bool) {
    use std::os::unix::fs::MetadataExt;
    let socket = agent::socket_path();
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    if !socket.exists() {
        return;
    }
    let req = Request::Enrolled { devnum: meta.dev() };
    if let Ok(r) = agent::call(&socket, &req) {
        if r.ok && !json {
            if let Some(msg) = r.data.as_str() {
                println!("{msg}");
            }
        }
    }
}
