//! `trayback demo`: the main job on a built-in default. Enrols a directory medium, makes a
//! full backup of a real directory, verifies it, restores it elsewhere and compares.

use super::output::human;
use crate::backup;
use crate::compare;
use crate::config::Config;
use crate::medium::Medium;
use crate::progress::Meter;
use crate::restore::{self, Target};
use crate::tree::Kind;
use crate::verify;
use anyhow::{bail, Result};
use chrono::Utc;
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The directory to back up.
    #[arg(long, default_value = "/etc")]
    pub source: PathBuf,
    /// Where the medium and the restored copy go (emptied first).
    #[arg(long, default_value = "/tmp/trayback-demo")]
    pub workdir: PathBuf,
}

pub fn run(a: DemoArgs) -> Result<u8> {
    let source = std::path::absolute(&a.source)?;
    let medium_dir = a.workdir.join("medium");
    let restore_dir = a.workdir.join("restore");
    for d in [&medium_dir, &restore_dir] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
        std::fs::create_dir_all(d)?;
    }
    println!(
        "1. enrolling a directory medium at {}",
        medium_dir.display()
    );
    // The demo's medium key is kept beside it, not in the host's state directory.
    let state = a.workdir.join("state");
    let media = Medium::init(&medium_dir, "demo", false, Utc::now(), &state)?;
    println!("   medium {} (label {:?})", media.media_id, media.label);

    let cfg = Config::default().with_sources(vec![source.clone()])?;
    let mut m = super::open_proven(&medium_dir, cfg.compression_level, &state)?;
    let cancel = AtomicBool::new(false);
    let meter = Meter::hidden();
    println!("2. full (monthly) backup of {}", source.display());
    let t = std::time::Instant::now();
    let h = backup::run(
        &mut m,
        &backup::Request {
            kind: Kind::Monthly,
            parent: None,
            at: Utc::now(),
            config: &cfg,
            meter: &meter,
            cancel: &cancel,
            verify_after: true,
        },
    )?;
    println!(
        "   backup #{}: {} files, {} directories, {} symlinks; {} read, {} stored after dedup+zstd, {:.2}s",
        h.id, h.counts.files, h.counts.dirs, h.counts.symlinks, human(h.bytes.read), human(h.bytes.stored), t.elapsed().as_secs_f64()
    );
    for p in &h.problems {
        println!("   problem: {}: {}", p.path, p.error);
    }
    println!("3. verifying backup #{} from the medium", h.id);
    let v = verify::verify(&mut m, h.id, true, &meter)?;
    println!(
        "   {} blocks checked, {}",
        v.blocks_checked,
        if v.ok { "all good" } else { "DAMAGE FOUND" }
    );
    if !v.ok {
        bail!("verification failed: {:?}", v.damage);
    }
    println!("4. incremental (micro) backup with nothing changed");
    let h2 = backup::run(
        &mut m,
        &backup::Request {
            kind: Kind::Micro,
            parent: Some(h.id),
            at: Utc::now(),
            config: &cfg,
            meter: &meter,
            cancel: &cancel,
            verify_after: true,
        },
    )?;
    verify::verify(&mut m, h2.id, false, &meter)?;
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
