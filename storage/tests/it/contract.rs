//! The contract of `AttachmentStore`: every case runs against S3 (s3s-fs)
//! and against the local backend, through the URLs a browser or the TG
//! adapter would get.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use storage::{GET_URL_TTL, ObjectInfo, PUT_URL_TTL, content_disposition};

use crate::backends::{Backend, bytes_of, http_client, new_key, send, send_sized};

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod s3 {
            $(
                #[tokio::test]
                async fn $case() {
                    let backend = crate::backends::Backend::s3().await;
                    super::$case(&backend).await;
                }
            )*
        }
        mod local {
            $(
                #[tokio::test]
                async fn $case() {
                    let backend = crate::backends::Backend::local().await;
                    super::$case(&backend).await;
                }
            )*
        }
    };
}

contract!(
    an_upload_with_the_signed_headers_is_stored,
    another_content_type_is_refused,
    a_missing_content_type_is_refused,
    an_expired_upload_url_is_refused,
    a_tampered_signature_is_refused,
    a_body_longer_than_declared_fails_the_head_check,
    a_download_has_the_bytes_type_and_original_name,
    an_expired_download_url_is_refused,
    an_unsigned_download_is_refused,
    head_of_a_missing_key_is_none,
    delete_twice_is_fine,
    a_server_side_put_can_be_downloaded,
    a_copy_pins_the_upload,
);

async fn an_upload_with_the_signed_headers_is_stored(b: &Backend) {
    let key = new_key();
    let body = bytes_of(3000);
    let presigned = b
        .store
        .presign_put(&key, "image/png", 3000, PUT_URL_TTL)
        .await
        .unwrap();
    assert_eq!(presigned.method, "PUT");
    assert_eq!(presigned.headers["content-type"], "image/png");
    assert_eq!(presigned.headers["content-length"], "3000");
    let response = send(&presigned, body.clone(), &[], &[]).await;
    assert_eq!(response.status(), 200, "{}", b.log());
    let info = b.store.head(&key).await.unwrap();
    assert_eq!(
        info,
        Some(ObjectInfo {
            size: 3000,
            content_type: Some("image/png".to_owned()),
        })
    );
    assert!(info.unwrap().matches(3000, "image/png"));
    let object = b.store.get(&key).await.unwrap().unwrap();
    assert_eq!(collect(object.body).await, body);
}

async fn another_content_type_is_refused(b: &Backend) {
    let key = new_key();
    let presigned = b
        .store
        .presign_put(&key, "image/png", 100, PUT_URL_TTL)
        .await
        .unwrap();
    let response = send(
        &presigned,
        bytes_of(100),
        &[],
        &[("content-type", "text/html")],
    )
    .await;
    assert_eq!(response.status(), 403);
    assert_eq!(b.store.head(&key).await.unwrap(), None);
}

async fn a_missing_content_type_is_refused(b: &Backend) {
    let key = new_key();
    let presigned = b
        .store
        .presign_put(&key, "image/png", 100, PUT_URL_TTL)
        .await
        .unwrap();
    let response = send(&presigned, bytes_of(100), &["content-type"], &[]).await;
    assert_eq!(response.status(), 403);
    assert_eq!(b.store.head(&key).await.unwrap(), None);
}

async fn an_expired_upload_url_is_refused(b: &Backend) {
    let key = new_key();
    let presigned = b
        .store
        .presign_put(&key, "image/png", 100, Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let response = send(&presigned, bytes_of(100), &[], &[]).await;
    assert_eq!(response.status(), 403);
    assert_eq!(b.store.head(&key).await.unwrap(), None);
}

async fn a_tampered_signature_is_refused(b: &Backend) {
    let key = new_key();
    let mut presigned = b
        .store
        .presign_put(&key, "image/png", 100, PUT_URL_TTL)
        .await
        .unwrap();
    presigned.url = storage::testing::tamper(&presigned.url);
    let response = send(&presigned, bytes_of(100), &[], &[]).await;
    assert_eq!(response.status(), 403);
    assert_eq!(b.store.head(&key).await.unwrap(), None);

    // Nor does a download URL signed for one key open another.
    let other = new_key();
    b.store
        .put_bytes(&other, Bytes::from_static(b"secret"), "text/plain")
        .await
        .unwrap();
    let url = b
        .store
        .presign_get(&key, "text/plain", "x.txt", GET_URL_TTL)
        .await
        .unwrap();
    let swapped = url
        .as_str()
        .replace(key.as_str(), other.as_str())
        .parse::<url::Url>()
        .unwrap();
    let response = http_client().get(swapped).send().await.unwrap();
    assert_eq!(response.status(), 403);
}

/// S3 cannot bound an upload's size through a presigned URL (ADR 0017): it
/// stores a longer body, which `head` then shows. The local routes refuse it
/// outright. Either way, what the server relies on holds: `head` does not
/// match the declaration.
async fn a_body_longer_than_declared_fails_the_head_check(b: &Backend) {
    let key = new_key();
    let presigned = b
        .store
        .presign_put(&key, "image/png", 100, PUT_URL_TTL)
        .await
        .unwrap();
    let response = send_sized(&presigned, bytes_of(250)).await;
    let info = b.store.head(&key).await.unwrap();
    if b.refuses_oversize {
        assert_eq!(response.status(), 413);
        assert_eq!(info, None);
    } else {
        assert_eq!(response.status(), 200, "{}", b.log());
        assert_eq!(info.as_ref().map(|i| i.size), Some(250));
    }
    assert!(!info.is_some_and(|i| i.matches(100, "image/png")));
}

async fn a_download_has_the_bytes_type_and_original_name(b: &Backend) {
    let key = new_key();
    let body = bytes_of(5000);
    let presigned = b
        .store
        .presign_put(&key, "application/pdf", 5000, PUT_URL_TTL)
        .await
        .unwrap();
    assert_eq!(send(&presigned, body.clone(), &[], &[]).await.status(), 200);
    let name = "Отчёт \"итог\" 2024.pdf";
    let url = b
        .store
        .presign_get(&key, "application/pdf", name, GET_URL_TTL)
        .await
        .unwrap();
    let response = http_client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", b.log());
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/pdf");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert_eq!(disposition, content_disposition(name));
    assert!(
        disposition.contains("filename*=UTF-8''%D0%9E%D1%82%D1%87%D1%91%D1%82%20%22"),
        "{disposition}"
    );
    assert_eq!(response.bytes().await.unwrap(), body);
}

async fn an_expired_download_url_is_refused(b: &Backend) {
    let key = new_key();
    b.store
        .put_bytes(&key, Bytes::from_static(b"hello"), "text/plain")
        .await
        .unwrap();
    let url = b
        .store
        .presign_get(&key, "text/plain", "hello.txt", Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let response = http_client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_ne!(response.bytes().await.unwrap().as_ref(), b"hello");
}

async fn an_unsigned_download_is_refused(b: &Backend) {
    let key = new_key();
    b.store
        .put_bytes(&key, Bytes::from_static(b"private"), "text/plain")
        .await
        .unwrap();
    let response = http_client()
        .get(b.unsigned_url(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_ne!(response.bytes().await.unwrap().as_ref(), b"private");
    // The same address, signed, is the object: the refusal was the signature's.
    let url = b
        .store
        .presign_get(&key, "text/plain", "p.txt", GET_URL_TTL)
        .await
        .unwrap();
    let response = http_client().get(url).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"private");
}

async fn head_of_a_missing_key_is_none(b: &Backend) {
    assert_eq!(b.store.head(&new_key()).await.unwrap(), None);
    assert!(b.store.get(&new_key()).await.unwrap().is_none());
}

async fn delete_twice_is_fine(b: &Backend) {
    let key = new_key();
    b.store
        .put_bytes(&key, Bytes::from_static(b"bye"), "text/plain")
        .await
        .unwrap();
    assert!(b.store.head(&key).await.unwrap().is_some());
    b.store.delete(&key).await.unwrap();
    assert_eq!(b.store.head(&key).await.unwrap(), None);
    b.store.delete(&key).await.unwrap();
    let url = b
        .store
        .presign_get(&key, "text/plain", "bye.txt", GET_URL_TTL)
        .await
        .unwrap();
    let response = http_client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

async fn a_server_side_put_can_be_downloaded(b: &Backend) {
    let key = new_key();
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..5)
        .map(|i| Ok(Bytes::from(vec![b'a' + i; 1000])))
        .collect();
    let written = b
        .store
        .put(&key, futures::stream::iter(chunks).boxed(), "image/jpeg")
        .await
        .unwrap();
    assert_eq!(written, 5000);
    let info = b.store.head(&key).await.unwrap().unwrap();
    assert!(info.matches(5000, "image/jpeg"), "{info:?}");
    let object = b.store.get(&key).await.unwrap().unwrap();
    assert_eq!(object.info, info);
    let expected: Vec<u8> = (0..5u8).flat_map(|i| vec![b'a' + i; 1000]).collect();
    assert_eq!(collect(object.body).await, expected);
    let url = b
        .store
        .presign_get(&key, "image/jpeg", "photo.jpg", GET_URL_TTL)
        .await
        .unwrap();
    let response = http_client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    assert_eq!(response.bytes().await.unwrap(), expected);
}

async fn a_copy_pins_the_upload(b: &Backend) {
    let (from, to) = (new_key(), new_key());
    assert_eq!(b.store.copy(&from, &to).await.unwrap(), None);
    assert_eq!(b.store.head(&to).await.unwrap(), None);
    let first = bytes_of(2000);
    let presigned = b
        .store
        .presign_put(&from, "application/pdf", 2000, PUT_URL_TTL)
        .await
        .unwrap();
    let response = send(&presigned, first.clone(), &[], &[]).await;
    assert_eq!(response.status(), 200, "{}", b.log());
    let copied = b.store.copy(&from, &to).await.unwrap().unwrap();
    assert!(copied.matches(2000, "application/pdf"), "{copied:?}");
    // The upload URL is still valid: what it uploads now changes the
    // original, not the copy.
    let second = vec![b'z'; 2000];
    let response = send(&presigned, second.clone(), &[], &[]).await;
    assert_eq!(response.status(), 200, "{}", b.log());
    let pinned = b.store.get(&to).await.unwrap().unwrap();
    assert_eq!(collect(pinned.body).await, first);
    let original = b.store.get(&from).await.unwrap().unwrap();
    assert_eq!(collect(original.body).await, second);
}

async fn collect(mut body: storage::ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}
