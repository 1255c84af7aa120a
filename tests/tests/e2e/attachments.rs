//! Attachments (ADR 0017) through the API, against both stores: the local
//! folder the API serves itself, and a real S3 server that checks SigV4
//! signatures (s3s-fs). Uploads go from a plain HTTP client to the
//! presigned URL; downloads are links made after the permission check.

use fastprep_tests::{
    TestEnv,
    accounts::{OPERATOR_ROLE, USER_PASSWORD, VIEWER_ROLE},
};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use storage::testing::S3sFs;
use uuid::Uuid;

/// The two stores a deployment can have.
enum Store {
    Local,
    S3(S3sFs),
}

impl Store {
    /// The API's environment for this store.
    fn vars(&self) -> Vec<(&'static str, String)> {
        match self {
            Store::Local => vec![],
            Store::S3(s3) => vec![
                ("S3_ENDPOINT", s3.endpoint.to_string()),
                ("S3_BUCKET", s3.bucket.clone()),
                ("S3_ACCESS_KEY_ID", S3sFs::ACCESS_KEY.to_owned()),
                ("S3_SECRET_ACCESS_KEY", S3sFs::SECRET_KEY.to_owned()),
                ("S3_REGION", "us-east-1".to_owned()),
            ],
        }
    }
}

/// Asks for an upload of `body` as `name` / `content_type`.
async fn start_upload(
    env: &TestEnv,
    api: &str,
    token: &str,
    name: &str,
    content_type: &str,
    size: usize,
) -> (StatusCode, Value) {
    env.http
        .call(
            Method::POST,
            &format!("{api}/api/attachments"),
            Some(token),
            Some(json!({"filename": name, "content_type": content_type, "size_bytes": size})),
        )
        .await
}

/// Sends `body` to the presigned URL with the headers the API named,
/// `content_type` replacing the named one when given.
async fn put(upload: &Value, body: Vec<u8>, content_type: Option<&str>) -> StatusCode {
    assert_eq!(upload["method"], "PUT");
    let mut req = reqwest::Client::new().put(upload["upload_url"].as_str().unwrap());
    for (name, value) in upload["headers"].as_object().unwrap() {
        if name.eq_ignore_ascii_case("content-length") {
            assert_eq!(value.as_str().unwrap(), body.len().to_string());
            continue; // reqwest sets it from the body
        }
        let value = match content_type {
            Some(ct) if name.eq_ignore_ascii_case("content-type") => ct,
            _ => value.as_str().unwrap(),
        };
        req = req.header(name.as_str(), value);
    }
    req.body(body).send().await.unwrap().status()
}

async fn download_url(env: &TestEnv, api: &str, token: &str, id: &str) -> (StatusCode, Value) {
    env.http
        .call(
            Method::GET,
            &format!("{api}/api/attachments/{id}/url"),
            Some(token),
            None,
        )
        .await
}

/// Attaches upload `id` to a new inbound message of `conv`, as inbound
/// media are stored.
async fn attach_to_inbound(env: &TestEnv, id: &str, conv: &str) {
    let message = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, direction, text, tg_message_id, status)
         VALUES ($1, $2::uuid, 'in', '', 1, 'received')",
    )
    .bind(message)
    .bind(conv)
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE attachments SET message_id = $2, status = 'attached' WHERE id = $1::uuid")
        .bind(id)
        .bind(message)
        .execute(&env.pool)
        .await
        .unwrap();
}

async fn rows(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM attachments")
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// The whole suite, against one store.
async fn upload_and_download(store: Store) {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&store.vars()).await;
    let admin = env.admin_session(&api.url).await;
    // Operators who see only the conversations assigned to them.
    let assigned = env
        .create_role(
            &api.url,
            &admin.access,
            "assigned-operator",
            &[
                "inbox.read_assigned",
                "inbox.reply",
                "attachments.upload",
                "attachments.read",
            ],
        )
        .await;
    env.create_user(&api.url, &admin.access, "ana@fastprep.test", &[&assigned])
        .await;
    env.create_user(&api.url, &admin.access, "bo@fastprep.test", &[&assigned])
        .await;
    env.create_user(
        &api.url,
        &admin.access,
        "olga@fastprep.test",
        &[OPERATOR_ROLE],
    )
    .await;
    let upload_only = env
        .create_role(
            &api.url,
            &admin.access,
            "upload-only",
            &["inbox.read_all", "attachments.upload"],
        )
        .await;
    env.create_user(&api.url, &admin.access, "up@fastprep.test", &[&upload_only])
        .await;
    env.create_user(&api.url, &admin.access, "vi@fastprep.test", &[VIEWER_ROLE])
        .await;
    let ana = env
        .sign_in(&api.url, "ana@fastprep.test", USER_PASSWORD)
        .await;
    let bo = env
        .sign_in(&api.url, "bo@fastprep.test", USER_PASSWORD)
        .await;
    let vi = env
        .sign_in(&api.url, "vi@fastprep.test", USER_PASSWORD)
        .await;
    let up = env
        .sign_in(&api.url, "up@fastprep.test", USER_PASSWORD)
        .await;
    let olga = env
        .sign_in(&api.url, "olga@fastprep.test", USER_PASSWORD)
        .await;

    // Refused declarations leave nothing behind.
    for (name, ct, size, status, code) in [
        (
            "../../etc/passwd",
            "text/plain",
            10,
            422,
            "invalid_filename",
        ),
        ("a\\b.txt", "text/plain", 10, 422, "invalid_filename"),
        (
            "bill\u{202E}fdp.exe",
            "application/pdf",
            10,
            422,
            "invalid_filename",
        ),
        ("..", "text/plain", 10, 422, "invalid_filename"),
        (
            "page.html",
            "text/html",
            10,
            422,
            "content_type_not_allowed",
        ),
        ("empty.txt", "text/plain", 0, 422, "invalid_size"),
        (
            "huge.pdf",
            "application/pdf",
            20 * 1024 * 1024 + 1,
            413,
            "attachment_too_large",
        ),
    ] {
        let (s, body) = start_upload(&env, &api.url, &ana.access, name, ct, size).await;
        assert_eq!(s.as_u16(), status, "{name}: {body}");
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
    }
    assert_eq!(rows(&env).await, 0, "a refused upload records nothing");
    // A viewer may read attachments but not upload them.
    let (s, _) = start_upload(&env, &api.url, &vi.access, "a.txt", "text/plain", 3).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // An upload by a plain HTTP client, with exactly the headers named.
    let photo: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let (s, upload) = start_upload(
        &env,
        &api.url,
        &ana.access,
        "Домашка \"3\".jpg",
        "image/jpeg",
        photo.len(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{upload}");
    assert_eq!(upload["expires_in"], 600);
    let id = upload["id"].as_str().unwrap().to_owned();
    let key: String = sqlx::query_scalar(
        "SELECT object_key FROM attachments WHERE id = $1::uuid AND status = 'pending'",
    )
    .bind(&id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        key,
        format!("attachments/{id}"),
        "the server chooses the key"
    );
    assert_eq!(
        put(&upload, photo.clone(), Some("text/html")).await,
        StatusCode::FORBIDDEN,
        "another content type than the one signed"
    );
    assert!(put(&upload, photo.clone(), None).await.is_success());

    // The uploader gets a link; it serves the bytes under the original name.
    let (s, link) = download_url(&env, &api.url, &ana.access, &id).await;
    assert_eq!(s, StatusCode::OK, "{link}");
    assert_eq!(link["expires_in"], 300);
    let got = reqwest::get(link["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()[header::CONTENT_TYPE], "image/jpeg");
    let disposition = got.headers()[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(
        disposition.contains("filename*=UTF-8''%D0%94%D0%BE%D0%BC%D0%B0%D1%88%D0%BA%D0%B0"),
        "{disposition}"
    );
    assert_eq!(got.bytes().await.unwrap().to_vec(), photo);
    // A link whose signature was altered is refused.
    assert_eq!(
        reqwest::get(storage::testing::tamper(
            &url::Url::parse(link["url"].as_str().unwrap()).unwrap(),
        ))
        .await
        .unwrap()
        .status(),
        StatusCode::FORBIDDEN
    );

    // Nobody else reaches a pending upload, nor learns whether an id exists.
    for (who, token) in [
        ("another operator", &bo.access),
        ("an operator of every conversation", &olga.access),
        ("a viewer", &vi.access),
    ] {
        let (s, body) = download_url(&env, &api.url, token, &id).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{who}: {body}");
    }
    let (s, _) = download_url(&env, &api.url, &ana.access, &Uuid::now_v7().to_string()).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a guessed id");

    // Attached to a message (as inbound media are), the file follows its
    // conversation's scope: an operator limited to assigned conversations
    // sees it only while the conversation is theirs.
    let conv = env.insert_conversation(4242, Some(&bo.user_id)).await;
    attach_to_inbound(&env, &id, &conv).await;
    let (s, _) = download_url(&env, &api.url, &bo.access, &id).await;
    assert_eq!(s, StatusCode::OK, "the assignee reads it");
    let (s, _) = download_url(&env, &api.url, &vi.access, &id).await;
    assert_eq!(s, StatusCode::OK, "a reader of every conversation reads it");
    let (s, _) = download_url(&env, &api.url, &up.access, &id).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "a reader of the conversation without attachments.read"
    );
    let (s, _) = download_url(&env, &api.url, &ana.access, &id).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "its uploader, no longer: the conversation is another's"
    );
    env.cleanup().await;
    drop(store);
}

#[tokio::test]
async fn uploads_and_links_on_the_local_store() {
    upload_and_download(Store::Local).await;
}

#[tokio::test]
async fn uploads_and_links_on_s3() {
    upload_and_download(Store::S3(S3sFs::start().await)).await;
}

/// A private bucket: an object is reachable only through a signed URL.
#[tokio::test]
async fn the_bucket_answers_nothing_unsigned() {
    let store = Store::S3(S3sFs::start().await);
    let mut env = TestEnv::new().await;
    let api = env.start_api(&store.vars()).await;
    let admin = env.admin_session(&api.url).await;
    let (s, upload) = start_upload(&env, &api.url, &admin.access, "a.txt", "text/plain", 5).await;
    assert_eq!(s, StatusCode::CREATED, "{upload}");
    assert!(put(&upload, b"hello".to_vec(), None).await.is_success());
    let signed = url::Url::parse(upload["upload_url"].as_str().unwrap()).unwrap();
    let mut bare = signed.clone();
    bare.set_query(None);
    assert_eq!(
        reqwest::get(bare).await.unwrap().status(),
        StatusCode::FORBIDDEN,
        "no anonymous read"
    );
    env.cleanup().await;
    drop(store);
}

/// Uploads no message took within a day are deleted, object and row; a
/// fresh upload and an attached file are kept.
#[tokio::test]
async fn uploads_left_pending_for_a_day_are_deleted_object_and_row() {
    let mut env = TestEnv::new().await;
    let api = env
        .start_api(&[("ATTACHMENT_PURGE_INTERVAL", "1s".to_owned())])
        .await;
    let admin = env.admin_session(&api.url).await;
    let mut uploads = Vec::new();
    for name in ["old.txt", "fresh.txt", "attached.txt"] {
        let (s, upload) = start_upload(&env, &api.url, &admin.access, name, "text/plain", 5).await;
        assert_eq!(s, StatusCode::CREATED, "{upload}");
        assert!(put(&upload, b"hello".to_vec(), None).await.is_success());
        let (s, link) = download_url(
            &env,
            &api.url,
            &admin.access,
            upload["id"].as_str().unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{link}");
        uploads.push((
            upload["id"].as_str().unwrap().to_owned(),
            link["url"].as_str().unwrap().to_owned(),
        ));
    }
    let [(old, old_url), (fresh, fresh_url), (attached, attached_url)] =
        <[(String, String); 3]>::try_from(uploads).unwrap();
    let conv = env.insert_conversation(777, None).await;
    attach_to_inbound(&env, &attached, &conv).await;
    sqlx::query(
        "UPDATE attachments SET created_at = now() - interval '2 days' WHERE id = $1::uuid",
    )
    .bind(&attached)
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE attachments SET created_at = now() - interval '25 hours' WHERE id = $1::uuid",
    )
    .bind(&old)
    .execute(&env.pool)
    .await
    .unwrap();
    let pool = env.pool.clone();
    let old_id = old.clone();
    fastprep_tests::wait_for(
        "the day-old upload purged",
        std::time::Duration::from_secs(15),
        || {
            let pool = pool.clone();
            let old = old_id.clone();
            async move {
                let left: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM attachments WHERE id = $1::uuid")
                        .bind(&old)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                (left == 0).then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        reqwest::get(&old_url).await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "its object is gone too"
    );
    for (id, url) in [(&fresh, &fresh_url), (&attached, &attached_url)] {
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM attachments WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        assert_eq!(kept, 1, "{id} kept");
        assert_eq!(reqwest::get(url).await.unwrap().status(), StatusCode::OK);
    }
    env.cleanup().await;
}

/// Unused uploads are capped per user: an S3 upload URL does not bound what
/// is stored, so each is room for data until the purge.
#[tokio::test]
async fn a_user_with_fifty_unused_uploads_is_refused_more() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let admin = env.admin_session(&api.url).await;
    for i in 0..50 {
        let (s, body) = start_upload(
            &env,
            &api.url,
            &admin.access,
            &format!("{i}.txt"),
            "text/plain",
            1,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    let (s, body) = start_upload(&env, &api.url, &admin.access, "51.txt", "text/plain", 1).await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("too_many_pending_uploads")),
        "{body}"
    );
    assert_eq!(rows(&env).await, 50, "the refused one recorded nothing");
    env.cleanup().await;
}
