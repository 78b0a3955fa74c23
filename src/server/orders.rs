//! The JSON API under `/api/orders`: create, list recent, get one, advance its status.
//! Creating, listing and advancing need the admin token when one is set ([`Admin`]): a list
//! of ids is a list of capabilities. Reading one order needs only its id.
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::{Order, OrderEvent, OrderStatus, OrderSummary, TransitionError};
use crate::server::auth::Admin;
use crate::server::error::AppError;
use crate::server::error::ErrorBody;
use crate::server::event_log::EventLog;
use crate::server::extract::{Expected, JsonBody, OrderId, Params};
use crate::server::store::StoreError;
use crate::server::{with_timeout, AppState};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;
/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The API's routes, each under the ordinary request timeout.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/orders", get(list).post(create))
        .route("/api/orders/{id}", get(get_one))
        .route("/api/orders/{id}/status", post(advance))
        .route_layer(axum::middleware::from_fn(with_timeout))
}

/// `POST /api/orders`: a new order, `Created`.
#[utoipa::path(
    post, path = "/api/orders", tag = "orders",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The new order, at `Created`.", body = Order,
         headers(("Location" = String, description = "The order's page: `/orders/{id}`"))),
        (status = 401, description = "A token is configured and this request lacks it.", body = ErrorBody),
        (status = 503, description = "The store is unavailable; nothing was stored.", body = ErrorBody),
    )
)]
pub async fn create(_: Admin, State(state): State<AppState>) -> Result<Response, AppError> {
    let order_id = Uuid::new_v4();
    let created = state
        .event_log
        .publish(order_id, OrderStatus::Created)
        .await?;
    // The new order is its one event: no need to read it back from the store.
    let order = Order::from_events(vec![created]).ok_or(AppError::OrderNotFound)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/orders/{order_id}"))],
        Json(order),
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// How many orders, from 1 to 100 (20 when left out).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

impl Expected for ListQuery {
    const EXPECTED: &'static str =
        "the only query parameter is limit, a whole number from 1 to 100";
}

/// `GET /api/orders?limit=N`: the most recent orders, newest first.
#[utoipa::path(
    get, path = "/api/orders", tag = "orders",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The most recently created orders, newest first.", body = [OrderSummary]),
        (status = 400, description = "`limit` is not a whole number from 1 to 100.", body = ErrorBody),
        (status = 401, description = "A token is configured and this request lacks it.", body = ErrorBody),
        (status = 503, description = "The store is unavailable.", body = ErrorBody),
    )
)]
pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    Params(query): Params<ListQuery>,
) -> Result<Response, AppError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::BadRequest(ListQuery::EXPECTED.to_owned()));
    }
    Ok(Json(state.event_log.recent(limit).await?).into_response())
}

/// `GET /api/orders/{id}`: the order with its events.
#[utoipa::path(
    get, path = "/api/orders/{id}", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "The order's id, a UUID (another form is a `400`).")),
    responses(
        (status = 200, description = "The order with its stored events (`expired` once compacted).", body = Order),
        (status = 400, description = "The id is not a UUID (`invalid_order_id`).", body = ErrorBody),
        (status = 404, description = "No order has this id (`order_not_found`).", body = ErrorBody),
        (status = 503, description = "The store is unavailable.", body = ErrorBody),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    OrderId(order_id): OrderId,
) -> Result<Response, AppError> {
    let order = state
        .event_log
        .order(order_id)
        .await?
        .ok_or(AppError::OrderNotFound)?;
    Ok(Json(order).into_response())
}

/// The next status of an order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AdvanceBody {
    /// One of the six statuses, by its wire name (another name is a `422`).
    #[schema(value_type = OrderStatus, example = "Packed")]
    status: String,
}

impl Expected for AdvanceBody {
    const EXPECTED: &'static str = r#"the body must be a JSON object {"status": "<status>"}"#;
}

/// `POST /api/orders/{id}/status` with `{"status":"Packed"}`: the new event.
#[utoipa::path(
    post, path = "/api/orders/{id}/status", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "The order's id, a UUID (another form is a `400`).")),
    request_body(content = AdvanceBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The event stored: the new one, or the one already stored when the order has this status (a retry).", body = OrderEvent),
        (status = 400, description = "The id is not a UUID, or the body is not `{\"status\": \"<status>\"}`.", body = ErrorBody),
        (status = 401, description = "A token is configured and this request lacks it.", body = ErrorBody),
        (status = 404, description = "No order has this id.", body = ErrorBody),
        (status = 409, description = "The status is not the order's next one (`invalid_transition`).", body = ErrorBody),
        (status = 413, description = "The body is larger than 16 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not sent as `application/json`.", body = ErrorBody),
        (status = 422, description = "The status is not one of the six (`unknown_status`).", body = ErrorBody),
        (status = 503, description = "The store is unavailable; nothing was stored.", body = ErrorBody),
    )
)]
pub async fn advance(
    _: Admin,
    State(state): State<AppState>,
    OrderId(order_id): OrderId,
    JsonBody(body): JsonBody<AdvanceBody>,
) -> Result<Response, AppError> {
    let status: OrderStatus = body.status.parse()?;
    if creates_an_order(&state.event_log, order_id, status).await? {
        return Err(AppError::OrderNotFound);
    }
    match state.event_log.publish(order_id, status).await {
        Ok(event) => Ok(Json(event).into_response()),
        Err(StoreError::Conflict(conflict)) => {
            Err(refusal(&state.event_log, order_id, conflict).await?)
        }
        Err(err) => Err(err.into()),
    }
}

/// Whether publishing `status` would create the order: `Created` of an unknown one. That is
/// `POST /api/orders`; a publish of a status (one or in a batch) needs the order to exist.
pub async fn creates_an_order(
    log: &EventLog,
    order_id: Uuid,
    status: OrderStatus,
) -> Result<bool, AppError> {
    Ok(status == OrderStatus::Created && log.order(order_id).await?.is_none())
}

/// Why the store refused a status: the order does not exist (`404`), or the status is not
/// its next one (`409`). Any status but `Created` is refused unless its predecessor is
/// stored, so existence is only looked up to explain a refusal: one query per publish.
pub async fn refusal(
    log: &EventLog,
    order_id: Uuid,
    conflict: TransitionError,
) -> Result<AppError, AppError> {
    Ok(match log.order(order_id).await? {
        Some(_) => AppError::InvalidTransition(conflict),
        None => AppError::OrderNotFound,
    })
}
