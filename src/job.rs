//! One backup job, the same for the CLI, the agent and `demo`: make room by the paring plan,
//! back up what is due, verify it (spec [0040]), pare micro backups past their age. The
//! sequence exists only here; callers decide what is due and present the typed [`Outcome`].
//!
//! Invariants: nothing is written once `still_ours` says the medium is no longer where it was
//! opened; a stage that fails ends the job (later stages are not tried), and what earlier
//! stages did (backups pared to make room) is still reported.

use crate::backup;
use crate::config::Config;
use crate::ids::BackupId;
use crate::maintain::{self, Pared, Sizing};
use crate::medium::{BackupHeader, Medium};
use crate::progress::Meter;
use crate::schedule::Due;
use crate::tree::{Kind, Tree};
use crate::verify;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;
use tracing::{info, warn};

/// What to do.
pub struct Job<'a> {
    pub due: Due,
    /// The backup's recorded time, and "now" for the paring plan; never earlier than the
    /// newest backup on the medium ([`crate::tree::Tree::date_new_backup`]).
    pub at: DateTime<Utc>,
    pub config: &'a Config,
    /// Verify after writing (only the CLI's `--no-verify` turns this off).
    pub verify: bool,
    pub cancel: &'a AtomicBool,
    pub backup_meter: &'a Meter,
    pub verify_meter: &'a Meter,
    /// Asked before each stage that writes: is the medium still mounted where it was?
    pub still_ours: &'a dyn Fn() -> bool,
}

/// The stage at which a job failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Room,
    Backup,
    Verify,
    Pare,
}

/// Why a job failed, typed: what the agent does about it (a failing disk is written no more,
/// a pulled one is not notified as failed) is decided by the variant, never by a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Failure {
    /// The medium is no longer mounted where it was: nothing was written from `stage` on.
    Gone { stage: Stage },
    /// No room for the backup even after all the plan allows; nothing was pared to make room
    /// ([`Outcome::too_small`] has the numbers).
    NoRoom { message: String },
    /// The medium reported I/O errors, or its file system was made read-only by the kernel
    /// ([`crate::error::Error::is_medium_failing_below`]): the disk, not the job, is at fault.
    MediumFailing { stage: Stage, message: String },
    /// Any other error.
    Error { stage: Stage, message: String },
}

impl Failure {
    pub fn stage(&self) -> Stage {
        match self {
            Failure::Gone { stage }
            | Failure::MediumFailing { stage, .. }
            | Failure::Error { stage, .. } => *stage,
            Failure::NoRoom { .. } => Stage::Room,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Gone {
                stage: Stage::Room | Stage::Backup,
            } => write!(
                f,
                "the medium is no longer mounted where it was; nothing written"
            ),
            Failure::Gone { .. } => write!(
                f,
                "the medium is no longer mounted where it was; the backup was made, nothing more written"
            ),
            Failure::NoRoom { message }
            | Failure::MediumFailing { message, .. }
            | Failure::Error { message, .. } => write!(f, "{message}"),
        }
    }
}

/// The medium is too small (spec [0044]): the plan pared down to one backup, or could not
/// make room at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TooSmall {
    /// Step 118: only one backup fits; the backup was made.
    OnlyOneFits,
    /// Step 118 or 142: no room even after all the plan allows; nothing pared to make room,
    /// no backup made. The numbers say what a medium would need.
    NoRoom(crate::pare::TooSmall),
}

impl std::fmt::Display for TooSmall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TooSmall::OnlyOneFits => {
                write!(
                    f,
                    "only one backup fits on this medium; use a larger one (spec [0044])"
                )
            }
            TooSmall::NoRoom(t) => write!(f, "{t}"),
        }
    }
}

/// What a job did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub kind: Kind,
    /// The committed backup, if one was made.
    pub backup: Option<BackupHeader>,
    pub verify: Option<verify::Report>,
    pub pared_before: Vec<Pared>,
    pub pared_after: Vec<Pared>,
    pub too_small: Option<TooSmall>,
    /// The incremental kind that was due, when no room could be made for it without paring
    /// its parent and a full (`kind`) was made instead.
    pub instead_of: Option<Kind>,
    pub failure: Option<Failure>,
}

impl Outcome {
    fn new(kind: Kind) -> Outcome {
        Outcome {
            kind,
            backup: None,
            verify: None,
            pared_before: Vec::new(),
            pared_after: Vec::new(),
            too_small: None,
            instead_of: None,
            failure: None,
        }
    }

    fn fail(mut self, failure: Failure) -> Outcome {
        self.failure = Some(failure);
        self
    }

    /// Fail with an engine error, telling a failing medium from other failures.
    fn fail_with(
        self,
        stage: Stage,
        prefix: &str,
        e: crate::error::Error,
        root: &std::path::Path,
    ) -> Outcome {
        let message = format!("{prefix}{e}");
        self.fail(if e.is_medium_failing_below(root) {
            Failure::MediumFailing { stage, message }
        } else {
            Failure::Error { stage, message }
        })
    }

    /// The medium reported I/O errors (or was made read-only by the kernel).
    pub fn medium_failing(&self) -> bool {
        matches!(self.failure, Some(Failure::MediumFailing { .. }))
    }

    pub fn backup_id(&self) -> Option<u64> {
        self.backup.as_ref().map(|h| h.id.0)
    }

    /// `Some(ok)` once the verify ran.
    pub fn verified(&self) -> Option<bool> {
        self.verify.as_ref().map(|r| r.ok)
    }

    /// Paths the verify found damaged.
    pub fn damaged_files(&self) -> &[String] {
        self.verify.as_ref().map_or(&[], |r| &r.affected)
    }

    pub fn error(&self) -> Option<String> {
        self.failure.as_ref().map(Failure::to_string)
    }

    pub fn pared(&self) -> usize {
        self.pared_before.len() + self.pared_after.len()
    }
}

/// What a `backup` command asks for: a kind (default: what the schedule says is due) and a
/// parent (default: the spec's for the kind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    pub kind: Option<Kind>,
    pub parent: Option<BackupId>,
}

/// An incremental asked for with no backup on the medium to be its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no verified {} on this medium to be the parent of a {kind} backup (spec [0030]-[0032]); make a monthly first (--kind monthly, or let the schedule decide)", match kind {
    Kind::Weekly => "monthly",
    Kind::Daily => "weekly or monthly",
    _ => "backup",
})]
pub struct NoParent {
    pub kind: Kind,
}

/// What `backup` makes of `ask` on `tree` at `now`: the backup to make, or `None` when
/// nothing is due (and no kind was asked for). The CLI and the agent both decide here.
pub fn plan(
    tree: &Tree,
    ask: &Ask,
    now: DateTime<Utc>,
    schedule: &crate::schedule::Schedule,
) -> Result<Option<Due>, NoParent> {
    let Some(kind) = ask.kind else {
        return Ok(crate::schedule::due(tree, now, schedule).map(|mut d| {
            if ask.parent.is_some() && !d.kind.is_full() {
                d.parent = ask.parent;
            }
            d
        }));
    };
    let parent = if kind.is_full() {
        None
    } else {
        ask.parent.or(crate::schedule::parent_for(tree, kind))
    };
    if parent.is_none() && !kind.is_full() {
        return Err(NoParent { kind });
    }
    Ok(Some(Due {
        kind,
        parent,
        why: crate::schedule::Why::Requested,
    }))
}

/// What a `backup` command did: the job for what was due, or nothing until `next_due`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Done {
    Ran { due: Due, outcome: Box<Outcome> },
    NothingDue { next_due: DateTime<Utc> },
}

/// Run one job on `m` (open for writing).
pub fn run(m: &mut Medium, job: &Job) -> Outcome {
    let due = &job.due;
    let at = m.tree().date_new_backup(job.at);
    let mut out = Outcome::new(due.kind);
    if !(job.still_ours)() {
        return out.fail(Failure::Gone { stage: Stage::Room });
    }
    // Sized cheaply first (the last backup's size, when that fits); a backup that outgrew it
    // and filled the medium is sized by a walk of the sources and given room once more.
    let mut sizing = Sizing::Cheap;
    // What is made: the backup due, or a full instead; a retry makes what the first try chose.
    let mut due = due.clone();
    let header = loop {
        let make = match maintain::room_for_backup(m, job.config, &due, at, job.cancel, sizing) {
            Ok(Ok(room)) => {
                if room.pared.iter().any(|p| p.reason.medium_too_small()) {
                    out.too_small = Some(TooSmall::OnlyOneFits);
                }
                out.pared_before.extend(room.pared);
                if let Some(k) = room.instead_of {
                    info!(instead_of = %k, "no room for the incremental without paring its parent: a full backup instead");
                    out.kind = room.make.kind;
                    out.instead_of = Some(k);
                }
                room.make
            }
            Ok(Err(t)) => {
                out.pared_before.extend(t.pared.iter().cloned());
                out.too_small = Some(TooSmall::NoRoom(t.notice.clone()));
                // Step 100 is retention, not room: micros past their age go whether or not
                // the backup fits (the newest backup stays, `pare::retention`).
                if (job.still_ours)() {
                    match maintain::routine(m, at, &job.config.pare, false) {
                        Ok(p) => out.pared_after = p,
                        Err(e) => warn!(cause = %e, "pare: micros past their age left for later"),
                    }
                }
                let message = format!("{t}; the {} backup was not made", due.kind);
                return out.fail(Failure::NoRoom { message });
            }
            Err(e) => {
                out.pared_before.extend(e.pared);
                return out.fail_with(Stage::Room, "", e.cause, m.root());
            }
        };
        due = make.clone();
        if !(job.still_ours)() {
            return out.fail(Failure::Gone {
                stage: Stage::Backup,
            });
        }
        let req = backup::Request {
            kind: make.kind,
            parent: make.parent,
            at,
            config: job.config,
            meter: job.backup_meter,
            cancel: job.cancel,
            verify_after: job.verify,
        };
        match backup::run(m, &req) {
            Ok(h) => break h,
            Err(e) if e.is_no_space() && sizing == Sizing::Cheap => {
                warn!(cause = %e, "the backup outgrew the last one's size and filled the medium; sizing it by a walk and making room again");
                sizing = Sizing::Walk;
            }
            Err(e) => return out.fail_with(Stage::Backup, "", e, m.root()),
        }
    };
    let id = header.id;
    out.backup = Some(header);
    // Verify records its result in tree.yaml and pare deletes: both write.
    if !(job.still_ours)() {
        return out.fail(Failure::Gone {
            stage: Stage::Verify,
        });
    }
    if job.verify {
        match verify::verify(m, id, false, job.verify_meter) {
            Ok(r) => out.verify = Some(r),
            Err(e) => return out.fail_with(Stage::Verify, "verify: ", e, m.root()),
        }
    }
    if !(job.still_ours)() {
        return out.fail(Failure::Gone { stage: Stage::Pare });
    }
    match maintain::routine(m, at, &job.config.pare, false) {
        Ok(p) => out.pared_after = p,
        Err(e) => return out.fail_with(Stage::Pare, "pare: ", e, m.root()),
    }
    out
}
