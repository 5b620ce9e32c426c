//! The connection slots: at most [`super::MAX_CONNECTIONS`] connections are served at once,
//! and one without a logged-in request cannot keep a logged-in user out.
//!
//! Every connection is accepted. When all slots are held, the new one takes the slot of the
//! oldest connection that has not had a logged-in request, first among those that have sent
//! nothing, then among those that have sent something (which is closed at once); only when
//! every slot is held by a connection that has had a logged-in request does the new one wait
//! (and the ones behind it in the listener's backlog) until a slot is freed. So a local user
//! without the token cannot lock the administrator out by opening connections and sending
//! nothing (or a trickle): each new connection of the administrator's displaces one of them.
//!
//! Invariants: at most [`super::MAX_CONNECTIONS`] connections hold a slot, plus at most one
//! accepted connection waiting for one; a connection is closed by [`Conn::killed`] only
//! after its slot is given away, and a logged-in one never is.

use crate::agent::Locked;
use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// How far a connection has proven itself, in order.
const SILENT: u8 = 0;
const SPOKE: u8 = 1;
const LOGGED_IN: u8 = 2;

/// One connection's standing, shared by its task, its stream and its requests (as an
/// extension the guard finds).
pub struct Conn {
    state: AtomicU8,
    kill: Notify,
}

impl Conn {
    /// A request on this connection passed the session check.
    pub fn logged_in(&self) {
        self.state.fetch_max(LOGGED_IN, Ordering::Relaxed);
    }

    /// Ends when the connection's slot was given to a newer one.
    pub async fn killed(&self) {
        self.kill.notified().await
    }

    fn state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }
}

/// The slots.
pub struct Conns {
    max: usize,
    live: Mutex<(u64, BTreeMap<u64, Arc<Conn>>)>,
    freed: Notify,
}

impl Conns {
    pub fn new(max: usize) -> Arc<Conns> {
        Arc::new(Conns {
            max,
            live: Mutex::new((0, BTreeMap::new())),
            freed: Notify::new(),
        })
    }

    /// A slot for a new connection: a free one, or one given up by the oldest connection
    /// without a logged-in request (closed); if every slot is held by logged-in
    /// connections, waits until one ends.
    pub async fn slot(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(s) = self.try_slot() {
                return s;
            }
            freed.await;
        }
    }

    fn try_slot(self: &Arc<Self>) -> Option<Slot> {
        let mut live = self.live.locked();
        let (next, conns) = &mut *live;
        if conns.len() >= self.max {
            let victim = conns
                .iter()
                .filter(|(_, c)| c.state() < LOGGED_IN)
                .min_by_key(|(n, c)| (c.state(), **n))
                .map(|(n, _)| *n)?;
            if let Some(c) = conns.remove(&victim) {
                c.kill.notify_one();
            }
        }
        let n = *next;
        *next += 1;
        let conn = Arc::new(Conn {
            state: AtomicU8::new(SILENT),
            kill: Notify::new(),
        });
        conns.insert(n, conn.clone());
        Some(Slot {
            conns: self.clone(),
            n,
            conn,
        })
    }
}

/// A connection's slot, given back when dropped (its task's end).
pub struct Slot {
    conns: Arc<Conns>,
    n: u64,
    pub conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.live.locked().1.remove(&self.n);
        self.conns.freed.notify_waiters();
    }
}

/// A connection's stream that notes in its [`Conn`] that the client has sent something.
pub struct Heard<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Heard<S> {
    pub fn new(inner: S, conn: Arc<Conn>) -> Heard<S> {
        Heard { inner, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Heard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.state.fetch_max(SPOKE, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Heard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whether `f` is still pending after a moment.
    async fn pending<F: std::future::Future>(f: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_new_connection_takes_the_slot_of_the_oldest_not_logged_in() {
        let conns = Conns::new(3);
        let admin = conns.slot().await;
        admin.conn.logged_in();
        let spoke = conns.slot().await;
        spoke.conn.state.fetch_max(SPOKE, Ordering::Relaxed);
        let silent = conns.slot().await;

        // Full: the silent one goes first, then the one that spoke; the logged-in one stays.
        let newer = conns.slot().await;
        assert!(!pending(silent.conn.killed()).await);
        assert!(pending(spoke.conn.killed()).await);
        newer.conn.logged_in();
        let newest = conns.slot().await;
        assert!(!pending(spoke.conn.killed()).await);
        assert!(pending(admin.conn.killed()).await);
        newest.conn.logged_in();

        // Every slot logged in: a new one waits until one ends.
        assert!(pending(conns.slot()).await);
        drop(admin);
        assert!(!pending(conns.slot()).await);
        drop((spoke, silent, newer, newest));
    }
}
