//! `GET /healthz` and `GET /metrics`: how the process is doing, for its operator.
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::server::hub::BusState;
use crate::server::{with_timeout, AppState};

/// Public, each under the ordinary request timeout.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn(with_timeout))
}

/// What `/healthz` answers: `{"status", "store", "bus"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`; `degraded` when only the bus is down (streams still work and catch up through
    /// the store); `down` when the store does not answer.
    pub status: &'static str,
    pub store: &'static str,
    /// `ok`, `down`, or `none` for a single instance.
    pub bus: &'static str,
}

/// `200` while the store answers (`ok`, or `degraded` when only the bus is down), `503` when
/// it does not.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "The store answers (`ok`; `degraded` when only the bus is down).", body = Health),
        (status = 503, description = "The store does not answer (`down`).", body = Health),
    )
)]
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let store_up = match state.event_log.ping().await {
        Ok(()) => true,
        Err(err) => {
            // A health check that fails is the answer, not an error of ours: logged at warn.
            tracing::warn!(error = %err, "health check: the store does not answer");
            false
        }
    };
    let bus = state.event_log.bus();
    let health = Health {
        status: match (store_up, bus) {
            (false, _) => "down",
            (true, BusState::Disconnected) => "degraded",
            (true, _) => "ok",
        },
        store: if store_up { "ok" } else { "down" },
        bus: match bus {
            BusState::None => "none",
            BusState::Connected => "ok",
            BusState::Disconnected => "down",
        },
    };
    let status = if store_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}

/// Prometheus text format.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Every figure, in Prometheus' text format.", body = String,
         content_type = "text/plain; version=0.0.4"),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.event_log.metrics().render(),
    )
}
