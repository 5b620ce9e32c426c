//! `trayback demo`: the main job on a built-in default. Enrols a directory medium, makes a
//! full backup of a real directory, verifies it, restores it elsewhere and compares.

use super::output::human;
use crate::compare;
use crate::config::Config;
use crate::ids::BackupId;
use crate::job;
use crate::medium::Medium;
use crate::progress::Meter;
use crate::restore::{self, Target};
use crate::schedule::{Due, Why};
use crate::tree::Kind;
use anyhow::{anyhow, bail, Result};
use chrono::Utc;
use clap::Args;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The directory to back up.
    #[arg(long, default_value = "/etc")]
    pub source: PathBuf,
    /// Where the medium and the restored copy go: a new private directory (default: a fresh
    /// one under the temporary directory). An existing one must be an empty real directory.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
}

/// A private (0700) working directory that nobody else could have prepared: a fresh one, or
/// the operator's, which must be missing or an empty real directory (never a symlink).
fn private_workdir(dir: Option<&Path>) -> Result<PathBuf> {
    let Some(dir) = dir else {
        return Ok(tempfile::Builder::new()
            .prefix("trayback-demo-")
            .tempdir()?
            .keep());
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().mode(0o700).create(dir)?;
        }
        Err(e) => return Err(e.into()),
        Ok(m) if !m.is_dir() => bail!("{}: not a directory (or a symlink)", dir.display()),
        Ok(_) => {
            if std::fs::read_dir(dir)?.next().is_some() {
                bail!(
                    "{}: not empty; give a new or empty directory",
                    dir.display()
                );
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(dir.to_path_buf())
}

pub fn run(a: DemoArgs) -> Result<u8> {
    let source = std::path::absolute(&a.source)?;
    let workdir = private_workdir(a.workdir.as_deref())?;
    let medium_dir = workdir.join("medium");
    let restore_dir = workdir.join("restore");
    for d in [&medium_dir, &restore_dir] {
        std::fs::create_dir(d)?;
    }
    println!(
        "1. enrolling a directory medium at {}",
        medium_dir.display()
    );
    // The demo's medium key is kept beside it, not in the host's state directory.
    let state = workdir.join("state");
    let cfg = Config::builtin()?.with_sources(vec![source.clone()])?;
    let media = Medium::init(
        &medium_dir,
        crate::medium::Enrolment {
            label: "demo",
            force: false,
            now: Utc::now(),
            state_dir: &state,
            protection: crate::medium::Protection::Encrypted { passphrase: None },
            tree_format: cfg.tree_format,
        },
    )?
    .media;
    println!("   medium {} (label {:?})", media.media_id, media.label);

    let mut m = Medium::open_write(&medium_dir, cfg.compression_level, &state)?;
    let cancel = AtomicBool::new(false);
    let meter = Meter::hidden();
    let job = |m: &mut Medium, kind: Kind, parent: Option<BackupId>| {
        let o = job::run(
            m,
            &job::Job {
                due: Due {
                    kind,
                    parent,
                    why: Why::Requested,
                },
                at: Utc::now(),
                config: &cfg,
                verify: true,
                cancel: &cancel,
                backup_meter: &meter,
                verify_meter: &meter,
                still_ours: &|| true,
            },
        );
        match (o.failure, o.backup, o.verify) {
            (Some(f), _, _) => Err(anyhow!("{f}")),
            (None, Some(h), Some(v)) => Ok((h, v)),
            _ => Err(anyhow!("the job made no verified backup")),
        }
    };
    println!(
        "2. full (monthly) backup of {}, verified from the medium",
        source.display()
    );
    let t = std::time::Instant::now();
    let (h, v) = job(&mut m, Kind::Monthly, None)?;
    println!(
        "   backup #{}: {} files, {} directories, {} symlinks; {} read, {} stored after dedup+zstd, {:.2}s",
        h.id, h.counts.files, h.counts.dirs, h.counts.symlinks, human(h.bytes.read), human(h.bytes.stored), t.elapsed().as_secs_f64()
    );
    for p in &h.problems {
        println!("   problem: {}: {}", p.path, p.error);
    }
    println!(
        "3. verification of backup #{}: {} blocks checked, {}",
        h.id,
        v.blocks_checked,
        if v.ok { "all good" } else { "DAMAGE FOUND" }
    );
    if !v.ok {
        bail!("verification failed: {:?}", v.damage);
    }
    println!("4. incremental (micro) backup with nothing changed");
    let (h2, _) = job(&mut m, Kind::Micro, Some(h.id))?;
    println!(
        "   backup #{}: {} files unchanged, {} new",
        h2.id,
        h2.counts.files_unchanged,
        human(h2.bytes.stored)
    );
    println!(
        "5. restoring backup #{} to {}",
        h2.id,
        restore_dir.display()
    );
    let opts = restore::Options {
        target: Target::Dir(restore_dir.clone()),
        paths: vec![],
        dry_run: false,
        overwrite: false,
    };
    let r = restore::restore(&m, h2.id, &opts, &meter)?;
    println!(
        "   {} files ({}), {} directories",
        r.files,
        human(r.bytes),
        r.dirs
    );
    let restored = restore_dir.join(source.strip_prefix("/").unwrap_or(&source));
    println!(
        "6. comparing {} with {}",
        source.display(),
        restored.display()
    );
    let diffs = compare::trees(&source, &restored, compare::Options::default());
    if diffs.is_empty() && !h.partial {
        println!("   identical: content, modes, owners, times, xattrs and links");
        println!(
            "done: medium at {}, restored copy at {}",
            medium_dir.display(),
            restore_dir.display()
        );
        Ok(0)
    } else {
        for d in diffs.iter().take(20) {
            println!("   differs: {d}");
        }
        println!(
            "   {} differences (files changing under the backup show up here)",
            diffs.len()
        );
        Ok(super::EXIT_PROBLEMS)
    }
}
