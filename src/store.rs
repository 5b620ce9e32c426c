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

//!
//! Parts: `chunk` (cutting content into blocks), `pack` (the byte layout of a pack and of its
//! records), `write` (writing sessions),
//! `check` (re-reading packs from the device), `gc` (garbage collection).

mod check;
pub mod chunk;
mod gc;
mod index;
pub mod pack;
mod write;

use crate::crypt::Crypt;
use crate::error::{Error, Result};
use crate::fsio;
use crate::ids::{BlockId, PackId};
use crate::medium::beneath::{Beneath, Kind as EntryType};
use check::Backlog;
pub use check::{check_pack, check_pack_as, CheckFn, Depth, PackCheck};
pub use gc::{GcReport, Reclaim, GC_MARGIN, SURVIVOR_OVERHEAD};
use index::BlobIndex;
use pack::{BlobKind, Encoding, Entry};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
pub use write::WriteStats;
use write::Writing;

pub use chunk::{Chunker, MAX_BLOCK};
pub use pack::{PACK_MAX_BLOBS, PACK_TARGET};

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
/// (the index's key), in 28 bytes: a pack is at most [`MAX_PACK_LEN`] long, so an offset in
/// it fits 32 bits.
#[derive(Clone, Copy, Debug)]
struct Loc {
    offset: u32,
    pack: u32,
    raw_len: u32,
    stored_len: u32,
    /// A blob in a frame: its place in the frame's content, and the content's length.
    at: u32,
    frame_len: u32,
    kind: BlobKind,
    encoding: Encoding,
}

impl Loc {
    /// `None` for an entry no pack can hold (an offset past [`MAX_PACK_LEN`]): a reader
    /// checks trailers before it indexes them, so only damage gets here.
    fn new(pack: u32, e: &Entry) -> Option<Loc> {
        Some(Loc {
            offset: u32::try_from(e.offset)
                .ok()
                .filter(|&o| u64::from(o) < MAX_PACK_LEN)?,
            pack,
            raw_len: e.raw_len,
            stored_len: e.stored_len,
            at: e.at,
            frame_len: e.frame_len,
            kind: e.kind,
            encoding: e.encoding,
        })
    }

    fn entry(&self, id: BlockId) -> Entry {
        Entry {
            id,
            kind: self.kind,
            encoding: self.encoding,
            raw_len: self.raw_len,
            stored_len: self.stored_len,
            offset: u64::from(self.offset),
            at: self.at,
            frame_len: self.frame_len,
        }
    }
}

pub struct Store {
    dir: Arc<Beneath>,
    crypt: Crypt,
    level: i32,
    /// Whether new packs are of version 3 or 4 (frames, FORMAT.md "Frames"). Readers accept
    /// both kinds whatever this says.
    framed: bool,
    /// This store's number in the process (keys the per-thread cache of the last frame read).
    serial: u64,
    packs: RwLock<Vec<PackInfo>>,
    /// Every indexed blob's place (compact: see `store::index`).
    index: RwLock<BlobIndex>,
    /// The id of each indexed frame ((pack, payload offset): `frame::frame_id` of the trailer
    /// entries naming it), a reader's associated data: one per frame, not per blob.
    frames: RwLock<HashMap<(u32, u32), BlockId>>,
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

/// Which frame: (store, pack, payload offset).
type FrameKey = (u64, u32, u32);
/// A frame a thread opened, and the frame.
type LastFrame = (FrameKey, pack::frame::Opened);

/// The most frames a thread keeps open (a restore alternating between a full backup's frames
/// and an incremental's, or a file whose blocks span frames of several backups).
const FRAMES_KEPT: usize = 6;
/// The most content bytes the frames a thread keeps hold (the last one opened is kept
/// whatever its size, at most `frame::FRAME_MAX`).
const FRAMES_KEPT_BYTES: usize = 8 << 20;

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
        framed: bool,
    ) -> Result<(Store, Vec<PackDamage>)> {
        let store = Store {
            dir,
            crypt,
            level,
            framed,
            serial: {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
            packs: RwLock::new(Vec::new()),
            index: RwLock::new(BlobIndex::default()),
            frames: RwLock::new(HashMap::new()),
            unindexed: Mutex::new(Vec::new()),
            all_indexed: AtomicBool::new(false),
            expected_data_blocks: AtomicU64::new(0),
            writing: Mutex::new(Writing::new()),
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
        let mut listed = Vec::new();
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
            // A listings pack: indexed now, all of them in one batch at the end (adding each
            // pack's few entries to the index one by one cost a merge each: with thousands
            // of backups that was most of the time an open took).
            let (info, entries, detail) = store.read_pack_index(id, &file);
            let n = store.register(info, &[]);
            store.note_frames(n, &entries);
            listed.extend(entries.iter().filter_map(|e| Some((e.id, Loc::new(n, e)?))));
            if let Some(detail) = detail {
                damage.push(PackDamage { path: p, detail });
            }
        }
        // As `register` adds them pack by pack: the last place given for an id wins.
        store.index.write().unwrap().add(listed, true);
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
        // Frames first: a reader that finds a blob in the index finds its frame too.
        self.note_frames(n, entries);
        self.index.write().unwrap().add(
            entries.iter().filter_map(|e| Some((e.id, Loc::new(n, e)?))),
            true,
        );
        n
    }

    /// Remember the id of each frame in pack `n` (its trailer `entries`, checked).
    fn note_frames(&self, n: u32, entries: &[Entry]) {
        let mut frames = self.frames.write().unwrap();
        for group in entries.chunk_by(|a, b| a.offset == b.offset) {
            let e = &group[0];
            if e.encoding.inner() == Encoding::Frame {
                if let Ok(offset) = u32::try_from(e.offset) {
                    let id = pack::frame::frame_id(&self.crypt, group.iter().map(|b| &b.id));
                    frames.insert((n, offset), id);
                }
            }
        }
    }

    /// Index the records of pack `id`, registered already at `n` (from its trailer, or, if
    /// that is damaged, salvaged by walking the records, and reported).
    fn index_pack(&self, id: PackId, file: &File, n: u32) -> Result<(), String> {
        let (_, entries, damage) = self.read_pack_index(id, file);
        // Frames first: a reader that finds a blob in the index finds its frame too.
        self.note_frames(n, &entries);
        self.index.write().unwrap().add(
            entries.iter().filter_map(|e| Some((e.id, Loc::new(n, e)?))),
            false,
        );
        damage.map_or(Ok(()), Err)
    }

    /// Pack `id`'s description and records, from its trailer or, if that is damaged, by
    /// walking the records (and why the trailer is damaged).
    fn read_pack_index(&self, id: PackId, file: &File) -> (PackInfo, Vec<Entry>, Option<String>) {
        match pack::read_trailer(&self.crypt, &id, file) {
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
        }
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
                .and_then(|(f, _)| self.index_pack(info.id, &f, n));
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
            return Some(l);
        }
        if self.all_indexed.load(Ordering::Acquire) {
            return None;
        }
        self.index_all();
        self.index.read().unwrap().get(id)
    }

    /// Whether some pack on the medium is of version 1 or 2 (written before frames): a tree
    /// rebuilt for such a medium keeps the format that writes them.
    pub fn has_unframed_packs(&self) -> bool {
        self.packs().iter().any(|p| {
            self.open_pack(&p.id).is_ok_and(|(f, _)| {
                let mut h = [0u8; 12];
                f.read_exact_at(&mut h, 0).is_ok()
                    && matches!(
                        u32::from_le_bytes(h[8..12].try_into().unwrap()),
                        pack::PACK_VERSION | pack::PACK_VERSION_SEALED
                    )
            })
        })
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
                .retain(|loc| loc.pack as usize != n);
            self.frames
                .write()
                .unwrap()
                .retain(|&(pack, _), _| pack as usize != n);
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
        if loc.encoding.inner() == Encoding::Frame {
            return self.read_framed(*id, loc);
        }
        let payload = self.read_payload(*id, loc)?;
        pack::decode(&self.crypt, &loc.entry(*id), &payload).map_err(|detail| {
            let pack = self.packs.read().unwrap()[loc.pack as usize].id;
            Error::BadBlock {
                id: *id,
                detail: format!("in {}: {detail}", self.pack_path(&pack).display()),
            }
        })
    }

    /// Read a blob in a frame: the frame is opened once and kept (per thread, the last few
    /// opened, [`FRAMES_KEPT`] at most and [`FRAMES_KEPT_BYTES`] of content), so reading its
    /// blobs one after another, or alternately from a few frames (a restore after
    /// incrementals), opens each about once.
    fn read_framed(&self, id: BlockId, loc: Loc) -> Result<Vec<u8>> {
        thread_local! {
            static KEPT: std::cell::RefCell<VecDeque<LastFrame>> =
                const { std::cell::RefCell::new(VecDeque::new()) };
            static FAILED: std::cell::RefCell<VecDeque<(FrameKey, String)>> =
                const { std::cell::RefCell::new(VecDeque::new()) };
        }
        let e = loc.entry(id);
        let bad = |detail: String| {
            let pack = self.packs.read().unwrap()[loc.pack as usize].id;
            Error::BadBlock {
                id,
                detail: format!("in {}: {detail}", self.pack_path(&pack).display()),
            }
        };
        let key = (self.serial, loc.pack, loc.offset);
        // A frame that did not open is not read again for each of its blobs (a damaged frame
        // of 65 536 blobs would be read and decoded 65 536 times by a verify or a restore).
        if let Some(detail) = FAILED.with(|f| {
            f.borrow()
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, d)| d.clone())
        }) {
            return Err(bad(detail));
        }
        KEPT.with(|kept| {
            let mut kept = kept.borrow_mut();
            match kept.iter().position(|(k, _)| *k == key) {
                // Most recently used first.
                Some(i) => {
                    let hit = kept.remove(i).expect("just found");
                    kept.push_front(hit);
                }
                None => {
                    let frame = self
                        .frames
                        .read()
                        .unwrap()
                        .get(&(loc.pack, loc.offset))
                        .copied();
                    let frame = frame.ok_or_else(|| bad("its frame is not indexed".into()))?;
                    let payload = self.read_payload(id, loc)?;
                    let head = pack::frame::record_of(&e, frame);
                    let opened =
                        pack::frame::open(&self.crypt, &head, &payload).map_err(|detail| {
                            FAILED.with(|f| {
                                let mut f = f.borrow_mut();
                                f.truncate(FRAMES_KEPT - 1);
                                f.push_front((key, detail.clone()));
                            });
                            bad(detail)
                        })?;
                    kept.push_front((key, opened));
                    let mut bytes = 0;
                    let keep = kept
                        .iter()
                        .take(FRAMES_KEPT)
                        .take_while(|(_, f)| {
                            bytes += f.content_len();
                            bytes <= FRAMES_KEPT_BYTES
                        })
                        .count()
                        .max(1);
                    kept.truncate(keep);
                }
            }
            let (_, opened) = kept.front().expect("just filled");
            opened
                .blob(&self.crypt, &e)
                .map(|b| b.to_vec())
                .map_err(bad)
        })
    }

    fn read_payload(&self, id: BlockId, loc: Loc) -> Result<Vec<u8>> {
        let f = self.file(loc.pack)?;
        let mut buf = vec![0u8; loc.stored_len as usize];
        f.read_exact_at(&mut buf, u64::from(loc.offset))
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
}
