//! Carrying out the paring plan on a medium: remove a backup, reclaim the blocks nothing
//! references any more, and make room before a backup by the room plan ([`pare::plan_room`],
//! spec Figs. 3a/3b), with the bytes each pare frees measured from the medium's index
//! ([`sharing`]) before anything is pared.
//!
//! Invariants: a backup is removed from `tree.yaml` (the commit point) before anything of it
//! is deleted; garbage collection keeps every blob any listed backup references; what
//! [`pare::protected`] names (the parent chosen for the next backup, the newest verified
//! backup, the newest verified full) is never pared; a room plan that cannot free enough pares
//! nothing; `pare --dry-run` and `pare` compute the same [`ParePlan`].

use crate::error::{Error, Result};
use crate::ids::{BackupId, BlockId};
use crate::listing::EntryKind;
use crate::medium::{Medium, Wait};
use crate::pare::{self, Freed, Policy, Reason, RoomFor, RoomPlan};
use crate::schedule::Due;
use crate::share::{self, OnMedium, Packs, Sharing};
use crate::store::pack::RECORD_HEADER_LEN;
use crate::store::{GcReport, Reclaim, GC_MARGIN, SURVIVOR_OVERHEAD};
use crate::tree::{BackupRecord, Kind, Tree};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
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
    /// The bytes the room plan reckoned paring it frees (`None`: pared by age, step 100,
    /// which is retention and not measured).
    #[serde(default)]
    pub freed: Option<u64>,
}

impl Pared {
    /// Backup `r`, pared (or to be pared) for `reason`; `freed` unmeasured.
    pub fn new(r: &BackupRecord, reason: Reason) -> Pared {
        Pared {
            id: r.id,
            kind: r.kind,
            started: r.started,
            reason,
            freed: None,
        }
    }
}

/// The reference counts of every blob the medium's backups use, for the room plan: one pass
/// over the distinct listings (each read once, an explicit stack).
pub fn sharing(m: &Medium) -> Result<Sharing> {
    let mut g = share::Builder::default();
    let size = |id: &BlockId| m.store().locate(id).map_or(0, |(_, e)| e.stored_share());
    let mut todo: Vec<(BlockId, u32)> = Vec::new();
    for b in &m.tree().backups {
        let root = m.header(b.id)?.root;
        let ri = g.intern(root, size(&root));
        g.add_root(b.id, ri);
        todo.push((root, ri));
        while let Some((listing, li)) = todo.pop() {
            if g.has_listing(li) {
                continue; // this directory (and all below it) is already counted
            }
            let mut children = Vec::new();
            for e in m.listing(&listing)?.entries {
                for blk in &e.blocks {
                    children.push(g.intern(*blk, size(blk)));
                }
                if let (EntryKind::Dir, Some(sub)) = (e.kind, e.subtree) {
                    let si = g.intern(sub, size(&sub));
                    children.push(si);
                    todo.push((sub, si));
                }
            }
            g.add_listing(li, children);
        }
    }
    Ok(g.finish())
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
        .map(|(_, e)| e.stored_share())
        .sum();
    Ok((packs, live_bytes))
}

/// Remove one backup: out of the tree first (committed), then its header directory.
pub fn pare_one(m: &mut Medium, id: BackupId, reason: Reason) -> Result<Pared> {
    let rec = m.remove_backup(id)?;
    info!(backup = %id, kind = %rec.kind, %reason, "pared");
    Ok(Pared::new(&rec, reason))
}

/// Reclaim the space of blobs no backup references, waiting for readers as `wait` says and
/// rewriting packs as `reclaim` says; `None` if readers kept the medium (nothing reclaimed;
/// the garbage stays for next time).
pub fn collect_garbage(m: &mut Medium, wait: Wait, reclaim: Reclaim) -> Result<Option<GcReport>> {
    let live = live_blobs(m)?;
    let Some(r) = m.collect_garbage(&live, wait, reclaim)? else {
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
    let plan = pare::retention(m.tree(), now, policy);
    carry_out(m, plan, dry_run)
}

fn carry_out(m: &mut Medium, plan: Vec<(BackupId, Reason)>, dry_run: bool) -> Result<Vec<Pared>> {
    let mut out = Vec::new();
    for (id, reason) in plan {
        if dry_run {
            let r = m.tree().get(id).ok_or(Error::NoSuchBackup(id))?;
            out.push(Pared::new(r, reason));
        } else {
            out.push(pare_one(m, id, reason)?);
        }
    }
    if !out.is_empty() && !dry_run {
        collect_garbage(m, Wait::No, Reclaim::Mostly)?;
    }
    Ok(out)
}

/// The medium is too small even after all the plan allows: the notice, and what earlier
/// rounds pared when garbage collection reclaimed less than the plan reckoned.
#[derive(Debug, thiserror::Error)]
#[error("{notice}; {}", match pared.len() {
    0 => "nothing was pared to make room".to_string(),
    n => format!("{n} backups were pared before garbage collection reclaimed less than the plan reckoned"),
})]
pub struct TooSmall {
    pub notice: pare::TooSmall,
    pub pared: Vec<Pared>,
}

/// Space kept free beyond a backup's estimate (headers, tree, pack trailers, rounding).
pub const RESERVE: u64 = 8 << 20;

/// Nothing measured: for plans that need to pare nothing (enough is free already), so the
/// index is not read when space is plentiful.
struct Unneeded;
impl Freed for Unneeded {
    fn freed(&self, _: &[BackupId], _: BackupId) -> u64 {
        0
    }
}

/// The room plan on a medium (issue 10): what making room for the backup due (`kind` on
/// `parent`) pares to have `needed` bytes free, and whether a full is made instead
/// ([`pare::plan_backup`]; `job::run`, so `backup`, the agent and `demo`). `pare [--dry-run]
/// --free` comes to the same [`pare::plan_room`] through [`plan_pare`]. Reads the medium
/// (listings, free space) and changes nothing.
pub fn plan_room(
    m: &Medium,
    needed: u64,
    kind: Kind,
    parent: Option<BackupId>,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<RoomFor> {
    let free = m.free_space()?;
    let plan = |free: u64, f: &dyn Freed| {
        pare::plan_backup(m.tree(), now, policy, kind, parent, needed, free, f)
    };
    if free >= needed {
        return Ok(plan(free, &Unneeded));
    }
    let (g, packs) = room_model(m, free)?;
    let f = OnMedium {
        g: &g,
        packs: &packs,
    };
    Ok(plan(free.saturating_add(f.reclaimed(&[])), &f))
}

/// The room plan's model of a medium: its blob graph and its packs, so that what paring a
/// backup frees is what garbage collection then reclaims ([`OnMedium`]) — garbage already in
/// the packs counts as free, a pack that cannot be rewritten for want of space frees nothing.
fn room_model(m: &Medium, free: u64) -> Result<(Sharing, Packs)> {
    let g = sharing(m)?;
    let index: HashMap<BlockId, u32> = g.blobs().map(|(i, id)| (*id, i)).collect();
    let packs = Packs {
        packs: m.store().pack_models(&index)?,
        free,
        margin: GC_MARGIN,
        overhead: RECORD_HEADER_LEN,
        survivor: SURVIVOR_OVERHEAD,
    };
    Ok((g, packs))
}

/// How a backup's room is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizing {
    /// The last backup's full size when that much is free (no walk of the sources); else as
    /// [`Sizing::Walk`].
    Cheap,
    /// A stat-only walk of the sources: what the backup will add.
    Walk,
}

/// Before a backup: how many bytes it needs free. Cheap when space is plentiful (the last
/// backup's full size fits); otherwise estimates the backup with a stat-only walk.
pub fn needed_for_backup(
    m: &Medium,
    config: &crate::config::Config,
    cancel: &AtomicBool,
    sizing: Sizing,
) -> Result<u64> {
    let latest = m.tree().latest_verified().map(|b| (b.id, b.bytes_total));
    let with_margin = |n: u64| n.saturating_add(n / 50).saturating_add(RESERVE);
    if let (Some((_, total)), Sizing::Cheap) = (latest, sizing) {
        if m.free_space()? >= with_margin(total) {
            return Ok(with_margin(total));
        }
    }
    let est = crate::backup::estimate(m, config, latest.map(|l| l.0), cancel)?;
    info!(estimate = est, "making room for a backup");
    Ok(with_margin(est))
}

/// Before a backup: make sure the medium has room for it, paring by the room plan if not;
/// what was pared and the backup to make (the one due, or a full instead).
pub fn room_for_backup(
    m: &mut Medium,
    config: &crate::config::Config,
    due: &Due,
    now: DateTime<Utc>,
    cancel: &AtomicBool,
    sizing: Sizing,
) -> std::result::Result<Result<Room, TooSmall>, Interrupted> {
    let needed = needed_for_backup(m, config, cancel, sizing).map_err(|cause| Interrupted {
        cause,
        pared: Vec::new(),
    })?;
    make_room(m, needed, due, now, &config.pare, cancel)
}

/// Rebuild `tree.yaml` from the backup headers (`trayback repair --tree`). Verification
/// state is not in the headers, so every backup comes back unverified until verified again.
pub fn rebuild_tree(m: &mut Medium) -> Result<Vec<String>> {
    use crate::tree::TreeFormat;
    // A tree of a later trayback's format is left alone: this one would rewrite it in a format
    // that trayback's backups do not fit.
    let claimed = m.claimed_tree_format();
    if let Some(found) = claimed.filter(|f| f > TreeFormat::NUMBERS.end()) {
        return Err(Error::Version {
            path: m.tree_path(),
            found,
            supported: TreeFormat::NUMBERS,
        });
    }
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
    // A medium keeps its format for life (FORMAT.md "The tree"). The first readable root
    // listing says whether its backups cut content into fixed blocks (format 1) or not;
    // within that, the format the old tree claims is kept, else packs written before frames
    // say 2 and none say 3.
    let listing = headers.iter().find_map(|h| m.listing(&h.root).ok());
    let fixed = listing
        .as_ref()
        .map(|l| l.format == crate::listing::LISTING_FORMAT_FIXED);
    let claimed = claimed.and_then(TreeFormat::from_number);
    let (format, why) = match (fixed, claimed) {
        (Some(true), _) => (
            TreeFormat::Fixed,
            "its backups' listings are of fixed blocks",
        ),
        (Some(false), Some(f)) if !f.fixed_blocks() => (f, "as the old tree said"),
        (None, Some(f)) => (f, "as the old tree said"),
        _ if m.store().has_unframed_packs() => (
            TreeFormat::Cdc,
            "its packs are of the versions before frames; a medium of fixed blocks whose tree \
             and listings are both lost cannot be told from it",
        ),
        _ => (TreeFormat::NEWEST, "the newest"),
    };
    tree.format = format;
    notes.push(format!("tree format {format} ({why})"));
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

/// What `trayback pare` does, as a value: micro backups past their age (step 100), then, when
/// asked for free space, the room plan on what is left (the dry run prints exactly this).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParePlan {
    pub routine: Vec<Pared>,
    pub room: Option<RoomPlan>,
}

/// A [`Freed`] for the tree after some backups are gone already.
struct After<'a> {
    before: &'a [BackupId],
    f: &'a dyn Freed,
}

impl Freed for After<'_> {
    fn freed(&self, gone: &[BackupId], id: BackupId) -> u64 {
        let all: Vec<BackupId> = self.before.iter().chain(gone).copied().collect();
        self.f.freed(&all, id)
    }
}

/// Plan `trayback pare [--free N]` at `now`; the protect set is the one of a backup due now.
pub fn plan_pare(
    m: &Medium,
    now: DateTime<Utc>,
    config: &crate::config::Config,
    want_free: Option<u64>,
) -> Result<ParePlan> {
    let policy = &config.pare;
    let tree = m.tree();
    let expired = pare::retention(tree, now, policy);
    let routine: Vec<Pared> = expired
        .iter()
        .map(|(id, reason)| {
            let r = tree.get(*id).expect("expired backups are in the tree");
            Pared::new(r, *reason)
        })
        .collect();
    let Some(needed) = want_free else {
        return Ok(ParePlan {
            routine,
            room: None,
        });
    };
    let mut after = tree.clone();
    for (id, _) in &expired {
        after.remove(*id);
    }
    let parent = crate::schedule::due(&after, now, &config.schedule).and_then(|d| d.parent);
    let protect = pare::protected(&after, parent);
    // The real run opens the medium for writing, so recovery has removed any leftovers.
    let free = m.free_space()?.saturating_add(m.leftover_bytes()?);
    let room = if free >= needed {
        pare::plan_room(&after, now, policy, &protect, needed, free, &Unneeded)
    } else {
        let (g, packs) = room_model(m, free)?;
        let on = OnMedium {
            g: &g,
            packs: &packs,
        };
        let ids: Vec<BackupId> = expired.iter().map(|e| e.0).collect();
        // Garbage already there, and what the routine's pares free.
        let aged = on.reclaimed(&ids);
        let f = After {
            before: &ids,
            f: &on,
        };
        pare::plan_room(
            &after,
            now,
            policy,
            &protect,
            needed,
            free.saturating_add(aged),
            &f,
        )
    };
    Ok(ParePlan {
        routine,
        room: Some(room),
    })
}

/// The flow chart's order all the way down, after the routine, with the room plan's protect
/// set but without measuring what each frees (`pare --dry-run` without `--free`).
pub fn order_when_needed(
    m: &Medium,
    now: DateTime<Utc>,
    config: &crate::config::Config,
) -> Result<Vec<Pared>> {
    let mut t = m.tree().clone();
    for (id, _) in pare::retention(&t, now, &config.pare) {
        t.remove(id);
    }
    let parent = crate::schedule::due(&t, now, &config.schedule).and_then(|d| d.parent);
    let mut skip = pare::protected(&t, parent);
    let mut out = Vec::new();
    while let Ok((id, reason)) = pare::next_to_pare(&t, now, &config.pare, &skip) {
        skip.push(id);
        let r = t
            .get(id)
            .expect("the chart chooses backups in the tree")
            .clone();
        if r.kind.is_full() && t.children(id).next().is_some() {
            continue;
        }
        t.remove(id);
        out.push(Pared::new(&r, reason));
    }
    Ok(out)
}

/// Carry out a [`ParePlan`] as it is (nothing re-planned, so it does what the dry run showed);
/// a room plan that cannot free enough pares nothing beyond the routine.
pub fn carry_out_pare(m: &mut Medium, plan: &ParePlan, cancel: &AtomicBool) -> Result<Vec<Pared>> {
    let mut out = Vec::new();
    for p in &plan.routine {
        out.push(pare_one(m, p.id, p.reason)?);
    }
    let mut for_room = false;
    if let Some(room) = plan.room.as_ref().filter(|r| r.too_small.is_none()) {
        for v in &room.victims {
            let mut p = pare_one(m, v.id, v.reason)?;
            p.freed = Some(v.freed);
            out.push(p);
            for_room = true;
        }
    }
    let asked = plan.room.as_ref().filter(|r| r.too_small.is_none());
    if for_room || asked.is_some_and(|r| m.free_space().is_ok_and(|f| f < r.needed)) {
        // Space was asked for (the plan may count on garbage already there alone).
        reclaim_for_room(m, cancel)?;
    } else if !out.is_empty() {
        collect_garbage(m, Wait::No, Reclaim::Mostly)?;
    }
    Ok(out)
}

/// What `trayback pare` did: the backups pared, the space free after, the plan carried out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PareDone {
    pub pared: Vec<Pared>,
    pub free_bytes: u64,
    pub plan: ParePlan,
}

/// `trayback pare [--free N]` (the CLI, and the agent for a medium it holds): plan at `now`,
/// then carry the plan out as it is.
pub fn pare(
    m: &mut Medium,
    now: DateTime<Utc>,
    config: &crate::config::Config,
    want_free: Option<u64>,
    cancel: &AtomicBool,
) -> Result<PareDone> {
    let plan = plan_pare(m, now, config, want_free)?;
    let pared = carry_out_pare(m, &plan, cancel)?;
    Ok(PareDone {
        pared,
        free_bytes: m.free_space()?,
        plan,
    })
}

/// `trayback repair --tree` (the CLI, and the agent for a medium it holds): open the medium
/// for repair (proven and locked, no recovery) and rebuild its tree from the headers.
pub fn repair_tree(root: &std::path::Path, state_dir: &std::path::Path) -> Result<Vec<String>> {
    let mut m = Medium::open_for_repair(root, state_dir)?;
    rebuild_tree(&mut m)
}

/// Reclaim every dead blob to make room, waiting for readers as long as making room does.
fn reclaim_for_room(m: &mut Medium, cancel: &AtomicBool) -> Result<()> {
    match collect_garbage(m, Wait::Up(READERS_WAIT, cancel), Reclaim::All)? {
        Some(_) => Ok(()),
        None => Err(Error::ReadersBusy(m.root().to_path_buf())),
    }
}

/// Garbage collection when making room reclaims every dead blob, but the file system may give
/// back a little less than the plan reckoned (pack trailers, rounding to its blocks): then the
/// plan is made again from what is free, at most this many times.
const ROUNDS: usize = 4;

/// What making room did: the backups pared, and the backup to make.
#[derive(Clone, Debug)]
pub struct Room {
    pub pared: Vec<Pared>,
    /// The backup due, or a full made instead (its `why` is the due one's).
    pub make: Due,
    /// The incremental kind that was due, when a full is made instead.
    pub instead_of: Option<Kind>,
}

/// Making room failed part-way (an I/O error, readers that stayed): the cause, and what was
/// pared before it (committed: the outcome reports it).
#[derive(Debug, thiserror::Error)]
#[error("{cause}")]
pub struct Interrupted {
    pub cause: Error,
    pub pared: Vec<Pared>,
}

/// Make `needed` bytes free for the backup `due` by the room plan: plan the whole sequence,
/// carry it out, reclaim. When the plan cannot free enough, nothing is pared and the notice
/// comes back.
pub fn make_room(
    m: &mut Medium,
    needed: u64,
    due: &Due,
    now: DateTime<Utc>,
    policy: &Policy,
    cancel: &AtomicBool,
) -> std::result::Result<Result<Room, TooSmall>, Interrupted> {
    let mut room = Room {
        pared: Vec::new(),
        make: due.clone(),
        instead_of: None,
    };
    match rounds(m, needed, now, policy, cancel, &mut room) {
        Ok(Ok(())) => Ok(Ok(room)),
        Ok(Err(notice)) => Ok(Err(TooSmall {
            notice,
            pared: room.pared,
        })),
        Err(cause) => Err(Interrupted {
            cause,
            pared: room.pared,
        }),
    }
}

/// The rounds of [`make_room`]: plan, pare, reclaim, until `needed` is free.
fn rounds(
    m: &mut Medium,
    needed: u64,
    now: DateTime<Utc>,
    policy: &Policy,
    cancel: &AtomicBool,
    room: &mut Room,
) -> Result<std::result::Result<(), pare::TooSmall>> {
    for _ in 0..ROUNDS {
        let r = plan_room(m, needed, room.make.kind, room.make.parent, now, policy)?;
        if let Some(notice) = r.plan.too_small {
            return Ok(Err(notice));
        }
        if r.instead_of.is_some() {
            room.instead_of = r.instead_of;
            room.make.kind = r.kind;
            room.make.parent = r.parent;
        }
        if r.plan.victims.is_empty() && m.free_space()? >= needed {
            return Ok(Ok(()));
        }
        for v in r.plan.victims {
            let mut p = pare_one(m, v.id, v.reason)?;
            p.freed = Some(v.freed);
            room.pared.push(p);
        }
        reclaim_for_room(m, cancel)?;
        if m.free_space()? >= needed {
            return Ok(Ok(()));
        }
    }
    Ok(Err(pare::TooSmall {
        needed,
        free: m.free_space()?,
        could_free: 0,
        why: pare::NothingToPare::Step142,
    }))
}
