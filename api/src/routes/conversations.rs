//! `/api/conversations`: the shared inbox (see [`crate::inbox::conversations`]).

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::{
    AppState,
    authz::{Perm, pep::Principal},
    error::{ApiError, ApiResult, ErrorBody},
    inbox::{
        ConversationStatus, STATUS_CHOICES,
        conversations::{self, AssigneeFilter, Change, Conversation, ListFilter, Search},
    },
    page::{Page, PageRequest},
};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[param(value_type = Option<ConversationStatus>)]
    pub status: Option<String>,
    /// `mine`, `unassigned` or a user id.
    pub assignee: Option<String>,
    /// Only conversations with inbound messages the caller has not read.
    #[serde(default)]
    pub unread: bool,
    /// Text search over the contact's name, the title and message texts.
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// `GET /conversations`: newest activity first, keyset-paginated.
#[utoipa::path(
    get,
    path = "/api/conversations",
    tag = "inbox",
    summary = "Conversations the caller may read, newest activity first",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of conversations", body = Page<Conversation>),
        (status = 400, description = "`invalid_limit`, `invalid_cursor`, `invalid_status`, `invalid_assignee`", body = ErrorBody),
        (status = 422, description = "`invalid_query`: `q` over 200 characters or with a NUL character", body = ErrorBody),
    )
)]
pub async fn list(
    caller: Principal,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Conversation>>> {
    let scope = caller.inbox_scope()?;
    let page = PageRequest::by_time(q.limit, q.cursor.as_deref())?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            ConversationStatus::parse(s)
                .ok_or_else(|| ApiError::bad_request("invalid_status", STATUS_CHOICES))
        })
        .transpose()?;
    let filter = ListFilter {
        status,
        assignee: AssigneeFilter::from_request(q.assignee.as_deref(), caller.id)?,
        unread: q.unread,
        search: Search::from_request(q.q.as_deref())?,
    };
    Ok(Json(
        conversations::list(&state.db, caller.id, scope, &filter, page).await?,
    ))
}

/// `GET /conversations/{id}`.
#[utoipa::path(
    get,
    path = "/api/conversations/{id}",
    tag = "inbox",
    summary = "One conversation",
    params(("id" = Uuid, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "The conversation", body = Conversation),
        (status = 404, description = "`not_found`: no such conversation, or not the caller's to read", body = ErrorBody),
    )
)]
pub async fn get(
    caller: Principal,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Conversation>> {
    let scope = caller.inbox_scope()?;
    Ok(Json(
        conversations::get(&state.db, caller.id, id, scope).await?,
    ))
}

/// `Some(None)` for an explicit `null`, `None` when the field is absent.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct UpdateIn {
    /// A user id, or `null` to unassign.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Uuid>)]
    pub assignee_id: Option<Option<Uuid>>,
    #[schema(value_type = Option<ConversationStatus>)]
    pub status: Option<String>,
    /// With status `snoozed` (implied when given alone): when it reopens.
    pub snoozed_until: Option<DateTime<Utc>>,
}

/// `PATCH /conversations/{id}` (`inbox.assign`): assignment, status and
/// snooze.
#[utoipa::path(
    patch,
    path = "/api/conversations/{id}",
    tag = "inbox",
    summary = "Assign, change status or snooze a conversation",
    params(("id" = Uuid, Path, description = "The conversation's id")),
    request_body = UpdateIn,
    responses(
        (status = 200, description = "The conversation as changed", body = Conversation),
        (status = 403, description = "`forbidden`: the caller may read no conversation", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation, or not the caller's to read", body = ErrorBody),
        (status = 422, description = "`invalid_status`, `invalid_snooze`, `invalid_assignee`: not an active user", body = ErrorBody),
    )
)]
pub async fn update(
    caller: Principal,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateIn>,
) -> ApiResult<Json<Conversation>> {
    caller.require(Perm::InboxAssign)?;
    let scope = caller.inbox_scope()?;
    let change = Change {
        assignee_id: input.assignee_id,
        status: input.status,
        snoozed_until: input.snoozed_until,
    };
    let (out, wrote) = conversations::update(&state.db, caller.id, id, scope, &change).await?;
    if wrote {
        state.relay_wake.committed();
    }
    Ok(Json(out))
}

/// `POST /conversations/{id}/read`: marks everything up to now read for the
/// caller.
#[utoipa::path(
    post,
    path = "/api/conversations/{id}/read",
    tag = "inbox",
    summary = "Mark a conversation read up to now",
    params(("id" = Uuid, Path, description = "The conversation's id")),
    responses(
        (status = 204, description = "Marked"),
        (status = 404, description = "`not_found`: no such conversation, or not the caller's to read", body = ErrorBody),
    )
)]
pub async fn mark_read(
    caller: Principal,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let scope = caller.inbox_scope()?;
    conversations::mark_read(&state.db, caller.id, id, scope).await?;
    Ok(StatusCode::NO_CONTENT)
}
