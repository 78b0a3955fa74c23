//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the HTTP interface (spec §14), for
//! Postman, client generators and gateways. Each operation is described by an attribute on
//! its own handler, beside the code, and each schema is derived from the type the handler
//! answers with, so the document follows the code; a test walks the router's routes and
//! fails on one the document lacks.
use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::server::{events, health, orders, simulate, stream, AppState};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Live order tracking",
        description = "Follow an order from Created to Delivered over Server-Sent Events; \
                       publish its status changes, one at a time or in batches. With a token \
                       configured (`ADMIN_TOKEN`), publishing, listing and every order's \
                       stream need `Authorization: Bearer <token>`; one order's page, JSON and \
                       stream need only its id."
    ),
    paths(
        orders::create,
        orders::list,
        orders::get_one,
        orders::advance,
        events::publish_batch,
        simulate::simulate,
        stream::route::order_stream,
        stream::route::selection_stream,
        health::healthz,
        health::metrics,
        document,
    ),
    modifiers(&Bearer),
    tags(
        (name = "orders", description = "Orders and their status changes."),
        (name = "streams", description = "Server-Sent Events."),
        (name = "simulator", description = "The demo producer."),
        (name = "operations", description = "For the operator."),
    )
)]
pub struct ApiDoc;

/// The bearer scheme the guarded operations name.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token: `ADMIN_TOKEN` or a line of `ADMIN_TOKEN_FILE`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, written once per process.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    })
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(document))
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this interface.", content_type = "application/json", body = Object)),
)]
async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}
