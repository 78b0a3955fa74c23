//! Configuration from the environment, with flags mirroring each variable (`--help`).
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use crate::server::auth;
use crate::server::edge::clients::ClientLimits;
use crate::server::edge::ConnectionPolicy;
use crate::server::retention::Retention;

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
    /// mode, open to anyone, with the home page's demo button. Set but empty or blank: the
    /// server refuses to start.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, value_parser = token)]
    pub admin_token: Option<String>,

    /// A file of tokens, one a line, each accepted as ADMIN_TOKEN would be (the systemd and
    /// Kubernetes secrets convention); `SIGHUP` re-reads it, open streams stay open.
    #[arg(long, env = "ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

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

    #[command(flatten)]
    pub policy: ConnectionPolicy,

    #[command(flatten)]
    pub limits: ClientLimits,

    #[command(flatten)]
    pub retention: Retention,
}

fn token(raw: &str) -> Result<String, String> {
    auth::non_blank(raw).map(str::to_owned)
}

/// Accepts what `tracing`'s `EnvFilter` accepts, so that a typo is refused at start-up
/// rather than silently logging nothing.
fn log_filter(raw: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(raw)
        .map(|_| raw.to_owned())
        .map_err(|err| err.to_string())
}

impl Config {
    /// The configuration of this process: its flags, then its environment. Refuses a
    /// variable that is set but blank, naming it: `clap` would take it as unset and use the
    /// default, so `ADMIN_TOKEN=${TOKEN}` with `TOKEN` unset would run the server open.
    pub fn load() -> Result<Config, clap::Error> {
        let config = Config::try_parse()?;
        if let Some(name) = blank_variable(|name| std::env::var_os(name)) {
            let message = if name == "ADMIN_TOKEN" {
                token("").unwrap_err()
            } else {
                format!("{name} is set but empty: give it a value, or unset it for the default")
            };
            return Err(Config::command().error(clap::error::ErrorKind::InvalidValue, message));
        }
        Ok(config)
    }
}

/// The first of our variables that `var` says is set to nothing but blanks.
fn blank_variable(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<String> {
    let command = Config::command();
    let blank = command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .filter_map(|name| name.to_str())
        .find(|name| var(name).is_some_and(|value| value.to_string_lossy().trim().is_empty()))
        .map(str::to_owned);
    blank
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_variable_of_ours_is_named() {
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                set.iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.into())
            }
        };
        assert_eq!(
            blank_variable(env(&[("ADMIN_TOKEN", "")])).as_deref(),
            Some("ADMIN_TOKEN")
        );
        assert_eq!(
            blank_variable(env(&[("MAX_STREAMS", " ")])).as_deref(),
            Some("MAX_STREAMS")
        );
        assert_eq!(
            blank_variable(env(&[("TRUSTED_PROXIES", "")])).as_deref(),
            Some("TRUSTED_PROXIES")
        );
        assert_eq!(
            blank_variable(env(&[("ADMIN_TOKEN", "t"), ("OTHER", "")])),
            None
        );
    }

    #[test]
    fn every_setting_has_a_flag_and_a_variable() {
        let command = Config::command();
        for arg in command.get_arguments() {
            if arg.get_id() == "help" || arg.get_id() == "version" {
                continue;
            }
            assert!(arg.get_long().is_some(), "{:?}", arg.get_id());
            assert!(arg.get_env().is_some(), "{:?}", arg.get_id());
        }
        let flag = Config::try_parse_from(["x", "--admin-token", "  "]).unwrap_err();
        assert!(
            flag.to_string().contains("ADMIN_TOKEN is set but empty"),
            "{flag}"
        );
    }
}
