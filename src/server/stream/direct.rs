//! A stream written straight to its socket, as an HTTP/1.1 response with chunked framing.
//!
//! Why not through hyper: an open stream is most of what this server holds, and hyper keeps
//! an 8 KiB read buffer and an 8 KiB write buffer for every connection it serves, for as
//! long as it serves it (`INIT_BUFFER_SIZE`, not configurable). Here a waiting stream is its
//! socket, its [`Frames`] and this writer's state: no buffer at all. Frames are shared
//! [`Bytes`] written with one `writev` (size line, frame, CRLF), and whatever is ready at
//! once (the stored history on a resume, the end after `Delivered`) goes in the same call.
//!
//! The response is chunked, not delimited by closing the connection, so that a client can
//! tell a stream that ended from one that broke. It says `Connection: close`, and the
//! connection closes after it: a stream's connection is rarely of use again (EventSource
//! reconnects three seconds later), and a closed connection lets the accept loop leave the
//! socket's epoll registration at once (see [`crate::server::serve`]). A `204` or an error
//! keeps the connection for the next request, unless the client asked otherwise.
use std::future::Future;
use std::io::{self, IoSlice, Write as _};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::FutureExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{Frames, Opened, HEADERS};
use crate::server::error::AppError;
use crate::server::AppState;

/// The most frames one `writev` carries.
const BATCH: usize = 4;
/// The chunk that ends a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes what a stream request opened on `socket`: the stream, `204`, or the error as
/// JSON. `close` is the client's `Connection: close`; a write that makes no progress for
/// the write timeout fails (a client that stopped reading). Whether the connection can
/// serve another request: never after a stream.
///
/// Not an `async fn`: an async fn keeps each argument twice for as long as it runs (as an
/// argument, and as the local the body moves it into; rust-lang/rust#62958), and `opened`
/// holds the stream's frames, so every open stream would carry a second copy of them.
/// An `async move` block keeps what it captures once.
pub fn respond<'a>(
    socket: &'a mut TcpStream,
    mut opened: Result<Opened, AppError>,
    close: bool,
    state: &'a AppState,
) -> impl Future<Output = bool> + 'a {
    let writer = Writer {
        stall: state.config.policy.write_timeout(),
        shutdown: &state.shutdown,
    };
    async move {
        let written = match opened {
            Ok(Opened::Stream(ref mut frames)) => {
                stream(socket, frames, writer).await;
                return false;
            }
            // Boxed: an error's response and its body are held only while it is written,
            // not beside every stream.
            Ok(Opened::NoContent) => Box::pin(no_content(socket, close, writer)).await,
            Err(err) => Box::pin(write_response(socket, err.into_response(), close, writer)).await,
        };
        if written
            .as_ref()
            .is_err_and(|err| err.kind() == io::ErrorKind::TimedOut)
        {
            state.event_log.metrics().timed_out("write");
        }
        written.is_ok() && !close
    }
}

/// How this connection's writes are bounded: each may wait at most `stall` for the socket
/// to take more, and none outlasts the server's shutdown.
#[derive(Clone, Copy)]
struct Writer<'a> {
    stall: Duration,
    shutdown: &'a CancellationToken,
}

impl Writer<'_> {
    /// Writes what `parts` gives, in order, in as many `writev`s as the socket takes. Fails
    /// with `TimedOut` when the socket takes nothing for `stall`. (`parts` is a function
    /// so that only it, not the slices of each try, is held while the socket is full.)
    async fn write_all<'p, I>(
        &self,
        socket: &mut TcpStream,
        parts: impl Fn() -> I,
    ) -> io::Result<()>
    where
        I: Iterator<Item = &'p [u8]>,
    {
        let total: usize = parts().map(<[u8]>::len).sum();
        let mut written = 0;
        while written < total {
            let attempt = {
                let mut slices = [IoSlice::new(&[]); 2 + 3 * BATCH];
                let mut count = 0;
                // The parts already written are skipped whole, the one in progress in part.
                let mut skip = written;
                for part in parts() {
                    if skip >= part.len() {
                        skip -= part.len();
                    } else if count < slices.len() {
                        slices[count] = IoSlice::new(&part[skip..]);
                        count += 1;
                        skip = 0;
                    }
                }
                socket.try_write_vectored(&slices[..count])
            };
            match attempt {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                // Boxed: the wait is rare (a full socket), and its timer would otherwise
                // make every stream's task larger.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    Box::pin(self.writable(socket)).await?
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    async fn writable(&self, socket: &TcpStream) -> io::Result<()> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(io::ErrorKind::Interrupted.into()),
            writable = tokio::time::timeout(self.stall, socket.writable()) => {
                writable.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
            }
        }
    }
}

/// A response head: status line, `headers`, `Date` and, when asked, `Connection: close`.
fn head(status: &str, headers: &[(&str, &str)], close: bool) -> String {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ndate: {}\r\n",
        httpdate::fmt_http_date(std::time::SystemTime::now())
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

/// Writes `204 No Content`.
async fn no_content(socket: &mut TcpStream, close: bool, writer: Writer<'_>) -> io::Result<()> {
    let head = head("204 No Content", &[], close);
    writer
        .write_all(socket, || [head.as_bytes()].into_iter())
        .await
}

/// Writes a whole response (an error's JSON) with its length.
async fn write_response(
    socket: &mut TcpStream,
    response: Response,
    close: bool,
    writer: Writer<'_>,
) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    // An error body is a few hundred bytes of JSON, already in memory.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(io::Error::other)?;
    let status = format!(
        "{} {}",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or_default()
    );
    let length = body.len().to_string();
    let mut headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    headers.push(("content-length", &length));
    let head = head(&status, &headers, close);
    writer
        .write_all(socket, || [head.as_bytes(), &body[..]].into_iter())
        .await
}

/// Writes the stream until it ends, the client goes away, or a write stalls.
async fn stream(socket: &mut TcpStream, frames: &mut Frames, writer: Writer<'_>) {
    // Each write is a whole frame or more: sent now, not held back for the next one.
    let _ = socket.set_nodelay(true);
    // The head goes out with the first frame (the `retry`, ready at once).
    let mut head = Some(stream_head());
    loop {
        let first = tokio::select! {
            biased;
            frame = frames.next() => frame,
            _ = socket.readable() => {
                if client_left(socket) {
                    return;
                }
                continue;
            }
        };
        // Made after the wait, so that a waiting stream holds no batch.
        let mut batch = Batch {
            head: head.take(),
            ..Batch::default()
        };
        batch.push(first);
        while !batch.is_full() && !batch.ended {
            match frames.next().now_or_never() {
                Some(frame) => batch.push(frame),
                None => break,
            }
        }
        match batch.write(socket, writer).await {
            Err(err) if err.kind() == io::ErrorKind::TimedOut => {
                frames.stalled();
                return;
            }
            Err(_) => return,
            Ok(()) if batch.ended => return,
            Ok(()) => {}
        }
    }
}

/// A stream's response head.
fn stream_head() -> Bytes {
    let mut headers = HEADERS.to_vec();
    headers.push(("transfer-encoding", "chunked"));
    Bytes::from(head("200 OK", &headers, true))
}

/// Reads what the client sent while its stream is open: nothing, or its end. Anything else
/// (a next request, sent early) is dropped: the connection closes after the stream.
fn client_left(socket: &TcpStream) -> bool {
    drained(|bytes| socket.try_read(bytes))
}

/// Reads and drops what a non-blocking socket has now, through `read`; whether its client
/// has closed (or the socket failed). Both the stream writer and the closer's lingering
/// close read this way.
pub(crate) fn drained(mut read: impl FnMut(&mut [u8]) -> io::Result<usize>) -> bool {
    let mut bytes = [0u8; 4096];
    loop {
        match read(&mut bytes) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) => return err.kind() != io::ErrorKind::WouldBlock,
        }
    }
}

/// What one `writev` carries: the response head (first time only), up to [`BATCH`] frames
/// as chunks, and the last chunk when the stream is over.
#[derive(Default)]
struct Batch {
    head: Option<Bytes>,
    frames: [Bytes; BATCH],
    len: usize,
    ended: bool,
}

impl Batch {
    fn push(&mut self, frame: Option<Bytes>) {
        match frame {
            Some(frame) => {
                self.frames[self.len] = frame;
                self.len += 1;
            }
            None => self.ended = true,
        }
    }

    fn is_full(&self) -> bool {
        self.len == BATCH
    }

    /// Its bytes in order: the head, each frame as a chunk (size line, frame, CRLF), and the
    /// last chunk. `sizes` are the frames' size lines.
    fn parts<'a>(&'a self, sizes: &'a [SizeLine]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let chunks = sizes
            .iter()
            .zip(&self.frames[..self.len])
            .flat_map(|(size, frame)| [size.as_bytes(), &frame[..], b"\r\n"]);
        self.head
            .as_deref()
            .into_iter()
            .chain(chunks)
            .chain(self.ended.then_some(LAST_CHUNK))
    }

    /// Writes it all, however many calls the socket takes.
    async fn write(&self, socket: &mut TcpStream, writer: Writer<'_>) -> io::Result<()> {
        let mut sizes = [SizeLine::EMPTY; BATCH];
        for (size, frame) in sizes.iter_mut().zip(&self.frames[..self.len]) {
            *size = SizeLine::of(frame.len())?;
        }
        let sizes = &sizes[..self.len];
        writer.write_all(socket, || self.parts(sizes)).await
    }
}

/// A chunk's size line: the length in hex, then CRLF.
#[derive(Clone, Copy)]
struct SizeLine {
    bytes: [u8; 10],
    len: usize,
}

impl SizeLine {
    const EMPTY: SizeLine = SizeLine {
        bytes: [0; 10],
        len: 0,
    };

    /// Fails for a size over eight hex digits (4 GiB), which no frame comes near.
    fn of(size: usize) -> io::Result<Self> {
        let mut bytes = [0u8; 10];
        let mut rest = &mut bytes[..];
        write!(rest, "{size:x}\r\n")?;
        let len = 10 - rest.len();
        Ok(Self { bytes, len })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_has_its_status_headers_and_date_and_closes_when_asked() {
        let open = head("200 OK", &[("a", "b")], false);
        assert!(open.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{open}");
        assert!(open.ends_with("\r\na: b\r\n\r\n"), "{open}");
        assert!(!open.contains("connection"));
        let closing = head("204 No Content", &[], true);
        assert!(
            closing.ends_with("\r\nconnection: close\r\n\r\n"),
            "{closing}"
        );
    }

    /// The batch's bytes, written to a real socket pair in as many calls as it takes.
    async fn written(batch: Batch) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut out = Vec::new();
        let shutdown = CancellationToken::new();
        let write = async move {
            let writer = Writer {
                stall: Duration::from_secs(10),
                shutdown: &shutdown,
            };
            batch.write(&mut server, writer).await.unwrap();
        };
        let (_, read) = tokio::join!(write, client.read_to_end(&mut out));
        read.unwrap();
        out
    }

    #[tokio::test]
    async fn a_batch_is_its_head_then_each_frame_as_a_chunk_then_the_end() {
        let mut batch = Batch {
            head: Some(Bytes::from_static(b"HEAD\r\n\r\n")),
            ..Batch::default()
        };
        batch.push(Some(Bytes::from_static(b"retry: 3000\n\n")));
        batch.push(Some(Bytes::from(vec![b'x'; 300])));
        batch.push(None);
        let mut expected = b"HEAD\r\n\r\nd\r\nretry: 3000\n\n\r\n12c\r\n".to_vec();
        expected.extend_from_slice(&[b'x'; 300]);
        expected.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(written(batch).await, expected);
    }

    #[tokio::test]
    async fn a_write_the_client_does_not_read_fails_after_its_stall_bound() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let shutdown = CancellationToken::new();
        let writer = Writer {
            stall: Duration::from_millis(200),
            shutdown: &shutdown,
        };
        // Far more than the socket buffers hold; the client reads none of it.
        let big = vec![b'x'; 64 << 20];
        let started = std::time::Instant::now();
        let err = writer
            .write_all(&mut server, || [&big[..]].into_iter())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        // And a shutdown ends a write that waits.
        let writer = Writer {
            stall: Duration::from_secs(600),
            shutdown: &shutdown,
        };
        shutdown.cancel();
        let err = writer
            .write_all(&mut server, || [&big[..]].into_iter())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_socket_takes_at_once_is_written_whole() {
        // Four 2 MiB frames: far more than one writev moves, so writes resume mid-part.
        let mut batch = Batch::default();
        for byte in [b'a', b'b', b'c', b'd'] {
            batch.push(Some(Bytes::from(vec![byte; 2 << 20])));
        }
        let out = written(batch).await;
        let mut expected = Vec::new();
        for byte in [b'a', b'b', b'c', b'd'] {
            expected.extend_from_slice(b"200000\r\n");
            expected.extend_from_slice(&vec![byte; 2 << 20]);
            expected.extend_from_slice(b"\r\n");
        }
        assert_eq!(out.len(), expected.len());
        assert!(out == expected);
    }
}
