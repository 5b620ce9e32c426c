//! `trayback media …`: enrol a medium (encrypted by default, with its recovery key shown
//! once), change an encrypted medium's passphrase or this host's key for it, adopt one, show
//! one. Thin, like the rest of `cli`: the library decides, this prints.

use super::output::{self, print_json};
use super::{held, keys, load_config, state_dir};
use crate::maintain;
use crate::medium::{self, Medium};
use crate::tree::TreeFormat;
use anyhow::Result;
use chrono::Utc;
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum MediaCmd {
    /// Write the media ID file and an empty store.
    Init {
        dir: PathBuf,
        #[arg(long)]
        label: String,
        /// Wipe an already enrolled medium and enrol it anew.
        #[arg(long)]
        force: bool,
        /// The configuration whose sources the medium will hold (for the sizing check).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Sources to measure against the medium (spec [0055]: about 1.5 times their size).
        #[arg(long = "source")]
        sources: Vec<PathBuf>,
        /// Store records unencrypted (new media are encrypted unless this or the config's
        /// `encrypt: false` says otherwise).
        #[arg(long)]
        plaintext: bool,
        /// Also let a passphrase unlock the medium (typed twice at the terminal).
        #[arg(long, conflicts_with = "plaintext")]
        passphrase: bool,
        /// As --passphrase, from the first line of this file.
        #[arg(long, value_name = "PATH", conflicts_with = "plaintext")]
        passphrase_file: Option<PathBuf>,
        /// The medium's tree format (FORMAT.md "Versioning"; default: the config's
        /// `tree_format`, else the newest), for a disk a host running an older trayback must
        /// also use — 2: content-defined blocks without frames; 1: fixed 256 KiB blocks.
        /// A medium keeps its format for life.
        #[arg(long, value_name = "N")]
        tree_format: Option<TreeFormat>,
        #[arg(long)]
        json: bool,
    },
    /// Set, change or remove the passphrase of this host's encrypted medium.
    Passphrase {
        dir: PathBuf,
        /// The new passphrase from the first line of this file (default: typed twice).
        #[arg(long, value_name = "PATH")]
        passphrase_file: Option<PathBuf>,
        /// Remove the passphrase (the recovery key and this host's key still unlock).
        #[arg(long, conflicts_with = "passphrase_file")]
        remove: bool,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Replace this host's key for an encrypted medium (the medium's wrap of its data key
    /// is rewritten for the new key).
    RotateHostKey {
        dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Show the media ID file and a summary.
    Show {
        dir: PathBuf,
        /// Also: how far back each kind will reach on this medium at the change rate its own
        /// history shows (a simulated half year, spec [0055]).
        #[arg(long)]
        reach: bool,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Take an existing medium for this host (format 1, another host's, or one whose key
    /// this host lost): a new key kept on this host, and a media ID file sealed with it.
    /// An encrypted medium is unlocked with its recovery key or passphrase (prompt,
    /// --key-file or --key-fd) and its tree goes on.
    Adopt {
        dir: PathBuf,
        /// Replace the key this host already holds for the medium's id (the disk that
        /// verified with the old key becomes foreign).
        #[arg(long)]
        replace_key: bool,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// Run one `media` command; returns the exit status.
pub fn run(cmd: MediaCmd) -> Result<u8> {
    match cmd {
        MediaCmd::Init {
            dir,
            label,
            force,
            config,
            sources,
            plaintext,
            passphrase,
            passphrase_file,
            tree_format,
            json,
        } => {
            let cfg = load_config(config.as_deref(), &sources)?;
            let state = cfg.agent.state_dir.clone();
            let old = force
                .then(|| Medium::identify(&dir).ok().map(|m| m.media_id))
                .flatten();
            let protection = if plaintext || !cfg.encrypt {
                medium::Protection::Plaintext
            } else {
                let passphrase = if passphrase || passphrase_file.is_some() {
                    Some(keys::new_passphrase(passphrase_file.as_deref())?)
                } else {
                    None
                };
                medium::Protection::Encrypted { passphrase }
            };
            // The file system is this host's from the first write on: registered before it,
            // so a tray pulled before its journal is checkpointed is recovered by the agent,
            // not refused as a stranger's dirty disk. (Not for a disk that init will refuse.)
            if force || Medium::identify(&dir).is_err() {
                if let Err(e) = crate::agent::remember_file_system_at(&state, &dir) {
                    eprintln!(
                        "trayback: warning: {}: its file system is not recorded in {} ({e}); if the disk is pulled before the agent has used it, the agent will not replay its journal",
                        dir.display(),
                        state.display()
                    );
                }
            }
            let enrolled = Medium::init(
                &dir,
                medium::Enrolment {
                    label: &label,
                    force,
                    now: Utc::now(),
                    state_dir: &state,
                    protection,
                    tree_format: tree_format.unwrap_or(cfg.tree_format),
                },
            )?;
            let m = &enrolled.media;
            let recovery = enrolled.recovery.as_ref().map(|r| r.display());
            // The wiped medium's key is of no more use (init proved it before wiping).
            if let Some(id) = old {
                let _ = std::fs::remove_file(medium::key_path(&state, &id));
            }
            let undersized = crate::sizing::check(&dir, &cfg);
            if json {
                let mut v = serde_json::to_value(m)?;
                if let Some(u) = &undersized {
                    v["undersized"] = serde_json::to_value(u)?;
                }
                if let Some(r) = &recovery {
                    v["recovery_key"] = serde_json::Value::String(r.to_string());
                }
                print_json(&v)?;
            } else {
                println!(
                    "enrolled {} as medium {} ({:?}), {}",
                    dir.display(),
                    m.media_id,
                    m.label,
                    if recovery.is_some() {
                        "encrypted"
                    } else {
                        "plaintext"
                    }
                );
                if let Some(r) = &recovery {
                    println!(
                    "\nrecovery key (shown only now: print it or write it down, and keep it apart from\nthis host and the medium; with it the medium restores on any machine):\n\n    {}\n",
                    r.as_str()
                );
                }
                if let Some(u) = &undersized {
                    println!("warning: {u}");
                }
            }
            held::tell_agent_enrolled(&dir, json);
            Ok(0)
        }
        MediaCmd::Passphrase {
            dir,
            passphrase_file,
            remove,
            config,
            json,
        } => {
            let state = state_dir(config.as_deref())?;
            let new = if remove {
                None
            } else {
                Some(keys::new_passphrase(passphrase_file.as_deref())?)
            };
            let new = new.as_deref().map(|p| p.as_str());
            let c = held::lent(&dir, |d| medium::set_passphrase(&state, d, new))?;
            key_change(&dir, c, json)
        }
        MediaCmd::RotateHostKey { dir, config, json } => {
            let state = state_dir(config.as_deref())?;
            let c = held::lent(&dir, |d| medium::rotate_host_key(&state, d))?;
            key_change(&dir, c, json)
        }
        MediaCmd::Adopt {
            dir,
            replace_key,
            config,
            json,
        } => {
            let state = state_dir(config.as_deref())?;
            let host = medium::host_name();
            let a = held::lent(&dir, |d| {
                medium::adopt(
                    &state,
                    d,
                    &host,
                    replace_key,
                    Some(&keys::ask),
                    keys::given(),
                )
            })?;
            if json {
                print_json(&a)?;
            } else if a.already {
                println!(
                    "{} is already this host's medium {} ({:?}); nothing changed",
                    dir.display(),
                    a.media.media_id,
                    a.media.label
                );
            } else {
                println!(
                    "adopted {} as this host's medium {} ({:?}); its key is in {}",
                    dir.display(),
                    a.media.media_id,
                    a.media.label,
                    medium::key_path(&state, &a.media.media_id).display()
                );
            }
            Ok(0)
        }
        MediaCmd::Show {
            dir,
            reach,
            config,
            json,
        } => {
            let m = keys::open_read(&dir)?;
            let reach = if reach {
                let cfg = load_config(config.as_deref(), &[])?;
                Some(crate::sizing::reach(&m, &cfg.schedule, &cfg.pare)?)
            } else {
                None
            };
            if json {
                let (packs_bytes, live_bytes) = maintain::usage(&m)?;
                print_json(&serde_json::json!({
                    "media": m.media(), "tree_format": m.tree().format,
                    "backups": m.tree().backups.len(), "packs": m.store().packs().len(),
                    "blocks": m.store().block_count(), "free_bytes": m.free_space()?,
                    "packs_bytes": packs_bytes, "live_bytes": live_bytes, "reach": reach,
                }))?;
            } else {
                output::print_media(&m)?;
                if let Some(r) = &reach {
                    output::print_reach(r, "");
                }
            }
            Ok(0)
        }
    }
}

fn key_change(dir: &Path, c: medium::KeyChange, json: bool) -> Result<u8> {
    if json {
        print_json(&serde_json::json!({ "medium": dir, "change": c }))?;
    } else {
        println!(
            "{}: {}",
            dir.display(),
            match c {
                medium::KeyChange::PassphraseSet => "passphrase set",
                medium::KeyChange::PassphraseRemoved => "passphrase removed",
                medium::KeyChange::HostKeyRotated => "this host's key replaced",
            }
        );
    }
    Ok(0)
}
