//! The route table's access, written into the document: for each row, its
//! operation's security, the permissions it needs (`x-access`,
//! `x-permissions` and a line of its description) and the 401/403 the PEP
//! answers before the handler runs; and an operation id made of its method
//! and path, unique as the rows are. The table is what the router enforces,
//! so the document says what is enforced.

use axum::http::Method;
use serde_json::json;
use utoipa::openapi::{
    OpenApi, extensions::Extensions, path::Operation, security::SecurityRequirement,
};

use super::{BEARER, rejections::add_error};
use crate::{authz::pep::Access, routes::RouteSpec};

/// The operation documenting `method` on `path` (as the document spells it,
/// `/api/…`), if any.
pub fn operation_mut<'a>(
    doc: &'a mut OpenApi,
    method: &Method,
    path: &str,
) -> Option<&'a mut Operation> {
    let item = doc.paths.paths.get_mut(path)?;
    match *method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        _ => None,
    }
}

/// `x-access`: how the caller is checked.
pub fn kind(access: Access) -> &'static str {
    match access {
        Access::Public => "public",
        Access::Authenticated => "authenticated",
        Access::Any(_) => "any_permission",
        Access::FirstFrame => "first_frame",
    }
}

/// `x-permissions`: the keys of which the caller must hold one (none for
/// the other kinds of access).
pub fn permissions(access: Access) -> Vec<&'static str> {
    match access {
        Access::Any(perms) => perms.iter().map(|p| p.as_str()).collect(),
        _ => Vec::new(),
    }
}

/// `get_conversations_id_messages` for `GET /conversations/{id}/messages`.
pub fn operation_id(row: &RouteSpec) -> String {
    let words = row
        .path
        .split(['/', '.'])
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_matches(['{', '}']));
    std::iter::once(row.method.as_str().to_lowercase())
        .chain(words.map(str::to_owned))
        .collect::<Vec<_>>()
        .join("_")
}

fn sentence(access: Access) -> String {
    match access {
        Access::Public => "**Access:** public, no token.".to_owned(),
        Access::Authenticated => "**Access:** any signed-in user (bearer token).".to_owned(),
        Access::Any(_) => format!(
            "**Access:** a signed-in user holding any of {}.",
            permissions(access)
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Access::FirstFrame => {
            "**Access:** any signed-in user, by the access token in the socket's first frame."
                .to_owned()
        }
    }
}

/// Writes each row's access into its operation. A row without an operation
/// is left for the tests to name.
pub fn apply(doc: &mut OpenApi, table: &[RouteSpec]) {
    for row in table {
        let Some(op) = operation_mut(doc, &row.method, &format!("/api{}", row.path)) else {
            continue;
        };
        op.operation_id = Some(operation_id(row));
        let line = sentence(row.access);
        op.description = Some(match op.description.take() {
            Some(d) if !d.is_empty() => format!("{d}\n\n{line}"),
            _ => line,
        });
        let mut ext = op.extensions.take().unwrap_or_default();
        ext.merge(Extensions::from_iter([
            ("x-access", json!(kind(row.access))),
            ("x-permissions", json!(permissions(row.access))),
        ]));
        op.extensions = Some(ext);
        if matches!(row.access, Access::Authenticated | Access::Any(_)) {
            op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            add_error(
                op,
                401,
                "`unauthorized`: no bearer token; `invalid_token`: malformed, forged, expired or of \
                 no account; `token_stale`: permissions changed since it was issued, refresh it; \
                 `account_disabled`",
            );
        }
        if let Access::Any(_) = row.access {
            add_error(
                op,
                403,
                "`forbidden`: the caller holds none of the permissions this needs",
            );
        }
    }
}
