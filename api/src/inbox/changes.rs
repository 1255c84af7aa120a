//! An operator's edit or deletion of a reply already in Telegram (ADR 0020).
//!
//! The change is written to the row and to the outbox in one transaction,
//! like the reply itself: the text (or the deletion) is the row's at once,
//! and tg-delivery makes it in Telegram, keeping `change_status` as it keeps
//! a reply's `status`. The old text is kept in `message_edits` with its
//! editor, and the change is audited.

use broker_config::{
    Envelope, Event,
    events::{
        DeliveryStatus, MessageOutgoingDelete, MessageOutgoingEdit, MessageUpdated, ReplyChange,
    },
};
use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DbBackend, FromQueryResult, Statement, TransactionSession, TransactionTrait,
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    InboxScope,
    conversations::visible_chat,
    messages::{self, MAX_TEXT_CHARS, Message},
};
use crate::error::{ApiError, ApiResult};

/// How long after its send Telegram lets a user account edit a message.
pub const EDIT_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(48);

/// The new text of a sent reply.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Edit {
    /// 1 to 4096 characters, no NUL, not only whitespace.
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    pub text: String,
}

impl Edit {
    /// The text, checked as a reply's is.
    fn checked(self) -> ApiResult<String> {
        let invalid = |code, message: &str| ApiError::Unprocessable {
            code,
            message: message.to_owned(),
        };
        if self.text.trim().is_empty() {
            return Err(invalid("empty_text", "text must not be empty"));
        }
        if self.text.contains('\0') {
            return Err(invalid(
                "invalid_text",
                "text must not contain NUL characters",
            ));
        }
        if self.text.chars().count() > MAX_TEXT_CHARS {
            return Err(invalid(
                "text_too_long",
                "text is longer than Telegram's 4096 characters",
            ));
        }
        Ok(self.text)
    }
}

/// What an operator asks of a sent reply.
#[derive(Debug)]
pub enum Asked {
    Edit(Edit),
    Delete,
}

/// What [`change`] did.
#[derive(Debug)]
pub enum Changed {
    /// The change is written and queued for Telegram.
    Queued(Message),
    /// The reply already is as asked (the same text, or deleted): nothing
    /// was written. A repeated request lands here.
    Unchanged(Message),
}

/// The reply as the change finds it, its row locked.
#[derive(FromQueryResult)]
struct Current {
    direction: String,
    kind: String,
    status: String,
    text: String,
    sent_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
    files: i64,
}

/// Edits or deletes a reply of the conversation, in the caller's scope, that
/// Telegram has: one transaction writes the row, the old text, the outbox
/// rows (the request for tg-delivery, the update for the inbox) and the
/// audit entry.
pub async fn change<C: TransactionTrait + ConnectionTrait>(
    db: &C,
    actor: Uuid,
    conversation: Uuid,
    message: Uuid,
    scope: InboxScope,
    asked: Asked,
) -> ApiResult<Changed> {
    // Checked before anything is read: bad input is refused alike whatever
    // the reply's state.
    let (new_text, action) = match asked {
        Asked::Edit(edit) => (Some(edit.checked()?), "message.edit"),
        Asked::Delete => (None, "message.delete"),
    };
    let tx = db.begin().await?;
    let chat = visible_chat(&tx, conversation, scope).await?;
    let current = Current::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT direction, kind, status, text, sent_at, deleted_at,
                (SELECT count(*) FROM attachments a WHERE a.message_id = m.id) AS files
         FROM messages m WHERE id = $1 AND conversation_id = $2 FOR UPDATE",
        [message.into(), conversation.into()],
    ))
    .one(&tx)
    .await?
    .ok_or(ApiError::NotFound { what: "message" })?;
    let conflict = |code, message: String| ApiError::Conflict { code, message };
    if current.direction != "out" || current.kind != "text" {
        return Err(conflict(
            "not_a_reply",
            "only a reply sent to the customer can be edited or deleted in Telegram".into(),
        ));
    }
    if current.status != DeliveryStatus::Sent.as_str() {
        return Err(conflict(
            "not_sent",
            format!(
                "this reply is {}: a reply can be edited or deleted once Telegram has it",
                current.status
            ),
        ));
    }
    let unchanged = match &new_text {
        None => current.deleted_at.is_some(),
        Some(text) => {
            if current.deleted_at.is_some() {
                return Err(conflict(
                    "message_deleted",
                    "this reply was deleted; it cannot be edited".into(),
                ));
            }
            if current.files > 0 {
                return Err(conflict(
                    "reply_has_files",
                    "a reply with files cannot be edited; delete it and send it again".into(),
                ));
            }
            *text == current.text
        }
    };
    if unchanged {
        tx.rollback().await?;
        let row = messages::load(db, message).await?;
        return row
            .map(Changed::Unchanged)
            .ok_or(ApiError::NotFound { what: "message" });
    }
    if new_text.is_some()
        && current
            .sent_at
            .is_some_and(|at| Utc::now() - at > EDIT_WINDOW)
    {
        return Err(conflict(
            "edit_window_passed",
            "Telegram lets a reply be edited for 48 hours after it was sent".into(),
        ));
    }
    let seq: i32 = match &new_text {
        Some(text) => {
            let row = tx
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "WITH old AS (
                       INSERT INTO message_edits (message_id, text, replaced_at, editor_id)
                       SELECT id, text, now(), $3 FROM messages WHERE id = $1)
                     UPDATE messages SET text = $2, edited_at = now(), updated_at = now(),
                       change_kind = 'edit', change_status = 'queued', change_error = NULL,
                       change_retry_at = NULL, change_seq = change_seq + 1
                     WHERE id = $1 RETURNING change_seq",
                    [message.into(), text.clone().into(), actor.into()],
                ))
                .await?;
            row.map(|r| r.try_get_by_index(0)).transpose()?
        }
        None => {
            let row = tx
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "UPDATE messages SET deleted_at = now(), updated_at = now(),
                       change_kind = 'delete', change_status = 'queued', change_error = NULL,
                       change_retry_at = NULL, change_seq = change_seq + 1
                     WHERE id = $1 RETURNING change_seq",
                    [message.into()],
                ))
                .await?;
            row.map(|r| r.try_get_by_index(0)).transpose()?
        }
    }
    .ok_or(ApiError::NotFound { what: "message" })?;
    let request = ReplyChange {
        message_id: message,
        conversation_id: conversation,
        tg_chat_id: chat.tg_chat_id,
        seq,
        assignee_id: chat.assignee_id,
    };
    let request = if new_text.is_some() {
        Event::MessageOutgoingEdit(MessageOutgoingEdit(request))
    } else {
        Event::MessageOutgoingDelete(MessageOutgoingDelete(request))
    };
    schema::enqueue(&tx, &Envelope::new(request)).await?;
    schema::enqueue(
        &tx,
        &Envelope::new(Event::MessageUpdated(MessageUpdated {
            message_id: message,
            conversation_id: conversation,
            assignee_id: chat.assignee_id,
        })),
    )
    .await?;
    // Who changed what a customer sees; the texts stay in `message_edits`.
    crate::audit::Entry::new(
        Some(actor),
        action,
        crate::audit::Target::new("message", message),
    )
    .after(Some(serde_json::json!({"conversation_id": conversation})))
    .write(&tx)
    .await?;
    let row = messages::load(&tx, message)
        .await?
        .ok_or(ApiError::NotFound { what: "message" })?;
    tx.commit().await?;
    Ok(Changed::Queued(row))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(text: &str) -> ApiResult<String> {
        Edit { text: text.into() }.checked()
    }

    fn code(r: ApiResult<String>) -> &'static str {
        match r {
            Err(ApiError::Unprocessable { code, .. }) => code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn an_edit_is_checked_as_a_reply_is() {
        assert_eq!(
            edit("fixed: Tuesday 10:00").unwrap(),
            "fixed: Tuesday 10:00"
        );
        assert_eq!(code(edit("")), "empty_text");
        assert_eq!(code(edit(" \n\t")), "empty_text");
        assert_eq!(code(edit("a\0b")), "invalid_text");
        assert_eq!(code(edit(&"я".repeat(MAX_TEXT_CHARS + 1))), "text_too_long");
        assert!(edit(&"я".repeat(MAX_TEXT_CHARS)).is_ok());
    }
}
