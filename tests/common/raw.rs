//! A raw HTTP/1.1 client over a plain socket, for what a real client library would hide:
//! pipelining, trickled or malformed heads, several loopback source addresses, and whether
//! the server closes.
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{TestServer, WAIT};

/// A response as read off a raw socket: status, headers (names lower-case) and the body,
/// de-chunked.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 client connection, reading responses one after the other.
pub struct Connection {
    pub socket: TcpStream,
    pub read: Vec<u8>,
}

impl Connection {
    pub async fn open(server: &TestServer) -> Self {
        Self::to(server.base.strip_prefix("http://").unwrap()).await
    }

    /// A connection to `addr` (`host:port`).
    pub async fn to(addr: &str) -> Self {
        Self {
            socket: TcpStream::connect(addr).await.unwrap(),
            read: Vec::new(),
        }
    }

    /// A connection to `addr` from the loopback address `local` (e.g. `127.0.0.2`), so that
    /// a test can be several clients.
    pub async fn from(local: &str, addr: &str) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
        Self {
            socket: socket.connect(addr.parse().unwrap()).await.unwrap(),
            read: Vec::new(),
        }
    }

    /// Whether the server closes the connection within `limit` (end of stream or reset),
    /// rather than keep it open; what it sends meanwhile is kept.
    pub async fn closes_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut bytes = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.socket.read(&mut bytes)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.read.extend_from_slice(&bytes[..n]),
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).await.unwrap();
    }

    /// Reads more; false at the end of the connection.
    pub async fn fill(&mut self) -> bool {
        let mut bytes = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.socket.read(&mut bytes))
            .await
            .expect("the server said nothing")
            .unwrap_or(0);
        self.read.extend_from_slice(&bytes[..n]);
        n > 0
    }

    pub async fn take_line(&mut self) -> String {
        loop {
            if let Some(end) = self.read.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.read[..end].to_vec()).unwrap();
                self.read.drain(..end + 2);
                return line;
            }
            assert!(self.fill().await, "the connection ended mid-line");
        }
    }

    pub async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.read.len() < n {
            assert!(self.fill().await, "the connection ended mid-body");
        }
        self.read.drain(..n).collect()
    }

    /// The status and headers of the next response, its body left unread (a stream).
    pub async fn response_head(&mut self) -> Raw {
        let status_line = self.take_line().await;
        let status = status_line[9..12].parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let line = self.take_line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        Raw {
            status,
            headers,
            body: Vec::new(),
        }
    }

    /// The next whole response.
    pub async fn response(&mut self) -> Raw {
        let mut raw = self.response_head().await;
        self.read_body(&mut raw).await;
        raw
    }

    /// The body of a response whose head `raw` is: chunked, or as long as it says.
    pub async fn read_body(&mut self, raw: &mut Raw) {
        if raw.header("transfer-encoding") == Some("chunked") {
            loop {
                let size = usize::from_str_radix(&self.take_line().await, 16).unwrap();
                let chunk = self.take(size).await;
                assert_eq!(self.take_line().await, "", "a chunk ends with CRLF");
                if size == 0 {
                    break;
                }
                raw.body.extend_from_slice(&chunk);
            }
        } else if let Some(length) = raw.header("content-length") {
            raw.body = self.take(length.parse().unwrap()).await;
        }
    }

    /// Whether the server closes the connection without sending anything more.
    pub async fn is_closed(&mut self) -> bool {
        !self.fill().await && self.read.is_empty()
    }
}

pub fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n").into_bytes()
}
