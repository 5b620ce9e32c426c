//! Where the command line gets the secrets of an encrypted medium: the recovery key or
//! passphrase that unlocks it on a machine without its host key (`--key-file PATH`,
//! `--key-fd N`, or a prompt on the terminal with echo off), and a new passphrase.
//!
//! Secrets are read capped (4 KiB), held in zeroizing strings, and never printed or logged.

use super::state_dir;
use crate::error::{Error, IoContext};
use crate::medium::{MediaFile, Medium, Unlock};
use anyhow::{bail, Result};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use zeroize::Zeroizing;

/// A secret is at most this long.
const MAX_SECRET: u64 = 4096;

/// The global `--key-file` / `--key-fd` of this run.
#[derive(Debug, Default)]
struct Source {
    file: Option<PathBuf>,
    fd: Option<u32>,
}

static SOURCE: OnceLock<Source> = OnceLock::new();

/// Remember where this run's recovery key or passphrase comes from.
pub fn set_source(file: Option<PathBuf>, fd: Option<u32>) {
    let _ = SOURCE.set(Source { file, fd });
}

fn read_capped(r: impl Read, what: &Path) -> crate::error::Result<Zeroizing<String>> {
    let mut buf = Zeroizing::new(Vec::new());
    r.take(MAX_SECRET + 1).read_to_end(&mut buf).at(what)?;
    if buf.len() as u64 > MAX_SECRET {
        return Err(Error::Refused(format!(
            "{}: longer than {MAX_SECRET} bytes; not a key or passphrase",
            what.display()
        )));
    }
    let text = std::str::from_utf8(&buf)
        .map_err(|_| Error::Refused(format!("{}: not UTF-8 text", what.display())))?;
    // One line: what follows the first newline is not part of the secret.
    Ok(Zeroizing::new(
        text.lines().next().unwrap_or("").to_string(),
    ))
}

fn from_file(path: &Path) -> crate::error::Result<Zeroizing<String>> {
    read_capped(std::fs::File::open(path).at(path)?, path)
}

fn from_fd(fd: u32) -> crate::error::Result<Zeroizing<String>> {
    // Through /dev/fd: the descriptor is opened anew, not taken over.
    let path = PathBuf::from(format!("/dev/fd/{fd}"));
    read_capped(std::fs::File::open(&path).at(&path)?, &path)
}

/// Read one line from the terminal with echo off; `None` without a terminal.
fn prompt(text: &str) -> crate::error::Result<Option<Zeroizing<String>>> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let tty_path = Path::new("/dev/tty");
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(tty_path)
        .at(tty_path)?;
    (&tty).write_all(text.as_bytes()).at(tty_path)?;
    let old = tcgetattr(&tty).map_err(|e| Error::Io {
        path: tty_path.into(),
        cause: e.into(),
    })?;
    let mut quiet = old.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    let _ = tcsetattr(&tty, OptionalActions::Now, &quiet);
    let mut line = Zeroizing::new(String::new());
    let read = std::io::BufReader::new(&tty)
        .take(MAX_SECRET)
        .read_line(&mut line);
    let _ = tcsetattr(&tty, OptionalActions::Now, &old);
    let _ = (&tty).write_all(b"\n");
    read.at(tty_path)?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_string());
    Ok(Some(trimmed))
}

/// The recovery key or passphrase for medium `m`, from `--key-file`, `--key-fd` or the
/// terminal; `None` if none of these is at hand.
pub fn ask(m: &MediaFile) -> crate::error::Result<Option<Zeroizing<String>>> {
    let src = SOURCE.get_or_init(Source::default);
    if let Some(f) = &src.file {
        return from_file(f).map(Some);
    }
    if let Some(fd) = src.fd {
        return from_fd(fd).map(Some);
    }
    let label: String = m.label.chars().take(64).collect();
    prompt(&format!(
        "medium {} ({label:?}) is encrypted; recovery key or passphrase: ",
        m.media_id
    ))
}

/// Whether this run was given a recovery key or passphrase (`--key-file`, `--key-fd`): the
/// medium it is for must then be encrypted.
pub fn given() -> bool {
    let src = SOURCE.get_or_init(Source::default);
    src.file.is_some() || src.fd.is_some()
}

/// Open a medium for reading, unlocking an encrypted one with this host's key or, lacking
/// it, the recovery key or passphrase.
pub fn open_read(root: &Path) -> Result<Medium> {
    let state = state_dir(None)?;
    Ok(Medium::open_read(
        root,
        &Unlock {
            state_dir: Some(&state),
            ask: Some(&ask),
            secret_given: given(),
        },
    )?)
}

/// A new passphrase: from `file`, else typed twice at the terminal.
pub fn new_passphrase(file: Option<&Path>) -> Result<Zeroizing<String>> {
    if let Some(f) = file {
        return Ok(from_file(f)?);
    }
    let Some(first) = prompt("new passphrase: ")? else {
        bail!("no terminal to ask for a passphrase; give it with --passphrase-file PATH");
    };
    let again = prompt("the same passphrase again: ")?.unwrap_or_default();
    if *first != *again {
        bail!("the two passphrases differ; nothing changed");
    }
    Ok(first)
}
