//! The YAML records of a medium, `tree` and each backup's `header`: where they are, and how
//! they are read and written — as YAML on a plaintext medium, sealed on an encrypted one.
//!
//! A sealed record (FORMAT.md "Sealed files") is `tree.sealed` or
//! `backups/<id>/header.sealed`: a 24-byte head (`"TRAYSEAL"`, u32 version 1, u32 kind —
//! 1 tree, 2 header — and a u64 counter: the tree's generation, or the header's backup id),
//! then the YAML sealed with the head and the medium id as associated data.
//!
//! Invariants:
//! - an encrypted medium is read only through its sealed files (a plaintext `tree.yaml` or
//!   `header.yaml` on it is ignored, never trusted), and a plaintext one only through YAML;
//! - a header opens only in its own backup's directory (its id is bound), and the tree's
//!   generation is authenticated, so the medium's writer can tell an older tree put back;
//! - errors name the file and say what is wrong, never its content.

use super::{BackupHeader, Beneath, HEADER_FORMAT};
use crate::crypt::{self, Crypt, SEAL_OVERHEAD};
use crate::error::{Error, Result};
use crate::ids::BackupId;
use crate::tree::{Tree, TreeFormat};

pub const SEAL_MAGIC: &[u8; 8] = b"TRAYSEAL";
pub const SEAL_VERSION: u32 = 1;
const HEAD_LEN: usize = 24;

/// How much of each record a reader takes before refusing it as damage.
pub const MAX_TREE_FILE: u64 = 64 << 20;
pub const MAX_HEADER_FILE: u64 = 64 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FileKind {
    Tree = 1,
    Header = 2,
}

pub fn backup_rel(id: BackupId) -> String {
    format!("backups/{:08}", id.0)
}

pub fn tree_rel(crypt: &Crypt) -> &'static str {
    if crypt.is_sealed() {
        "tree.sealed"
    } else {
        "tree.yaml"
    }
}

pub fn header_rel(crypt: &Crypt, id: BackupId) -> String {
    let ext = if crypt.is_sealed() { "sealed" } else { "yaml" };
    format!("{}/header.{ext}", backup_rel(id))
}

fn head(kind: FileKind, counter: u64) -> [u8; HEAD_LEN] {
    let mut h = [0u8; HEAD_LEN];
    h[..8].copy_from_slice(SEAL_MAGIC);
    h[8..12].copy_from_slice(&SEAL_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(kind as u32).to_le_bytes());
    h[16..24].copy_from_slice(&counter.to_le_bytes());
    h
}

/// The bytes of a record file: `plain` itself, or sealed.
fn seal(crypt: &Crypt, kind: FileKind, counter: u64, plain: &[u8]) -> Vec<u8> {
    let Crypt::Sealed(keys) = crypt else {
        return plain.to_vec();
    };
    let h = head(kind, counter);
    let mut out = h.to_vec();
    out.extend_from_slice(&keys.seal(&crypt::file_ad(&keys.media_id, &h), plain));
    out
}

/// Open a record file: its plaintext and its counter (0 on a plaintext medium).
fn open(crypt: &Crypt, kind: FileKind, bytes: Vec<u8>) -> Result<(Vec<u8>, u64), String> {
    let Crypt::Sealed(keys) = crypt else {
        return Ok((bytes, 0));
    };
    if bytes.len() < HEAD_LEN + SEAL_OVERHEAD || &bytes[..8] != SEAL_MAGIC {
        return Err("not a sealed record (magic or length wrong)".into());
    }
    let h: [u8; HEAD_LEN] = bytes[..HEAD_LEN].try_into().expect("checked length");
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version != SEAL_VERSION {
        return Err(format!("sealed record version {version} is not supported"));
    }
    if u32::from_le_bytes(h[12..16].try_into().expect("4 bytes")) != kind as u32 {
        return Err("a sealed record of another kind".into());
    }
    let counter = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
    let plain = keys
        .open(&crypt::file_ad(&keys.media_id, &h), &bytes[HEAD_LEN..])
        .ok_or("does not authenticate (altered, or not this medium's)")?;
    Ok((plain, counter))
}

/// Parse YAML record `rel`. A parse error says where, never what: the bytes of a hostile
/// file are not quoted back.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    dir: &Beneath,
    rel: &str,
    bytes: &[u8],
) -> Result<T> {
    parse_yaml_at(dir, rel, bytes, 0)
}

/// [`parse_yaml`] of a part of record `rel` that starts after its first `line` lines.
fn parse_yaml_at<T: serde::de::DeserializeOwned>(
    dir: &Beneath,
    rel: &str,
    bytes: &[u8],
    line: usize,
) -> Result<T> {
    serde_yaml::from_slice(bytes).map_err(|e| Error::Damaged {
        path: dir.shown(rel),
        detail: match e.location() {
            Some(l) => format!(
                "does not parse as this record (line {}, column {})",
                line + l.line(),
                l.column()
            ),
            None => "does not parse as this record".into(),
        },
    })
}

fn read(
    dir: &Beneath,
    crypt: &Crypt,
    rel: &str,
    cap: u64,
    kind: FileKind,
) -> Result<(Vec<u8>, u64)> {
    let extra = if crypt.is_sealed() {
        (HEAD_LEN + SEAL_OVERHEAD) as u64
    } else {
        0
    };
    let bytes = dir.read_small(rel, cap + extra)?;
    open(crypt, kind, bytes).map_err(|detail| Error::Damaged {
        path: dir.shown(rel),
        detail,
    })
}

/// Read the tree, checked, and its generation (0 on a plaintext medium).
pub fn read_tree(dir: &Beneath, crypt: &Crypt) -> Result<(Tree, u64)> {
    let rel = tree_rel(crypt);
    let hint = |e| match e {
        Error::Damaged { path, detail } => Error::Damaged {
            path,
            detail: format!("{detail} (rebuild it with `trayback repair --tree`)"),
        },
        e => e,
    };
    let (plain, generation) = read(dir, crypt, rel, MAX_TREE_FILE, FileKind::Tree).map_err(hint)?;
    shallow(dir, rel, &plain).map_err(hint)?;
    let path = dir.shown(rel);
    // A tree of a format this trayback does not know does not parse as a `Tree`: say which
    // format it is rather than how it does not parse.
    let tree = parse_tree(dir, rel, &plain).map_err(|e| match format_line(&plain) {
        Some(found) if TreeFormat::from_number(found).is_none() => Error::Version {
            path: path.clone(),
            found,
            supported: TreeFormat::NUMBERS,
        },
        _ => hint(e),
    })?;
    tree.check()
        .map_err(|detail| Error::Damaged { path, detail })?;
    Ok((tree, generation))
}

/// The most bytes of a tree file's head (what comes before its first backup) and of each
/// backup's record in it (a record as written is ~300 bytes). The tree is parsed a part at a
/// time: the YAML parser holds every event of what it parses (~135 bytes each), and a
/// 64 MiB tree parsed whole took it to 2.2 GiB.
const MAX_TREE_PART: usize = 64 << 10;

/// The parts of a tree file's text, with the line each starts at: its head (`format`,
/// `next_id`, `backups:`), then each backup's record, which begins with a line starting `- `
/// (FORMAT.md "tree.yaml": the layout a reader may require).
fn tree_parts(plain: &[u8]) -> impl Iterator<Item = (usize, &[u8])> + '_ {
    let mut rest = Some((0, plain));
    std::iter::from_fn(move || {
        let (line, text) = rest.take()?;
        let mut lines = 0;
        for (i, b) in text.iter().enumerate() {
            if *b == b'\n' {
                lines += 1;
                if text[i + 1..].starts_with(b"- ") {
                    rest = Some((line + lines, &text[i + 1..]));
                    return Some((line, &text[..i + 1]));
                }
            }
        }
        Some((line, text))
    })
}

/// Parse a tree file a part at a time (see [`MAX_TREE_PART`]), each part within the cap.
fn parse_tree(dir: &Beneath, rel: &str, plain: &[u8]) -> Result<Tree> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Head {
        format: TreeFormat,
        next_id: BackupId,
        /// Empty (`backups: []`), or null when the records follow.
        backups: Option<Vec<crate::tree::BackupRecord>>,
    }
    let not_laid_out = |line: usize, what: &str| Error::Damaged {
        path: dir.shown(rel),
        detail: format!(
            "line {}: {what} (not a tree as trayback writes it, FORMAT.md \"tree.yaml\")",
            line + 1
        ),
    };
    let mut parts = tree_parts(plain).map(|(line, part)| match part.len() > MAX_TREE_PART {
        true => Err(not_laid_out(
            line,
            &format!("a part over {MAX_TREE_PART} bytes"),
        )),
        false => Ok((line, part)),
    });
    let (line, head) = parts.next().expect("a first part")?;
    let head: Head = parse_yaml_at(dir, rel, head, line)?;
    // Each part holds one backup: a part of many items (a line `-` alone continues a part),
    // or aliases of one record, would grow the tree past what its bytes hold.
    let inline = match head.backups {
        Some(b) if !b.is_empty() => return Err(not_laid_out(line, "backups listed in the head")),
        b => b.is_some(),
    };
    let mut backups = Vec::new();
    for part in parts {
        let (line, part) = part?;
        if inline {
            return Err(not_laid_out(line, "backups after `backups` was given"));
        }
        match <[_; 1]>::try_from(parse_yaml_at::<Vec<_>>(dir, rel, part, line)?) {
            Ok([record]) => backups.push(record),
            Err(_) => return Err(not_laid_out(line, "not one backup")),
        }
    }
    Ok(Tree {
        format: head.format,
        next_id: head.next_id,
        backups,
    })
}

/// The highest `format:` line at the top level of a tree file's text, read without parsing
/// it: a tree's writer puts its format on such a line.
fn format_line(plain: &[u8]) -> Option<u32> {
    plain
        .split(|b| *b == b'\n')
        .filter_map(|l| l.strip_prefix(b"format:"))
        .filter_map(|n| std::str::from_utf8(n).ok()?.trim().parse().ok())
        .max()
}

/// The format the tree file claims, if it reads (and unseals) and its `format` is a number,
/// whether or not the rest is a tree this trayback takes: what `repair --tree` keeps.
/// If the file does not parse, the highest `format:` line at its top level is taken, so a
/// damaged tree of a later trayback's format is still known for one.
pub fn claimed_tree_format(dir: &Beneath, crypt: &Crypt) -> Option<u32> {
    let rel = tree_rel(crypt);
    let (plain, _) = read(dir, crypt, rel, MAX_TREE_FILE, FileKind::Tree).ok()?;
    #[derive(serde::Deserialize)]
    struct Claim {
        format: u32,
    }
    let (_, head) = tree_parts(&plain).next().expect("a first part");
    let parsed = (head.len() <= MAX_TREE_PART)
        .then(|| shallow(dir, rel, head).and_then(|()| parse_yaml::<Claim>(dir, rel, head)))
        .and_then(Result::ok);
    match parsed {
        Some(c) => Some(c.format),
        None => format_line(&plain),
    }
}

/// The most `[` and `{` a tree file may nest (a tree nests none; its writer uses block style):
/// the YAML parser's time grows with the square of the nesting (128 Ki levels: 20 s; a 64 MiB
/// file of them: days), so a deeper file is refused before it is parsed. A tree holds no
/// user's strings, so brackets in quotes need not be told apart.
const MAX_TREE_NESTING: usize = 16;

/// Refuse a tree file nesting flow collections deeper than [`MAX_TREE_NESTING`].
fn shallow(dir: &Beneath, rel: &str, bytes: &[u8]) -> Result<()> {
    let mut depth = 0usize;
    for b in bytes {
        match b {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => continue,
        }
        if depth > MAX_TREE_NESTING {
            return Err(Error::Damaged {
                path: dir.shown(rel),
                detail: format!("nests deeper than {MAX_TREE_NESTING} levels"),
            });
        }
    }
    Ok(())
}

/// The bytes of the tree file at `generation`, and where they go.
pub fn tree_file(crypt: &Crypt, tree: &Tree, generation: u64) -> (&'static str, Vec<u8>) {
    let text = serde_yaml::to_string(tree).expect("a tree serializes");
    (
        tree_rel(crypt),
        seal(crypt, FileKind::Tree, generation, text.as_bytes()),
    )
}

/// The bytes of backup `h`'s header file, and where they go.
pub fn header_file(crypt: &Crypt, h: &BackupHeader) -> (String, Vec<u8>) {
    let text = serde_yaml::to_string(h).expect("a header serializes");
    (
        header_rel(crypt, h.id),
        seal(crypt, FileKind::Header, h.id.0, text.as_bytes()),
    )
}

/// Read backup `id`'s header: sealed in its own directory (on an encrypted medium), known
/// format, naming itself.
pub fn read_header(dir: &Beneath, crypt: &Crypt, id: BackupId) -> Result<BackupHeader> {
    let rel = header_rel(crypt, id);
    let (plain, counter) = read(dir, crypt, &rel, MAX_HEADER_FILE, FileKind::Header)?;
    if crypt.is_sealed() && counter != id.0 {
        return Err(Error::Damaged {
            path: dir.shown(&rel),
            detail: format!("sealed for backup {counter}, not this one (moved)"),
        });
    }
    let h: BackupHeader = parse_yaml(dir, &rel, &plain)?;
    if h.format != HEADER_FORMAT {
        return Err(Error::Version {
            path: dir.shown(&rel),
            found: h.format,
            supported: HEADER_FORMAT..=HEADER_FORMAT,
        });
    }
    if h.id != id {
        return Err(Error::Damaged {
            path: dir.shown(&rel),
            detail: format!("header names backup {} instead", h.id),
        });
    }
    Ok(h)
}
