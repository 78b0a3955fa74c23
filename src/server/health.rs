//! `GET /healthz` and `GET /metrics`: how the process is doing, for its operator.
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::server::error::AppError;
use crate::server::{with_timeout, AppState};

/// Public, each under the ordinary request timeout.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn(with_timeout))
}

/// `200 ok` when the store answers, `503` otherwise.
pub async fn healthz(State(state): State<AppState>) -> Result<&'static str, AppError> {
    match state.event_log.ping().await {
        Ok(()) => Ok("ok"),
        Err(err) => {
            tracing::warn!(error = %err, "health check failed");
            Err(AppError::Unavailable)
        }
    }
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.event_log.metrics().render(),
    )
}
