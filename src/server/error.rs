//! The one error type of the HTTP layer. Every variant maps to one status code and one
//! machine-readable code ([`AppError::status_and_code`]); the body is always
//! `{"error": "<code>", "message": "<sentence>"}`.
//!
//! This is the one place an error answered to a client is logged: an internal error with its
//! cause, at error level; a client's mistake not at all (the request trace shows it at debug).
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::domain::{InvalidOrderId, TransitionError, UnknownStatus};
use crate::server::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The id in the path is not a UUID.
    #[error("the order id is not a valid UUID")]
    InvalidOrderId,
    /// A malformed query string or body; the message says what is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// No route at this path (API paths only; pages get an HTML page).
    #[error("there is nothing at this path")]
    NoRoute,
    /// A request that needs the admin token came without it, or with another one.
    #[error("this request needs the header `Authorization: Bearer <ADMIN_TOKEN>`")]
    Unauthorized,
    /// No order has this id.
    #[error("no order has this id")]
    OrderNotFound,
    /// The status is not the order's next one.
    #[error("{0}")]
    InvalidTransition(#[from] TransitionError),
    /// A simulation of this order is already under way.
    #[error("a simulation of this order is already running")]
    SimulationRunning,
    /// `MAX_SIMULATIONS` simulations are running already; sent with `Retry-After`.
    #[error("too many simulations are running; retry later")]
    TooManySimulations,
    /// A simulation of an order that is already delivered: nothing is left to simulate.
    #[error("the order is already delivered")]
    OrderDelivered,
    /// A body sent without `Content-Type: application/json`.
    #[error("the body must be JSON, sent with `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// The body is over the route's limit.
    #[error("the request body is too large: at most 16 KiB, or 256 KiB for a batch")]
    PayloadTooLarge,
    /// A batch of more than 1,000 events (`POST /api/events`).
    #[error("a batch holds at most 1000 events; send the rest in another")]
    TooManyItems,
    /// The body names a status that does not exist.
    #[error("{0}")]
    UnknownStatus(#[from] UnknownStatus),
    /// The path exists, not with this method.
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    /// The request took longer than the server allows.
    #[error("the request took too long")]
    Timeout,
    /// The client already holds `MAX_STREAMS_PER_CLIENT` streams; sent with `Retry-After`.
    #[error("this address has too many open streams; close one, or retry later")]
    TooManyClientStreams,
    /// `MAX_STREAMS` streams are already open; sent with `Retry-After`.
    #[error("too many open streams; retry later")]
    TooManyStreams,
    /// The store cannot be reached now; nothing was stored. Logged (at warn) with its cause.
    #[error("the store is unavailable; nothing was stored, retry later")]
    Unavailable(#[source] BoxError),
    /// A fault on our side; logged with its cause, never described to the client.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl AppError {
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        AppError::Internal(cause.into())
    }

    /// The status code and the machine-readable code of each variant, side by side in one
    /// match so that they cannot drift apart.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            AppError::InvalidOrderId => (S::BAD_REQUEST, "invalid_order_id"),
            AppError::BadRequest(_) => (S::BAD_REQUEST, "bad_request"),
            AppError::NoRoute => (S::NOT_FOUND, "not_found"),
            AppError::Unauthorized => (S::UNAUTHORIZED, "unauthorized"),
            AppError::OrderNotFound => (S::NOT_FOUND, "order_not_found"),
            AppError::InvalidTransition(_) => (S::CONFLICT, "invalid_transition"),
            AppError::SimulationRunning => (S::CONFLICT, "simulation_running"),
            AppError::TooManySimulations => (S::SERVICE_UNAVAILABLE, "too_many_simulations"),
            AppError::OrderDelivered => (S::CONFLICT, "order_delivered"),
            AppError::UnsupportedMediaType => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            AppError::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            AppError::TooManyItems => (S::PAYLOAD_TOO_LARGE, "too_many_items"),
            AppError::UnknownStatus(_) => (S::UNPROCESSABLE_ENTITY, "unknown_status"),
            AppError::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AppError::Timeout => (S::REQUEST_TIMEOUT, "timeout"),
            AppError::TooManyClientStreams => (S::TOO_MANY_REQUESTS, "too_many_client_streams"),
            AppError::TooManyStreams => (S::SERVICE_UNAVAILABLE, "too_many_streams"),
            AppError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable"),
            AppError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<InvalidOrderId> for AppError {
    fn from(_: InvalidOrderId) -> Self {
        AppError::InvalidOrderId
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(transition) => AppError::InvalidTransition(transition),
            err @ StoreError::Unavailable(_) => AppError::Unavailable(err.into()),
            err @ StoreError::Backend(_) => AppError::internal(err),
        }
    }
}

/// The body of every error: a machine-readable code and a sentence for people.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// What went wrong, for programs: `bad_request`, `invalid_order_id`, `unauthorized`,
    /// `order_not_found`, `invalid_transition`, `unknown_status`, `payload_too_large`,
    /// `too_many_items`, `unsupported_media_type`, `simulation_running`, `order_delivered`,
    /// `too_many_simulations`, `too_many_streams`, `too_many_client_streams`, `timeout`,
    /// `unavailable`, `not_found`, `method_not_allowed`, `internal`.
    #[schema(example = "invalid_transition")]
    pub error: &'a str,
    /// What went wrong, for people.
    pub message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            AppError::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            AppError::Unavailable(cause) => tracing::warn!(error = %cause, "store unavailable"),
            _ => {}
        }
        let (status, code) = self.status_and_code();
        let body = ErrorBody {
            error: code,
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        let extra = match self {
            AppError::TooManyStreams
            | AppError::TooManyClientStreams
            | AppError::TooManySimulations
            | AppError::Unavailable(_) => Some((header::RETRY_AFTER, "5")),
            AppError::Unauthorized => Some((header::WWW_AUTHENTICATE, "Bearer")),
            _ => None,
        };
        if let Some((name, value)) = extra {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        response
    }
}
