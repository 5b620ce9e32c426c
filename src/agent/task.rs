//! One medium's session: the loop that backs up what falls due on that medium, answers its
//! commands, and lets it go when it is ejected or pulled; the watchdog that notices a pulled
//! tray.
//!
//! Invariants:
//! - what is due comes from the medium's own tree and the agent's clock, which never runs
//!   backwards (`clock`); a backup is never dated before the newest backup on its medium;
//! - the wait for the next deadline is re-evaluated whenever the wall clock is set;
//! - a pulled medium's job is cancelled and its mount detached only after the job ended.

use super::*;

impl Agent {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn medium_task(
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
        let mut verifies: Vec<VerifyCmd> = Vec::new();
        'session: loop {
            self.refresh(medium.as_ref().unwrap(), &live);
            // Commands first, so eject and stop are never starved by due jobs.
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    Cmd::BackupNow(r) => forced.push(r),
                    Cmd::Verify(v) => verifies.push(v),
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
            // A verify asked for runs at once when the medium is idle (as it is here).
            if !verifies.is_empty() {
                let v = verifies.remove(0);
                let m = medium.take().unwrap();
                medium = Some(self.verify_on(m, v, &mp, &disk).await?);
                continue;
            }
            let now = clock_now();
            let tree = &medium.as_ref().unwrap().tree();
            let backing_off = retry_after.is_some_and(|t| now < t) && forced.is_empty();
            let failing = live.locked().failing.clone();
            if let Some(why) = &failing {
                for r in forced.drain(..) {
                    let _ = r.send(Response::err(why.clone()));
                }
            }
            let due = if failing.is_some() || !self.may_write(&disk.devnode) || backing_off {
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
                    id: tree.next_id.0,
                    started: now,
                    meter: meter.clone(),
                });
                let mut m = medium.take().unwrap();
                let (cfg, c2, mp2, devnum, fs_type) = (
                    self.cfg.clone(),
                    cancel.clone(),
                    mp.clone(),
                    disk.devnum,
                    disk.fs_type.clone(),
                );
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
                    // What the job committed, in place and not only in the journal.
                    if let Some(fs) = mounts::FsType::from_udev(&fs_type) {
                        if let Err(e) = durable::checkpoint(&mp2, devnum, fs) {
                            warn!(mountpoint = %mp2.display(), cause = %e, "cannot checkpoint the file system's journal");
                        }
                    }
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
                // I/O errors from a tray that is being pulled are the pull, not a failing disk.
                if outcome.medium_failing() {
                    let (mp2, devnum) = (mp.clone(), disk.devnum);
                    let here =
                        tokio::task::spawn_blocking(move || mounts::still_ours(&mp2, devnum))
                            .await
                            .unwrap_or(false);
                    if !here {
                        live.locked().pulled = true;
                    }
                }
                self.after_job(&disk, &m, &outcome, &live, cancel.load(Ordering::SeqCst));
                live.locked().job = None;
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
                _ if failing.is_some() => DateTime::<Utc>::MAX_UTC,
                Some(t) if backing_off => t,
                _ => schedule::next_due(tree, clock_now(), &sched),
            };
            live.locked().next_due = failing.is_none().then_some(next);
            tokio::select! {
                w = self.clock.sleep_until(next, floor.as_ref()) => debug!(?w, "woke"),
                _ = changed.changed() => {}
                cmd = rx.recv() => match cmd {
                    Some(Cmd::BackupNow(r)) => forced.push(r),
                    Some(Cmd::Verify(v)) => verifies.push(v),
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
                Cmd::Verify(v) => verifies.push(v),
                Cmd::Stop => {}
            }
        }
        for v in verifies {
            let _ = v.reply.send(Response::err(
                "the medium was removed before the verify could run",
            ));
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

    /// Run a verify asked for over the socket on the medium this task holds, and answer it
    /// with the reports; what verify records (the verified flags) is checkpointed in place.
    async fn verify_on(
        &self,
        mut m: Medium,
        v: VerifyCmd,
        mp: &Path,
        disk: &Disk,
    ) -> Result<Medium, String> {
        let (mp2, devnum, fs_type) = (mp.to_path_buf(), disk.devnum, disk.fs_type.clone());
        let VerifyCmd {
            backup,
            all,
            read_all,
            meter,
            reply,
        } = v;
        info!(medium = %m.media().media_id, ?backup, all, read_all, "verify asked for");
        let joined = tokio::task::spawn_blocking(move || {
            let r = if all {
                crate::verify::verify_all(&mut m, read_all, &meter)
            } else {
                match backup.or_else(|| m.tree().backups.last().map(|b| b.id)) {
                    Some(id) => {
                        crate::verify::verify(&mut m, id, read_all, &meter).map(|r| vec![r])
                    }
                    None => Err(crate::error::Error::Refused(format!(
                        "{}: no backups on this medium",
                        m.media().label
                    ))),
                }
            };
            if mounts::still_ours(&mp2, devnum) {
                if let Some(fs) = mounts::FsType::from_udev(&fs_type) {
                    let _ = durable::checkpoint(&mp2, devnum, fs);
                }
            }
            (m, r)
        })
        .await;
        match joined {
            Ok((m, r)) => {
                let _ = reply.send(match r {
                    Ok(reports) => Response::ok(&reports),
                    Err(e) => Response::err(e.to_string()),
                });
                Ok(m)
            }
            Err(e) => {
                let why = format!("its verify failed ({})", panic_message(e));
                let _ = reply.send(Response::err(why.clone()));
                Err(why)
            }
        }
    }

    fn refresh(&self, m: &Medium, live: &Mutex<Live>) {
        let mut l = live.locked();
        l.backups = m.tree().backups.len();
        l.newest = m
            .tree()
            .newest_verified_each()
            .into_iter()
            .map(|(k, b)| (k, (b.started, b.id.0)))
            .collect();
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
            let msg = format!(
                "{} ({}) reports I/O errors: check or replace the disk. trayback writes nothing more to it until it is re-inserted; the backups already on it were verified when made. ({})",
                disk.devnode.display(),
                m.media().label,
                o.error().unwrap_or_default()
            );
            error!(medium = %m.media().media_id, "{msg}");
            live.locked().failing = Some(msg.clone());
            self.note(EventKind::MediumFailing, Some(disk), media, None, msg);
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
            info!(medium = %m.media().media_id, backup = b, kind = ?o.kind, verified = ?o.verified(), pared = o.pared(), "backup done");
        }
        live.locked().last_error = o.error().or(o.too_small.as_ref().map(|t| t.to_string()));
        let mut reg = self.register.locked();
        reg.seen(
            &m.media().media_id.to_string(),
            &m.media().label,
            &disk.devnode.display().to_string(),
            &disk.fs_uuid,
            m.tree(),
            self.clock.now(),
        );
        let _ = reg.save();
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
