//! The planning commands: `due`, `pare`, `simulate` and `repair`.

use super::output::{human, print_json};
use super::{load_config, medium_of, parse_time};
use crate::config::parse_duration;
use crate::error::Error;
use crate::maintain;
use crate::medium::Medium;
use crate::schedule;
use crate::simulate::{self, Event, Model};
use crate::tree::Kind;
use anyhow::{bail, Result};
use chrono::{DateTime, Duration, Utc};
use clap::Args;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

#[derive(Args, Debug)]
pub struct DueArgs {
    #[arg(long)]
    /// The medium (default: the one inserted, as the agent reports).
    pub medium: Option<PathBuf>,
    #[arg(long, value_parser = parse_time)]
    pub at: Option<DateTime<Utc>>,
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn due(a: DueArgs) -> Result<u8> {
    let cfg = load_config(a.config.as_deref(), &[])?;
    let m = super::keys::open_read(&medium_of(&a.medium)?)?;
    let now = a.at.unwrap_or_else(Utc::now);
    let due = schedule::due(m.tree(), now, &cfg.schedule);
    let next = schedule::next_due(m.tree(), now, &cfg.schedule);
    if a.json {
        print_json(&serde_json::json!({ "at": now, "due": due, "next_due": next }))?;
    } else {
        match due {
            Some(d) => println!(
                "{} backup due at {} ({}), parent {}",
                d.kind,
                now.format("%Y-%m-%d %H:%M:%S UTC"),
                serde_json::to_value(d.why)?
                    .as_str()
                    .unwrap_or_default()
                    .replace('_', " "),
                d.parent
                    .map(|p| format!("#{p}"))
                    .unwrap_or_else(|| "none (full backup)".into())
            ),
            None => println!(
                "nothing due at {}; next at {}",
                now.format("%Y-%m-%d %H:%M:%S UTC"),
                next.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        }
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct PareArgs {
    #[arg(long)]
    /// The medium (default: the one inserted, as the agent reports).
    pub medium: Option<PathBuf>,
    /// Show what the plan deletes, in order, and the flow-chart step behind each.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_parser = parse_time)]
    pub at: Option<DateTime<Utc>>,
    /// Pare by the room plan until this many bytes are free (500G, 500GB, 2TiB, …).
    #[arg(long, value_parser = crate::size::parse_arg)]
    pub free: Option<u64>,
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn pare(a: PareArgs) -> Result<u8> {
    let cfg = load_config(a.config.as_deref(), &[])?;
    let now = a.at.unwrap_or_else(Utc::now);
    let root = medium_of(&a.medium)?;
    // One plan for the dry run and the real run (maintain::plan_pare, the room plan of
    // `backup`): the dry run prints the value, the real run carries it out as it is.
    if !a.dry_run {
        let mut m = match Medium::open_write(&root, cfg.compression_level, &cfg.agent.state_dir) {
            Ok(m) => m,
            // The agent holds it: the agent pares it, by the same plan.
            Err(Error::Locked(locked)) => return super::held::pare(&a, &root, locked),
            Err(e) => return Err(e.into()),
        };
        let done = maintain::pare(&mut m, now, &cfg, a.free, &AtomicBool::new(false))?;
        return print_pare_done(&root, &done, a.json);
    }
    // A reader's view (no lock): a medium the agent holds is planned here all the same.
    let m = super::keys::open_read(&root)?;
    let plan = maintain::plan_pare(&m, now, &cfg, a.free)?;
    if a.json {
        print_json(&serde_json::json!({
            "now": plan.routine,
            "to_free": plan.room,
            "when_space_is_needed": maintain::order_when_needed(&m, now, &cfg)?,
        }))?;
    } else {
        print_plan(&plan);
        println!("then, as space is needed, in this order (the flow chart alone):");
        for (i, v) in maintain::order_when_needed(&m, now, &cfg)?
            .iter()
            .enumerate()
        {
            println!(
                "  {:>3}. #{} {} {}  {}",
                i + 1,
                v.id,
                v.kind,
                v.started.format("%Y-%m-%d %H:%M"),
                v.reason
            );
        }
    }
    too_small(&root, &plan)
}

/// Print what `pare` did on the medium at `root` (here, or by the agent); its exit status.
pub(super) fn print_pare_done(root: &Path, done: &maintain::PareDone, json: bool) -> Result<u8> {
    if json {
        print_json(done)?;
    } else {
        super::output::print_pared("", &done.pared);
        println!(
            "{} pared; {} free",
            done.pared.len(),
            human(done.free_bytes)
        );
    }
    too_small(root, &done.plan)
}

/// A room plan that could not free enough fails the command (after what it printed).
fn too_small(root: &Path, plan: &maintain::ParePlan) -> Result<u8> {
    if let Some(e) = plan.room.as_ref().and_then(|r| r.too_small.as_ref()) {
        bail!("{}: {e}; nothing pared to make room", root.display());
    }
    Ok(0)
}

fn print_plan(plan: &maintain::ParePlan) {
    println!("pared now, by age ({}):", plan.routine.len());
    for p in &plan.routine {
        println!(
            "  #{} {} {}  {}",
            p.id,
            p.kind,
            p.started.format("%Y-%m-%d %H:%M"),
            p.reason
        );
    }
    let Some(room) = &plan.room else { return };
    println!(
        "to have {} free ({} free now, after the above):",
        human(room.needed),
        human(room.free)
    );
    for v in &room.victims {
        println!(
            "  #{} {} {}  frees {}  {}",
            v.id,
            v.kind,
            v.started.format("%Y-%m-%d %H:%M"),
            human(v.freed),
            v.reason
        );
    }
    for (id, why) in &room.skipped {
        println!(
            "  (passed over #{id}: {})",
            serde_json::to_value(why)
                .ok()
                .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                .unwrap_or_default()
        );
    }
    if let Some(t) = &room.too_small {
        println!("  {t}; nothing pared to make room");
    }
}

#[derive(Args, Debug)]
pub struct SimulateArgs {
    #[arg(long)]
    pub days: u32,
    #[arg(long, value_parser = parse_time)]
    pub start: Option<DateTime<Utc>>,
    #[arg(long, value_parser = parse_duration_arg)]
    pub micro_interval: Option<Duration>,
    /// The medium's capacity (3TB, 500GB: powers of 10; 3T, 2TiB: powers of 2).
    #[arg(long, value_parser = crate::size::parse_arg, default_value = "2T")]
    pub capacity: u64,
    /// Size of a full (monthly) backup.
    #[arg(long, value_parser = crate::size::parse_arg)]
    pub full_size: Option<u64>,
    /// Take the full size and the change sizes from this medium's own backups ([0055]);
    /// --full-size and --change-size override what it measures.
    #[arg(long)]
    pub from_medium: Option<PathBuf>,
    /// KIND=BYTES: bytes changed over a weekly, daily or micro interval (repeatable).
    #[arg(long = "change-size", value_parser = parse_change)]
    pub change: Vec<(Kind, u64)>,
    /// Never pare, as spec Table 1 assumes (what does not fit fails).
    #[arg(long)]
    pub no_pare: bool,
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// One JSON object per event, then the summary.
    #[arg(long)]
    pub json: bool,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn parse_change(s: &str) -> Result<(Kind, u64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KIND=BYTES"))?;
    let kind: Kind = k.parse()?;
    if kind.is_full() {
        return Err("the size of a monthly is --full-size".into());
    }
    Ok((kind, crate::size::parse(v)?))
}

pub fn simulate(a: SimulateArgs) -> Result<u8> {
    let cfg = load_config(a.config.as_deref(), &[])?;
    let mut sched = cfg.schedule.clone();
    if let Some(mi) = a.micro_interval {
        sched.micro_interval = mi;
    }
    let mut note = String::new();
    let measured = match &a.from_medium {
        Some(dir) => {
            let m = super::keys::open_read(dir)?;
            let h = crate::sizing::history(&m, &sched)?;
            note = format!(
                "measured on {}: {} backups over {}, a full backup {}; changes: micro {}, daily {}, weekly {}",
                dir.display(),
                m.tree().backups.len(),
                h.span_days
                    .map(|d| format!("{d:.1} days"))
                    .unwrap_or_else(|| "no time".into()),
                human(h.full_size),
                human(h.change[&Kind::Micro]),
                human(h.change[&Kind::Daily]),
                human(h.change[&Kind::Weekly]),
            );
            Some(h)
        }
        None => None,
    };
    let full_size = a
        .full_size
        .or(measured.as_ref().map(|h| h.full_size))
        .unwrap_or(500 << 30);
    // Default change sizes: a micro 1/5000 of the full backup, a daily 1/200, a weekly 1/50.
    let mut change: HashMap<Kind, u64> = match &measured {
        Some(h) => h.change.clone(),
        None => [
            (Kind::Micro, full_size / 5000),
            (Kind::Daily, full_size / 200),
            (Kind::Weekly, full_size / 50),
        ]
        .into(),
    };
    change.extend(a.change.iter().copied());
    let model = Model {
        capacity: a.capacity,
        full_size,
        change,
        keep_all: a.no_pare,
    };
    let start = a.start.unwrap_or_else(|| {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    });
    let end = start
        .checked_add_signed(Duration::days(a.days as i64))
        .filter(|e| *e <= crate::tree::latest())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--days {}: the simulation would end after the year 9999",
                a.days
            )
        })?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Some(h) = measured.as_ref().filter(|_| a.json) {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({ "event": "measured", "history": h }),
        )?;
        writeln!(out)?;
    } else if !note.is_empty() {
        writeln!(out, "{note}")?;
    }
    let mut err = None;
    let mut emit = |e: &Event| {
        let r = if a.json {
            serde_json::to_writer(&mut out, e)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
        } else {
            match e {
                Event::Created {
                    seq,
                    id,
                    kind,
                    parent,
                    time,
                    size,
                } => writeln!(
                    out,
                    "{} created #{id} {kind} parent {} ({}) [seq {seq}]",
                    time.format("%Y-%m-%d %H:%M"),
                    parent
                        .map(|p| format!("#{p}"))
                        .unwrap_or_else(|| "-".into()),
                    human(*size)
                ),
                Event::Pared {
                    id,
                    kind,
                    reason,
                    time,
                    freed,
                } => writeln!(
                    out,
                    "{} pared   #{id} {kind}{}: {reason}",
                    time.format("%Y-%m-%d %H:%M"),
                    freed
                        .map(|f| format!(" (frees {})", human(f)))
                        .unwrap_or_default()
                ),
                Event::Failed {
                    kind,
                    time,
                    needed,
                    free,
                    could_free,
                } => writeln!(
                    out,
                    "{} FAILED  {kind}: needs {}, {} free, paring all the plan allows would free {}; nothing pared",
                    time.format("%Y-%m-%d %H:%M"),
                    human(*needed),
                    human(*free),
                    human(*could_free)
                ),
            }
        };
        if let Err(e) = r {
            err.get_or_insert(e);
        }
    };
    let summary = simulate::run(&model, &sched, &cfg.pare, start, end, &mut emit);
    if let Some(e) = err {
        return Err(e.into());
    }
    if a.json {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({ "event": "summary", "summary": summary }),
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "summary after {} days: {} created, {} pared, {} failed",
            a.days, summary.created, summary.pared, summary.failed
        )?;
        if summary.broken > 0 {
            writeln!(
                out,
                "  BROKEN: {} times the newest backup could not be restored in full",
                summary.broken
            )?;
        }
        for (k, s) in &summary.at_end {
            writeln!(
                out,
                "  {:<8} {:>5}   oldest {}",
                k.to_string(),
                s.count,
                s.oldest
                    .map(|o| o.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "-".into())
            )?;
        }
        writeln!(
            out,
            "  used {} of {} at the end; peak {}",
            human(summary.used_at_end),
            human(summary.capacity),
            human(summary.peak_used)
        )?;
    }
    out.flush()?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    #[arg(long)]
    /// The medium (default: the one inserted, as the agent reports).
    pub medium: Option<PathBuf>,
    /// Rebuild tree.yaml from the backup headers.
    #[arg(long)]
    pub tree: bool,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn repair(a: RepairArgs) -> Result<u8> {
    if !a.tree {
        bail!("say what to repair (--tree)");
    }
    let root = medium_of(&a.medium)?;
    let state = super::state_dir(a.config.as_deref())?;
    let notes = match maintain::repair_tree(&root, &state) {
        Ok(notes) => notes,
        // The agent holds it: the agent lets go of it, repairs it, and takes it back.
        Err(Error::Locked(locked)) => super::held::repair(&root, locked)?,
        Err(e) => return Err(e.into()),
    };
    for n in notes {
        println!("{n}");
    }
    Ok(0)
}
