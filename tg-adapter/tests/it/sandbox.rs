//! Scripted sandbox failures and how they surface through `POST /v1/messages`.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{App, TempDir, status_json};

#[tokio::test]
async fn server_error_is_transient_and_the_key_can_be_retried() {
    let dir = TempDir::new();
    let app = App::start(dir.path(), &[]).await;
    app.faults(json!({"fail_next": 1, "mode": "server_error"}))
        .await;

    let (status, body) = status_json(app.send_text("f-1", 60, "hi").await).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["code"], "upstream_unavailable");
    assert_eq!(app.sent().await["total_sends"], 0);

    let (status, _) = status_json(app.send_text("f-1", 60, "hi").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.sent().await["total_sends"], 1);
    assert!(app.telemetry.render().contains("result=\"transient\""));
    app.stop().await;
}

#[tokio::test]
async fn flood_wait_becomes_429_with_retry_after() {
    let dir = TempDir::new();
    let app = App::start(dir.path(), &[]).await;
    app.faults(json!({"fail_next": 2, "mode": "flood_wait", "retry_after": 7}))
        .await;

    for key in ["fw-1", "fw-2"] {
        let response = app.send_text(key, 61, "hi").await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "7");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "flood_wait");
        assert_eq!(body["retry_after"], 7);
    }
    assert_eq!(app.sent().await["total_sends"], 0);
    assert_eq!(
        app.send_text("fw-1", 61, "hi").await.status(),
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn permanent_errors_map_to_4xx() {
    let dir = TempDir::new();
    let app = App::start(dir.path(), &[]).await;
    for (code, expected) in [
        ("chat_not_found", StatusCode::NOT_FOUND),
        ("user_blocked", StatusCode::FORBIDDEN),
        ("file_too_large", StatusCode::PAYLOAD_TOO_LARGE),
        ("message_too_long", StatusCode::BAD_REQUEST),
    ] {
        app.faults(json!({"fail_next": 1, "mode": "permanent", "code": code}))
            .await;
        let (status, body) = status_json(app.send_text(code, 62, "hi").await).await;
        assert_eq!(status, expected, "{code}");
        assert_eq!(body["code"], code);
        assert!(body["message"].is_string());
    }
    // The default permanent code.
    app.faults(json!({"fail_next": 1, "mode": "permanent"}))
        .await;
    let (status, body) = status_json(app.send_text("default", 62, "hi").await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("chat_not_found"))
    );

    // The sandbox's own check of attachment sizes.
    let huge = json!({"chat_id": 62, "text": "", "attachments": [
        {"url": "https://files/x", "filename": "x.bin", "content_type": "application/octet-stream",
         "size": 3_000_000_000_i64}]});
    let (status, body) = status_json(app.send(Some("huge"), &huge).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("file_too_large"))
    );
    assert_eq!(app.sent().await["total_sends"], 0);
    app.stop().await;
}

#[tokio::test]
async fn lost_response_is_deduplicated_on_retry() {
    let dir = TempDir::new();
    let app = App::start(dir.path(), &[]).await;
    app.faults(json!({"fail_next": 1, "mode": "lost_response"}))
        .await;
    let (status, _) = status_json(app.send_text("lost-1", 63, "hi").await).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let sent = app.sent().await;
    assert_eq!(sent["total_sends"], 1, "the message did go out");

    let (status, body) = status_json(app.send_text("lost-1", 63, "hi").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["tg_message_id"], sent["messages"][0]["tg_message_id"]);
    let sent = app.sent().await;
    assert_eq!(sent["total_sends"], 1);
    assert_eq!(sent["messages"][0]["send_count"], 1);
    app.stop().await;
}

#[tokio::test]
async fn latency_faults_listing_filters_and_reset() {
    let dir = TempDir::new();
    let app = App::start(dir.path(), &[]).await;
    app.faults(json!({"latency_ms": 150})).await;
    let started = std::time::Instant::now();
    assert_eq!(
        app.send_text("lat-1", 64, "slow").await.status(),
        StatusCode::OK
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    assert_eq!(app.get("/sandbox/faults").await["latency_ms"], 150);

    let cleared = app
        .client
        .delete(app.url("/sandbox/faults"))
        .bearer_auth(crate::helpers::SANDBOX_TOKEN);
    assert_eq!(cleared.send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.get("/sandbox/faults").await, json!({"fail_next": 0}));

    let (status, body) =
        status_json(app.post("/sandbox/faults", &json!({"fail_next": 1})).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_fault"))
    );

    assert_eq!(
        app.send_text("lat-2", 65, "other chat").await.status(),
        StatusCode::OK
    );
    let only = app.get("/sandbox/sent?chat_id=65").await;
    assert_eq!(only["total_sends"], 1);
    assert_eq!(only["messages"][0]["idempotency_key"], "lat-2");

    app.faults(json!({"fail_next": 3, "mode": "server_error"}))
        .await;
    let reset = app.post("/sandbox/reset", &json!({})).await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.sent().await["total_sends"], 0);
    assert_eq!(
        app.send_text("lat-3", 65, "after reset").await.status(),
        StatusCode::OK
    );
    app.stop().await;
}
