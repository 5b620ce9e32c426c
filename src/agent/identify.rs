//! Deciding what an inserted disk is, and checking it again once mounted read-write.
//!
//! Invariants:
//! - identification mounts read-only with no journal or log replay (`mounts::FsType`), on a
//!   device made read-only in the kernel for as long as it lasts (`mounts::ReadOnlyDevice`),
//!   so it never changes a byte of the disk, and reads at most a 64 KiB media ID file;
//! - a disk is [`Identity::Ours`] only if its `media.yaml` MAC verifies with the key this host
//!   keeps for its id (`medium::prove`); claiming this host or a known id proves nothing;
//! - [`open_identified`] runs on the read-write mount before anything is written and refuses
//!   a disk whose `media.yaml` is not byte for byte the one proven (or a blank disk that is no
//!   longer blank): the replay the identification skipped has happened by then;
//! - a file system whose journal (or log) still needs replaying and that shows no readable
//!   media ID file read-only is [`Identity::NeedsRecovery`], never blank, only if this host
//!   enrolled a medium on it (its file system UUID is registered: `register`, written before
//!   the first write to it by the agent's enrolment and by `media init`): the read-write
//!   mount replays the journal, and only what then proves to be this host's is used. A tray
//!   pulled soon after a commit is recognised, never offered for wiping. Any other dirty
//!   file system — a stranger's, whatever label it carries — is refused as it is, never
//!   mounted read-write, with one line saying to recover it where it was written;
//! - an encrypted medium whose ID file or key wrap was altered, or whose ID file is older than
//!   this host saw, is [`Identity::Tampered`] (or [`Refusal::Tampered`] once mounted
//!   read-write), never written — whatever host its ID file names;
//! - a blank disk is enrolled encrypted unless the config says `encrypt: false`; its recovery
//!   key, which no one is there to read, goes to a root-only file in the state directory.

use super::devices::Disk;
use super::{mounts, superblock};
use crate::error::Error;
use crate::medium::{self, ForeignReason, MediaFile, Medium, Proof, Unproven};
use chrono::{DateTime, Utc};
use std::path::Path;
use tracing::info;

/// A medium identified read-only and proven to be this host's.
pub(super) struct Identified {
    pub media: MediaFile,
    /// `media.yaml` as read on the identification mount, compared byte for byte with what
    /// the read-write mount shows.
    pub bytes: Vec<u8>,
    pub proof: Proof,
}

pub(super) enum Identity {
    Ours(Identified),
    Blank,
    /// No readable media ID file without the journal, a journal to replay, on a file system
    /// this host enrolled a medium on: decided on the read-write mount, after the replay.
    NeedsRecovery,
    /// A media ID file, but not this host's medium (another host's, or not proven).
    NotOurs(MediaFile, String),
    /// An encrypted medium whose ID file or key wrap was altered (the file, unless it no
    /// longer reads: then only the id it names is known).
    Tampered(Option<MediaFile>, String),
    Foreign(String),
    /// Mounted (or claimed) by someone else meanwhile: not a tray now, as a disk already
    /// mounted elsewhere when it appeared is not; left alone, not notified.
    Busy,
}

/// Why a disk mounted read-write is not used: it is not what was identified (foreign,
/// notified as an unknown medium), or something failed.
pub(super) enum Refusal {
    Foreign(String),
    Tampered(String),
    Failed(String),
    /// The disk reports I/O errors (or the kernel made it read-only): notified as failing.
    Failing(String),
}

/// A refusal to write, as one line naming the device (not our mount point).
pub(super) fn refusal(disk: &Disk, e: Error) -> Refusal {
    match e {
        Error::Foreign { reason, .. } if reason.why.is_tampering() => {
            Refusal::Tampered(format!("{}: {reason}", disk.devnode.display()))
        }
        Error::Foreign { reason, .. } => {
            Refusal::Foreign(format!("{}: {reason}", disk.devnode.display()))
        }
        e => failed(e),
    }
}

/// A failure to use a disk: a failing disk told from other failures.
fn failed(e: Error) -> Refusal {
    if e.is_medium_failing() {
        Refusal::Failing(e.to_string())
    } else {
        Refusal::Failed(e.to_string())
    }
}

/// Mount read-only without any journal or log replay, read the media ID file, and decide
/// what the disk is: this host's medium only if its MAC verifies with this host's key.
pub(super) fn identify(
    disk: &Disk,
    fstype: mounts::FsType,
    mp: &Path,
    auto: Option<&globset::GlobMatcher>,
    host: &str,
    state_dir: &Path,
    known_fs: bool,
) -> Identity {
    // The device is read-only in the kernel until identification ends, so no mount or tool
    // here writes to it.
    let _read_only = match mounts::ReadOnlyDevice::hold(&disk.devnode) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
            return Identity::Busy;
        }
        Err(e) => {
            return Identity::Foreign(format!(
                "{}: cannot make the device read-only to identify it: {e}; not mounting it",
                disk.devnode.display()
            ))
        }
    };
    if let Err(e) = mounts::mount(disk, fstype, mp, false) {
        return Identity::Foreign(format!(
            "{}: cannot mount {} read-only: {e}",
            disk.devnode.display(),
            disk.fs_type
        ));
    }
    // Read beneath the medium like every record: a symlink, a FIFO or an oversized file is
    // refused without being followed, blocked on or read whole.
    let (found, bytes) = match Medium::identify_with_bytes(mp) {
        Ok((m, b)) => (Ok(m), b),
        Err(e) => (Err(e), Vec::new()),
    };
    // An ID file that does not read, naming a medium this host holds a key for: one of its
    // trays, altered while away.
    let altered_ours = match &found {
        Err(Error::NotEnrolled(_)) | Ok(_) => None,
        Err(_) => {
            Medium::claimed_id(mp).filter(|id| crate::medium::key_path(state_dir, id).exists())
        }
    };
    let blank = mounts::is_blank(mp);
    let _ = mounts::unmount(mp, false);
    let label = disk.label.clone().unwrap_or_default();
    let auto_match = auto.is_some_and(|g| g.is_match(&label));
    // No media ID file without the journal, and a journal to replay: only a file system this
    // host enrolled a medium on is replayed (its media may be held only in that journal);
    // any other is a stranger's, never written.
    let dirty = (found.is_err() && (auto_match || known_fs))
        .then(|| superblock::needs_recovery(&disk.devnode, fstype));
    // A stranger's disk that looks blank, whose log trayback cannot tell clean (an XFS
    // without xfsprogs' `xfs_logprint` on this host, or with an external log): enrolling it
    // mounts it read-write, which would replay a log that may be dirty.
    if dirty == Some(None) && !known_fs && blank {
        return Identity::Foreign(format!(
            "{}: label {label:?} matches auto-enrol, but trayback cannot tell whether its {} needs replaying{}; not mounting it read-write (enrol it with `trayback media init` if it is yours)",
            disk.devnode.display(),
            if fstype == mounts::FsType::Xfs { "XFS log" } else { "journal" },
            if fstype == mounts::FsType::Xfs { " (that needs xfs_logprint, from xfsprogs, and an internal log)" } else { "" },
        ));
    }
    if dirty == Some(Some(true)) {
        if known_fs {
            info!(device = %disk.devnode.display(), "no media ID file without the journal, and the journal needs replaying: mounting read-write to recover it");
            return Identity::NeedsRecovery;
        }
        return Identity::Foreign(format!(
            "{}: its {} needs replaying, and this host never enrolled a medium on this file system; not mounting it read-write. Recover it where it was written (mount it there), or check it with {}",
            disk.devnode.display(),
            if fstype == mounts::FsType::Btrfs || fstype == mounts::FsType::Xfs { "log" } else { "journal" },
            match fstype {
                mounts::FsType::Xfs => "xfs_repair",
                mounts::FsType::Btrfs => "btrfs check",
                _ => "e2fsck",
            }
        ));
    }
    match found {
        // Proven even when it names another host: one of this host's media with its `host:`
        // altered is tampered, not a stranger (a stranger's fails at once: no key for its id).
        Ok(m) => match medium::prove(state_dir, mp, &m) {
            Ok(proof) if m.host == host => Identity::Ours(Identified {
                media: m,
                bytes,
                proof,
            }),
            Err(e) => match refusal(disk, e) {
                Refusal::Tampered(why) => Identity::Tampered(Some(m), why),
                _ if m.host != host => another_hosts(m, host),
                Refusal::Foreign(why) => Identity::NotOurs(m, why),
                Refusal::Failed(e) | Refusal::Failing(e) => {
                    let why = format!(
                        "{}: cannot check medium {}: {e}",
                        disk.devnode.display(),
                        m.media_id
                    );
                    Identity::NotOurs(m, why)
                }
            },
            // Proven, under another host name (this host renamed): `media adopt` takes it.
            Ok(_) => another_hosts(m, host),
        },
        Err(Error::NotEnrolled(_)) if blank && auto_match => Identity::Blank,
        Err(Error::NotEnrolled(_)) if auto_match => {
            Identity::Foreign(format!("{}: label {label:?} matches auto-enrol, but the file system holds files, so it is not enrolled automatically and was left as it was", disk.devnode.display()))
        }
        Err(Error::NotEnrolled(_)) => Identity::Foreign(format!("{}: no trayback media ID file and label {label:?} does not match auto-enrol; a foreign disk", disk.devnode.display())),
        Err(e) => match altered_ours {
            Some(id) => Identity::Tampered(None, format!("{}: the media ID file of this host's medium {id} was altered: {e}", disk.devnode.display())),
            None => Identity::Foreign(format!("{}: unreadable media ID file: {e}", disk.devnode.display())),
        },
    }
}

/// A medium naming another host, not proven to be this host's.
fn another_hosts(m: MediaFile, host: &str) -> Identity {
    let why = format!(
        "medium {} ({:?}) belongs to host {:?}, not {:?}; not writing to it",
        m.media_id,
        m.label.chars().take(64).collect::<String>(),
        m.host.chars().take(64).collect::<String>(),
        host
    );
    Identity::NotOurs(m, why)
}

/// What the read-write mount must show before anything is written.
pub(super) enum Expect<'a> {
    /// The medium proven read-only: the same `media.yaml`, byte for byte, proven again.
    Proven(&'a Identified),
    /// A blank file system (identified read-only as blank, or one whose journal needed
    /// replaying): still blank (then enrolled, if `enrol`), or, after the replay, a medium
    /// that proves to be this host's.
    BlankOrRecovered { enrol: bool },
}

/// On the read-write mount, before anything is written: the disk must still be what was
/// identified read-only (the replay skipped then has happened now). Then enrol a blank one,
/// and open with recovery.
pub(super) fn open_identified(
    disk: &Disk,
    mp: &Path,
    expect: Expect,
    now: DateTime<Utc>,
    state_dir: &Path,
    host: &str,
    cfg: &crate::config::Config,
) -> Result<Medium, Refusal> {
    let changed = |m: &MediaFile| {
        Refusal::Foreign(format!(
            "{}: {}",
            disk.devnode.display(),
            ForeignReason::new(m, Unproven::Changed)
        ))
    };
    let proven = match expect {
        Expect::Proven(id) => {
            let (m, bytes) = Medium::identify_with_bytes(mp).map_err(|_| changed(&id.media))?;
            if bytes != id.bytes {
                return Err(changed(&id.media));
            }
            let proof = medium::prove(state_dir, mp, &m).map_err(|e| refusal(disk, e))?;
            if proof != id.proof {
                return Err(changed(&id.media));
            }
            Some(proof)
        }
        Expect::BlankOrRecovered { enrol } if mounts::is_blank(mp) => {
            if !enrol {
                return Err(Refusal::Foreign(format!(
                    "{}: blank once its journal was replayed, and its label does not match auto-enrol; not enrolling it",
                    disk.devnode.display()
                )));
            }
            let label = disk.label.clone().unwrap_or_else(|| disk.fs_uuid.clone());
            let protection = if cfg.encrypt {
                medium::Protection::Encrypted { passphrase: None }
            } else {
                medium::Protection::Plaintext
            };
            let enrolled = Medium::init(
                mp,
                medium::Enrolment {
                    label: &label,
                    force: false,
                    now,
                    state_dir,
                    protection,
                    tree_format: cfg.tree_format,
                },
            )
            .map_err(failed)?;
            if let Some(r) = &enrolled.recovery {
                let path = medium::keep_recovery_key(state_dir, &enrolled.media.media_id, r)
                    .map_err(|e| Refusal::Failed(e.to_string()))?;
                tracing::warn!(medium = %enrolled.media.media_id, file = %path.display(), "encrypted medium enrolled: its recovery key is in this root-only file; print it, keep it apart from this host, and delete the file");
            }
            info!(device = %disk.devnode.display(), %label, "blank medium enrolled");
            None
        }
        Expect::BlankOrRecovered { .. } => {
            // Not blank read-write: the journal replay brought back a medium. Use it only if
            // it proves to be this host's.
            let m = Medium::identify(mp).map_err(|e| {
                Refusal::Foreign(format!(
                    "{}: not blank once its journal was replayed, and no medium of this host's: {e}; not using it",
                    disk.devnode.display()
                ))
            })?;
            let proof = medium::prove(state_dir, mp, &m).map_err(|e| refusal(disk, e));
            if m.host != host && !matches!(proof, Err(Refusal::Tampered(_))) {
                return Err(Refusal::Foreign(format!(
                    "{}: after its journal was replayed, medium {} belongs to another host; not writing to it",
                    disk.devnode.display(),
                    m.media_id
                )));
            }
            let proof = proof?;
            info!(device = %disk.devnode.display(), medium = %m.media_id, "medium recognised after its journal was replayed");
            Some(proof)
        }
    };
    let m = Medium::open_write(mp, cfg.compression_level, state_dir).map_err(failed)?;
    // What the writer opened is what was proven.
    let proof = medium::prove(state_dir, mp, m.media()).map_err(|e| refusal(disk, e))?;
    if proven.is_some_and(|p| p != proof) {
        return Err(changed(m.media()));
    }
    Ok(m)
}
