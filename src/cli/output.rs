//! Human-readable output of the CLI (JSON output is serde's).

use crate::medium::{BackupHeader, Medium};
use crate::query::{DiffRow, LsRow, Version};
use crate::restore;
use crate::tree::Tree;
use crate::verify;
use indicatif::HumanBytes;
use std::io::Write;
use std::path::Path;

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
        "format   tree format {} ({})",
        m.tree().format,
        m.tree().format.meaning()
    );
    match &m.media().encryption {
        Some(e) => println!(
            "records  encrypted (XChaCha20-Poly1305); key slots: {}",
            e.keys
                .iter()
                .map(|k| format!("{:?}", k.slot).to_lowercase())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => println!("records  plaintext"),
    }
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

pub fn print_backup(label: &str, root: &Path, h: &BackupHeader, v: Option<&verify::Report>) {
    let parent = h
        .parent
        .map(|p| format!(", parent #{p}"))
        .unwrap_or_default();
    println!(
        "backup #{} ({}{}) committed on medium {:?} at {}",
        h.id,
        h.kind,
        parent,
        label,
        root.display()
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
        let all = (h.problems.len() as u64).saturating_add(h.problems_unlisted);
        println!("  PARTIAL: {all} problems:");
        for p in &h.problems {
            println!("    {}: {}", p.path, p.error);
        }
        if h.problems_unlisted > 0 {
            println!("    and {} more (each is in the log)", h.problems_unlisted);
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

/// Print rows as a walk produces them (`ls -r`, `diff` of a large or hostile index): each
/// row is written when `walk` gives it, so memory does not grow with the output; `--json`
/// prints one array incrementally. An error writing stdout (a closed pipe) stops the walk and
/// is returned as itself. Returns how many rows were printed.
pub fn stream_rows<T: serde::Serialize>(
    json: bool,
    text: fn(&mut dyn Write, &T) -> std::io::Result<()>,
    walk: impl FnOnce(&mut dyn FnMut(T) -> crate::error::Result<()>) -> crate::error::Result<()>,
) -> anyhow::Result<u64> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut n = 0u64;
    let mut failed: Option<std::io::Error> = None;
    let walked = walk(&mut |row: T| {
        let written = (|| -> std::io::Result<()> {
            if json {
                out.write_all(if n == 0 { b"[\n" } else { b",\n" })?;
                serde_json::to_writer_pretty(&mut out, &row)?;
            } else {
                text(&mut out, &row)?;
            }
            Ok(())
        })();
        n += 1;
        written.map_err(|e| {
            failed = Some(e);
            crate::error::Error::Refused("output closed".into())
        })
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    // Rows printed before a damaged listing was found stay printed; the error follows them.
    out.flush()?;
    walked?;
    if json {
        out.write_all(if n == 0 { b"[]\n" } else { b"\n]\n" })?;
    }
    out.flush()?;
    Ok(n)
}

pub fn write_ls(out: &mut dyn Write, r: &LsRow) -> std::io::Result<()> {
    let target = r
        .target
        .as_ref()
        .map(|t| format!(" -> {t}"))
        .unwrap_or_default();
    writeln!(
        out,
        "{} {:>5} {:>5} {:>10} {} {:<9} {}{}",
        r.mode,
        r.uid,
        r.gid,
        r.size,
        r.mtime.format("%Y-%m-%d %H:%M:%S"),
        format!("{:?}", r.origin).to_lowercase(),
        r.path,
        target
    )
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

pub fn write_diff(out: &mut dyn Write, r: &DiffRow) -> std::io::Result<()> {
    let c = match r.change {
        crate::query::Change::Added => '+',
        crate::query::Change::Removed => '-',
        crate::query::Change::Changed => 'M',
    };
    writeln!(out, "{c} {}", r.path)
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

/// How far back each kind will reach ([`crate::sizing::Reach`]), indented by `indent`.
pub fn print_reach(r: &crate::sizing::Reach, indent: &str) {
    println!(
        "{indent}at this medium's change rate, after half a year (the simulation's span), history reaches back:"
    );
    for (k, days) in &r.days {
        match days {
            Some(d) => println!("{indent}  {k:<8} {d:>6.1} days"),
            None => println!("{indent}  {k:<8}      -"),
        }
    }
    if r.failed > 0 {
        println!(
            "{indent}  ({} backups would not fit: the medium is too small for this rate)",
            r.failed
        );
    }
}
