//! The local backend: objects in a directory under `DATA_DIR` through
//! `object_store`'s `LocalFileSystem`, with URLs the API signs itself and
//! serves through [`LocalStore::router`].
//!
//! Layout of the directory: `objects/<key>` holds the bytes,
//! `meta/<key>` the content type (`LocalFileSystem` stores no attributes),
//! and [`KEY_FILE`] the signing key when none is configured.

mod http;
mod key_file;
mod signing;

use std::{path::Path, sync::Arc, time::Duration, time::SystemTime};

use async_trait::async_trait;
use axum::http::HeaderValue;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, local::LocalFileSystem, path::Path as ObjectPath};
use secrecy::SecretString;
use url::Url;

pub use http::BLOB_ROUTE;
pub use key_file::{KEY_FILE, load_or_create_key};

use crate::{
    AttachmentStore, ByteStream, Object, ObjectInfo, ObjectKey, Presigned, StorageError, found,
    headers::check_content_type,
    write::{WriteError, write_stream},
};
use signing::{Grant, UrlSigner, expiry};

/// Attachments in a local directory, with API-signed URLs.
#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    fs: Arc<LocalFileSystem>,
    signer: UrlSigner,
    /// The API's public origin: URLs are `<base>/api/attachments/blob/<key>?…`.
    base: Url,
}

/// What is kept beside each object.
#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    content_type: String,
}

impl LocalStore {
    /// Attachments under `dir` (created if missing). URLs are signed with
    /// `key` (at least 32 bytes; see [`load_or_create_key`]) and start with
    /// `url_base`, the API's public origin, which serves [`Self::router`].
    pub fn open(dir: &Path, key: SecretString, url_base: Url) -> Result<Self, StorageError> {
        if !matches!(url_base.scheme(), "http" | "https")
            || url_base.cannot_be_a_base()
            || url_base.query().is_some()
            || url_base.fragment().is_some()
        {
            return Err(StorageError::Config(format!(
                "the attachment URL base must be an http(s) origin, got {url_base}"
            )));
        }
        std::fs::create_dir_all(dir)?;
        let fs = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        Ok(Self {
            inner: Arc::new(Inner {
                fs: Arc::new(fs),
                signer: UrlSigner::new(&key)?,
                base: url_base,
            }),
        })
    }

    /// The routes that serve this store's signed URLs (at [`BLOB_ROUTE`]):
    /// `PUT` stores an upload, `GET` streams a download. The signature is
    /// the only authorisation, so they sit outside any login.
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }

    fn signed_url(&self, grant: &Grant, ttl: Duration) -> Url {
        let expires = expiry(SystemTime::now(), ttl);
        let signature = self.inner.signer.sign(grant, expires);
        let (op, key, content_type) = match grant {
            Grant::Put {
                key, content_type, ..
            } => ("put", key, content_type),
            Grant::Get {
                key, content_type, ..
            } => ("get", key, content_type),
        };
        let mut url = self.inner.base.clone();
        let path = format!(
            "{}{}{key}",
            url.path().trim_end_matches('/'),
            http::BLOB_PREFIX
        );
        url.set_path(&path);
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("op", op)
                .append_pair("exp", &expires.to_string())
                .append_pair("ct", content_type);
            match grant {
                Grant::Put { size, .. } => query.append_pair("len", &size.to_string()),
                Grant::Get { download_name, .. } => query.append_pair("dn", download_name),
            };
            query.append_pair("sig", &signature);
        }
        url
    }

    /// Stores `body` under `key` with `content_type`; with `expected`, only
    /// a body of exactly that length.
    async fn write(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        content_type: &str,
        expected: Option<u64>,
    ) -> Result<u64, WriteError> {
        // The content type first: when the object appears, its type is
        // already beside it.
        let meta = serde_json::to_vec(&Meta {
            content_type: content_type.to_owned(),
        })
        .map_err(|e| WriteError::Store(e.into()))?;
        self.inner
            .fs
            .put(&meta_path(key), Bytes::from(meta).into())
            .await
            .map_err(|e| WriteError::Store(e.into()))?;
        let fs: Arc<dyn ObjectStore> = self.inner.fs.clone();
        let written = write_stream(
            fs,
            object_path(key),
            Default::default(),
            body,
            expected,
            crate::write::LOCAL_PART_SIZE,
        )
        .await;
        // A refused first upload leaves no content type behind either.
        if written.is_err()
            && matches!(
                self.inner.fs.head(&object_path(key)).await,
                Err(object_store::Error::NotFound { .. })
            )
        {
            let _ = self.inner.fs.delete(&meta_path(key)).await;
        }
        written
    }

    async fn content_type(&self, key: &ObjectKey) -> Option<String> {
        let bytes = self
            .inner
            .fs
            .get(&meta_path(key))
            .await
            .ok()?
            .bytes()
            .await
            .ok()?;
        serde_json::from_slice::<Meta>(&bytes)
            .ok()
            .map(|m| m.content_type)
    }
}

fn object_path(key: &ObjectKey) -> ObjectPath {
    under("objects", key)
}

fn meta_path(key: &ObjectKey) -> ObjectPath {
    under("meta", key)
}

fn under(folder: &str, key: &ObjectKey) -> ObjectPath {
    ObjectPath::from_iter(std::iter::once(folder).chain(key.as_str().split('/')))
}

#[async_trait]
impl AttachmentStore for LocalStore {
    async fn presign_put(
        &self,
        key: &ObjectKey,
        content_type: &str,
        size: u64,
        ttl: Duration,
    ) -> Result<Presigned, StorageError> {
        check_content_type(content_type)?;
        let header = HeaderValue::from_str(content_type)
            .map_err(|_| StorageError::InvalidContentType(content_type.to_owned()))?;
        let url = self.signed_url(
            &Grant::Put {
                key: key.as_str().to_owned(),
                content_type: content_type.to_owned(),
                size,
            },
            ttl,
        );
        Ok(Presigned::put(url, header, size))
    }

    async fn presign_get(
        &self,
        key: &ObjectKey,
        content_type: &str,
        download_name: &str,
        ttl: Duration,
    ) -> Result<Url, StorageError> {
        check_content_type(content_type)?;
        Ok(self.signed_url(
            &Grant::Get {
                key: key.as_str().to_owned(),
                content_type: content_type.to_owned(),
                download_name: download_name.to_owned(),
            },
            ttl,
        ))
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StorageError> {
        let Some(meta) = found(self.inner.fs.head(&object_path(key)).await)? else {
            return Ok(None);
        };
        Ok(Some(ObjectInfo {
            size: meta.size,
            content_type: self.content_type(key).await,
        }))
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        content_type: &str,
    ) -> Result<u64, StorageError> {
        check_content_type(content_type)?;
        self.write(key, body, content_type, None)
            .await
            .map_err(|e| match e {
                WriteError::Body(e) | WriteError::Store(e) => StorageError::Io(e),
                other => StorageError::Io(std::io::Error::other(other)),
            })
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Object>, StorageError> {
        let Some(result) = found(self.inner.fs.get(&object_path(key)).await)? else {
            return Ok(None);
        };
        let info = ObjectInfo {
            size: result.meta.size,
            content_type: self.content_type(key).await,
        };
        let body = result.into_stream().map_err(std::io::Error::from).boxed();
        Ok(Some(Object { info, body }))
    }

    async fn copy(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
    ) -> Result<Option<ObjectInfo>, StorageError> {
        // The content type first, as a write puts it: when the copy
        // appears, its type is already beside it.
        found(self.inner.fs.copy(&meta_path(from), &meta_path(to)).await)?;
        match found(
            self.inner
                .fs
                .copy(&object_path(from), &object_path(to))
                .await,
        )? {
            Some(()) => self.head(to).await,
            None => {
                let _ = self.inner.fs.delete(&meta_path(to)).await;
                Ok(None)
            }
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        for path in [object_path(key), meta_path(key)] {
            found(self.inner.fs.delete(&path).await)?;
        }
        Ok(())
    }
}
