//! One medium's session: the loop that backs up what falls due on that medium, answers its
//! commands, and lets it go when it is ejected or pulled; the watchdog that notices a pulled
//! tray.
//!
//! Invariants:
//! - what is due comes from the medium's own tree and the agent's clock, which never runs
//!   backwards (`clock`); a backup is never dated before the newest backup on its medium;
//! - the wait for the next deadline is re-evaluated whenever the wall clock is set;
//! - what the CLI asks for (jobs, lends: `asked`) runs when the medium is idle, in the order
//!   asked, before what falls due; every backup, scheduled or asked, goes through
//!   [`Agent::backup_on`] (status, cancel, notifications, checkpoint, register, reach);
//! - a pulled medium's job is cancelled and its mount detached only after the job ended.

use super::asked::Queued;
use super::*;
use std::collections::VecDeque;
use std::ops::ControlFlow;

/// A backup the task runs: scheduled, asked for by `backup-now`, or by `backup`.
pub(super) struct BackupJob {
    pub due: Due,
    pub at: DateTime<Utc>,
    pub config: Arc<Config>,
    pub verify: bool,
    pub backup_meter: Arc<Meter>,
    pub verify_meter: Arc<Meter>,
    /// Set when the client that asked for it went away: the backup is cancelled, as the
    /// CLI's own would be when it is killed.
    pub abandoned: Option<Arc<AtomicBool>>,
}

impl Agent {
    pub(super) async fn medium_task(
        self: Arc<Self>,
        t: Session,
        medium: Medium,
        mut rx: mpsc::Receiver<Cmd>,
        watchdog: tokio::task::AbortHandle,
    ) -> Result<(), String> {
        let (disk, cancel, live) = (&t.disk, &t.cancel, &t.live);
        let mut medium = Some(medium);
        let mut pending = Pending::default();
        let mut changed = self.changed.subscribe();
        let sched = self.cfg.schedule.clone();
        let config = Arc::new(self.cfg.clone());
        // After a failed job, the next try waits a micro interval (no busy retry, no flood
        // of notifications); a backup-now request tries at once.
        let mut retry_after: Option<DateTime<Utc>> = None;
        let mut reach = ReachState::default();
        // A medium whose newest backup is dated after the agent's clock (written before the
        // wall clock stepped back, and the agent restarted since): its schedule counts on
        // from that backup, so backups go on at their pace instead of stalling until the
        // wall clock catches up.
        let newest = medium
            .as_ref()
            .unwrap()
            .tree()
            .date_new_backup(self.clock.now());
        let floor = (newest > self.clock.now()).then(|| {
            warn!(device = %disk.devnode.display(), newest = %newest, "the medium's newest backup is dated after the clock; its schedule counts on from that backup");
            self.clock.floor(newest)
        });
        let clock_now = || match &floor {
            Some(f) => self.clock.now_not_before(f),
            None => self.clock.now(),
        };
        'session: while let Some(m) = medium.as_ref() {
            self.refresh(m, live);
            // Commands first, so eject and stop are never starved by due jobs.
            while let Ok(cmd) = rx.try_recv() {
                if pending.take(cmd).is_break() {
                    break 'session;
                }
            }
            if cancel.load(Ordering::SeqCst) {
                break;
            }
            // What was asked for over the socket runs at once when the medium is idle (as
            // it is here), before what falls due.
            if let Some(q) = pending.queue.pop_front() {
                let m = medium.take().unwrap();
                medium = match q {
                    Queued::Job(a) => {
                        Some(self.run_asked(&t, m, a, clock_now(), &mut reach).await?)
                    }
                    Queued::Lend(l) => self.lend(&t, m, l).await?,
                };
                continue;
            }
            let now = clock_now();
            let tree = &medium.as_ref().unwrap().tree();
            let backing_off = retry_after.is_some_and(|t| now < t) && pending.forced.is_empty();
            let failing = live.locked().failing.clone();
            if let Some(why) = &failing {
                for r in pending.forced.drain(..) {
                    let _ = r.send(Response::err(why.clone()));
                }
            }
            // A medium not written on schedule (another was inserted later) is still written
            // when a backup-now names it: an explicit request, as a command's job is.
            let due = if failing.is_some()
                || backing_off
                || (pending.forced.is_empty() && !self.may_write(&disk.devnode))
            {
                None
            } else {
                schedule::due(tree, now, &sched).or_else(|| {
                    (!pending.forced.is_empty()).then(|| Due {
                        kind: Kind::Micro,
                        parent: schedule::parent_for(tree, Kind::Micro),
                        why: Why::Requested,
                    })
                })
            };
            if let Some(due) = due {
                let m = medium.take().unwrap();
                let job = BackupJob {
                    due,
                    at: now,
                    config: config.clone(),
                    verify: true,
                    backup_meter: Arc::new(Meter::hidden()),
                    verify_meter: Arc::new(Meter::hidden()),
                    abandoned: None,
                };
                let (m, outcome) = match self.backup_on(&t, m, job, &mut reach).await {
                    Ok(x) => x,
                    Err(why) => {
                        for r in pending.forced.drain(..) {
                            let _ = r.send(Response::err(why.clone()));
                        }
                        return Err(why);
                    }
                };
                retry_after = outcome.backup.is_none().then(|| now + sched.micro_interval);
                medium = Some(m);
                for r in pending.forced.drain(..) {
                    let _ = r.send(match outcome.error() {
                        None => Response::ok(&outcome),
                        Some(e) => Response::failed(e, &outcome),
                    });
                }
                continue;
            }
            let next = match retry_after {
                _ if failing.is_some() => DateTime::<Utc>::MAX_UTC,
                Some(t) if backing_off => t,
                _ => schedule::next_due(tree, clock_now(), &sched),
            };
            live.locked().next_due = failing.is_none().then_some(next);
            tokio::select! {
                w = self.clock.sleep_until(next, floor.as_ref()) => debug!(?w, "woke"),
                _ = changed.changed() => {}
                cmd = rx.recv() => match cmd {
                    Some(cmd) => if pending.take(cmd).is_break() {
                        break;
                    },
                    None => break,
                },
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            let _ = pending.take(cmd);
        }
        let eject = pending.refuse_all();
        // Tear down: release the medium (its lock and open files), flush, unmount.
        watchdog.abort();
        drop(medium);
        self.release(&t, eject).await;
        Ok(())
    }

    /// A session's end: flush and unmount the medium (power the device down when ejecting),
    /// record when it was last seen, and answer the eject.
    async fn release(&self, t: &Session, eject: Option<oneshot::Sender<Response>>) {
        let (disk, mp) = (&t.disk, &t.mp);
        let media = self.media_of(t);
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
        {
            let mut reg = self.register.locked();
            if let Some(s) = reg.media.get_mut(&media.media_id.to_string()) {
                s.last_seen = Some(self.clock.now());
            }
            self.save_register(&reg);
        }
        match (detach.0, eject) {
            (Ok(()), Some(reply)) => {
                let msg = format!(
                    "{} ({}) is safe to remove; {}",
                    disk.devnode.display(),
                    media.label,
                    detach.1
                );
                info!("{msg}");
                self.note(
                    EventKind::SafeToRemove,
                    Some(disk),
                    Some(&media),
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
            (Ok(()), None) => {
                info!(event = LogEvent::MediumReleased.name(), device = %disk.devnode.display(), "medium released")
            }
            (Err(e), None) => warn!(device = %disk.devnode.display(), cause = %e, "cannot unmount"),
        }
    }

    /// The media file of a session's medium as it is now (a lend may have changed it).
    pub(super) fn media_of(&self, t: &Session) -> MediaFile {
        self.inserted
            .locked()
            .get(&t.disk.devnode)
            .filter(|i| i.seq == t.seq)
            .map_or_else(|| t.media.clone(), |i| i.media.clone())
    }

    /// Run one backup job on the medium, with what every backup gets: `status` shows it,
    /// a pulled tray or an eject cancels it, its result is notified, checkpointed in place
    /// and registered, and the reach is measured.
    pub(super) async fn backup_on(
        &self,
        t: &Session,
        mut m: Medium,
        job: BackupJob,
        reach: &mut ReachState,
    ) -> Result<(Medium, job::Outcome), String> {
        let (disk, live) = (&t.disk, &t.live);
        live.locked().job = Some(Running {
            kind: job.due.kind,
            id: m.tree().next_id.0,
            started: job.at,
            meter: job.backup_meter.clone(),
        });
        // The job's own cancel flag: the session's (a pull, an eject) or a client gone.
        let cancel = Arc::new(AtomicBool::new(false));
        let (c2, mp2, devnum, fs_type) = (
            cancel.clone(),
            t.mp.clone(),
            disk.devnum,
            disk.fs_type.clone(),
        );
        let first = !reach.measured;
        let due = job.due.clone();
        info!(event = LogEvent::BackupStarting.name(), medium = %m.media().media_id, kind = %due.kind, parent = ?due.parent, why = ?due.why, "backup starting");
        if self.test_panic_at(PanicAt::Task, &m.media().label) {
            panic!("test hook TRAYBACK_TEST_PANIC: the medium task panics");
        }
        let panic_job = self.test_panic_at(PanicAt::Job, &m.media().label);
        let BackupJob {
            at,
            config: cfg,
            verify,
            backup_meter,
            verify_meter,
            abandoned,
            ..
        } = job;
        let mut work = tokio::task::spawn_blocking(move || {
            if panic_job {
                panic!("test hook TRAYBACK_TEST_PANIC: the backup job panics");
            }
            let still_ours = || mounts::still_ours(&mp2, devnum);
            let o = job::run(
                &mut m,
                &job::Job {
                    due,
                    at,
                    config: &cfg,
                    verify,
                    cancel: &c2,
                    backup_meter: &backup_meter,
                    verify_meter: &verify_meter,
                    still_ours: &still_ours,
                },
            );
            // What the job committed, in place and not only in the journal.
            durable::checkpoint_or_warn(&mp2, devnum, &fs_type);
            // The history for `status`'s reach, after the first backup of this insertion
            // and every one but a micro (it reads every listing).
            let history = (o.backup.is_some() && (first || o.kind != Kind::Micro))
                .then(|| {
                    sizing::history(&m, &cfg.schedule)
                        .inspect_err(|e| warn!(cause = %e, "cannot measure the medium's history; status shows no reach"))
                        .ok()
                })
                .flatten();
            (m, o, history)
        });
        let joined = loop {
            tokio::select! {
                j = &mut work => break j,
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                    if t.cancel.load(Ordering::SeqCst)
                        || abandoned.as_ref().is_some_and(|a| a.load(Ordering::SeqCst))
                    {
                        cancel.store(true, Ordering::SeqCst);
                    }
                }
            }
        };
        let (m, outcome, history) = match joined {
            Ok(x) => x,
            Err(e) => {
                // The medium went with the job; the supervisor cleans up.
                live.locked().job = None;
                return Err(format!("its backup job failed ({})", panic_message(e)));
            }
        };
        if let Some(h) = history {
            reach.measured = true;
            match sizing::capacity(m.root()) {
                Ok(c) => reach.running = Some(self.measure_reach(h, c, live.clone())),
                Err(e) => {
                    warn!(cause = %e, "cannot measure the medium's size; status shows no reach")
                }
            }
        }
        // A job that found the medium no longer where it was mounted: the tray was pulled
        // (or unmounted behind the agent's back) before the watchdog saw it. It is a pull,
        // notified once as such, and the session ends; no other job is tried on it.
        if matches!(outcome.failure, Some(job::Failure::Gone { .. })) {
            live.locked().pulled = true;
            t.cancel.store(true, Ordering::SeqCst);
        }
        // I/O errors from a tray that is being pulled are the pull, not a failing disk.
        if outcome.medium_failing() {
            let (mp2, devnum) = (t.mp.clone(), disk.devnum);
            let here = tokio::task::spawn_blocking(move || mounts::still_ours(&mp2, devnum))
                .await
                .unwrap_or(false);
            if !here {
                live.locked().pulled = true;
            }
        }
        self.after_job(disk, &m, &outcome, live, cancel.load(Ordering::SeqCst));
        live.locked().job = None;
        Ok((m, outcome))
    }

    pub(super) fn refresh(&self, m: &Medium, live: &Mutex<Live>) {
        let mut l = live.locked();
        l.backups = m.tree().backups.len();
        l.newest = m
            .tree()
            .newest_verified_each()
            .into_iter()
            .map(|(k, b)| (k, (b.started, b.id.0)))
            .collect();
        l.free_bytes = m.free_space().ok();
        l.size_bytes = sizing::capacity(m.root()).ok();
    }

    /// Simulate how far back each kind will reach apart from the medium's task, and show it
    /// in `status` when done; the simulation stops when the returned guard is dropped (a newer measurement, the end of the insertion, the agent
    /// stopping), so none outlives its medium or holds up the agent's exit.
    fn measure_reach(
        &self,
        h: sizing::History,
        capacity: u64,
        live: Arc<Mutex<Live>>,
    ) -> StopOnDrop {
        let (sched, pare) = (self.cfg.schedule.clone(), self.cfg.pare.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        tokio::task::spawn_blocking(move || {
            let halt = || stopped.load(Ordering::Relaxed);
            if let Some(r) = sizing::reach_of(h, capacity, &sched, &pare, &halt) {
                live.locked().reach = Some(r);
            }
        });
        StopOnDrop(stop)
    }

    /// The medium reported I/O errors: notified once, and nothing more is written to it in
    /// this session.
    pub(super) fn mark_failing(
        &self,
        disk: &Disk,
        media: &MediaFile,
        live: &Mutex<Live>,
        why: &str,
    ) {
        let msg = format!(
            "{} ({}) reports I/O errors: check or replace the disk. trayback writes nothing more to it until it is re-inserted; the backups already on it were verified when made. ({why})",
            disk.devnode.display(),
            media.label,
        );
        error!(medium = %media.media_id, "{msg}");
        live.locked().failing = Some(msg.clone());
        self.note(EventKind::MediumFailing, Some(disk), Some(media), None, msg);
    }

    pub(super) fn after_job(
        &self,
        disk: &Disk,
        m: &Medium,
        o: &job::Outcome,
        live: &Mutex<Live>,
        cancelled: bool,
    ) {
        let media = Some(m.media());
        let (pulled, running) = {
            let l = live.locked();
            (l.pulled, l.job.as_ref().map(|j| (j.kind, j.id, j.started)))
        };
        if pulled {
            if let Some((kind, id, started)) = running {
                let msg = match o.backup_id() {
                    Some(b) => format!(
                        "the tray was pulled during the {kind} backup #{b}; it had been committed, its verification was cut short (it is verified when the medium is next inserted or by `trayback verify`)"
                    ),
                    None => format!(
                        "the tray was pulled during the {kind} backup #{id} started at {}; that backup was cancelled and what it wrote is removed when the medium is next inserted; the backups made before it are intact",
                        started.format("%Y-%m-%d %H:%M:%S UTC")
                    ),
                };
                warn!(medium = %m.media().media_id, "{msg}");
                self.note(
                    EventKind::MediumPulled,
                    Some(disk),
                    media,
                    Some(o.backup_id().unwrap_or(id)),
                    msg,
                );
            }
        } else if o.medium_failing() {
            self.mark_failing(disk, m.media(), live, &o.error().unwrap_or_default());
        } else if let Some(e) = &o.error() {
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
            info!(event = LogEvent::BackupDone.name(), medium = %m.media().media_id, label = %m.media().label, backup = b, kind = %o.kind, verified = ?o.verified(), pared = o.pared(), "backup done");
        }
        self.seen(disk, m);
        self.update_live(live, |l| {
            l.last_error = o.error().or(o.too_small.as_ref().map(|t| t.to_string()));
            l.pared += o.pared() as u64;
            if let Some(ok) = o.verified() {
                l.last_verify = Some(status::Verified {
                    at: self.clock.now(),
                    ok,
                });
            }
        });
    }

    /// Change what `status` shows of a medium's outcomes, and have the metrics file
    /// rewritten.
    pub(super) fn update_live(&self, live: &Mutex<Live>, change: impl FnOnce(&mut Live)) {
        change(&mut live.locked());
        self.metrics.poke();
    }

    /// Record in the register that the medium is in, with its tree as it is now.
    pub(super) fn seen(&self, disk: &Disk, m: &Medium) {
        let mut reg = self.register.locked();
        reg.seen(
            &m.media().media_id.to_string(),
            &m.media().label,
            &disk.devnode.display().to_string(),
            &disk.fs_uuid,
            m.tree(),
            self.clock.now(),
        );
        self.save_register(&reg);
    }
}

/// Watch that the mount is still the device's: a tray pulled (or the file system unmounted
/// behind our back) cancels the job and ends the medium's session at once, even while the
/// kernel keeps the device around because our files on it are still open.
pub(super) async fn watch_mount(
    mp: PathBuf,
    devnum: u64,
    cancel: Arc<AtomicBool>,
    live: Arc<Mutex<Live>>,
    tx: mpsc::Sender<Cmd>,
) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let (mp2, gone) = (mp.clone(), mp.clone());
        let ours = tokio::task::spawn_blocking(move || mounts::still_ours(&mp2, devnum))
            .await
            .unwrap_or(false);
        if !ours {
            warn!(mountpoint = %gone.display(), "the medium's file system went away (tray pulled?); stopping its job");
            live.locked().pulled = true;
            cancel.store(true, Ordering::SeqCst);
            let _ = tx.send(Cmd::Stop).await;
            return;
        }
    }
}

/// A session's reach measurement: whether one was made this insertion, and the simulation
/// running (stopped when replaced or when the session ends).
#[derive(Default)]
pub(super) struct ReachState {
    measured: bool,
    running: Option<StopOnDrop>,
}

/// Sets its flag when dropped.
pub(super) struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What was asked of a medium's task and not answered yet.
#[derive(Default)]
struct Pending {
    /// Backup-now requests: answered together by the next backup.
    forced: Vec<oneshot::Sender<Response>>,
    /// Jobs and lends asked for over the socket, in the order they came.
    queue: VecDeque<Queued>,
    eject: Option<oneshot::Sender<Response>>,
}

impl Pending {
    /// Take a command in; `Break` when it ends the session (eject or stop).
    fn take(&mut self, cmd: Cmd) -> ControlFlow<()> {
        match cmd {
            Cmd::BackupNow(r) => self.forced.push(r),
            Cmd::Asked(a) => self.queue.push_back(Queued::Job(a)),
            Cmd::Lend(l) => self.queue.push_back(Queued::Lend(l)),
            Cmd::Eject(r) => {
                self.eject = Some(r);
                return ControlFlow::Break(());
            }
            Cmd::Stop => return ControlFlow::Break(()),
        }
        ControlFlow::Continue(())
    }

    /// The session is over: refuse what can no longer run, and hand back the eject to
    /// answer once the medium is unmounted.
    fn refuse_all(self) -> Option<oneshot::Sender<Response>> {
        for q in self.queue {
            let _ = q.reply().send(Response::err(
                "the medium was removed before what was asked could run",
            ));
        }
        for r in self.forced {
            let _ = r.send(Response::err(
                "the medium was removed before the backup could run",
            ));
        }
        self.eject
    }
}
