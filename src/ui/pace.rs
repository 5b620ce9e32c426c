//! The no-progress limit of a connection: a client that stops reading what it is sent (or
//! reads it a trickle at a time) must not hold one of the [`super::MAX_CONNECTIONS`] slots,
//! nor, through a download it does not read, one of the [`super::LONG_TASKS`] permits.
//!
//! Invariant: the time a connection's writes spend blocked on the client, less
//! [`MIN_RATE`]'s worth of credit for every byte the client did take (credit banked up to
//! [`NO_PROGRESS`]'s worth), never exceeds [`NO_PROGRESS`]; past it every write fails, which
//! ends the connection and drops what was being sent (a download's reader then stops at its
//! next block). A client reading at [`MIN_RATE`] or faster never runs into it: its send
//! buffer is small ([`SEND_BUFFER`]), so a blocked write waits only for the client to take
//! a small part of what it was sent, and the credit for the bytes its buffers took at once
//! is kept (bounded: a client that stops is cut within twice [`NO_PROGRESS`]). What a client sends is bounded elsewhere: the
//! request head by hyper's head timeout ([`super::HEAD_WAIT`]), a request body by
//! [`read_body`] ([`BODY_WAIT`]), and an idle kept-alive connection by the head timeout.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a connection's writes may be blocked on the client, net of its credit.
pub const NO_PROGRESS: Duration = Duration::from_secs(10);
/// The slowest reading that never runs into [`NO_PROGRESS`], in bytes a second.
pub const MIN_RATE: u64 = 16 << 10;
/// How long a client may take to send a request's body (at most [`super::MAX_BODY`]).
pub const BODY_WAIT: Duration = Duration::from_secs(10);

/// The send buffer a connection is given (the kernel doubles it), instead of one that grows
/// to megabytes: a write blocked on a full buffer waits for the client to take a part of
/// it, which must take a client at [`MIN_RATE`] well under [`NO_PROGRESS`]. Not smaller:
/// at 32 KiB a loopback download falls to ~2 MB/s (each segment waits for a delayed ACK).
pub const SEND_BUFFER: usize = 64 << 10;
/// Credit a connection may bank for bytes the client took faster than [`MIN_RATE`] (so a
/// client reading at [`MIN_RATE`] or faster in bursts, or whose buffers took a burst at
/// once, is not cut; one that stops is cut after at most this and [`NO_PROGRESS`]).
const MAX_CREDIT: Duration = NO_PROGRESS;

/// A connection with the no-progress limit on its writes.
pub struct Paced<S> {
    inner: S,
    /// Seconds blocked, net of credit: at least `-MAX_CREDIT`.
    owed: f64,
    /// Since when the write now waiting has been blocked.
    blocked_since: Option<Instant>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Paced<S> {
    pub fn new(inner: S) -> Paced<S> {
        Paced {
            inner,
            owed: 0.0,
            blocked_since: None,
            timer: Box::pin(tokio::time::sleep(NO_PROGRESS)),
        }
    }

    fn too_slow() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading what it was sent",
        )
    }

    fn cut(&self) -> bool {
        self.owed >= NO_PROGRESS.as_secs_f64()
    }
}

/// Give `stream` the small send buffer [`SEND_BUFFER`] (on failure it keeps the kernel's:
/// the limit is then looser, never wrong for a client at [`MIN_RATE`] with small buffers).
pub fn small_send_buffer(stream: &tokio::net::TcpStream) {
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(stream, SEND_BUFFER);
}

impl<S: AsyncRead + Unpin> AsyncRead for Paced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Paced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.cut() {
            return Poll::Ready(Err(Self::too_slow()));
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if let Some(t) = this.blocked_since.take() {
                    this.owed += t.elapsed().as_secs_f64();
                }
                let credit = n as f64 / MIN_RATE as f64;
                this.owed = (this.owed - credit).max(-MAX_CREDIT.as_secs_f64());
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                let since = *this.blocked_since.get_or_insert_with(Instant::now);
                let left = NO_PROGRESS.as_secs_f64() - this.owed;
                let deadline = since + Duration::from_secs_f64(left.max(0.0));
                if Instant::now() >= deadline {
                    this.owed = NO_PROGRESS.as_secs_f64();
                    return Poll::Ready(Err(Self::too_slow()));
                }
                // Woken at the deadline if the client takes nothing before it.
                this.timer.as_mut().reset(deadline.into());
                if this.timer.as_mut().poll(cx).is_ready() {
                    this.owed = NO_PROGRESS.as_secs_f64();
                    return Poll::Ready(Err(Self::too_slow()));
                }
                Poll::Pending
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The request with its body read in full within [`BODY_WAIT`] (bodies are small: at most
/// [`super::MAX_BODY`]), or why not.
pub async fn read_body(req: Request) -> Result<Request, (StatusCode, &'static str)> {
    let (parts, body) = req.into_parts();
    let bytes: Bytes =
        match tokio::time::timeout(BODY_WAIT, axum::body::to_bytes(body, super::MAX_BODY)).await {
            Err(_) => {
                return Err((
                    StatusCode::REQUEST_TIMEOUT,
                    "the request's body was not sent in time",
                ))
            }
            Ok(Err(_)) => {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request's body is too large (or was broken off)",
                ))
            }
            Ok(Ok(b)) => b,
        };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}
