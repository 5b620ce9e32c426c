//! The hot-plug agent: follows udev, recognises inserted media by their media ID file, and
//! backs up to each by its own tree; answers the CLI on a control socket.
//!
//! Shape (mini-redis `server::run`): the main loop is a `select!` over udev events, signals
//! and a periodic check; each inserted medium has a task whose loop is a `select!` over the
//! next due time (from the pure schedule), commands and clock changes; engine work runs in
//! `spawn_blocking`.
//!
//! Invariants:
//! - a disk is written only if it is proven to be this host's (`medium::prove`: its
//!   `media.yaml` MAC verifies with the key this host keeps for its id), or is blank and its
//!   label matches the configured `auto_enrol_label`; what a disk merely says (its host, its
//!   id) proves nothing;
//! - a foreign disk, another host's medium, an unproven or unreadable one is only ever
//!   mounted read-only, with no journal or log replay (`mounts::FsType`), never written,
//!   never recovered, notified once, and never updates the register;
//! - after the read-write mount and before any write, `media.yaml` is read again and must be
//!   byte for byte the file proven (a blank disk must still be blank): a replay the
//!   identification skipped cannot change what is written to;
//! - before every job the mount point is checked to still be the device's;
//! - a medium the agent holds is written only by its task: the CLI's jobs on it are run by
//!   the task (`asked`), and a lend leaves the task holding nothing until it has opened and
//!   proven the medium again;
//! - a dirty file system is replayed only if this host enrolled a medium on it (`register`);
//! - a pulled medium's job is cancelled and its mount detached only after the job ended, so
//!   no write can land on the root file system under the empty mount point;
//! - each medium's task runs under a supervisor: if it (or its engine work) panics, that
//!   medium is unmounted, forgotten and notified, and nothing else is affected; no task
//!   result is unwrapped.

mod answer;
mod asked;
mod clock;
mod control;
mod devices;
mod durable;
mod identify;
mod metrics_file;
mod mounts;
mod notify;
mod register;
mod superblock;
mod supervise;
mod task;

pub use control::{
    ask_status, call, call_with_progress, lend, not_running, socket_path, ConfigFile, Lease, Phase,
    Progress, Request, Response, STATUS_WAIT,
};
pub use register::{knows_file_system, remember_file_system_at};

use crate::config::{Config, MultipleMedia};
use crate::job;
use crate::logging::LogEvent;
use crate::medium::{self, MediaFile, Medium};
use crate::progress::Meter;
use crate::schedule::{self, Due, Why};
use crate::sizing;
use crate::status;
use crate::status::EventKind;
use crate::tree::Kind;
use chrono::{DateTime, Duration, Utc};
use clock::Clock;
use devices::{Disk, DiskEvent};
use identify::{identify, open_identified, Expect, Identity, Refusal};
use notify::Event as Note;
use register::Register;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
pub(crate) use supervise::Locked;
use supervise::{panic_message, test_panic_hook, PanicAt, Released, Session};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

pub struct Options {
    pub config: Config,
    pub socket: PathBuf,
    pub test_clock: bool,
}

enum Cmd {
    BackupNow(oneshot::Sender<Response>),
    Eject(oneshot::Sender<Response>),
    /// A job the CLI asked for (verify, backup, pare, repair), run when the medium is idle.
    Asked(asked::Asked),
    /// Lend the medium to a command for as long as its connection lasts.
    Lend(asked::Lend),
    Stop,
}

struct Running {
    kind: Kind,
    /// The id the backup gets if it commits.
    id: u64,
    started: DateTime<Utc>,
    meter: Arc<Meter>,
}

#[derive(Default)]
struct Live {
    job: Option<Running>,
    next_due: Option<DateTime<Utc>>,
    backups: usize,
    newest: BTreeMap<Kind, (DateTime<Utc>, u64)>,
    free_bytes: Option<u64>,
    size_bytes: Option<u64>,
    /// The newest verification run on it this insertion (`status`, metrics).
    last_verify: Option<status::Verified>,
    /// Backups pared on it this insertion.
    pared: u64,
    last_error: Option<String>,
    /// How far back each kind will reach on it (`status`).
    reach: Option<crate::sizing::Reach>,
    /// The tray was pulled (or its file system went away): its job is being cancelled.
    pulled: bool,
    /// An eject was asked for: the device going away next is the eject's power-down.
    ejecting: bool,
    /// The medium reported I/O errors: nothing more is written to it in this session.
    failing: Option<String>,
    /// Lent to a command: the task holds no writer lock until the lend ends.
    lent: bool,
}

struct Inserted {
    disk: Disk,
    media: MediaFile,
    mountpoint: PathBuf,
    seq: u64,
    tx: mpsc::Sender<Cmd>,
    cancel: Arc<AtomicBool>,
    live: Arc<Mutex<Live>>,
}

/// What the control handler needs of an inserted medium: its command channel, its cancel
/// flag and its live state.
type Handle = (mpsc::Sender<Cmd>, Arc<AtomicBool>, Arc<Mutex<Live>>);

struct Agent {
    cfg: Config,
    clock: Clock,
    host: String,
    register: Mutex<Register>,
    /// Writes the register file, off the async workers.
    saver: register::Saver,
    inserted: Mutex<HashMap<PathBuf, Inserted>>,
    tasks: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Media whose task failed, by device, until the device goes or comes back.
    released: Mutex<HashMap<PathBuf, Released>>,
    /// Disks refused as unknown (device, file system UUID), until the device goes: udev
    /// repeats events for a device, the notification is sent once.
    refused: Mutex<HashSet<(PathBuf, String)>>,
    test_panic: Option<(PanicAt, String)>,
    warnings: Mutex<Vec<String>>,
    seq: AtomicU64,
    changed: watch::Sender<u64>,
    /// Disks to identify again (enrolled by `media init` while the agent ran), handled by
    /// the main loop like udev's events.
    rescan: mpsc::UnboundedSender<Disk>,
    /// Disks found held by someone else while being identified, and how often: looked at
    /// again a moment later, a few times (another program's mount, or another prober's
    /// exclusive open, lets go).
    busy: Mutex<HashMap<PathBuf, u32>>,
    /// The newest failure notified (`status`, metrics).
    last_failure: Mutex<Option<status::LastFailure>>,
    /// Rewrites the metrics file when poked (and on every change of the inserted media).
    metrics: metrics_file::Poke,
}

/// How many times, a second apart, a disk found held elsewhere is identified again.
const BUSY_RETRIES: u32 = 10;

/// Run the agent until SIGTERM or SIGINT.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(main_loop(opts))
}

async fn main_loop(opts: Options) -> anyhow::Result<()> {
    let cfg = opts.config;
    std::fs::create_dir_all(&cfg.agent.run_dir)?;
    std::fs::set_permissions(&cfg.agent.run_dir, std::fs::Permissions::from_mode(0o700))?;
    // Made before anything is written to it (the metrics file's default place is here).
    std::fs::create_dir_all(&cfg.agent.state_dir)?;
    let (rescan, mut rescans) = mpsc::unbounded_channel();
    let state = cfg.agent.state_dir.clone();
    let register = tokio::task::spawn_blocking(move || Register::load(&state)).await?;
    let agent = Arc::new(Agent {
        rescan,
        busy: Mutex::new(HashMap::new()),
        register: Mutex::new(register),
        saver: register::Saver::start(),
        clock: Clock::new(opts.test_clock),
        host: medium::host_name(),
        inserted: Mutex::new(HashMap::new()),
        tasks: Mutex::new(HashMap::new()),
        released: Mutex::new(HashMap::new()),
        refused: Mutex::new(HashSet::new()),
        test_panic: opts.test_clock.then(test_panic_hook).flatten(),
        warnings: Mutex::new(Vec::new()),
        seq: AtomicU64::new(0),
        changed: watch::channel(0).0,
        last_failure: Mutex::new(None),
        metrics: metrics_file::Poke::default(),
        cfg,
    });
    let (stop_metrics, metrics_stop) = tokio::sync::oneshot::channel();
    let metrics = tokio::spawn(metrics_file::publish(agent.clone(), metrics_stop));
    // The control socket: root only.
    let _ = std::fs::remove_file(&opts.socket);
    if let Some(dir) = opts.socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(&opts.socket)?;
    std::fs::set_permissions(&opts.socket, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(answer::serve(agent.clone(), listener));

    // SAFETY: the udev monitor socket owns its netlink descriptor for as long as it lives, and
    // `as_raw_fd` always returns that same descriptor.
    let monitor = unsafe {
        AsyncFd::register_with_interest(devices::monitor()?, tokio::io::Interest::READABLE)
    }
    .map_err(|e| anyhow::anyhow!("cannot watch udev: {}", e.into_parts().1))?;
    for disk in devices::enumerate()? {
        agent.clone().appeared(disk).await;
    }
    info!(socket = %opts.socket.display(), test_clock = opts.test_clock, "agent running");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            ready = monitor.readable() => {
                let mut guard = ready?;
                let events: Vec<DiskEvent> = guard.get_inner().iter().filter_map(|e| devices::event_of(&e)).collect();
                guard.clear_ready();
                for ev in events {
                    debug!(?ev, "udev");
                    match ev {
                        DiskEvent::Appeared(d) => agent.clone().appeared(d).await,
                        DiskEvent::Gone { devnode } => agent.gone(&devnode),
                    }
                }
            }
            Some(disk) = rescans.recv() => agent.clone().appeared(disk).await,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => agent.check_away(),
        }
    }
    info!("stopping: aborting jobs and unmounting media");
    agent.shutdown().await;
    let _ = stop_metrics.send(());
    if let Err(e) = metrics.await {
        warn!(cause = %e, "the metrics file's writer failed");
    }
    let _ = std::fs::remove_file(&opts.socket);
    Ok(())
}

impl Agent {
    fn note(
        &self,
        event: EventKind,
        disk: Option<&Disk>,
        media: Option<&MediaFile>,
        backup: Option<u64>,
        message: String,
    ) {
        let label = media
            .map(|m| m.label.clone())
            .or_else(|| disk.and_then(|d| d.label.clone()));
        if event.is_failure() {
            *self.last_failure.locked() = Some(status::LastFailure {
                at: self.clock.now(),
                event,
                media_id: media.map(|m| m.media_id),
                label: label.clone(),
                message: message.clone(),
            });
            self.metrics.poke();
        }
        notify::send(
            &self.cfg.agent.notify_command,
            Note {
                event,
                medium: media.map(|m| m.media_id.to_string()),
                label,
                device: disk.map(|d| d.devnode.display().to_string()),
                backup,
                message,
            },
        );
    }

    async fn appeared(self: Arc<Self>, disk: Disk) {
        if self
            .inserted
            .locked()
            .values()
            .any(|i| i.disk.devnode == disk.devnode && i.disk.fs_uuid == disk.fs_uuid)
        {
            return; // a repeated event for a medium we have
        }
        if self
            .refused
            .locked()
            .contains(&(disk.devnode.clone(), disk.fs_uuid.clone()))
        {
            return; // a repeated event for a disk already refused (and notified)
        }
        match &self.cfg.agent.devices {
            Some(set) if !set.is_match(&disk.devnode) => {
                debug!(device = %disk.devnode.display(), "not a configured device");
                return;
            }
            None if !disk.candidate => {
                debug!(device = %disk.devnode.display(), "not removable or hot-pluggable (the udev rule did not mark it a candidate)");
                return;
            }
            _ => {}
        }
        if mounts::mounted_anywhere(disk.devnum) {
            debug!(device = %disk.devnode.display(), "mounted elsewhere; not a tray");
            return;
        }
        self.released.locked().remove(&disk.devnode);
        let Some(fs) = mounts::FsType::from_udev(&disk.fs_type) else {
            let why = format!(
                "{}: file system type {:?} is not one trayback uses (ext2/3/4, xfs, btrfs); not mounting it",
                disk.devnode.display(),
                disk.fs_type
            );
            self.refuse(&disk, None, why);
            return;
        };
        // A clone of an inserted disk (same file system UUID): never mount it over the other.
        let twin = self
            .inserted
            .locked()
            .values()
            .find(|i| i.disk.fs_uuid == disk.fs_uuid)
            .map(|i| (i.disk.devnode.clone(), i.media.clone()));
        if let Some((other, m)) = twin {
            let why = format!("{} is a copy of {} (file system {} and medium {} ({:?}) on both); not using the copy", disk.devnode.display(), other.display(), disk.fs_uuid, m.media_id, m.label);
            warn!("{why}");
            self.warnings.locked().push(why.clone());
            self.remember_refused(&disk);
            self.note(EventKind::DuplicateMedium, Some(&disk), Some(&m), None, why);
            return;
        }
        // A quick re-insertion: let the previous session of this file system finish first.
        let previous = self.tasks.locked().remove(&disk.fs_uuid);
        if let Some(h) = previous {
            let _ = h.await;
        }
        let mp = mounts::mountpoint(&self.cfg.agent.run_dir, &disk);
        let (d2, mp2, auto, host, state) = (
            disk.clone(),
            mp.clone(),
            self.cfg.agent.auto_enrol_label.clone(),
            self.host.clone(),
            self.cfg.agent.state_dir.clone(),
        );
        // A file system this host enrolled a medium on (its journal may be replayed).
        let seen_fs = self
            .register
            .locked()
            .media
            .values()
            .any(|s| s.fs_uuid.as_deref() == Some(disk.fs_uuid.as_str()));
        let identity = match tokio::task::spawn_blocking(move || {
            let known_fs = seen_fs || register::knows_file_system(&state, &d2.fs_uuid);
            identify(&d2, fs, &mp2, auto.as_ref(), &host, &state, known_fs)
        })
        .await
        {
            Ok(i) => i,
            Err(e) => {
                let mp2 = mp.clone();
                let _ = tokio::task::spawn_blocking(move || mounts::unmount(&mp2, true)).await;
                Identity::Foreign(format!(
                    "{}: identification failed ({}); not using this disk",
                    disk.devnode.display(),
                    panic_message(e)
                ))
            }
        };
        let identified = match identity {
            Identity::Busy => {
                debug!(device = %disk.devnode.display(), "mounted or claimed elsewhere meanwhile; not a tray now");
                let tries = {
                    let mut b = self.busy.locked();
                    let n = b.entry(disk.devnode.clone()).or_insert(0);
                    *n += 1;
                    *n
                };
                if tries <= BUSY_RETRIES {
                    let agent = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        // Gone meanwhile (`gone` forgets it): nothing to look at again.
                        if agent.busy.locked().contains_key(&disk.devnode) {
                            let _ = agent.rescan.send(disk);
                        }
                    });
                }
                return;
            }
            Identity::Foreign(why) => {
                self.refuse(&disk, None, why);
                return;
            }
            Identity::NotOurs(m, why) => {
                self.refuse(&disk, Some(&m), why);
                return;
            }
            Identity::Tampered(m, why) => {
                self.refuse_tampered(&disk, m.as_ref(), why);
                return;
            }
            Identity::Ours(id) => {
                let twin = self
                    .inserted
                    .locked()
                    .values()
                    .find(|i| i.media.media_id == id.media.media_id)
                    .map(|i| i.disk.devnode.clone());
                if let Some(other) = twin {
                    let m = &id.media;
                    let why = format!("medium {} ({:?}) is on {} and {} at once (a cloned disk?); using neither copy of it twice", m.media_id, m.label, other.display(), disk.devnode.display());
                    warn!("{why}");
                    self.warnings.locked().push(why.clone());
                    self.remember_refused(&disk);
                    self.note(EventKind::DuplicateMedium, Some(&disk), Some(m), None, why);
                    return;
                }
                Some(id)
            }
            Identity::Blank | Identity::NeedsRecovery => None,
        };
        let enrol = self
            .cfg
            .agent
            .auto_enrol_label
            .as_ref()
            .is_some_and(|g| g.is_match(disk.label.as_deref().unwrap_or_default()));
        // Proven ours, or blank and enrollable: mount read-write, check again that it is what
        // was identified (the replay skipped when identifying happens now), enrol if blank,
        // open with recovery.
        let (d2, mp2, now, state) = (
            disk.clone(),
            mp.clone(),
            self.clock.now(),
            self.cfg.agent.state_dir.clone(),
        );
        let cfg = self.cfg.clone();
        let host = self.host.clone();
        let opened = tokio::task::spawn_blocking(move || -> Result<Medium, Refusal> {
            // A blank disk about to be enrolled is this host's from the read-write mount on:
            // registered first, so a pull before its journal is checkpointed is recovered.
            if identified.is_none() {
                register::remember_file_system(&state, &d2.fs_uuid).map_err(|e| {
                    Refusal::Failed(format!(
                        "cannot record file system {} in {}: {e}; not enrolling it",
                        d2.fs_uuid,
                        state.display()
                    ))
                })?;
            }
            mounts::mount(&d2, fs, &mp2, true).map_err(|e| {
                let msg = format!("cannot mount {} read-write: {e}", d2.devnode.display());
                if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) {
                    Refusal::Failing(msg)
                } else {
                    Refusal::Failed(msg)
                }
            })?;
            let expect = match &identified {
                Some(id) => Expect::Proven(id),
                None => Expect::BlankOrRecovered { enrol },
            };
            let r = open_identified(&d2, &mp2, expect, now, &state, &host, &cfg);
            if let (true, Ok(m)) = (identified.is_none(), &r) {
                if m.tree().backups.is_empty() {
                    if let Some(u) = crate::sizing::check(&mp2, &cfg) {
                        warn!(device = %d2.devnode.display(), capacity = u.capacity, sources = u.sources, "{u}");
                    }
                }
            }
            match &r {
                // Enrolment and recovery are in place, not only in the journal: a tray pulled
                // now is still recognised.
                Ok(_) => {
                    if let Err(e) = durable::checkpoint(&mp2, d2.devnum, fs) {
                        warn!(device = %d2.devnode.display(), cause = %e, "cannot checkpoint the file system's journal");
                    }
                }
                Err(_) => {
                    let _ = mounts::unmount(&mp2, false).or_else(|_| mounts::unmount(&mp2, true));
                }
            }
            r
        })
        .await
        .unwrap_or_else(|e| {
            Err(Refusal::Failed(format!(
                "opening the medium failed ({})",
                panic_message(e)
            )))
        });
        let medium = match opened {
            Ok(m) => m,
            Err(Refusal::Foreign(why)) => {
                self.refuse(&disk, None, why);
                return;
            }
            Err(Refusal::Tampered(why)) => {
                self.refuse_tampered(&disk, None, why);
                return;
            }
            Err(Refusal::Failed(e)) => {
                // Never leave a mount behind, whatever failed.
                let mp2 = mp.clone();
                let _ = tokio::task::spawn_blocking(move || mounts::unmount(&mp2, true)).await;
                error!(device = %disk.devnode.display(), cause = %e, "cannot use medium");
                self.remember_refused(&disk);
                self.note(EventKind::BackupFailed, Some(&disk), None, None, e);
                return;
            }
            Err(Refusal::Failing(e)) => {
                let mp2 = mp.clone();
                let _ = tokio::task::spawn_blocking(move || mounts::unmount(&mp2, true)).await;
                let msg = format!(
                    "{} reports I/O errors: check or replace the disk; trayback does not use it until it is re-inserted ({e})",
                    disk.devnode.display()
                );
                error!(device = %disk.devnode.display(), "{msg}");
                self.warnings.locked().push(msg.clone());
                self.remember_refused(&disk);
                self.note(EventKind::MediumFailing, Some(&disk), None, None, msg);
                return;
            }
        };
        let media = medium.media().clone();
        info!(event = LogEvent::MediumInserted.name(), device = %disk.devnode.display(), medium = %media.media_id, label = %media.label, backups = medium.tree().backups.len(), "medium inserted");
        self.seen(&disk, &medium);
        let (tx, rx) = mpsc::channel(8);
        let cancel = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Live::default()));
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        self.inserted.locked().insert(
            disk.devnode.clone(),
            Inserted {
                disk: disk.clone(),
                media: media.clone(),
                mountpoint: mp.clone(),
                seq,
                tx: tx.clone(),
                cancel: cancel.clone(),
                live: live.clone(),
            },
        );
        self.changed.send_modify(|v| *v += 1);
        let session = Session {
            disk: disk.clone(),
            mp,
            seq,
            media,
            cancel,
            live,
        };
        let handle = tokio::spawn(self.clone().supervise(session, medium, tx, rx));
        self.tasks.locked().insert(disk.fs_uuid.clone(), handle);
    }

    /// Refuse a disk as unknown: logged and notified once, until the device goes.
    fn refuse(&self, disk: &Disk, media: Option<&MediaFile>, why: String) {
        warn!(device = %disk.devnode.display(), %why, "not using this disk");
        self.remember_refused(disk);
        self.note(EventKind::UnknownMedium, Some(disk), media, None, why);
    }

    /// A disk notified as not used: further events for it (udev repeats `add` and `change`)
    /// are ignored until the device goes, so each insertion is notified once.
    fn remember_refused(&self, disk: &Disk) {
        self.refused
            .locked()
            .insert((disk.devnode.clone(), disk.fs_uuid.clone()));
    }

    /// Refuse a medium that was tampered with (issue 11): as [`Self::refuse`], notified as
    /// `tampered_medium`.
    fn refuse_tampered(&self, disk: &Disk, media: Option<&MediaFile>, why: String) {
        warn!(device = %disk.devnode.display(), %why, "tampered medium; not writing to it");
        self.refused
            .locked()
            .insert((disk.devnode.clone(), disk.fs_uuid.clone()));
        self.note(EventKind::TamperedMedium, Some(disk), media, None, why);
    }

    /// A tray was pulled: cancel its job; the task detaches the mount once the job ended.
    fn gone(&self, devnode: &Path) {
        self.released.locked().remove(devnode);
        self.busy.locked().remove(devnode);
        self.refused.locked().retain(|(d, _)| d != devnode);
        let ins = self.inserted.locked().remove(devnode);
        if let Some(i) = ins {
            let mut live = i.live.locked();
            if live.ejecting {
                info!(event = LogEvent::MediumRemoved.name(), device = %devnode.display(), medium = %i.media.media_id, "ejected medium's device removed");
            } else {
                warn!(event = LogEvent::MediumPulled.name(), device = %devnode.display(), medium = %i.media.media_id, "medium pulled");
                live.pulled = true;
            }
            drop(live);
            i.cancel.store(true, Ordering::SeqCst);
            let _ = i.tx.try_send(Cmd::Stop);
            self.changed.send_modify(|v| *v += 1);
        }
    }

    fn may_write(&self, devnode: &Path) -> bool {
        if self.cfg.agent.multiple_media == MultipleMedia::All {
            return true;
        }
        let ins = self.inserted.locked();
        ins.values()
            .max_by_key(|i| i.seq)
            .is_none_or(|i| i.disk.devnode == devnode)
    }

    async fn shutdown(&self) {
        let all: Vec<(Arc<AtomicBool>, mpsc::Sender<Cmd>)> = self
            .inserted
            .lock()
            .unwrap()
            .values()
            .map(|i| (i.cancel.clone(), i.tx.clone()))
            .collect();
        for (c, tx) in all {
            c.store(true, Ordering::SeqCst);
            let _ = tx.try_send(Cmd::Stop);
        }
        let tasks: Vec<_> = self.tasks.locked().drain().map(|(_, h)| h).collect();
        for t in tasks {
            let _ = t.await;
        }
        let saver = self.saver.clone();
        let _ = tokio::task::spawn_blocking(move || saver.flush()).await;
    }

    /// Save the register (its owner thread writes it; nothing here waits for the disk).
    fn save_register(&self, reg: &Register) {
        self.saver.save(reg);
    }
}
