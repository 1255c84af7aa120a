//! REST routes, one module per resource, and the route table: every route
//! with the access it requires. The router is built from the table alone and
//! wraps each route in the PEP, so no route can exist without a declared
//! access (the route-table test walks it). Each handler is also documented
//! with `#[utoipa::path]` and named in `crate::openapi`, which adds the
//! access from this table (a test holds the two to each other).

pub mod attachments;
pub mod audit;
pub mod contacts;
pub mod conversations;
pub mod health;
pub mod messages;
pub mod ops;
pub mod roles;
pub mod telegram;
pub mod users;

use axum::{
    Router,
    handler::Handler,
    http::Method,
    middleware,
    routing::{self, MethodRouter},
};

use crate::{
    AppState,
    auth::routes as auth,
    authz::{
        Perm,
        pep::{self, Access},
    },
};

/// One row of the route table.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    /// Under `/api`, with `{param}` placeholders.
    pub path: &'static str,
    pub access: Access,
}

struct Route {
    spec: RouteSpec,
    handler: MethodRouter<AppState>,
}

fn route<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let handler = match method.as_str() {
        "GET" => routing::get(handler),
        "POST" => routing::post(handler),
        "PUT" => routing::put(handler),
        "PATCH" => routing::patch(handler),
        _ => routing::delete(handler),
    };
    Route {
        spec: RouteSpec {
            method,
            path,
            access,
        },
        handler,
    }
}

const READ_INBOX: &[Perm] = &[Perm::InboxReadAll, Perm::InboxReadAssigned];
const USERS: &[Perm] = &[Perm::UsersManage];
const ROLES: &[Perm] = &[Perm::RolesManage];
const SEE_ROLES: &[Perm] = &[Perm::RolesManage, Perm::UsersManage];

fn routes() -> Vec<Route> {
    use Access::{Any, Authenticated, FirstFrame, Public};
    use Method as M;
    vec![
        route(M::GET, "/health", Public, health::health),
        route(
            M::GET,
            "/openapi.json",
            Public,
            crate::openapi::openapi_json,
        ),
        route(M::GET, "/ws", FirstFrame, crate::realtime::socket::upgrade),
        route(M::POST, "/auth/login", Public, auth::login),
        route(M::POST, "/auth/refresh", Public, auth::refresh),
        route(M::POST, "/auth/logout", Authenticated, auth::logout),
        route(
            M::POST,
            "/auth/password",
            Authenticated,
            auth::change_password,
        ),
        route(M::GET, "/auth/me", Authenticated, auth::me),
        route(M::GET, "/auth/me/ep", Authenticated, auth::me_ep),
        route(M::GET, "/users", Any(USERS), users::list),
        route(M::POST, "/users", Any(USERS), users::create),
        route(M::GET, "/users/{id}", Any(USERS), users::get),
        route(M::PATCH, "/users/{id}", Any(USERS), users::update),
        route(M::DELETE, "/users/{id}", Any(USERS), users::deactivate),
        route(M::PUT, "/users/{id}/roles", Any(USERS), users::put_roles),
        route(M::GET, "/roles", Any(SEE_ROLES), roles::list),
        route(M::POST, "/roles", Any(ROLES), roles::create),
        route(M::PATCH, "/roles/{id}", Any(ROLES), roles::update),
        route(M::DELETE, "/roles/{id}", Any(ROLES), roles::delete),
        route(
            M::PUT,
            "/roles/{id}/permissions",
            Any(ROLES),
            roles::put_permissions,
        ),
        route(M::GET, "/permissions", Any(SEE_ROLES), roles::permissions),
        route(M::GET, "/audit", Any(&[Perm::AuditRead]), audit::list),
        route(
            M::GET,
            "/conversations",
            Any(READ_INBOX),
            conversations::list,
        ),
        route(
            M::GET,
            "/conversations/{id}",
            Any(READ_INBOX),
            conversations::get,
        ),
        route(
            M::PATCH,
            "/conversations/{id}",
            Any(&[Perm::InboxAssign]),
            conversations::update,
        ),
        route(
            M::POST,
            "/conversations/{id}/read",
            Any(READ_INBOX),
            conversations::mark_read,
        ),
        route(
            M::POST,
            "/conversations/{id}/notes",
            Any(&[Perm::InboxReply]),
            messages::create_note,
        ),
        route(M::GET, "/contacts/{id}", Any(READ_INBOX), contacts::get),
        route(
            M::GET,
            "/conversations/{id}/messages",
            Any(READ_INBOX),
            messages::list,
        ),
        route(
            M::GET,
            "/conversations/{id}/messages/{message_id}/versions",
            Any(READ_INBOX),
            messages::versions,
        ),
        route(
            M::POST,
            "/conversations/{id}/messages",
            Any(&[Perm::InboxReply]),
            messages::create,
        ),
        route(
            M::PATCH,
            "/conversations/{id}/messages/{message_id}",
            Any(&[Perm::InboxReply]),
            messages::edit,
        ),
        route(
            M::DELETE,
            "/conversations/{id}/messages/{message_id}",
            Any(&[Perm::InboxReply]),
            messages::delete,
        ),
        route(
            M::POST,
            "/conversations/{id}/messages/{message_id}/retry",
            Any(&[Perm::InboxReply]),
            ops::retry_message,
        ),
        route(
            M::POST,
            "/attachments",
            Any(&[Perm::AttachmentsUpload]),
            attachments::create,
        ),
        route(
            M::GET,
            "/attachments/{id}/url",
            Any(&[Perm::AttachmentsRead, Perm::AttachmentsUpload]),
            attachments::url,
        ),
        route(M::GET, "/ops/outbox", Any(&[Perm::OpsOutbox]), ops::outbox),
        route(
            M::POST,
            "/ops/outbox/retry-failed",
            Any(&[Perm::OpsOutbox]),
            ops::outbox_retry_failed,
        ),
        route(M::GET, "/ops/dlq", Any(&[Perm::OpsDlq]), ops::dlq_list),
        route(
            M::GET,
            "/ops/dlq/{queue}/messages",
            Any(&[Perm::OpsDlq]),
            ops::dlq_peek,
        ),
        route(
            M::POST,
            "/ops/dlq/{queue}/replay",
            Any(&[Perm::OpsDlq]),
            ops::dlq_replay,
        ),
        route(
            M::DELETE,
            "/ops/dlq/{queue}/messages",
            Any(&[Perm::OpsDlq]),
            ops::dlq_purge,
        ),
        route(
            M::GET,
            "/ops/telegram",
            Any(&[Perm::OpsTelegram]),
            telegram::account,
        ),
        route(
            M::POST,
            "/ops/telegram/login/phone",
            Any(&[Perm::OpsTelegram]),
            telegram::login_phone,
        ),
        route(
            M::POST,
            "/ops/telegram/login/code",
            Any(&[Perm::OpsTelegram]),
            telegram::login_code,
        ),
        route(
            M::POST,
            "/ops/telegram/login/password",
            Any(&[Perm::OpsTelegram]),
            telegram::login_password,
        ),
    ]
}

/// Every route with its access: what the router serves, and nothing else.
pub fn table() -> Vec<RouteSpec> {
    routes().into_iter().map(|r| r.spec).collect()
}

/// The declared path (`/conversations/{id}`) that a request path under
/// `/api` matches, for naming spans before the router has matched it.
pub fn template(path: &str) -> Option<&'static str> {
    static TABLE: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut paths: Vec<&'static str> = table().into_iter().map(|r| r.path).collect();
        paths.dedup();
        paths
    });
    let path = path.strip_prefix("/api")?;
    let segments: Vec<&str> = path.split('/').collect();
    table.iter().copied().find(|t| {
        let parts: Vec<&str> = t.split('/').collect();
        parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
    })
}

/// The routes, each at `/api` + its path (one router, no nesting: a nested
/// router is one more routing and clone per request) and behind the PEP
/// with its declared access.
pub fn router(state: &AppState) -> Router<AppState> {
    routes().into_iter().fold(Router::new(), |router, r| {
        let st = state.clone();
        let access = r.spec.access;
        let guarded = r.handler.route_layer(middleware::from_fn(
            move |req: axum::extract::Request, next: middleware::Next| {
                pep::enforce(st.clone(), access, req, next)
            },
        ));
        router.route(&format!("/api{}", r.spec.path), guarded)
    })
}
