//! `inbound`: turns `tg.update.received.v1` into contact, conversation and
//! message rows plus `message.received.v1`, in one transaction. An edit
//! replaces the message's text, keeps the old one in `message_edits` and
//! writes `message.edited.v1`.
//!
//! One instance at a time consumes (the queue has a single active
//! consumer), a chat's updates are handled in queue order, and an update
//! that cannot be stored yet waits in place: each chat's messages are
//! stored and announced in the order Telegram gave them (ADR 0012).

use std::{borrow::Cow, sync::Arc};

use async_trait::async_trait;
use broker_config::adapter_api::MEDIA_PATH;
use broker_config::{
    Context, Envelope, Event, Failure, Handler,
    events::{
        MessageEdited, MessageReceived, MessageUpdated, TgUpdateDeleted, TgUpdateRead,
        TgUpdateReceived,
    },
    topology::INBOUND,
};
use schema::entities::{attachments, message_edits, messages};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter,
    QuerySelect, Statement, Value,
    sea_query::Expr,
};
use secrecy::{ExposeSecret, SecretString};
use storage::{AttachmentStore, ObjectKey};
use uuid::Uuid;

/// Characters of the text carried in `message.received.v1`.
const PREVIEW_CHARS: usize = 120;

pub struct Inbound {
    relay_wake: schema::RelayWake,
    media: Option<InboundMedia>,
}

impl Inbound {
    /// Without `media`, an update that carries a file fails to the
    /// dead-letter queue (`inbound_media_unconfigured`), to be replayed once
    /// it is configured.
    pub fn new(relay_wake: schema::RelayWake, media: Option<InboundMedia>) -> Self {
        Self { relay_wake, media }
    }
}

/// Where customers' files go: read from the TG adapter
/// (`GET /v1/media/{file_id}`) as a stream and written to the attachment
/// store, then linked to their message in its transaction.
pub struct InboundMedia {
    pub store: Arc<dyn AttachmentStore>,
    pub http: reqwest::Client,
    pub adapter_url: String,
    pub token: SecretString,
}

/// A customer's file, kept in the store, to link to its message.
struct KeptFile {
    key: ObjectKey,
    filename: String,
    content_type: String,
    size: u64,
    position: usize,
}

impl InboundMedia {
    /// Streams the files of `u` from the adapter into the store, before the
    /// message's rows are written (so no row of its conversation is locked
    /// while a file travels). Each goes under a key of its update's own
    /// (`inbound/<chat>/<message>/<n>`): a try after a failure writes the
    /// same object again. A file the adapter no longer has is skipped (the
    /// message is kept without it, and the log says so).
    async fn fetch(&self, u: &TgUpdateReceived) -> Result<Vec<KeptFile>, Failure> {
        use futures::TryStreamExt;
        let mut kept = Vec::with_capacity(u.media.len());
        for (n, media) in u.media.iter().enumerate() {
            let Some(file_id) = &media.file_id else {
                tracing::warn!(tg_chat_id = u.chat.id, tg_message_id = u.tg_message_id, kind = %media.kind, "a file without file_id cannot be fetched; skipped");
                continue;
            };
            let key = ObjectKey::new(format!("inbound/{}/{}/{n}", u.chat.id, u.tg_message_id))
                .map_err(|e| Failure::permanent(format!("inbound file key: {e}")))?;
            let content_type = media
                .content_type
                .as_deref()
                .map(str::to_ascii_lowercase)
                .filter(|ct| plausible_media_type(ct) && storage::check_content_type(ct).is_ok())
                .unwrap_or_else(|| default_media_type(&media.kind).to_owned());
            let url = format!(
                "{}{MEDIA_PATH}/{}",
                self.adapter_url.trim_end_matches('/'),
                path_segment(file_id)
            );
            let response = self
                .http
                .get(url)
                .bearer_auth(self.token.expose_secret())
                .send()
                .await
                .map_err(|_| Failure::retryable("the TG adapter is unreachable for a file"))?;
            match response.status().as_u16() {
                200 => {}
                404 => {
                    tracing::warn!(tg_chat_id = u.chat.id, tg_message_id = u.tg_message_id, %file_id, "the TG adapter no longer has a file of this message; the message is kept without it");
                    continue;
                }
                status => {
                    return Err(Failure::retryable(format!(
                        "the TG adapter answered {status} for a file"
                    )));
                }
            }
            let body = response.bytes_stream().map_err(std::io::Error::other);
            let size = self
                .store
                .put(&key, Box::pin(body), &content_type)
                .await
                .map_err(|e| Failure::retryable(format!("attachment storage: {e}")))?;
            kept.push(KeptFile {
                key,
                filename: file_name(media),
                content_type,
                size,
                position: n,
            });
        }
        Ok(kept)
    }

    /// Links the kept files to new message `message_id`, in its
    /// transaction; a row is written once per object.
    async fn link(
        tx: &DatabaseTransaction,
        message_id: Uuid,
        files: Vec<KeptFile>,
    ) -> Result<(), Failure> {
        for f in files {
            attachments::Entity::insert(attachments::ActiveModel {
                id: Set(Uuid::now_v7()),
                uploader_id: Set(None),
                message_id: Set(Some(message_id)),
                object_key: Set(f.key.as_str().to_owned()),
                filename: Set(f.filename),
                content_type: Set(f.content_type),
                size_bytes: Set(i64::try_from(f.size).unwrap_or(i64::MAX)),
                status: Set("attached".to_owned()),
                created_at: Set(chrono::Utc::now()),
                position: Set(i16::try_from(f.position).ok()),
            })
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(attachments::Column::ObjectKey)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(tx)
            .await
            .map_err(Failure::from_db)?;
        }
        Ok(())
    }
}

/// Whether the message of `u` is stored already (the same update again).
async fn already_stored<C: ConnectionTrait>(tx: &C, u: &TgUpdateReceived) -> Result<bool, DbErr> {
    let found: Option<(bool,)> = one(
        tx,
        "SELECT EXISTS (SELECT 1 FROM messages m JOIN conversations c ON c.id = m.conversation_id
                        WHERE c.tg_chat_id = $1 AND m.direction = 'in' AND m.tg_message_id = $2)",
        [u.chat.id.into(), u.tg_message_id.into()],
    )
    .await?;
    Ok(found.is_some_and(|(b,)| b))
}

/// A `file_id` as one path segment: every byte but letters and digits
/// escaped (no `.` or `..` left for a URL to resolve).
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `type/subtype` in visible ASCII, without parameters.
fn plausible_media_type(ct: &str) -> bool {
    ct.len() <= 100
        && ct.bytes().all(|b| b.is_ascii_graphic() && b != b';')
        && matches!(ct.split_once('/'), Some((t, s)) if !t.is_empty() && !s.is_empty() && !s.contains('/'))
}

fn default_media_type(kind: &str) -> &'static str {
    match kind {
        "photo" => "image/jpeg",
        "voice" => "audio/ogg",
        "audio" => "audio/mpeg",
        "video" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// The name a file is offered under: Telegram's, made a plain name, or one
/// after its kind.
fn file_name(media: &broker_config::events::TgMedia) -> String {
    let given: String = media
        .filename
        .as_deref()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .take(255)
        .collect();
    if given.trim().is_empty() || given == "." || given == ".." {
        match media.kind.as_str() {
            "photo" => "photo.jpg",
            "voice" => "voice.ogg",
            "audio" => "audio.mp3",
            "video" => "video.mp4",
            _ => "file",
        }
        .to_owned()
    } else {
        given
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
            Event::TgUpdateDeleted(TgUpdateDeleted {
                chat_id: Some(chat),
                ..
            })
            | Event::TgUpdateRead(TgUpdateRead { chat_id: chat, .. }) => Some(chat.to_string()),
            _ => None,
        }
    }

    // `waits_in_place` comes from the queue's single active consumer: an
    // update that cannot be stored yet holds its chat's later updates back.

    async fn handle(&self, ctx: &Context<'_>, tx: &DatabaseTransaction) -> Result<(), Failure> {
        let update = match &ctx.envelope.event {
            Event::TgUpdateReceived(update) => update,
            // Deletions and read receipts (from the MTProto backend) mark
            // the messages they cover; the inbox is told of each.
            Event::TgUpdateDeleted(d) => return Ok(store_deletion(tx, d).await?),
            Event::TgUpdateRead(r) => return Ok(store_read(tx, r).await?),
            _ => {
                return Err(Failure::permanent(format!(
                    "inbound cannot handle {}",
                    ctx.envelope.event_type()
                )));
            }
        };
        // Refused data goes to the dead-letter queue at once rather than
        // hold its chat through the whole retry schedule.
        // A new message's files (an edit keeps the files it had), fetched
        // before its rows are written.
        let mut files = Vec::new();
        if update.edited_at.is_none() && !update.media.is_empty() {
            let Some(media) = &self.media else {
                return Err(Failure::permanent("inbound_media_unconfigured"));
            };
            if !already_stored(tx, update).await.map_err(Failure::from_db)? {
                files = media.fetch(update).await?;
            }
        }
        let stored = store(update, tx).await.map_err(Failure::from_db)?;
        if let Some(message_id) = stored
            && !files.is_empty()
        {
            InboundMedia::link(tx, message_id, files).await?;
        }
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
///
/// The three upserts stay one statement each (ADR 0014): each merges what it
/// finds in the row in one round trip.
pub async fn store<C: ConnectionTrait>(
    u: &TgUpdateReceived,
    tx: &C,
) -> Result<Option<Uuid>, DbErr> {
    let u = &*storable(u);
    let contact_id: Uuid = one(
        tx,
        "INSERT INTO contacts (id, tg_user_id, username, first_name, last_name)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tg_user_id) DO UPDATE SET
           username = COALESCE(EXCLUDED.username, contacts.username),
           first_name = COALESCE(EXCLUDED.first_name, contacts.first_name),
           last_name = COALESCE(EXCLUDED.last_name, contacts.last_name),
           updated_at = now()
         RETURNING id",
        [
            Uuid::now_v7().into(),
            u.sender.id.into(),
            u.sender.username.clone().into(),
            u.sender.first_name.clone().into(),
            u.sender.last_name.clone().into(),
        ],
    )
    .await?
    .ok_or(DbErr::RecordNotInserted)?;
    let title = u.chat.title.clone().unwrap_or_else(|| display_name(u));
    let (conversation_id, assignee_id): (Uuid, Option<Uuid>) = one(
        tx,
        "INSERT INTO conversations (id, tg_chat_id, contact_id, title, last_message_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tg_chat_id) DO UPDATE SET
           last_message_at = GREATEST(conversations.last_message_at, EXCLUDED.last_message_at),
           status = CASE WHEN $6 AND conversations.status IN ('resolved', 'snoozed') THEN 'open' ELSE conversations.status END,
           updated_at = now()
         RETURNING id, assignee_id",
        [
            Uuid::now_v7().into(),
            u.chat.id.into(),
            contact_id.into(),
            title.into(),
            u.date.into(),
            // An edit does not reopen a conversation; a new message does.
            u.edited_at.is_none().into(),
        ],
    )
    .await?
    .ok_or(DbErr::RecordNotInserted)?;
    if let Some(edited_at) = u.edited_at
        && let Some(id) = edit(u, conversation_id, assignee_id, edited_at, tx).await?
    {
        return Ok(Some(id));
    }
    // A new message (or an edit of one never received: stored as it now is).
    let message_id: Option<(Uuid,)> = one(
        tx,
        "INSERT INTO messages (id, conversation_id, direction, text, tg_message_id, status, created_at, edited_at)
         VALUES ($1, $2, 'in', $3, $4, 'received', $5, $6)
         ON CONFLICT (conversation_id, direction, tg_message_id) DO NOTHING
         RETURNING id",
        [
            Uuid::now_v7().into(),
            conversation_id.into(),
            u.text.clone().into(),
            u.tg_message_id.into(),
            u.date.into(),
            u.edited_at.into(),
        ],
    )
    .await?;
    let message_id = message_id.map(|(id,)| id);
    if let Some(message_id) = message_id {
        let event = Envelope::new(Event::MessageReceived(MessageReceived {
            message_id,
            conversation_id,
            preview: u.text.chars().take(PREVIEW_CHARS).collect(),
            assignee_id,
        }));
        schema::enqueue(tx, &event).await?;
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
async fn edit<C: ConnectionTrait>(
    u: &TgUpdateReceived,
    conversation_id: Uuid,
    assignee_id: Option<Uuid>,
    edited_at: chrono::DateTime<chrono::Utc>,
    tx: &C,
) -> Result<Option<Uuid>, DbErr> {
    use messages::Column;
    let current: Option<(Uuid, String, Option<chrono::DateTime<chrono::Utc>>)> =
        messages::Entity::of_conversation(conversation_id)
            .filter(Column::Direction.eq("in"))
            .filter(Column::TgMessageId.eq(u.tg_message_id))
            .select_only()
            .columns([Column::Id, Column::Text, Column::EditedAt])
            .lock_exclusive()
            .into_tuple()
            .one(tx)
            .await?;
    let Some((message_id, text, last_edit)) = current else {
        return Ok(None);
    };
    if text == u.text || last_edit.is_some_and(|t| t >= edited_at) {
        tracing::info!(%message_id, "edit already applied or superseded");
        return Ok(Some(message_id));
    }
    message_edits::Entity::insert(message_edits::ActiveModel {
        id: NotSet,
        message_id: Set(message_id),
        text: Set(text),
        replaced_at: Set(edited_at),
        created_at: NotSet,
        editor_id: NotSet,
    })
    .exec_without_returning(tx)
    .await?;
    messages::Entity::update_many()
        .col_expr(Column::Text, Expr::value(u.text.clone()))
        .col_expr(Column::EditedAt, Expr::value(edited_at))
        .col_expr(Column::UpdatedAt, Expr::current_timestamp())
        .filter(Column::Id.eq(message_id))
        .exec(tx)
        .await?;
    let event = Envelope::new(Event::MessageEdited(MessageEdited {
        message_id,
        conversation_id,
        edited_at,
        assignee_id,
    }));
    schema::enqueue(tx, &event).await?;
    Ok(Some(message_id))
}

/// Tells the inbox that each of `rows` (message, conversation, assignee)
/// changed.
async fn updated<C: ConnectionTrait>(
    tx: &C,
    rows: Vec<sea_orm::QueryResult>,
) -> Result<usize, DbErr> {
    let n = rows.len();
    for row in rows {
        let (message_id, conversation_id, assignee_id): (Uuid, Uuid, Option<Uuid>) =
            row.try_get_many_by_index()?;
        let event = Envelope::new(Event::MessageUpdated(MessageUpdated {
            message_id,
            conversation_id,
            assignee_id,
        }));
        schema::enqueue(tx, &event).await?;
    }
    Ok(n)
}

/// Messages deleted in Telegram (by the customer, or by the account in
/// another app) are marked `deleted_at`; their rows and texts stay for
/// staff. Without a chat (private chats' ids are the account's own), the
/// ids are matched in every chat.
async fn store_deletion<C: ConnectionTrait>(tx: &C, d: &TgUpdateDeleted) -> Result<(), DbErr> {
    if d.tg_message_ids.is_empty() {
        return Ok(());
    }
    // Numbers only: the array is written as a literal.
    let ids = d
        .tg_message_ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let rows = tx
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "UPDATE messages m SET deleted_at = $2, updated_at = now()
                 FROM conversations c
                 WHERE c.id = m.conversation_id AND m.deleted_at IS NULL
                   AND m.tg_message_id = ANY('{{{ids}}}'::bigint[])
                   AND ($1::bigint IS NULL OR c.tg_chat_id = $1)
                 RETURNING m.id, m.conversation_id, c.assignee_id"
            ),
            [d.chat_id.into(), d.deleted_at.into()],
        ))
        .await?;
    let n = updated(tx, rows).await?;
    tracing::info!(chat_id = ?d.chat_id, asked = d.tg_message_ids.len(), marked = n, "deletion stored");
    Ok(())
}

/// The customer read the account's messages up to `max_id`: the replies it
/// covers get `read_at`. The account's own reading (in another app) is
/// not the customer's, and marks nothing.
async fn store_read<C: ConnectionTrait>(tx: &C, r: &TgUpdateRead) -> Result<(), DbErr> {
    if !r.outgoing {
        tracing::debug!(chat_id = r.chat_id, "the account read the chat elsewhere");
        return Ok(());
    }
    let rows = tx
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE messages m SET read_at = $3, updated_at = now()
             FROM conversations c
             WHERE c.id = m.conversation_id AND c.tg_chat_id = $1 AND m.direction = 'out'
               AND m.tg_message_id <= $2 AND m.read_at IS NULL
             RETURNING m.id, m.conversation_id, c.assignee_id",
            [r.chat_id.into(), r.max_id.into(), r.read_at.into()],
        ))
        .await?;
    let n = updated(tx, rows).await?;
    tracing::debug!(chat_id = r.chat_id, marked = n, "read receipt stored");
    Ok(())
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

/// The row a raw statement returns, if any, as a tuple.
async fn one<C: ConnectionTrait, T: sea_orm::TryGetableMany>(
    conn: &C,
    sql: &str,
    values: impl IntoIterator<Item = Value>,
) -> Result<Option<T>, DbErr> {
    conn.query_one_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await?
    .map(|row| row.try_get_many_by_index())
    .transpose()
}

#[cfg(test)]
mod media_tests {
    use super::*;
    use broker_config::events::TgMedia;

    fn media(kind: &str, filename: Option<&str>) -> TgMedia {
        TgMedia {
            kind: kind.into(),
            file_id: Some("f".into()),
            filename: filename.map(str::to_owned),
            size: None,
            content_type: None,
        }
    }

    #[test]
    fn a_file_name_is_never_a_path() {
        assert_eq!(
            file_name(&media("document", Some("../a/b.pdf"))),
            ".._a_b.pdf"
        );
        assert_eq!(
            file_name(&media("document", Some("a\\b\n.txt"))),
            "a_b_.txt"
        );
        assert_eq!(file_name(&media("document", Some(".."))), "file");
        assert_eq!(file_name(&media("photo", None)), "photo.jpg");
        assert_eq!(file_name(&media("voice", Some("  "))), "voice.ogg");
        assert_eq!(
            file_name(&media("document", Some(&"x".repeat(300)))).len(),
            255
        );
    }

    #[test]
    fn only_plain_media_types_are_kept() {
        assert!(plausible_media_type("image/jpeg"));
        assert!(!plausible_media_type("image/jpeg; q=1"));
        assert!(!plausible_media_type("text/html\r\nx: y"));
        assert!(!plausible_media_type("jpeg"));
        assert!(!plausible_media_type("a/b/c"));
        assert_eq!(default_media_type("voice"), "audio/ogg");
        assert_eq!(default_media_type("sticker"), "application/octet-stream");
    }
}
