//! Opening a medium: for reading (a shared readers' lock, no recovery, unlocked as
//! [`Unlock`] says), for writing (proven this host's, the exclusive lock, proven again under
//! it, then recovery) and for `repair --tree`.
//!
//! Invariants: nothing is written before the proof; a writer and a host reader refuse a tree
//! older than the newest generation this host saw of an encrypted medium; recovery removes
//! only what an interrupted writer left and never touches anything the tree lists.

use super::{
    backup_of_name, backup_rel, key, keyring, kit, lock_writer, read_media, read_media_bytes,
    records, share_readers_lock, Beneath, ForeignReason, Hold, MediaFile, Medium, Unlock, Unproven,
    Wait, READERS_LOCK,
};
use crate::crypt::Crypt;
use crate::error::{Error, Result};
use crate::ids::{BackupId, MediaId};
use crate::store::{self, Store};
use crate::tree::Tree;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tracing::{info, warn};

impl Medium {
    /// The media ID file of `root` and its exact bytes (to tell, after a remount, that it is
    /// the same file), read as every record is: beneath the medium, capped, regular only.
    pub fn identify_with_bytes(root: &Path) -> Result<(MediaFile, Vec<u8>)> {
        read_media_bytes(&Beneath::open(root)?)
    }

    /// The media id named by the ID file of `root` that [`Medium::identify`] refused, if its
    /// bytes name one (see `claimed_media_id`).
    pub fn claimed_id(root: &Path) -> Option<MediaId> {
        super::claimed_media_id(&Beneath::open(root).ok()?)
    }

    /// Read the media ID file of `root` without opening the store.
    pub fn identify(root: &Path) -> Result<MediaFile> {
        read_media(&Beneath::open(root)?)
    }

    /// Open for reading: a shared readers' lock, no recovery; sees only what the tree
    /// lists. Works on a read-only mount and writes nothing. An encrypted medium is unlocked
    /// as `unlock` says (and a tree older than this host saw of it is refused).
    pub fn open_read(root: &Path, unlock: &Unlock) -> Result<Medium> {
        let dir = Beneath::open(root)?;
        let media = read_media(&dir)?;
        let crypt = keyring::unlock(root, &media, unlock)?;
        let hold = Hold::Read(share_readers_lock(&dir)?);
        let state = unlock.state_dir.map(Path::to_path_buf);
        let m = Medium::open(root, dir, media, hold, 3, crypt, state, records::read_tree)?;
        m.check_generation()?;
        Ok(m)
    }

    /// Open for writing, only a medium proven to be this host's (its `media.yaml` MAC
    /// verifies with the key kept in `state_dir`): the proof before anything is written, the
    /// exclusive lock, the same proven file again under the lock, then recovery.
    pub fn open_write(root: &Path, level: i32, state_dir: &Path) -> Result<Medium> {
        let (dir, media, hold, crypt) = Medium::lock_proven(root, state_dir)?;
        let state = Some(state_dir.to_path_buf());
        let mut m = Medium::open(
            root,
            dir,
            media,
            hold,
            level,
            crypt,
            state,
            records::read_tree,
        )?;
        m.check_generation()?;
        m.recover()?;
        kit::refresh_quietly(root, &m.dir, &m.media);
        Ok(m)
    }

    /// Open for `repair --tree` (proven and locked as [`Medium::open_write`]), with an empty
    /// tree in place of a damaged one and no recovery (which would take every backup for
    /// uncommitted).
    pub fn open_for_repair(root: &Path, state_dir: &Path) -> Result<Medium> {
        let (dir, media, hold, crypt) = Medium::lock_proven(root, state_dir)?;
        let state = Some(state_dir.to_path_buf());
        let m = Medium::open(root, dir, media, hold, 3, crypt, state, |_, _| {
            Ok((Tree::default(), 0))
        })?;
        // The repaired tree is written as a generation newer than any this host saw.
        if let Some(seen) = keyring::seen::tree_generation(state_dir, &m.media.media_id)? {
            m.generation.store(seen, Ordering::Relaxed);
        }
        Ok(m)
    }

    /// Refuse a tree older than the newest generation this host wrote to or read from this
    /// medium (an old `tree.sealed` put back), and remember a newer one.
    fn check_generation(&self) -> Result<()> {
        let (Some(state_dir), true) = (&self.state_dir, self.crypt.is_sealed()) else {
            return Ok(());
        };
        let now = self.generation.load(Ordering::Relaxed);
        match keyring::seen::tree_generation(state_dir, &self.media.media_id)? {
            Some(seen) if now < seen => Err(Error::Damaged {
                path: self.tree_path(),
                detail: format!(
                    "rolled back: generation {now}, older than generation {seen} this host already saw of this medium (an old tree file put back)"
                ),
            }),
            Some(seen) if now == seen => Ok(()),
            _ if self.writable() => {
                keyring::seen::record_tree_generation(state_dir, &self.media.media_id, now)
            }
            // A reader records nothing (the state directory may not be ours to write).
            _ => Ok(()),
        }
    }

    fn lock_proven(root: &Path, state_dir: &Path) -> Result<(Beneath, MediaFile, Hold, Crypt)> {
        let dir = Beneath::open(root)?;
        let media = read_media(&dir)?;
        let (proof, _) = key::prove_and_unlock(state_dir, root, &media)?;
        let hold = Hold::Write(lock_writer(&dir)?);
        // Another writer could have replaced media.yaml before we held the lock.
        let again = read_media(&dir)?;
        let (proof_again, crypt) = key::prove_and_unlock(state_dir, root, &again)?;
        if proof_again != proof {
            return Err(Error::Foreign {
                path: root.to_path_buf(),
                reason: ForeignReason::new(&again, Unproven::Changed),
            });
        }
        dir.make_private()?;
        drop(dir.open_lock(READERS_LOCK)?); // readers find it from now on
        Ok((dir, again, hold, crypt))
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        root: &Path,
        dir: Beneath,
        media: MediaFile,
        hold: Hold,
        level: i32,
        crypt: Crypt,
        state_dir: Option<PathBuf>,
        tree: fn(&Beneath, &Crypt) -> Result<(Tree, u64)>,
    ) -> Result<Medium> {
        let (tree, generation) = tree(&dir, &crypt)?;
        let dir = Arc::new(dir);
        let framed = tree.format.framed();
        let (store, damage) = Store::open(dir.clone(), level, crypt.clone(), framed)?;
        for d in &damage {
            warn!(path = %d.path.display(), detail = %d.detail, "unreadable pack");
        }
        Ok(Medium {
            root: root.to_path_buf(),
            dir,
            media,
            tree,
            store,
            hold,
            crypt,
            generation: AtomicU64::new(generation),
            state_dir,
        })
    }

    /// Remove what an interrupted writer left behind. Touches nothing `tree.yaml` lists.
    /// Deletions wait for no reader: with readers at work they are left for the next time.
    /// One writer at a time: the only id an interrupted or failed backup can have used is
    /// `next_id` (`begin_backup` marks it with its directory before writing anything). If it
    /// was used, it is not used again. Other names and footers are not believed (a crafted
    /// `backups/18446744073709551614/` would end all backups). This needs no deletion, so it
    /// is done even while readers are at work.
    pub(crate) fn retire_used_id(&mut self) -> Result<()> {
        let id = self.tree.next_id;
        let used = self.dir.exists(&backup_rel(id))?
            || self
                .store
                .packs()
                .iter()
                .any(|p| p.flags & store::pack::FLAG_GC == 0 && p.writer == id.0);
        if let (true, Some(next)) = (used, id.0.checked_add(1)) {
            let mut tree = self.tree.clone();
            tree.next_id = BackupId(next);
            self.save_tree(&tree)?;
            info!(medium = %self.media.media_id, next_id = next, "the id of an uncommitted backup is not used again");
            self.tree = tree;
        }
        Ok(())
    }

    fn recover(&mut self) -> Result<()> {
        self.dir.mkdir("tmp")?;
        for (name, _) in self.dir.list("tmp")? {
            let shown = self.dir.shown("tmp").join(&name);
            warn!(path = %shown.display(), "recovery: removing temporary file");
            self.dir.remove_child("tmp", &name)?;
        }
        let id = self.tree.next_id;
        self.retire_used_id()?;
        let Some(_readers) = self.exclusive(Wait::No)? else {
            info!(medium = %self.media.media_id, "readers at work; recovery leaves deletions for later");
            return Ok(());
        };
        for p in self.store.packs() {
            if p.flags & store::pack::FLAG_GC == 0
                && p.writer >= id.0
                // On an encrypted medium the footer must authenticate before it is believed.
                && (!self.crypt.is_sealed() || self.store.trailer_intact(&p.id))
            {
                warn!(pack = %p.id, backup = p.writer, "recovery: removing pack of an uncommitted backup");
                self.store.remove_pack(&p.id)?;
            }
        }
        self.remove_unlisted_backups()
    }

    /// Remove `backups/<id>/` directories that the tree does not list (uncommitted or pared).
    pub(super) fn remove_unlisted_backups(&self) -> Result<()> {
        for (name, _) in self.dir.list("backups")? {
            let listed = backup_of_name(&name).is_some_and(|id| self.tree.get(id).is_some());
            if !listed {
                let shown = self.dir.shown("backups").join(&name);
                warn!(path = %shown.display(), "recovery: removing uncommitted or pared backup");
                self.dir.remove_child("backups", &name)?;
            }
        }
        Ok(())
    }
}
