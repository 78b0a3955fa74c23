//! The one error type of the HTTP layer. Every variant maps to one status code and one
//! machine-readable code; the body is always `{"error": "<code>", "message": "<sentence>"}`.
//! Internal errors are logged with their cause and shown to clients only as a generic sentence.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::domain::{InvalidOrderId, TransitionError, UnknownStatus};
use crate::server::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// `400 invalid_order_id`: the id in the path is not a UUID.
    #[error("the order id is not a valid UUID")]
    InvalidOrderId,
    /// `400 bad_request`: a malformed query string or body; the message says what is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// `404 not_found`: no route at this path (API paths only; pages get an HTML page).
    #[error("there is nothing at this path")]
    NoRoute,
    /// `401 unauthorized`: a mutating request without the right bearer token.
    #[error("this request needs the header `Authorization: Bearer <ADMIN_TOKEN>`")]
    Unauthorized,
    /// `404 order_not_found`: no order has this id.
    #[error("no order has this id")]
    OrderNotFound,
    /// `409 invalid_transition`: the status is not the order's next one.
    #[error("{0}")]
    InvalidTransition(#[from] TransitionError),
    /// `409 simulation_running`: a simulation of this order is already under way.
    #[error("a simulation of this order is already running")]
    SimulationRunning,
    /// `409 order_delivered`: the order is already delivered; nothing is left to simulate.
    #[error("the order is already delivered")]
    AlreadyDelivered,
    /// `415 unsupported_media_type`: a body sent without `Content-Type: application/json`.
    #[error("the body must be JSON, sent with `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// `413 payload_too_large`: the body is over the limit.
    #[error("the request body is larger than 16 KiB")]
    PayloadTooLarge,
    /// `422 unknown_status`: the body names a status that does not exist.
    #[error("{0}")]
    UnknownStatus(#[from] UnknownStatus),
    /// `405 method_not_allowed`: the path exists, not with this method.
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    /// `408 timeout`: the request took longer than the server allows.
    #[error("the request took too long")]
    Timeout,
    /// `503 too_many_streams`: `MAX_STREAMS` streams are already open; retry later.
    #[error("too many open streams; retry later")]
    TooManyStreams,
    /// `503 unavailable`: the store does not answer (health check).
    #[error("the store is unavailable")]
    Unavailable,
    /// `500 internal`: a fault on our side; logged, never described to the client.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl AppError {
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        AppError::Internal(cause.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::InvalidOrderId | AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::OrderNotFound | AppError::NoRoute => StatusCode::NOT_FOUND,
            AppError::InvalidTransition(_)
            | AppError::SimulationRunning
            | AppError::AlreadyDelivered => StatusCode::CONFLICT,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::UnknownStatus(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Timeout => StatusCode::REQUEST_TIMEOUT,
            AppError::TooManyStreams | AppError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::InvalidOrderId => "invalid_order_id",
            AppError::BadRequest(_) => "bad_request",
            AppError::Unauthorized => "unauthorized",
            AppError::OrderNotFound => "order_not_found",
            AppError::NoRoute => "not_found",
            AppError::InvalidTransition(_) => "invalid_transition",
            AppError::SimulationRunning => "simulation_running",
            AppError::AlreadyDelivered => "order_delivered",
            AppError::PayloadTooLarge => "payload_too_large",
            AppError::UnsupportedMediaType => "unsupported_media_type",
            AppError::UnknownStatus(_) => "unknown_status",
            AppError::MethodNotAllowed => "method_not_allowed",
            AppError::Timeout => "timeout",
            AppError::TooManyStreams => "too_many_streams",
            AppError::Unavailable => "unavailable",
            AppError::Internal(_) => "internal",
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
            StoreError::Backend(cause) => AppError::internal(cause),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::Internal(cause) = &self {
            tracing::error!(error = %cause, "internal error");
        }
        let status = self.status();
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, AppError::TooManyStreams) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
