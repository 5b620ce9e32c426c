//! Making a backup: walk the sources, compare with the parent's index, store what changed,
//! write the index (listings), the header, and commit by listing the backup in the tree.
//! The walk is [`walk`] (depth as data, descriptors bounded); what a backup does with each
//! directory and name it reaches is [`entry`]; a backup and an estimate share both.
//!
//! Invariants:
//! - nothing is committed before every pack and listing is durable (the store fsyncs packs;
//!   the header and tree are replaced atomically by the medium);
//! - a failed or cancelled backup leaves the medium as it was: its packs are removed at once,
//!   and recovery removes them if we die first;
//! - problems with single source files (unreadable, changed while read, replaced or vanished
//!   mid-walk) are recorded in the header, which is then marked partial; they never abort the
//!   backup, and no source tree, however deep or however it changes, crashes it.

use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::ids::{BackupId, BlockId};
use crate::listing::{self, Entry, EntryKind, LISTING_FORMAT, LISTING_FORMAT_FIXED};
use crate::medium::{self, BackupHeader, BackupWriter, Counts, Medium, Problem};
use crate::progress::Meter;
use crate::store::pack::BlobKind;
use crate::store::{Chunker, Store};
use crate::tree::Kind;
use chrono::{DateTime, Utc};
use entry::walk_sources;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use tracing::{debug, info, warn};

mod entry;
mod walk;

/// The walk waits on the device (stat of inodes not yet in memory) more than on the CPU, so
/// it runs on more threads than there are cores: 8 keep a cold walk faster than a plain
/// `find -printf %s`, where 2 make it half as fast.
fn walk_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let n = (4 * std::thread::available_parallelism().map_or(2, |n| n.get())).clamp(8, 32);
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("walk-{i}"))
            .build()
            .expect("walk threads")
    })
}

/// What to back up, and how.
pub struct Request<'a> {
    pub kind: Kind,
    /// The backup to compare against (required for incrementals, ignored for monthly).
    pub parent: Option<BackupId>,
    /// The backup's recorded start time (the CLI's `--at`, or now).
    pub at: DateTime<Utc>,
    pub config: &'a Config,
    pub meter: &'a Meter,
    pub cancel: &'a AtomicBool,
    /// A verify follows: re-read each pack from the device as soon as it is closed, in the
    /// background while the backup goes on, so the verify need not read it again.
    pub verify_after: bool,
}

#[derive(Default)]
struct Tally {
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    specials: AtomicU64,
    files_read: AtomicU64,
    files_unchanged: AtomicU64,
    sockets: AtomicU64,
    excluded: AtomicU64,
    bytes_total: AtomicU64,
    bytes_read: AtomicU64,
}

struct Ctx<'a> {
    store: &'a Store,
    /// Where new blobs go (`None` for an estimate, which writes nothing).
    writer: Option<&'a BackupWriter<'a>>,
    medium: &'a Medium,
    medium_inode: Option<(u64, u64)>,
    config: &'a Config,
    full: bool,
    /// Estimate only: stat and compare, read nothing, write nothing; count into `estimate`.
    dry: bool,
    estimate: AtomicU64,
    tally: Tally,
    /// The first [`medium::MAX_PROBLEMS_LISTED`] problems met, and how many more.
    problems: Mutex<(Vec<Problem>, u64)>,
    meter: &'a Meter,
    cancel: &'a AtomicBool,
    /// How the medium cuts content into blocks (its tree's format decides).
    chunker: Chunker,
}

impl Ctx<'_> {
    fn problem(&self, path: &Path, error: impl std::fmt::Display) {
        warn!(path = %path.display(), %error, "backup problem");
        let mut problems = self.problems.lock().unwrap();
        let (listed, unlisted) = &mut *problems;
        if listed.len() < medium::MAX_PROBLEMS_LISTED {
            listed.push(Problem {
                path: path.to_string_lossy().into_owned(),
                error: error.to_string(),
            });
        } else {
            *unlisted += 1;
        }
    }

    /// Store the listing of `entries` (sorted by name), in the format that goes with the
    /// medium's blocks.
    fn put_listing(&self, entries: Vec<Entry>) -> Result<BlockId> {
        let mut w = self.listing_writer(entries.len());
        for e in &entries {
            self.push_entry(&mut w, e)?;
        }
        let bytes = w.finish().map_err(|e| Error::Refused(e.to_string()))?;
        self.put_encoded(bytes)
    }

    /// A listing to write an entry at a time, in the format that goes with the medium's
    /// blocks, with room for about `hint` entries.
    fn listing_writer(&self, hint: usize) -> listing::Writer {
        let format = match self.chunker {
            Chunker::Fixed => LISTING_FORMAT_FIXED,
            Chunker::Content(_) => LISTING_FORMAT,
        };
        listing::Writer::new(format, hint)
    }

    /// Add `e` to listing `w`, unless it is an entry this medium's readers would refuse (an
    /// estimate reads no blocks: its listings only measure).
    fn push_entry(&self, w: &mut listing::Writer, e: &Entry) -> Result<()> {
        if !self.dry
            && e.kind == EntryKind::File
            && !self.chunker.fits(e.size, e.blocks.len() as u64)
        {
            return Err(Error::Refused(format!(
                "not storing a listing whose entry {:?} has {} blocks for {} bytes",
                e.name.lossy(),
                e.blocks.len(),
                e.size
            )));
        }
        w.push(e);
        Ok(())
    }

    /// Store an encoded listing (an estimate only counts it).
    fn put_encoded(&self, bytes: Vec<u8>) -> Result<BlockId> {
        if self.dry {
            let id = BlockId::of(&bytes);
            if !self.store.contains(&id) {
                self.estimate
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            return Ok(id);
        }
        self.writer()?.put(BlobKind::Listing, &bytes)
    }

    fn writer(&self) -> Result<&BackupWriter<'_>> {
        self.writer
            .ok_or_else(|| Error::Refused("an estimate writes nothing".into()))
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Refused("backup cancelled".into()));
        }
        Ok(())
    }
}

/// The directories between `/` and the sources; a node marked `source` is walked for real.
#[derive(Default, Debug)]
struct VNode {
    source: bool,
    children: BTreeMap<OsString, VNode>,
}

fn source_tree(sources: &[PathBuf]) -> VNode {
    let mut root = VNode::default();
    for s in sources {
        let mut node = &mut root;
        for c in s.components().skip(1) {
            node = node
                .children
                .entry(c.as_os_str().to_os_string())
                .or_default();
        }
        node.source = true;
    }
    root
}

/// The configured sources as real paths (a symlink on the way to a source is resolved, so the
/// walk from `/` reaches it), each an existing directory not on the medium.
fn resolve_sources(medium: &Medium, config: &Config) -> Result<Vec<PathBuf>> {
    let medium_root = std::fs::canonicalize(medium.root()).at(medium.root())?;
    let mut sources = Vec::new();
    for s in &config.sources {
        let meta = std::fs::symlink_metadata(s).at(s)?;
        if !meta.is_dir() {
            return Err(Error::Refused(format!(
                "source {} is not a directory",
                s.display()
            )));
        }
        let real = std::fs::canonicalize(s).at(s)?;
        if real.starts_with(&medium_root) {
            return Err(Error::Refused(format!(
                "source {} is on the medium itself",
                s.display()
            )));
        }
        if real != *s {
            info!(source = %s.display(), real = %real.display(), "source reached through a symlink");
        }
        sources.push(real);
    }
    Ok(sources)
}

/// The medium's root directory as `(dev, ino)`: the walk leaves it out wherever it is found.
fn medium_inode(medium: &Medium) -> Option<(u64, u64)> {
    std::fs::metadata(medium.root())
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Make a backup on `medium` (opened for writing). Returns the committed header.
pub fn run(medium: &mut Medium, req: &Request) -> Result<BackupHeader> {
    let made = make(medium, req);
    if made.is_err() && medium.writable() {
        // A failed or cancelled backup's id is not given to the next one on this open medium
        // (recovery does the same when the medium is next opened).
        if let Err(e) = medium.retire_used_id() {
            warn!(cause = %e, "cannot mark the failed backup's id used; the medium's next opening does");
        }
    }
    made
}

fn make(medium: &mut Medium, req: &Request) -> Result<BackupHeader> {
    if !medium.writable() {
        return Err(Error::Refused("medium is not open for writing".into()));
    }
    let config = req.config;
    if config.sources.is_empty() {
        return Err(Error::Refused(
            "no sources to back up (set `sources` in the config or pass --source)".into(),
        ));
    }
    let sources = resolve_sources(medium, config)?;
    let id = medium.tree().next_id;
    let parent = if req.kind.is_full() {
        None
    } else {
        let p = req.parent.ok_or_else(|| {
            Error::Refused(format!(
                "a {} backup needs a verified parent backup on this medium; make a monthly first",
                req.kind
            ))
        })?;
        let rec = medium.tree().get(p).ok_or(Error::NoSuchBackup(p))?;
        if !rec.verified {
            return Err(Error::Refused(format!(
                "backup {p} is not verified and cannot be a parent"
            )));
        }
        Some(medium.header(p)?)
    };
    info!(backup = %id, kind = %req.kind, parent = ?parent.as_ref().map(|p| p.id), "backup starting");
    if let Some(p) = &parent {
        req.meter.set_total(p.bytes.total);
    }
    let t0 = std::time::Instant::now();
    let writer = medium.begin_backup(req.verify_after)?;
    let ctx = Ctx {
        store: medium.store(),
        writer: Some(&writer),
        medium,
        medium_inode: medium_inode(medium),
        config,
        full: req.kind.is_full(),
        dry: false,
        estimate: AtomicU64::new(0),
        tally: Tally::default(),
        problems: Mutex::default(),
        meter: req.meter,
        cancel: req.cancel,
        chunker: medium.chunker(),
    };
    let vroot = source_tree(&sources);
    let walked = (|| {
        let root = walk_sources(&ctx, &vroot, parent.as_ref().map(|p| p.root))?;
        ctx.check_cancel()?;
        let staged = writer.finish()?;
        Ok::<_, Error>((root, staged))
    })();
    // On an error the writer, dropped, deletes what it wrote.
    let (root, staged) = match walked {
        Ok(v) => {
            debug!(
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "sources walked, packs durable"
            );
            v
        }
        Err(e) => return Err(e),
    };
    let stats = staged.stats;
    let t = &ctx.tally;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (mut problems, problems_unlisted) = ctx.problems.into_inner().unwrap();
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    let elapsed = chrono::Duration::from_std(t0.elapsed()).unwrap_or_default();
    let header = BackupHeader {
        format: medium::HEADER_FORMAT,
        id,
        kind: req.kind,
        parent: parent.as_ref().map(|p| p.id),
        media_id: medium.media().media_id,
        host: medium::host_name(),
        sources: sources.clone(),
        started: req.at,
        finished: req.at + elapsed,
        software: format!("trayback {}", env!("CARGO_PKG_VERSION")),
        root,
        counts: Counts {
            files: get(&t.files),
            dirs: get(&t.dirs),
            symlinks: get(&t.symlinks),
            specials: get(&t.specials),
            files_read: get(&t.files_read),
            files_unchanged: get(&t.files_unchanged),
            sockets_skipped: get(&t.sockets),
            excluded: get(&t.excluded),
            blobs_new: stats.blocks,
        },
        bytes: medium::Bytes {
            total: get(&t.bytes_total),
            read: get(&t.bytes_read),
            new: stats.bytes_raw,
            stored: stats.bytes_stored,
        },
        partial: !problems.is_empty(),
        problems,
        problems_unlisted,
        packs: staged.packs.clone(),
    };
    drop(writer);
    medium.commit_backup(staged, &header)?;
    req.meter.finish();
    info!(backup = %id, files = header.counts.files, new_bytes = header.bytes.new, partial = header.partial, "backup committed");
    Ok(header)
}

/// An upper bound on the bytes a backup would add: content of the files that differ from
/// backup `compare_with` (size, mtime, ctime, inode) plus the listings not yet stored. The
/// same walk as a backup, reading no file content and writing nothing.
pub fn estimate(
    medium: &Medium,
    config: &Config,
    compare_with: Option<BackupId>,
    cancel: &AtomicBool,
) -> Result<u64> {
    let parent_root = match compare_with {
        Some(p) => Some(medium.header(p)?.root),
        None => None,
    };
    let meter = Meter::hidden();
    let ctx = Ctx {
        store: medium.store(),
        writer: None,
        medium,
        medium_inode: medium_inode(medium),
        config,
        full: false,
        dry: true,
        estimate: AtomicU64::new(0),
        tally: Tally::default(),
        problems: Mutex::default(),
        meter: &meter,
        cancel,
        chunker: medium.chunker(),
    };
    let vroot = source_tree(&resolve_sources(medium, config)?);
    walk_sources(&ctx, &vroot, parent_root)?;
    Ok(ctx.estimate.into_inner())
}
