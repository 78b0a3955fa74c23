//! `GET /healthz` and `GET /metrics`: how the process is doing, for its operator.
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::server::error::AppError;
use crate::server::AppState;

/// `200 ok` when the store answers, `503` otherwise.
pub async fn healthz(State(state): State<AppState>) -> Result<&'static str, AppError> {
    match state.log.ping().await {
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
        state.log.metrics().render(),
    )
}
