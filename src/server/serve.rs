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
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use bytes::{Buf, Bytes};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::server::error::AppError;
use crate::server::stream::{self, direct, Opened, StreamRequest, Target};
use crate::server::{router, AppState, REQUEST_TIMEOUT};

/// The largest request head read here; a larger one goes to hyper, which refuses it.
const MAX_HEAD: usize = 16 * 1024;
/// The most headers a stream request may have; more, and it goes to hyper.
const MAX_HEADERS: usize = 64;

/// Serves the application on `listener` until `state.shutdown` is cancelled, then waits
/// for every connection to end (open streams end on the same signal; hyper's connections
/// finish the request in progress).
pub async fn serve(listener: TcpListener, state: AppState) {
    let app = router(state.clone());
    let connections = TaskTracker::new();
    loop {
        let socket = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(socket, state.clone(), app.clone()));
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

/// One connection, request by request, for as long as its requests are streams.
async fn connection(mut socket: TcpStream, state: AppState, app: Router) {
    // Bytes read and not yet used: the head being read, or what came after one.
    let mut buffered = Vec::new();
    loop {
        let len = match read_head(&mut socket, &mut buffered, &state.shutdown).await {
            Head::Stream(len) => len,
            Head::Other => {
                // Boxed: hyper's connection is large, and would otherwise make every
                // stream's task as large as it is.
                Box::pin(with_hyper(socket, buffered, app, state.shutdown.clone())).await;
                return;
            }
            Head::Closed => {
                close_later(socket);
                return;
            }
        };
        // Boxed, so that the parsed headers and the opening's state are held only while it
        // runs, not for as long as the stream (they would triple every stream task's size).
        // The hand-over to hyper is written twice on purpose: one `Option` carrying both
        // cases would be held beside the stream, 208 bytes more per stream.
        let Some((opened, close)) = Box::pin(open(&state, &buffered[..len])).await else {
            Box::pin(with_hyper(socket, buffered, app, state.shutdown.clone())).await;
            return;
        };
        // The head is done with; a stream keeps no buffer while it waits.
        buffered = buffered.split_off(len);
        buffered.shrink_to_fit();
        if !direct::respond(&mut socket, opened, close).await || state.shutdown.is_cancelled() {
            close_later(socket);
            return;
        }
    }
}

/// Opens the stream that `head` asks for, and says whether its client asked to close;
/// `None` if it is not a stream request (`read_head` parsed these very bytes and found one;
/// they are parsed again here because a borrow of them cannot leave `read_head`'s loop).
async fn open(state: &AppState, head: &[u8]) -> Option<(Result<Opened, AppError>, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let _ = parsed.parse(head);
    let (request, close) = stream_request(&parsed)?;
    Some((stream::open(state, request).await, close))
}

/// The most sockets waiting for the closer; past it, a socket is closed where it is.
const MAX_CLOSING: usize = 16_384;

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
fn close_later(socket: TcpStream) {
    let Ok(socket) = socket.into_std() else {
        return;
    };
    static CLOSER: OnceLock<Closer> = OnceLock::new();
    // A socket given back is dropped, so closed, here.
    let _ = CLOSER
        .get_or_init(|| Closer::start(MAX_CLOSING))
        .hold(socket);
}

/// The closer closes what it holds once no socket has come for this long...
const CLOSE_QUIET: Duration = Duration::from_millis(10);
/// ...or the first it holds has waited this long.
const CLOSE_WITHIN: Duration = Duration::from_millis(200);

/// The closer thread's side of [`close_later`].
struct Closer {
    sockets: std::sync::mpsc::Sender<std::net::TcpStream>,
    /// Sockets sent and not closed yet.
    waiting: Arc<AtomicUsize>,
    /// The most that may wait.
    limit: usize,
}

impl Closer {
    /// Starts the thread that closes sockets, in batches, at the lowest priority.
    fn start(limit: usize) -> Self {
        let (sockets, closing) = std::sync::mpsc::channel::<std::net::TcpStream>();
        let waiting = Arc::new(AtomicUsize::new(0));
        let count = waiting.clone();
        let spawned = std::thread::Builder::new()
            .name("closer".into())
            .spawn(move || {
                lowest_priority();
                let mut batch = Vec::new();
                while let Ok(first) = closing.recv() {
                    let since = std::time::Instant::now();
                    batch.push(first);
                    loop {
                        let wait = CLOSE_QUIET.min(CLOSE_WITHIN.saturating_sub(since.elapsed()));
                        match closing.recv_timeout(wait) {
                            Ok(socket) => batch.push(socket),
                            Err(_) => break,
                        }
                    }
                    count.fetch_sub(batch.len(), Ordering::Relaxed);
                    batch.clear();
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
    fn hold(&self, socket: std::net::TcpStream) -> Result<(), std::net::TcpStream> {
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
    /// Anything else: for hyper.
    Other,
    /// The client closed the connection, sent half a head and stopped, or the server is
    /// shutting down.
    Closed,
}

/// Reads until `buffered` starts with a whole request head, or it is clear that it is not
/// a stream request. Waits as long as it takes for a first byte (an idle keep-alive
/// connection), then at most [`REQUEST_TIMEOUT`] for the rest.
async fn read_head(
    socket: &mut TcpStream,
    buffered: &mut Vec<u8>,
    shutdown: &CancellationToken,
) -> Head {
    let mut deadline = None;
    loop {
        match classify(buffered) {
            Some(head) => return head,
            None if buffered.len() >= MAX_HEAD => return Head::Other,
            None => {}
        }
        if !buffered.is_empty() && deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + REQUEST_TIMEOUT);
        }
        let readable = async {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, socket.readable())
                    .await
                    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
                None => socket.readable().await,
            }
        };
        let readable = tokio::select! {
            _ = shutdown.cancelled() => return Head::Closed,
            readable = readable => readable,
        };
        if readable.is_err() {
            return Head::Closed;
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

/// What the bytes read so far are: a whole stream request head, something else, or not
/// known yet (`None`).
fn classify(bytes: &[u8]) -> Option<Head> {
    // Anything that does not start as a GET of a path goes to hyper at once.
    const GET: &[u8] = b"GET /";
    let start = bytes.len().min(GET.len());
    if bytes[..start] != GET[..start] {
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
/// a stream path over HTTP/1.1, with no body and no upgrade. `None` for anything else.
fn stream_request<'b>(head: &httparse::Request<'_, 'b>) -> Option<(StreamRequest<'b>, bool)> {
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_body_or_upgrade = head.headers.iter().any(|h| {
        (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("upgrade")
    });
    if head.method != Some("GET") || head.version != Some(1) || has_body_or_upgrade {
        return None;
    }
    let path = head.path?;
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let close = header("connection").is_some_and(|value| {
        value
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    });
    let request = StreamRequest {
        target: Target::of_path(path)?,
        query,
        last_event_id: header("last-event-id"),
        authorization: header("authorization"),
    };
    Some((request, close))
}

/// Serves the rest of the connection with the router, as `axum::serve` does; on shutdown
/// the request in progress finishes and the connection closes.
async fn with_hyper(socket: TcpStream, read: Vec<u8>, app: Router, shutdown: CancellationToken) {
    let io = TokioIo::new(Replay {
        read: Bytes::from(read),
        socket,
    });
    let service = TowerToHyperService::new(
        app.map_request(|request: Request<Incoming>| request.map(Body::new)),
    );
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// A socket whose first reads give back the bytes the accept loop already read.
struct Replay {
    read: Bytes,
    socket: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.socket).poll_read(cx, buf);
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
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what an async fn returns, without calling it.
    fn future_size<F: std::future::Future>(
        _: impl FnOnce(TcpStream, AppState, Router) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// A connected pair of plain sockets: (ours, the client's).
    fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, client)
    }

    #[test]
    fn the_closer_closes_what_it_holds_within_its_bound() {
        use std::io::Read;
        let closer = Closer::start(4);
        let (ours, mut client) = socket_pair();
        client.set_read_timeout(Some(CLOSE_WITHIN * 5)).unwrap();
        closer.hold(ours).unwrap();
        // End of stream, not a timeout: the closer closed our side.
        assert_eq!(client.read(&mut [0; 8]).unwrap(), 0);
        assert_eq!(closer.waiting.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_closer_gives_the_socket_back_to_be_closed_in_place() {
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
            if let Err(socket) = closer.hold(ours.try_clone().unwrap()) {
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
        assert!(closer.hold(ours).is_err());
    }

    #[test]
    fn a_connection_task_stays_small() {
        // Every open stream is one of these: what its await points hold is memory per
        // subscriber. Parsed headers kept across an await once made it 3.8 KB (release).
        let size = future_size(connection);
        eprintln!("connection future: {size} bytes");
        assert!(size <= 2048, "a connection's future is {size} bytes");
    }

    #[test]
    fn a_whole_stream_request_is_ours_and_its_length_is_its_head() {
        let head = b"GET /orders/abc/stream?last_event_id=3 HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(b"GET /next");
        assert_eq!(classify(&bytes), Some(Head::Stream(head.len())));
        let all = b"GET /stream HTTP/1.1\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(classify(all), Some(Head::Stream(all.len())));
    }

    #[test]
    fn a_stream_request_is_its_target_query_resume_id_token_and_close() {
        let bytes = b"GET /orders/abc/stream?last_event_id=3 HTTP/1.1\r\nLast-Event-ID: 7\r\n\
            authorization: Bearer t\r\nConnection: keep-alive, Close\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Request::new(&mut headers);
        head.parse(bytes).unwrap();
        let (request, close) = stream_request(&head).unwrap();
        assert_eq!(request.target, Target::Order("abc"));
        assert_eq!(request.query, "last_event_id=3");
        assert_eq!(request.last_event_id, Some(&b"7"[..]));
        assert_eq!(request.authorization, Some(&b"Bearer t"[..]));
        assert!(close);

        let bytes = b"GET /stream HTTP/1.1\r\nConnection: keep-alive\r\n\r\n";
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
}
