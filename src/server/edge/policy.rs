//! The connection policy: one set of time and size bounds, applied to both paths.
use std::time::Duration;

use clap::Args;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

/// How long and how large the parts of a connection may be. Each bound is configurable
/// (spec §7, §13); the defaults are those of the table in the README's security section.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct ConnectionPolicy {
    /// Seconds from connecting until the whole first request head has arrived (slow or
    /// silent clients included); past it the connection is closed.
    #[arg(long = "head-timeout-secs", env = "HEAD_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub head_timeout_secs: u64,

    /// Seconds a kept-alive connection may wait, after an answer, until the whole next
    /// request head has arrived; past it the connection is closed.
    #[arg(long = "idle-timeout-secs", env = "IDLE_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout_secs: u64,

    /// Seconds a write may make no progress (a client that stopped reading) before its
    /// connection is dropped; a stream's client resumes with `Last-Event-ID`.
    #[arg(long = "write-timeout-secs", env = "WRITE_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub write_timeout_secs: u64,

    /// The largest request head (request line and headers), in bytes; a larger one gets
    /// `431`. At least 8192 (hyper's smallest buffer).
    #[arg(long = "max-head-bytes", env = "MAX_HEAD_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u64).range(8192..=1024 * 1024))]
    pub max_head_bytes: u64,
}

impl Default for ConnectionPolicy {
    fn default() -> Self {
        Self {
            head_timeout_secs: 10,
            idle_timeout_secs: 30,
            write_timeout_secs: 30,
            max_head_bytes: 16 * 1024,
        }
    }
}

/// The most HTTP/2 streams (requests) one connection may have open at once.
pub const MAX_CONCURRENT_H2_STREAMS: u32 = 100;
/// How often an idle HTTP/2 connection is pinged; a ping unanswered for as long closes it.
pub const H2_KEEPALIVE: Duration = Duration::from_secs(20);

impl ConnectionPolicy {
    pub fn head_timeout(&self) -> Duration {
        Duration::from_secs(self.head_timeout_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }

    pub fn max_head(&self) -> usize {
        // At most 1 MiB, by its parser.
        self.max_head_bytes as usize
    }

    /// hyper's side of the policy. Without a timer hyper's header timeout is silently off,
    /// so it gets one. Its header timeout runs from the moment it waits for a head, so it
    /// is the idle bound (or the head bound, if that is the longer: it must never cut a
    /// first head short); the first head's bound is the accept loop's
    /// ([`crate::server::serve`]), from the moment of connecting.
    pub fn hyper_builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.idle_timeout().max(self.head_timeout()))
            // Its read buffer is the head's bound: a head not whole when the buffer is full
            // gets `431` and a close.
            .max_buf_size(self.max_head())
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEPALIVE)
            .keep_alive_timeout(H2_KEEPALIVE)
            .max_concurrent_streams(MAX_CONCURRENT_H2_STREAMS)
            .max_header_list_size(self.max_head() as u32);
        builder
    }
}
