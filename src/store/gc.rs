//! Garbage collection: reclaiming the space of blobs no backup lists, by deleting packs that
//! hold none that are live and rewriting the survivors of packs that hold some.
//!
//! Invariants: survivors are durable and indexed at their new places before their old pack is
//! deleted, so a crash at any point loses no live blob; a pack that cannot be read whole, or
//! whose trailer is damaged, is kept as it is; what is rewritten fits the free space.

use super::{pack, Loc, Store, PACK_TARGET};
use crate::error::{Error, Result};
use crate::ids::{BlockId, PackId};
use crate::share;
use pack::Entry;
use std::collections::{HashMap, HashSet};

impl Store {
    /// Where the blobs not in `live` are: for each pack, its live entries and its dead bytes.
    /// Reads every pack's trailer; changes nothing.
    fn survey(&self, is_live: &dyn Fn(&BlockId) -> bool) -> Result<Vec<PackSurvey>> {
        self.index_all();
        let mut unreadable: HashMap<BlockId, bool> = HashMap::new();
        let packs = self.packs.read().unwrap().clone();
        let mut out = Vec::new();
        for (n, info) in packs.iter().enumerate() {
            if !info.present {
                continue;
            }
            let (f, _) = self.open_pack(&info.id)?;
            let t = match pack::read_trailer(&self.crypt, &info.id, &f) {
                Ok(t) => t,
                Err(detail) => {
                    // Left as it is: neither deleted nor rewritten (verify reports it).
                    tracing::warn!(pack = %self.pack_path(&info.id).display(), %detail, "damaged pack trailer; garbage collection passes the pack over");
                    continue;
                }
            };
            let mut p = PackSurvey {
                n: n as u32,
                id: info.id,
                len: info.len,
                alive: Vec::new(),
                dead: 0,
            };
            for e in t.entries {
                let indexed = self.index.read().unwrap().get(&e.id);
                let here = indexed
                    .is_some_and(|l| l.pack as usize == n && u64::from(l.offset) == e.offset);
                // A live blob counts where the index has it; another copy is garbage, unless
                // the indexed copy cannot be read back whole (after a crash and a bad sector,
                // this may be the only good one). Each indexed copy is checked once.
                let mut bad_original = || {
                    *unreadable
                        .entry(e.id)
                        .or_insert_with(|| self.read(&e.id).is_err())
                };
                if is_live(&e.id) && (here || bad_original()) {
                    p.alive.push(e);
                } else {
                    p.dead += e.stored_share() + pack::RECORD_HEADER_LEN;
                }
            }
            if self.kept.lock().unwrap().contains(&p.id) {
                // Its garbage cannot be had: not counted, and the pack not tried again.
                p.dead = 0;
            }
            out.push(p);
        }
        Ok(out)
    }

    /// The medium's packs as the room plan models them ([`share::Packs`]): each live blob by
    /// its index in the plan's blob graph (`index`).
    pub fn pack_models(&self, index: &HashMap<BlockId, u32>) -> Result<Vec<share::PackModel>> {
        Ok(self
            .survey(&|id| index.contains_key(id))?
            .into_iter()
            .map(|p| share::PackModel {
                len: p.len,
                dead: p.dead,
                live: p
                    .alive
                    .iter()
                    .map(|e| (index[&e.id], e.stored_share()))
                    .collect(),
            })
            .collect())
    }

    /// Reclaim the space of blocks not in `live`: packs with no live block are deleted first
    /// (which makes room for the rest), then packs with dead blocks — mostly dead ones, or all
    /// of them, as `reclaim` says — are rewritten with their live blocks, the deadest first:
    /// the survivors are durable and indexed at their new places before their old packs are
    /// deleted, a pack's worth at a time or, when space is short, one pack at a time; a pack
    /// whose survivors do not fit in the free space is left as it is (nothing fails for it).
    pub(crate) fn collect_garbage(
        &self,
        live: &HashSet<BlockId>,
        reclaim: Reclaim,
    ) -> Result<GcReport> {
        let r = self.collect(live, reclaim);
        if r.is_err() {
            // A pack it was writing may end in half a record: never append to it again.
            self.discard_open();
        }
        r
    }

    fn collect(&self, live: &HashSet<BlockId>, reclaim: Reclaim) -> Result<GcReport> {
        let mut report = GcReport::default();
        let (dead, rewrite) = split(self.survey(&|id| live.contains(id))?, reclaim);
        for p in dead {
            // Nothing in it is live: no survivor needs to be durable first.
            self.remove_pack(&p.id)?;
            report.packs_deleted += 1;
            report.bytes_freed += p.len;
        }
        self.begin(0, pack::FLAG_GC);
        let mut batch: Vec<PackId> = Vec::new();
        let mut batch_len = 0u64;
        for p in rewrite {
            let alive_len = p.alive_len();
            let free = self.dir.free_space()?;
            // Room for what is pending, these survivors, and a margin for trailers.
            if free < batch_len + alive_len + GC_MARGIN {
                self.rewritten(&mut batch)?;
                batch_len = 0;
                if self.dir.free_space()? < alive_len + GC_MARGIN {
                    tracing::info!(pack = %p.id, "not enough free space to rewrite this pack; its garbage stays");
                    continue;
                }
            }
            let mut whole = true;
            for e in &p.alive {
                let loc = Loc::new(p.n, e).ok_or_else(|| Error::BadBlock {
                    id: e.id,
                    detail: "offset past the end of any pack".into(),
                });
                if e.encoding.inner() == pack::Encoding::Frame {
                    // A blob in a frame moves by itself: taken out of its frame (opened once
                    // for all its survivors) and written anew, into a frame of the new pack.
                    match loc.and_then(|loc| self.read_framed(e.id, loc)) {
                        Ok(raw) => self.put_moved(e.kind, e.id, &raw)?,
                        Err(cause) => {
                            tracing::warn!(pack = %p.id, %cause, "garbage collection keeps a pack it cannot read whole");
                            self.kept.lock().unwrap().insert(p.id);
                            whole = false;
                            break;
                        }
                    }
                    continue;
                }
                let payload = match loc.and_then(|loc| self.read_payload(e.id, loc)) {
                    Ok(payload) => payload,
                    Err(cause) => {
                        // Unreadable (a bad sector): keep the pack, the read may work another
                        // day; it is not tried again in this session.
                        tracing::warn!(pack = %p.id, %cause, "garbage collection keeps a pack it cannot read whole");
                        self.kept.lock().unwrap().insert(p.id);
                        whole = false;
                        break;
                    }
                };
                if let Err(detail) = pack::decode(&self.crypt, e, &payload) {
                    // Damaged already: its bytes move as they are, nothing of it is lost
                    // that was not lost before (verify reports it either way).
                    tracing::warn!(pack = %p.id, block = %e.id, %detail, "garbage collection moves a damaged block as it is");
                }
                self.append(e.id, e.kind, e.encoding, e.raw_len, &payload, false)?;
            }
            batch_len += alive_len;
            if !whole {
                continue;
            }
            batch.push(p.id);
            report.packs_rewritten += 1;
            report.bytes_freed += p.dead;
            if batch_len >= PACK_TARGET || free < 2 * (batch_len + GC_MARGIN) {
                self.rewritten(&mut batch)?;
                batch_len = 0;
            }
        }
        self.rewritten(&mut batch)?;
        Ok(report)
    }

    /// The survivors of the packs in `batch` are written: make them durable (and indexed at
    /// their new places), then delete the old packs.
    fn rewritten(&self, batch: &mut Vec<PackId>) -> Result<()> {
        self.flush()?;
        for id in batch.drain(..) {
            // `remove_pack` fsyncs the pack's directory.
            self.remove_pack(&id)?;
        }
        Ok(())
    }
}

/// Free space garbage collection keeps beyond the survivors it writes (pack headers and
/// trailers, the file system's own blocks).
pub const GC_MARGIN: u64 = 1 << 20;

/// One pack as garbage collection sees it.
struct PackSurvey {
    n: u32,
    id: PackId,
    len: u64,
    alive: Vec<Entry>,
    dead: u64,
}

impl PackSurvey {
    /// What writing its survivors anew takes: their bytes, record headers and trailer entries.
    fn alive_len(&self) -> u64 {
        self.alive
            .iter()
            .map(|e| e.stored_share() + SURVIVOR_OVERHEAD)
            .sum()
    }
}

/// What a blob costs in a pack beyond its stored bytes: its record header and trailer entry
/// (at most; a blob in a frame shares its frame's header).
pub const SURVIVOR_OVERHEAD: u64 = pack::RECORD_HEADER_LEN + pack::TRAILER_ENTRY_LEN_FRAMED as u64;

/// The packs garbage collection deletes whole, and those it rewrites as `reclaim` says in the
/// order it rewrites them: deadest first, the most space back for the least copying.
fn split(packs: Vec<PackSurvey>, reclaim: Reclaim) -> (Vec<PackSurvey>, Vec<PackSurvey>) {
    let (dead, rest): (Vec<_>, Vec<_>) = packs.into_iter().partition(|p| p.alive.is_empty());
    let mut rewrite: Vec<_> = rest
        .into_iter()
        .filter(|p| reclaim.rewrites(p.dead, p.len))
        .collect();
    share::sort_deadest_first(&mut rewrite, |p| (p.dead, p.len));
    (dead, rewrite)
}

/// How much garbage collection reclaims from packs that hold live blocks too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reclaim {
    /// Rewrite only packs more than a quarter dead: after routine paring, where copying live
    /// blocks to free a little is not worth it.
    Mostly,
    /// Rewrite every pack with a dead block: when making room, so a pare frees all that the
    /// room plan counted on.
    All,
}

impl Reclaim {
    fn rewrites(self, dead: u64, len: u64) -> bool {
        match self {
            Reclaim::Mostly => dead * 4 > len,
            Reclaim::All => dead > 0,
        }
    }
}

/// What garbage collection reclaimed.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub bytes_freed: u64,
}
