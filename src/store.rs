//! The per-medium block store: content-addressed blocks and listing blobs in pack files.
//!
//! Invariants:
//! - a block id is the SHA-256 of its uncompressed bytes (on an encrypted medium, keyed:
//!   [`Crypt::block_id`]); every read re-checks it, and on an encrypted medium every record
//!   and trailer must authenticate first (`pack::decode`, `pack::read_trailer`);
//! - a pack becomes visible (in the index, and so usable for deduplication) only after it is
//!   complete, fsync'd and renamed into `packs/`, with its directory fsync'd;
//! - garbage collection writes the survivors of a pack to a new pack and makes that durable
//!   before it deletes the old one, so a crash at any point loses no live block.

pub mod pack;

use crate::crypt::Crypt;
use crate::error::{Error, Result};
use crate::fsio;
use crate::ids::{BlockId, PackId};
use crate::medium::beneath::{Beneath, Kind as EntryType};
use crate::share;
use pack::{BlobKind, Encoding, Entry, PackWriter};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Blocks are at most this long (spec [0012]: 256K byte blocks).
pub const BLOCK_SIZE: usize = 256 * 1024;
/// A pack is closed once it reaches this size.
pub const PACK_TARGET: u64 = 32 << 20;

#[derive(Clone, Debug)]
pub struct PackInfo {
    pub id: PackId,
    pub writer: u64,
    pub flags: u32,
    pub len: u64,
    /// False once the pack has been deleted (positions in the pack list never move).
    pub present: bool,
}

/// Where a blob is: its pack (position in the pack list) and trailer entry, without the id
/// (the index's key), so the index of a 200k-block medium stays small and cache-friendly.
#[derive(Clone, Copy, Debug)]
struct Loc {
    offset: u64,
    pack: u32,
    raw_len: u32,
    stored_len: u32,
    kind: BlobKind,
    encoding: Encoding,
}

impl Loc {
    fn new(pack: u32, e: &Entry) -> Loc {
        Loc {
            offset: e.offset,
            pack,
            raw_len: e.raw_len,
            stored_len: e.stored_len,
            kind: e.kind,
            encoding: e.encoding,
        }
    }

    fn entry(&self, id: BlockId) -> Entry {
        Entry {
            id,
            kind: self.kind,
            encoding: self.encoding,
            raw_len: self.raw_len,
            stored_len: self.stored_len,
            offset: self.offset,
        }
    }
}

struct Writing {
    backup: u64,
    flags: u32,
    /// The open pack for each blob kind: data blocks and listings go to separate packs, so a
    /// backup's index reads back as a few compact packs.
    current: [Option<(PackWriter, String)>; 2],
    pending: FxHashSet<BlockId>,
    written: Vec<PackId>,
    stats: WriteStats,
    /// Check each closed pack in the background ([`Store::check_packs_as_written`]).
    check_packs: bool,
    checker: Option<Checker>,
    /// How the checker checks a pack: [`check_pack`] (tests put a failing device in between).
    check: CheckFn,
}

pub type CheckFn = fn(&Beneath, &Crypt, &PackId) -> PackCheck;

/// Threads that re-read closed packs from the device while the backup goes on: one per core,
/// so that when writers wait for the checks (see [`Backlog`]) every core checks.
struct Checker {
    send: std::sync::mpsc::Sender<PackId>,
    threads: Vec<std::thread::JoinHandle<HashMap<PackId, PackCheck>>>,
}

/// How many closed packs wait for their check. Writers wait while it is above
/// [`MAX_UNCHECKED`]: on a busy machine the checker would otherwise fall ever further behind
/// and its work would all be left for after the backup.
#[derive(Default)]
struct Backlog {
    packs: Mutex<usize>,
    shrunk: std::sync::Condvar,
}

const MAX_UNCHECKED: usize = 2;

impl Backlog {
    fn add(&self, n: isize) {
        let mut p = self.packs.lock().unwrap();
        *p = p.saturating_add_signed(n);
        self.shrunk.notify_all();
    }

    fn wait_until_small(&self) {
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

/// What a writing session added to the store.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteStats {
    pub blocks: u64,
    pub bytes_raw: u64,
    pub bytes_stored: u64,
}

pub struct Store {
    dir: Arc<Beneath>,
    crypt: Crypt,
    level: i32,
    packs: RwLock<Vec<PackInfo>>,
    /// Block ids are SHA-256 digests, so a fast non-keyed hash is as good as any here.
    index: RwLock<FxHashMap<BlockId, Loc>>,
    /// Packs (positions in `packs`) whose trailers are not in `index` yet. Opening reads the
    /// listing packs only: a backup with nothing changed, `ls` or `diff` never need the data
    /// packs' trailers (200 000 of them take longer to index than such a backup takes to walk).
    /// The first lookup that misses reads them all.
    unindexed: Mutex<Vec<u32>>,
    all_indexed: AtomicBool,
    /// How many records the unindexed packs' footers announce (to size the index once).
    expected_data_blocks: AtomicU64,
    writing: Mutex<Writing>,
    fds: Mutex<HashMap<u32, Arc<File>>>,
    backlog: Arc<Backlog>,
    /// Packs garbage collection could not rewrite in this session (a blob in them cannot be
    /// read or decoded): their dead bytes count as not reclaimable, so the room plan does not
    /// pare again for them.
    kept: Mutex<HashSet<PackId>>,
}

/// The footer flags of a pack for blob kind `slot`: listing packs say so.
fn slot_flags(flags: u32, slot: usize) -> u32 {
    if slot == BlobKind::Listing as usize {
        flags | pack::FLAG_LISTINGS
    } else {
        flags
    }
}

/// Where pack `id` lives below `trayback/`: `packs/<xx>/<id>.pack`.
pub fn pack_rel(id: &PackId) -> String {
    let s = id.to_string();
    format!("packs/{}/{s}.pack", &s[..2])
}

/// The largest pack file a reader looks at: a writer closes a pack once it reaches
/// [`PACK_TARGET`], so a pack is at most that plus one blob (a listing, the largest kind, is
/// at most [`crate::listing::MAX_LISTING_LEN`]) plus its trailer and footer. Anything larger
/// is damage, refused without reading it.
pub const MAX_PACK_LEN: u64 = PACK_TARGET + crate::listing::MAX_LISTING_LEN as u64 + (16 << 20);

/// What re-reading one pack from the device found.
#[derive(Clone, Debug, Default)]
pub struct PackCheck {
    /// Records whose content matched their id.
    pub good: Vec<BlockId>,
    /// Bytes of the pack file.
    pub bytes: u64,
    /// Each problem: with the block it concerns, or `None` for the pack as a whole.
    pub damage: Vec<(Option<BlockId>, String)>,
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
    for e in &trailer.entries {
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
        if let Err(err) = read {
            out.damage
                .push((Some(e.id), format!("cannot read from pack {id}: {err}")));
            pos = u64::MAX;
            continue;
        }
        if pack::parse_record_header(&head, e.offset).as_ref() != Some(e) {
            out.damage.push((
                Some(e.id),
                format!("record header in pack {id} does not match the trailer"),
            ));
            continue;
        }
        let checked = match depth {
            Depth::AsWritten => pack::check(crypt, e, &payload),
            Depth::Whole => pack::decode(crypt, e, &payload).map(drop),
        };
        match checked {
            Ok(()) => out.good.push(e.id),
            Err(detail) => out.damage.push((
                Some(e.id),
                format!("in {}: {detail}", dir.shown(&rel).display()),
            )),
        }
    }
    out
}

/// A pack the store could not read on opening.
#[derive(Clone, Debug)]
pub struct PackDamage {
    pub path: PathBuf,
    pub detail: String,
}

impl Store {
    /// Open the store in `trayback/`: index the listing packs' trailers, note the data
    /// packs' footers (their trailers are read on first need).
    pub(crate) fn open(
        dir: Arc<Beneath>,
        level: i32,
        crypt: Crypt,
    ) -> Result<(Store, Vec<PackDamage>)> {
        let store = Store {
            dir,
            crypt,
            level,
            packs: RwLock::new(Vec::new()),
            index: RwLock::new(FxHashMap::default()),
            unindexed: Mutex::new(Vec::new()),
            all_indexed: AtomicBool::new(false),
            expected_data_blocks: AtomicU64::new(0),
            writing: Mutex::new(Writing {
                backup: 0,
                flags: 0,
                current: [None, None],
                pending: FxHashSet::default(),
                written: Vec::new(),
                stats: WriteStats::default(),
                check_packs: false,
                checker: None,
                check: check_pack,
            }),
            fds: Mutex::new(HashMap::new()),
            backlog: Arc::default(),
            kept: Mutex::default(),
        };
        let mut damage = Vec::new();
        let mut ids = Vec::new();
        for (sub, kind) in store.dir.list("packs")? {
            let sub = sub.to_string_lossy();
            if kind != EntryType::Dir {
                continue;
            }
            for (name, _) in store.dir.list(&format!("packs/{sub}"))? {
                let name = name.to_string_lossy();
                let Some(stem) = name.strip_suffix(".pack") else {
                    continue;
                };
                match stem.parse::<PackId>() {
                    Ok(id) if pack_rel(&id) == format!("packs/{sub}/{name}") => ids.push(id),
                    _ => damage.push(PackDamage {
                        path: store.dir.shown(&format!("packs/{sub}/{name}")),
                        detail: "pack file name is not a pack id in its place".into(),
                    }),
                }
            }
        }
        ids.sort();
        let mut unindexed = Vec::new();
        for id in ids {
            let p = store.dir.shown(&pack_rel(&id));
            let (file, len) = match store.open_pack(&id) {
                Ok(f) => f,
                Err(e) => {
                    damage.push(PackDamage {
                        path: p,
                        detail: e.to_string(),
                    });
                    continue;
                }
            };
            if let Some(f) = pack::read_footer(&file).filter(|f| f.flags & pack::FLAG_LISTINGS == 0)
            {
                // A data pack: indexed when first needed (its footer names its writer now,
                // for recovery).
                let n = store.register(
                    PackInfo {
                        id,
                        writer: f.writer,
                        flags: f.flags,
                        len,
                        present: true,
                    },
                    &[],
                );
                unindexed.push((n, f.count));
                continue;
            }
            if let Err(detail) = store.index_pack(id, &file, None) {
                damage.push(PackDamage { path: p, detail });
            }
        }
        *store.unindexed.lock().unwrap() = unindexed.iter().map(|(n, _)| *n).collect();
        store
            .all_indexed
            .store(unindexed.is_empty(), Ordering::Release);
        store
            .expected_data_blocks
            .store(unindexed.iter().map(|(_, c)| *c).sum(), Ordering::Relaxed);
        Ok((store, damage))
    }

    fn register(&self, info: PackInfo, entries: &[Entry]) -> u32 {
        let mut packs = self.packs.write().unwrap();
        let n = packs.len() as u32;
        packs.push(info);
        let mut index = self.index.write().unwrap();
        for e in entries {
            index.insert(e.id, Loc::new(n, e));
        }
        n
    }

    /// Read pack `id`'s trailer and index its records; a damaged trailer is salvaged by
    /// walking the records (and reported). `n`: the pack is registered already, at `n`.
    fn index_pack(&self, id: PackId, file: &File, n: Option<u32>) -> Result<(), String> {
        let (info, entries, damage) = match pack::read_trailer(&self.crypt, &id, file) {
            Ok(t) => {
                let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                let info = PackInfo {
                    id,
                    writer: t.writer,
                    flags: t.flags,
                    len,
                    present: true,
                };
                (info, t.entries, None)
            }
            Err(detail) => {
                // Records describe themselves: index what can still be read.
                let entries = pack::scan_file(&self.crypt, file);
                let path = self.dir.shown(&pack_rel(&id));
                tracing::warn!(path = %path.display(), %detail, salvaged = entries.len(), "damaged pack trailer; salvaged records");
                let info = PackInfo {
                    id,
                    writer: 0,
                    flags: pack::FLAG_GC,
                    len: file.metadata().map(|m| m.len()).unwrap_or(0),
                    present: true,
                };
                (info, entries, Some(detail))
            }
        };
        match n {
            None => {
                self.register(info, &entries);
            }
            Some(n) => {
                let mut index = self.index.write().unwrap();
                for e in &entries {
                    index.entry(e.id).or_insert(Loc::new(n, e));
                }
            }
        }
        damage.map_or(Ok(()), Err)
    }

    /// Index the data packs not indexed yet (once; every lookup that misses calls this).
    fn index_all(&self) {
        if self.all_indexed.load(Ordering::Acquire) {
            return;
        }
        let mut pending = self.unindexed.lock().unwrap();
        if !pending.is_empty() {
            self.index
                .write()
                .unwrap()
                // Footers are untrusted: reserve for at most 16M blocks (4 TiB of content).
                .reserve((self.expected_data_blocks.load(Ordering::Relaxed) as usize).min(1 << 24));
        }
        for n in pending.drain(..) {
            let info = self.packs.read().unwrap()[n as usize].clone();
            if !info.present {
                continue;
            }
            let indexed = self
                .open_pack(&info.id)
                .map_err(|e| e.to_string())
                .and_then(|(f, _)| self.index_pack(info.id, &f, Some(n)));
            if let Err(detail) = indexed {
                let path = self.dir.shown(&pack_rel(&info.id));
                tracing::warn!(path = %path.display(), %detail, "unreadable pack");
            }
        }
        self.all_indexed.store(true, Ordering::Release);
    }

    /// Where blob `id` is, indexing the data packs first if it is not among the indexed.
    fn loc(&self, id: &BlockId) -> Option<Loc> {
        if let Some(l) = self.index.read().unwrap().get(id) {
            return Some(*l);
        }
        if self.all_indexed.load(Ordering::Acquire) {
            return None;
        }
        self.index_all();
        self.index.read().unwrap().get(id).copied()
    }

    /// Where pack `id` is, for messages.
    pub fn pack_path(&self, id: &PackId) -> PathBuf {
        self.dir.shown(&pack_rel(id))
    }

    /// Open pack `id` (a regular file below `trayback/`, never through a link) and its
    /// length, refusing one longer than any writer makes.
    fn open_pack(&self, id: &PackId) -> Result<(File, u64)> {
        let rel = pack_rel(id);
        let f = self.dir.open_file(&rel)?;
        let len = f.metadata().map_err(|e| self.dir.err(&rel, e))?.len();
        if len > MAX_PACK_LEN {
            return Err(Error::Damaged {
                path: self.dir.shown(&rel),
                detail: format!("pack of {len} bytes is larger than any writer makes; refused"),
            });
        }
        Ok((f, len))
    }

    /// Forget pack `id`'s cached pages, so it is read from the device next.
    pub fn drop_cached(&self, id: &PackId) {
        if let Ok((f, _)) = self.open_pack(id) {
            fsio::drop_cache(&f);
        }
    }

    /// Re-read and check pack `id` from the device to `depth` (see [`check_pack_as`]).
    pub fn check_pack(&self, id: &PackId, depth: Depth) -> PackCheck {
        check_pack_as(&self.dir, &self.crypt, id, depth)
    }

    /// Whether pack `id`'s trailer and footer are intact (and on an encrypted medium,
    /// authenticate): what recovery requires before it believes a footer's writer.
    pub(crate) fn trailer_intact(&self, id: &PackId) -> bool {
        self.open_pack(id)
            .is_ok_and(|(f, _)| pack::read_trailer(&self.crypt, id, &f).is_ok())
    }

    /// How this store's records are protected.
    pub fn crypt(&self) -> &Crypt {
        &self.crypt
    }

    /// The id blob `raw` has on this medium (SHA-256, or keyed on an encrypted medium).
    pub fn block_id(&self, raw: &[u8]) -> BlockId {
        self.crypt.block_id(raw)
    }

    /// The packs present on the medium.
    pub fn packs(&self) -> Vec<PackInfo> {
        self.packs
            .read()
            .unwrap()
            .iter()
            .filter(|p| p.present)
            .cloned()
            .collect()
    }

    fn forget_pack(&self, id: &PackId) {
        let mut packs = self.packs.write().unwrap();
        if let Some(n) = packs.iter().position(|p| p.id == *id && p.present) {
            packs[n].present = false;
            self.unindexed.lock().unwrap().retain(|&u| u as usize != n);
            self.index
                .write()
                .unwrap()
                .retain(|_, loc| loc.pack as usize != n);
        }
    }

    pub fn contains(&self, id: &BlockId) -> bool {
        self.loc(id).is_some()
    }

    pub fn block_count(&self) -> usize {
        self.index_all();
        self.index.read().unwrap().len()
    }

    /// Where a block is: its pack and trailer entry.
    pub fn locate(&self, id: &BlockId) -> Option<(PackId, Entry)> {
        let loc = self.loc(id)?;
        Some((
            self.packs.read().unwrap()[loc.pack as usize].id,
            loc.entry(*id),
        ))
    }

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
        let (enc, payload) = pack::encode(&self.crypt, &id, kind, raw, self.level);
        self.append(id, kind, enc, raw.len() as u32, &payload, true)
    }

    fn append(
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
        if w.current[slot].is_none() {
            let pid = PackId::random();
            let tmp = format!("tmp/{pid}.pack");
            let file = self.dir.create_new(&tmp)?;
            let pw = PackWriter::new(pid, file, &self.crypt).map_err(|e| self.dir.err(&tmp, e))?;
            w.current[slot] = Some((pw, tmp));
        }
        let (pw, tmp) = w.current[slot].as_mut().unwrap();
        pw.append(id, kind, enc, raw_len, payload)
            .map_err(|e| self.dir.err(tmp, e))?;
        let full = pw.len >= PACK_TARGET;
        w.pending.insert(id);
        w.stats.blocks += 1;
        w.stats.bytes_raw += raw_len as u64;
        w.stats.bytes_stored += payload.len() as u64;
        if full {
            // Finish (fsync) the full pack without holding the lock: the other threads go on
            // compressing into a new pack meanwhile.
            let closing = w.current[slot].take();
            let (backup, flags) = (w.backup, slot_flags(w.flags, slot));
            drop(w);
            self.close_pack(closing, backup, flags)?;
        }
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
    fn discard_open(&self) {
        let mut w = self.writing.lock().unwrap();
        for slot in &mut w.current {
            if let Some((pw, tmp)) = slot.take() {
                drop(pw);
                let _ = self.dir.remove_file(&tmp);
            }
        }
        w.pending.clear();
    }

    fn file(&self, pack: u32) -> Result<Arc<File>> {
        let mut fds = self.fds.lock().unwrap();
        if let Some(f) = fds.get(&pack) {
            return Ok(f.clone());
        }
        if fds.len() >= 256 {
            fds.clear();
        }
        let id = self.packs.read().unwrap()[pack as usize].id;
        let f = Arc::new(self.open_pack(&id)?.0);
        fds.insert(pack, f.clone());
        Ok(f)
    }

    /// Read a block or listing blob and check its hash.
    pub fn read(&self, id: &BlockId) -> Result<Vec<u8>> {
        let loc = self.loc(id).ok_or(Error::MissingBlock(*id))?;
        let payload = self.read_payload(*id, loc)?;
        pack::decode(&self.crypt, &loc.entry(*id), &payload).map_err(|detail| {
            let pack = self.packs.read().unwrap()[loc.pack as usize].id;
            Error::BadBlock {
                id: *id,
                detail: format!("in {}: {detail}", self.pack_path(&pack).display()),
            }
        })
    }

    fn read_payload(&self, id: BlockId, loc: Loc) -> Result<Vec<u8>> {
        let f = self.file(loc.pack)?;
        let mut buf = vec![0u8; loc.stored_len as usize];
        f.read_exact_at(&mut buf, loc.offset)
            .map_err(|e| Error::BadBlock {
                id,
                detail: format!("cannot read from pack: {e}"),
            })?;
        Ok(buf)
    }

    /// Forget open file handles (before packs are deleted or re-read from the device).
    pub(crate) fn close_files(&self) {
        self.fds.lock().unwrap().clear();
    }

    /// Delete a pack file and every index entry that points into it.
    pub(crate) fn remove_pack(&self, id: &PackId) -> Result<()> {
        self.close_files();
        self.dir.remove_file(&pack_rel(id))?;
        self.forget_pack(id);
        Ok(())
    }

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
                let indexed = self.index.read().unwrap().get(&e.id).copied();
                let here = indexed.is_some_and(|l| l.pack as usize == n && l.offset == e.offset);
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
                    p.dead += e.stored_len as u64 + pack::RECORD_HEADER_LEN;
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
                    .map(|e| (index[&e.id], e.stored_len as u64))
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
                let payload = match self.read_payload(e.id, Loc::new(p.n, e)) {
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
            .map(|e| e.stored_len as u64 + SURVIVOR_OVERHEAD)
            .sum()
    }
}

/// What a blob costs in a pack beyond its stored bytes: its record header and trailer entry.
pub const SURVIVOR_OVERHEAD: u64 = pack::RECORD_HEADER_LEN + pack::TRAILER_ENTRY_LEN as u64;

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
