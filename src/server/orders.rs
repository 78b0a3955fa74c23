//! The JSON API under `/api/orders`: create, list recent, get one, advance its status.
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::{parse_order_id, OrderStatus};
use crate::server::error::AppError;
use crate::server::AppState;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;
/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// `POST /api/orders`: a new order, `Created`.
pub async fn create(State(state): State<AppState>) -> Result<Response, AppError> {
    let order_id = Uuid::new_v4();
    state.log.publish(order_id, OrderStatus::Created).await?;
    let order = state
        .log
        .order(order_id)
        .await?
        .ok_or(AppError::OrderNotFound)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/orders/{order_id}"))],
        Json(order),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
}

/// `GET /api/orders?limit=N`: the most recent orders, newest first.
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let limit = query
        .ok()
        .map(|Query(q)| q.limit.unwrap_or(DEFAULT_LIMIT))
        .filter(|limit| (1..=MAX_LIMIT).contains(limit))
        .ok_or_else(|| {
            AppError::BadRequest(format!(
                "limit must be a whole number from 1 to {MAX_LIMIT}"
            ))
        })?;
    Ok(Json(state.log.recent(limit).await?).into_response())
}

/// `GET /api/orders/{id}`: the order with its events.
pub async fn get(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
) -> Result<Response, AppError> {
    let order_id = parse_order_id(&raw_id)?;
    let order = state
        .log
        .order(order_id)
        .await?
        .ok_or(AppError::OrderNotFound)?;
    Ok(Json(order).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvanceBody {
    status: String,
}

/// `POST /api/orders/{id}/status` with `{"status":"Packed"}`: the new event.
pub async fn advance(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    body: Result<Json<AdvanceBody>, JsonRejection>,
) -> Result<Response, AppError> {
    let order_id = parse_order_id(&raw_id)?;
    let Json(body) = body.map_err(json_rejection)?;
    let status: OrderStatus = body.status.parse()?;
    if state.log.order(order_id).await?.is_none() {
        return Err(AppError::OrderNotFound);
    }
    let event = state.log.publish(order_id, status).await?;
    Ok(Json(event).into_response())
}

/// Turns axum's JSON extractor failures into our error bodies.
fn json_rejection(rejection: JsonRejection) -> AppError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return AppError::PayloadTooLarge;
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => AppError::BadRequest(
            "the body must be JSON, sent with `Content-Type: application/json`".into(),
        ),
        other => AppError::BadRequest(format!(
            "the body must be {{\"status\": \"<status>\"}}: {}",
            other.body_text()
        )),
    }
}
