//! What the CLI asks of a medium the agent holds (its writer lock is the agent's): jobs —
//! `verify`, `backup`, `pare`, `repair --tree` — that the medium's task runs when it is idle,
//! through the same library calls the CLI makes, streaming progress back; and lends, for the
//! commands that change the medium's keys (`media passphrase`, `rotate-host-key`, `adopt`),
//! which the CLI runs itself while the agent has let go of the medium.
//!
//! Invariants:
//! - a job asked for runs only on the medium's own task, between its scheduled jobs, never
//!   beside one; its result is recorded, checkpointed in place and notified as the task's own;
//! - a backup whose client went away is cancelled (as the CLI's own would be when killed);
//!   other jobs run to their end;
//! - during a lend the task holds no `Medium` (no writer lock, no open files) and does
//!   nothing but wait; when the lend ends — the client closed the connection or died, the
//!   time limit passed — the task opens the medium again with `Medium::open_write`, which
//!   reads its ID file again and proves it (unlocking with the host key as it is now), waiting
//!   while a writer still holds the lock; a medium that no longer proves, or is another,
//!   ends the session (unmounted and notified by the supervisor).

use super::control::{ConfigFile, Phase, Progress};
use super::task::BackupJob;
use super::*;
use crate::error::Error;
use crate::ids::MediaId;
use crate::maintain;
use crate::verify::{self, Which};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// How long a medium stays lent at most; then the agent takes it back, waiting for the
/// writer lock as long again if the command still holds it (then it gives the medium up).
const LEND_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// A job asked for over the socket.
pub(super) enum AskedJob {
    Verify {
        which: Which,
        read_all: bool,
    },
    Backup {
        ask: job::Ask,
        at: Option<DateTime<Utc>>,
        verify: bool,
        config: Arc<Config>,
    },
    Pare {
        at: Option<DateTime<Utc>>,
        free: Option<u64>,
        config: Arc<Config>,
    },
    Repair,
}

/// A job on its way to the medium's task, with what the connection follows it by.
pub(super) struct Asked {
    job: AskedJob,
    backup_meter: Arc<Meter>,
    verify_meter: Arc<Meter>,
    /// The client closed the connection.
    abandoned: Arc<AtomicBool>,
    reply: oneshot::Sender<Response>,
}

/// A lend on its way to the medium's task.
pub(super) struct Lend {
    reply: oneshot::Sender<Response>,
    /// Resolves (with an error) when the client lets go (shuts its side or closes).
    done: oneshot::Receiver<()>,
    /// Told once the medium is taken back (or why not), for the client that waits for it.
    back: oneshot::Sender<Response>,
}

/// What the task has queued, in the order asked.
pub(super) enum Queued {
    Job(Asked),
    Lend(Lend),
}

impl Queued {
    pub(super) fn reply(self) -> oneshot::Sender<Response> {
        match self {
            Queued::Job(a) => a.reply,
            Queued::Lend(l) => l.reply,
        }
    }
}

impl Agent {
    /// The job a request asks for, and the medium it names; `None` for a request that is no
    /// job. A config the CLI read is parsed here, as the CLI parsed it.
    pub(super) fn job_of(
        &self,
        req: &Request,
    ) -> Option<Result<(Option<String>, AskedJob), String>> {
        let config = |file: &Option<ConfigFile>, sources: &[PathBuf]| {
            let cfg = match file {
                Some(f) => Config::parse(&f.text, &f.path).map_err(|e| e.to_string())?,
                None => self.cfg.clone(),
            };
            let cfg = if sources.is_empty() {
                cfg
            } else {
                cfg.with_sources(sources.to_vec())
                    .map_err(|e| e.to_string())?
            };
            Ok::<_, String>(Arc::new(cfg))
        };
        Some(match req {
            Request::Verify {
                medium,
                backup,
                all,
                read_all,
            } => Ok((
                medium.clone(),
                AskedJob::Verify {
                    which: match (backup, all) {
                        (_, true) => Which::All,
                        (Some(id), false) => Which::One(*id),
                        (None, false) => Which::Newest,
                    },
                    read_all: *read_all,
                },
            )),
            Request::Backup {
                medium,
                ask,
                at,
                no_verify,
                config: file,
                sources,
            } => config(file, sources).map(|config| {
                (
                    medium.clone(),
                    AskedJob::Backup {
                        ask: *ask,
                        at: *at,
                        verify: !no_verify,
                        config,
                    },
                )
            }),
            Request::Pare {
                medium,
                at,
                free,
                config: file,
            } => config(file, &[]).map(|config| {
                (
                    medium.clone(),
                    AskedJob::Pare {
                        at: *at,
                        free: *free,
                        config,
                    },
                )
            }),
            Request::Repair { medium } => Ok((medium.clone(), AskedJob::Repair)),
            _ => return None,
        })
    }

    /// Serve a job: queue it on the medium's task, send a progress line every half second
    /// while it runs, then the answer. A client that closes the connection abandons it.
    pub(super) async fn serve_job(
        &self,
        medium: Option<String>,
        job: AskedJob,
        r: &mut (impl AsyncRead + Unpin),
        w: &mut (impl AsyncWrite + Unpin),
    ) -> Response {
        let (tx, _, _) = match self.find(&medium) {
            Ok(x) => x,
            Err(e) => return Response::err(e),
        };
        let (backup_meter, verify_meter) = (Arc::new(Meter::hidden()), Arc::new(Meter::hidden()));
        // The phase every tick reports (a verify's only one), and the other, when it moved.
        let meters = match job {
            AskedJob::Verify { .. } => vec![(Phase::Verify, verify_meter.clone(), true)],
            AskedJob::Backup { .. } => vec![
                (Phase::Backup, backup_meter.clone(), true),
                (Phase::Verify, verify_meter.clone(), false),
            ],
            AskedJob::Pare { .. } | AskedJob::Repair => Vec::new(),
        };
        let abandoned = Arc::new(AtomicBool::new(false));
        let (reply, mut answer) = oneshot::channel();
        let asked = Asked {
            job,
            backup_meter,
            verify_meter,
            abandoned: abandoned.clone(),
            reply,
        };
        if tx.send(Cmd::Asked(asked)).await.is_err() {
            return Response::err("the medium is going away");
        }
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        let mut reading = true;
        let mut buf = [0u8; 512];
        let mut sent = vec![Progress::default(); meters.len()];
        loop {
            tokio::select! {
                a = &mut answer => {
                    break a.unwrap_or_else(|_| Response::err("the medium went away before the job ran"));
                }
                n = r.read(&mut buf), if reading => {
                    if matches!(n, Ok(0) | Err(_)) {
                        reading = false;
                        abandoned.store(true, Ordering::SeqCst);
                    }
                }
                _ = tick.tick() => {
                    for ((phase, meter, always), last) in meters.iter().zip(sent.iter_mut()) {
                        let p = Progress { files: meter.files(), bytes: meter.bytes(), phase: *phase };
                        if *always || p != *last {
                            *last = p;
                            if write_line(w, &Response::progress(p)).await.is_err() {
                                abandoned.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Serve a lend: once the medium's task has let go of the medium, answer with its mount
    /// point, then keep the lend until the client shuts its side or closes the connection (or
    /// the time limit), and tell it when the medium is taken back.
    pub(super) async fn serve_lend(
        &self,
        medium: Option<String>,
        r: &mut (impl AsyncRead + Unpin),
        w: &mut (impl AsyncWrite + Unpin),
    ) {
        let tx = match self.find(&medium) {
            Ok((tx, _, _)) => tx,
            Err(e) => {
                let _ = write_line(w, &Response::err(e)).await;
                return;
            }
        };
        let (reply, answer) = oneshot::channel();
        let (keep, done) = oneshot::channel::<()>();
        let (back, taken_back) = oneshot::channel();
        if tx
            .send(Cmd::Lend(Lend { reply, done, back }))
            .await
            .is_err()
        {
            let _ = write_line(w, &Response::err("the medium is going away")).await;
            return;
        }
        let mut buf = [0u8; 512];
        // The client may leave while it waits for the medium: the lend then ends at once.
        let answer = tokio::select! {
            a = answer => a.unwrap_or_else(|_| Response::err("the medium went away before it could be lent")),
            _ = until_closed(r, &mut buf) => return,
        };
        if write_line(w, &answer).await.is_err() || !answer.ok {
            return;
        }
        let _ = tokio::time::timeout(LEND_LIMIT, until_closed(r, &mut buf)).await;
        drop(keep);
        // A client that shut only its side waits to hear the medium is the agent's again, so
        // that a command run after it finds the medium held, not free for a moment.
        if let Ok(back) = taken_back.await {
            let _ = write_line(w, &back).await;
        }
    }

    /// Run a job asked for on the medium this task holds (idle now), and answer it.
    pub(super) async fn run_asked(
        &self,
        t: &Session,
        m: Medium,
        a: Asked,
        now: DateTime<Utc>,
        reach: &mut super::task::ReachState,
    ) -> Result<Medium, String> {
        let failing = t.live.locked().failing.clone();
        let Asked {
            job,
            backup_meter,
            verify_meter,
            abandoned,
            reply,
        } = a;
        // A client that went away while its job waited for the medium asked for nothing.
        if abandoned.load(Ordering::SeqCst) {
            let _ = reply.send(Response::err("the client went away before its job ran"));
            return Ok(m);
        }
        let (m, answer) = match job {
            // A failing medium is written no more, not even a verify's result or its
            // checkpoint (its message names the device).
            _ if failing.is_some() => (m, Response::err(failing.unwrap_or_default())),
            AskedJob::Verify { which, read_all } => {
                self.verify_on(t, m, which, read_all, verify_meter).await?
            }
            AskedJob::Backup {
                ask,
                at,
                verify,
                config,
            } => {
                let at = at.unwrap_or(now);
                match job::plan(m.tree(), &ask, at, &config.schedule) {
                    Err(e) => {
                        let why = format!("{}: {e}", m.root().display());
                        (m, Response::err(why))
                    }
                    Ok(None) => {
                        let next_due = schedule::next_due(m.tree(), at, &config.schedule);
                        (m, Response::ok(&job::Done::NothingDue { next_due }))
                    }
                    Ok(Some(due)) => {
                        let run = BackupJob {
                            due: due.clone(),
                            at,
                            config,
                            verify,
                            backup_meter,
                            verify_meter,
                            abandoned: Some(abandoned),
                        };
                        let (m, outcome) = self.backup_on(t, m, run, reach).await?;
                        let error = outcome.error();
                        let done = job::Done::Ran {
                            due,
                            outcome: Box::new(outcome),
                        };
                        let answer = match error {
                            None => Response::ok(&done),
                            Some(e) => Response::failed(e, &done),
                        };
                        (m, answer)
                    }
                }
            }
            AskedJob::Pare { at, free, config } => {
                self.pare_on(t, m, at.unwrap_or(now), free, config).await?
            }
            AskedJob::Repair => return self.repair_on(t, m, reply).await,
        };
        let _ = reply.send(answer);
        Ok(m)
    }

    /// Verify on the medium this task holds; what verify records (the verified flags) is
    /// checkpointed in place.
    async fn verify_on(
        &self,
        t: &Session,
        mut m: Medium,
        which: Which,
        read_all: bool,
        meter: Arc<Meter>,
    ) -> Result<(Medium, Response), String> {
        info!(medium = %m.media().media_id, ?which, read_all, "verify asked for");
        let (mp, devnum, fs_type) = (t.mp.clone(), t.disk.devnum, t.disk.fs_type.clone());
        let joined = tokio::task::spawn_blocking(move || {
            let r = verify::verify_which(&mut m, which, read_all, &meter);
            durable::checkpoint_or_warn(&mp, devnum, &fs_type);
            (m, r)
        })
        .await;
        match joined {
            Ok((m, r)) => {
                self.seen(&t.disk, &m);
                let answer = match r {
                    Ok(reports) => {
                        if !reports.is_empty() {
                            self.update_live(&t.live, |l| {
                                l.last_verify = Some(status::Verified {
                                    at: self.clock.now(),
                                    ok: reports.iter().all(|r| r.ok),
                                })
                            });
                        }
                        Response::ok(&reports)
                    }
                    Err(e) => Response::err(e.to_string()),
                };
                Ok((m, answer))
            }
            Err(e) => Err(format!("its verify failed ({})", panic_message(e))),
        }
    }

    /// `pare` on the medium this task holds, as the CLI's own: the plan, carried out.
    async fn pare_on(
        &self,
        t: &Session,
        mut m: Medium,
        now: DateTime<Utc>,
        free: Option<u64>,
        config: Arc<Config>,
    ) -> Result<(Medium, Response), String> {
        info!(medium = %m.media().media_id, ?free, "pare asked for");
        let (mp, devnum, fs_type, cancel) = (
            t.mp.clone(),
            t.disk.devnum,
            t.disk.fs_type.clone(),
            t.cancel.clone(),
        );
        let joined = tokio::task::spawn_blocking(move || {
            if !mounts::still_ours(&mp, devnum) {
                return (m, Err(None));
            }
            let r = maintain::pare(&mut m, now, &config, free, &cancel).map_err(Some);
            durable::checkpoint_or_warn(&mp, devnum, &fs_type);
            (m, r)
        })
        .await;
        let (m, r) = joined.map_err(|e| format!("its pare failed ({})", panic_message(e)))?;
        self.seen(&t.disk, &m);
        let answer = match r {
            Ok(done) => {
                info!(medium = %m.media().media_id, pared = done.pared.len(), "pared as asked");
                self.update_live(&t.live, |l| l.pared += done.pared.len() as u64);
                Response::ok(&done)
            }
            Err(None) => {
                Response::err("the medium is no longer mounted where it was; nothing pared")
            }
            Err(Some(e)) => {
                if e.is_medium_failing_below(&t.mp) {
                    self.mark_failing(&t.disk, m.media(), &t.live, &e.to_string());
                }
                Response::err(e.to_string())
            }
        };
        Ok((m, answer))
    }

    /// `repair --tree` on the medium this task holds: the task lets go of the medium, the
    /// library opens it for repair and rebuilds its tree, and the task takes it back.
    async fn repair_on(
        &self,
        t: &Session,
        m: Medium,
        reply: oneshot::Sender<Response>,
    ) -> Result<Medium, String> {
        info!(medium = %m.media().media_id, "repair --tree asked for");
        let id = m.media().media_id;
        let (mp, state) = (t.mp.clone(), self.cfg.agent.state_dir.clone());
        let r = tokio::task::spawn_blocking(move || {
            drop(m);
            maintain::repair_tree(&mp, &state)
        })
        .await;
        let answer = match r {
            Ok(Ok(notes)) => Response::ok(&notes),
            Ok(Err(e)) => Response::err(e.to_string()),
            Err(e) => Response::err(format!("repair failed ({})", panic_message(e))),
        };
        let m = self.reopen(t, id).await;
        let _ = reply.send(answer);
        match m? {
            Some(m) => Ok(m),
            None => Err("the medium went away during its repair".into()),
        }
    }

    /// Lend the medium: let go of it, answer, wait for the lend to end, take it back.
    /// `None`: the tray went meanwhile.
    pub(super) async fn lend(
        &self,
        t: &Session,
        m: Medium,
        l: Lend,
    ) -> Result<Option<Medium>, String> {
        // A client gone before the medium was free asked for nothing: keep the medium
        // rather than let go of it and prove it again.
        if l.reply.is_closed() {
            return Ok(Some(m));
        }
        let id = m.media().media_id;
        let _ = tokio::task::spawn_blocking(move || drop(m)).await;
        t.live.locked().lent = true;
        info!(medium = %id, mountpoint = %t.mp.display(), "medium lent to a command");
        let _ = l.reply.send(Response::ok(&status::Lent {
            mountpoint: t.mp.clone(),
        }));
        let mut done = l.done;
        let limit = tokio::time::sleep(LEND_LIMIT);
        tokio::pin!(limit);
        loop {
            tokio::select! {
                _ = &mut done => break,
                _ = &mut limit => {
                    warn!(medium = %id, "lent for {} s; taking the medium back", LEND_LIMIT.as_secs());
                    break;
                }
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                    if t.cancel.load(Ordering::SeqCst) {
                        break;
                    }
                }
            }
        }
        t.live.locked().lent = false;
        let reopened = self.reopen(t, id).await;
        let _ = l.back.send(match &reopened {
            Ok(Some(_)) => Response::ok(&"taken back"),
            Ok(None) => Response::err("the medium went away while it was lent"),
            Err(e) => Response::err(e.clone()),
        });
        reopened
    }

    /// Open the medium again after letting go of it: its ID file read again and proven
    /// (`Medium::open_write`), waiting while another writer holds its lock; it must be the
    /// same medium. `None`: the tray went meanwhile.
    async fn reopen(&self, t: &Session, id: MediaId) -> Result<Option<Medium>, String> {
        let mut waited = false;
        let t0 = tokio::time::Instant::now();
        loop {
            if t.cancel.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let (mp, devnum, state, level) = (
                t.mp.clone(),
                t.disk.devnum,
                self.cfg.agent.state_dir.clone(),
                self.cfg.compression_level,
            );
            let opened = tokio::task::spawn_blocking(move || {
                if !mounts::still_ours(&mp, devnum) {
                    return None;
                }
                Some(Medium::open_write(&mp, level, &state))
            })
            .await
            .map_err(|e| format!("opening the medium again failed ({})", panic_message(e)))?;
            match opened {
                None => return Ok(None),
                Some(Ok(m)) if m.media().media_id == id => {
                    info!(medium = %id, "medium taken back: its ID file read again and proven");
                    if let Some(i) = self
                        .inserted
                        .locked()
                        .get_mut(&t.disk.devnode)
                        .filter(|i| i.seq == t.seq)
                    {
                        i.media = m.media().clone();
                    }
                    self.seen(&t.disk, &m);
                    return Ok(Some(m));
                }
                Some(Ok(m)) => {
                    return Err(format!(
                        "it is medium {} now, not the medium it was lent as",
                        m.media().media_id
                    ))
                }
                Some(Err(Error::Locked(_))) if t0.elapsed() > LEND_LIMIT => {
                    return Err(format!(
                        "another process has held its writer lock for {} s since it was lent; the agent gives it up",
                        LEND_LIMIT.as_secs()
                    ))
                }
                Some(Err(Error::Locked(_))) => {
                    if !waited {
                        info!(medium = %id, "waiting for the command to let go of the medium");
                        waited = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Some(Err(e)) => return Err(format!("cannot take the medium back: {e}")),
            }
        }
    }
}

/// Read (and drop) what the client sends until it closes the connection.
async fn until_closed(r: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) {
    while matches!(r.read(buf).await, Ok(n) if n > 0) {}
}

/// One response line.
pub(super) async fn write_line(
    w: &mut (impl AsyncWrite + Unpin),
    r: &Response,
) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(r).expect("answers serialize");
    out.push(b'\n');
    tokio::io::AsyncWriteExt::write_all(w, &out).await
}
