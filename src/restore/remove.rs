//! Removing a directory tree that is in the way (only with `--overwrite`), through
//! descriptors.
//!
//! Invariants: never follows a symlink (every directory is opened with `O_NOFOLLOW` from its
//! parent's descriptor, everything else is unlinked by name); holds at most [`REMOVE_DEPTH`]
//! directories open and does not recurse: deeper directories are moved up to the top of the
//! tree being removed and removed in a further pass.

use super::dest::open_dir;
use rustix::fs::{AtFlags, Dir, FileType};
use std::io;
use std::os::fd::OwnedFd;

/// How deep [`remove_tree`] descends before moving a subdirectory up to its top.
const REMOVE_DEPTH: usize = 32;

/// Remove directory `name` of `dir` and everything in it, never following a symlink, with
/// at most [`REMOVE_DEPTH`] descriptors: deeper directories are moved up to its top first.
pub fn remove_tree(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let top = open_dir(dir, name)?;
    while empty_pass(&top)? {}
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// One pass of emptying `top`; true if something was moved up and another pass is needed.
fn empty_pass(top: &OwnedFd) -> io::Result<bool> {
    let mut moved = false;
    // `Dir::read_from` reads through a new open file description: a dup would share the
    // position reached by the previous pass.
    let mut stack: Vec<(Dir, OwnedFd, Option<Vec<u8>>)> = vec![(
        Dir::read_from(top)?,
        rustix::io::fcntl_dupfd_cloexec(top, 0)?,
        None,
    )];
    loop {
        let depth = stack.len();
        let Some((entries, fd, _)) = stack.last_mut() else {
            break;
        };
        let Some(entry) = entries.read() else {
            let (_, _, name) = stack.pop().unwrap();
            if let (Some(n), Some((_, parent, _))) = (name, stack.last()) {
                rustix::fs::unlinkat(parent, &n[..], AtFlags::REMOVEDIR)?;
            }
            continue;
        };
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => {
                let st = rustix::fs::statat(&*fd, n, AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_raw_mode(st.st_mode) == FileType::Directory
            }
            _ => false,
        };
        if !is_dir {
            rustix::fs::unlinkat(&*fd, n, AtFlags::empty())?;
        } else if depth < REMOVE_DEPTH {
            let sub = open_dir(fd, n)?;
            let n = n.to_vec();
            stack.push((
                Dir::new(rustix::io::fcntl_dupfd_cloexec(&sub, 0)?)?,
                sub,
                Some(n),
            ));
        } else {
            let up = format!(".trayback-remove.{}", uuid::Uuid::new_v4().simple());
            rustix::fs::renameat(&*fd, n, top, up.as_str())?;
            moved = true;
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::super::dest::DIR_FLAGS;
    use super::*;
    use rustix::fs::Mode;

    #[test]
    fn remove_tree_removes_trees_deeper_than_its_descriptor_bound_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"keep").unwrap();
        let mut p = tmp.path().join("victim");
        for i in 0..(REMOVE_DEPTH * 3 + 5) {
            p.push(format!("d{i}"));
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("f"), b"x").unwrap();
            std::os::unix::fs::symlink(&outside, p.join("l")).unwrap();
        }
        let dir = rustix::fs::open(tmp.path(), DIR_FLAGS, Mode::empty()).unwrap();
        remove_tree(&dir, b"victim").unwrap();
        assert!(!tmp.path().join("victim").exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep");
    }
}
