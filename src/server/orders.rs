//! The JSON API under `/api/orders`: create, list recent, get one, advance its status.
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::{Order, OrderStatus};
use crate::server::error::AppError;
use crate::server::extract::{Body, Expected, OrderId, Params};
use crate::server::AppState;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;
/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// `POST /api/orders`: a new order, `Created`.
pub async fn create(State(state): State<AppState>) -> Result<Response, AppError> {
    let order_id = Uuid::new_v4();
    let created = state.log.publish(order_id, OrderStatus::Created).await?;
    // The new order is its one event: no need to read it back from the store.
    let order = Order::from_events(vec![created]).ok_or(AppError::OrderNotFound)?;
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

impl Expected for ListQuery {
    const EXPECTED: &'static str =
        "the only query parameter is limit, a whole number from 1 to 100";
}

/// `GET /api/orders?limit=N`: the most recent orders, newest first.
pub async fn list(
    State(state): State<AppState>,
    Params(query): Params<ListQuery>,
) -> Result<Response, AppError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::BadRequest(ListQuery::EXPECTED.to_owned()));
    }
    Ok(Json(state.log.recent(limit).await?).into_response())
}

/// `GET /api/orders/{id}`: the order with its events.
pub async fn get(
    State(state): State<AppState>,
    OrderId(order_id): OrderId,
) -> Result<Response, AppError> {
    let order = state
        .log
        .order(order_id)
        .await?
        .ok_or(AppError::OrderNotFound)?;
    Ok(Json(order).into_response())
}

#[derive(Debug, Deserialize)]
pub struct AdvanceBody {
    status: String,
}

impl Expected for AdvanceBody {
    const EXPECTED: &'static str = r#"the body must be a JSON object {"status": "<status>"}"#;
}

/// `POST /api/orders/{id}/status` with `{"status":"Packed"}`: the new event.
pub async fn advance(
    State(state): State<AppState>,
    OrderId(order_id): OrderId,
    Body(body): Body<AdvanceBody>,
) -> Result<Response, AppError> {
    let status: OrderStatus = body.status.parse()?;
    if state.log.order(order_id).await?.is_none() {
        return Err(AppError::OrderNotFound);
    }
    let event = state.log.publish(order_id, status).await?;
    Ok(Json(event).into_response())
}
