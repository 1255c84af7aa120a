//! `POST /v1/messages`: auth, validation, idempotency (also across a
//! restart and under concurrency) and send budgets; and the edit, delete
//! and read routes beside it.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{App, TOKEN, TempDir, status_json};

#[tokio::test]
async fn health_is_open_and_everything_else_needs_the_token() {
    let dir = TempDir::new();
    let app = App::start(dir.path(), &[]).await;

    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    for auth in [None, Some("Bearer wrong-token-0123456789"), Some(TOKEN)] {
        let mut request = app.client.get(app.url("/v1/status"));
        if let Some(value) = auth {
            request = request.header("Authorization", value);
        }
        let (status, body) = status_json(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(body["code"], "unauthorized");
        assert!(body["message"].is_string());
    }

    assert_eq!(
        app.get("/v1/status").await,
        json!({"session": "authorized"})
    );

    let send = app
        .client
        .post(app.url("/v1/messages"))
        .header("Idempotency-Key", "k")
        .json(&json!({"chat_id": 1, "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(send.status(), StatusCode::UNAUTHORIZED);
    let sandbox = app
        .client
        .get(app.url("/sandbox/sent"))
        .send()
        .await
        .unwrap();
    assert_eq!(sandbox.status(), StatusCode::UNAUTHORIZED);
    // Each token opens its own routes only.
    let with_v1_token = app
        .client
        .get(app.url("/sandbox/sent"))
        .bearer_auth(crate::helpers::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(with_v1_token.status(), StatusCode::UNAUTHORIZED);
    let with_sandbox_token = app
        .client
        .get(app.url("/v1/status"))
        .bearer_auth(crate::helpers::SANDBOX_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(with_sandbox_token.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.sent().await["total_sends"], 0);
    app.stop().await;
}

#[tokio::test]
async fn idempotency_key_is_required_and_bounded() {
    let dir = TempDir::new();
    let app = App::start(dir.path(), &[]).await;
    let body = json!({"chat_id": 10, "text": "hi"});

    let (status, err) = status_json(app.send(None, &body).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["code"], "missing_idempotency_key");

    let (status, err) = status_json(app.send(Some("   "), &body).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["code"], "missing_idempotency_key");

    let long = "k".repeat(201);
    let (status, err) = status_json(app.send(Some(&long), &body).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["code"], "invalid_idempotency_key");

    assert_eq!(app.sent().await["total_sends"], 0);
    app.stop().await;
}

#[tokio::test]
async fn text_is_validated() {
    let dir = TempDir::new();
    let app = App::start(dir.path(), &[]).await;

    let (status, err) = status_json(app.send_text("long", 11, &"я".repeat(4097)).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["code"], "message_too_long");

    let (status, err) = status_json(app.send_text("empty", 11, "").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["code"], "empty_message");

    let bad = app
        .send(Some("bad-json"), &json!({"text": "no chat"}))
        .await;
    let (status, err) = status_json(bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["code"], "invalid_body");

    let (status, _) = status_json(app.send_text("max", 11, &"я".repeat(4096)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.sent().await["total_sends"], 1);
    app.stop().await;
}

#[tokio::test]
async fn same_key_sends_once_even_concurrently() {
    let dir = TempDir::new();
    let app = App::start(dir.path(), &[]).await;

    let first = app.send_text("msg-1", 20, "hello").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: serde_json::Value = first.json().await.unwrap();
    assert!(first["tg_message_id"].as_i64().unwrap() > 0);
    let sent_at = first["sent_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(sent_at).is_ok(),
        "{sent_at}"
    );

    let again = app.send_text("msg-1", 20, "hello").await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<serde_json::Value>().await.unwrap(), first);

    // Ten concurrent requests with one new key: one send, one answer.
    let results =
        futures::future::join_all((0..10).map(|_| app.send_text("msg-2", 20, "concurrent"))).await;
    let mut ids = Vec::new();
    for response in results {
        let (status, body) = status_json(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.push(body["tg_message_id"].as_i64().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");

    let sent = app.sent().await;
    assert_eq!(sent["total_sends"], 2, "{sent}");
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages[0]["idempotency_key"], "msg-1");
    assert_eq!(messages[0]["text"], "hello");
    assert_eq!(messages[0]["chat_id"], 20);
    assert_eq!(messages[0]["tg_message_id"], first["tg_message_id"]);
    assert_eq!(
        messages[0]["random_id"],
        tg_adapter::idempotency::random_id("msg-1")
    );
    assert!(messages.iter().all(|m| m["send_count"] == 1), "{sent}");
    let received_at = messages[0]["received_at"].as_str().unwrap();
    assert_eq!(
        received_at.len(),
        "2025-01-01T00:00:00.000000Z".len(),
        "{received_at}"
    );

    let metrics = app.telemetry.render();
    assert!(metrics.contains("tg_adapter_sends_total"), "{metrics}");
    assert!(metrics.contains("result=\"duplicate\""), "{metrics}");
    assert!(
        metrics.contains("tg_adapter_send_duration_seconds"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn idempotency_and_sent_log_survive_a_restart() {
    let dir = TempDir::new();
    let app = App::start(dir.path(), &[]).await;
    let (status, first) = status_json(app.send_text("restart-1", 30, "before").await).await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;

    let app = App::start(dir.path(), &[]).await;
    let (status, again) = status_json(app.send_text("restart-1", 30, "before").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);
    let sent = app.sent().await;
    assert_eq!(sent["total_sends"], 1, "{sent}");
    assert_eq!(sent["messages"][0]["send_count"], 1);

    // Message ids keep counting after the restart.
    let (_, next) = status_json(app.send_text("restart-2", 30, "after").await).await;
    assert!(next["tg_message_id"].as_i64() > first["tg_message_id"].as_i64());
    app.stop().await;
}

#[tokio::test]
async fn per_chat_budget_answers_429_with_retry_after() {
    let dir = TempDir::new();
    let app = App::start(
        dir.path(),
        &[("TG_CHAT_BURST", "2"), ("TG_CHAT_RATE_PER_SEC", "0.1")],
    )
    .await;
    for key in ["b-1", "b-2"] {
        assert_eq!(app.send_text(key, 40, "ok").await.status(), StatusCode::OK);
    }
    let over = app.send_text("b-3", 40, "over").await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let header: u64 = over.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: serde_json::Value = over.json().await.unwrap();
    assert_eq!(body["code"], "flood_wait");
    let retry_after = body["retry_after"].as_u64().unwrap();
    assert_eq!(retry_after, header);
    assert!((9..=10).contains(&retry_after), "{retry_after}");

    // A replay costs no budget; another chat has its own.
    assert_eq!(
        app.send_text("b-1", 40, "ok").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.send_text("b-4", 41, "ok").await.status(),
        StatusCode::OK
    );
    assert_eq!(app.sent().await["total_sends"], 3);
    assert!(app.telemetry.render().contains("result=\"flood_wait\""));
    app.stop().await;
}

#[tokio::test]
async fn global_budget_spans_chats() {
    let dir = TempDir::new();
    let app = App::start(
        dir.path(),
        &[("TG_GLOBAL_BURST", "1"), ("TG_GLOBAL_RATE_PER_SEC", "0.5")],
    )
    .await;
    assert_eq!(
        app.send_text("g-1", 50, "ok").await.status(),
        StatusCode::OK
    );
    let (status, body) = status_json(app.send_text("g-2", 51, "over").await).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["retry_after"], 2);
    app.stop().await;
}

/// Edit, delete and read marks through `/v1`, as the outbox will call them.
#[tokio::test]
async fn edit_delete_and_read_through_v1() {
    let dir = TempDir::new();
    let app = App::start(dir.path(), &[]).await;
    let (status, body) = status_json(app.send_text("ed-1", 77, "first").await).await;
    assert_eq!(status, StatusCode::OK);
    let id = body["tg_message_id"].as_i64().unwrap();
    let call = |method: reqwest::Method, path: String, body: Option<serde_json::Value>| {
        let mut request = app
            .client
            .request(method, app.url(&path))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let (status, body) = status_json(
        call(
            reqwest::Method::PATCH,
            format!("/v1/messages/77/{id}"),
            Some(json!({"text": "first, edited"})),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["edited_at"].is_string());
    let (status, body) = status_json(
        call(
            reqwest::Method::PATCH,
            "/v1/messages/77/99999".into(),
            Some(json!({"text": "x"})),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("message_not_found"))
    );
    let (status, body) = status_json(
        call(
            reqwest::Method::PATCH,
            format!("/v1/messages/77/{id}"),
            Some(json!({"text": " "})),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("empty_message"))
    );
    let response = call(
        reqwest::Method::POST,
        "/v1/chats/77/read".into(),
        Some(json!({"max_id": id})),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = call(
        reqwest::Method::DELETE,
        format!("/v1/messages/77/{id}"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // Without the token: 401 like every /v1 route.
    let response = app
        .client
        .delete(app.url(&format!("/v1/messages/77/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}
