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
//! - a pulled medium's job is cancelled and its mount detached only after the job ended, so
//!   no write can land on the root file system under the empty mount point;
//! - each medium's task runs under a supervisor: if it (or its engine work) panics, that
//!   medium is unmounted, forgotten and notified, and nothing else is affected; no task
//!   result is unwrapped.

mod clock;
mod control;
mod devices;
mod identify;
mod mounts;
mod notify;
mod register;
mod supervise;

pub use control::{call, socket_path, Request, Response};

use crate::config::{Config, MultipleMedia};
use crate::job;
use crate::medium::{self, MediaFile, Medium};
use crate::progress::Meter;
use crate::schedule::{self, Due, Why};
use crate::sizing;
use crate::status;
use crate::tree::Kind;
use chrono::{DateTime, Duration, Utc};
use clock::Clock;
use devices::{Disk, DiskEvent};
use identify::{identify, open_identified, Identity, Refusal};
use notify::{Event as Note, EventKind};
use register::Register;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use supervise::{panic_message, test_panic_hook, Locked, PanicAt, Released, Session};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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
    Stop,
}

struct Running {
    kind: Kind,
    started: DateTime<Utc>,
    meter: Arc<Meter>,
}

#[derive(Default)]
struct Live {
    job: Option<Running>,
    next_due: Option<DateTime<Utc>>,
    backups: usize,
    newest: BTreeMap<Kind, (DateTime<Utc>, u64)>,
    free_bytes: u64,
    last_error: Option<String>,
    reach: Option<crate::sizing::Reach>,
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
}

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
    let agent = Arc::new(Agent {
        register: Mutex::new(Register::load(&cfg.agent.state_dir)),
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
        cfg,
    });
    // The control socket: root only.
    let _ = std::fs::remove_file(&opts.socket);
    if let Some(dir) = opts.socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(&opts.socket)?;
    std::fs::set_permissions(&opts.socket, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(serve(agent.clone(), listener));

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
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => agent.check_away(),
        }
    }
    info!("stopping: aborting jobs and unmounting media");
    agent.shutdown().await;
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
        notify::send(
            &self.cfg.agent.notify_command,
            Note {
                event,
                medium: media.map(|m| m.media_id.to_string()),
                label: media
                    .map(|m| m.label.clone())
                    .or_else(|| disk.and_then(|d| d.label.clone())),
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
        if let Some(set) = &self.cfg.agent.devices {
            if !set.is_match(&disk.devnode) {
                debug!(device = %disk.devnode.display(), "not a configured device");
                return;
            }
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
        let identity = match tokio::task::spawn_blocking(move || {
            identify(&d2, fs, &mp2, auto.as_ref(), &host, &state)
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
            Identity::Foreign(why) => {
                self.refuse(&disk, None, why);
                return;
            }
            Identity::NotOurs(m, why) => {
                self.refuse(&disk, Some(&m), why);
                return;
            }
            Identity::Tampered(m, why) => {
                self.refuse_tampered(&disk, Some(&m), why);
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
                    self.note(EventKind::DuplicateMedium, Some(&disk), Some(m), None, why);
                    return;
                }
                Some(id)
            }
            Identity::Blank => None,
        };
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
        let opened = tokio::task::spawn_blocking(move || -> Result<Medium, Refusal> {
            mounts::mount(&d2, fs, &mp2, true).map_err(|e| {
                Refusal::Failed(format!(
                    "cannot mount {} read-write: {e}",
                    d2.devnode.display()
                ))
            })?;
            let blank = identified.is_none();
            let r = open_identified(&d2, &mp2, identified.as_ref(), now, &state, cfg.encrypt);
            if let (true, Ok(_)) = (blank, &r) {
                if let Some(u) = crate::sizing::check(&mp2, &cfg) {
                    warn!(device = %d2.devnode.display(), capacity = u.capacity, sources = u.sources, "{u}");
                }
            }
            if r.is_err() {
                let _ = mounts::unmount(&mp2, false).or_else(|_| mounts::unmount(&mp2, true));
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
                self.note(EventKind::BackupFailed, Some(&disk), None, None, e);
                return;
            }
        };
        let media = medium.media().clone();
        info!(device = %disk.devnode.display(), medium = %media.media_id, label = %media.label, backups = medium.tree().backups.len(), "medium inserted");
        {
            let mut reg = self.register.locked();
            reg.seen(
                &media.media_id.to_string(),
                &media.label,
                &disk.devnode.display().to_string(),
                medium.tree(),
                self.clock.now(),
            );
            if let Err(e) = reg.save() {
                warn!(cause = %e, "cannot save the register");
            }
        }
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
        self.refused
            .locked()
            .insert((disk.devnode.clone(), disk.fs_uuid.clone()));
        self.note(EventKind::UnknownMedium, Some(disk), media, None, why);
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
        self.refused.locked().retain(|(d, _)| d != devnode);
        let ins = self.inserted.locked().remove(devnode);
        if let Some(i) = ins {
            warn!(device = %devnode.display(), medium = %i.media.media_id, "medium pulled");
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

    #[allow(clippy::too_many_arguments)]
    async fn medium_task(
        self: Arc<Self>,
        disk: Disk,
        mp: PathBuf,
        medium: Medium,
        mut rx: mpsc::Receiver<Cmd>,
        cancel: Arc<AtomicBool>,
        live: Arc<Mutex<Live>>,
        watchdog: tokio::task::AbortHandle,
    ) -> Result<(), String> {
        let mut medium = Some(medium);
        let mut forced: Vec<oneshot::Sender<Response>> = Vec::new();
        let mut eject: Option<oneshot::Sender<Response>> = None;
        let mut changed = self.changed.subscribe();
        let sched = self.cfg.schedule.clone();
        // After a failed job, the next try waits a micro interval (no busy retry, no flood
        // of notifications); a backup-now request tries at once.
        let mut retry_after: Option<DateTime<Utc>> = None;
        let mut measured = false;
        'session: loop {
            self.refresh(medium.as_ref().unwrap(), &live);
            // Commands first, so eject and stop are never starved by due jobs.
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    Cmd::BackupNow(r) => forced.push(r),
                    Cmd::Eject(r) => {
                        eject = Some(r);
                        break 'session;
                    }
                    Cmd::Stop => break 'session,
                }
            }
            if cancel.load(Ordering::SeqCst) {
                break;
            }
            let now = self.clock.now();
            let tree = &medium.as_ref().unwrap().tree();
            let backing_off = retry_after.is_some_and(|t| now < t) && forced.is_empty();
            let due = if !self.may_write(&disk.devnode) || backing_off {
                None
            } else {
                schedule::due(tree, now, &sched).or_else(|| {
                    (!forced.is_empty()).then(|| Due {
                        kind: Kind::Micro,
                        parent: schedule::parent_for(tree, Kind::Micro),
                        why: Why::Requested,
                    })
                })
            };
            if let Some(due) = due {
                let meter = Arc::new(Meter::hidden());
                live.locked().job = Some(Running {
                    kind: due.kind,
                    started: now,
                    meter: meter.clone(),
                });
                let mut m = medium.take().unwrap();
                let (cfg, c2, mp2, devnum) =
                    (self.cfg.clone(), cancel.clone(), mp.clone(), disk.devnum);
                info!(medium = %m.media().media_id, kind = %due.kind, parent = ?due.parent, why = ?due.why, "backup starting");
                if self.test_panic_at(PanicAt::Task, &m.media().label) {
                    panic!("test hook TRAYBACK_TEST_PANIC: the medium task panics");
                }
                let panic_job = self.test_panic_at(PanicAt::Job, &m.media().label);
                let joined = tokio::task::spawn_blocking(move || {
                    if panic_job {
                        panic!("test hook TRAYBACK_TEST_PANIC: the backup job panics");
                    }
                    let still_ours = || mounts::still_ours(&mp2, devnum);
                    let o = job::run(
                        &mut m,
                        &job::Job {
                            due,
                            at: now,
                            config: &cfg,
                            verify: true,
                            cancel: &c2,
                            backup_meter: &meter,
                            verify_meter: &Meter::hidden(),
                            still_ours: &still_ours,
                        },
                    );
                    // The history for `status`'s reach, after the first backup of this
                    // insertion and every one but a micro (it reads every listing).
                    let history = (o.backup.is_some() && (!measured || o.kind != Kind::Micro))
                        .then(|| {
                            sizing::history(&m, &cfg.schedule)
                                .inspect_err(|e| warn!(cause = %e, "cannot measure the medium's history; status shows no reach"))
                                .ok()
                        })
                        .flatten();
                    (m, o, history)
                })
                .await;
                let (m, outcome, history) = match joined {
                    Ok(x) => x,
                    Err(e) => {
                        // The medium went with the job; the supervisor cleans up.
                        live.locked().job = None;
                        let why = format!("its backup job failed ({})", panic_message(e));
                        for r in forced.drain(..) {
                            let _ = r.send(Response::err(why.clone()));
                        }
                        return Err(why);
                    }
                };
                live.locked().job = None;
                if let Some(h) = history {
                    measured = true;
                    match sizing::capacity(m.root()) {
                        Ok(c) => self.measure_reach(h, c, live.clone()),
                        Err(e) => {
                            warn!(cause = %e, "cannot measure the medium's size; status shows no reach")
                        }
                    }
                }
                retry_after = outcome.backup.is_none().then(|| now + sched.micro_interval);
                self.after_job(&disk, &m, &outcome, &live, cancel.load(Ordering::SeqCst));
                medium = Some(m);
                for r in forced.drain(..) {
                    let _ = r.send(match outcome.error() {
                        None => Response::ok(&outcome),
                        Some(e) => Response::failed(e, &outcome),
                    });
                }
                continue;
            }
            let next = match retry_after {
                Some(t) if backing_off => t,
                _ => schedule::next_due(tree, self.clock.now(), &sched),
            };
            live.locked().next_due = Some(next);
            tokio::select! {
                _ = self.clock.sleep_until(next) => {}
                _ = changed.changed() => {}
                cmd = rx.recv() => match cmd {
                    Some(Cmd::BackupNow(r)) => forced.push(r),
                    Some(Cmd::Eject(r)) => {
                        eject = Some(r);
                        break;
                    }
                    Some(Cmd::Stop) | None => break,
                },
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Cmd::Eject(r) => eject = Some(r),
                Cmd::BackupNow(r) => forced.push(r),
                Cmd::Stop => {}
            }
        }
        for r in forced {
            let _ = r.send(Response::err(
                "the medium was removed before the backup could run",
            ));
        }
        // Tear down: release the medium (its lock and open files), flush, unmount.
        watchdog.abort();
        let media = medium.as_ref().map(|m| m.media().clone());
        drop(medium);
        let ejecting = eject.is_some();
        let (d2, mp2) = (disk.clone(), mp.clone());
        let detach = tokio::task::spawn_blocking(move || {
            mounts::sync();
            let r = mounts::unmount(&mp2, !ejecting).or_else(|_| mounts::unmount(&mp2, true));
            (
                r,
                if ejecting {
                    mounts::power_down(&d2)
                } else {
                    String::new()
                },
            )
        })
        .await
        .unwrap_or_else(|e| (Err(std::io::Error::other(panic_message(e))), String::new()));
        self.inserted.locked().remove(&disk.devnode);
        self.changed.send_modify(|v| *v += 1);
        if let Some(m) = &media {
            let mut reg = self.register.locked();
            if let Some(s) = reg.media.get_mut(&m.media_id.to_string()) {
                s.last_seen = Some(self.clock.now());
            }
            let _ = reg.save();
        }
        match (detach.0, eject) {
            (Ok(()), Some(reply)) => {
                let msg = format!(
                    "{} ({}) is safe to remove; {}",
                    disk.devnode.display(),
                    media.as_ref().map(|m| m.label.as_str()).unwrap_or("?"),
                    detach.1
                );
                info!("{msg}");
                self.note(
                    EventKind::SafeToRemove,
                    Some(&disk),
                    media.as_ref(),
                    None,
                    msg.clone(),
                );
                let _ = reply.send(Response::ok(&status::Ejected {
                    safe_to_remove: true,
                    device: disk.devnode.clone(),
                    message: msg,
                    failure: None,
                }));
            }
            (Err(e), Some(reply)) => {
                let _ = reply.send(Response::err(format!(
                    "cannot unmount {}: {e}",
                    mp.display()
                )));
            }
            (Ok(()), None) => info!(device = %disk.devnode.display(), "medium released"),
            (Err(e), None) => warn!(device = %disk.devnode.display(), cause = %e, "cannot unmount"),
        }
        Ok(())
    }

    fn refresh(&self, m: &Medium, live: &Mutex<Live>) {
        let mut l = live.locked();
        l.backups = m.tree().backups.len();
        l.newest.clear();
        for b in m.tree().backups.iter().filter(|b| b.verified) {
            let e = l.newest.entry(b.kind).or_insert((b.started, b.id.0));
            if b.started >= e.0 {
                *e = (b.started, b.id.0);
            }
        }
        l.free_bytes = m.free_space().unwrap_or(0);
    }

    /// Simulate how far back each kind will reach (a second or so of arithmetic) apart from
    /// the medium's task, and show it in `status` when done.
    fn measure_reach(&self, h: sizing::History, capacity: u64, live: Arc<Mutex<Live>>) {
        let (sched, pare) = (self.cfg.schedule.clone(), self.cfg.pare.clone());
        tokio::task::spawn_blocking(move || {
            let r = sizing::reach_of(h, capacity, &sched, &pare);
            live.locked().reach = Some(r);
        });
    }

    fn after_job(
        &self,
        disk: &Disk,
        m: &Medium,
        o: &job::Outcome,
        live: &Mutex<Live>,
        cancelled: bool,
    ) {
        let media = Some(m.media());
        if let Some(e) = &o.error() {
            if cancelled {
                warn!(medium = %m.media().media_id, cause = %e, "backup cancelled");
            } else {
                error!(medium = %m.media().media_id, cause = %e, "backup failed");
                self.note(
                    EventKind::BackupFailed,
                    Some(disk),
                    media,
                    o.backup_id(),
                    e.clone(),
                );
            }
        }
        if let Some(e) = o.too_small.as_ref().map(|t| t.to_string()) {
            self.note(
                EventKind::MediumTooSmall,
                Some(disk),
                media,
                o.backup_id(),
                e.clone(),
            );
        }
        if o.verified() == Some(false) {
            self.note(
                EventKind::VerifyFailed,
                Some(disk),
                media,
                o.backup_id(),
                format!(
                    "backup failed verification; affected: {}",
                    o.damaged_files().join(", ")
                ),
            );
        }
        if let Some(b) = o.backup_id() {
            info!(medium = %m.media().media_id, backup = b, kind = ?o.kind, verified = ?o.verified(), pared = o.pared(), "backup done");
        }
        live.locked().last_error = o.error().or(o.too_small.as_ref().map(|t| t.to_string()));
        let mut reg = self.register.locked();
        reg.seen(
            &m.media().media_id.to_string(),
            &m.media().label,
            &disk.devnode.display().to_string(),
            m.tree(),
            self.clock.now(),
        );
        let _ = reg.save();
    }

    /// Warn about media away longer than configured (once a day each).
    fn check_away(&self) {
        let now = self.clock.now();
        let limit = Duration::days(self.cfg.agent.away_warning_days as i64);
        let inserted: Vec<String> = self
            .inserted
            .lock()
            .unwrap()
            .values()
            .map(|i| i.media.media_id.to_string())
            .collect();
        let mut reg = self.register.locked();
        let mut notes = Vec::new();
        for (id, s) in reg.media.iter_mut() {
            let Some(seen) = s.last_seen else { continue };
            if inserted.contains(id)
                || now - seen <= limit
                || s.warned_away.is_some_and(|w| now - w < Duration::days(1))
            {
                continue;
            }
            s.warned_away = Some(now);
            notes.push((
                id.clone(),
                s.label.clone(),
                format!(
                    "medium {:?} has been away for {} days",
                    s.label,
                    (now - seen).num_days()
                ),
            ));
        }
        let _ = reg.save();
        drop(reg);
        for (id, label, msg) in notes {
            warn!("{msg}");
            notify::send(
                &self.cfg.agent.notify_command,
                Note {
                    event: EventKind::MediumAway,
                    medium: Some(id),
                    label: Some(label),
                    device: None,
                    backup: None,
                    message: msg,
                },
            );
        }
    }

    fn status(&self) -> status::Status {
        let now = self.clock.now();
        let ins = self.inserted.locked();
        let newest_seq = ins.values().map(|o| o.seq).max();
        let inserted = ins
            .values()
            .map(|i| {
                let l = i.live.locked();
                status::Inserted {
                    label: i.media.label.clone(),
                    media_id: i.media.media_id,
                    device: i.disk.devnode.clone(),
                    mountpoint: i.mountpoint.clone(),
                    backups: l.backups,
                    newest: l
                        .newest
                        .iter()
                        .map(|(k, (t, id))| {
                            (
                                *k,
                                status::BackupRef {
                                    id: *id,
                                    started: *t,
                                },
                            )
                        })
                        .collect(),
                    job: l.job.as_ref().map(|j| status::Job {
                        kind: j.kind,
                        started: j.started,
                        files: j.meter.files(),
                        bytes: j.meter.bytes(),
                    }),
                    next_due: l.next_due,
                    free_bytes: l.free_bytes,
                    last_error: l.last_error.clone(),
                    writing: self.cfg.agent.multiple_media == MultipleMedia::All
                        || newest_seq == Some(i.seq),
                    reach: l.reach.clone(),
                }
            })
            .collect();
        let ids: Vec<String> = ins.values().map(|i| i.media.media_id.to_string()).collect();
        drop(ins);
        let reg = self.register.locked();
        let limit = Duration::days(self.cfg.agent.away_warning_days as i64);
        let mut warnings = self.warnings.locked().clone();
        // Media whose task failed stay listed until they are pulled.
        warnings.extend(self.released.locked().values().map(|r| r.message.clone()));
        let known = reg
            .media
            .iter()
            .filter(|(id, _)| !ids.contains(id))
            .map(|(id, s)| {
                if let Some(seen) = s.last_seen.filter(|t| now - *t > limit) {
                    warnings.push(format!(
                        "medium {:?} has been away for {} days",
                        s.label,
                        (now - seen).num_days()
                    ));
                }
                status::Away {
                    media_id: id.clone(),
                    label: s.label.clone(),
                    last_seen: s.last_seen,
                    last_device: s.last_device.clone(),
                    newest_backup: s.newest.values().max().map(|(t, id)| status::BackupRef {
                        id: *id,
                        started: *t,
                    }),
                }
            })
            .collect();
        status::Status {
            now,
            host: self.host.clone(),
            inserted,
            known,
            warnings,
        }
    }

    fn find(&self, which: &Option<String>) -> Result<Handle, String> {
        let ins = self.inserted.locked();
        let matches: Vec<&Inserted> = ins
            .values()
            .filter(|i| match which {
                None => true,
                Some(w) => {
                    i.media.label == *w
                        || i.media.media_id.to_string() == *w
                        || i.disk.devnode == Path::new(w)
                        || i.mountpoint == Path::new(w)
                }
            })
            .collect();
        match matches.as_slice() {
            [i] => Ok((i.tx.clone(), i.cancel.clone(), i.live.clone())),
            [] => Err(match which {
                Some(w) => format!("no inserted medium is {w:?}"),
                None => "no medium is inserted".into(),
            }),
            _ => Err("several media are inserted; name one (label, media id or device)".into()),
        }
    }

    async fn handle(&self, req: Request) -> Response {
        match req {
            Request::Status => Response::ok(&self.status()),
            Request::AdvanceClock { seconds } => match self.clock.advance(seconds) {
                Ok(now) => {
                    self.check_away();
                    Response::ok(&status::ClockNow { now })
                }
                Err(e) => Response::err(e),
            },
            Request::BackupNow { medium } => {
                let (tx, _, _) = match self.find(&medium) {
                    Ok(x) => x,
                    Err(e) => return Response::err(e),
                };
                let (rtx, rrx) = oneshot::channel();
                if tx.send(Cmd::BackupNow(rtx)).await.is_err() {
                    return Response::err("the medium is going away");
                }
                rrx.await
                    .unwrap_or_else(|_| Response::err("the medium went away before the backup ran"))
            }
            Request::Eject { medium } => {
                let (tx, cancel, live) = match self.find(&medium) {
                    Ok(x) => x,
                    Err(e) => return self.released_answer(&medium).unwrap_or(Response::err(e)),
                };
                let abort = live.locked().job.as_ref().is_some_and(|j| {
                    j.kind != Kind::Micro || !self.cfg.agent.eject_waits_for_micro
                });
                if abort {
                    info!("eject: aborting the running backup");
                    cancel.store(true, Ordering::SeqCst);
                }
                let (rtx, rrx) = oneshot::channel();
                if tx.send(Cmd::Eject(rtx)).await.is_err() {
                    return self.after_task_ended(&medium).await;
                }
                match rrx.await {
                    Ok(r) => r,
                    Err(_) => self.after_task_ended(&medium).await,
                }
            }
        }
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
    }
}

/// Watch that the mount is still the device's: a tray pulled (or the file system unmounted
/// behind our back) cancels the job and ends the medium's session at once, even while the
/// kernel keeps the device around because our files on it are still open.
async fn watch_mount(mp: PathBuf, devnum: u64, cancel: Arc<AtomicBool>, tx: mpsc::Sender<Cmd>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let (mp2, gone) = (mp.clone(), mp.clone());
        let ours = tokio::task::spawn_blocking(move || mounts::still_ours(&mp2, devnum))
            .await
            .unwrap_or(false);
        if !ours {
            warn!(mountpoint = %gone.display(), "the medium's file system went away (tray pulled?); stopping its job");
            cancel.store(true, Ordering::SeqCst);
            let _ = tx.send(Cmd::Stop).await;
            return;
        }
    }
}

async fn serve(agent: Arc<Agent>, listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            if let Ok(Some(line)) = lines.next_line().await {
                let resp = match serde_json::from_str::<Request>(&line) {
                    Ok(req) => agent.handle(req).await,
                    Err(e) => Response::err(format!("bad request: {e}")),
                };
                let mut out = serde_json::to_vec(&resp).unwrap();
                out.push(b'\n');
                let _ = w.write_all(&out).await;
            }
        });
    }
}
