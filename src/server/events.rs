//! `POST /api/events`: a batch of status changes from the back office (spec §14), stored in
//! one commit, in array order, with one result per item, so that one bad item never fails
//! the others. Needs the admin token when one is set ([`Admin`]).
//!
//! The body must be a JSON array of 1 to [`MAX_ITEMS`] objects; anything else is one `400`
//! (more items: one `413`). Each object is then read on its own: a malformed id or a missing
//! field is that item's `400`, an unknown status its `422`, and the others are still stored.
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::domain::{parse_order_id, OrderEvent, OrderStatus};
use crate::server::auth::Admin;
use crate::server::error::{AppError, ErrorBody};
use crate::server::extract::{Expected, JsonBody};
use crate::server::orders::{creates_an_order, refusal};
use crate::server::store::StoreError;
use crate::server::{with_timeout, AppState};

/// The most items one batch may hold.
pub const MAX_ITEMS: usize = 1000;
/// The largest batch body read: 1,000 items of about 70 bytes each, written loosely.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// The batch route, under the ordinary request timeout and its own body limit.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/events", post(publish_batch))
        .route_layer(DefaultBodyLimit::max(MAX_BATCH_BYTES))
        .route_layer(axum::middleware::from_fn(with_timeout))
}

/// The body: a JSON array of objects, each read on its own afterwards.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct BatchBody(Vec<Map<String, Value>>);

/// One item of a batch, as the document describes it (each is read by [`read_item`], so a
/// malformed one fails alone).
#[derive(utoipa::ToSchema)]
#[schema(as = BatchItem)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
struct BatchItemDoc {
    /// The order's id, a UUID.
    order_id: Uuid,
    /// Its next status (or the one it has: a retry).
    status: OrderStatus,
}

impl Expected for BatchBody {
    const EXPECTED: &'static str = r#"the body must be a JSON array of 1 to 1000 objects {"orderId": "<uuid>", "status": "<status>"}"#;
}

/// One item's result, in the item's place.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ItemResult {
    /// Stored (or stored already: a retry), with its event.
    Stored {
        /// Always 200.
        #[schema(example = 200)]
        status: u16,
        event: OrderEvent,
    },
    /// Refused, with the error body a single publish would have had.
    Refused {
        /// 400 (a malformed item), 404 (no such order), 409 (not its next status) or 422
        /// (an unknown status).
        #[schema(example = 409)]
        status: u16,
        /// The error's code, as in [`ErrorBody`].
        error: &'static str,
        message: String,
    },
}

impl ItemResult {
    fn refused(err: AppError) -> Self {
        let (status, code) = err.status_and_code();
        ItemResult::Refused {
            status: status.as_u16(),
            error: code,
            message: err.to_string(),
        }
    }
}

/// Reads one item: its order and status, or its own error.
fn read_item(item: &Map<String, Value>) -> Result<(Uuid, OrderStatus), AppError> {
    let field = |name: &str| {
        match item.get(name) {
        Some(Value::String(text)) => Ok(text.as_str()),
        Some(_) => Err(AppError::BadRequest(format!("{name} must be a string"))),
        None => Err(AppError::BadRequest(format!(
            "the item has no {name}: each item is {{\"orderId\": \"<uuid>\", \"status\": \"<status>\"}}"
        ))),
    }
    };
    let order_id = parse_order_id(field("orderId")?)?;
    let status = field("status")?.parse()?;
    Ok((order_id, status))
}

/// `POST /api/events` with `[{"orderId": "…", "status": "Packed"}, …]`: `200` with one result
/// per item, in order.
#[utoipa::path(
    post, path = "/api/events", tag = "orders",
    request_body(content = Vec<BatchItemDoc>, content_type = "application/json",
        description = "1 to 1000 status changes, stored in one commit in this order."),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One result per item, in the items' order.", body = [ItemResult]),
        (status = 400, description = "The body is not a JSON array of 1 to 1000 objects.", body = ErrorBody),
        (status = 401, description = "A token is configured and this request lacks it.", body = ErrorBody),
        (status = 413, description = "More than 1000 items (`too_many_items`), or a body over 256 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not sent as `application/json`.", body = ErrorBody),
        (status = 503, description = "The store is unavailable; nothing was stored.", body = ErrorBody),
    )
)]
pub async fn publish_batch(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(BatchBody(items)): JsonBody<BatchBody>,
) -> Result<Response, AppError> {
    if items.is_empty() {
        return Err(AppError::BadRequest(BatchBody::EXPECTED.to_owned()));
    }
    if items.len() > MAX_ITEMS {
        return Err(AppError::TooManyItems);
    }
    let log = &state.event_log;
    let mut results: Vec<Option<ItemResult>> = Vec::with_capacity(items.len());
    // The items that go to the store, with their places.
    let mut places = Vec::new();
    let mut updates = Vec::new();
    for (place, item) in items.iter().enumerate() {
        match read_item(item) {
            Ok((order_id, status)) if creates_an_order(log, order_id, status).await? => {
                results.push(Some(ItemResult::refused(AppError::OrderNotFound)));
            }
            Ok(update) => {
                results.push(None);
                places.push(place);
                updates.push(update);
            }
            Err(err) => results.push(Some(ItemResult::refused(err))),
        }
    }
    let outcomes = log.publish_all(&updates).await?;
    for ((place, (order_id, _)), outcome) in places.into_iter().zip(updates).zip(outcomes) {
        results[place] = Some(match outcome {
            Ok(event) => ItemResult::Stored { status: 200, event },
            Err(StoreError::Conflict(conflict)) => {
                ItemResult::refused(refusal(log, order_id, conflict).await?)
            }
            Err(err) => return Err(err.into()),
        });
    }
    let results: Vec<ItemResult> = results.into_iter().flatten().collect();
    Ok(Json(results).into_response())
}
