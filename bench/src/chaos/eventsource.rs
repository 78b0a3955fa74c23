//! A customer: an EventSource as the WHATWG HTML standard defines it (§9.2), over a plain
//! socket from its own loopback address, with the page's own reopening around it.
//!
//! - The stream is parsed line by line (`\n`, `\r\n` or `\r`); `id:` sets the last event id
//!   (kept for the next connection, sent as `Last-Event-ID`), `retry:` the reconnection
//!   delay, `data:` lines make an event dispatched on the blank line; comments are ignored.
//! - A connection that ends or breaks is reopened after the reconnection delay with the last
//!   event id. `204` stops for good. Any other answer than `200 text/event-stream` "fails the
//!   connection" (the browser does not retry): the page then reopens it after 3 to 6 s, as our
//!   pages do (spec §13).
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use super::checker::{At, Received};

/// The browser's default reconnection delay before a `retry:` says otherwise.
const DEFAULT_RETRY: Duration = Duration::from_secs(3);

/// Why a connection ended.
enum Ended {
    /// `204`: the stream is over for good.
    NoContent,
    /// Closed, broken, or failed: try again after a delay.
    Again(Duration),
    /// The run is over.
    Stopped,
}

/// How an event is named for the checker: from its `id:` and its `data:` (ours: the id
/// itself; Nchan's ids are its own, so its events are named by what their data says).
pub type Key = fn(Option<&str>, &str) -> Option<i64>;

/// One customer's EventSource.
pub struct EventSource {
    pub path: String,
    /// The instances to connect to: the first, or the next when one refuses (as a proxy
    /// skips a dead upstream); through nginx, just nginx.
    pub upstreams: Vec<SocketAddr>,
    upstream: usize,
    pub key: Key,
    pub source: IpAddr,
    pub epoch: Instant,
    pub last_event_id: Option<String>,
    pub retry: Duration,
    pub received: Vec<Received>,
    pub connections: usize,
    /// Events it could not name (their id or data were not what was sent): each a finding.
    pub unreadable: Vec<String>,
}

impl EventSource {
    pub fn new(
        path: String,
        source: IpAddr,
        upstreams: Vec<SocketAddr>,
        key: Key,
        epoch: Instant,
    ) -> Self {
        Self {
            path,
            upstreams,
            upstream: 0,
            key,
            source,
            epoch,
            last_event_id: None,
            retry: DEFAULT_RETRY,
            received: Vec::new(),
            connections: 0,
            unreadable: Vec::new(),
        }
    }

    fn now(&self) -> At {
        self.epoch.elapsed().as_secs_f64()
    }

    /// Runs until `204` or `stop`.
    pub async fn run(
        &mut self,
        stop: tokio::sync::watch::Receiver<bool>,
        page_delay: impl Fn() -> Duration,
    ) {
        loop {
            if *stop.borrow() {
                return;
            }
            let ended = self.connect_once(stop.clone(), &page_delay).await;
            let delay = match ended {
                Ended::NoContent | Ended::Stopped => return,
                Ended::Again(delay) => delay,
            };
            let mut stop = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn connect_once(
        &mut self,
        mut stop: tokio::sync::watch::Receiver<bool>,
        page_delay: &impl Fn() -> Duration,
    ) -> Ended {
        let mut stream = match self.open().await {
            Ok(stream) => stream,
            Err(_) => {
                // Refused or unreachable: the next upstream, at once when there is another.
                self.upstream = (self.upstream + 1) % self.upstreams.len();
                let again = if self.upstreams.len() > 1 {
                    Duration::from_millis(50)
                } else {
                    self.retry
                };
                return Ended::Again(again);
            }
        };
        let mut head = Vec::new();
        let mut chunk = [0u8; 8192];
        // The head.
        let body_start = loop {
            if let Some(end) = memmem::find(&head, b"\r\n\r\n") {
                break end + 4;
            }
            match read_or_stop(&mut stream, &mut chunk, &mut stop).await {
                Read::Bytes(n) => head.extend_from_slice(&chunk[..n]),
                Read::Closed => return Ended::Again(self.retry),
                Read::Stopped => return Ended::Stopped,
            }
        };
        let text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
        let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        if status == 204 {
            return Ended::NoContent;
        }
        if status != 200 || !text.contains("content-type: text/event-stream") {
            // The browser fails the connection; the page reopens it.
            return Ended::Again(page_delay());
        }
        self.connections += 1;
        let opened_at = self.now();
        let chunked = text.contains("transfer-encoding: chunked");
        let mut dechunk = Dechunk::default();
        let mut parser = Parser::default();
        let mut body = head.split_off(body_start);
        loop {
            let data = if chunked {
                match dechunk.feed(&body) {
                    Some(data) => data,
                    None => return Ended::Again(self.retry),
                }
            } else {
                std::mem::take(&mut body)
            };
            for dispatched in parser.feed(&data) {
                match dispatched {
                    Dispatch::Retry(ms) => self.retry = Duration::from_millis(ms),
                    Dispatch::Event {
                        id,
                        data,
                        is_update,
                    } => {
                        if let Some(id) = &id {
                            self.last_event_id = Some(id.clone());
                        }
                        if is_update {
                            let key = (self.key)(id.as_deref(), &data);
                            if key.is_none() {
                                self.unreadable.push(format!("id {id:?} data {data:?}"));
                            }
                            if let Some(id) = key {
                                self.received.push(Received {
                                    id,
                                    at: self.now(),
                                    connection_opened_at: opened_at,
                                    connection: self.connections,
                                });
                            }
                        }
                    }
                }
            }
            if dechunk.ended {
                return Ended::Again(self.retry);
            }
            body.clear();
            match read_or_stop(&mut stream, &mut chunk, &mut stop).await {
                Read::Bytes(n) => body.extend_from_slice(&chunk[..n]),
                Read::Closed => return Ended::Again(self.retry),
                Read::Stopped => return Ended::Stopped,
            }
        }
    }

    async fn open(&self) -> std::io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(self.source, 0))?;
        let upstream = self.upstreams[self.upstream];
        let mut stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(upstream))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        stream.set_nodelay(true)?;
        let resume = self
            .last_event_id
            .as_ref()
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: chaos\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{resume}\r\n",
            self.path
        );
        stream.write_all(request.as_bytes()).await?;
        Ok(stream)
    }
}

/// What one read of a connection gave.
enum Read {
    Bytes(usize),
    /// Closed or broken.
    Closed,
    /// The run is over.
    Stopped,
}

/// Reads what has arrived, unless the run stops first.
async fn read_or_stop(
    stream: &mut TcpStream,
    chunk: &mut [u8],
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Read {
    tokio::select! {
        read = stream.read(chunk) => match read {
            Ok(0) | Err(_) => Read::Closed,
            Ok(n) => Read::Bytes(n),
        },
        _ = stop.wait_for(|s| *s) => Read::Stopped,
    }
}

/// Undoes HTTP/1.1 chunked framing as bytes arrive.
#[derive(Default)]
struct Dechunk {
    pending: Vec<u8>,
    /// Bytes of the current chunk still to come, and whether its CRLF is still to come.
    left: usize,
    in_chunk: bool,
    ended: bool,
}

impl Dechunk {
    /// The payload in `input` (with what was held back); `None` on a framing error.
    fn feed(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        if self.ended {
            // What follows the last chunk (its trailer's blank line) is no payload.
            return Some(Vec::new());
        }
        self.pending.extend_from_slice(input);
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            if self.in_chunk {
                let take = self.left.min(self.pending.len() - at);
                out.extend_from_slice(&self.pending[at..at + take]);
                at += take;
                self.left -= take;
                if self.left > 0 {
                    break;
                }
                if self.pending.len() - at < 2 {
                    break;
                }
                if &self.pending[at..at + 2] != b"\r\n" {
                    return None;
                }
                at += 2;
                self.in_chunk = false;
            } else {
                let Some(line_end) = memmem::find(&self.pending[at..], b"\r\n") else {
                    break;
                };
                let line = std::str::from_utf8(&self.pending[at..at + line_end]).ok()?;
                let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
                at += line_end + 2;
                if size == 0 {
                    self.ended = true;
                    break;
                }
                self.left = size;
                self.in_chunk = true;
            }
        }
        self.pending.drain(..at);
        Some(out)
    }
}

/// What the parser hands out.
#[derive(Debug, PartialEq)]
enum Dispatch {
    Retry(u64),
    /// A blank line ended an event: its `id:` if it had one, its data, and whether it is an
    /// `order-update` with data.
    Event {
        id: Option<String>,
        data: String,
        is_update: bool,
    },
}

/// The event-stream parser of the WHATWG standard, as far as this run needs it.
#[derive(Default)]
struct Parser {
    line: Vec<u8>,
    last_was_cr: bool,
    id: Option<String>,
    event: String,
    data: Option<String>,
    any_field: bool,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Dispatch> {
        let mut out = Vec::new();
        for &byte in bytes {
            if self.last_was_cr && byte == b'\n' {
                self.last_was_cr = false;
                continue;
            }
            self.last_was_cr = byte == b'\r';
            if byte == b'\n' || byte == b'\r' {
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, &mut out);
            } else {
                self.line.push(byte);
            }
        }
        out
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Dispatch>) {
        if line.is_empty() {
            if self.any_field {
                let data = self.data.take();
                out.push(Dispatch::Event {
                    id: self.id.take(),
                    is_update: data.is_some() && self.event == "order-update",
                    data: data.unwrap_or_default(),
                });
            }
            self.event.clear();
            self.data = None;
            self.any_field = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*text, ""),
        };
        match field {
            "id" if !value.contains('\0') => {
                self.id = Some(value.to_owned());
                self.any_field = true;
            }
            "event" => {
                self.event = value.to_owned();
                self.any_field = true;
            }
            "data" => {
                let data = self.data.get_or_insert_with(String::new);
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
                self.any_field = true;
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    out.push(Dispatch::Retry(ms));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_reads_retry_events_and_comments_in_any_pieces() {
        let stream = b"retry: 4200\n\n: keep-alive\n\nid: 7\r\nevent: order-update\r\ndata: {}\r\n\r\nevent: reset\ndata: {\"earliest\":3}\n\n";
        for piece in [1, 3, stream.len()] {
            let mut parser = Parser::default();
            let mut out = Vec::new();
            for part in stream.chunks(piece) {
                out.extend(parser.feed(part));
            }
            assert_eq!(
                out,
                vec![
                    Dispatch::Retry(4200),
                    Dispatch::Event {
                        id: Some("7".into()),
                        data: "{}".into(),
                        is_update: true
                    },
                    Dispatch::Event {
                        id: None,
                        data: "{\"earliest\":3}".into(),
                        is_update: false
                    },
                ],
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn chunks_are_undone_across_reads() {
        let framed = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let mut dechunk = Dechunk::default();
        let mut out = Vec::new();
        for part in framed.chunks(4) {
            out.extend(dechunk.feed(part).unwrap());
        }
        assert_eq!(out, b"hello world");
        assert!(dechunk.ended);
        assert!(Dechunk::default().feed(b"zz\r\n").is_none());
    }
}
