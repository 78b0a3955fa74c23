//! Configuration from the environment, with flags mirroring each variable (`--help`).
use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "order-tracking",
    version,
    about = "Live order tracking over Server-Sent Events"
)]
pub struct Config {
    /// Listen address; overrides the one cargo-leptos configured (default 127.0.0.1:3000).
    #[arg(long, env = "LEPTOS_SITE_ADDR")]
    pub site_addr: Option<SocketAddr>,

    /// The store: `sqlite://<file>` (embedded; the file and its folder are created when
    /// missing) or `postgres://user:password@host:port/database`, shared by several instances.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/orders.db")]
    pub database_url: String,

    /// When set (`redis://host:port`), instances tell each other about new events over Redis
    /// pub/sub. Unset with a Postgres store: Postgres LISTEN/NOTIFY does it.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// When set, every mutating request needs `Authorization: Bearer <token>`. Unset: demo
    /// mode, open to anyone, with the home page's demo button.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Open streams above this get `503` with `Retry-After`.
    #[arg(long, env = "MAX_STREAMS", default_value_t = 10_000)]
    pub max_streams: u64,

    /// Seconds between `: keep-alive` comments on a stream that sends nothing else.
    #[arg(long, env = "KEEPALIVE_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keepalive_secs: u64,

    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info,order_tracking=debug`).
    #[arg(long = "log", env = "RUST_LOG", default_value = "info", value_parser = log_filter)]
    pub log_filter: String,
}

/// Accepts what `tracing`'s `EnvFilter` accepts, so that a typo is refused at start-up
/// rather than silently logging nothing.
fn log_filter(raw: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(raw)
        .map(|_| raw.to_owned())
        .map_err(|err| err.to_string())
}

impl Config {
    /// Demo mode: no admin token, so anyone may create orders and run simulations.
    pub fn demo_mode(&self) -> bool {
        self.admin_token.is_none()
    }
}
