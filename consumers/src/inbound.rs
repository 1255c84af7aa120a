//! `inbound`: turns `tg.update.received.v1` into contact, conversation and
//! message rows plus `message.received.v1`, in one transaction.

use async_trait::async_trait;
use broker_config::{
    Context, Envelope, Event, Failure, Handler,
    events::{MessageReceived, TgUpdateReceived},
    topology::INBOUND,
};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// Characters of the text carried in `message.received.v1`.
const PREVIEW_CHARS: usize = 120;

pub struct Inbound;

#[async_trait]
impl Handler for Inbound {
    fn queue(&self) -> &'static str {
        INBOUND.name
    }

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
        store(update, tx).await?;
        Ok(())
    }
}

/// Stores one update; a `tg_message_id` already stored for the chat is a no-op.
pub async fn store(
    u: &TgUpdateReceived,
    tx: &mut Transaction<'static, Postgres>,
) -> Result<Option<Uuid>, sqlx::Error> {
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
           status = CASE WHEN conversations.status IN ('resolved', 'snoozed') THEN 'open' ELSE conversations.status END,
           updated_at = now()
         RETURNING id, assignee_id",
    )
    .bind(Uuid::now_v7())
    .bind(u.chat.id)
    .bind(contact_id)
    .bind(&title)
    .bind(u.date)
    .fetch_one(&mut **tx)
    .await?;
    let message_id: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO messages (id, conversation_id, direction, text, tg_message_id, status, created_at)
         VALUES ($1, $2, 'in', $3, $4, 'received', $5)
         ON CONFLICT (conversation_id, direction, tg_message_id) DO NOTHING
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(conversation_id)
    .bind(&u.text)
    .bind(u.tg_message_id)
    .bind(u.date)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(message_id) = message_id {
        let event = Envelope::new(Event::MessageReceived(MessageReceived {
            message_id,
            conversation_id,
            preview: u.text.chars().take(PREVIEW_CHARS).collect(),
            assignee_id,
        }));
        schema::enqueue(tx, &event, &serde_json::json!({})).await?;
    } else {
        tracing::info!(
            tg_chat_id = u.chat.id,
            tg_message_id = u.tg_message_id,
            "inbound message already stored"
        );
    }
    Ok(message_id)
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
