//! Everything that runs only on the server: where an event is stored ([`store`]), fanned out
//! ([`hub`]), published ([`event_log`]) and streamed ([`stream`]); the demo producer
//! ([`simulate`]); the JSON API ([`orders`]); operations ([`health`], [`metrics`]); and the
//! wiring of all of it into one axum [`router`].
pub mod auth;
pub mod config;
pub mod error;
pub mod event_log;
pub mod extract;
pub mod health;
pub mod hub;
pub mod metrics;
pub mod orders;
pub mod simulate;
pub mod store;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef, Request};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;
use leptos::prelude::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::app::{shell, App};
use config::Config;
use error::AppError;
use event_log::EventLog;
use metrics::Metrics;
use simulate::Simulations;
use store::{EventStore, SqliteStore, StoreError};

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
    pub log: EventLog,
    pub simulations: Simulations,
    pub config: Arc<Config>,
    /// Cancelled on SIGTERM/SIGINT: open streams end so the server can exit.
    pub shutdown: CancellationToken,
    /// Ticks every `KEEPALIVE_SECS`: one timer shared by every stream.
    pub keepalive: watch::Receiver<()>,
}

impl AppState {
    /// Opens the store named by `config` and starts the shared keep-alive tick.
    pub async fn open(leptos_options: LeptosOptions, config: Config) -> Result<Self, StoreError> {
        let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&config.database_url).await?);
        let shutdown = CancellationToken::new();
        let keepalive =
            keepalive_tick(Duration::from_secs(config.keepalive_secs), shutdown.clone());
        Ok(Self(Arc::new(Shared {
            leptos_options,
            log: EventLog::new(store, Arc::new(Metrics::default())),
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

/// How long an ordinary request may take; streams and waiting simulations are exempt.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole application: pages, server functions, streams, the API and operations routes.
pub fn router(state: AppState) -> Router {
    // Publishing: behind the admin token when one is configured.
    let publishing = Router::new()
        .route("/api/orders", post(orders::create))
        .route("/api/orders/{id}/status", post(orders::advance))
        .route_layer(from_fn(with_timeout))
        // Runs as long as its simulation when asked to wait, so it has no timeout.
        .route("/orders/{id}/simulate", post(simulate::simulate))
        .route_layer(from_fn_with_state(state.clone(), auth::require_admin));
    let reading = Router::new()
        .route("/api/orders", get(orders::list))
        .route("/api/orders/{id}", get(orders::get))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/api/{*rest}", any(|| async { AppError::NoRoute }))
        .route_layer(from_fn(with_timeout))
        // Long-lived by design: never under the timeout.
        .route("/orders/{id}/stream", get(stream::stream));
    let routes = generate_route_list(App);
    Router::new()
        .merge(publishing)
        .merge(reading)
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(orders::MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .leptos_routes(&state, routes, {
            let options = state.leptos_options.clone();
            move || shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .with_state(state)
}

async fn with_timeout(request: Request, next: Next) -> Result<Response, AppError> {
    tokio::time::timeout(REQUEST_TIMEOUT, next.run(request))
        .await
        .map_err(|_| AppError::Timeout)
}
