//! trayback: backups to removable, rotated disks (see ARCHITECTURE.md and FORMAT.md).
//!
//! # Layout
//! - [`config`]: the YAML configuration, validated once.
//! - [`medium`]: a backup disk: media ID file, enrolment, lock, recovery, tree and headers;
//!   its proof of ownership (per-medium keys kept on the host, the MAC in `media.yaml`).
//! - [`crypt`]: encryption at rest: the key hierarchy, sealing records, keyed block ids,
//!   the recovery key; `medium::keyring` keeps an encrypted medium's wrapped keys.
//! - [`store`]: content-addressed blocks in pack files; dedup, reads, garbage collection.
//! - [`listing`], [`index`]: the index, a Merkle tree of directory listings, and its walk.
//! - [`scan`]: reading source metadata; [`backup`]: making a backup (its parallel walk, with
//!   depth as data, in `backup/walk.rs`; what it does per entry in `backup/entry.rs`).
//! - [`verify`]: spec [0040]; [`restore`]: plan, then write under one target.
//! - [`job`]: the one backup job (room → backup → verify → pare) that the CLI, the agent and
//!   `demo` run.
//! - [`tree`], [`schedule`], [`pare`]: pure planners over the dependency tree (spec
//!   [0029]–[0048]); [`maintain`] carries out their plans on a medium (pare, reclaim space);
//!   [`simulate`] runs them over a modelled medium.
//! - [`share`]: which blobs the backups share (what a pare frees); [`size`]: `500GB`, `2TiB`;
//!   [`sizing`]: sizes measured from a medium's history, the 1.5× rule of [0055].
//! - [`query`]: ls, versions, diff, search and the name index, the drawn tree. [`compare`]: exact tree comparison.
//! - [`agent`]: the hot-plug daemon (udev, mounts, per-medium jobs, control socket);
//!   [`status`]: what it answers, as types the CLI reads back; [`metrics`]: that status as
//!   OpenMetrics text (`status --format openmetrics`, the agent's textfile).
//! - [`cli`]: the command line (thin); [`ui`]: the web interface (`trayback ui`), as thin
//!   over the same library calls.

pub mod agent;
pub mod backup;
pub mod cli;
pub mod compare;
pub mod config;
pub mod crypt;
pub mod error;
pub mod fsio;
pub mod ids;
pub mod index;
pub mod job;
pub mod listing;
pub mod logging;
pub mod maintain;
pub mod medium;
pub mod metrics;
pub mod pare;
pub mod progress;
pub mod query;
pub mod restore;
pub mod scan;
pub mod schedule;
pub mod share;
pub mod simulate;
pub mod size;
pub mod sizing;
pub mod status;
pub mod store;
pub mod tree;
pub mod ui;
pub mod verify;
