//! Extractors that turn every malformed piece of a request into an [`AppError`], so that
//! clients always get our JSON error body rather than the framework's plain text.
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::domain::parse_order_id;
use crate::server::error::AppError;

/// The `{id}` path segment as an order id, in any form a UUID parser accepts.
pub struct OrderId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for OrderId {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::InvalidOrderId)?;
        Ok(OrderId(parse_order_id(&raw)?))
    }
}

/// A query string; a malformed one is a `400` that says what was expected.
pub struct Params<T>(pub T);

/// What a query type tells its clients when theirs does not parse.
pub trait Expected {
    const EXPECTED: &'static str;
}

impl<S: Send + Sync, T: DeserializeOwned + Expected> FromRequestParts<S> for Params<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(params)| Params(params))
            .map_err(|_| AppError::BadRequest(T::EXPECTED.to_owned()))
    }
}

/// A JSON body: `415` without a JSON content type, `413` over the body limit, `400` when
/// it is not JSON or not of the expected shape.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Expected> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(body)) => Ok(JsonBody(body)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(AppError::PayloadTooLarge)
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(AppError::UnsupportedMediaType),
            Err(_) => Err(AppError::BadRequest(T::EXPECTED.to_owned())),
        }
    }
}
