//! `inbound`: turns `tg.update.received.v1` into contact, conversation and
//! message rows plus `message.received.v1`, in one transaction. An edit
//! replaces the message's text, keeps the old one in `message_edits` and
//! writes `message.edited.v1`.
//!
//! One instance at a time consumes (the queue has a single active
//! consumer), a chat's updates are handled in queue order, and an update
//! that cannot be stored yet waits in place: each chat's messages are
//! stored and announced in the order Telegram gave them (ADR 0012).

use std::borrow::Cow;

use async_trait::async_trait;
use broker_config::{
    Context, Envelope, Event, Failure, Handler,
    events::{MessageEdited, MessageReceived, TgUpdateReceived},
    topology::INBOUND,
};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// Characters of the text carried in `message.received.v1`.
const PREVIEW_CHARS: usize = 120;

pub struct Inbound {
    relay_wake: schema::RelayWake,
}

impl Inbound {
    pub fn new(relay_wake: schema::RelayWake) -> Self {
        Self { relay_wake }
    }
}

#[async_trait]
impl Handler for Inbound {
    fn queue(&self) -> &'static str {
        INBOUND.name
    }

    fn committed(&self) {
        self.relay_wake.committed();
    }

    /// A chat's updates are stored one at a time, in the order Telegram
    /// gave them (ADR 0012).
    fn ordering_key(&self, envelope: &Envelope) -> Option<String> {
        match &envelope.event {
            Event::TgUpdateReceived(update) => Some(update.chat.id.to_string()),
            _ => None,
        }
    }

    // `waits_in_place` comes from the queue's single active consumer: an
    // update that cannot be stored yet holds its chat's later updates back.

    async fn handle(
        &self,
        ctx: &Context<'_>,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<(), Failure> {
        let Event::TgUpdateReceived(update) = &ctx.envelope.event else {
            return Err(Failure::permanent(format!(
                "inbound cannot handle {}",
                ctx.envelope.event_type()
            )));
        };
        // Refused data goes to the dead-letter queue at once rather than
        // hold its chat through the whole retry schedule.
        store(update, tx).await.map_err(Failure::from_db)?;
        Ok(())
    }
}

/// PostgreSQL text (and JSON) cannot hold NUL, which Telegram text can:
/// each NUL becomes U+FFFD, so such a message is stored and shown instead of
/// failing for ever as a poison message.
fn storable(u: &TgUpdateReceived) -> Cow<'_, TgUpdateReceived> {
    let nul = |s: &Option<String>| s.as_deref().is_some_and(|s| s.contains('\0'));
    if !(u.text.contains('\0')
        || nul(&u.chat.title)
        || nul(&u.sender.username)
        || nul(&u.sender.first_name)
        || nul(&u.sender.last_name))
    {
        return Cow::Borrowed(u);
    }
    let mut u = u.clone();
    u.text = u.text.replace('\0', "\u{FFFD}");
    for field in [
        &mut u.chat.title,
        &mut u.sender.username,
        &mut u.sender.first_name,
        &mut u.sender.last_name,
    ]
    .into_iter()
    .flatten()
    {
        *field = field.replace('\0', "\u{FFFD}");
    }
    Cow::Owned(u)
}

/// Stores one update; a `tg_message_id` already stored for the chat is a no-op.
pub async fn store(
    u: &TgUpdateReceived,
    tx: &mut Transaction<'static, Postgres>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let u = &*storable(u);
    let contact_id: Uuid = sqlx::query_scalar(
        "INSERT INTO contacts (id, tg_user_id, username, first_name, last_name)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tg_user_id) DO UPDATE SET
           username = COALESCE(EXCLUDED.username, contacts.username),
           first_name = COALESCE(EXCLUDED.first_name, contacts.first_name),
           last_name = COALESCE(EXCLUDED.last_name, contacts.last_name),
           updated_at = now()
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(u.sender.id)
    .bind(&u.sender.username)
    .bind(&u.sender.first_name)
    .bind(&u.sender.last_name)
    .fetch_one(&mut **tx)
    .await?;
    let title = u.chat.title.clone().unwrap_or_else(|| display_name(u));
    let (conversation_id, assignee_id): (Uuid, Option<Uuid>) = sqlx::query_as(
        "INSERT INTO conversations (id, tg_chat_id, contact_id, title, last_message_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tg_chat_id) DO UPDATE SET
           last_message_at = GREATEST(conversations.last_message_at, EXCLUDED.last_message_at),
           status = CASE WHEN $6 AND conversations.status IN ('resolved', 'snoozed') THEN 'open' ELSE conversations.status END,
           updated_at = now()
         RETURNING id, assignee_id",
    )
    .bind(Uuid::now_v7())
    .bind(u.chat.id)
    .bind(contact_id)
    .bind(&title)
    .bind(u.date)
    // An edit does not reopen a conversation; a new message does.
    .bind(u.edited_at.is_none())
    .fetch_one(&mut **tx)
    .await?;
    if let Some(edited_at) = u.edited_at
        && let Some(id) = edit(u, conversation_id, assignee_id, edited_at, tx).await?
    {
        return Ok(Some(id));
    }
    // A new message (or an edit of one never received: stored as it now is).
    let message_id: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO messages (id, conversation_id, direction, text, tg_message_id, status, created_at, edited_at)
         VALUES ($1, $2, 'in', $3, $4, 'received', $5, $6)
         ON CONFLICT (conversation_id, direction, tg_message_id) DO NOTHING
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(conversation_id)
    .bind(&u.text)
    .bind(u.tg_message_id)
    .bind(u.date)
    .bind(u.edited_at)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(message_id) = message_id {
        let event = Envelope::new(Event::MessageReceived(MessageReceived {
            message_id,
            conversation_id,
            preview: u.text.chars().take(PREVIEW_CHARS).collect(),
            assignee_id,
        }));
        schema::outbox::on_sqlx::enqueue(tx, &event).await?;
    } else {
        tracing::info!(
            tg_chat_id = u.chat.id,
            tg_message_id = u.tg_message_id,
            "inbound message already stored"
        );
    }
    Ok(message_id)
}

/// Applies an edit to a stored message: `None` when the message is not
/// stored (the caller stores it as new). An edit older than the message's
/// latest one, or one that leaves the text as it is, changes nothing.
async fn edit(
    u: &TgUpdateReceived,
    conversation_id: Uuid,
    assignee_id: Option<Uuid>,
    edited_at: chrono::DateTime<chrono::Utc>,
    tx: &mut Transaction<'static, Postgres>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let current: Option<(Uuid, String, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "SELECT id, text, edited_at FROM messages
         WHERE conversation_id = $1 AND direction = 'in' AND tg_message_id = $2
         FOR UPDATE",
    )
    .bind(conversation_id)
    .bind(u.tg_message_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((message_id, text, last_edit)) = current else {
        return Ok(None);
    };
    if text == u.text || last_edit.is_some_and(|t| t >= edited_at) {
        tracing::info!(%message_id, "edit already applied or superseded");
        return Ok(Some(message_id));
    }
    sqlx::query("INSERT INTO message_edits (message_id, text, replaced_at) VALUES ($1, $2, $3)")
        .bind(message_id)
        .bind(&text)
        .bind(edited_at)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE messages SET text = $2, edited_at = $3, updated_at = now() WHERE id = $1")
        .bind(message_id)
        .bind(&u.text)
        .bind(edited_at)
        .execute(&mut **tx)
        .await?;
    let event = Envelope::new(Event::MessageEdited(MessageEdited {
        message_id,
        conversation_id,
        edited_at,
        assignee_id,
    }));
    schema::outbox::on_sqlx::enqueue(tx, &event).await?;
    Ok(Some(message_id))
}

fn display_name(u: &TgUpdateReceived) -> String {
    let name = [
        u.sender.first_name.as_deref(),
        u.sender.last_name.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    if !name.is_empty() {
        name
    } else if let Some(username) = &u.sender.username {
        format!("@{username}")
    } else {
        format!("Telegram user {}", u.sender.id)
    }
}
