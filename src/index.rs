//! Reading a backup's index: the one walk over listings, and path lookup.
//!
//! Every name read from a listing is checked to be a single path component before anyone
//! joins it to a path, so callers (restore above all) can trust the paths they are given.

use crate::error::{Error, Result};
use crate::ids::BlockId;
use crate::listing::{bad_name, Entry, EntryKind, Listing};
use crate::medium::Medium;
use std::path::{Component, Path, PathBuf};

/// What a visitor wants after seeing a directory.
#[derive(PartialEq, Eq)]
pub enum Step {
    Descend,
    Skip,
}

/// Check an entry read from a listing before it is used; `rel` is its path in the backup.
pub fn check_entry(rel: &Path, e: &Entry) -> Result<()> {
    let hostile = |reason: &str| Error::Hostile {
        path: rel.to_string_lossy().into_owned(),
        reason: reason.to_string(),
    };
    if let Some(reason) = bad_name(&e.name.0) {
        return Err(Error::Hostile {
            path: format!(
                "{}/{}",
                rel.parent().unwrap_or(Path::new("")).display(),
                e.name.lossy()
            ),
            reason: reason.to_string(),
        });
    }
    match e.kind {
        EntryKind::Dir if e.subtree.is_none() => Err(hostile("is a directory without a listing")),
        EntryKind::Symlink if e.target.is_none() => Err(hostile("is a symlink without a target")),
        EntryKind::Char | EntryKind::Block if e.rdev.is_none() => {
            Err(hostile("is a device without a device number"))
        }
        k if k != EntryKind::File && !e.blocks.is_empty() => {
            Err(hostile("is not a file but has content"))
        }
        EntryKind::File
            if e.blocks.len() as u64 != e.size.div_ceil(crate::store::BLOCK_SIZE as u64) =>
        {
            Err(hostile("has a block list that does not match its size"))
        }
        _ => Ok(()),
    }
}

/// Walk the tree under listing `id` in pre-order (sorted by name); `prefix` is its path.
pub fn walk(
    m: &Medium,
    id: &BlockId,
    prefix: &Path,
    f: &mut dyn FnMut(&Path, &Entry) -> Result<Step>,
) -> Result<()> {
    let listing = m.listing(id)?;
    for e in &listing.entries {
        let rel = prefix.join(e.name.as_os());
        check_entry(&rel, e)?;
        if f(&rel, e)? == Step::Descend {
            if let (EntryKind::Dir, Some(sub)) = (e.kind, e.subtree) {
                walk(m, &sub, &rel, f)?;
            }
        }
    }
    Ok(())
}

/// Turn a user's path ("/home/a/x" or "home/a/x") into components of a backup path.
pub fn components(path: &Path) -> Result<Vec<&std::ffi::OsStr>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::Refused(format!(
                    "{}: paths in a backup cannot contain \"..\"",
                    path.display()
                )))
            }
        }
    }
    Ok(out)
}

/// Find `path` in the tree rooted at `root`: the entries of its ancestors and its own.
/// `Ok(None)` when the path is not in the backup; the empty path is the root (no entries).
pub fn lookup(m: &Medium, root: &BlockId, path: &Path) -> Result<Option<Vec<Entry>>> {
    let mut chain = Vec::new();
    let mut listing: Listing = m.listing(root)?;
    let comps = components(path)?;
    let mut rel = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        let Some(e) = listing
            .get(std::os::unix::ffi::OsStrExt::as_bytes(*c))
            .cloned()
        else {
            return Ok(None);
        };
        rel.push(c);
        check_entry(&rel, &e)?;
        let last = i + 1 == comps.len();
        if !last {
            match (e.kind, e.subtree) {
                (EntryKind::Dir, Some(sub)) => listing = m.listing(&sub)?,
                _ => return Ok(None),
            }
        }
        chain.push(e);
    }
    Ok(Some(chain))
}
