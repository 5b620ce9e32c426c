//! The command line: clap definitions and one function per command. Thin: every decision is
//! the library's; this module parses words into types, opens the medium, calls, and prints
//! (human text, or JSON with `--json`).

mod agent_cmds;
mod config_man;
mod demo;
pub mod docs;
mod held;
mod keys;
mod media;
mod output;
mod plan;
mod ui;

use crate::config::{self, Config};
use crate::error::Error;
use crate::ids::BackupId;
use crate::job;
use crate::medium::Medium;
use crate::progress::Meter;
use crate::query;
use crate::restore::{self, Target};
use crate::schedule;
use crate::tree::Kind;
use crate::verify;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::{Args, Parser, Subcommand};
pub use media::MediaCmd;
use output::print_json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Exit statuses besides 0 (success), 1 (error) and 2 (usage).
pub const EXIT_PROBLEMS: u8 = 3;
pub const EXIT_VERIFY_FAILED: u8 = 4;

#[derive(Parser, Debug)]
#[command(
    name = "trayback",
    version,
    about = "Backups to removable, rotated disks",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// An encrypted medium's recovery key or passphrase, from the first line of this file
    /// (on a machine that holds no key for the medium).
    #[arg(long, global = true, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// As --key-file, read from this open file descriptor.
    #[arg(long, global = true, value_name = "N", conflicts_with = "key_file")]
    pub key_fd: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Enrol or inspect a medium.
    #[command(subcommand)]
    Media(MediaCmd),
    /// Make a backup on a medium (verified right after, unless --no-verify).
    Backup(BackupArgs),
    /// Re-read a backup from the medium and check every block and index location.
    Verify(VerifyArgs),
    /// Restore a backup, in whole or in part.
    Restore(RestoreArgs),
    /// List the backups on a medium.
    List(MediumJson),
    /// Draw the medium's dependency tree of backups.
    Tree(MediumJson),
    /// List files in a backup.
    Ls(LsArgs),
    /// Every distinct version of one file across the backups on a medium.
    Versions(VersionsArgs),
    /// What a backup added, changed and removed against its parent or another backup.
    Diff(DiffArgs),
    /// What backup is due on a medium now, and why.
    Due(plan::DueArgs),
    /// Pare backups by the spec's plan (micro backups past their age; more with --free).
    Pare(plan::PareArgs),
    /// Run the real schedule and paring plan over a modelled medium (a sizing tool).
    Simulate(plan::SimulateArgs),
    /// Repair a damaged medium.
    Repair(plan::RepairArgs),
    /// Run the hot-plug agent (started by udev through systemd).
    Agent(agent_cmds::AgentArgs),
    /// What the agent sees: inserted media, jobs, next backups, media away.
    Status(agent_cmds::StatusArgs),
    /// Finish or abort the running job, unmount, and say when the tray is safe to remove.
    Eject(agent_cmds::MediumSel),
    /// Ask the agent for a backup on the inserted medium now.
    BackupNow(agent_cmds::MediumSel),
    /// Install the binary, udev rule, systemd units, man pages, completions and default
    /// config under /usr/local (a source install; the Debian package does this for /usr).
    InstallSystem(agent_cmds::InstallArgs),
    /// Print the shell completion script for SHELL.
    Completions(docs::CompletionsArgs),
    /// Write the man pages into a directory.
    Man(docs::ManArgs),
    /// Write the Debian package's generated files under a staging root (scripts/deb.sh).
    #[command(hide = true)]
    PackageFiles(docs::PackageFilesArgs),
    /// Move a --test-clock agent's clock forward (tests only).
    #[command(hide = true)]
    TestClock(agent_cmds::TestClockArgs),
    /// Back up, verify and restore a real directory onto a directory medium, and compare.
    Demo(demo::DemoArgs),
    /// Serve the web interface on this machine (trays, trees, every file's versions, restore).
    Ui(ui::UiArgs),
}

#[derive(Args, Debug)]
pub struct MediumJson {
    /// The medium: a mounted backup disk or a directory (default: the inserted one).
    #[arg(long)]
    pub medium: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[arg(long)]
    /// The medium (default: the one inserted, as the agent reports).
    pub medium: Option<PathBuf>,
    /// monthly (full), weekly, daily or micro (default: what the schedule says is due).
    #[arg(long, value_parser = parse_kind)]
    pub kind: Option<Kind>,
    /// The backup to compare against (default: the spec's parent for the kind).
    #[arg(long)]
    pub parent: Option<BackupId>,
    /// Record the backup as made at TIME (RFC 3339, or "YYYY-MM-DD HH:MM" UTC).
    #[arg(long, value_parser = parse_time)]
    pub at: Option<DateTime<Utc>>,
    #[arg(long)]
    pub no_verify: bool,
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Back up PATH instead of the configured sources (repeatable).
    #[arg(long = "source")]
    pub sources: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[arg(long)]
    /// The medium (default: the one inserted, as the agent reports).
    pub medium: Option<PathBuf>,
    /// The backup (default: the newest).
    pub id: Option<BackupId>,
    #[arg(long, conflicts_with = "id")]
    pub all: bool,
    /// Re-read every block the backup references, not only those it wrote.
    #[arg(long)]
    pub read_all: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[arg(long)]
    /// The medium (default: the one inserted, as the agent reports).
    pub medium: Option<PathBuf>,
    #[arg(long, conflicts_with = "at")]
    pub backup: Option<BackupId>,
    /// The newest verified backup made at or before TIME.
    #[arg(long, value_parser = parse_time)]
    pub at: Option<DateTime<Utc>>,
    #[arg(
        long,
        required_unless_present = "in_place",
        conflicts_with = "in_place"
    )]
    pub to: Option<PathBuf>,
    /// Restore to the original paths.
    #[arg(long)]
    pub in_place: bool,
    /// Paths in the backup to restore (default: everything).
    pub paths: Vec<PathBuf>,
    #[arg(long)]
    pub dry_run: bool,
    /// Replace existing entries newer than the backed-up ones, and entries of another kind
    /// in the way (without it they are kept and listed, exit status 3).
    #[arg(long)]
    pub overwrite: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[arg(long)]
    /// The medium (default: the one inserted, as the agent reports).
    pub medium: Option<PathBuf>,
    /// The backup (default: the latest verified).
    pub id: Option<BackupId>,
    #[arg(default_value = "/")]
    pub path: PathBuf,
    #[arg(long, short)]
    pub recursive: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VersionsArgs {
    #[arg(long)]
    /// The medium (default: the one inserted, as the agent reports).
    pub medium: Option<PathBuf>,
    pub path: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    #[arg(long)]
    /// The medium (default: the one inserted, as the agent reports).
    pub medium: Option<PathBuf>,
    pub id: BackupId,
    /// Compare with this backup instead of ID's parent (ID is then the older one).
    pub other: Option<BackupId>,
    #[arg(long)]
    pub json: bool,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    s.parse()
}

/// RFC 3339, "YYYY-MM-DD HH:MM[:SS]" or "YYYY-MM-DD" (UTC).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap().and_utc());
    }
    Err(format!(
        "{s:?} is not a time (use RFC 3339 or \"YYYY-MM-DD HH:MM\", UTC)"
    ))
}

fn meter(what: &str, total: Option<u64>, json: bool) -> Meter {
    if !json && std::io::stderr().is_terminal() {
        Meter::bar(what, total)
    } else {
        Meter::hidden()
    }
}

/// The config for a command: `--config`, else the system file if present, else defaults;
/// `--source` replaces the sources.
pub fn load_config(path: Option<&Path>, sources: &[PathBuf]) -> Result<Config> {
    let mut cfg = match path {
        Some(p) => Config::load(p)?,
        None if Path::new(config::DEFAULT_PATH).exists() => {
            Config::load(Path::new(config::DEFAULT_PATH))?
        }
        None => Config::builtin()?,
    };
    if !sources.is_empty() {
        let abs: Vec<PathBuf> = sources
            .iter()
            .map(|s| {
                std::path::absolute(s)
                    .with_context(|| format!("{}: cannot make absolute", s.display()))
            })
            .collect::<Result<_>>()?;
        cfg = cfg.with_sources(abs)?;
    }
    Ok(cfg)
}

/// Run a command; returns the process exit status.
pub fn run(cli: Cli) -> Result<u8> {
    keys::set_source(cli.key_file, cli.key_fd);
    match cli.command {
        Command::Media(cmd) => media::run(cmd),
        Command::Backup(a) => cmd_backup(a),
        Command::Verify(a) => cmd_verify(a),
        Command::Restore(a) => cmd_restore(a),
        Command::List(a) => {
            let m = keys::open_read(&medium_of(&a.medium)?)?;
            if a.json {
                print_json(&m.tree().backups)?;
            } else {
                output::print_list(m.tree());
            }
            Ok(0)
        }
        Command::Tree(a) => {
            let m = keys::open_read(&medium_of(&a.medium)?)?;
            if a.json {
                print_json(&m.tree())?;
            } else {
                print!("{}", query::draw_tree(m.tree()));
            }
            Ok(0)
        }
        Command::Ls(a) => {
            let m = keys::open_read(&medium_of(&a.medium)?)?;
            let id = query::pick_backup(&m, a.id, None)?;
            output::stream_rows(a.json, output::write_ls, |out| {
                query::ls_each(&m, id, &a.path, a.recursive, out)
            })?;
            Ok(0)
        }
        Command::Versions(a) => {
            let m = keys::open_read(&medium_of(&a.medium)?)?;
            let abs = Path::new("/").join(&a.path);
            let v = query::versions(&m, &abs)?;
            if a.json {
                print_json(&v)?;
            } else if v.is_empty() {
                bail!("{} is in no backup on this medium", abs.display());
            } else {
                output::print_versions(&v);
            }
            Ok(0)
        }
        Command::Diff(a) => {
            let m = keys::open_read(&medium_of(&a.medium)?)?;
            let (from, to) = match a.other {
                Some(o) => (a.id, o),
                None => {
                    let rec = m.tree().get(a.id).ok_or(Error::NoSuchBackup(a.id))?;
                    let p = rec.parent.ok_or_else(|| {
                        anyhow!(
                            "backup {} has no parent; name a backup to compare with",
                            a.id
                        )
                    })?;
                    (p, a.id)
                }
            };
            let n = output::stream_rows(a.json, output::write_diff, |out| {
                query::diff_each(&m, from, to, out)
            })?;
            if n == 0 && !a.json {
                println!("no changes from backup #{from} to #{to}");
            }
            Ok(0)
        }
        Command::Due(a) => plan::due(a),
        Command::Pare(a) => plan::pare(a),
        Command::Simulate(a) => plan::simulate(a),
        Command::Repair(a) => plan::repair(a),
        Command::Agent(a) => agent_cmds::run_agent(a),
        Command::Status(a) => agent_cmds::status(a),
        Command::Eject(a) => agent_cmds::eject(a),
        Command::BackupNow(a) => agent_cmds::backup_now(a),
        Command::InstallSystem(a) => agent_cmds::install_system(a),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
        Command::PackageFiles(a) => docs::package_files(a),
        Command::TestClock(a) => agent_cmds::test_clock(a),
        Command::Demo(a) => demo::run(a),
        Command::Ui(a) => ui::run(a),
    }
}

/// Where this host keeps its per-medium keys: the config's `agent.state_dir` (or
/// `$TRAYBACK_STATE_DIR`, or the default for this user).
pub fn state_dir(config: Option<&Path>) -> Result<PathBuf> {
    Ok(load_config(config, &[])?.agent.state_dir)
}

/// The medium a command means: the one given, else the one the agent has inserted.
pub fn medium_of(given: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let r = crate::agent::call(&crate::agent::socket_path(), &crate::agent::Request::Status)
        .map_err(|e| anyhow!("no --medium given, and {e}"))?;
    let inserted = r.data["inserted"].as_array().cloned().unwrap_or_default();
    match inserted.as_slice() {
        [m] => Ok(PathBuf::from(m["mountpoint"].as_str().unwrap_or_default())),
        [] => bail!("no --medium given and no medium is inserted"),
        _ => bail!("no --medium given and several media are inserted; name one with --medium"),
    }
}

fn cmd_backup(a: BackupArgs) -> Result<u8> {
    let cfg = load_config(a.config.as_deref(), &a.sources)?;
    let root = medium_of(&a.medium)?;
    let ask = job::Ask {
        kind: a.kind,
        parent: a.parent,
    };
    let mut m = match Medium::open_write(&root, cfg.compression_level, &cfg.agent.state_dir) {
        Ok(m) => m,
        // The agent holds it: the agent runs this backup, and its progress is shown here.
        Err(Error::Locked(locked)) => return held::backup(&a, &root, &cfg, ask, locked),
        Err(e) => return Err(e.into()),
    };
    let now = a.at.unwrap_or_else(Utc::now);
    let done = match job::plan(m.tree(), &ask, now, &cfg.schedule)
        .map_err(|e| anyhow!("{}: {e}", root.display()))?
    {
        None => job::Done::NothingDue {
            next_due: schedule::next_due(m.tree(), now, &cfg.schedule),
        },
        Some(due) => {
            let cancel = AtomicBool::new(false);
            let bar = meter("backup", None, a.json);
            let vm = meter("verify", None, a.json);
            let outcome = job::run(
                &mut m,
                &job::Job {
                    due: due.clone(),
                    at: now,
                    config: &cfg,
                    verify: !a.no_verify,
                    cancel: &cancel,
                    backup_meter: &bar,
                    verify_meter: &vm,
                    still_ours: &|| true,
                },
            );
            bar.finish();
            vm.finish();
            job::Done::Ran {
                due,
                outcome: Box::new(outcome),
            }
        }
    };
    print_backup_done(&m.media().label, &root, &done, a.json)
}

/// Print what `backup` did on the medium `label` at `root` (made here, or by the agent), and
/// its exit status.
pub(crate) fn print_backup_done(
    label: &str,
    root: &Path,
    done: &job::Done,
    json: bool,
) -> Result<u8> {
    let (due, o) = match done {
        job::Done::NothingDue { next_due } => {
            if json {
                print_json(&serde_json::json!({ "backup": null, "next_due": next_due }))?;
            } else {
                println!(
                    "nothing due on {} until {} (use --kind to back up anyway)",
                    root.display(),
                    next_due.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
            return Ok(0);
        }
        job::Done::Ran { due, outcome } => (due, outcome),
    };
    if json {
        // The outcome's fields (backup, verify, pared_before, pared_after, …) and what was due.
        let mut v = serde_json::to_value(o)?;
        v["due"] = serde_json::to_value(due)?;
        print_json(&v)?;
    } else {
        output::print_pared(" to make room", &o.pared_before);
        if let Some(k) = o.instead_of {
            println!(
                "a {} (full) backup instead of the {k} due: the {k} had no room without paring its parent",
                o.kind
            );
        }
        if let Some(h) = &o.backup {
            output::print_backup(label, root, h, o.verify.as_ref());
        }
        output::print_pared("", &o.pared_after);
        if let Some(t @ job::TooSmall::OnlyOneFits) = &o.too_small {
            println!("warning: {t}");
        }
    }
    if let Some(f) = &o.failure {
        bail!("{}: {f}", root.display());
    }
    Ok(match (&o.backup, o.verified()) {
        (_, Some(false)) => EXIT_VERIFY_FAILED,
        (Some(h), _) if h.partial => EXIT_PROBLEMS,
        _ => 0,
    })
}

fn cmd_verify(a: VerifyArgs) -> Result<u8> {
    let root = medium_of(&a.medium)?;
    // Verification marks backups verified (a write) only on a medium proven to be ours and
    // writable; on any other (foreign, or a read-only mount) the check runs all the same and
    // its result is not recorded.
    let mut m = match Medium::open_write(&root, 3, &state_dir(None)?) {
        Ok(m) => m,
        // The agent holds it: the agent verifies, and its progress is shown here.
        Err(Error::Locked(locked)) => return held::verify(&a, &root, locked),
        Err(e @ Error::Foreign { .. }) => {
            eprintln!("trayback: {e}; verifying without recording the result");
            keys::open_read(&root)?
        }
        Err(e) if e.is_read_only() => {
            eprintln!(
                "trayback: {}: read-only; verifying without recording the result",
                root.display()
            );
            keys::open_read(&root)?
        }
        Err(e) => return Err(e.into()),
    };
    let bar = meter("verify", None, a.json);
    let which = match (a.id, a.all) {
        (_, true) => verify::Which::All,
        (Some(id), false) => verify::Which::One(id),
        (None, false) => verify::Which::Newest,
    };
    let reports = verify::verify_which(&mut m, which, a.read_all, &bar)?;
    bar.finish();
    print_verify_reports(&reports, a.json)
}

pub(crate) fn print_verify_reports(reports: &[verify::Report], json: bool) -> Result<u8> {
    if json {
        print_json(&reports)?;
    } else {
        for r in reports {
            output::print_verify(r);
        }
    }
    Ok(if reports.iter().all(|r| r.ok) {
        0
    } else {
        EXIT_VERIFY_FAILED
    })
}

fn cmd_restore(a: RestoreArgs) -> Result<u8> {
    let m = keys::open_read(&medium_of(&a.medium)?)?;
    let id = query::pick_backup(&m, a.backup, a.at)?;
    let target = match (a.to, a.in_place) {
        (Some(d), false) => Target::Dir(d),
        (None, true) => Target::InPlace,
        _ => bail!("give exactly one of --to DIR and --in-place"),
    };
    let total = m.tree().get(id).map(|r| r.bytes_total);
    let bar = meter("restore", total, a.json || a.dry_run);
    let opts = restore::Options {
        target,
        paths: a.paths,
        dry_run: a.dry_run,
        overwrite: a.overwrite,
    };
    let r = restore::restore(&m, id, &opts, &bar)?;
    if a.json {
        print_json(&r)?;
    } else {
        output::print_restore(&r);
    }
    Ok(if r.problems.is_empty() && r.kept.is_empty() {
        0
    } else {
        EXIT_PROBLEMS
    })
}
