//! The medium's transaction API (ARCHITECTURE.md): a backup's blobs written through a
//! [`BackupWriter`], committed by its header and the tree; verified flags, removals, a
//! replaced tree and garbage collection. Every change replaces the tree file last (the commit
//! point of FORMAT.md) and changes the in-memory tree only after it did.

use super::{backup_rel, keyring, records, BackupHeader, Medium, Wait};
use crate::error::{Error, Result};
use crate::ids::{BackupId, BlockId, PackId};
use crate::store::pack::BlobKind;
use crate::store::{GcReport, Reclaim, WriteStats};
use crate::tree::{BackupRecord, Tree};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use tracing::{info, warn};

impl Medium {
    /// Replace `tree.yaml` with `tree` (the commit point of every change), after checking it.
    pub(super) fn save_tree(&self, tree: &Tree) -> Result<()> {
        self.require_writable()?;
        tree.check().map_err(|detail| Error::Damaged {
            path: self.dir.shown("tree.yaml"),
            detail: format!("refusing to write an inconsistent tree: {detail}"),
        })?;
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let (rel, bytes) = records::tree_file(&self.crypt, tree, generation);
        self.dir.atomic_write(rel, &bytes)?;
        self.generation.store(generation, Ordering::Relaxed);
        if let (Some(state_dir), true) = (&self.state_dir, self.crypt.is_sealed()) {
            // After the medium: a crash between the two leaves the host behind, never ahead.
            // The tree is committed by now: a host that cannot keep the record (its state
            // directory full or read-only) loses only rollback detection up to this
            // generation, never the commit.
            if let Err(e) =
                keyring::seen::record_tree_generation(state_dir, &self.media.media_id, generation)
            {
                warn!(medium = %self.media.media_id, cause = %e, "cannot record the tree's generation on this host; a rollback to before it would not be noticed");
            }
        }
        Ok(())
    }

    /// Start writing backup `tree.next_id`. With `check_as_written`, each pack is re-read
    /// from the device in the background as soon as it is closed (for the verify after).
    pub fn begin_backup(&self, check_as_written: bool) -> Result<BackupWriter<'_>> {
        self.require_writable()?;
        let id = self.tree.next_id;
        // The id is marked used on the medium before anything is written under it: a writer
        // killed (or a tray pulled) from here on leaves `backups/<id>/`, and recovery moves
        // `next_id` past it, so the id is never given to another backup.
        self.dir.mkdir(&backup_rel(id))?;
        self.store.begin(id.0, 0);
        if check_as_written {
            self.store.check_packs_as_written();
        }
        Ok(BackupWriter {
            m: self,
            id,
            done: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Commit a backup: its header, then `tree.yaml` listing it (the commit point). On
    /// failure nothing of it stays.
    pub fn commit_backup(&mut self, staged: Staged, header: &BackupHeader) -> Result<()> {
        self.require_writable()?;
        if header.id != staged.id || header.id != self.tree.next_id {
            self.abandon(staged);
            return Err(Error::Refused(
                "backup header does not match its writer".into(),
            ));
        }
        let id = header.id;
        let rel = backup_rel(id);
        let mut tree = self.tree.clone();
        tree.add(BackupRecord {
            id,
            kind: header.kind,
            parent: header.parent,
            started: header.started,
            finished: header.finished,
            verified: false,
            partial: header.partial,
            bytes_total: header.bytes.total,
            bytes_new: header.bytes.new,
            bytes_stored: header.bytes.stored,
        });
        let committed = (|| {
            self.dir.mkdir(&rel)?;
            let (file, bytes) = records::header_file(&self.crypt, header);
            self.dir.atomic_write(&file, &bytes)?;
            self.save_tree(&tree)
        })();
        match committed {
            Ok(()) => {
                self.tree = tree;
                Ok(())
            }
            Err(e) => {
                self.abandon(staged);
                let _ = self.dir.remove_all(&rel);
                Err(e)
            }
        }
    }

    /// Give up a backup whose blobs are written but not committed: delete its packs (or leave
    /// them to recovery).
    pub fn abandon(&mut self, staged: Staged) {
        let _ = staged;
        self.store.abort();
    }

    /// Record the result of verifying backup `id` (spec [0040]); only verified backups are
    /// parents.
    pub fn mark_verified(&mut self, id: BackupId, ok: bool) -> Result<()> {
        let mut tree = self.tree.clone();
        let rec = tree.get_mut(id).ok_or(Error::NoSuchBackup(id))?;
        if rec.verified == ok {
            return Ok(());
        }
        rec.verified = ok;
        self.save_tree(&tree)?;
        self.tree = tree;
        Ok(())
    }

    /// Remove backup `id`: out of `tree.yaml` first (committed; its children take its parent),
    /// then its directory — unless readers are at work, when recovery removes it later.
    pub fn remove_backup(&mut self, id: BackupId) -> Result<BackupRecord> {
        let mut tree = self.tree.clone();
        let rec = tree.remove(id).ok_or(Error::NoSuchBackup(id))?;
        self.save_tree(&tree)?;
        self.tree = tree;
        if let Some(_readers) = self.exclusive(Wait::No)? {
            self.dir.remove_all(&backup_rel(id))?;
        }
        Ok(rec)
    }

    /// Replace the whole tree (`repair --tree`).
    pub fn replace_tree(&mut self, tree: Tree) -> Result<()> {
        self.save_tree(&tree)?;
        self.tree = tree;
        Ok(())
    }

    /// Reclaim the space of blobs not in `live`, from packs with dead blobs as `reclaim` says
    /// (see [`Store::collect_garbage`]). Packs are only deleted while no reader has the medium
    /// open: this waits for readers as `wait` says, and otherwise reclaims nothing and returns
    /// `None` (the garbage stays for later).
    pub fn collect_garbage(
        &mut self,
        live: &HashSet<BlockId>,
        wait: Wait,
        reclaim: Reclaim,
    ) -> Result<Option<GcReport>> {
        self.require_writable()?;
        let Some(_readers) = self.exclusive(wait)? else {
            info!(medium = %self.media.media_id, "readers at work; garbage collection left for later");
            return Ok(None);
        };
        self.remove_unlisted_backups()?;
        self.store.collect_garbage(live, reclaim).map(Some)
    }
}

/// Writing one backup's blobs. Dropped before [`BackupWriter::finish`], it deletes what it
/// wrote.
pub struct BackupWriter<'m> {
    m: &'m Medium,
    id: BackupId,
    done: std::sync::atomic::AtomicBool,
}

/// A backup's blobs, durable and not yet committed: [`Medium::commit_backup`] or
/// [`Medium::abandon`] it.
#[must_use]
pub struct Staged {
    id: BackupId,
    pub packs: Vec<PackId>,
    pub stats: WriteStats,
}

impl BackupWriter<'_> {
    /// The id the backup will have.
    pub fn id(&self) -> BackupId {
        self.id
    }

    /// Store `raw` unless the medium has it; returns its id.
    pub fn put(&self, kind: BlobKind, raw: &[u8]) -> Result<BlockId> {
        self.m.store.put(kind, raw)
    }

    /// As [`BackupWriter::put`] with the id already computed; returns whether it was new.
    pub fn put_with_id(&self, kind: BlobKind, id: BlockId, raw: &[u8]) -> Result<bool> {
        self.m.store.put_with_id(kind, id, raw)
    }

    /// Close the open packs: every blob written is durable. Dropping the writer after this
    /// deletes nothing: the staged backup is committed or abandoned.
    pub fn finish(&self) -> Result<Staged> {
        let (packs, stats) = self.m.store.flush()?;
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Staged {
            id: self.id,
            packs,
            stats,
        })
    }
}

impl Drop for BackupWriter<'_> {
    fn drop(&mut self) {
        if !self.done.load(std::sync::atomic::Ordering::Relaxed) {
            self.m.store.abort();
        }
    }
}
