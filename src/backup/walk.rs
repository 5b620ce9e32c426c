//! The walk: every directory under a root, in parallel, with depth as data.
//!
//! Each directory is a [`Node`] on a work list (tasks spawned into one rayon scope; nothing
//! recurses). A directory's task opens it relative to its parent's descriptor
//! (`O_NOFOLLOW|O_DIRECTORY`) and checks it is the inode that was listed, then the
//! [`Visitor`] names what to look at in it, the walk `lstat`s those names (in chunks, as tasks
//! of their own, for a big directory), and the visitor's `plan` says what each becomes: a result
//! now, a work item (a task of its own: a file read, say), or a directory to walk (a node of its
//! own). A directory is finished, post-order, when its last child is: each node counts its
//! children pending and points to its parent, and the task that finishes a last child carries
//! the results up, in a loop, as far as they go. A directory's names are looked at and planned
//! [`BATCH`] at a time: the next batch starts when the last child of the one before is done,
//! whose results the visitor takes (`absorb`) before it.
//!
//! Invariants:
//! - no call frame per level: a tree of any depth is walked on any stack. No task waits for
//!   another (no `join` inside a task), so rayon never stacks one task on another either;
//! - descriptors are bounded, not one per level: a node keeps its descriptor only while
//!   tasks of its children may still need it, and at most [`MAX_HELD`] nodes (fewer under a low limit) keep one. A task
//!   whose directory kept none reopens it from the nearest ancestor that did, a few components
//!   per `openat`, checking each directory reached against the `(dev, ino)` it was listed with;
//! - every directory below the root is reached relative to its parent, never by a full path,
//!   so no path length limits the depth;
//! - the visitor's results for a directory reach `finish` in the order `plan` gave them;
//! - the first error ends the walk: tasks still queued return at once, and `walk` returns it;
//! - the queue is bounded: at most [`MAX_OPEN`] directories are open (listed, and not yet
//!   finished) at once, plus one per level of the deepest path when nothing else can run. A
//!   directory planned beyond that waits, as a node not yet listed, on a stack taken from the
//!   top (depth first, so open directories finish and make room), and is listed when a
//!   directory finishes. What waits is the parent's planned children, no more: the walk's
//!   memory follows the open directories' sizes, not the tree's;
//! - of a directory, only its names (sorted) and one batch of what the visitor makes of them
//!   are held by the walk at once: a directory of a million names costs the walk its names,
//!   not a million planned children and tasks.

use crate::error::{Error, Result};
use crate::scan;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The most nodes that keep their descriptor for their children at once: a quarter of the
/// process's limit on descriptors (256 of the default 1024), at least 8. Running tasks hold a
/// few more, two each at most (a reopened directory and a file being read).
const MAX_HELD: usize = 256;

fn max_held() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    limit.map_or(MAX_HELD, |n| (n / 4).clamp(8, MAX_HELD as u64) as usize)
}

/// Names `lstat`ed by one task: a directory with more is looked at by several tasks at once.
const CHUNK: usize = 64;

/// The most directories listed and not yet finished at once (see the module's invariants):
/// enough to keep the walk threads busy on a tree of small directories.
pub(super) const MAX_OPEN: usize = 32;

/// Names of one directory looked at, planned and worked on at a time.
pub(super) const BATCH: usize = 1024;

/// A reopen names at most this many bytes per `openat` (far below `PATH_MAX`).
const REOPEN_BYTES: usize = 2048;

/// What is done per directory and per entry, while [`walk`] does the walking.
pub(super) trait Visitor: Sync {
    /// What the visitor keeps for a directory until it is finished.
    type Dir: Send + Sync;
    /// A name to look at in a directory.
    type Name: Send;
    /// A name looked at.
    type Seen: Send;
    /// A unit of work on one name, done by a task of its own.
    type Item: Send;
    /// One child's result; a directory's result too.
    type Out: Send;

    /// Directory `at` was opened (`Ok`: for reading if it is listed, else `O_PATH`) or could
    /// not be: the names to look at in it.
    fn list(
        &self,
        dir: &mut Self::Dir,
        at: &At<'_, Self>,
        fd: io::Result<&OwnedFd>,
    ) -> Result<Vec<Self::Name>>;

    /// Look at one name in directory `fd` (`lstat` it); `None` leaves it out. Called in
    /// parallel for the names of one directory.
    fn look(
        &self,
        dir: &Self::Dir,
        at: &At<'_, Self>,
        fd: &OwnedFd,
        name: Self::Name,
    ) -> Option<Self::Seen>;

    /// What becomes of each name looked at, in order.
    fn plan(
        &self,
        dir: &mut Self::Dir,
        at: &At<'_, Self>,
        seen: Vec<Self::Seen>,
    ) -> Result<Vec<Child<Self>>>;

    /// Do one work item in directory `at`; `None` leaves the name out.
    fn work(&self, item: Self::Item, at: &At<'_, Self>) -> Result<Option<Self::Out>>;

    /// Every child of a batch of directory `at`'s names is done, and more names follow:
    /// their results, in `plan`'s order.
    fn absorb(&self, dir: &mut Self::Dir, at: &At<'_, Self>, outs: Vec<Self::Out>) -> Result<()>;

    /// The names of directory `at` not yet looked at cannot be (its descriptor could not be
    /// opened again): they are left out.
    fn lost(&self, dir: &mut Self::Dir, at: &At<'_, Self>, e: io::Error);

    /// Every child of directory `at` is done: its result, from those of its last batch in
    /// `plan`'s order (the batches before went to `absorb`).
    fn finish(&self, dir: Self::Dir, at: &At<'_, Self>, outs: Vec<Self::Out>) -> Result<Self::Out>;
}

/// What one name of a directory becomes.
pub(super) enum Child<V: Visitor + ?Sized> {
    /// Its result, known now.
    Done(V::Out),
    /// Work to do on it.
    Work(V::Item),
    /// A directory to walk.
    Dir(Sub<V::Dir>),
}

/// A subdirectory to walk.
pub(super) struct Sub<D> {
    pub name: CString,
    /// `(dev, ino)` when it was listed: what it must still be when it is opened.
    pub id: (u64, u64),
    /// Open it for reading and list it, or only as a base for its children (`O_PATH`).
    pub list: bool,
    pub dir: D,
}

/// One directory of the walk.
struct Node<V: Visitor + ?Sized> {
    /// The parent and this directory's place among its results; `None` for the root.
    up: Option<(Arc<Node<V>>, usize)>,
    /// The name in the parent; the root's path for the root.
    name: CString,
    /// See [`Sub::id`]; `None` for the root.
    id: Option<(u64, u64)>,
    list: bool,
    dir: RwLock<Option<V::Dir>>,
    /// Kept for the children's tasks while `users` > 0 (see `MAX_HELD`).
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Children's tasks that may still need `fd`.
    users: AtomicUsize,
    /// Children of the batch not yet done, plus one while the batch is being planned.
    pending: AtomicUsize,
    outs: Mutex<Vec<Option<V::Out>>>,
    /// Names listed and not yet in a batch.
    rest: Mutex<std::vec::IntoIter<V::Name>>,
}

/// A directory of the walk, as the visitor sees it.
pub(super) struct At<'a, V: Visitor + ?Sized> {
    walk: &'a Walk<'a, V>,
    node: &'a Arc<Node<V>>,
}

impl<V: Visitor + ?Sized> At<'_, V> {
    /// The directory's path (built from the names up to the root: any length).
    pub fn path(&self) -> PathBuf {
        let mut names = Vec::new();
        let mut node = &**self.node;
        while let Some((up, _)) = &node.up {
            names.push(&node.name);
            node = up;
        }
        let root = OsStr::from_bytes(node.name.as_bytes());
        let len = root.len() + names.iter().map(|n| n.as_bytes().len() + 1).sum::<usize>();
        let mut path = PathBuf::with_capacity(len);
        path.push(root);
        for n in names.iter().rev() {
            path.push(OsStr::from_bytes(n.as_bytes()));
        }
        path
    }

    /// The directory's descriptor, for `*at` calls on its names: the one it kept, or one
    /// reopened (see the module's invariants).
    pub fn fd(&self) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.node.fd.lock().unwrap().clone() {
            return Ok(fd);
        }
        let fd = self.walk.reopen(self.node)?;
        self.walk.hold(self.node, &fd);
        Ok(fd)
    }
}

struct Walk<'a, V: Visitor + ?Sized> {
    visitor: &'a V,
    /// Nodes keeping a descriptor, and how many may.
    held: AtomicUsize,
    max_held: usize,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    result: Mutex<Option<V::Out>>,
    /// Directories listed and not yet finished, and how many may be (see `MAX_OPEN`).
    open: AtomicUsize,
    max_open: usize,
    /// Tasks spawned and not yet ended.
    running: AtomicUsize,
    /// Directories waiting for room to be listed; the top is taken first.
    waiting: Mutex<Vec<Arc<Node<V>>>>,
}

/// Walk the tree under `root` (opened by path, without following a symlink; `list` as in
/// [`Sub::list`]) with `visitor`, in parallel on the current rayon pool. Returns the root's
/// result, or the first error.
pub(super) fn walk<V: Visitor + ?Sized>(
    visitor: &V,
    root: &CStr,
    list: bool,
    dir: V::Dir,
) -> Result<V::Out> {
    walk_with(visitor, root, list, dir, max_held(), MAX_OPEN)
}

/// [`walk`], with at most `max_held` nodes keeping a descriptor and `max_open` (at least 1)
/// directories open.
fn walk_with<V: Visitor + ?Sized>(
    visitor: &V,
    root: &CStr,
    list: bool,
    dir: V::Dir,
    max_held: usize,
    max_open: usize,
) -> Result<V::Out> {
    let w = Walk::new(visitor, max_held, max_open);
    let root = Arc::new(Node::new(None, root.to_owned(), None, list, dir));
    w.open.store(1, Ordering::Relaxed);
    rayon::scope(|s| w.spawn(s, |s| w.scan(s, root)));
    if let Some(e) = w.error.into_inner().unwrap() {
        return Err(e);
    }
    Ok(w.result
        .into_inner()
        .unwrap()
        .expect("the root is finished when no task failed"))
}

impl<V: Visitor + ?Sized> Node<V> {
    fn new(
        up: Option<(Arc<Node<V>>, usize)>,
        name: CString,
        id: Option<(u64, u64)>,
        list: bool,
        dir: V::Dir,
    ) -> Node<V> {
        Node {
            up,
            name,
            id,
            list,
            dir: RwLock::new(Some(dir)),
            fd: Mutex::new(None),
            users: AtomicUsize::new(0),
            pending: AtomicUsize::new(1),
            outs: Mutex::new(Vec::new()),
            rest: Mutex::new(Vec::new().into_iter()),
        }
    }
}

/// A task's units of work, with what it needs.
enum Task<V: Visitor + ?Sized> {
    Work(V::Item),
    Dir(Sub<V::Dir>),
}

impl<'a, V: Visitor + ?Sized> Walk<'a, V> {
    fn new(visitor: &'a V, max_held: usize, max_open: usize) -> Walk<'a, V> {
        Walk {
            visitor,
            held: AtomicUsize::new(0),
            max_held,
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            result: Mutex::new(None),
            open: AtomicUsize::new(0),
            max_open: max_open.max(1),
            running: AtomicUsize::new(0),
            waiting: Mutex::new(Vec::new()),
        }
    }

    /// Run `task` as a task of the walk, counted while it runs.
    fn spawn<'s>(&'s self, s: &rayon::Scope<'s>, task: impl FnOnce(&rayon::Scope<'s>) + Send + 's)
    where
        V: 's,
    {
        self.running.fetch_add(1, Ordering::AcqRel);
        s.spawn(move |s| {
            task(s);
            // The last task to end lists a waiting directory even without room: nothing else
            // would, and the directories open wait for it (or for one below it).
            let last = self.running.fetch_sub(1, Ordering::AcqRel) == 1;
            self.admit(s, last);
        });
    }

    /// List waiting directories while there is room (`force`: one, room or not).
    fn admit<'s>(&'s self, s: &rayon::Scope<'s>, mut force: bool)
    where
        V: 's,
    {
        while !self.failed() {
            let max = self.max_open;
            if self
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (force || n < max).then_some(n + 1)
                })
                .is_err()
            {
                return;
            }
            let Some(node) = self.waiting.lock().unwrap().pop() else {
                self.open.fetch_sub(1, Ordering::AcqRel);
                return;
            };
            force = false;
            self.spawn(s, move |s| self.scan(s, node));
        }
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    fn fail(&self, e: Error) {
        let mut first = self.error.lock().unwrap();
        if first.is_none() {
            *first = Some(e);
        }
        self.failed.store(true, Ordering::Relaxed);
    }

    fn at<'b>(&'b self, node: &'b Arc<Node<V>>) -> At<'b, V>
    where
        'a: 'b,
    {
        At { walk: self, node }
    }

    /// The task of one directory: open it, list it, look at its names.
    fn scan<'s>(&'s self, s: &rayon::Scope<'s>, node: Arc<Node<V>>) {
        if self.failed() {
            return;
        }
        let opened = self.open(&node);
        if let Some((up, _)) = &node.up {
            self.release(up);
        }
        let at = self.at(&node);
        let (fd, names) = {
            let mut dir = node.dir.write().unwrap();
            let dir = dir.as_mut().expect("a directory is scanned once");
            match opened {
                Ok(fd) => {
                    let names = self.visitor.list(dir, &at, Ok(&fd));
                    (Some(Arc::new(fd)), names)
                }
                Err(e) => (None, self.visitor.list(dir, &at, Err(e))),
            }
        };
        let names = match names {
            Ok(names) => names,
            Err(e) => return self.fail(e),
        };
        let Some(fd) = fd else {
            return self.plan(s, node, None, Vec::new());
        };
        *node.rest.lock().unwrap() = names.into_iter();
        self.batch(s, node, fd);
    }

    /// Look at the next batch of a directory's names and plan them.
    fn batch<'s>(&'s self, s: &rayon::Scope<'s>, node: Arc<Node<V>>, fd: Arc<OwnedFd>) {
        let names: Vec<V::Name> = node.rest.lock().unwrap().by_ref().take(BATCH).collect();
        if names.len() <= CHUNK {
            let seen = self.look(&node, &fd, names);
            return self.plan(s, node, Some(fd), seen);
        }
        // Many names: look at them in chunks, in parallel; the last chunk done plans.
        struct Looking<S> {
            parts: Vec<Mutex<Vec<S>>>,
            left: AtomicUsize,
        }
        let mut names = names.into_iter();
        let chunks: Vec<Vec<V::Name>> = std::iter::from_fn(|| {
            let c: Vec<_> = names.by_ref().take(CHUNK).collect();
            (!c.is_empty()).then_some(c)
        })
        .collect();
        let looking = Arc::new(Looking {
            parts: chunks.iter().map(|_| Mutex::new(Vec::new())).collect(),
            left: AtomicUsize::new(chunks.len()),
        });
        for (i, chunk) in chunks.into_iter().enumerate() {
            let (node, fd, looking) = (node.clone(), fd.clone(), looking.clone());
            self.spawn(s, move |s| {
                if self.failed() {
                    return;
                }
                *looking.parts[i].lock().unwrap() = self.look(&node, &fd, chunk);
                if looking.left.fetch_sub(1, Ordering::AcqRel) == 1 {
                    let seen = looking
                        .parts
                        .iter()
                        .flat_map(|p| std::mem::take(&mut *p.lock().unwrap()))
                        .collect();
                    self.plan(s, node, Some(fd), seen);
                }
            });
        }
    }

    fn look(&self, node: &Arc<Node<V>>, fd: &OwnedFd, names: Vec<V::Name>) -> Vec<V::Seen> {
        let dir = node.dir.read().unwrap();
        let dir = dir
            .as_ref()
            .expect("a directory is looked at before it is finished");
        let at = self.at(node);
        names
            .into_iter()
            .filter_map(|n| self.visitor.look(dir, &at, fd, n))
            .collect()
    }

    /// Open a node's directory: the root by path, any other relative to its parent, checked
    /// to be the inode that was listed under its name.
    fn open(&self, node: &Arc<Node<V>>) -> io::Result<OwnedFd> {
        let Some((up, _)) = &node.up else {
            return scan::open_dir(
                Path::new(OsStr::from_bytes(node.name.as_bytes())),
                node.list,
            );
        };
        let parent = self.at(up).fd()?;
        let fd = scan::open_dir_at(&parent, &node.name, node.list)?;
        if Some(scan::identity(&fd)?) != node.id {
            return Err(io::Error::other(
                "replaced by another directory since it was listed",
            ));
        }
        Ok(fd)
    }

    /// The visitor's plan for a directory, carried out: results now, tasks for the rest.
    fn plan<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        node: Arc<Node<V>>,
        fd: Option<Arc<OwnedFd>>,
        seen: Vec<V::Seen>,
    ) {
        let at = self.at(&node);
        let planned = {
            let mut dir = node.dir.write().unwrap();
            let dir = dir.as_mut().expect("a directory is planned once");
            self.visitor.plan(dir, &at, seen)
        };
        let children = match planned {
            Ok(c) => c,
            Err(e) => return self.fail(e),
        };
        let mut outs = Vec::with_capacity(children.len());
        let mut tasks: Vec<(usize, Task<V>)> = Vec::new();
        for (i, child) in children.into_iter().enumerate() {
            match child {
                Child::Done(out) => outs.push(Some(out)),
                Child::Work(item) => {
                    outs.push(None);
                    tasks.push((i, Task::Work(item)));
                }
                Child::Dir(sub) => {
                    outs.push(None);
                    tasks.push((i, Task::Dir(sub)));
                }
            }
        }
        *node.outs.lock().unwrap() = outs;
        // `pending` already counts the one for planning.
        node.pending.fetch_add(tasks.len(), Ordering::AcqRel);
        node.users.store(tasks.len(), Ordering::Release);
        if let Some(fd) = fd {
            self.hold(&node, &fd);
        }
        let mut dirs = Vec::new();
        for (i, task) in tasks {
            match task {
                Task::Work(item) => {
                    let node = node.clone();
                    self.spawn(s, move |s| self.work(s, node, i, item));
                }
                Task::Dir(sub) => dirs.push(Arc::new(Node::new(
                    Some((node.clone(), i)),
                    sub.name,
                    Some(sub.id),
                    sub.list,
                    sub.dir,
                ))),
            }
        }
        // The first in name order on top: listed first.
        dirs.reverse();
        self.waiting.lock().unwrap().append(&mut dirs);
        self.complete(s, node);
        self.admit(s, false);
    }

    /// The task of a directory's next batch: its descriptor again (kept or reopened), then
    /// the batch.
    fn next_batch<'s>(&'s self, s: &rayon::Scope<'s>, node: Arc<Node<V>>) {
        if self.failed() {
            return;
        }
        match self.at(&node).fd() {
            Ok(fd) => self.batch(s, node, fd),
            Err(e) => {
                *node.rest.lock().unwrap() = Vec::new().into_iter();
                {
                    let mut dir = node.dir.write().unwrap();
                    let dir = dir.as_mut().expect("a directory is finished once");
                    self.visitor.lost(dir, &self.at(&node), e);
                }
                self.plan(s, node, None, Vec::new());
            }
        }
    }

    /// The task of one work item.
    fn work<'s>(&'s self, s: &rayon::Scope<'s>, node: Arc<Node<V>>, i: usize, item: V::Item) {
        if self.failed() {
            return;
        }
        let done = self.visitor.work(item, &self.at(&node));
        self.release(&node);
        match done {
            Ok(out) => {
                node.outs.lock().unwrap()[i] = out;
                self.complete(s, node);
            }
            Err(e) => self.fail(e),
        }
    }

    /// One child of `node` (or its planning) is done: finish every directory whose last
    /// child that was, from `node` up; or, if names of it are left, start its next batch.
    fn complete<'s>(&'s self, s: &rayon::Scope<'s>, mut node: Arc<Node<V>>) {
        while node.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            if !node.rest.lock().unwrap().as_slice().is_empty() {
                let outs = std::mem::take(&mut *node.outs.lock().unwrap());
                let absorbed = {
                    let mut dir = node.dir.write().unwrap();
                    let dir = dir.as_mut().expect("a directory is finished once");
                    let outs = outs.into_iter().flatten().collect();
                    self.visitor.absorb(dir, &self.at(&node), outs)
                };
                if let Err(e) = absorbed {
                    return self.fail(e);
                }
                // One for planning the next batch.
                node.pending.store(1, Ordering::Release);
                return self.spawn(s, move |s| self.next_batch(s, node));
            }
            self.open.fetch_sub(1, Ordering::AcqRel);
            if node.fd.lock().unwrap().take().is_some() {
                self.held.fetch_sub(1, Ordering::Relaxed);
            }
            let outs = std::mem::take(&mut *node.outs.lock().unwrap());
            let dir = node.dir.write().unwrap().take();
            let dir = dir.expect("a directory is finished once");
            let out = match self.visitor.finish(
                dir,
                &self.at(&node),
                outs.into_iter().flatten().collect(),
            ) {
                Ok(out) => out,
                Err(e) => return self.fail(e),
            };
            let Some((up, i)) = &node.up else {
                *self.result.lock().unwrap() = Some(out);
                return;
            };
            up.outs.lock().unwrap()[*i] = Some(out);
            node = up.clone();
        }
    }

    /// Keep `fd` in `node` for its children's tasks and its next batches, unless it keeps
    /// one or too many nodes do, or nothing needs it any more. (A directory renamed while
    /// its names are worked on is still read whole through a kept descriptor; one reopened
    /// by name then fails, a problem that names it.)
    fn hold(&self, node: &Node<V>, fd: &Arc<OwnedFd>) {
        if !self.needs_fd(node) {
            return;
        }
        let mut kept = node.fd.lock().unwrap();
        if kept.is_some() {
            return;
        }
        if self.held.fetch_add(1, Ordering::Relaxed) < self.max_held {
            *kept = Some(fd.clone());
        } else {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A child's task no longer needs `node`'s descriptor.
    fn release(&self, node: &Node<V>) {
        if node.users.fetch_sub(1, Ordering::AcqRel) == 1
            && !self.needs_fd(node)
            && node.fd.lock().unwrap().take().is_some()
        {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether a child's task or a batch still to come needs `node`'s descriptor.
    fn needs_fd(&self, node: &Node<V>) -> bool {
        node.users.load(Ordering::Acquire) > 0 || !node.rest.lock().unwrap().as_slice().is_empty()
    }

    /// Open `node`'s directory again (`O_PATH`), from the nearest ancestor that kept its
    /// descriptor (or the root's path), a few names per `openat`. Symlinks are not followed
    /// in the last name of each step, and each step's directory must be the inode that was
    /// listed (so one followed before it cannot lead elsewhere).
    fn reopen(&self, node: &Arc<Node<V>>) -> io::Result<Arc<OwnedFd>> {
        let mut below = Vec::new();
        let mut at: &Node<V> = node;
        let mut base = loop {
            if let Some(fd) = at.fd.lock().unwrap().clone() {
                break fd;
            }
            match &at.up {
                Some((up, _)) => {
                    below.push(at);
                    at = up;
                }
                None => {
                    let root = Path::new(OsStr::from_bytes(at.name.as_bytes()));
                    break Arc::new(scan::open_dir(root, false)?);
                }
            }
        };
        while !below.is_empty() {
            let mut rel = Vec::new();
            let mut last = None;
            while let Some(n) = below.last() {
                let name = n.name.as_bytes();
                if !rel.is_empty() && rel.len() + 1 + name.len() > REOPEN_BYTES {
                    break;
                }
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(name);
                last = below.pop();
            }
            let last = last.expect("one name per step at least");
            let rel = CString::new(rel).expect("names hold no NUL");
            let fd = scan::open_dir_at(&base, &rel, false)?;
            if Some(scan::identity(&fd)?) != last.id {
                return Err(io::Error::other(
                    "replaced by another directory since it was listed",
                ));
            }
            base = Arc::new(fd);
        }
        Ok(base)
    }
}

#[cfg(test)]
mod tests;
