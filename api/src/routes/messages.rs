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
    error::ApiResult,
    inbox::messages::{self, Draft, Kind, Message, Versions, Writing, Written},
    page::{Page, PageRequest},
};

/// `GET /conversations/{id}/messages/{message_id}/versions`: a message's
/// current text and every text it replaced.
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

#[derive(Deserialize)]
pub struct ListQuery {
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// Newest first; `next_cursor` pages towards older messages.
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
    match messages::write(&state.db, caller.id, conversation_id, scope, writing, kind).await? {
        Written::Created(m) => {
            state.relay_wake.committed();
            Ok(m)
        }
        Written::Repeated(m) => Ok(m),
    }
}
