//! Enrolling a medium: `trayback/` made private, its directories, the host's key (and for an
//! encrypted medium its data key, recovery key and slots), the first tree, and the media ID
//! file last — it is what makes a directory a medium.
//!
//! Invariants: an enrolled medium is wiped (`--force`) only once proven to be this host's; the
//! host keeps its key before anything that needs it is written to the medium.

use super::{key, keyring, kit, lock_writer, read_media, records, Beneath, MediaFile, Medium};
use super::{MEDIA_FORMAT, READERS_LOCK};
use crate::crypt::Crypt;
use crate::error::{Error, Result};
use crate::ids::MediaId;
use crate::tree::{Tree, TreeFormat};
use chrono::{DateTime, Utc};
use std::path::Path;
use tracing::info;

/// How a new medium is protected.
pub enum Protection {
    /// Records in plaintext, checked by SHA-256 (`media init --plaintext`).
    Plaintext,
    /// Encrypted: a recovery key is made, and a passphrase slot if one is given.
    Encrypted {
        passphrase: Option<zeroize::Zeroizing<String>>,
    },
}

/// What a new medium is to be: the arguments of [`Medium::init`].
pub struct Enrolment<'a> {
    pub label: &'a str,
    /// Wipe an enrolled medium first (only one proven to be this host's).
    pub force: bool,
    pub now: DateTime<Utc>,
    /// Where the host keeps the medium's key.
    pub state_dir: &'a Path,
    pub protection: Protection,
    /// [`TreeFormat::NEWEST`] unless an older trayback must read the medium too
    /// (FORMAT.md "Versioning").
    pub tree_format: TreeFormat,
}

/// What enrolling made: the media ID file, and for an encrypted medium its recovery key (to
/// be shown once, never kept).
pub struct Enrolled {
    pub media: MediaFile,
    pub recovery: Option<crate::crypt::recovery::RecoveryKey>,
}

pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

impl Medium {
    /// Enrol `root` as a new medium, keeping its key in the state directory. Refuses an
    /// enrolled one unless `force` (which wipes it, and only a medium proven to be this
    /// host's).
    pub fn init(root: &Path, e: Enrolment) -> Result<Enrolled> {
        let Enrolment {
            label,
            force,
            now,
            state_dir,
            protection,
            tree_format,
        } = e;
        let dir = Beneath::create(root)?;
        dir.make_private()?;
        if dir.exists("media.yaml")? {
            if !force {
                let (id, label) = match read_media(&dir) {
                    Ok(m) => (m.media_id.to_string(), m.label),
                    Err(_) => ("(unreadable)".into(), String::new()),
                };
                return Err(Error::AlreadyEnrolled {
                    path: root.to_path_buf(),
                    id,
                    label,
                    // Counted from the backups' directories: an encrypted tree needs a key.
                    backups: match dir.exists("backups") {
                        Ok(false) => Some(0),
                        _ => dir.list("backups").ok().map(|v| v.len()),
                    },
                });
            }
            key::prove(state_dir, root, &read_media(&dir)?)?;
            dir.mkdir("locks")?;
            let lock = lock_writer(&dir)?;
            // Unenrol first (the marker goes before the data), then wipe.
            dir.remove_file("media.yaml")?;
            for sub in ["backups", "packs", "tmp", "tree.yaml", "tree.sealed"] {
                dir.remove_all(sub)?;
            }
            drop(lock);
        }
        for sub in ["backups", "packs", "locks", "tmp"] {
            dir.mkdir(sub)?;
        }
        drop(lock_writer(&dir)?);
        drop(dir.open_lock(READERS_LOCK)?); // readers find it from now on
        let mut media = MediaFile {
            format: MEDIA_FORMAT,
            media_id: MediaId(uuid::Uuid::new_v4()),
            label: label.to_string(),
            host: host_name(),
            created: now,
            encryption: None,
            mac: None,
        };
        // The host's key is kept before the tree and the ID file that need it are written.
        let (crypt, recovery) = match protection {
            Protection::Plaintext => {
                key::enrol(state_dir, &mut media)?;
                (Crypt::Plain, None)
            }
            Protection::Encrypted { passphrase } => {
                let (c, r) = keyring::enrol(
                    state_dir,
                    &mut media,
                    passphrase.as_deref().map(|p| p.as_str()),
                )?;
                (c, Some(r))
            }
        };
        let tree = Tree {
            format: tree_format,
            ..Tree::default()
        };
        let (rel, bytes) = records::tree_file(&crypt, &tree, 1);
        dir.atomic_write(rel, &bytes)?;
        if crypt.is_sealed() {
            keyring::seen::record_tree_generation(state_dir, &media.media_id, 1)?;
        }
        let text = serde_yaml::to_string(&media).expect("a media file serializes");
        // The media ID file is written last: it is what makes the directory a medium.
        dir.atomic_write("media.yaml", text.as_bytes())?;
        if crypt.is_sealed() {
            keyring::enrolled(state_dir, &media);
        }
        kit::refresh_quietly(root, &dir, &media);
        info!(medium = %media.media_id, label, path = %root.display(), encrypted = crypt.is_sealed(), "medium enrolled");
        Ok(Enrolled { media, recovery })
    }
}
