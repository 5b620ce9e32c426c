//! Paths between the page and the server. A name in a backup is bytes (Linux allows any but
//! `/` and NUL), so a path crosses the API losslessly as its **key**: the bytes, with `%`,
//! space, control characters and every byte outside ASCII written `%XX` (so an ordinary ASCII
//! path is its own key). It is shown to a person as [`shown`]: printable UTF-8 as it is, a
//! backslash as `\\`, control and text-direction characters as `\u{NNNN}`, any byte that is
//! not UTF-8 as `\xNN` (so two names are never shown alike).
//!
//! Invariants: a key's `%` is followed by exactly two ASCII hex digits (one spelling of one
//! path); a key from the page becomes a path only through [`backup_path`], which applies
//! the same checks as the CLI's paths (absolute, at most `PATH_MAX` bytes, no NUL, no `..`:
//! `index::components`).

use super::api::ApiError;
use serde::Serialize;
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The longest path the browser may send (Linux's `PATH_MAX`).
const MAX_PATH: usize = 4096;

/// The key of `p`.
pub fn key(p: &Path) -> String {
    let mut s = String::new();
    for &b in p.as_os_str().as_bytes() {
        if b > b' ' && b < 0x7f && b != b'%' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// `p` for a person: printable UTF-8 as it is, a backslash as `\\`, a control character
/// or a bidirectional formatting character (which would reorder what follows it) as
/// `\u{NNNN}`, and a byte that is not UTF-8 as `\xNN`: two different names are never
/// shown alike.
pub fn shown(p: &Path) -> String {
    let mut s = String::new();
    for chunk in p.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                s.push_str("\\\\");
            } else if c.is_control() || is_bidi_format(c) {
                s.push_str(&format!("\\u{{{:04X}}}", c as u32));
            } else {
                s.push(c);
            }
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02X}"));
        }
    }
    s
}

/// Whether `c` changes the direction of the text around it (embeddings, overrides,
/// isolates, marks).
fn is_bidi_format(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The bytes a key stands for (characters other than `%XX` stand for their UTF-8).
fn bytes_of_key(k: &str) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(k.len());
    let b = k.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "{:?}: a path's % is followed by two hex digits",
                        k.chars().take(80).collect::<String>()
                    ))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// A path in a backup as the page sends it (its key): absolute, at most `PATH_MAX` bytes, no
/// NUL; then checked by the library function that checks the CLI's (`index::components`).
pub fn backup_path(k: &str) -> Result<PathBuf, ApiError> {
    let bytes = bytes_of_key(k)?;
    if bytes.first() != Some(&b'/') || bytes.len() > MAX_PATH || bytes.contains(&0) {
        return Err(ApiError::bad(format!(
            "{:?}: a path in a backup is absolute, at most {MAX_PATH} bytes, without NUL",
            shown(Path::new(OsStr::from_bytes(&bytes[..bytes.len().min(80)])))
        )));
    }
    let p = PathBuf::from(std::ffi::OsString::from_vec(bytes));
    crate::index::components(&p)?;
    Ok(p)
}

/// A row of the library's (an `ls` row, a search hit) with its path as the page needs it:
/// `path` shown, `key` to send back.
#[derive(Serialize)]
pub struct Keyed<T> {
    #[serde(flatten)]
    pub row: T,
    pub key: String,
}

impl<T> Keyed<T> {
    /// `row`, whose exact path is `raw`, with `set_shown` given how to show it.
    pub fn new(mut row: T, raw: &Path, set_shown: impl FnOnce(&mut T, String)) -> Keyed<T> {
        set_shown(&mut row, shown(raw));
        Keyed { row, key: key(raw) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lossless_and_checked_like_the_clis_paths() {
        for raw in [
            &b"/home/a/x"[..],
            b"/caf\xe9 50%.txt",
            "/Übersicht".as_bytes(),
            b"/",
        ] {
            let p = Path::new(OsStr::from_bytes(raw));
            assert_eq!(backup_path(&key(p)).unwrap(), p, "{raw:?}");
        }
        assert_eq!(key(Path::new("/home/a/x")), "/home/a/x");
        assert_eq!(
            shown(Path::new(OsStr::from_bytes(b"/caf\xe9.txt"))),
            "/caf\\xE9.txt"
        );
        assert_eq!(shown(Path::new("/caf\\xE9.txt")), "/caf\\\\xE9.txt");
        assert_eq!(
            shown(Path::new("/a\nb\u{202E}txt.exe")),
            "/a\\u{000A}b\\u{202E}txt.exe"
        );
        for bad in [
            "home/a",
            "/a/../etc",
            "/a/%00b",
            "",
            "/a%2",
            "/a%zz",
            "/a/%2E%2E/b",
            "/a%+9",
            "/a%-1",
            "/a%é",
        ] {
            assert!(backup_path(bad).is_err(), "{bad:?}");
        }
        assert!(backup_path(&format!("/{}", "a".repeat(5000))).is_err());
    }
}
