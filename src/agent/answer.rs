//! The agent's answers: `status`, and the control socket's requests, one task per
//! connection; warnings about media away too long.

use super::*;

impl Agent {
    /// Warn about media away longer than configured (once a day each).
    pub(super) fn check_away(&self) {
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
        self.save_register(&reg);
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

    pub(super) fn status(&self) -> status::Status {
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
                    newest: backup_refs(&l.newest),
                    job: l.job.as_ref().map(|j| status::Job {
                        kind: j.kind,
                        started: j.started,
                        files: j.meter.files(),
                        bytes: j.meter.bytes(),
                    }),
                    next_due: l.next_due,
                    free_bytes: l.free_bytes,
                    size_bytes: l.size_bytes,
                    last_verify: l.last_verify,
                    pared: l.pared,
                    last_error: l.last_error.clone(),
                    writing: self.cfg.agent.multiple_media == MultipleMedia::All
                        || newest_seq == Some(i.seq),
                    reach: l.reach.clone(),
                    lent: l.lent,
                }
            })
            .collect();
        let ids: Vec<String> = ins.values().map(|i| i.media.media_id.to_string()).collect();
        let failing: Vec<String> = ins
            .values()
            .filter_map(|i| i.live.locked().failing.clone())
            .collect();
        drop(ins);
        let reg = self.register.locked();
        let limit = Duration::days(self.cfg.agent.away_warning_days as i64);
        let mut warnings = self.warnings.locked().clone();
        warnings.extend(failing);
        if let Some(b) = self.clock.backwards() {
            warnings.push(format!(
                "the wall clock moved backwards by {} (noticed at {}); backups are dated from the agent's own count, never before the backups already made, until the wall clock catches up",
                span(b.by),
                b.seen.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
        if let Some(f) = self.clock.forwards() {
            warnings.push(format!(
                "the wall clock jumped forward by {} (noticed at {}); backups that fell due in the time skipped were made at once, one of each kind due, not one per interval skipped",
                span(f.by),
                f.seen.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
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
                    newest: backup_refs(&s.newest),
                }
            })
            .collect();
        status::Status {
            now,
            host: self.host.clone(),
            inserted,
            known,
            warnings,
            last_failure: self.last_failure.locked().clone(),
        }
    }

    pub(super) fn find(&self, which: &Option<String>) -> Result<Handle, String> {
        let ins = self.inserted.locked();
        let matches: Vec<&Inserted> = ins
            .values()
            .filter(|i| supervise::selects(which, &i.media, &i.disk, &i.mountpoint))
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
            Request::AdvanceClock { seconds, step } => match self.clock.adjust(seconds, step) {
                Ok(now) => {
                    self.check_away();
                    Response::ok(&status::ClockNow { now })
                }
                Err(e) => Response::err(e),
            },
            // Jobs and lends are served by `serve`, which streams their progress.
            Request::Verify { .. }
            | Request::Backup { .. }
            | Request::Pare { .. }
            | Request::Repair { .. }
            | Request::Lend { .. } => Response::err("not a request answered at once"),
            Request::Enrolled { devnum } => self.enrolled(devnum).await,
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
                // A lent medium is a command's until it lets go (up to `asked::LEND_LIMIT`):
                // say so now rather than leave the eject waiting for it.
                if live.locked().lent {
                    return Response::err(
                        "the medium is lent to a running trayback command (media passphrase, rotate-host-key or adopt); eject it once that command has ended",
                    );
                }
                let abort = {
                    let mut l = live.locked();
                    l.ejecting = true;
                    l.job.as_ref().is_some_and(|j| {
                        j.kind != Kind::Micro || !self.cfg.agent.eject_waits_for_micro
                    })
                };
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
}

impl Agent {
    /// A disk was enrolled by `media init` while the agent ran: forget that it was refused,
    /// and identify it again as soon as nobody else has it mounted (for ten minutes at most).
    async fn enrolled(&self, devnum: u64) -> Response {
        let disks = tokio::task::spawn_blocking(devices::enumerate).await;
        let Some(disk) = disks
            .ok()
            .and_then(|d| d.ok())
            .and_then(|d| d.into_iter().find(|d| d.devnum == devnum))
        else {
            return Response::err("no file system the agent can see is on that device");
        };
        if self
            .inserted
            .locked()
            .values()
            .any(|i| i.disk.devnum == devnum)
        {
            return Response::ok(&"the agent already uses it");
        }
        self.refused.locked().retain(|(d, _)| *d != disk.devnode);
        self.released.locked().remove(&disk.devnode);
        info!(device = %disk.devnode.display(), "enrolled by media init: identifying it again once it is unmounted");
        let rescan = self.rescan.clone();
        tokio::spawn(async move {
            let t0 = std::time::Instant::now();
            while t0.elapsed() < std::time::Duration::from_secs(600) {
                if !tokio::task::spawn_blocking(move || mounts::mounted_anywhere(devnum))
                    .await
                    .unwrap_or(true)
                {
                    let _ = rescan.send(disk);
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        });
        Response::ok(&"the agent will use it once it is unmounted")
    }
}

/// The longest request line the agent reads (requests are a few hundred bytes).
const MAX_REQUEST: u64 = 64 << 10;
/// How long a client may take to send its request line (the CLI sends it at once).
const REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Connections served at once; more wait in the listener's backlog.
const MAX_CONNECTIONS: usize = 100;

pub(super) async fn serve(agent: Arc<Agent>, listener: UnixListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, or the like: not a reason to spin.
                warn!(cause = %e, "control socket: cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Only root changes a medium (the socket is root's alone; this holds even if its
        // mode were loosened).
        let root = stream.peer_cred().is_ok_and(|c| c.uid() == 0);
        let agent = agent.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (r, mut w) = stream.into_split();
            // One line, bounded in length and in time.
            let mut lines = BufReader::new(tokio::io::AsyncReadExt::take(r, MAX_REQUEST)).lines();
            let line = match tokio::time::timeout(REQUEST_WAIT, lines.next_line()).await {
                Ok(Ok(Some(line))) => line,
                _ => return,
            };
            let mut r = lines.into_inner();
            let resp = match serde_json::from_str::<Request>(&line) {
                Err(e) => Response::err(format!("bad request: {e}")),
                Ok(req) if req.changes() && !root => {
                    Response::err("only root may ask the trayback agent for this")
                }
                Ok(Request::Lend { medium }) => {
                    agent.serve_lend(medium, &mut r, &mut w).await;
                    return;
                }
                Ok(req) => match agent.job_of(&req) {
                    Some(Ok((medium, job))) => agent.serve_job(medium, job, &mut r, &mut w).await,
                    Some(Err(e)) => Response::err(e),
                    None => agent.handle(req).await,
                },
            };
            let _ = asked::write_line(&mut w, &resp).await;
        });
    }
}

/// A span as days, hours, minutes and seconds (`1d 2h 3m 4s`, leading zero parts left out).
fn span(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    let parts = [
        (s / 86_400, "d"),
        (s / 3600 % 24, "h"),
        (s / 60 % 60, "m"),
        (s % 60, "s"),
    ];
    let shown: Vec<String> = parts
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if shown.is_empty() {
        "0s".into()
    } else {
        shown.join(" ")
    }
}

/// The newest backup of each kind (start, id), as `status` shows them.
fn backup_refs(newest: &BTreeMap<Kind, (DateTime<Utc>, u64)>) -> BTreeMap<Kind, status::BackupRef> {
    newest
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
        .collect()
}
