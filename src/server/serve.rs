//! The accept loop: where every connection starts.
//!
//! It reads the first request head of a connection itself. A stream request (`GET` of
//! `/orders/{id}/stream` or `/stream`, HTTP/1.1, no body) is served by
//! [`stream::direct`](crate::server::stream::direct); after a `204` or an error the
//! connection comes back here for its next request, after a stream it closes. Anything else
//! (pages, the API, assets, HTTP/2, a head that does not parse) goes to the router through
//! hyper, as `axum::serve` would serve it, with the bytes already read replayed first; hyper
//! keeps that connection to the end.
//!
//! Why: most connections this server holds are open streams, and under hyper each kept
//! 16 KiB of buffers for its whole life (see `direct`). Reading the head with `httparse`
//! and writing frames ourselves is what lets an idle stream cost a few KiB.
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Version};
use axum::response::IntoResponse;
use axum::Router;
use bytes::{Buf, Bytes};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::server::edge::ClientConnection;
use crate::server::error::AppError;
use crate::server::stream::{self, direct, Opened, StreamRequest, Target};
use crate::server::{router, AppState};

/// The most headers a stream request may have; more, and it goes to hyper.
const MAX_HEADERS: usize = 64;

/// Serves the application on `listener` until `state.shutdown` is cancelled, then waits
/// for every connection to end (open streams end on the same signal; hyper's connections
/// finish the request in progress).
pub async fn serve(listener: TcpListener, state: AppState) {
    let app = router(state.clone());
    let connections = TaskTracker::new();
    loop {
        let (socket, peer) = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
        };
        // Over the total or the peer's share: closed at once, before it costs anything more.
        let Ok(slot) = state.clients.connect(peer.ip()) else {
            continue;
        };
        connections.spawn(connection(socket, slot, state.clone(), app.clone()));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// A failed `accept`: a connection that went away before it was accepted is nothing; out
/// of descriptors or memory, wait a moment rather than spin.
async fn accept_failed(err: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection, request by request, for as long as its requests are streams. Its first
/// head must have come whole within the head timeout of connecting, each later one within
/// the idle timeout of the answer before it.
///
/// Not an `async fn`, which would keep each argument twice for the connection's life
/// (rust-lang/rust#62958); an `async move` block keeps them once.
#[allow(clippy::manual_async_fn)]
fn connection(
    mut socket: TcpStream,
    slot: ClientConnection,
    state: AppState,
    app: Router,
) -> impl std::future::Future<Output = ()> {
    async move {
        // Bytes read and not yet used: the head being read, or what came after one.
        let mut buffered = Vec::new();
        // (What is held here is held by every open stream: the policy is read where it is
        // needed rather than kept.)
        let mut deadline = Instant::now() + state.config.policy.head_timeout();
        let mut first = true;
        loop {
            let max_head = state.config.policy.max_head();
            let len = match read_head(
                &mut socket,
                &mut buffered,
                deadline,
                max_head,
                &state.shutdown,
            )
            .await
            {
                Head::Stream(len) => len,
                Head::Other => {
                    // Boxed: hyper's connection is large, and would otherwise make every
                    // stream's task as large as it is.
                    Box::pin(with_hyper(
                        socket,
                        slot,
                        buffered,
                        deadline,
                        first,
                        app,
                        state.clone(),
                    ))
                    .await;
                    return;
                }
                Head::TimedOut => {
                    state.event_log.metrics().timed_out(bound(first));
                    close_later(socket, slot);
                    return;
                }
                Head::Closed => {
                    close_later(socket, slot);
                    return;
                }
            };
            // Boxed, so that the parsed headers and the opening's state are held only while
            // it runs, not for as long as the stream (they would triple every stream task's
            // size). The hand-over to hyper is written twice on purpose: one `Option`
            // carrying both cases would be held beside the stream, 208 bytes more per stream.
            let Some((opened, close)) = Box::pin(open(&state, slot.peer(), &buffered[..len])).await
            else {
                Box::pin(with_hyper(
                    socket,
                    slot,
                    buffered,
                    deadline,
                    first,
                    app,
                    state.clone(),
                ))
                .await;
                return;
            };
            // The head is done with; a stream keeps no buffer while it waits.
            buffered = buffered.split_off(len);
            buffered.shrink_to_fit();
            if !direct::respond(&mut socket, opened, close, &state).await
                || state.shutdown.is_cancelled()
            {
                close_later(socket, slot);
                return;
            }
            deadline = Instant::now() + state.config.policy.idle_timeout();
            first = false;
        }
    }
}

/// Which bound a head that came too late went past: the first head's, or an idle wait's.
fn bound(first: bool) -> &'static str {
    if first {
        "head"
    } else {
        "idle"
    }
}

/// Opens the stream that `head` asks for, and says whether its client asked to close;
/// `None` if it is not a stream request (`read_head` parsed these very bytes and found one;
/// they are parsed again here because a borrow of them cannot leave `read_head`'s loop).
async fn open(
    state: &AppState,
    peer: IpAddr,
    head: &[u8],
) -> Option<(Result<Opened, AppError>, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let _ = parsed.parse(head);
    let (mut request, close) = stream_request(&parsed)?;
    let forwarded_for = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|h| h.value);
    request.client = Some(state.clients.client_of(peer, forwarded_for));
    Some((stream::open(state, request).await, close))
}

/// The most sockets waiting for the closer; past it, a socket is closed where it is.
const MAX_CLOSING: usize = 16_384;

/// A socket on its way to be closed, still counted as its client's connection until it is.
#[derive(Debug)]
struct Closing {
    socket: std::net::TcpStream,
    _slot: ClientConnection,
}

/// Ends a connection: its socket leaves the event loop here, and is closed on the closer
/// thread, so that closing does not compete with delivering.
///
/// When an order with 10,000 watchers is delivered, 10,000 streams end in the same round,
/// and their clients leave as soon as they read `Delivered`. A socket still in the event
/// loop's epoll set turns each client's close into a wake-up of a worker thread, which in
/// a profile of that round was a fifth of the clients' time; closing it costs a FIN and,
/// on loopback, the reply, handled inline. So the socket leaves the epoll set at once (one
/// `epoll_ctl`), and the close itself runs on a thread of the lowest priority (nice 19),
/// which the kernel runs when the workers have nothing left to deliver.
fn close_later(socket: TcpStream, slot: ClientConnection) {
    let Ok(socket) = socket.into_std() else {
        return;
    };
    static CLOSER: OnceLock<Closer> = OnceLock::new();
    // A socket given back is dropped, so closed, here.
    let _ = CLOSER
        .get_or_init(|| Closer::start(MAX_CLOSING, CLOSING))
        .hold(Closing {
            socket,
            _slot: slot,
        });
}

/// When the closer closes what it holds: once no socket has come for `quiet`, or the first
/// it holds has waited `within`.
#[derive(Clone, Copy, Debug)]
struct Pace {
    quiet: Duration,
    within: Duration,
}

/// The server's pace. A burst of endings (an order's 10,000 watchers, or a carrier marking
/// thousands of orders delivered at once) is closed once it is over, not while its events
/// are still being delivered: closing a socket costs about as much as writing to it. In the
/// fan-out benchmark's `Delivered` round, closes that began 200 ms into the round (the bound
/// before) added a fifth to that round's p99 (BENCHMARKS.md, issue 21). A second covers any
/// burst we have measured; a longer one would only hold more descriptors (and a client's
/// ended connections count against its share until closed), and past [`MAX_CLOSING`]
/// sockets are closed in place anyway.
const CLOSING: Pace = Pace {
    quiet: Duration::from_millis(10),
    within: Duration::from_millis(1000),
};
/// A socket with unread input is read (and what it says dropped) for at most this long
/// before it is closed, so that closing it sends a FIN and not a reset.
const LINGER: Duration = Duration::from_secs(2);
/// How often lingering sockets are read.
const LINGER_POLL: Duration = Duration::from_millis(20);

/// The closer thread's side of [`close_later`].
struct Closer {
    sockets: std::sync::mpsc::Sender<Closing>,
    /// Sockets sent and not closed yet.
    waiting: Arc<AtomicUsize>,
    /// The most that may wait.
    limit: usize,
}

impl Closer {
    /// Starts the thread that closes sockets, in batches, at the lowest priority.
    ///
    /// A socket closed with unread input makes the kernel send a reset and discard what it
    /// had not sent yet, the end of the last answer included (a client that pipelined more
    /// than we read, or sent a body we did not want). Such a socket is shut down for writing
    /// instead (a FIN after the answer), then read until its client closes or [`LINGER`]
    /// passes, and only then closed, as nginx's `lingering_close` does.
    fn start(limit: usize, pace: Pace) -> Self {
        let (sockets, closing) = std::sync::mpsc::channel::<Closing>();
        let waiting = Arc::new(AtomicUsize::new(0));
        let count = waiting.clone();
        let spawned = std::thread::Builder::new()
            .name("closer".into())
            .spawn(move || {
                use std::sync::mpsc::RecvTimeoutError;
                lowest_priority();
                let mut batch = Vec::new();
                let mut lingering: Vec<(Closing, std::time::Instant)> = Vec::new();
                loop {
                    let first = if lingering.is_empty() {
                        closing.recv().map_err(|_| RecvTimeoutError::Disconnected)
                    } else {
                        closing.recv_timeout(LINGER_POLL)
                    };
                    match first {
                        Ok(socket) => {
                            let since = std::time::Instant::now();
                            batch.push(socket);
                            // Sleeps, then takes what came, rather than waiting on the
                            // channel: a thread blocked in `recv_timeout` is woken by every
                            // send (a futex call on the worker and a switch to this thread,
                            // 10,000 of each when an order's watchers all end at once); a
                            // sleeping one is woken by none.
                            loop {
                                let wait =
                                    pace.quiet.min(pace.within.saturating_sub(since.elapsed()));
                                std::thread::sleep(wait);
                                let held = batch.len();
                                batch.extend(closing.try_iter());
                                if batch.len() == held || since.elapsed() >= pace.within {
                                    break;
                                }
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) if lingering.is_empty() => break,
                        Err(_) => {}
                    }
                    let now = std::time::Instant::now();
                    for closing in batch.drain(..) {
                        if has_unread_input(&closing.socket) {
                            let _ = closing.socket.shutdown(std::net::Shutdown::Write);
                            lingering.push((closing, now + LINGER));
                        } else {
                            count.fetch_sub(1, Ordering::Relaxed);
                            drop(closing);
                        }
                    }
                    lingering.retain(|(closing, until)| {
                        let done = read_to_end_now(&closing.socket) || now >= *until;
                        if done {
                            count.fetch_sub(1, Ordering::Relaxed);
                        }
                        !done
                    });
                    // (Dropped by `retain`: closed, and no longer counted as a connection.)
                }
            });
        if let Err(err) = spawned {
            // Without the thread, the channel is closed and every socket is given back.
            tracing::warn!(error = %err, "cannot start the closer thread");
        }
        Self {
            sockets,
            waiting,
            limit,
        }
    }

    /// Takes `socket` to close later. Gives it back when `limit` sockets wait already (the
    /// closer is starved: better to close here than to hold them) or the thread is gone.
    fn hold(&self, socket: Closing) -> Result<(), Closing> {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(socket);
        }
        self.sockets.send(socket).map_err(|unsent| {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            unsent.0
        })
    }
}

/// Whether the client sent bytes that nobody read yet.
fn has_unread_input(socket: &std::net::TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int, into `unread`, for a descriptor we own.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut unread) };
    result == 0 && unread > 0
}

/// Reads and drops what the socket has now (it is non-blocking); whether its client has
/// closed (or it failed), so that it can be closed without a reset.
fn read_to_end_now(mut socket: &std::net::TcpStream) -> bool {
    use std::io::Read;
    direct::drained(|bytes| socket.read(bytes))
}

/// Makes the calling thread the last the kernel runs when anything else is runnable.
fn lowest_priority() {
    // SAFETY: `gettid` and `setpriority` take plain integers and touch no memory of ours.
    // On Linux, `PRIO_PROCESS` with a thread id sets that one thread's nice value.
    let result = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19)
    };
    if result != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "closer keeps normal priority");
    }
}

/// What a connection's next request is.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// A stream request whose head is the first this many bytes.
    Stream(usize),
    /// Anything else: for hyper (which also answers what we refuse the way it refuses it:
    /// a head over the limit with `431`, a malformed one with `400`).
    Other,
    /// The head did not come whole in time.
    TimedOut,
    /// The client closed the connection, or the server is shutting down.
    Closed,
}

/// Reads until `buffered` starts with a whole request head, or it is clear that it is not
/// a stream request, or `deadline` passes. The head is parsed again only when a new line
/// has arrived, so a head trickled a byte at a time costs one parse a line, not one a byte.
async fn read_head(
    socket: &mut TcpStream,
    buffered: &mut Vec<u8>,
    deadline: Instant,
    max_head: usize,
    shutdown: &CancellationToken,
) -> Head {
    // What was there before this call (what a client sent after its last request) is
    // looked at as if it had just arrived.
    let mut seen: Option<usize> = None;
    loop {
        if !starts_as_stream_request(buffered) {
            return Head::Other;
        }
        if seen.is_none_or(|seen| buffered[seen..].contains(&b'\n')) {
            if let Some(head) = classify(buffered) {
                return head;
            }
        }
        if buffered.len() >= max_head {
            return Head::Other;
        }
        seen = Some(buffered.len());
        let readable = tokio::select! {
            _ = shutdown.cancelled() => return Head::Closed,
            readable = tokio::time::timeout_at(deadline, socket.readable()) => readable,
        };
        match readable {
            Err(_) => return Head::TimedOut,
            Ok(Err(_)) => return Head::Closed,
            Ok(Ok(())) => {}
        }
        // Read into the stack, then keep exactly what came: a waiting connection holds no
        // buffer, and one whose client has gone never allocates one.
        let mut bytes = [0u8; 2048];
        match socket.try_read(&mut bytes) {
            Ok(0) => return Head::Closed,
            Ok(n) => buffered.extend_from_slice(&bytes[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Head::Closed,
        }
    }
}

/// Whether the bytes so far can still be the start of a stream request: a `GET` of a path.
fn starts_as_stream_request(bytes: &[u8]) -> bool {
    const GET: &[u8] = b"GET /";
    let start = bytes.len().min(GET.len());
    bytes[..start] == GET[..start]
}

/// What the bytes read so far are: a whole stream request head, something else, or not
/// known yet (`None`).
fn classify(bytes: &[u8]) -> Option<Head> {
    // Anything that does not start as a GET of a path goes to hyper at once.
    if !starts_as_stream_request(bytes) {
        return Some(Head::Other);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let len = match head.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Head::Other),
    };
    Some(if stream_request(&head).is_some() {
        Head::Stream(len)
    } else {
        Head::Other
    })
}

/// The stream request a parsed head is, and whether its client asked to close: a `GET` of
/// a stream path over HTTP/1.1, with exactly one `Host`, no body and no upgrade, whose
/// target the `http` crate takes as hyper would. `None` for anything else: hyper then
/// answers it, so both paths give every head one meaning. The client is left unset.
fn stream_request<'b>(head: &httparse::Request<'_, 'b>) -> Option<(StreamRequest<'b>, bool)> {
    let named = |name: &'static str| {
        head.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_body_or_upgrade = head.headers.iter().any(|h| {
        (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("upgrade")
    });
    if head.method != Some("GET")
        || head.version != Some(1)
        || has_body_or_upgrade
        || named("host").count() != 1
    {
        return None;
    }
    let target = head.path?;
    // The target as hyper reads it: refused where `http` refuses it, the fragment dropped.
    axum::http::uri::PathAndQuery::try_from(target).ok()?;
    let target = target.split_once('#').map_or(target, |(before, _)| before);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let close = named("connection").any(|value| {
        value
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    });
    let request = StreamRequest {
        target: Target::of_path(path)?,
        query,
        last_event_id: named("last-event-id").next(),
        authorization: named("authorization").next(),
        client: None,
    };
    Some((request, close))
}

/// Serves the rest of the connection with the router, as `axum::serve` does, under the
/// same policy as the direct path: the request whose head is still coming must reach the
/// router by `deadline` (hyper's own header timeout then bounds each idle wait), a write
/// that makes no progress for the write timeout ends the connection, and an HTTP/1.1
/// request without exactly one `Host` is answered `400`. On shutdown the request in
/// progress finishes and the connection closes.
async fn with_hyper(
    socket: TcpStream,
    slot: ClientConnection,
    read: Vec<u8>,
    deadline: Instant,
    first: bool,
    app: Router,
    state: AppState,
) {
    let policy = &state.config.policy;
    let peer = slot.peer();
    let io = TokioIo::new(Replay {
        read: Bytes::from(read),
        socket: Some(socket),
        slot: Some(slot),
        stall: policy.write_timeout(),
        stalled: None,
    });
    let reached = Arc::new(AtomicBool::new(false));
    let service = hyper::service::service_fn({
        let reached = reached.clone();
        move |mut request: Request<Incoming>| {
            reached.store(true, Ordering::Relaxed);
            request.extensions_mut().insert(Peer(peer));
            let mut app = app.clone();
            async move {
                if !has_one_host(&request) {
                    let refused = AppError::BadRequest(
                        "an HTTP/1.1 request needs exactly one Host header".into(),
                    );
                    return Ok(refused.into_response());
                }
                app.call(request.map(Body::new)).await
            }
        }
    });
    let builder = policy.hyper_builder();
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let late = async {
        tokio::time::sleep_until(deadline).await;
        if reached.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = connection.as_mut() => {
            // hyper's own header timeout may end a late head a moment before ours.
            if served.is_err() && !reached.load(Ordering::Relaxed) && Instant::now() >= deadline {
                state.event_log.metrics().timed_out(bound(first));
            }
            return;
        }
        _ = late => {
            state.event_log.metrics().timed_out(bound(first));
            return;
        }
        _ = state.shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// The peer's address, for the router's handlers (the stream routes count a client's
/// streams by it).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

/// Exactly one `Host`, as RFC 9112 §3.2 asks of an HTTP/1.1 request. HTTP/1.0 may omit it,
/// and HTTP/2 names its authority otherwise.
fn has_one_host<B>(request: &Request<B>) -> bool {
    request.version() != Version::HTTP_11
        || request.headers().get_all(header::HOST).iter().count() == 1
}

/// A socket whose first reads give back the bytes the accept loop already read, whose
/// writes fail once one has made no progress for `stall`, and which is closed the way the
/// direct path closes its sockets ([`close_later`]) when hyper lets go of it.
struct Replay {
    read: Bytes,
    /// Taken only when dropped.
    socket: Option<TcpStream>,
    slot: Option<ClientConnection>,
    stall: Duration,
    /// Armed while a write waits.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Replay {
    fn socket(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.socket.as_mut().expect("a socket until dropped"))
    }

    /// What a write that got `poll` returns: progress disarms the stall timer, waiting arms
    /// it, and waiting past it fails the write.
    fn bounded<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let stall = self.stall;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match std::future::Future::poll(timer.as_mut(), cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let (Some(socket), Some(slot)) = (self.socket.take(), self.slot.take()) {
            close_later(socket, slot);
        }
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return self.socket().poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        if self.read.is_empty() {
            // Replayed: let go of the head's buffer rather than keep it for the connection.
            self.read = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = self.socket().poll_write(cx, buf);
        self.bounded(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = self.socket().poll_write_vectored(cx, bufs);
        self.bounded(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket
            .as_ref()
            .is_some_and(|socket| socket.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = self.socket().poll_flush(cx);
        self.bounded(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what an async fn returns, without calling it.
    fn future_size<F: std::future::Future>(
        _: impl FnOnce(TcpStream, ClientConnection, AppState, Router) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// A connected pair of plain sockets: (ours, the client's).
    fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, client)
    }

    /// A socket to close, counted as a connection of a client of `clients`.
    fn closing(
        socket: std::net::TcpStream,
        clients: &Arc<crate::server::edge::Clients>,
    ) -> Closing {
        socket.set_nonblocking(true).unwrap();
        Closing {
            socket,
            _slot: clients.connect("192.0.2.1".parse().unwrap()).unwrap(),
        }
    }

    fn clients() -> Arc<crate::server::edge::Clients> {
        use crate::server::edge::clients::Shares;
        let shares = Shares {
            connections: 100,
            connections_per_client: 100,
            streams_per_client: 1,
        };
        Arc::new(crate::server::edge::Clients::new(
            shares,
            vec![],
            Arc::default(),
        ))
    }

    #[test]
    fn the_closer_closes_what_it_holds_within_its_bound() {
        use std::io::Read;
        let clients = clients();
        let closer = Closer::start(4, CLOSING);
        let (ours, mut client) = socket_pair();
        client.set_read_timeout(Some(CLOSING.within * 5)).unwrap();
        closer.hold(closing(ours, &clients)).unwrap();
        // End of stream, not a timeout: the closer closed our side.
        assert_eq!(client.read(&mut [0; 8]).unwrap(), 0);
        assert_eq!(closer.waiting.load(Ordering::Relaxed), 0);
        // And the connection no longer counts once its socket is closed.
        let deadline = std::time::Instant::now() + CLOSING.within * 5;
        while clients.addresses() > 0 {
            assert!(std::time::Instant::now() < deadline, "still counted");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_burst_of_endings_is_closed_once_it_is_over() {
        use std::io::{ErrorKind, Read};
        // Slower than the server's pace, so that a busy test machine cannot pass for a
        // pause: a socket every 10 ms for 600 ms, four times `quiet`. A closer that closed
        // each socket at once, or less than 600 ms after it came, would have closed the first.
        let pace = Pace {
            quiet: Duration::from_millis(150),
            within: Duration::from_secs(5),
        };
        let clients = clients();
        let closer = Closer::start(64, pace);
        let mut clients_ends = Vec::new();
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(600) {
            let (ours, client) = socket_pair();
            closer.hold(closing(ours, &clients)).unwrap();
            client.set_nonblocking(true).unwrap();
            clients_ends.push(client);
            std::thread::sleep(Duration::from_millis(10));
        }
        // The burst went on four times `quiet`: its first socket is still open.
        let first = &mut clients_ends[0];
        let read = first.read(&mut [0; 8]);
        assert!(
            matches!(&read, Err(err) if err.kind() == ErrorKind::WouldBlock),
            "closed during the burst: {read:?}"
        );
        // Once it is over, every socket is closed.
        for client in &mut clients_ends {
            client.set_nonblocking(false).unwrap();
            client.set_read_timeout(Some(pace.within)).unwrap();
            assert_eq!(client.read(&mut [0; 8]).unwrap(), 0);
        }
        assert_eq!(closer.waiting.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_socket_with_unread_input_is_shut_down_then_read_until_its_client_closes() {
        use std::io::{Read, Write};
        let clients = clients();
        let closer = Closer::start(4, CLOSING);
        let (mut ours, mut client) = socket_pair();
        // The client sent more than anyone read; then the answer was written.
        client.write_all(&[b'x'; 100_000]).unwrap();
        ours.write_all(b"the answer").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        closer.hold(closing(ours, &clients)).unwrap();
        client.set_read_timeout(Some(LINGER * 2)).unwrap();
        // The answer, then a clean end (FIN), not a reset.
        let mut read = Vec::new();
        client.read_to_end(&mut read).unwrap();
        assert_eq!(read, b"the answer");
        // Still held (and counted) while the client has not closed.
        assert_eq!(closer.waiting.load(Ordering::Relaxed), 1);
        drop(client);
        let deadline = std::time::Instant::now() + LINGER;
        while closer.waiting.load(Ordering::Relaxed) > 0 {
            assert!(std::time::Instant::now() < deadline, "still lingering");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(clients.addresses(), 0);
    }

    #[test]
    fn a_full_closer_gives_the_socket_back_to_be_closed_in_place() {
        let clients = clients();
        // No thread drains this one: what it takes stays waiting.
        let (sockets, _closing) = std::sync::mpsc::channel();
        let closer = Closer {
            sockets,
            waiting: Arc::default(),
            limit: 2,
        };
        let pairs: Vec<_> = (0..3).map(|_| socket_pair()).collect();
        let mut given_back = Vec::new();
        for (ours, _) in &pairs {
            if let Err(socket) = closer.hold(closing(ours.try_clone().unwrap(), &clients)) {
                given_back.push(socket);
            }
        }
        assert_eq!(given_back.len(), 1);
        assert_eq!(closer.waiting.load(Ordering::Relaxed), 2);
        // A thread that is gone gives every socket back.
        drop(_closing);
        let (ours, _client) = socket_pair();
        let closer = Closer {
            limit: 16,
            ..closer
        };
        assert!(closer.hold(closing(ours, &clients)).is_err());
    }

    #[test]
    fn a_connection_task_stays_small() {
        // Every open stream is one of these: what its await points hold is memory per
        // subscriber. Parsed headers kept across an await once made it 3.8 KB (release);
        // the stream's frames passed by value through two `async fn`s, held three times,
        // made it 2,000 bytes, and tokio's task one allocation class larger.
        let size = future_size(connection);
        eprintln!("connection future: {size} bytes");
        assert!(size <= 1280, "a connection's future is {size} bytes");
    }

    #[test]
    fn a_whole_stream_request_is_ours_and_its_length_is_its_head() {
        let head = b"GET /orders/abc/stream?last_event_id=3 HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(b"GET /next");
        assert_eq!(classify(&bytes), Some(Head::Stream(head.len())));
        let all = b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(classify(all), Some(Head::Stream(all.len())));
    }

    #[test]
    fn a_stream_request_is_its_target_query_resume_id_token_and_close() {
        let bytes = b"GET /orders/abc/stream?last_event_id=3#x HTTP/1.1\r\nHost: x\r\n\
            Last-Event-ID: 7\r\nauthorization: Bearer t\r\nConnection: keep-alive\r\n\
            Connection: Close\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Request::new(&mut headers);
        head.parse(bytes).unwrap();
        let (request, close) = stream_request(&head).unwrap();
        assert_eq!(request.target, Target::Order("abc"));
        assert_eq!(request.query, "last_event_id=3");
        assert_eq!(request.last_event_id, Some(&b"7"[..]));
        assert_eq!(request.authorization, Some(&b"Bearer t"[..]));
        assert!(close);

        let bytes = b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Request::new(&mut headers);
        head.parse(bytes).unwrap();
        let (request, close) = stream_request(&head).unwrap();
        assert_eq!((request.target, request.query), (Target::Selection, ""));
        assert_eq!((request.last_event_id, request.authorization), (None, None));
        assert!(!close);
    }

    #[test]
    fn half_a_stream_request_waits_for_the_rest() {
        let head = b"GET /orders/abc/stream HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(classify(head), Some(Head::Stream(head.len())));
        for end in 0..head.len() {
            assert_eq!(classify(&head[..end]), None, "{end}");
        }
    }

    #[test]
    fn anything_else_goes_to_hyper() {
        for other in [
            &b"POST /api/orders HTTP/1.1\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"HEAD /stream HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET /orders/abc HTTP/1.1\r\n\r\n",
            b"GET /stream HTTP/1.0\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nBad Header\r\n\r\n",
            // Not exactly one Host: hyper answers it (400).
            b"GET /stream HTTP/1.1\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            // A target `http` refuses: hyper answers it (400).
            b"GET /stream?a=<b> HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\n",
            b"GARBAGE",
        ] {
            assert_eq!(
                classify(other),
                Some(Head::Other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn too_many_headers_go_to_hyper() {
        let mut head = b"GET /stream HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            head.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(classify(&head), Some(Head::Other));
    }

    /// What hyper makes of a request head: method, path, query, the first `Last-Event-ID`
    /// and `Authorization`, and how many `Host` lines.
    type Parsed = (
        String,
        String,
        String,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        usize,
    );

    fn parsed_by_hyper(head: &[u8]) -> Option<Parsed> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use tokio::io::AsyncWriteExt;
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let (seen, mut parsed) = tokio::sync::mpsc::unbounded_channel();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let first = |name: &str| request.headers().get(name).map(|v| v.as_bytes().to_vec());
                let _ = seen.send((
                    request.method().to_string(),
                    request.uri().path().to_owned(),
                    request.uri().query().unwrap_or_default().to_owned(),
                    first("last-event-id"),
                    first("authorization"),
                    request.headers().get_all(header::HOST).iter().count(),
                ));
                async { Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new())) }
            });
            let serving = tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(server), service),
            );
            client.write_all(head).await.unwrap();
            client.shutdown().await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), parsed.recv())
                .await
                .ok()
                .flatten();
            serving.abort();
            got
        })
    }

    fn head_strategy() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        // Mostly what a stream request looks like, so that many are taken as one, with the
        // odd method, version, target byte and header mixed in.
        let method = prop::sample::select(vec![
            "GET", "GET", "GET", "GET", "GET", "HEAD", "get", "POST",
        ]);
        let path = prop::sample::select(vec![
            "/stream",
            "/orders/abc/stream",
            "/orders/67E55044-10B1-426F-9247-BB680E5FE0C8/stream",
            "/orders/%7Bx%7D/stream",
            "/orders/urn:uuid:x/stream",
            "/orders//stream",
            "/stream/",
            "/orders/a/b/stream",
        ]);
        let query = proptest::option::of(prop_oneof![
            4 => "[a-z_=&%#?0-9.~!$'()*+,;:@/-]{0,16}",
            1 => r"[a-z=&%<>#?{}|^`\\\x7fé -]{0,8}",
        ]);
        let version = prop::sample::select(vec![
            "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0",
        ]);
        let name = prop::sample::select(vec![
            "Host",
            "Connection",
            "Last-Event-ID",
            "last-event-id",
            "Authorization",
            "Content-Length",
            "Transfer-Encoding",
            "Upgrade",
            "X-Forwarded-For",
            "X-A",
            "X-B",
            "X-C",
        ]);
        let headers = prop::collection::vec((name, "[ -~\t]{0,12}"), 0..5);
        let host = proptest::option::weighted(0.9, 0..6usize);
        (method, path, query, version, headers, host).prop_map(
            |(method, path, query, version, mut headers, host)| {
                if let Some(at) = host {
                    headers.insert(at.min(headers.len()), ("host", "example".into()));
                }
                let mut head = format!("{method} {path}");
                if let Some(query) = query {
                    head.push('?');
                    head.push_str(&query);
                }
                head.push_str(&format!(" {version}\r\n"));
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                head.into_bytes()
            },
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// The classifier never panics, and whenever it takes a head as a stream request,
        /// hyper reads the same bytes as the same request.
        #[test]
        fn a_head_taken_as_a_stream_request_is_the_request_hyper_reads(head in head_strategy()) {
            let Some(Head::Stream(len)) = classify(&head) else {
                return Ok(());
            };
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut headers);
            parsed.parse(&head[..len]).unwrap();
            let (request, _) = stream_request(&parsed).unwrap();
            let hyper = parsed_by_hyper(&head[..len]);
            proptest::prop_assert!(hyper.is_some(), "hyper refused {:?}", String::from_utf8_lossy(&head));
            let (method, path, query, last_event_id, authorization, hosts) = hyper.unwrap();
            let path_of = |target: Target<'_>| match target {
                Target::Selection => "/stream".to_owned(),
                Target::Order(id) => format!("/orders/{id}/stream"),
            };
            proptest::prop_assert_eq!(method, "GET");
            proptest::prop_assert_eq!(path, path_of(request.target));
            proptest::prop_assert_eq!(query, request.query);
            proptest::prop_assert_eq!(last_event_id.as_deref(), request.last_event_id);
            proptest::prop_assert_eq!(authorization.as_deref(), request.authorization);
            proptest::prop_assert_eq!(hosts, 1);
        }
    }
}
