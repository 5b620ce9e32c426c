use super::*;
use crate::listing::EntryKind;
use rustix::fs::{mkdirat, Mode, OFlags};

/// Counts what it walks: a directory's result is 1 + its children's, a file's 1. Keeps
/// the most directories it saw listed and not yet finished at once.
#[derive(Default)]
struct Count {
    open: AtomicUsize,
    most: AtomicUsize,
}

impl Visitor for Count {
    /// What the batches before the last added up to.
    type Dir = u64;
    type Name = CString;
    type Seen = (CString, Option<(u64, u64)>);
    type Item = CString;
    type Out = u64;

    fn list(
        &self,
        _: &mut u64,
        _: &At<'_, Self>,
        fd: io::Result<&OwnedFd>,
    ) -> Result<Vec<CString>> {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        self.most.fetch_max(open, Ordering::AcqRel);
        Ok(scan::read_dir_sorted(fd.expect("every directory opens")).unwrap())
    }

    fn look(&self, _: &u64, _: &At<'_, Self>, fd: &OwnedFd, name: CString) -> Option<Self::Seen> {
        let a = scan::Attrs::from_stat(&scan::lstat_at(fd, &name).unwrap()).unwrap();
        Some((name, (a.kind == EntryKind::Dir).then_some((a.dev, a.ino))))
    }

    fn plan(
        &self,
        _: &mut u64,
        _: &At<'_, Self>,
        seen: Vec<Self::Seen>,
    ) -> Result<Vec<Child<Self>>> {
        Ok(seen
            .into_iter()
            .map(|(name, dir)| match dir {
                Some(id) => Child::Dir(Sub {
                    name,
                    id,
                    list: true,
                    dir: 0,
                }),
                None => Child::Work(name),
            })
            .collect())
    }

    /// Each file is opened relative to its directory, as a backup reads it.
    fn work(&self, name: CString, at: &At<'_, Self>) -> Result<Option<u64>> {
        scan::open_file_at(&at.fd().unwrap(), &name).unwrap();
        Ok(Some(1))
    }

    fn absorb(&self, dir: &mut u64, _: &At<'_, Self>, outs: Vec<u64>) -> Result<()> {
        *dir += outs.iter().sum::<u64>();
        Ok(())
    }

    fn lost(&self, _: &mut u64, at: &At<'_, Self>, e: io::Error) {
        panic!("{}: {e}", at.path().display());
    }

    fn finish(&self, dir: u64, _: &At<'_, Self>, outs: Vec<u64>) -> Result<u64> {
        self.open.fetch_sub(1, Ordering::AcqRel);
        Ok(1 + dir + outs.iter().sum::<u64>())
    }
}

fn open(dir: &OwnedFd, name: &str) -> OwnedFd {
    rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap()
}

/// A comb `depth` levels deep: each level holds the next `d`, a file `f` and a
/// directory `e` with a file; 1 + 4 × depth names in all, the top included.
fn comb(top: &Path, depth: usize) {
    let mut dir = rustix::fs::open(top, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    for _ in 0..depth {
        for d in ["d", "e"] {
            mkdirat(&dir, d, Mode::from_raw_mode(0o755)).unwrap();
        }
        let file = OFlags::WRONLY | OFlags::CREATE;
        rustix::fs::openat(&dir, "f", file, Mode::from_raw_mode(0o644)).unwrap();
        rustix::fs::openat(open(&dir, "e"), "x", file, Mode::from_raw_mode(0o644)).unwrap();
        dir = open(&dir, "d");
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

#[test]
fn every_directory_is_reached_whatever_the_descriptor_budget() {
    let tmp = tempfile::tempdir().unwrap();
    comb(tmp.path(), 300);
    for max_held in [0, 1, 8, MAX_HELD] {
        let n = walk_with(&Count::default(), &cpath(tmp.path()), true, 0, max_held, 1).unwrap();
        assert_eq!(n, 1 + 4 * 300, "max_held {max_held}");
    }
}

/// A wide tree (the root, 300 directories of 8 directories of 2 files) with room for a
/// few open directories: they never exceed the room plus the depth, and every name is
/// reached; with room for one only (each level waits for the one below), too.
#[test]
fn open_directories_stay_within_the_bound_on_a_wide_tree() {
    let tmp = tempfile::tempdir().unwrap();
    for a in 0..300 {
        for b in 0..8 {
            let d = tmp.path().join(format!("a{a:03}/b{b}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("x"), "").unwrap();
            std::fs::write(d.join("y"), "").unwrap();
        }
    }
    let names = 1 + 300 * (1 + 8 * 3);
    for max_open in [1, 4, MAX_OPEN] {
        let count = Count::default();
        let n = walk_with(&count, &cpath(tmp.path()), true, 0, MAX_HELD, max_open).unwrap();
        assert_eq!(n, names, "max_open {max_open}");
        let most = count.most.load(Ordering::Acquire);
        assert!(most <= max_open + 3, "{most} open with room for {max_open}");
    }
}

/// A directory of more than two batches of names, directories among them (one deep),
/// with descriptors kept or reopened for each batch: every name is reached once.
#[test]
fn a_directory_of_many_batches_is_walked_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 2 * BATCH + 300;
    for i in 0..n {
        let p = tmp.path().join(format!("n{i:05}"));
        if i % 97 == 0 {
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("inner"), "").unwrap();
        } else {
            std::fs::write(p, "").unwrap();
        }
    }
    let dirs = (0..n).step_by(97).count() as u64;
    for max_held in [0, MAX_HELD] {
        let count = Count::default();
        let got = walk_with(&count, &cpath(tmp.path()), true, 0, max_held, 2).unwrap();
        assert_eq!(got, 1 + n as u64 + dirs, "max_held {max_held}");
    }
}

#[test]
fn a_reopen_refuses_a_directory_replaced_on_the_way() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
    std::fs::create_dir_all(tmp.path().join("other/b")).unwrap();
    let id =
        |p: &str| scan::identity(&scan::open_dir(&tmp.path().join(p), false).unwrap()).unwrap();
    let count = Count::default();
    let w = Walk::new(&count, 0, MAX_OPEN);
    let root = Arc::new(Node::new(None, cpath(tmp.path()), None, true, 0));
    let a = Arc::new(Node::new(
        Some((root, 0)),
        c"a".into(),
        Some(id("a")),
        true,
        0,
    ));
    let b = Arc::new(Node::new(
        Some((a, 0)),
        c"b".into(),
        Some(id("a/b")),
        true,
        0,
    ));
    assert_eq!(scan::identity(&w.at(&b).fd().unwrap()).unwrap(), id("a/b"));
    // `a` replaced by another directory that has a `b` too, or by a symlink to it.
    std::fs::rename(tmp.path().join("a"), tmp.path().join("a-old")).unwrap();
    std::fs::rename(tmp.path().join("other"), tmp.path().join("a")).unwrap();
    let err = w.at(&b).fd().unwrap_err();
    assert!(err.to_string().contains("replaced"), "{err}");
    std::fs::rename(tmp.path().join("a"), tmp.path().join("other")).unwrap();
    std::os::unix::fs::symlink("other", tmp.path().join("a")).unwrap();
    assert!(w.at(&b).fd().is_err());
}
