//! Attachments (ADR 0017): an upload is a `pending` row and a presigned
//! `PUT` of a key the server chose; a download URL is made on demand, after
//! the caller was found allowed to read the file. The bucket stays private:
//! nothing reaches an object but a URL signed here.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use schema::entities::{attachments, messages};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionSession, TransactionTrait,
    sea_query::{LockBehavior, LockType},
};
use serde::{Deserialize, Serialize};
use storage::{AttachmentStore, GET_URL_TTL, ObjectKey, PUT_URL_TTL};
use uuid::Uuid;

use crate::{
    authz::{Perm, pep::Principal},
    error::{ApiError, ApiResult},
};

/// Telegram's limit on a file a user account sends (2,000 MiB): no
/// configured maximum may exceed it.
pub const TELEGRAM_MAX_BYTES: u64 = 2000 * 1024 * 1024;

/// The maximum by default: 20 MiB, what most students' photos and
/// documents fit in.
pub const DEFAULT_MAX_BYTES: u64 = 20 * 1024 * 1024;

/// Content types accepted by default: photos, documents, audio and video
/// that Telegram shows in a chat.
pub const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/zip",
    "audio/mpeg",
    "audio/ogg",
    "video/mp4",
];

/// Uploads of one user no message took yet, at most.
pub const MAX_PENDING_PER_UPLOADER: u64 = 50;

/// The longest file name kept, in characters.
const MAX_FILENAME_CHARS: usize = 255;

/// What uploads may be.
#[derive(Debug, Clone)]
pub struct AttachmentLimits {
    /// `ATTACHMENT_MAX_BYTES`.
    pub max_bytes: u64,
    /// `ATTACHMENT_CONTENT_TYPES`, lowercase media types.
    pub content_types: Vec<String>,
}

impl Default for AttachmentLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            content_types: DEFAULT_CONTENT_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
        }
    }
}

/// The attachment store and its limits, as the API holds them.
#[derive(Debug, Clone)]
pub struct Attachments {
    pub store: Arc<dyn AttachmentStore>,
    pub limits: AttachmentLimits,
}

/// `POST /api/attachments`: the file about to be uploaded.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UploadRequest {
    /// The file's name as the recipient will see it: 1 to 255 characters,
    /// no `/`, `\`, control characters, and not `.` or `..`.
    #[schema(min_length = 1, max_length = 255)]
    pub filename: String,
    /// Its media type, one of the allowed ones (`ATTACHMENT_CONTENT_TYPES`).
    pub content_type: String,
    /// Its exact size in bytes, 1 to `ATTACHMENT_MAX_BYTES`.
    #[schema(minimum = 1)]
    pub size_bytes: i64,
}

/// Where and how to upload: send `method` to `upload_url` with exactly
/// `headers`, within `expires_in` seconds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Upload {
    pub id: Uuid,
    pub upload_url: String,
    /// Always `PUT`.
    pub method: String,
    /// The headers the upload must carry, and with these values:
    /// `Content-Type` and `Content-Length`.
    pub headers: BTreeMap<String, String>,
    /// Seconds the URL stays valid (600).
    pub expires_in: u64,
}

/// `GET /api/attachments/{id}/url`: a download link.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Download {
    pub url: String,
    /// Seconds the URL stays valid (300).
    pub expires_in: u64,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Unprocessable {
        code,
        message: message.into(),
    }
}

/// A file name as sent to Telegram and offered on download: never a path.
fn check_filename(name: &str) -> ApiResult<()> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_FILENAME_CHARS {
        return Err(invalid(
            "invalid_filename",
            "filename must be 1 to 255 characters",
        ));
    }
    if name.trim().is_empty()
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control() || invisible(c))
    {
        return Err(invalid(
            "invalid_filename",
            "filename must be a plain name: no '/', '\\', control or invisible characters, '.' or '..'",
        ));
    }
    Ok(())
}

/// Characters that change how a name reads without being seen: direction
/// overrides and isolates (which can show `invoice\u{202E}fdp.exe` as
/// "invoiceexe.pdf") and zero-width characters.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// The media type of `declared` (lowercase, without parameters) when the
/// limits allow it.
fn allowed_type(limits: &AttachmentLimits, declared: &str) -> ApiResult<String> {
    let essence = declared
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if limits.content_types.contains(&essence) {
        Ok(essence)
    } else {
        Err(invalid(
            "content_type_not_allowed",
            format!(
                "content_type {declared:?} is not accepted; allowed: {}",
                limits.content_types.join(", ")
            ),
        ))
    }
}

/// A key the server made (or stored): one that does not validate is a bug
/// of ours.
fn server_key(key: Result<ObjectKey, storage::KeyError>) -> ApiResult<ObjectKey> {
    key.map_err(|e| ApiError::Internal(anyhow::anyhow!("attachment key: {e}")))
}

fn storage_unavailable(e: storage::StorageError) -> ApiError {
    ApiError::Unavailable {
        what: "attachment storage",
        cause: e.to_string(),
    }
}

/// Checks the declaration, signs the upload, then writes the `pending` row:
/// a refused or failed request leaves nothing behind.
pub async fn create<C: ConnectionTrait>(
    db: &C,
    attachments: &Attachments,
    uploader: Uuid,
    request: UploadRequest,
) -> ApiResult<Upload> {
    check_filename(&request.filename)?;
    let content_type = allowed_type(&attachments.limits, &request.content_type)?;
    let max = attachments.limits.max_bytes;
    let size = match u64::try_from(request.size_bytes) {
        Ok(0) | Err(_) => {
            return Err(invalid(
                "invalid_size",
                "size_bytes must be at least 1: an empty file cannot be sent",
            ));
        }
        Ok(n) if n > max => {
            return Err(ApiError::PayloadTooLarge {
                code: "attachment_too_large",
                message: format!("size_bytes must be at most {max}"),
            });
        }
        Ok(n) => n,
    };
    // Unused uploads are capped per uploader: an upload URL does not bound
    // what S3 stores, so each one is room for data until the purge.
    let pending = attachments::Entity::find()
        .filter(attachments::Column::UploaderId.eq(uploader))
        .filter(attachments::Column::MessageId.is_null())
        .count(db)
        .await?;
    if pending >= MAX_PENDING_PER_UPLOADER {
        return Err(ApiError::Conflict {
            code: "too_many_pending_uploads",
            message: format!(
                "{pending} uploads of yours are waiting for a message; send or drop them (they expire after a day)"
            ),
        });
    }
    let id = Uuid::now_v7();
    let key = server_key(ObjectKey::attachment(id))?;
    let presigned = attachments
        .store
        .presign_put(&key, &content_type, size, PUT_URL_TTL)
        .await
        .map_err(storage_unavailable)?;
    attachments::ActiveModel {
        id: Set(id),
        uploader_id: Set(Some(uploader)),
        message_id: Set(None),
        object_key: Set(key.as_str().to_owned()),
        filename: Set(request.filename),
        content_type: Set(content_type),
        size_bytes: Set(request.size_bytes),
        status: Set("pending".to_owned()),
        created_at: Set(Utc::now()),
        position: Set(None),
    }
    .insert(db)
    .await?;
    let headers = presigned
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    Ok(Upload {
        id,
        upload_url: presigned.url.to_string(),
        method: presigned.method.to_string(),
        headers,
        expires_in: PUT_URL_TTL.as_secs(),
    })
}

/// A download URL for attachment `id`, if `caller` may read it: an attached
/// file through its conversation's scope, an unattached one only by its
/// uploader. Every other case is `404`, so nothing tells whether it exists.
pub async fn download_url<C: ConnectionTrait>(
    db: &C,
    attachments: &Attachments,
    caller: &Principal,
    id: Uuid,
) -> ApiResult<Download> {
    let not_found = || ApiError::NotFound { what: "attachment" };
    let row = attachments::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let allowed = match row.message_id {
        // A file of a message: readers of its conversation with
        // `attachments.read`.
        Some(message) => {
            let Ok(scope) = caller.inbox_scope() else {
                return Err(not_found());
            };
            if !caller.has(Perm::AttachmentsRead) {
                return Err(not_found());
            }
            let conversation: Option<Uuid> = messages::Entity::find_by_id(message)
                .select_only()
                .column(messages::Column::ConversationId)
                .into_tuple()
                .one(db)
                .await?;
            match conversation {
                Some(conversation) => {
                    match crate::inbox::conversations::visible_chat(db, conversation, scope).await {
                        Ok(_) => true,
                        Err(ApiError::NotFound { .. }) => false,
                        Err(e) => return Err(e),
                    }
                }
                None => false,
            }
        }
        // Not attached yet: its uploader's alone.
        None => row.uploader_id == Some(caller.id),
    };
    if !allowed {
        return Err(not_found());
    }
    let key = server_key(ObjectKey::new(row.object_key.clone()))?;
    let url = attachments
        .store
        .presign_get(&key, &row.content_type, &row.filename, GET_URL_TTL)
        .await
        .map_err(storage_unavailable)?;
    Ok(Download {
        url: url.to_string(),
        expires_in: GET_URL_TTL.as_secs(),
    })
}

/// The most files one message carries (Telegram's album).
pub const MAX_PER_MESSAGE: usize = 10;

/// An upload checked for a message and pinned: its object copied to a key
/// no upload URL names, so what was checked is what is sent.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    upload_key: ObjectKey,
    pinned_key: ObjectKey,
}

/// Where an attached file lives: a key of this attempt's own, written once
/// from the server side. Two requests taking the same upload (a retried
/// POST, a double click) each copy to their own key, so the one that loses
/// removes only its own copy, never the file the winner attached.
fn new_pinned_key() -> ApiResult<ObjectKey> {
    server_key(ObjectKey::new(format!("attached/{}", Uuid::now_v7())))
}

fn refused(id: Uuid, code: &'static str, why: impl std::fmt::Display) -> ApiError {
    invalid(code, format!("attachment {id}: {why}"))
}

/// Checks the uploads `ids` of `uploader` for a message, before its
/// transaction: each is the uploader's own, attached to nothing, and its
/// object is there with the declared size and type. Each is checked on a
/// server-side copy under a key of its own (the HEAD of the copy): the
/// upload URL stays valid for a while, and could otherwise replace the file
/// between the check and the send. The first that fails is named in a 422;
/// the copies made so far are removed then.
pub async fn pin<C: ConnectionTrait>(
    db: &C,
    attachments: &Attachments,
    uploader: Uuid,
    ids: &[Uuid],
) -> ApiResult<Vec<Pinned>> {
    let rows = attachments::Entity::find()
        .filter(schema::finders::any_of(attachments::Column::Id, ids))
        .all(db)
        .await?;
    let mut pinned: Vec<Pinned> = Vec::with_capacity(ids.len());
    for id in ids {
        match pin_one(attachments, uploader, *id, &rows).await {
            Ok(p) => pinned.push(p),
            Err(e) => {
                unpin(attachments.store.as_ref(), &pinned).await;
                return Err(e);
            }
        }
    }
    Ok(pinned)
}

async fn pin_one(
    attachments: &Attachments,
    uploader: Uuid,
    id: Uuid,
    rows: &[attachments::Model],
) -> ApiResult<Pinned> {
    // Another user's upload reads as one that does not exist.
    let Some(row) = rows
        .iter()
        .find(|r| r.id == id && r.uploader_id == Some(uploader))
    else {
        return Err(refused(
            id,
            "attachment_not_found",
            "not among your uploads",
        ));
    };
    if row.message_id.is_some() {
        return Err(refused(
            id,
            "attachment_in_use",
            "already attached to a message",
        ));
    }
    let upload_key = server_key(ObjectKey::new(row.object_key.clone()))?;
    let pinned_key = new_pinned_key()?;
    let store = attachments.store.as_ref();
    let copied = store
        .copy(&upload_key, &pinned_key)
        .await
        .map_err(storage_unavailable)?;
    let declared = u64::try_from(row.size_bytes).unwrap_or(0);
    match copied {
        None => Err(refused(
            id,
            "attachment_not_uploaded",
            "nothing was uploaded for it (or the upload did not finish)",
        )),
        Some(info) if !info.matches(declared, &row.content_type) => {
            let _ = store.delete(&pinned_key).await;
            Err(refused(
                id,
                "attachment_mismatch",
                format!(
                    "the uploaded file is {} bytes of {}, but {} bytes of {} were declared",
                    info.size,
                    info.content_type.as_deref().unwrap_or("no stated type"),
                    row.size_bytes,
                    row.content_type
                ),
            ))
        }
        Some(_) => Ok(Pinned {
            id,
            filename: row.filename.clone(),
            content_type: row.content_type.clone(),
            size: row.size_bytes,
            upload_key,
            pinned_key,
        }),
    }
}

/// Removes the copies of a message that was not written.
pub async fn unpin(store: &dyn AttachmentStore, pinned: &[Pinned]) {
    remove(store, pinned, |p| &p.pinned_key, "a pinned copy").await;
}

/// Deletes one object of each of `pinned`; a failure is logged (the object
/// stays), never the caller's error.
async fn remove(
    store: &dyn AttachmentStore,
    pinned: &[Pinned],
    key: impl Fn(&Pinned) -> &ObjectKey,
    what: &str,
) {
    for p in pinned {
        if let Err(e) = store.delete(key(p)).await {
            tracing::warn!(attachment = %p.id, key = %key(p), error = %e, "{what} could not be removed; it stays in the store");
        }
    }
}

/// Attaches the pinned uploads to `message`, inside its transaction: each
/// row points at its pinned copy. An upload another message took
/// meanwhile, or the purge removed, fails the whole message (422
/// `attachment_in_use`).
pub async fn attach<C: ConnectionTrait>(
    tx: &C,
    uploader: Uuid,
    message: Uuid,
    pinned: &[Pinned],
) -> ApiResult<()> {
    if pinned.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = pinned.iter().map(|p| p.id).collect();
    let keys: Vec<String> = pinned
        .iter()
        .map(|p| p.pinned_key.as_str().to_owned())
        .collect();
    let taken = tx
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "UPDATE attachments a SET message_id = $1, status = 'attached',
               object_key = f.key, position = f.n - 1
             FROM unnest($2::uuid[], $4::text[]) WITH ORDINALITY AS f(id, key, n)
             WHERE a.id = f.id AND a.uploader_id = $3 AND a.message_id IS NULL",
            [
                message.into(),
                ids.clone().into(),
                uploader.into(),
                keys.into(),
            ],
        ))
        .await?
        .rows_affected();
    if taken != ids.len() as u64 {
        return Err(invalid(
            "attachment_in_use",
            "an attachment was taken by another message (or expired) meanwhile",
        ));
    }
    Ok(())
}

/// After the message committed: the uploads' original objects are not
/// needed any more (their rows point at the pinned copies).
pub async fn release_uploads(store: &dyn AttachmentStore, pinned: &[Pinned]) {
    remove(
        store,
        pinned,
        |p| &p.upload_key,
        "an attached upload's original object",
    )
    .await;
}

/// An upload no message took within this long is deleted, object and row.
pub const PENDING_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Uploads deleted per transaction.
const PURGE_BATCH: u64 = 100;

/// Deletes the uploads no message took that are older than `before`: each
/// object, then its row, in batches. Safe on every instance at once (a row
/// is taken by one, `SKIP LOCKED`), and after a failure part-way: a row
/// whose object is already gone is deleted on the next run. A message that
/// tries to take an upload being purged waits for the purge and then finds
/// no row.
pub async fn purge_pending<C: TransactionTrait>(
    db: &C,
    store: &dyn AttachmentStore,
    before: DateTime<Utc>,
) -> ApiResult<u64> {
    use attachments::Column;
    let mut purged = 0;
    loop {
        let tx = db.begin().await?;
        let batch: Vec<(Uuid, String)> = attachments::Entity::find()
            .select_only()
            .columns([Column::Id, Column::ObjectKey])
            .filter(Column::MessageId.is_null())
            .filter(Column::CreatedAt.lt(before))
            .order_by_asc(Column::CreatedAt)
            .limit(PURGE_BATCH)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .into_tuple()
            .all(&tx)
            .await?;
        if batch.is_empty() {
            tx.commit().await?;
            return Ok(purged);
        }
        // A row goes with its object: one whose object cannot be deleted
        // now stays for the next run, and does not hold up the others.
        let mut ids = Vec::with_capacity(batch.len());
        for (id, key) in &batch {
            let deleted = match ObjectKey::new(key.clone()) {
                Ok(key) => store.delete(&key).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match deleted {
                Ok(()) => ids.push(*id),
                Err(e) => tracing::warn!(
                    attachment = %id,
                    error = %e,
                    "an unused upload's object could not be deleted; kept for the next run"
                ),
            }
        }
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(purged);
        }
        let deleted = attachments::Entity::delete_many()
            .filter(schema::finders::any_of(Column::Id, &ids))
            .exec(&tx)
            .await?
            .rows_affected;
        tx.commit().await?;
        purged += deleted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_plain_names() {
        for good in ["photo.jpg", "Домашка 3.pdf", "a b", "..hidden", "x.."] {
            assert!(check_filename(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            " ",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            "a\\b",
            "a\0b",
            "line\nbreak",
            "invoice\u{202E}fdp.exe",
            "zero\u{200B}width",
            &"x".repeat(256),
        ] {
            assert!(check_filename(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_types_are_compared_by_media_type() {
        let limits = AttachmentLimits::default();
        assert_eq!(
            allowed_type(&limits, "Image/JPEG; q=1").unwrap(),
            "image/jpeg"
        );
        assert!(allowed_type(&limits, "text/html").is_err());
        assert!(allowed_type(&limits, "application/x-msdownload").is_err());
        assert!(allowed_type(&limits, "").is_err());
    }
}
