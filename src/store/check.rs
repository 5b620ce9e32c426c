//! Re-reading packs from the device: [`check_pack_as`] for `verify`, and the checker threads
//! that re-read each pack a backup closes while the backup goes on (the verify after it then
//! only collects their results).
//!
//! Invariants: a check reads the device, not the page cache (the pack is fsync'd first, its
//! pages dropped, then read with `O_DIRECT` where the file system allows), one record in memory
//! at a time; writers wait while more than [`MAX_UNCHECKED`] closed packs wait for their check.

use super::{pack, pack_rel, Store};
use crate::crypt::Crypt;
use crate::fsio;
use crate::ids::{BlockId, PackId};
use crate::medium::beneath::Beneath;
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

pub type CheckFn = fn(&Beneath, &Crypt, &PackId) -> PackCheck;

/// Threads that re-read closed packs from the device while the backup goes on: one per core,
/// so that when writers wait for the checks (see [`Backlog`]) every core checks.
pub(super) struct Checker {
    pub(super) send: std::sync::mpsc::Sender<PackId>,
    threads: Vec<std::thread::JoinHandle<HashMap<PackId, PackCheck>>>,
}

/// How many closed packs wait for their check. Writers wait while it is above
/// [`MAX_UNCHECKED`]: on a busy machine the checker would otherwise fall ever further behind
/// and its work would all be left for after the backup.
#[derive(Default)]
pub(super) struct Backlog {
    packs: Mutex<usize>,
    shrunk: std::sync::Condvar,
}

const MAX_UNCHECKED: usize = 2;

impl Backlog {
    pub(super) fn add(&self, n: isize) {
        let mut p = self.packs.lock().unwrap();
        *p = p.saturating_add_signed(n);
        self.shrunk.notify_all();
    }

    pub(super) fn wait_until_small(&self) {
        let p = self.packs.lock().unwrap();
        let _p = self.shrunk.wait_while(p, |p| *p > MAX_UNCHECKED).unwrap();
    }
}

impl Checker {
    /// `None` if no thread could be started (the verify then reads every pack itself).
    fn start(
        dir: Arc<Beneath>,
        crypt: Crypt,
        backlog: Arc<Backlog>,
        check: CheckFn,
    ) -> Option<Checker> {
        let (send, recv) = std::sync::mpsc::channel::<PackId>();
        let recv = Arc::new(Mutex::new(recv));
        let n = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(4);
        let threads = (0..n)
            .filter_map(|i| {
                let (dir, backlog, recv) = (dir.clone(), backlog.clone(), recv.clone());
                let crypt = crypt.clone();
                std::thread::Builder::new()
                    .name(format!("pack-check-{i}"))
                    .spawn(move || {
                        let mut out = HashMap::new();
                        loop {
                            let next = recv.lock().unwrap().recv();
                            let Ok(id) = next else { break };
                            let r = std::panic::catch_unwind(|| check(&dir, &crypt, &id))
                                .unwrap_or_else(|_| PackCheck {
                                    damage: vec![(None, "checking the pack failed".into())],
                                    ..PackCheck::default()
                                });
                            out.insert(id, r);
                            backlog.add(-1);
                        }
                        out
                    })
                    .ok()
            })
            .collect::<Vec<_>>();
        (!threads.is_empty()).then_some(Checker { send, threads })
    }

    fn finish(self) -> HashMap<PackId, PackCheck> {
        drop(self.send);
        let mut all = HashMap::new();
        for t in self.threads {
            all.extend(t.join().unwrap_or_default());
        }
        all
    }
}

/// What re-reading one pack from the device found.
#[derive(Clone, Debug, Default)]
pub struct PackCheck {
    /// How many blocks' content matched their id (every other block of a pack whose trailer
    /// reads is in `damage`, up to [`MAX_BLOCKS_LISTED`]).
    pub good: u64,
    /// Bytes of the pack file.
    pub bytes: u64,
    /// Each problem: with the block it concerns, or `None` for the pack as a whole. At most
    /// [`MAX_BLOCKS_LISTED`] blocks; past them the pack as a whole is damaged.
    pub damage: Vec<(Option<BlockId>, String)>,
    /// Damaged blocks past the [`MAX_BLOCKS_LISTED`] listed.
    unlisted: u64,
}

/// The most damaged blocks a pack's check lists one by one. A pack of small blobs in frames
/// holds up to ~98 000 (a crafted one up to [`pack::MAX_PACK_RECORDS`]), and a list of each
/// with its detail took ~400 bytes a blob (verify of four crafted packs: 2 GiB); past this
/// many, the pack is reported damaged as a whole and a verify reads the blocks it needs from
/// it one by one (`verify::verify`: a backup's own packs, and every pack with `--read-all`).
pub(crate) const MAX_BLOCKS_LISTED: usize = 1000;

impl PackCheck {
    /// Note block `id` as damaged, for `detail`.
    fn damaged(&mut self, id: BlockId, detail: &str) {
        if self.damage.len() < MAX_BLOCKS_LISTED {
            self.damage.push((Some(id), detail.to_string()));
        } else {
            self.unlisted += 1;
        }
    }

    /// Close the list: one entry for the pack as a whole if records went unlisted.
    fn finish(mut self) -> PackCheck {
        if self.unlisted > 0 {
            let more = format!(
                "{} more damaged blocks than the {MAX_BLOCKS_LISTED} listed",
                self.unlisted
            );
            self.damage.push((None, more));
        }
        self
    }
}

/// Re-read and check every record of pack `id` from the device (not the page cache):
/// trailer and footer, each record header against the trailer, each payload decoded and
/// hashed. Records are streamed front to back, one in memory at a time.
pub fn check_pack(dir: &Beneath, crypt: &Crypt, id: &PackId) -> PackCheck {
    check_pack_as(dir, crypt, id, Depth::AsWritten)
}

/// How far [`check_pack_as`] checks a record on an encrypted medium.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Its seal authenticates: the medium returns exactly what the writer sealed (the check
    /// after writing).
    AsWritten,
    /// Opened, decompressed and compared with its id, as a restore reads it (`--read-all`).
    Whole,
}

/// [`check_pack`] to `depth` (a plaintext record is always decoded and hashed).
pub fn check_pack_as(dir: &Beneath, crypt: &Crypt, id: &PackId, depth: Depth) -> PackCheck {
    let mut out = PackCheck::default();
    let rel = pack_rel(id);
    let opened = dir
        .open_file(&rel)
        .and_then(|plain| Ok((dir.open_direct(&rel)?, plain)));
    let (direct, f) = match opened {
        Ok(f) => f,
        Err(e) => {
            out.damage.push((None, format!("cannot open: {e}")));
            return out;
        }
    };
    out.bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
    // The pack was fsync'd: forget its cached pages, so the trailer comes from the device too.
    fsio::drop_cache(&f);
    let trailer = match pack::read_trailer(crypt, id, &f) {
        Ok(t) => t,
        Err(detail) => {
            out.damage
                .push((None, format!("{}: {detail}", dir.shown(&rel).display())));
            return out;
        }
    };
    let mut r = fsio::DeviceReader::new(direct, f);
    let mut pos = 0u64;
    let mut head = [0u8; pack::RECORD_HEADER_LEN as usize];
    let mut payload = Vec::new();
    let mut i = 0;
    while i < trailer.entries.len() {
        let e = &trailer.entries[i];
        // A frame's blobs are consecutive entries naming it: it is read and opened once, and
        // every blob in it is checked against its id (at either depth).
        let n = trailer.entries[i..]
            .iter()
            .take_while(|f| f.offset == e.offset)
            .count();
        let blobs = &trailer.entries[i..i + n];
        i += n;
        let framed = e.encoding.inner() == pack::Encoding::Frame;
        let want = if framed {
            pack::frame::record_of(e, pack::frame::frame_id(crypt, blobs.iter().map(|b| &b.id)))
        } else {
            *e
        };
        let start = e.offset - pack::RECORD_HEADER_LEN;
        let read = (|| -> std::io::Result<()> {
            if start != pos {
                r.seek_to(start)?;
            }
            r.read_exact(&mut head)?;
            payload.resize(e.stored_len as usize, 0);
            r.read_exact(&mut payload)
        })();
        pos = e.offset + e.stored_len as u64;
        let mut damaged = |detail: String| {
            for b in blobs {
                out.damaged(b.id, &detail);
            }
        };
        if let Err(err) = read {
            damaged(format!("cannot read from pack {id}: {err}"));
            pos = u64::MAX;
            continue;
        }
        if pack::parse_record_header(&head, e.offset) != Some(want) {
            damaged(format!(
                "record header in pack {id} does not match the trailer"
            ));
            continue;
        }
        if framed && crypt.is_sealed() && depth == Depth::AsWritten {
            // As a sealed blob record: the tag proves the medium returns exactly what the
            // writer sealed (the trailer's MAC, each blob's place in it).
            match pack::frame::authentic(crypt, &want, &payload) {
                Ok(()) => out.good += blobs.len() as u64,
                Err(detail) => damaged(format!("in {}: {detail}", dir.shown(&rel).display())),
            }
            continue;
        }
        if framed {
            let content = match pack::frame::open(crypt, &want, &payload) {
                Ok(c) => c,
                Err(detail) => {
                    damaged(format!("in {}: {detail}", dir.shown(&rel).display()));
                    continue;
                }
            };
            for b in blobs {
                match content.blob(crypt, b) {
                    Ok(_) => out.good += 1,
                    Err(detail) => {
                        out.damaged(b.id, &format!("in {}: {detail}", dir.shown(&rel).display()))
                    }
                }
            }
            continue;
        }
        let checked = match depth {
            Depth::AsWritten => pack::check(crypt, e, &payload),
            Depth::Whole => pack::decode(crypt, e, &payload).map(drop),
        };
        match checked {
            Ok(()) => out.good += 1,
            Err(detail) => {
                out.damaged(e.id, &format!("in {}: {detail}", dir.shown(&rel).display()))
            }
        }
    }
    out.finish()
}

impl Store {
    /// Re-read every pack of this writing session from the device as soon as it is closed, in
    /// the background, for [`Store::pack_checks`] (the verify after a backup).
    pub(crate) fn check_packs_as_written(&self) {
        let mut w = self.writing.lock().unwrap();
        if w.checker.is_none() {
            w.checker = Checker::start(
                self.dir.clone(),
                self.crypt.clone(),
                self.backlog.clone(),
                w.check,
            );
        }
        w.check_packs = w.checker.is_some();
        if !w.check_packs {
            tracing::warn!("cannot start pack-check threads; the verify will read every pack");
        }
    }

    /// Check packs with `check` instead of [`check_pack`] from the next
    /// [`Store::check_packs_as_written`] on (for tests that simulate a device returning
    /// something else than what was written).
    #[doc(hidden)]
    pub(crate) fn set_pack_check(&self, check: CheckFn) {
        self.writing.lock().unwrap().check = check;
    }

    /// Wait for the background checks of the packs written so far and take their results.
    pub(crate) fn pack_checks(&self) -> HashMap<PackId, PackCheck> {
        let checker = {
            let mut w = self.writing.lock().unwrap();
            w.check_packs = false;
            w.checker.take()
        };
        let checks = checker.map(Checker::finish).unwrap_or_default();
        *self.backlog.packs.lock().unwrap() = 0;
        checks
    }

    /// Re-read and check pack `id` from the device to `depth` (see [`check_pack_as`]).
    pub fn check_pack(&self, id: &PackId, depth: Depth) -> PackCheck {
        check_pack_as(&self.dir, &self.crypt, id, depth)
    }
}
