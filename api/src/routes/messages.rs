//! `GET/POST /api/conversations/{id}/messages` and `…/notes`: the timeline,
//! replies and notes (see [`crate::inbox::messages`]).

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    AppState,
    authz::pep::Principal,
    error::{ApiResult, ErrorBody},
    inbox::{
        changes::{self, Asked, Changed, Edit},
        messages::{self, Draft, Kind, Message, Versions, Writing, Written},
    },
    page::{Page, PageRequest},
};

/// `GET /conversations/{id}/messages/{message_id}/versions`: a message's
/// current text and every text it replaced.
#[utoipa::path(
    get,
    path = "/api/conversations/{id}/messages/{message_id}/versions",
    tag = "inbox",
    summary = "A message's current text and every text it replaced",
    params(
        ("id" = Uuid, Path, description = "The conversation's id"),
        ("message_id" = Uuid, Path, description = "The message's id"),
    ),
    responses(
        (status = 200, description = "The texts", body = Versions),
        (status = 404, description = "`not_found`: no such conversation or message, or not the caller's to read", body = ErrorBody),
    )
)]
pub async fn versions(
    caller: Principal,
    State(state): State<AppState>,
    Path((conversation_id, message_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<Versions>> {
    let scope = caller.inbox_scope()?;
    Ok(Json(
        messages::versions(&state.db, conversation_id, message_id, scope).await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// Newest first; `next_cursor` pages towards older messages.
#[utoipa::path(
    get,
    path = "/api/conversations/{id}/messages",
    tag = "inbox",
    summary = "A conversation's timeline, newest first",
    params(("id" = Uuid, Path, description = "The conversation's id"), ListQuery),
    responses(
        (status = 200, description = "One page of messages; `next_cursor` pages towards older ones", body = Page<Message>),
        (status = 400, description = "`invalid_limit`, `invalid_cursor`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation, or not the caller's to read", body = ErrorBody),
    )
)]
pub async fn list(
    caller: Principal,
    State(state): State<AppState>,
    Path(conversation_id): Path<Uuid>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page<Message>>> {
    let scope = caller.inbox_scope()?;
    let page = PageRequest::by_time(q.limit, q.cursor.as_deref())?;
    Ok(Json(
        messages::list(&state.db, conversation_id, scope, page).await?,
    ))
}

/// `POST /conversations/{id}/messages` (`inbox.reply`, within the caller's
/// inbox scope): 202 with the queued reply, or with the one an earlier POST
/// of the same `client_msg_id` created.
#[utoipa::path(
    post,
    path = "/api/conversations/{id}/messages",
    tag = "inbox",
    summary = "Send a reply to the customer",
    description = "Queued for Telegram in the same transaction. Repeating the POST with the same `client_msg_id` answers the message the first one created.",
    params(("id" = Uuid, Path, description = "The conversation's id")),
    request_body = Draft,
    responses(
        (status = 202, description = "Queued: the reply, delivery pending", body = Message),
        (status = 403, description = "`forbidden`: the caller may read no conversation", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation, or not the caller's to read", body = ErrorBody),
        (status = 409, description = "`client_msg_id_reused`: the id was used for a different message; `attachment_in_use`: a file was taken by another message meanwhile", body = ErrorBody),
        (status = 422, description = "`empty_text`, `invalid_text`, `text_too_long`, `invalid_client_msg_id`, `too_many_attachments`, `duplicate_attachment`; for a file: `attachment_not_found`, `attachment_in_use`, `attachment_not_uploaded`, `attachment_mismatch` (the message names the file and why)", body = ErrorBody),
    )
)]
pub async fn create(
    caller: Principal,
    State(state): State<AppState>,
    Path(conversation_id): Path<Uuid>,
    Json(input): Json<Draft>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let message = write(&caller, &state, conversation_id, input, Kind::Reply).await?;
    Ok((StatusCode::ACCEPTED, Json(message)))
}

/// `POST /conversations/{id}/notes` (`inbox.reply`): a private note, 201.
#[utoipa::path(
    post,
    path = "/api/conversations/{id}/notes",
    tag = "inbox",
    summary = "Add a private note for staff",
    description = "Never sent to the customer. Repeating the POST with the same `client_msg_id` answers the note the first one created.",
    params(("id" = Uuid, Path, description = "The conversation's id")),
    request_body = Draft,
    responses(
        (status = 201, description = "The note", body = Message),
        (status = 403, description = "`forbidden`: the caller may read no conversation", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation, or not the caller's to read", body = ErrorBody),
        (status = 409, description = "`client_msg_id_reused`: the id was used for a different message", body = ErrorBody),
        (status = 422, description = "`empty_text`, `invalid_text`, `text_too_long`, `invalid_client_msg_id`, `attachments_on_note`", body = ErrorBody),
    )
)]
pub async fn create_note(
    caller: Principal,
    State(state): State<AppState>,
    Path(conversation_id): Path<Uuid>,
    Json(input): Json<Draft>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let note = write(&caller, &state, conversation_id, input, Kind::Note).await?;
    Ok((StatusCode::CREATED, Json(note)))
}

async fn write(
    caller: &Principal,
    state: &AppState,
    conversation_id: Uuid,
    input: Draft,
    kind: Kind,
) -> ApiResult<Message> {
    let scope = caller.inbox_scope()?;
    let writing = Writing::try_from(input)?;
    match messages::write(
        &state.db,
        &state.attachments,
        caller.id,
        conversation_id,
        scope,
        writing,
        kind,
    )
    .await?
    {
        Written::Created(m) => {
            state.relay_wake.committed();
            Ok(m)
        }
        Written::Repeated(m) => Ok(m),
    }
}

/// 202 with a change queued, 200 when the reply already was as asked.
fn changed(state: &AppState, changed: Changed) -> (StatusCode, Json<Message>) {
    match changed {
        Changed::Queued(m) => {
            state.relay_wake.committed();
            (StatusCode::ACCEPTED, Json(m))
        }
        Changed::Unchanged(m) => (StatusCode::OK, Json(m)),
    }
}

/// `PATCH /conversations/{id}/messages/{message_id}` (`inbox.reply`): a
/// sent reply's new text, for Telegram.
#[utoipa::path(
    patch,
    path = "/api/conversations/{id}/messages/{message_id}",
    tag = "inbox",
    summary = "Edit a sent reply, in the inbox and in Telegram; audited",
    description = "The text is the reply's at once (the old one is kept at `…/versions`); the edit reaches Telegram through the outbox, and `change_kind`/`change_status` show how far it got, live. Telegram allows edits for 48 hours after the send. Repeating the edit (the same text) changes nothing and answers 200.",
    params(
        ("id" = Uuid, Path, description = "The conversation's id"),
        ("message_id" = Uuid, Path, description = "The reply's id"),
    ),
    request_body = Edit,
    responses(
        (status = 200, description = "The reply already has this text: nothing changed", body = Message),
        (status = 202, description = "The edit is queued for Telegram", body = Message),
        (status = 403, description = "`forbidden`: the caller may read no conversation", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation or message, or not the caller's to read", body = ErrorBody),
        (status = 409, description = "`not_a_reply`, `not_sent` (Telegram does not have it yet, or it failed), `message_deleted`, `reply_has_files`, `edit_window_passed`", body = ErrorBody),
        (status = 422, description = "`empty_text`, `invalid_text`, `text_too_long`", body = ErrorBody),
    )
)]
pub async fn edit(
    caller: Principal,
    State(state): State<AppState>,
    Path((conversation_id, message_id)): Path<(Uuid, Uuid)>,
    Json(input): Json<Edit>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let scope = caller.inbox_scope()?;
    let done = changes::change(
        &state.db,
        caller.id,
        conversation_id,
        message_id,
        scope,
        Asked::Edit(input),
    )
    .await?;
    Ok(changed(&state, done))
}

/// `DELETE /conversations/{id}/messages/{message_id}` (`inbox.reply`):
/// deletes a sent reply for everyone in Telegram.
#[utoipa::path(
    delete,
    path = "/api/conversations/{id}/messages/{message_id}",
    tag = "inbox",
    summary = "Delete a sent reply for everyone in Telegram; audited",
    description = "The reply stays in the inbox for staff, marked `deleted_at`; the deletion reaches Telegram through the outbox, and `change_status` shows how far it got, live. Deleting it again changes nothing and answers 200.",
    params(
        ("id" = Uuid, Path, description = "The conversation's id"),
        ("message_id" = Uuid, Path, description = "The reply's id"),
    ),
    responses(
        (status = 200, description = "Already deleted: nothing changed", body = Message),
        (status = 202, description = "The deletion is queued for Telegram", body = Message),
        (status = 403, description = "`forbidden`: the caller may read no conversation", body = ErrorBody),
        (status = 404, description = "`not_found`: no such conversation or message, or not the caller's to read", body = ErrorBody),
        (status = 409, description = "`not_a_reply`, `not_sent` (Telegram does not have it yet, or it failed)", body = ErrorBody),
    )
)]
pub async fn delete(
    caller: Principal,
    State(state): State<AppState>,
    Path((conversation_id, message_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let scope = caller.inbox_scope()?;
    let done = changes::change(
        &state.db,
        caller.id,
        conversation_id,
        message_id,
        scope,
        Asked::Delete,
    )
    .await?;
    Ok(changed(&state, done))
}
