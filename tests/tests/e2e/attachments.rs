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

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The API, relay, tg-delivery and the sandbox adapter, all on `store`.
async fn delivery_system(
    env: &mut TestEnv,
    store: &Store,
) -> (
    fastprep_tests::system::Started,
    fastprep_tests::system::Started,
) {
    let adapter = env.start_adapter(&[]).await;
    let api = env.start_api(&store.vars()).await;
    let mut delivery_env = store.vars();
    if matches!(store, Store::Local) {
        // The API's folder and origin: tg-delivery signs the same URLs.
        delivery_env.push(("DATA_DIR", env.dir.join("api-data").display().to_string()));
        delivery_env.push(("ATTACHMENTS_URL_BASE", api.url.clone()));
    }
    // A broken send is tried again soon.
    delivery_env.push(("RETRY_CLOCK_SCALE", "0.002".to_owned()));
    env.start_consumer("relay", None, &[]).await;
    env.start_consumer("tg-delivery", Some(&adapter), &delivery_env)
        .await;
    (api, adapter)
}

/// An upload of `body`, put to its URL; returns the upload's answer.
async fn uploaded(
    env: &TestEnv,
    api: &str,
    token: &str,
    name: &str,
    ct: &str,
    body: &[u8],
) -> Value {
    let (s, upload) = start_upload(env, api, token, name, ct, body.len()).await;
    assert_eq!(s, StatusCode::CREATED, "{upload}");
    assert!(put(&upload, body.to_vec(), None).await.is_success());
    upload
}

async fn reply(
    env: &TestEnv,
    api: &str,
    token: &str,
    conv: &str,
    text: &str,
    files: &[&str],
    client_msg_id: &str,
) -> (StatusCode, Value) {
    env.http
        .call(
            Method::POST,
            &format!("{api}/api/conversations/{conv}/messages"),
            Some(token),
            Some(json!({"text": text, "attachment_ids": files, "client_msg_id": client_msg_id})),
        )
        .await
}

/// What the sandbox sent to `chat`, oldest first.
async fn sent_to(
    env: &TestEnv,
    adapter: &fastprep_tests::system::Started,
    chat: i64,
) -> Vec<Value> {
    env.sent(adapter).await["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["chat_id"] == chat)
        .cloned()
        .collect()
}

async fn wait_sent(env: &TestEnv, message_id: &str) {
    let pool = env.pool.clone();
    let id = message_id.to_owned();
    fastprep_tests::wait_for("the reply sent", std::time::Duration::from_secs(30), || {
        let (pool, id) = (pool.clone(), id.clone());
        async move {
            let status: String =
                sqlx::query_scalar("SELECT status FROM messages WHERE id = $1::uuid")
                    .bind(&id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (status == "sent").then_some(())
        }
    })
    .await;
}

/// A reply with files: every refusal names the file and why and leaves the
/// uploads as they were; an accepted reply reaches Telegram as its caption
/// on the first file and then the second file, each once, with the bytes
/// that were checked, even when the upload URL is used again afterwards.
async fn replies_carry_files(store: Store) {
    let mut env = TestEnv::new().await;
    let (api, adapter) = delivery_system(&mut env, &store).await;
    let admin = env.admin_session(&api.url).await;
    env.create_user(
        &api.url,
        &admin.access,
        "olga@fastprep.test",
        &[OPERATOR_ROLE],
    )
    .await;
    let olga = env
        .sign_in(&api.url, "olga@fastprep.test", USER_PASSWORD)
        .await;
    let chat = 5151;
    let conv = env.insert_conversation(chat, None).await;

    let photo: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let pdf: Vec<u8> = (0..3_000u32).map(|i| (i % 13) as u8).collect();
    let a = uploaded(
        &env,
        &api.url,
        &admin.access,
        "photo.jpg",
        "image/jpeg",
        &photo,
    )
    .await;
    let b = uploaded(
        &env,
        &api.url,
        &admin.access,
        "notes.pdf",
        "application/pdf",
        &pdf,
    )
    .await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    // Declared, never uploaded.
    let (_, never) = start_upload(&env, &api.url, &admin.access, "x.txt", "text/plain", 4).await;
    let never_id = never["id"].as_str().unwrap();
    // Another operator's upload.
    let theirs = uploaded(&env, &api.url, &olga.access, "o.txt", "text/plain", b"olga").await;
    let theirs_id = theirs["id"].as_str().unwrap();
    let guessed = Uuid::now_v7().to_string();

    let mut refusals = vec![
        (vec![a_id, never_id], "attachment_not_uploaded", never_id),
        (vec![a_id, theirs_id], "attachment_not_found", theirs_id),
        (
            vec![guessed.as_str()],
            "attachment_not_found",
            guessed.as_str(),
        ),
    ];
    // S3 cannot bind an upload's length to its URL: a shorter body than
    // declared is stored, and the server-side check refuses it.
    let short;
    if matches!(store, Store::S3(_)) {
        let (_, s) = start_upload(&env, &api.url, &admin.access, "s.txt", "text/plain", 10).await;
        let mut req = reqwest::Client::new()
            .put(s["upload_url"].as_str().unwrap())
            .header("content-type", "text/plain");
        req = req.body(b"123456789".to_vec());
        assert!(req.send().await.unwrap().status().is_success());
        short = s["id"].as_str().unwrap().to_owned();
        refusals.push((
            vec![a_id, short.as_str()],
            "attachment_mismatch",
            short.as_str(),
        ));
    }
    for (i, (files, code, named)) in refusals.iter().enumerate() {
        let (s, body) = reply(
            &env,
            &api.url,
            &admin.access,
            &conv,
            "hi",
            files,
            &format!("r{i}"),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{code}: {body}");
        assert_eq!(body["error"]["code"], *code, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(named),
            "{body}"
        );
    }
    let (s, body) = env
        .http
        .call(
            Method::POST,
            &format!("{}/api/conversations/{conv}/notes", api.url),
            Some(&admin.access),
            Some(json!({"text": "see", "attachment_ids": [a_id], "client_msg_id": "n1"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "attachments_on_note");
    let written: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE conversation_id = $1::uuid")
            .bind(&conv)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(written, 0, "a refused reply writes nothing");
    let attached: i64 =
        sqlx::query_scalar("SELECT count(*) FROM attachments WHERE message_id IS NOT NULL")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(attached, 0, "and attaches nothing");

    // Accepted: the caption rides on the first file.
    let (s, message) = reply(
        &env,
        &api.url,
        &admin.access,
        &conv,
        "Your homework",
        &[a_id, b_id],
        "ok",
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{message}");
    let message_id = message["id"].as_str().unwrap().to_owned();
    let listed: Vec<&str> = message["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [a_id, b_id], "the answer lists the files in order");
    // The upload URL is still valid: what it uploads now is not what goes.
    assert!(put(&a, vec![b'z'; photo.len()], None).await.is_success());
    wait_sent(&env, &message_id).await;
    let sent = sent_to(&env, &adapter, chat).await;
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(sent[0]["idempotency_key"], message_id.as_str());
    assert_eq!(sent[0]["text"], "Your homework");
    assert_eq!(sent[0]["files"][0]["filename"], "photo.jpg");
    assert_eq!(sent[0]["files"][0]["size"], photo.len());
    assert_eq!(sent[0]["files"][0]["sha256"], sha256(&photo));
    assert_eq!(sent[1]["idempotency_key"], format!("{message_id}/{b_id}"));
    assert_eq!(sent[1]["text"], "");
    assert_eq!(sent[1]["files"][0]["filename"], "notes.pdf");
    assert_eq!(sent[1]["files"][0]["sha256"], sha256(&pdf));
    assert!(sent.iter().all(|m| m["send_count"] == 1), "{sent:#?}");

    // The file as sent is the one its link serves.
    let (s, link) = download_url(&env, &api.url, &admin.access, a_id).await;
    assert_eq!(s, StatusCode::OK, "{link}");
    let got = reqwest::get(link["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(got.bytes().await.unwrap().to_vec(), photo);
    // Attached once: the same POST again answers the same message, and
    // another reply cannot take the file.
    let (s, again) = reply(
        &env,
        &api.url,
        &admin.access,
        &conv,
        "Your homework",
        &[a_id, b_id],
        "ok",
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["id"], message_id.as_str());
    let (s, body) = reply(
        &env,
        &api.url,
        &admin.access,
        &conv,
        "again",
        &[b_id],
        "other",
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "attachment_in_use");
    // The same client_msg_id with other files is another message.
    let (s, body) = reply(
        &env,
        &api.url,
        &admin.access,
        &conv,
        "Your homework",
        &[a_id],
        "ok",
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "client_msg_id_reused");

    // Two replies take one upload at the same moment: one gets it, and the
    // loser's clean-up leaves the winner's file whole.
    let raced: Vec<u8> = (0..40_000u32).map(|i| (i % 199) as u8).collect();
    let c = uploaded(
        &env,
        &api.url,
        &admin.access,
        "race.pdf",
        "application/pdf",
        &raced,
    )
    .await;
    let c_id = c["id"].as_str().unwrap();
    let race = [c_id];
    let (first, second) = tokio::join!(
        reply(
            &env,
            &api.url,
            &admin.access,
            &conv,
            "race one",
            &race,
            "race-1"
        ),
        reply(
            &env,
            &api.url,
            &admin.access,
            &conv,
            "race two",
            &race,
            "race-2"
        ),
    );
    let mut outcomes = [first.0.as_u16(), second.0.as_u16()];
    outcomes.sort_unstable();
    assert_eq!(outcomes, [202, 422], "{first:?} {second:?}");
    let winner = if first.0 == StatusCode::ACCEPTED {
        &first.1
    } else {
        &second.1
    };
    wait_sent(&env, winner["id"].as_str().unwrap()).await;
    let (s, link) = download_url(&env, &api.url, &admin.access, c_id).await;
    assert_eq!(s, StatusCode::OK, "{link}");
    let got = reqwest::get(link["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(
        got.bytes().await.unwrap().to_vec(),
        raced,
        "the winner's file is whole"
    );
    let sent = sent_to(&env, &adapter, chat).await;
    assert_eq!(sent.len(), 3, "{sent:#?}");
    assert_eq!(sent[2]["files"][0]["sha256"], sha256(&raced));
    let positions: Vec<(String, i16)> = sqlx::query_as(
        "SELECT object_key, position FROM attachments WHERE message_id = $1::uuid ORDER BY position",
    )
    .bind(&message_id)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    // Each at a pinned key of its own, in the order listed.
    assert_eq!(positions.len(), 2);
    for (i, (key, position)) in positions.iter().enumerate() {
        assert!(key.starts_with("attached/"), "{key}");
        assert_eq!(*position as usize, i);
    }
    assert_ne!(positions[0].0, positions[1].0);
    env.cleanup().await;
    drop(store);
}

#[tokio::test]
async fn replies_carry_files_on_the_local_store() {
    replies_carry_files(Store::Local).await;
}

#[tokio::test]
async fn replies_carry_files_on_s3() {
    replies_carry_files(Store::S3(S3sFs::start().await)).await;
}

/// The adapter dies between a reply's two files: after it comes back, the
/// reply is finished and each part reached Telegram once.
async fn adapter_dies_between_two_files(store: Store) {
    let mut env = TestEnv::new().await;
    let (api, adapter) = delivery_system(&mut env, &store).await;
    let admin = env.admin_session(&api.url).await;
    let chat = 6161;
    let conv = env.insert_conversation(chat, None).await;
    let one = vec![1u8; 4000];
    let two = vec![2u8; 5000];
    let a = uploaded(
        &env,
        &api.url,
        &admin.access,
        "1.pdf",
        "application/pdf",
        &one,
    )
    .await;
    let b = uploaded(
        &env,
        &api.url,
        &admin.access,
        "2.pdf",
        "application/pdf",
        &two,
    )
    .await;
    // Each send takes a while: time to die between the two.
    env.set_faults(&adapter, json!({"latency_ms": 1500})).await;
    let (s, message) = reply(
        &env,
        &api.url,
        &admin.access,
        &conv,
        "both",
        &[a["id"].as_str().unwrap(), b["id"].as_str().unwrap()],
        "k1",
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{message}");
    let message_id = message["id"].as_str().unwrap().to_owned();
    let env_ref = &env;
    let adapter_ref = &adapter;
    fastprep_tests::wait_for(
        "the first part sent",
        std::time::Duration::from_secs(20),
        || async move { (sent_to(env_ref, adapter_ref, chat).await.len() == 1).then_some(()) },
    )
    .await;
    env.proc(adapter.idx).kill();
    env.proc(adapter.idx).restart_with(&[]);
    wait_sent(&env, &message_id).await;
    let sent = sent_to(&env, &adapter, chat).await;
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(sent[0]["files"][0]["sha256"], sha256(&one));
    assert_eq!(sent[1]["files"][0]["sha256"], sha256(&two));
    assert!(sent.iter().all(|m| m["send_count"] == 1), "{sent:#?}");
    env.cleanup().await;
    drop(store);
}

/// A customer's photo and document become attachments of their message,
/// listed with it and downloadable by whoever reads the conversation; the
/// same update again stores nothing twice.
async fn inbound_files_are_kept(store: Store) {
    use base64::Engine;
    let mut env = TestEnv::new().await;
    let adapter = env.start_adapter(&[]).await;
    let api = env.start_api(&store.vars()).await;
    let mut consumer_env = store.vars();
    if matches!(store, Store::Local) {
        consumer_env.push(("DATA_DIR", env.dir.join("api-data").display().to_string()));
        consumer_env.push(("ATTACHMENTS_URL_BASE", api.url.clone()));
    }
    env.start_consumer("relay", None, &[]).await;
    env.start_consumer("inbound", Some(&adapter), &consumer_env)
        .await;
    let admin = env.admin_session(&api.url).await;
    let photo: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let doc = b"%PDF-1.4 homework".to_vec();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let chat = 7171;
    let update = json!({
        "chat_id": chat,
        "tg_message_id": 41,
        "text": "my homework",
        "sender": {"id": chat, "first_name": "Kim"},
        "media": [
            {"kind": "photo", "data_base64": b64(&photo)},
            {"kind": "document", "filename": "../../hw\u{0007}.pdf", "content_type": "application/pdf", "data_base64": b64(&doc)},
        ],
    });
    for _ in 0..2 {
        let (s, body) = env
            .http
            .sandbox(
                &adapter.url,
                Method::POST,
                "/sandbox/inbound",
                Some(update.clone()),
            )
            .await;
        assert!(s.is_success(), "{s} {body}");
    }
    let pool = env.pool.clone();
    let conv: String = fastprep_tests::wait_for(
        "the message stored",
        std::time::Duration::from_secs(20),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, String>(
                    "SELECT c.id::text FROM messages m JOIN conversations c ON c.id = m.conversation_id
                     WHERE c.tg_chat_id = $1 AND m.tg_message_id = 41",
                )
                .bind(chat)
                .fetch_optional(&pool)
                .await
                .unwrap()
            }
        },
    )
    .await;
    // Both updates handled: the second found the message stored.
    env.wait_count(
        "both updates handled",
        "SELECT count(*) FROM processed_messages WHERE consumer = 'inbound'",
        std::time::Duration::from_secs(20),
        |n| n == 2,
    )
    .await;
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM attachments")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(files, 2, "stored once");
    let (s, page) = env
        .http
        .call(
            Method::GET,
            &format!("{}/api/conversations/{conv}/messages", api.url),
            Some(&admin.access),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let listed = page["items"][0]["attachments"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{page}");
    assert_eq!(listed[0]["filename"], "photo.jpg");
    assert_eq!(listed[0]["content_type"], "image/jpeg");
    assert_eq!(listed[0]["size_bytes"], photo.len());
    assert_eq!(listed[1]["filename"], ".._.._hw_.pdf");
    for (file, bytes) in listed.iter().zip([&photo, &doc]) {
        let (s, link) =
            download_url(&env, &api.url, &admin.access, file["id"].as_str().unwrap()).await;
        assert_eq!(s, StatusCode::OK, "{link}");
        let got = reqwest::get(link["url"].as_str().unwrap()).await.unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(&got.bytes().await.unwrap().to_vec(), bytes);
    }
    env.cleanup().await;
    drop(store);
}

#[tokio::test]
async fn inbound_files_are_kept_on_the_local_store() {
    inbound_files_are_kept(Store::Local).await;
}

#[tokio::test]
async fn inbound_files_are_kept_on_s3() {
    inbound_files_are_kept(Store::S3(S3sFs::start().await)).await;
}

#[tokio::test]
async fn a_reply_with_two_files_goes_once_though_the_adapter_dies_between_them_on_s3() {
    adapter_dies_between_two_files(Store::S3(S3sFs::start().await)).await;
}

#[tokio::test]
async fn a_reply_with_two_files_goes_once_though_the_adapter_dies_between_them_locally() {
    adapter_dies_between_two_files(Store::Local).await;
}
