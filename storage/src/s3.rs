//! The S3 backend: `object_store`'s `AmazonS3` for server-side calls and its
//! SigV4 `Signer` for the URLs handed to browsers and to the TG adapter.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use axum::http::{HeaderValue, Method, header::CONTENT_TYPE};
use futures::{StreamExt, TryStreamExt};
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt,
    aws::{AmazonS3, AmazonS3Builder},
    signer::{SignedUrlOptions, Signer},
};
use secrecy::ExposeSecret;
use url::Url;

use crate::{
    AttachmentStore, ByteStream, Object, ObjectInfo, ObjectKey, Presigned, S3Config, StorageError,
    content_disposition, found,
    headers::check_content_type,
    write::{WriteError, write_stream},
};

/// Attachments in an S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    s3: Arc<AmazonS3>,
}

impl S3Store {
    /// A client of the bucket in `config`. Makes no request: a wrong key or
    /// bucket shows at the first call.
    pub fn new(config: &S3Config) -> Result<Self, StorageError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(config.secret_access_key.expose_secret());
        builder = match &config.endpoint {
            // R2, MinIO, s3s: `{endpoint}/{bucket}/{key}`.
            Some(endpoint) => builder
                .with_endpoint(endpoint.as_str().trim_end_matches('/'))
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.scheme() == "http"),
            // AWS: `https://{bucket}.s3.{region}.amazonaws.com/{key}`.
            None => builder.with_virtual_hosted_style_request(true),
        };
        Ok(Self {
            s3: Arc::new(builder.build()?),
        })
    }
}

#[async_trait]
impl AttachmentStore for S3Store {
    async fn presign_put(
        &self,
        key: &ObjectKey,
        content_type: &str,
        size: u64,
        ttl: Duration,
    ) -> Result<Presigned, StorageError> {
        check_content_type(content_type)?;
        let content_type = HeaderValue::from_str(content_type)
            .map_err(|_| StorageError::InvalidContentType(content_type.to_owned()))?;
        // `object_store` refuses to sign `content-length` (a reserved
        // header), so the size is not part of the signature: see ADR 0017.
        let options =
            SignedUrlOptions::default().with_signed_header(CONTENT_TYPE, content_type.clone());
        let url = self
            .s3
            .signed_url_opts(Method::PUT, &key.to_path(), ttl, &options)
            .await?;
        Ok(Presigned::put(url, content_type, size))
    }

    async fn presign_get(
        &self,
        key: &ObjectKey,
        content_type: &str,
        download_name: &str,
        ttl: Duration,
    ) -> Result<Url, StorageError> {
        check_content_type(content_type)?;
        let options = SignedUrlOptions::default().with_query([
            ("response-content-type", content_type.to_owned()),
            (
                "response-content-disposition",
                content_disposition(download_name),
            ),
        ]);
        Ok(self
            .s3
            .signed_url_opts(Method::GET, &key.to_path(), ttl, &options)
            .await?)
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StorageError> {
        let options = GetOptions::new().with_head(true);
        Ok(found(self.s3.get_opts(&key.to_path(), options).await)?
            .map(|result| info(result.meta.size, &result.attributes)))
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        content_type: &str,
    ) -> Result<u64, StorageError> {
        check_content_type(content_type)?;
        let attributes: Attributes = [(Attribute::ContentType, content_type.to_owned())]
            .into_iter()
            .collect();
        let store: Arc<dyn ObjectStore> = self.s3.clone();
        write_stream(
            store,
            key.to_path(),
            attributes,
            body,
            None,
            crate::write::S3_PART_SIZE,
        )
        .await
        .map_err(|e| match e {
            WriteError::Body(e) | WriteError::Store(e) => StorageError::Io(e),
            other => StorageError::Io(std::io::Error::other(other)),
        })
    }

    async fn get(&self, key: &ObjectKey) -> Result<Option<Object>, StorageError> {
        Ok(found(self.s3.get(&key.to_path()).await)?.map(|result| {
            let info = info(result.meta.size, &result.attributes);
            let body = result.into_stream().map_err(std::io::Error::from).boxed();
            Object { info, body }
        }))
    }

    async fn copy(
        &self,
        from: &ObjectKey,
        to: &ObjectKey,
    ) -> Result<Option<ObjectInfo>, StorageError> {
        match found(self.s3.copy(&from.to_path(), &to.to_path()).await)? {
            Some(()) => self.head(to).await,
            None => Ok(None),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        found(self.s3.delete(&key.to_path()).await).map(|_| ())
    }
}

fn info(size: u64, attributes: &Attributes) -> ObjectInfo {
    ObjectInfo {
        size,
        content_type: attributes
            .get(&Attribute::ContentType)
            .map(|v| v.as_ref().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::header::CONTENT_LENGTH;
    use secrecy::SecretString;

    use super::*;

    fn store(endpoint: Option<&str>, region: &str) -> S3Store {
        S3Store::new(&S3Config {
            bucket: "fastprep-files".to_owned(),
            region: region.to_owned(),
            endpoint: endpoint.map(|e| Url::parse(e).unwrap()),
            access_key_id: "AKIDEXAMPLE".to_owned(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        })
        .unwrap()
    }

    fn query(url: &Url, name: &str) -> Option<String> {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// Why the server HEAD-checks uploads (ADR 0017): should a later
    /// `object_store` sign `content-length`, this fails and the upload URL
    /// can bound the size itself.
    #[tokio::test]
    async fn object_store_will_not_sign_the_content_length() {
        let s3 = store(None, "us-east-1");
        let options = SignedUrlOptions::default()
            .with_signed_header(CONTENT_LENGTH, HeaderValue::from(100u64));
        let refused = s3
            .s3
            .signed_url_opts(
                Method::PUT,
                &ObjectKey::new("a").unwrap().to_path(),
                Duration::from_secs(60),
                &options,
            )
            .await;
        assert!(refused.is_err(), "{refused:?}");
    }

    #[tokio::test]
    async fn aws_urls_are_virtual_hosted_and_sign_the_content_type() {
        let s3 = store(None, "eu-central-1");
        let key = ObjectKey::new("attachments/abc").unwrap();
        let put = s3
            .presign_put(&key, "image/png", 100, Duration::from_secs(600))
            .await
            .unwrap();
        assert_eq!(put.method, Method::PUT);
        assert_eq!(
            put.url.host_str(),
            Some("fastprep-files.s3.eu-central-1.amazonaws.com")
        );
        assert_eq!(put.url.path(), "/attachments/abc");
        assert_eq!(
            query(&put.url, "X-Amz-SignedHeaders").as_deref(),
            Some("content-type;host")
        );
        assert_eq!(query(&put.url, "X-Amz-Expires").as_deref(), Some("600"));
        assert_eq!(put.headers[CONTENT_TYPE], "image/png");
        assert_eq!(put.headers[CONTENT_LENGTH], "100");
        assert!(matches!(
            s3.presign_put(&key, "image/png\r\nx: y", 1, Duration::from_secs(1))
                .await,
            Err(StorageError::InvalidContentType(_))
        ));
    }

    #[tokio::test]
    async fn r2_urls_are_path_style_in_region_auto_with_the_name() {
        let s3 = store(Some("https://0123abcd.r2.cloudflarestorage.com"), "auto");
        let key = ObjectKey::new("attachments/abc").unwrap();
        let get = s3
            .presign_get(
                &key,
                "application/pdf",
                "Отчёт.pdf",
                Duration::from_secs(300),
            )
            .await
            .unwrap();
        assert_eq!(get.scheme(), "https");
        assert_eq!(get.host_str(), Some("0123abcd.r2.cloudflarestorage.com"));
        assert_eq!(get.path(), "/fastprep-files/attachments/abc");
        assert!(
            query(&get, "X-Amz-Credential").is_some_and(|c| c.contains("/auto/s3/aws4_request")),
            "{get}"
        );
        assert_eq!(query(&get, "X-Amz-Expires").as_deref(), Some("300"));
        assert_eq!(
            query(&get, "response-content-disposition"),
            Some(content_disposition("Отчёт.pdf"))
        );
        assert_eq!(
            query(&get, "response-content-type").as_deref(),
            Some("application/pdf")
        );
    }
}
