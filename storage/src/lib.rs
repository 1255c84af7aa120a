//! Where attachments live: one trait, [`AttachmentStore`], with two backends
//! (ADR 0017).
//!
//! - [`S3Store`]: any S3-compatible bucket (AWS S3, Cloudflare R2, …) through
//!   `object_store`, with SigV4 presigned URLs.
//! - [`LocalStore`]: a directory under `DATA_DIR`, with URLs the API signs
//!   itself (HMAC-SHA256) and serves through [`LocalStore::router`].
//!
//! Both hand out the same kind of URLs with the same lifetimes
//! ([`PUT_URL_TTL`], [`GET_URL_TTL`]), and neither can bound an upload's size
//! in the URL alone: a browser may send more or fewer bytes than it declared
//! to S3. So the server checks each object with [`AttachmentStore::head`]
//! before it accepts a message that refers to it ([`ObjectInfo::matches`]).
//!
//! Start-up: [`StorageConfig::from_env`] says which backend, and
//! [`StorageConfig::open`] builds it.

mod config;
mod headers;
mod key;
mod local;
mod s3;
#[cfg(feature = "test-support")]
pub mod testing;
mod write;

use std::{fmt, time::Duration};

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderValue, Method};
use bytes::Bytes;
use futures::stream::BoxStream;
use url::Url;

pub use config::{Opened, S3Config, StorageConfig};
pub use headers::{check_content_type, content_disposition, essence_matches};
pub use key::{KeyError, ObjectKey};
pub use local::{BLOB_ROUTE, KEY_FILE, LocalStore, load_or_create_key};
pub use s3::S3Store;

/// How long a presigned upload URL stays valid (DESIGN §8: `expires_in: 600`).
pub const PUT_URL_TTL: Duration = Duration::from_secs(600);
/// How long a presigned download URL stays valid (DESIGN §8: `expires_in: 300`).
pub const GET_URL_TTL: Duration = Duration::from_secs(300);

/// A stream of an object's bytes, in or out.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// The private store of attachment objects. Keys are chosen by the server
/// ([`ObjectKey`]); no caller-supplied text ever becomes a path.
#[async_trait]
pub trait AttachmentStore: Send + Sync + fmt::Debug {
    /// A URL a client can upload one object to, until `ttl` has passed, by
    /// sending `method` with exactly `headers` (`Content-Type` and
    /// `Content-Length`). The content type is part of the signature on both
    /// backends; the length is enforced by the local backend only, so the
    /// server must [`head`](Self::head) the object before trusting it.
    async fn presign_put(
        &self,
        key: &ObjectKey,
        content_type: &str,
        size: u64,
        ttl: Duration,
    ) -> Result<Presigned, StorageError>;

    /// A URL that downloads the object until `ttl` has passed, served with
    /// `content_type` and `Content-Disposition: attachment` carrying
    /// `download_name` (see [`content_disposition`]).
    async fn presign_get(
        &self,
        key: &ObjectKey,
        content_type: &str,
        download_name: &str,
        ttl: Duration,
    ) -> Result<Url, StorageError>;

    /// The object's size and stored content type, or `None` when there is
    /// no object under `key`.
    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StorageError>;

    /// Stores `body` under `key` from the server side (inbound media).
    /// Nothing is visible under `key` until the whole body is stored; an
    /// existing object is replaced. Returns the number of bytes stored.
    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        content_type: &str,
    ) -> Result<u64, StorageError>;

    /// The object's bytes, or `None` when there is no object under `key`.
    async fn get(&self, key: &ObjectKey) -> Result<Option<Object>, StorageError>;

    /// Copies the object under `from` to `to` on the store's side (no bytes
    /// pass through the caller), replacing what `to` held. Returns the
    /// copy's size and content type as stored, or `None` when there is no
    /// object under `from`. A copy under a key no upload URL names is a
    /// pinned version of what was uploaded: the upload URL, still valid,
    /// cannot change it.
    async fn copy(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
    ) -> Result<Option<ObjectInfo>, StorageError>;

    /// Removes the object; a missing object is not an error.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;

    /// [`put`](Self::put) of bytes already in memory.
    async fn put_bytes(
        &self,
        key: &ObjectKey,
        body: Bytes,
        content_type: &str,
    ) -> Result<u64, StorageError> {
        let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(body) }));
        self.put(key, body, content_type).await
    }
}

/// A store's answer with a missing object as `None`.
pub(crate) fn found<T>(result: object_store::Result<T>) -> Result<Option<T>, StorageError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A presigned request: send `method` to `url` with exactly `headers`.
#[derive(Debug, Clone)]
pub struct Presigned {
    pub url: Url,
    pub method: Method,
    /// `Content-Type` and `Content-Length`. A browser's `fetch` sets
    /// `Content-Length` itself from the body it sends.
    pub headers: HeaderMap,
}

impl Presigned {
    /// An upload of `size` bytes of `content_type` to `url`.
    pub(crate) fn put(url: Url, content_type: HeaderValue, size: u64) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::CONTENT_TYPE, content_type);
        headers.insert(axum::http::header::CONTENT_LENGTH, HeaderValue::from(size));
        Self {
            url,
            method: Method::PUT,
            headers,
        }
    }
}

/// What [`AttachmentStore::head`] learns of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// As stored with the object; `None` if the store kept none.
    pub content_type: Option<String>,
}

impl ObjectInfo {
    /// Whether the object is what its uploader declared: exactly `size`
    /// bytes, and `content_type` (compared by media type, ignoring case and
    /// parameters).
    pub fn matches(&self, size: u64, content_type: &str) -> bool {
        self.size == size
            && self
                .content_type
                .as_deref()
                .is_some_and(|stored| essence_matches(stored, content_type))
    }
}

/// An object being read.
pub struct Object {
    pub info: ObjectInfo,
    pub body: ByteStream,
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Object")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    InvalidKey(#[from] KeyError),
    #[error("invalid content type {0:?}: expected type/subtype in visible ASCII")]
    InvalidContentType(String),
    #[error("invalid storage setting: {0}")]
    Config(String),
    #[error("object store: {0}")]
    Backend(#[from] object_store::Error),
    #[error("local storage: {0}")]
    Io(#[from] std::io::Error),
}
