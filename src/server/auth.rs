//! Publisher auth: with `ADMIN_TOKEN` set, mutating routes need `Authorization: Bearer <token>`.
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::server::error::AppError;
use crate::server::AppState;

/// Lets the request through when no token is configured or the bearer token matches,
/// compared in constant time.
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    if let Some(expected) = state.config.admin_token.as_deref() {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !bool::from(presented.ct_eq(expected.as_bytes())) {
            return Err(AppError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}
