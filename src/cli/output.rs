//! Human-readable output of the CLI (JSON output is serde's).

use crate::ids::BackupId;
use crate::medium::{BackupHeader, Medium};
use crate::query::{DiffRow, LsRow, Version};
use crate::restore;
use crate::tree::Tree;
use crate::verify;
use indicatif::HumanBytes;
use std::io::Write;

pub fn human(n: u64) -> String {
    HumanBytes(n).to_string()
}

pub fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

pub fn print_media(m: &Medium) -> anyhow::Result<()> {
    println!("medium   {}", m.media().media_id);
    println!("label    {}", m.media().label.escape_debug());
    println!("host     {}", m.media().host);
    println!(
        "created  {}",
        m.media().created.format("%Y-%m-%d %H:%M:%S UTC")
    );
    println!("path     {}", m.root().display());
    println!(
        "backups  {} ({} verified)",
        m.tree().backups.len(),
        m.tree().backups.iter().filter(|b| b.verified).count()
    );
    let stored: u64 = m.store().packs().iter().map(|p| p.len).sum();
    println!(
        "store    {} in {} packs, {} blocks",
        human(stored),
        m.store().packs().len(),
        m.store().block_count()
    );
    println!("free     {}", human(m.free_space()?));
    Ok(())
}

pub fn print_list(tree: &Tree) {
    println!(
        "{:>6}  {:<7}  {:>6}  {:<20}  {:<20}  {:<8}  {:>10}  {:>10}",
        "id", "kind", "parent", "started", "finished", "verified", "size", "new"
    );
    for b in &tree.backups {
        println!(
            "{:>6}  {:<7}  {:>6}  {:<20}  {:<20}  {:<8}  {:>10}  {:>10}{}",
            b.id,
            b.kind,
            b.parent
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            b.started.format("%Y-%m-%d %H:%M:%S"),
            b.finished.format("%Y-%m-%d %H:%M:%S"),
            if b.verified { "yes" } else { "no" },
            human(b.bytes_total),
            human(b.bytes_stored),
            if b.partial { "  (partial)" } else { "" }
        );
    }
}

pub fn print_backup(m: &Medium, h: &BackupHeader, v: Option<&verify::Report>) {
    let parent = h
        .parent
        .map(|p| format!(", parent #{p}"))
        .unwrap_or_default();
    println!(
        "backup #{} ({}{}) committed on medium {:?} at {}",
        h.id,
        h.kind,
        parent,
        m.media().label,
        m.root().display()
    );
    let c = &h.counts;
    println!(
        "  files {} ({} read, {} unchanged), directories {}, symlinks {}, special {}",
        c.files, c.files_read, c.files_unchanged, c.dirs, c.symlinks, c.specials
    );
    println!(
        "  content {} covered, {} read, {} new, {} written",
        human(h.bytes.total),
        human(h.bytes.read),
        human(h.bytes.new),
        human(h.bytes.stored)
    );
    if c.sockets_skipped > 0 || c.excluded > 0 {
        println!(
            "  skipped {} sockets, excluded {} paths",
            c.sockets_skipped, c.excluded
        );
    }
    if h.partial {
        println!("  PARTIAL: {} problems:", h.problems.len());
        for p in &h.problems {
            println!("    {}: {}", p.path, p.error);
        }
    }
    match v {
        Some(r) => print_verify(r),
        None => println!("  not verified (--no-verify)"),
    }
}

pub fn print_verify(r: &verify::Report) {
    if r.ok {
        println!(
            "backup #{} verified: {} packs re-read from the medium, {} blocks checked ({})",
            r.backup,
            r.packs_read,
            r.blocks_checked,
            human(r.bytes_checked)
        );
    } else {
        println!(
            "backup #{} FAILED verification: {} damaged items",
            r.backup,
            r.damage.len()
        );
        for d in &r.damage {
            println!("  {}: {}", d.what, d.detail);
        }
        println!("  affected paths:");
        for p in &r.affected {
            println!("    {p}");
        }
    }
}

pub fn print_restore(r: &restore::Report) {
    let verb = if r.dry_run {
        "would restore"
    } else {
        "restored"
    };
    println!(
        "{verb} backup #{} to {}: {} files ({}), {} directories, {} symlinks, {} other",
        r.backup,
        r.target,
        r.files,
        human(r.bytes),
        r.dirs,
        r.links,
        r.other
    );
    for p in &r.planned {
        println!("  {p}");
    }
    for k in &r.kept {
        match k.reason {
            restore::KeptReason::Newer { kind } => {
                println!(
                    "  kept newer {} {} (--overwrite replaces it)",
                    kind_word(kind),
                    k.path
                )
            }
            restore::KeptReason::OtherKind { found, backup } => println!(
                "  kept {} {} where the backup has a {} (--overwrite replaces it)",
                found.word(),
                k.path,
                kind_word(backup)
            ),
        }
    }
    for p in &r.problems {
        println!("  problem: {p}");
    }
}

fn kind_word(k: crate::listing::EntryKind) -> &'static str {
    use crate::listing::EntryKind::*;
    match k {
        File => "file",
        Dir => "directory",
        Symlink => "symlink",
        Fifo => "FIFO",
        Char => "character device",
        Block => "block device",
    }
}

pub fn print_ls(rows: &[LsRow]) {
    for r in rows {
        let target = r
            .target
            .as_ref()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        println!(
            "{} {:>5} {:>5} {:>10} {} {:<9} {}{}",
            r.mode,
            r.uid,
            r.gid,
            r.size,
            r.mtime.format("%Y-%m-%d %H:%M:%S"),
            format!("{:?}", r.origin).to_lowercase(),
            r.path,
            target
        );
    }
}

pub fn print_versions(v: &[Version]) {
    println!(
        "{:<14} {:<20} {:>12}  {:<20}  backups",
        "content", "modified", "size", "first backed up"
    );
    for x in v {
        let ids: Vec<String> = x.backups.iter().map(|b| format!("#{b}")).collect();
        let shown = if ids.len() > 6 {
            format!(
                "{} … {} ({} backups)",
                ids[0],
                ids[ids.len() - 1],
                ids.len()
            )
        } else {
            ids.join(" ")
        };
        println!(
            "{:<14} {:<20} {:>12}  {:<20}  {}",
            x.content.chars().take(12).collect::<String>(),
            x.mtime.format("%Y-%m-%d %H:%M:%S"),
            x.size,
            x.first_seen.format("%Y-%m-%d %H:%M:%S"),
            shown
        );
    }
}

pub fn print_diff(from: BackupId, to: BackupId, rows: &[DiffRow]) {
    if rows.is_empty() {
        println!("no changes from backup #{from} to #{to}");
    }
    for r in rows {
        let c = match r.change {
            crate::query::Change::Added => '+',
            crate::query::Change::Removed => '-',
            crate::query::Change::Changed => 'M',
        };
        println!("{c} {}", r.path);
    }
}

/// One line per pared backup: `pared #ID (kind, started) WHY: reason`.
pub fn print_pared(why: &str, pared: &[crate::maintain::Pared]) {
    for p in pared {
        println!(
            "pared #{} ({}, {}){why}: {}",
            p.id,
            p.kind,
            p.started.format("%Y-%m-%d %H:%M"),
            p.reason
        );
    }
}
