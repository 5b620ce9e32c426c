//! Verification (spec [0040]): read back what a backup wrote, from the device, and check
//! every block hash and every index location; name the files any damage affects.
//!
//! A backup is marked verified in the tree only when nothing was found; a backup found damaged
//! is marked unverified, so it is never chosen as a parent again.

use crate::error::{Error, Result};
use crate::ids::{BackupId, BlockId, PackId};
use crate::index;
use crate::listing::{EntryKind, Listing};
use crate::medium::Medium;
use crate::progress::Meter;
use crate::store::{Depth, PackCheck};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use tracing::{debug, info, warn};

/// One piece of damage a verify found: in what, and what is wrong.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Damage {
    pub what: DamagedPart,
    pub detail: String,
}

/// What a piece of damage is in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DamagedPart {
    /// A block (or listing) the backup needs, by id.
    Block(BlockId),
    /// A pack the backup wrote, as a whole (it does not open, or its trailer does not read).
    Pack(PackId),
    /// The listing of `/`.
    RootListing,
    /// The listing of a directory, by its path in the backup.
    Listing(String),
    /// A file whose blocks do not add up to its size, by its path in the backup.
    File(String),
    /// The index as a whole (a hostile listing, or more entries than the header counts).
    Index,
}

impl std::fmt::Display for DamagedPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DamagedPart::Block(b) => write!(f, "block {b}"),
            DamagedPart::Pack(p) => write!(f, "pack {p}"),
            DamagedPart::RootListing => f.write_str("root listing"),
            DamagedPart::Listing(path) => write!(f, "listing of {path}"),
            DamagedPart::File(path) => write!(f, "file {path}"),
            DamagedPart::Index => f.write_str("index"),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub backup: BackupId,
    pub ok: bool,
    pub read_all: bool,
    pub packs_read: u64,
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    /// Damaged or missing blocks, packs and listings.
    pub damage: Vec<Damage>,
    /// Paths (as in the backup) whose content or listing is affected.
    pub affected: Vec<String>,
}

/// Verify backup `id`. With `read_all`, every block the backup references is re-read, not only
/// those it wrote. Updates the tree's `verified` flag when the medium is open for writing.
pub fn verify(m: &mut Medium, id: BackupId, read_all: bool, meter: &Meter) -> Result<Report> {
    let header = m.header(id)?;
    m.store().close_files();
    let packs: Vec<PackId> = if read_all {
        m.store().packs().iter().map(|p| p.id).collect()
    } else {
        header.packs.clone()
    };
    if read_all {
        for p in &packs {
            m.store().drop_cached(p);
        }
    }
    // 1. Everything the backup wrote, read back from the device (packs the backup had checked
    //    as it wrote them are not read twice).
    let t0 = std::time::Instant::now();
    let mut early = m.store().pack_checks();
    let reused = header
        .packs
        .iter()
        .filter(|p| early.contains_key(p))
        .count();
    debug!(
        waited_ms = t0.elapsed().as_millis() as u64,
        reused,
        of = header.packs.len(),
        "packs checked while writing"
    );
    // With --read-all, every pack on the medium (so every block the backup references, read
    // front to back, pack by pack, and nothing need be remembered per block), each record as a
    // restore reads it (on an encrypted medium the seal alone proves the record is as written,
    // not that it decompresses to its block).
    let results: Vec<PackCheck> = packs
        .par_iter()
        .map(|p| match read_all {
            true => m.store().check_pack(p, Depth::Whole),
            false => early
                .get(p)
                .cloned()
                .unwrap_or_else(|| m.store().check_pack(p, Depth::AsWritten)),
        })
        .collect();
    early.clear();
    let mut damage = Vec::new();
    // Packs re-read whole above: each of their records is good or in `bad_blocks`. A set of
    // packs, not of blocks: at 2 000 000 blocks a set of their ids took over 100 MB.
    let mut checked_packs: HashSet<PackId> = HashSet::new();
    let mut good = 0;
    let mut bytes_checked = 0;
    // Blocks found bad, and why (good ones are not remembered: see `check_block`).
    let mut bad_blocks: HashMap<BlockId, String> = HashMap::new();
    // Bad blocks in packs other backups wrote (--read-all): this backup's damage only if it
    // references them, reported when it does.
    let mut unreported: HashSet<BlockId> = HashSet::new();
    let own: HashSet<PackId> = header.packs.iter().copied().collect();
    for (p, r) in packs.iter().zip(results) {
        good += r.good;
        if !r.damage.iter().any(|(b, _)| b.is_none()) {
            checked_packs.insert(*p);
        }
        bytes_checked += r.bytes;
        meter.add(0, r.bytes);
        for (block, detail) in r.damage {
            let what = match block {
                Some(b) => {
                    bad_blocks.insert(b, detail.clone());
                    if !own.contains(p) {
                        unreported.insert(b);
                        continue;
                    }
                    DamagedPart::Block(b)
                }
                // Another backup's pack: its blocks are read one by one below, if referenced.
                None if !own.contains(p) => continue,
                None => DamagedPart::Pack(*p),
            };
            damage.push(Damage { what, detail });
        }
    }
    debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "packs checked"
    );
    // 2. Every location the index names: present, and (read_all) readable and intact.
    let mut affected = Vec::new();
    let mut blocks_checked = good;
    // Whether block (or listing) `b` is where the index has it in a pack re-read above.
    let checked = |b: &BlockId| {
        m.store()
            .locate(b)
            .is_some_and(|(p, _)| checked_packs.contains(&p))
    };
    // Blocks this backup wrote were re-read above (with --read-all, every pack was); blocks it
    // shares with older backups were verified with those and must still be in the store —
    // unless they live in a pack a backup not marked verified wrote (its verify failed, or
    // never ran): those were never shown intact, so they are read again like its own. A
    // block indexed in a pack whose trailer did not read is read on its own (--read-all).
    let suspect = suspect_packs(m, id);
    for p in &suspect {
        m.store().drop_cached(p);
    }
    // This backup's own packs that were not checked whole (a trailer that did not read, or
    // more damaged blocks than a check lists) have their blocks read one by one too, so that
    // every file a damaged block touches is named.
    let reread = |b: &BlockId| {
        read_all
            || m.store().locate(b).is_some_and(|(p, _)| {
                suspect.contains(&p) || (own.contains(&p) && !checked_packs.contains(&p))
            })
    };
    let mut check_block = |b: &BlockId, damage: &mut Vec<Damage>| -> bool {
        if let Some(detail) = bad_blocks.get(b) {
            if unreported.remove(b) {
                damage.push(Damage {
                    what: DamagedPart::Block(*b),
                    detail: detail.clone(),
                });
            }
            return false;
        }
        let present = || {
            m.store()
                .locate(b)
                .map(|_| ())
                .ok_or(Error::MissingBlock(*b))
        };
        let result = if checked(b) || !reread(b) {
            present()
        } else {
            m.store().read(b).map(|raw| {
                meter.add(0, raw.len() as u64);
                bytes_checked += raw.len() as u64;
            })
        };
        blocks_checked += 1;
        match result {
            Ok(()) => true,
            Err(e) => {
                let detail = e.to_string();
                damage.push(Damage {
                    what: DamagedPart::Block(*b),
                    detail: detail.clone(),
                });
                bad_blocks.insert(*b, detail);
                false
            }
        }
    };
    let root_ok = m.listing(&header.root);
    if let Err(e) = &root_ok {
        damage.push(Damage {
            what: DamagedPart::RootListing,
            detail: e.to_string(),
        });
        affected.push("/".to_string());
    }
    let mut walk_damage = Vec::new();
    if let Ok(root) = root_ok {
        // Descend into the listings this backup wrote; an unchanged subtree is an older
        // backup's, verified with it (all of it with --read-all).
        // Each distinct listing is checked once: listings are content-addressed, so a
        // directory whose listing was checked already holds nothing new (a hostile DAG of
        // listings describes far more paths than it has listings). A revisit of a listing
        // with damage below it names only the directory, never the paths below it again.
        let mut seen: HashSet<BlockId> = HashSet::new();
        // Listings with damage somewhere below them (checked ones only).
        let mut damaged: HashSet<BlockId> = HashSet::new();
        seen.insert(header.root);
        let mut limit = index::Limit::of(m, &header);
        let mut w: index::Walk<BlockId> = index::Walk::new(std::path::Path::new("/"), &mut limit);
        w.enter(root, header.root);
        loop {
            let (ok, next) = match w.next_entry() {
                Ok(Some((rel, e, _))) => {
                    let mut ok = true;
                    for b in &e.blocks {
                        ok &= check_block(b, &mut damage);
                    }
                    // A restore refuses blocks that add up to more or less than the size
                    // (FORMAT.md "Listings"); the lengths are in the index, nothing is read.
                    if ok && e.kind == EntryKind::File {
                        let held = e.blocks.iter().try_fold(0u64, |sum, b| {
                            let (_, loc) = m.store().locate(b)?;
                            sum.checked_add(u64::from(loc.raw_len))
                        });
                        if held != Some(e.size) {
                            damage.push(Damage {
                                what: DamagedPart::File(rel.display().to_string()),
                                detail: format!(
                                    "its blocks hold {} bytes, its listing says {}",
                                    held.map_or("too many".into(), |n| n.to_string()),
                                    e.size
                                ),
                            });
                            ok = false;
                        }
                    }
                    meter.add(u64::from(e.kind == EntryKind::File), 0);
                    let next = match (e.kind, e.subtree) {
                        (EntryKind::Dir, Some(sub)) if !seen.insert(sub) => {
                            ok &= !damaged.contains(&sub);
                            None
                        }
                        (EntryKind::Dir, Some(sub)) => {
                            let descend = checked(&sub) || reread(&sub);
                            let before = walk_damage.len();
                            let l = subtree(m, rel, &sub, descend, &mut walk_damage)?;
                            if walk_damage.len() > before {
                                damaged.insert(sub);
                                ok = false;
                            }
                            l.map(|l| (l, sub))
                        }
                        _ => None,
                    };
                    if !ok {
                        affected.push(rel.to_string_lossy().into_owned());
                    }
                    (ok, next)
                }
                Ok(None) => break,
                // A hostile index (a bad name, more entries than the header counts) is damage:
                // the backup fails verification and is never a parent again.
                Err(err @ (Error::Hostile { .. } | Error::Damaged { .. })) => {
                    damage.push(Damage {
                        what: DamagedPart::Index,
                        detail: err.to_string(),
                    });
                    affected.push("/".to_string());
                    break;
                }
                Err(err) => return Err(err),
            };
            if !ok {
                // Every open listing has damage below it; those above one marked already
                // were marked with it.
                for id in w.open_data().rev() {
                    if !damaged.insert(*id) {
                        break;
                    }
                }
            }
            if let Some((l, sub)) = next {
                w.enter(l, sub);
            }
        }
    }
    damage.extend(walk_damage.iter().cloned());
    for d in &walk_damage {
        if let DamagedPart::Listing(p) = &d.what {
            affected.push(p.clone());
        }
    }
    affected.sort();
    affected.dedup();
    let ok = damage.is_empty() && affected.is_empty();
    meter.finish();
    if m.writable() {
        m.mark_verified(id, ok)?;
    }
    if ok {
        info!(backup = %id, blocks = blocks_checked, "backup verified");
    } else {
        warn!(backup = %id, damaged = damage.len(), files = affected.len(), "backup failed verification");
    }
    Ok(Report {
        backup: id,
        ok,
        read_all,
        packs_read: packs.len() as u64,
        blocks_checked,
        bytes_checked,
        damage,
        affected,
    })
}

/// The packs written by the backups other than `id` that are not marked verified: what they
/// hold was never shown intact (a failed verify found damage in them, or none ran).
fn suspect_packs(m: &Medium, id: BackupId) -> HashSet<PackId> {
    let mut packs = HashSet::new();
    for b in m
        .tree()
        .backups
        .iter()
        .filter(|b| !b.verified && b.id != id)
    {
        match m.header(b.id) {
            Ok(h) => packs.extend(h.packs),
            // Its packs are unknown; its own verify reports the header.
            Err(err) => warn!(backup = %b.id, cause = %err, "header unreadable"),
        }
    }
    packs
}

/// The listing of directory `rel` to descend into (`descend`), or `None`: not descending (the
/// listing must still be in the store) or unreadable, which is recorded as damage.
fn subtree(
    m: &Medium,
    rel: &std::path::Path,
    sub: &BlockId,
    descend: bool,
    damage: &mut Vec<Damage>,
) -> Result<Option<Listing>> {
    let missing = |detail: String, damage: &mut Vec<Damage>| {
        damage.push(Damage {
            what: DamagedPart::Listing(rel.display().to_string()),
            detail,
        })
    };
    if !descend {
        if m.store().locate(sub).is_none() {
            missing(Error::MissingBlock(*sub).to_string(), damage);
        }
        return Ok(None);
    }
    match m.listing(sub) {
        Ok(l) => Ok(Some(l)),
        Err(err @ (Error::MissingBlock(_) | Error::BadBlock { .. } | Error::Io { .. })) => {
            missing(err.to_string(), damage);
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// Verify every backup on the medium, oldest first.
pub fn verify_all(m: &mut Medium, read_all: bool, meter: &Meter) -> Result<Vec<Report>> {
    let ids: Vec<BackupId> = m.tree().backups.iter().map(|b| b.id).collect();
    let mut out = Vec::new();
    for id in ids {
        out.push(verify(m, id, read_all, meter)?);
    }
    Ok(out)
}

/// Which backups a `verify` command means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    /// This one.
    One(BackupId),
    /// The newest on the medium.
    Newest,
    /// Every one, oldest first.
    All,
}

/// Verify what `which` names (the CLI and the agent both run this).
pub fn verify_which(
    m: &mut Medium,
    which: Which,
    read_all: bool,
    meter: &Meter,
) -> Result<Vec<Report>> {
    let id = match which {
        Which::All => return verify_all(m, read_all, meter),
        Which::One(id) => id,
        Which::Newest => m.tree().backups.last().map(|b| b.id).ok_or_else(|| {
            Error::Refused(format!("{}: no backups on this medium", m.root().display()))
        })?,
    };
    Ok(vec![verify(m, id, read_all, meter)?])
}
