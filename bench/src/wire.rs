//! The little HTTP/1.1 the benchmark needs, over plain tokio sockets: keep-alive requests for
//! publishing, and a streaming scan of SSE bodies that finds each event's status without
//! allocating per event.
use std::io;
use std::net::SocketAddr;

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const STATUSES: [&str; 6] = [
    "Created",
    "PaymentConfirmed",
    "Packed",
    "Shipped",
    "OutForDelivery",
    "Delivered",
];

fn status_index(name: &[u8]) -> Option<usize> {
    STATUSES.iter().position(|s| s.as_bytes() == name)
}

/// A keep-alive connection for plain requests.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends one request and reads the whole response; returns its status and body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        json: Option<&str>,
    ) -> io::Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected");
        let body = json.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body.as_bytes());
        if let Err(err) = stream.write_all(&request).await {
            self.stream = None;
            return Err(err);
        }
        self.buf.clear();
        let result = read_response(stream, &mut self.buf).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}

async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<(u16, Vec<u8>)> {
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(end) = memmem::find(buf, b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or(io::ErrorKind::InvalidData)?;
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    let mut body: Vec<u8> = buf[header_end..].to_vec();
    if let Some(length) = length {
        while body.len() < length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(length);
        Ok((status, body))
    } else if chunked {
        while memmem::find(&body, b"0\r\n\r\n").is_none() {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Ok((status, body))
    } else {
        Ok((status, body))
    }
}

/// Opens an SSE request; returns the stream positioned after the response head, the bytes
/// of the body already read, and the status.
pub async fn open_stream(addr: SocketAddr, path: &str) -> io::Result<(TcpStream, u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = memmem::find(&buf, b"\r\n\r\n") {
            let status = std::str::from_utf8(&buf[9..12])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let rest = buf[end + 4..].to_vec();
            return Ok((stream, status, rest));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

const PATTERN: &[u8] = b"\"status\":\"";

/// Finds `"status":"<name>"` in a byte stream that arrives in arbitrary pieces.
#[derive(Default)]
pub struct Scanner {
    pending: Vec<u8>,
}

impl Scanner {
    pub fn feed(&mut self, data: &[u8], mut on_status: impl FnMut(usize)) {
        self.pending.extend_from_slice(data);
        let finder = memmem::Finder::new(PATTERN);
        let mut pos = 0;
        let mut keep_from = None;
        while let Some(found) = finder.find(&self.pending[pos..]) {
            let start = pos + found + PATTERN.len();
            match memchr::memchr(b'"', &self.pending[start..]) {
                Some(end) => {
                    if let Some(index) = status_index(&self.pending[start..start + end]) {
                        on_status(index);
                    }
                    pos = start + end + 1;
                }
                None => {
                    keep_from = Some(pos + found);
                    break;
                }
            }
        }
        let keep_from = keep_from
            .unwrap_or_else(|| pos.max(self.pending.len().saturating_sub(PATTERN.len() - 1)));
        self.pending.drain(..keep_from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_statuses_split_anywhere() {
        let text = b"id: 1\nevent: order-update\ndata: {\"orderId\":\"x\",\"status\":\"Created\",\"t\":1}\n\n: keep-alive\n\nid: 2\ndata: {\"status\":\"Packed\"}\n\n";
        for split in 0..text.len() {
            let mut scanner = Scanner::default();
            let mut seen = Vec::new();
            scanner.feed(&text[..split], |i| seen.push(i));
            scanner.feed(&text[split..], |i| seen.push(i));
            assert_eq!(seen, [0, 2], "split at {split}");
        }
    }
}
