//! Everything that runs only on the server: where an event is stored ([`store`]), fanned out
//! ([`hub`]), published and followed ([`event_log`]), framed ([`sse`]) and streamed
//! ([`stream`]), and compacted when old ([`retention`]); where connections are accepted ([`serve`]); the demo producer ([`simulate`]); what the pages ask of it ([`pages`]); the JSON API ([`orders`], [`events`] for batches); who may do what
//! ([`auth`]); operations ([`health`], [`metrics`]); and the wiring of all of it into one axum
//! [`router`]. Each module that answers requests owns its routes and says there which
//! guards they have.
pub mod assets;
pub mod auth;
pub mod bus;
pub mod config;
pub mod edge;
pub mod error;
pub mod event_log;
pub mod events;
pub mod extract;
pub mod health;
pub mod hub;
pub mod metrics;
pub mod openapi;
pub mod orders;
pub mod pages;
pub mod retention;
pub mod serve;
pub mod simulate;
pub mod sse;
pub mod store;
pub mod stream;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use leptos::prelude::{provide_context, LeptosOptions};
use leptos_axum::{generate_route_list, AxumRouteListing, LeptosRoutes};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::app::{shell, App};
use crate::pages::ssr::Backend;
use auth::Tokens;
use config::Config;
use edge::clients::Shares;
use edge::Clients;
use error::AppError;
use event_log::EventLog;
use hub::{Hub, LocalHub};
use metrics::Metrics;
use simulate::Simulations;
use store::StoreError;

/// What every handler and server function can reach. Cloned for every request, so it is one
/// `Arc` (a clone of the parts themselves showed up in profiles).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub leptos_options: LeptosOptions,
    pub event_log: EventLog,
    pub simulations: Simulations,
    pub config: Arc<Config>,
    /// The admin tokens accepted now (re-read on `SIGHUP` when they come from a file).
    pub tokens: Tokens,
    /// What each client holds, against its share.
    pub clients: Arc<Clients>,
    /// Cancelled on SIGTERM/SIGINT: open streams end so the server can exit.
    pub shutdown: CancellationToken,
    /// Ticks every `KEEPALIVE_SECS`: one timer shared by every stream.
    pub keepalive: watch::Receiver<()>,
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong; the sentence names it and says how to mend it.
    #[error("{0}")]
    Config(String),
    /// The store (or the bus) cannot be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
}

impl AppState {
    /// Checks the settings that `clap` cannot (tokens, shares), opens the store named by
    /// `config`, connects the bus between instances when there is one, and starts the
    /// shared keep-alive tick.
    pub async fn open(leptos_options: LeptosOptions, config: Config) -> Result<Self, StartError> {
        let tokens = Tokens::configured(
            config.admin_token.as_deref(),
            config.admin_token_file.as_deref(),
        )
        .map_err(StartError::Config)?;
        let descriptors = edge::descriptors::limit().map_err(|err| {
            StartError::Config(format!("cannot read the descriptor limit: {err}"))
        })?;
        let shares = Shares::resolve(&config.limits, config.max_streams, descriptors)
            .map_err(StartError::Config)?;
        let store = store::open(&config.database_url).await?;
        let shutdown = CancellationToken::new();
        let bus = bus::from_config(config.redis_url.as_deref(), &config.database_url)
            .map_err(StoreError::backend)?;
        let metrics = Arc::new(Metrics::new(bus.is_some()));
        let hub: Arc<dyn Hub> = match bus {
            Some(bus) => {
                bus::BusHub::start(bus, store.clone(), metrics.clone(), shutdown.clone()).await?
            }
            None => Arc::new(LocalHub::default()),
        };
        let keepalive =
            keepalive_tick(Duration::from_secs(config.keepalive_secs), shutdown.clone());
        retention::start(
            store.clone(),
            config.retention.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        let clients = Arc::new(Clients::new(
            shares,
            config.limits.trusted_proxies.clone(),
            metrics.clone(),
        ));
        Ok(Self(Arc::new(Shared {
            leptos_options,
            event_log: EventLog::new(store, hub, metrics).with_retention(&config.retention),
            tokens,
            clients,
            simulations: Simulations::default(),
            config: Arc::new(config),
            shutdown,
            keepalive,
        })))
    }
}

fn keepalive_tick(period: Duration, shutdown: CancellationToken) -> watch::Receiver<()> {
    let (tick, receiver) = watch::channel(());
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => tick.send_replace(()),
            };
        }
    });
    receiver
}

/// How long an ordinary request may take, once its head has come; streams and waiting
/// simulations are exempt.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Middleware: answers `408` when the request takes longer than [`REQUEST_TIMEOUT`]. Modules
/// put it on the routes that must end soon.
pub async fn with_timeout(request: Request, next: Next) -> Result<Response, AppError> {
    tokio::time::timeout(REQUEST_TIMEOUT, next.run(request))
        .await
        .map_err(|_| AppError::Timeout)
}

/// The pages' routes, generated once per process. Generating them runs the app with resource
/// loading suppressed by a process-global flag (leptos_server 0.8), so a page rendered on
/// another thread meanwhile would wait forever for its data (leptos-rs/leptos#4773). The
/// server builds one router before it serves, but tests build one each, in parallel.
fn page_routes() -> Vec<AxumRouteListing> {
    static ROUTES: OnceLock<Vec<AxumRouteListing>> = OnceLock::new();
    ROUTES.get_or_init(|| generate_route_list(App)).clone()
}

/// The whole application: pages, server functions, streams, the API and operations routes.
pub fn router(state: AppState) -> Router {
    let pages = page_routes();
    Router::new()
        .merge(orders::routes())
        .merge(events::routes())
        .merge(simulate::routes())
        .merge(stream::routes())
        .merge(health::routes())
        .merge(openapi::routes())
        .route("/api/{*rest}", any(|| async { AppError::NoRoute }))
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(orders::MAX_BODY_BYTES))
        // Failures are logged where their cause is known (AppError); here only at debug.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        // The pages reach the server only through `Backend` (see `pages`).
        .leptos_routes_with_context(
            &state,
            pages,
            {
                let backend: Arc<dyn Backend> = Arc::new(state.clone());
                move || provide_context(backend.clone())
            },
            {
                let options = state.leptos_options.clone();
                move || shell(options.clone())
            },
        )
        .fallback(assets::static_file)
        .with_state(state)
}
