//! Who may do what (spec §6): with `ADMIN_TOKEN` set, publishing and listing orders need
//! `Authorization: Bearer <token>`; without it the server runs open (demo mode). An order's
//! page and stream never need it: its id is the capability.
//!
//! The guard is an extractor, so each handler that needs the token says so in its own
//! signature, whatever router or layer it is mounted under.
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use subtle::ConstantTimeEq;

use crate::server::error::AppError;
use crate::server::AppState;

/// Proof that the request may publish or list orders: no token is configured, or it carried
/// the right bearer token (compared in constant time). Otherwise `401` with
/// `WWW-Authenticate: Bearer`.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl Admin {
    /// The guard itself, for a request head read outside axum (the streams' accept loop).
    pub fn check(state: &AppState, authorization: Option<&[u8]>) -> Result<Admin, AppError> {
        let Some(expected) = state.config.admin_token.as_deref() else {
            return Ok(Admin);
        };
        let presented = authorization
            .and_then(|value| value.strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if bool::from(presented.ct_eq(expected.as_bytes())) {
            Ok(Admin)
        } else {
            Err(AppError::Unauthorized)
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let authorization = parts.headers.get(header::AUTHORIZATION);
        Admin::check(state, authorization.map(|value| value.as_bytes()))
    }
}
