//! The OpenAPI contract of `/api`, served at `GET /api/openapi.json` and
//! checked in as `docs/openapi.json` (ADR 0015).
//!
//! Handlers carry `#[utoipa::path]`: method, path, body, parameters and the
//! statuses the handler itself answers. What is decided elsewhere is written
//! in by [`spec`] so that it cannot drift: the route table's access (bearer
//! security, `x-permissions`, 401/403, [`access`]) and what axum's
//! extractors refuse (400/413/415/422, [`rejections`]). Answers list every
//! field as required, `null` where it may be ([`answers`]).

mod access;
mod answers;
mod rejections;

use std::sync::OnceLock;

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use utoipa::{
    OpenApi,
    openapi::{
        self,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::{auth::routes as auth, error::ErrorBody, realtime::socket, routes};

/// The documented operations.
///
/// A new route: annotate its handler with `#[utoipa::path(...)]` (its
/// method, `/api` + the table's path, tag, body, params, and the statuses
/// the handler answers, each error with `body = ErrorBody`), then name the
/// handler below. Leave out what the table and the extractors decide
/// (security, permissions, 401/403, malformed input): [`spec`] adds it. A
/// `platform::named_enum!` in a body gets its schema from
/// [`named_enum_schema!`]. The
/// test `every_route_is_documented_once_with_its_access` fails until the
/// table and this list agree; `committed_spec_is_current` until
/// `docs/openapi.json` is regenerated.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "FastPrep Admin API",
        description = "The back office's REST API. Errors answer `{\"error\": {\"code\", \"message\", \"request_id\"}}`. \
Each operation names the access it needs (`x-permissions`: any one of them suffices).",
    ),
    paths(
        routes::health::health,
        openapi_json,
        socket::upgrade::upgrade,
        auth::login,
        auth::refresh,
        auth::logout,
        auth::change_password,
        auth::me,
        auth::me_ep,
        routes::users::list,
        routes::users::create,
        routes::users::get,
        routes::users::update,
        routes::users::deactivate,
        routes::users::put_roles,
        routes::roles::list,
        routes::roles::create,
        routes::roles::update,
        routes::roles::delete,
        routes::roles::put_permissions,
        routes::roles::permissions,
        routes::audit::list,
        routes::conversations::list,
        routes::conversations::get,
        routes::conversations::update,
        routes::conversations::mark_read,
        routes::messages::create_note,
        routes::contacts::get,
        routes::messages::list,
        routes::messages::versions,
        routes::messages::create,
        routes::messages::edit,
        routes::messages::delete,
        routes::attachments::create,
        routes::attachments::url,
        routes::ops::retry_message,
        routes::ops::outbox,
        routes::ops::outbox_retry_failed,
        routes::ops::dlq_list,
        routes::ops::dlq_peek,
        routes::ops::dlq_replay,
        routes::ops::dlq_purge,
        routes::telegram::account,
        routes::telegram::login_phone,
        routes::telegram::login_code,
        routes::telegram::login_password,
    ),
    components(schemas(ErrorBody, routes::ops::DlqName)),
    tags(
        (name = "auth", description = "Sign-in, sessions and the caller's permissions"),
        (name = "users", description = "Staff accounts"),
        (name = "roles", description = "Roles and the permission catalogue"),
        (name = "inbox", description = "Conversations, messages, notes and contacts"),
        (name = "audit", description = "The audit log"),
        (name = "attachments", description = "Files: uploads by presigned URL, download links after the permission check"),
        (name = "ops", description = "On-call: the outbox, the dead-letter queues and the Telegram account"),
        (name = "system", description = "Health, the realtime socket and this document"),
    )
)]
struct ApiDoc;

/// `utoipa::ToSchema` for a `platform::named_enum!`: a string, one of its
/// names. (utoipa's derive would take the variants' Rust names: it does not
/// read the `serde(rename)` the macro writes.)
macro_rules! named_enum_schema {
    ($ty:ty, $description:literal) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($description))
                    .enum_values(Some(<$ty>::ALL.map(<$ty>::as_str)))
                    .into()
            }
        }

        impl utoipa::ToSchema for $ty {}
    };
}
pub(crate) use named_enum_schema;

/// The name of the bearer (JWT) security scheme.
pub const BEARER: &str = "bearer";

/// The whole document: the annotations, completed from the route table.
pub fn spec() -> openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    // Not the crate's Cargo metadata (name `api`, its license): the API's own.
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.info.license = None;
    doc.info.contact = None;
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from `POST /api/auth/login` or `POST /api/auth/refresh`",
                    ))
                    .build(),
            ),
        );
    access::apply(&mut doc, &routes::table());
    rejections::apply(&mut doc);
    doc
}

/// The document as checked in: pretty, keys sorted, a trailing newline.
pub fn json() -> String {
    // Through `Value`, whose maps are sorted: some of utoipa's are hash maps.
    let mut value = serde_json::to_value(spec()).unwrap_or_default();
    answers::require_every_field(&mut value);
    let mut out = serde_json::to_string_pretty(&value).unwrap_or_default();
    out.push('\n');
    out
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "system",
    summary = "This OpenAPI document",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(json).as_str();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests;
