//! The `/v1` routes over HTTP with the MTProto backend on the fake
//! Telegram: the login's steps, sends with their statuses, edits, deletes
//! and read marks, as tg-delivery and the operators' tools will call them.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;

use crate::{
    backend::{
        Backend,
        contract::{CHAT, logged_in_mtproto},
        mtproto::{ApiCredentials, MtprotoBackend, SessionFile, fake::FakeTelegram},
    },
    budget::Budgets,
    config::BudgetConfig,
    idempotency::IdempotencyStore,
    metrics::Metrics,
    send::SendService,
    store::Store,
};

const TOKEN: &str = "a-test-token-0123456789";

struct Served {
    base: String,
    http: reqwest::Client,
}

impl Served {
    async fn start(dir: &std::path::Path, backend: Arc<dyn Backend>) -> Self {
        let store = Store::open(dir, &[IdempotencyStore::create_table]).unwrap();
        let sender = Arc::new(SendService::new(
            backend.clone(),
            IdempotencyStore::new(store),
            Budgets::new(&BudgetConfig::default()),
            Metrics::new(&opentelemetry::global::meter("test")),
        ));
        let app = super::router(
            super::auth::BearerAuth::new(&secrecy::SecretString::from(TOKEN)),
            super::v1::V1State {
                sender,
                backend,
                tasks: TaskTracker::new(),
            },
            None,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if path == "/v1/messages" {
            request = request.header("Idempotency-Key", "reply-1");
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tg-http-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn login_then_send_edit_delete_and_read_over_http() {
    use reqwest::Method;
    let dir = temp_dir();
    let fake = Arc::new(FakeTelegram::default());
    fake.set_password("pw");
    let session =
        Arc::new(SessionFile::open(&dir, &secrecy::SecretString::from("a test key")).unwrap());
    let backend = Arc::new(MtprotoBackend::new(
        fake.clone(),
        session,
        ApiCredentials {
            api_id: 1,
            api_hash: secrecy::SecretString::from("0123456789abcdef0123456789abcdef"),
        },
    ));
    fake.add_dialog_user(crate::backend::mtproto::fake::user(
        CHAT, 99, "Customer", false,
    ));
    let app = Served::start(&dir, backend).await;

    let send = json!({"chat_id": CHAT, "text": "hello", "attachments": []});
    let (status, body) = app
        .call(Method::POST, "/v1/messages", Some(send.clone()))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("session_needs_login"))
    );

    assert_eq!(
        app.call(Method::GET, "/v1/auth", None).await.1,
        json!({"step": "phone"})
    );
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/auth/code",
            Some(json!({"code": "12345"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("login_out_of_order"))
    );
    let (_, body) = app
        .call(
            Method::POST,
            "/v1/auth/phone",
            Some(json!({"phone": "+15550100"})),
        )
        .await;
    assert_eq!(body, json!({"step": "code", "phone": "+1*****00"}));
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/auth/code",
            Some(json!({"code": "99999"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("phone_code_invalid"))
    );
    let (_, body) = app
        .call(
            Method::POST,
            "/v1/auth/code",
            Some(json!({"code": "12345"})),
        )
        .await;
    assert_eq!(body, json!({"step": "password", "hint": "the usual"}));
    let (_, body) = app
        .call(
            Method::POST,
            "/v1/auth/password",
            Some(json!({"password": "pw"})),
        )
        .await;
    assert_eq!(body, json!({"step": "authorized"}));
    assert_eq!(
        app.call(Method::GET, "/v1/status", None).await.1,
        json!({"session": "authorized"})
    );

    // The chat was learned from the dialogs warmed after the login.
    let (status, body) = app.call(Method::POST, "/v1/messages", Some(send)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["tg_message_id"].as_i64().unwrap();
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/messages/{CHAT}/{id}"),
            Some(json!({"text": "hello again"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["edited_at"].is_string());
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/messages/{CHAT}/999999"),
            Some(json!({"text": "x"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("message_not_found"))
    );
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/v1/chats/{CHAT}/read"),
            Some(json!({"max_id": id})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .call(Method::DELETE, &format!("/v1/messages/{CHAT}/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // A chat the account never saw.
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/v1/chats/{}/read", CHAT + 1),
            Some(json!({"max_id": 1})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("chat_not_found"))
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_sandbox_has_no_login_and_flood_waits_are_429() {
    use reqwest::Method;
    let dir = temp_dir();
    let sandbox_dir = dir.join("sandbox");
    std::fs::create_dir_all(&sandbox_dir).unwrap();
    let sandbox_store = Store::open(
        &sandbox_dir,
        &[crate::backend::SandboxBackend::create_tables],
    )
    .unwrap();
    let sandbox: Arc<dyn Backend> = Arc::new(crate::backend::SandboxBackend::new(sandbox_store));
    let app = Served::start(&dir, sandbox).await;
    let (status, body) = app.call(Method::GET, "/v1/auth", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("login_unavailable"))
    );

    let mtproto_dir = dir.join("mtproto");
    std::fs::create_dir_all(&mtproto_dir).unwrap();
    let (backend, fake) = logged_in_mtproto(&mtproto_dir).await;
    fake.fail_next::<grammers_tl_types::functions::messages::SendMessage>(
        crate::backend::mtproto::fake::rpc_error(420, "FLOOD_WAIT_31"),
    );
    let app = Served::start(&mtproto_dir, Arc::new(backend)).await;
    let response = app
        .http
        .post(format!("{}/v1/messages", app.base))
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", "reply-2")
        .json(&json!({"chat_id": CHAT, "text": "hi", "attachments": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "31");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["retry_after"], 31);
    let status = app.call(Method::GET, "/v1/status", None).await.1;
    assert_eq!(status["session"], "flood_wait");
    assert!(status["until"].is_string());
    let _ = std::fs::remove_dir_all(dir);
}
