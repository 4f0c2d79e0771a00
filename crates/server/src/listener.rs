//! The HTTP/1.1 listener: an accept loop with a cap on open connections,
//! per-connection header-read and idle timeouts, a hard cap on the request
//! head, and a bounded graceful shutdown.
//!
//! * At most `max_connections` connections are served at once: the loop
//!   takes a permit before it accepts, so further clients wait in the
//!   kernel's listen backlog and no file descriptor is spent on them. The
//!   backlog is set to [`LISTEN_BACKLOG`] (the kernel clamps it to
//!   `net.core.somaxconn`, 4096 by default on Linux), not the 128 tokio
//!   binds with: with 128, a burst of more than `max_connections` + 128
//!   connections overflowed the queue, the kernel dropped the overflow's
//!   handshakes (their clients retry with a back-off of seconds), and
//!   clients that open all their connections before sending on any (a
//!   pool warming up; the refresh-storm bench) kept the connections already
//!   accepted silent until the header-read timeout closed them unanswered.
//!   Connections waiting in the backlog have no timer of ours: the
//!   header-read timeout starts when a connection is accepted.
//! * A connection must send a complete request head within
//!   `header_read_timeout` of its first byte (of its start, for a new
//!   connection), and may wait at most `idle_timeout` for its next request;
//!   then it is closed. A request being served has no timer (its provider
//!   calls have their own timeout).
//! * An accept error (EMFILE, ENFILE, ...) backs off briefly instead of
//!   spinning.
//! * At shutdown the listener closes, idle connections close, requests in
//!   flight get `shutdown_timeout` to finish; whatever is left is dropped.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use crate::config::Limits;

/// The hard cap on a request head (request line and headers), enforced by
/// the HTTP parser: a larger head is answered a bare 431 and the
/// connection closed. Heads above [`crate::headers::MAX_HEADER_BYTES`]
/// but below this get the JSON 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The pause after an accept error other than a failed handshake.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listen backlog asked for: connections over the cap wait there. The
/// kernel clamps it to its own limit (`net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 65_535;

/// Sets `listener`'s backlog to [`LISTEN_BACKLOG`]: `listen(2)` again on a
/// listening socket only changes its backlog (Linux, the BSDs), so this
/// works whoever bound the socket. A failure is logged, not fatal: the
/// listener keeps the backlog it had.
fn widen_backlog(listener: &TcpListener) {
    if let Err(e) = socket2::SockRef::from(listener).listen(LISTEN_BACKLOG) {
        tracing::warn!(error = %e, "cannot set the listen backlog; keeping the default");
    }
}

/// Serves `router` on `listener` until `shutdown` completes, each
/// connection as a task of the calling runtime.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_on(listener, router, limits, shutdown, None).await
}

/// [`serve`], each connection moved to one of `threads` if given
/// ([`crate::serving`]: what `elements serve` does).
pub async fn serve_on(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    threads: Option<&crate::serving::ServingThreads>,
) -> io::Result<()> {
    widen_backlog(&listener);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder
        .header_read_timeout(None) // ours, in `TimedIo`, also covers idle time
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES + 8192);
    let mut shutdown = pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                drop(permit);
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        // The serving thread, and the router: that thread's own if it has one.
        let placement = threads.map(|t| t.place(incoming_cpu(&stream)));
        let (thread, router, seat) = match placement {
            Some(p) => (
                Some(p.handle),
                p.router.unwrap_or(&router).clone(),
                Some(p.seat),
            ),
            None => (None, router.clone(), None),
        };
        let connection = Connection {
            peer,
            router,
            builder: builder.clone(),
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
        };
        let closing = closing_rx.clone();
        let Some(thread) = thread else {
            connections.spawn(async move {
                connection.run(stream, closing).await;
                drop(permit);
            });
            continue;
        };
        // The socket leaves this runtime's reactor and joins the serving
        // thread's, where the connection then lives.
        let moved = match stream.into_std() {
            Ok(std) => std,
            Err(e) => {
                tracing::debug!(target: "elements::http", error = %e, "connection lost before serving");
                continue;
            }
        };
        connections.spawn_on(
            async move {
                match TcpStream::from_std(moved) {
                    Ok(stream) => connection.run(stream, closing).await,
                    Err(e) => tracing::warn!(error = %e, "cannot serve a connection"),
                }
                drop(seat);
                drop(permit);
            },
            thread,
        );
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let open = connections.len();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open,
            left = connections.len(),
            "shutdown timeout: closing the connections still open"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// The CPU the connection's packets arrive on (`SO_INCOMING_CPU`), where
/// the kernel knows it (it answers -1 for a socket that has received
/// nothing yet).
fn incoming_cpu(stream: &TcpStream) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        socket2::SockRef::from(stream)
            .cpu_affinity()
            .ok()
            .filter(|cpu| i32::try_from(*cpu).is_ok())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        None
    }
}

/// Errors of one failed handshake, not of the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// What serving one accepted connection needs besides its socket.
struct Connection {
    peer: SocketAddr,
    router: Router,
    builder: http1::Builder,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Connection {
    async fn run(self, stream: TcpStream, mut closing: watch::Receiver<bool>) {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let io = TimedIo::new(
            stream,
            in_flight.clone(),
            self.header_read_timeout,
            self.idle_timeout,
        );
        let (peer, router) = (self.peer, self.router);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let guard = InFlight::enter(&in_flight);
            let mut router = router.clone();
            let response = tower_service::Service::call(&mut router, request);
            async move {
                let response = response.await;
                drop(guard);
                response
            }
        });
        let mut conn = pin!(self.builder.serve_connection(TokioIo::new(io), service));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(target: "elements::http", error = %e, "connection closed");
                }
            }
            _ = async { drop(closing.wait_for(|closing| *closing).await) } => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

/// Counts a request being served on its connection.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of the next request.
    Idle,
    /// Reading a request head.
    Head,
    /// A request is being served: no timer.
    Busy,
}

/// A TCP stream that fails with `TimedOut` when its current phase's
/// deadline passes while it waits for the peer.
struct TimedIo {
    inner: TcpStream,
    in_flight: Arc<AtomicUsize>,
    phase: Phase,
    /// The timer. It may be set earlier than `due` (see [`TimedIo::arm`]).
    deadline: Pin<Box<Sleep>>,
    /// When the current phase times out.
    due: Instant,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl TimedIo {
    fn new(
        inner: TcpStream,
        in_flight: Arc<AtomicUsize>,
        header_read_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        let due = Instant::now() + header_read_timeout;
        TimedIo {
            inner,
            in_flight,
            // A new connection must send its head in time, from the start:
            // a silent connection is no better than a slow one.
            phase: Phase::Head,
            deadline: Box::pin(tokio::time::sleep_until(due)),
            due,
            header_read_timeout,
            idle_timeout,
        }
    }

    fn update_phase(&mut self, cx: &mut Context<'_>) {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            self.phase = Phase::Busy;
        } else if self.phase == Phase::Busy {
            self.phase = Phase::Idle;
            let deadline = Instant::now() + self.idle_timeout;
            self.arm(deadline, cx);
        }
    }

    /// Sets the deadline; the timer wakes this task (which then polls its
    /// reads, and they fail) when it passes, even if nothing else happens.
    ///
    /// The timer is moved only when it must fire sooner or has fired
    /// already: a timer set too early just wakes the task once for nothing
    /// and is moved on then ([`TimedIo::expired`]). Deadlines move later on
    /// every request of a kept-alive connection, so this keeps the timer
    /// wheel out of the per-request path (two `Sleep::reset`s per request
    /// were ~4% of a `GET /credentials` profile, issue 19).
    fn arm(&mut self, due: Instant, cx: &mut Context<'_>) {
        self.due = due;
        if self.deadline.is_elapsed() || due < self.deadline.deadline() {
            self.deadline.as_mut().reset(due);
            let _ = self.deadline.as_mut().poll(cx);
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.phase == Phase::Busy || self.deadline.as_mut().poll(cx).is_pending() {
            return false;
        }
        if Instant::now() >= self.due {
            return true;
        }
        // Fired early (set for an earlier deadline): move it to the real one.
        let due = self.due;
        self.deadline.as_mut().reset(due);
        self.deadline.as_mut().poll(cx).is_ready()
    }

    fn timed_out(&self) -> io::Error {
        let what = if self.phase == Phase::Idle {
            "idle timeout"
        } else {
            "header read timeout"
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.update_phase(cx);
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > before {
                    this.phase = Phase::Head;
                    let deadline = Instant::now() + this.header_read_timeout;
                    this.arm(deadline, cx);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(this.timed_out())),
            other => other,
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.update_phase(cx);
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(this.timed_out())),
            other => other,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.update_phase(cx);
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(this.timed_out())),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
