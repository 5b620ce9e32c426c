//! Carrying out the paring plan on a medium: remove a backup, reclaim the blocks nothing
//! references any more, and make room before a backup by the plan of spec Figs. 3a/3b.
//!
//! Invariants: a backup is removed from `tree.yaml` (the commit point) before anything of it
//! is deleted; garbage collection keeps every blob any listed backup references; the parent
//! chosen for the next backup is never pared.

use crate::error::{Error, Result};
use crate::ids::{BackupId, BlockId};
use crate::listing::EntryKind;
use crate::medium::{Medium, Wait};
use crate::pare::{self, Policy, Reason};
use crate::store::GcReport;
use crate::tree::{Kind, Tree};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tracing::info;

/// One backup pared.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pared {
    pub id: BackupId,
    pub kind: Kind,
    pub started: DateTime<Utc>,
    pub reason: Reason,
}

/// Every blob (listings and data blocks) the backups in the tree reference.
pub fn live_blobs(m: &Medium) -> Result<HashSet<BlockId>> {
    let mut live = HashSet::new();
    for b in &m.tree().backups {
        let root = m.header(b.id)?.root;
        mark(m, root, &mut live)?;
    }
    Ok(live)
}

/// Mark `listing` and everything below it live. Each listing is read once however often it is
/// referenced (so a DAG of listings costs its size, not its paths), with an explicit stack (so
/// a tree of any depth costs no call frames).
fn mark(m: &Medium, listing: BlockId, live: &mut HashSet<BlockId>) -> Result<()> {
    let mut todo = vec![listing];
    while let Some(listing) = todo.pop() {
        if !live.insert(listing) {
            continue; // this directory (and all below it) is already marked
        }
        for e in m.listing(&listing)?.entries {
            live.extend(e.blocks.iter().copied());
            if let (EntryKind::Dir, Some(sub)) = (e.kind, e.subtree) {
                todo.push(sub);
            }
        }
    }
    Ok(())
}

/// Bytes the packs occupy, and bytes of the blobs still referenced (as stored).
pub fn usage(m: &Medium) -> Result<(u64, u64)> {
    let live = live_blobs(m)?;
    let packs: u64 = m.store().packs().iter().map(|p| p.len).sum();
    let live_bytes = live
        .iter()
        .filter_map(|id| m.store().locate(id))
        .map(|(_, e)| e.stored_len as u64)
        .sum();
    Ok((packs, live_bytes))
}

/// Remove one backup: out of the tree first (committed), then its header directory.
pub fn pare_one(m: &mut Medium, id: BackupId, reason: Reason) -> Result<Pared> {
    let rec = m.remove_backup(id)?;
    info!(backup = %id, kind = %rec.kind, %reason, "pared");
    Ok(Pared {
        id,
        kind: rec.kind,
        started: rec.started,
        reason,
    })
}

/// Reclaim the space of blobs no backup references, waiting for readers as `wait` says;
/// `None` if readers kept the medium (nothing reclaimed; the garbage stays for next time).
pub fn collect_garbage(m: &mut Medium, wait: Wait) -> Result<Option<GcReport>> {
    let live = live_blobs(m)?;
    let Some(r) = m.collect_garbage(&live, wait)? else {
        return Ok(None);
    };
    info!(
        packs_deleted = r.packs_deleted,
        packs_rewritten = r.packs_rewritten,
        freed = r.bytes_freed,
        "garbage collected"
    );
    Ok(Some(r))
}

/// Pare micro backups past their age (step 100), as after every backup; then reclaim space.
pub fn routine(
    m: &mut Medium,
    now: DateTime<Utc>,
    policy: &Policy,
    dry_run: bool,
) -> Result<Vec<Pared>> {
    let plan = pare::expired(m.tree(), now, policy, &[]);
    carry_out(m, plan, dry_run)
}

fn carry_out(m: &mut Medium, plan: Vec<(BackupId, Reason)>, dry_run: bool) -> Result<Vec<Pared>> {
    let mut out = Vec::new();
    for (id, reason) in plan {
        if dry_run {
            let r = m.tree().get(id).unwrap();
            out.push(Pared {
                id,
                kind: r.kind,
                started: r.started,
                reason,
            });
        } else {
            out.push(pare_one(m, id, reason)?);
        }
    }
    if !out.is_empty() && !dry_run {
        collect_garbage(m, Wait::No)?;
    }
    Ok(out)
}

/// The order in which the plan would pare, all the way down, on a copy of the tree (for
/// `trayback pare --dry-run`): step 100 first, then the flow chart.
pub fn full_plan(
    tree: &Tree,
    now: DateTime<Utc>,
    policy: &Policy,
    protect: &[BackupId],
) -> Vec<(BackupId, Reason)> {
    let mut t = tree.clone();
    let mut out = Vec::new();
    while let Ok((id, r)) = pare::next_to_pare(&t, now, policy, protect) {
        t.remove(id);
        out.push((id, r));
    }
    out
}

/// The medium is too small even after paring everything the plan allows.
#[derive(Debug, thiserror::Error)]
#[error(
    "medium too small: {needed} bytes needed, {free} free after paring all the plan allows ({})",
    pare::NothingToPare
)]
pub struct TooSmall {
    pub needed: u64,
    pub free: u64,
    /// What was pared on the way before the plan ran out.
    pub pared: Vec<Pared>,
}

/// Space kept free beyond a backup's estimate (headers, tree, pack trailers, rounding).
pub const RESERVE: u64 = 8 << 20;

/// Before a backup: make sure the medium has room for it, paring by the plan if not.
/// Cheap when space is plentiful (the last backup's full size fits); otherwise estimates the
/// backup with a stat-only walk. The parent and the latest backup are never pared here.
pub fn room_for_backup(
    m: &mut Medium,
    config: &crate::config::Config,
    parent: Option<BackupId>,
    now: DateTime<Utc>,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Result<Vec<Pared>, TooSmall>> {
    let free = m.free_space()?;
    let latest = m.tree().latest_verified().map(|b| (b.id, b.bytes_total));
    if let Some((_, total)) = latest {
        if free >= total + total / 50 + RESERVE {
            return Ok(Ok(Vec::new()));
        }
    }
    let est = crate::backup::estimate(m, config, latest.map(|l| l.0), cancel)?;
    let needed = est + est / 50 + RESERVE;
    let protect: Vec<BackupId> = parent.into_iter().chain(latest.map(|l| l.0)).collect();
    info!(estimate = est, free, "making room for a backup");
    make_room(m, needed, now, &config.pare, &protect, cancel)
}

/// Rebuild `tree.yaml` from the backup headers (`trayback repair --tree`). Verification
/// state is not in the headers, so every backup comes back unverified until verified again.
pub fn rebuild_tree(m: &mut Medium) -> Result<Vec<String>> {
    let (mut headers, mut notes) = m.headers_on_disk()?;
    headers.sort_by_key(|h| h.id);
    let ids: HashSet<BackupId> = headers.iter().map(|h| h.id).collect();
    let mut tree = Tree::default();
    for h in &headers {
        if let Some(p) = h.parent.filter(|p| !ids.contains(p)) {
            notes.push(format!(
                "backup {}: parent {p} is gone; it becomes a root",
                h.id
            ));
        }
        tree.add(crate::tree::BackupRecord {
            id: h.id,
            kind: h.kind,
            parent: h.parent.filter(|p| ids.contains(p)),
            started: h.started,
            finished: h.finished,
            verified: false,
            partial: h.partial,
            bytes_total: h.bytes.total,
            bytes_new: h.bytes.new,
            bytes_stored: h.bytes.stored,
        });
    }
    m.replace_tree(tree)?;
    notes.push(format!(
        "tree rebuilt with {} backups, all unverified: run `trayback verify --all`",
        headers.len()
    ));
    Ok(notes)
}

/// How long making room waits for readers (a restore, `ls`) to let go of the medium before
/// it gives up: space is reclaimed only while nobody reads.
pub const READERS_WAIT: Duration = Duration::from_secs(600);

/// Pare by the plan until `needed` bytes are free, reclaiming space after each pare.
pub fn make_room(
    m: &mut Medium,
    needed: u64,
    now: DateTime<Utc>,
    policy: &Policy,
    protect: &[BackupId],
    cancel: &AtomicBool,
) -> Result<Result<Vec<Pared>, TooSmall>> {
    let mut out = Vec::new();
    loop {
        let free = m.free_space()?;
        if free >= needed {
            return Ok(Ok(out));
        }
        match pare::next_to_pare(m.tree(), now, policy, protect) {
            Ok((id, reason)) => {
                out.push(pare_one(m, id, reason)?);
                if collect_garbage(m, Wait::Up(READERS_WAIT, cancel))?.is_none() {
                    return Err(Error::Refused(format!(
                        "{}: another trayback process is reading the medium; its space is reclaimed once that ends",
                        m.root().display()
                    )));
                }
            }
            Err(_) => {
                return Ok(Err(TooSmall {
                    needed,
                    free,
                    pared: out,
                }))
            }
        }
    }
}
