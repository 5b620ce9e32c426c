//! Writing blobs into packs: a writing session (a backup's, or garbage collection's) appends
//! each new blob to the open pack of its kind, closes a pack once it is full
//! ([`PackWriter::is_full`]), and makes it visible only once it is complete, fsync'd and
//! renamed into `packs/`.
//!
//! Invariants: a blob is written once per medium (deduplicated against the index and the
//! blobs pending in open packs); a pack left open by a failed session is dropped, never
//! appended to; `abort` deletes every pack of the session (nothing committed refers to them).

use super::MAX_BLOCK;
use super::{check::Checker, check_pack, pack, pack_rel, CheckFn, PackInfo, Store};
use crate::error::{Error, Result};
use crate::ids::{BlockId, PackId};
use pack::frame::{self, FRAME_TARGET};
use pack::{BlobKind, Encoding, PackWriter};
use rustc_hash::FxHashSet;

/// The state of the current writing session.
pub(super) struct Writing {
    pub(super) backup: u64,
    pub(super) flags: u32,
    /// The open pack for each blob kind: data blocks and listings go to separate packs, so a
    /// backup's index reads back as a few compact packs.
    pub(super) current: [Option<(PackWriter, String)>; 2],
    /// On a medium with frames: for each blob kind, the blobs waiting to be compressed
    /// together as the next frame, and their bytes (FORMAT.md "Frames").
    pub(super) frames: [NextFrame; 2],
    pub(super) pending: FxHashSet<BlockId>,
    pub(super) written: Vec<PackId>,
    pub(super) stats: WriteStats,
    /// Check each closed pack in the background ([`Store::check_packs_as_written`]).
    pub(super) check_packs: bool,
    pub(super) checker: Option<Checker>,
    /// How the checker checks a pack: [`check_pack`] (tests put a failing device in between).
    pub(super) check: CheckFn,
}

impl Writing {
    pub(super) fn new() -> Writing {
        Writing {
            backup: 0,
            flags: 0,
            current: [None, None],
            frames: Default::default(),
            pending: FxHashSet::default(),
            written: Vec::new(),
            stats: WriteStats::default(),
            check_packs: false,
            checker: None,
            check: check_pack,
        }
    }
}

/// The blobs gathered for the next frame of a kind, and their bytes.
#[derive(Default)]
pub(super) struct NextFrame {
    /// Each blob's id and length, in order.
    ids: Vec<(BlockId, u32)>,
    /// The blobs, concatenated.
    data: Vec<u8>,
}

/// What a writing session added to the store.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteStats {
    pub blocks: u64,
    pub bytes_raw: u64,
    pub bytes_stored: u64,
}

/// The footer flags of a pack for blob kind `slot`: listing packs say so.
fn slot_flags(flags: u32, slot: usize) -> u32 {
    if slot == BlobKind::Listing as usize {
        flags | pack::FLAG_LISTINGS
    } else {
        flags
    }
}

impl Store {
    /// Start a writing session for backup `backup` (0 with `FLAG_GC` for garbage collection).
    /// A pack left open by a session that failed is dropped first: after an error its last
    /// record may be half written, and nothing may be appended after it.
    pub(crate) fn begin(&self, backup: u64, flags: u32) {
        self.discard_open();
        let mut w = self.writing.lock().unwrap();
        w.backup = backup;
        w.flags = flags;
        w.written.clear();
        w.stats = WriteStats::default();
    }

    /// Store `raw` unless a block with its id is already there; returns its id.
    pub(crate) fn put(&self, kind: BlobKind, raw: &[u8]) -> Result<BlockId> {
        let id = self.crypt.block_id(raw);
        self.put_with_id(kind, id, raw)?;
        Ok(id)
    }

    /// As [`Store::put`] with the id already computed. Returns whether it was new.
    pub(crate) fn put_with_id(&self, kind: BlobKind, id: BlockId, raw: &[u8]) -> Result<bool> {
        // Never write what a reader would refuse (FORMAT.md caps a blob's length by kind).
        pack::check_raw_len(kind, raw.len() as u64).map_err(Error::Refused)?;
        // Listings live in listing packs, which are always indexed: looking one up never
        // needs the data packs' trailers.
        let stored = match kind {
            BlobKind::Listing => self.index.read().unwrap().contains_key(&id),
            BlobKind::Data => self.contains(&id),
        };
        if stored || self.writing.lock().unwrap().pending.contains(&id) {
            return Ok(false);
        }
        self.backlog.wait_until_small();
        let (enc, payload) = if self.in_frames(kind, raw) {
            if !pack::incompressible(raw) {
                return self.put_in_frame(kind, id, raw);
            }
            pack::encode_raw(&self.crypt, &id, kind, raw)
        } else {
            pack::encode(&self.crypt, &id, kind, raw, self.level)
        };
        self.append(id, kind, enc, raw.len() as u32, &payload, true)
    }

    /// Whether `raw` goes into a frame unless it is incompressible: data blocks on a medium
    /// with frames. Listings stay records of their own: a no-change backup, `ls` and `diff`
    /// read many of them one by one, and a frame each would cost its whole content in memory
    /// on every reading thread (they are a small part of a medium's bytes).
    fn in_frames(&self, kind: BlobKind, raw: &[u8]) -> bool {
        self.framed && kind == BlobKind::Data && raw.len() <= MAX_BLOCK
    }

    /// Write blob `id` again (garbage collection moving it out of a frame), whether or not
    /// the index has it: into a frame on a medium with frames, else as a record of its own.
    pub(super) fn put_moved(&self, kind: BlobKind, id: BlockId, raw: &[u8]) -> Result<()> {
        if self.in_frames(kind, raw) && !pack::incompressible(raw) {
            self.put_in_frame(kind, id, raw)?;
        } else {
            let (enc, payload) = pack::encode(&self.crypt, &id, kind, raw, self.level);
            self.append(id, kind, enc, raw.len() as u32, &payload, true)?;
        }
        Ok(())
    }

    /// Add a blob to the next frame of its kind; once that holds [`FRAME_TARGET`] bytes (or
    /// as many blobs as a frame may),
    /// compress it (outside the lock: other threads go on meanwhile) and append it.
    fn put_in_frame(&self, kind: BlobKind, id: BlockId, raw: &[u8]) -> Result<bool> {
        let full = {
            let mut w = self.writing.lock().unwrap();
            if !w.pending.insert(id) {
                return Ok(false);
            }
            let next = &mut w.frames[kind as usize];
            next.ids.push((id, raw.len() as u32));
            next.data.extend_from_slice(raw);
            let full = next.data.len() >= FRAME_TARGET
                || next.ids.len() >= frame::FRAME_MAX_MEMBERS as usize;
            full.then(|| std::mem::take(next))
        };
        if let Some(next) = full {
            self.write_frame(kind, next)?;
        }
        Ok(true)
    }

    /// Compress `blobs` (already `pending`) as one frame and append it; if that would not be
    /// smaller, each as a record of its own.
    fn write_frame(&self, kind: BlobKind, next: NextFrame) -> Result<()> {
        if next.ids.is_empty() {
            return Ok(());
        }
        let NextFrame { ids, data } = next;
        let content = frame::content(ids.iter().map(|(_, n)| *n), data);
        let blob_ids: Vec<BlockId> = ids.iter().map(|(id, _)| *id).collect();
        let Some(f) = frame::encode(&self.crypt, kind, &blob_ids, &content, self.level) else {
            for ((id, _), raw) in ids.iter().zip(frame::blobs(&content)) {
                let (enc, payload) = pack::encode(&self.crypt, id, kind, raw, self.level);
                self.append(*id, kind, enc, raw.len() as u32, &payload, false)?;
            }
            return Ok(());
        };
        drop(content);
        let mut w = self.writing.lock().unwrap();
        let slot = kind as usize;
        self.open_pack_for(&mut w, slot)?;
        let (pw, tmp) = w.current[slot].as_mut().unwrap();
        pw.append_frame(kind, &ids, &f)
            .map_err(|e| self.dir.err(tmp, e))?;
        w.stats.blocks += ids.len() as u64;
        w.stats.bytes_raw += ids.iter().map(|(_, n)| u64::from(*n)).sum::<u64>();
        w.stats.bytes_stored += f.payload.len() as u64;
        self.close_if_full(w, slot)
    }

    /// Open a pack for blob kind `slot` if none is open.
    fn open_pack_for(&self, w: &mut Writing, slot: usize) -> Result<()> {
        if w.current[slot].is_none() {
            let pid = PackId::random();
            let tmp = format!("tmp/{pid}.pack");
            let file = self.dir.create_new(&tmp)?;
            let pw = PackWriter::new(pid, file, &self.crypt, self.framed)
                .map_err(|e| self.dir.err(&tmp, e))?;
            w.current[slot] = Some((pw, tmp));
        }
        Ok(())
    }

    /// Finish (fsync) the pack of `slot` if it is full ([`PackWriter::is_full`]), without
    /// holding the lock: the other threads go on compressing into a new pack meanwhile.
    fn close_if_full(&self, mut w: std::sync::MutexGuard<'_, Writing>, slot: usize) -> Result<()> {
        if w.current[slot].as_ref().is_some_and(|(pw, _)| pw.is_full()) {
            let closing = w.current[slot].take();
            let (backup, flags) = (w.backup, slot_flags(w.flags, slot));
            drop(w);
            self.close_pack(closing, backup, flags)?;
        }
        Ok(())
    }

    pub(super) fn append(
        &self,
        id: BlockId,
        kind: BlobKind,
        enc: Encoding,
        raw_len: u32,
        payload: &[u8],
        dedup: bool,
    ) -> Result<bool> {
        let mut w = self.writing.lock().unwrap();
        if dedup && w.pending.contains(&id) {
            return Ok(false);
        }
        let slot = kind as usize;
        self.open_pack_for(&mut w, slot)?;
        let (pw, tmp) = w.current[slot].as_mut().unwrap();
        pw.append(id, kind, enc, raw_len, payload)
            .map_err(|e| self.dir.err(tmp, e))?;
        w.pending.insert(id);
        w.stats.blocks += 1;
        w.stats.bytes_raw += raw_len as u64;
        w.stats.bytes_stored += payload.len() as u64;
        self.close_if_full(w, slot)?;
        Ok(true)
    }

    /// Finish a pack: trailer and footer, fsync, rename into `packs/`, fsync the directory,
    /// then index it. Its blobs stay `pending` (deduplicated against) until they are indexed.
    fn close_pack(
        &self,
        closing: Option<(PackWriter, String)>,
        backup: u64,
        flags: u32,
    ) -> Result<()> {
        let Some((pw, tmp)) = closing else {
            return Ok(());
        };
        let (pid, entries, len) = match pw.finish(backup, flags) {
            Ok(v) => v,
            Err(e) => {
                let _ = self.dir.remove_file(&tmp);
                return Err(self.dir.err(&tmp, e));
            }
        };
        let dest = pack_rel(&pid);
        let sub = dest.rsplit_once('/').unwrap().0;
        let placed = (|| {
            self.dir.mkdir(sub)?;
            // `rename` fsyncs packs/<xx>/ once the pack is in it.
            let r = self.dir.rename(&tmp, &dest);
            if self.dir.exists(&dest).unwrap_or(true) {
                // From here on the pack is in packs/: `abort` must know of it even if the
                // directory's fsync failed.
                self.writing.lock().unwrap().written.push(pid);
            }
            r
        })();
        if let Err(e) = placed {
            let _ = self.dir.remove_file(&tmp);
            return Err(e);
        }
        self.register(
            PackInfo {
                id: pid,
                writer: backup,
                flags,
                len,
                present: true,
            },
            &entries,
        );
        let mut w = self.writing.lock().unwrap();
        for e in &entries {
            w.pending.remove(&e.id);
        }
        if let Some(checker) = w.checker.as_ref().filter(|_| w.check_packs) {
            self.backlog.add(1);
            if checker.send.send(pid).is_err() {
                // The checker is gone; the verify will read this pack itself.
                self.backlog.add(-1);
            }
        }
        Ok(())
    }

    /// Close the open packs, if any; returns every pack this session wrote and its totals.
    pub(crate) fn flush(&self) -> Result<(Vec<PackId>, WriteStats)> {
        // The last packs are left to the verify, which checks them in parallel; the checker
        // thread would take them one after the other.
        self.writing.lock().unwrap().check_packs = false;
        // The frames not yet full go out first, into the packs about to close.
        for kind in [BlobKind::Data, BlobKind::Listing] {
            let next = std::mem::take(&mut self.writing.lock().unwrap().frames[kind as usize]);
            self.write_frame(kind, next)?;
        }
        // (Order does not matter for safety: nothing refers to these blobs until the commit.)
        for slot in [BlobKind::Data as usize, BlobKind::Listing as usize] {
            let (closing, backup, flags) = {
                let mut w = self.writing.lock().unwrap();
                (w.current[slot].take(), w.backup, slot_flags(w.flags, slot))
            };
            self.close_pack(closing, backup, flags)?;
        }
        let w = self.writing.lock().unwrap();
        Ok((w.written.clone(), w.stats))
    }

    /// Undo an unfinished writing session: drop the open pack and delete the packs it
    /// closed. Only for sessions whose blocks nothing committed refers to (a failed backup).
    pub(crate) fn abort(&self) {
        // Stop checking what is about to be deleted.
        drop(self.pack_checks());
        self.discard_open();
        let written = std::mem::take(&mut self.writing.lock().unwrap().written);
        for id in written {
            if let Err(e) = self.remove_pack(&id) {
                tracing::warn!(pack = %id, cause = %e, "cannot remove pack of a failed backup; recovery will");
            }
        }
    }

    /// Drop the packs still open for writing (and their files in `tmp/`), and forget what
    /// they were to hold; packs already closed stay.
    pub(super) fn discard_open(&self) {
        let mut w = self.writing.lock().unwrap();
        for slot in &mut w.current {
            if let Some((pw, tmp)) = slot.take() {
                drop(pw);
                let _ = self.dir.remove_file(&tmp);
            }
        }
        w.frames = Default::default();
        w.pending.clear();
    }
}
