//! What only the local backend's routes do: hold an upload to its signed
//! size, keep refused uploads out of sight, and share a key between
//! processes through the key file.

use std::time::Duration;

use bytes::Bytes;
use storage::{AttachmentStore, GET_URL_TTL, LocalStore, PUT_URL_TTL, load_or_create_key};

use crate::backends::{LocalServer, bytes_of, http_client, new_key, send_sized};

/// Every file under `dir`, relative to it.
fn files(dir: &std::path::Path) -> Vec<String> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.unwrap();
    body["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_length_other_than_the_signed_one_is_refused_and_leaves_no_file() {
    platform::install_crypto_provider();
    let server = LocalServer::start().await;
    let key = new_key();
    let presigned = server
        .store
        .presign_put(&key, "image/png", 100, PUT_URL_TTL)
        .await
        .unwrap();

    let longer = send_sized(&presigned, bytes_of(101)).await;
    assert_eq!(longer.status(), 413);
    assert_eq!(error_code(longer).await, "attachment_too_large");

    let shorter = send_sized(&presigned, bytes_of(99)).await;
    assert_eq!(shorter.status(), 400);
    assert_eq!(error_code(shorter).await, "length_mismatch");

    // Chunked: no Content-Length at all.
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from(bytes_of(100)))];
    let chunked = http_client()
        .put(presigned.url.clone())
        .header("content-type", "image/png")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), 411);

    assert_eq!(server.store.head(&key).await.unwrap(), None);
    let left: Vec<String> = files(&server.dir)
        .into_iter()
        .filter(|f| f != storage::KEY_FILE)
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // The same URL still takes the right upload.
    let right = send_sized(&presigned, bytes_of(100)).await;
    assert_eq!(right.status(), 200);
    assert!(
        server
            .store
            .head(&key)
            .await
            .unwrap()
            .unwrap()
            .matches(100, "image/png")
    );
}

#[tokio::test]
async fn an_upload_url_does_not_download_and_a_download_url_does_not_upload() {
    platform::install_crypto_provider();
    let server = LocalServer::start().await;
    let key = new_key();
    server
        .store
        .put_bytes(&key, Bytes::from_static(b"kept"), "text/plain")
        .await
        .unwrap();
    let put = server
        .store
        .presign_put(&key, "text/plain", 4, PUT_URL_TTL)
        .await
        .unwrap();
    let response = http_client().get(put.url.clone()).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(response).await, "invalid_signature");

    let get = server
        .store
        .presign_get(&key, "text/plain", "kept.txt", GET_URL_TTL)
        .await
        .unwrap();
    let response = http_client()
        .put(get)
        .header("content-type", "text/plain")
        .body("evil")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let object = server.store.get(&key).await.unwrap().unwrap();
    assert_eq!(object.info.size, 4);
}

#[tokio::test]
async fn an_expired_url_says_so() {
    platform::install_crypto_provider();
    let server = LocalServer::start().await;
    let key = new_key();
    let presigned = server
        .store
        .presign_put(&key, "image/png", 10, Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let response = send_sized(&presigned, bytes_of(10)).await;
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(response).await, "url_expired");
}

#[tokio::test]
async fn downloads_are_not_cached_sniffed_or_rendered() {
    platform::install_crypto_provider();
    let server = LocalServer::start().await;
    let key = new_key();
    server
        .store
        .put_bytes(&key, Bytes::from_static(b"<html>"), "text/plain")
        .await
        .unwrap();
    let url = server
        .store
        .presign_get(&key, "text/plain", "page.html", GET_URL_TTL)
        .await
        .unwrap();
    let response = http_client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["cache-control"], "private, no-store");
    assert_eq!(
        response.headers()["content-security-policy"],
        "default-src 'none'; sandbox"
    );
    assert_eq!(response.headers()["content-length"], "6");
}

/// The API serves the URLs that tg-delivery signs: two stores over one
/// folder, each taking the key from the key file, accept each other's URLs.
#[tokio::test]
async fn processes_sharing_the_folder_share_the_key() {
    platform::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!(
        "fastprep-local-shared-{:016x}",
        rand::random::<u64>()
    ));
    let api = LocalServer::start_in(dir.clone(), load_or_create_key(&dir).unwrap()).await;
    let consumer =
        LocalStore::open(&dir, load_or_create_key(&dir).unwrap(), api.base.clone()).unwrap();
    let key = new_key();
    api.store
        .put_bytes(&key, Bytes::from_static(b"shared"), "text/plain")
        .await
        .unwrap();
    let url = consumer
        .presign_get(&key, "text/plain", "s.txt", GET_URL_TTL)
        .await
        .unwrap();
    let response = http_client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"shared");

    // A store with another key is refused by the same routes.
    let stranger = LocalStore::open(&dir, crate::backends::test_key(), api.base.clone()).unwrap();
    let url = stranger
        .presign_get(&key, "text/plain", "s.txt", GET_URL_TTL)
        .await
        .unwrap();
    let response = http_client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 403);
}
