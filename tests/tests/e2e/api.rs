//! The REST contract: authentication on every route, error bodies, health.

use fastprep_tests::{TestEnv, env};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn nothing_but_login_and_health_is_open_to_anonymous_callers() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let id = uuid::Uuid::now_v7();
    for (method, path) in [
        (Method::GET, "/api/auth/me".to_owned()),
        (Method::GET, "/api/conversations".to_owned()),
        (Method::GET, format!("/api/conversations/{id}/messages")),
        (Method::POST, format!("/api/conversations/{id}/messages")),
    ] {
        let body = (method == Method::POST).then(|| json!({"text": "x", "client_msg_id": "a"}));
        for token in [
            None,
            Some("not-a-jwt"),
            Some("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
        ] {
            let (status, err) = env
                .http
                .call(
                    method.clone(),
                    &format!("{}{path}", api.url),
                    token,
                    body.clone(),
                )
                .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}: {err}"
            );
            assert!(
                err["error"]["code"].is_string() && err["error"]["request_id"].is_string(),
                "{err}"
            );
        }
    }
    let (status, _) = env
        .http
        .call(Method::GET, &format!("{}/api/health", api.url), None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    env.cleanup().await;
}

#[tokio::test]
async fn login_refuses_wrong_passwords_without_saying_which_part_was_wrong() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let login = format!("{}/api/auth/login", api.url);
    let (s1, b1) = env
        .http
        .call(
            Method::POST,
            &login,
            None,
            Some(json!({"email": env::ADMIN_EMAIL, "password": "wrong"})),
        )
        .await;
    let (s2, b2) = env
        .http
        .call(
            Method::POST,
            &login,
            None,
            Some(json!({"email": "nobody@fastprep.test", "password": "wrong"})),
        )
        .await;
    assert_eq!(
        (s1, s2),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(b1["error"]["message"], b2["error"]["message"]);
    let token = env
        .http
        .login(&api.url, env::ADMIN_EMAIL, env::ADMIN_PASSWORD)
        .await;
    let (status, me) = env
        .http
        .call(
            Method::GET,
            &format!("{}/api/auth/me", api.url),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], env::ADMIN_EMAIL);
    env.cleanup().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let token = env
        .http
        .login(&api.url, env::ADMIN_EMAIL, env::ADMIN_PASSWORD)
        .await;
    let conv = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO conversations (id, tg_chat_id, title) VALUES ($1, 42, 'x')")
        .bind(conv)
        .execute(&env.pool)
        .await
        .unwrap();
    let url = format!("{}/api/conversations/{conv}/messages", api.url);
    let cases = [
        (
            json!({"text": "", "client_msg_id": "a"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_text",
        ),
        (
            json!({"text": "x".repeat(4097), "client_msg_id": "a"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "text_too_long",
        ),
        (
            json!({"text": "x", "client_msg_id": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_client_msg_id",
        ),
        (
            json!({"text": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
        ),
        (
            json!({"text": 5, "client_msg_id": "a"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
        ),
    ];
    for (body, status, code) in cases {
        let (s, b) = env
            .http
            .call(Method::POST, &url, Some(&token), Some(body.clone()))
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {b}"
        );
    }
    let (s, b) = env
        .http
        .call(
            Method::POST,
            &format!(
                "{}/api/conversations/{}/messages",
                api.url,
                uuid::Uuid::now_v7()
            ),
            Some(&token),
            Some(json!({"text": "x", "client_msg_id": "a"})),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, _) = env
        .http
        .call(
            Method::GET,
            &format!("{}/api/conversations/not-a-uuid/messages", api.url),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = env
        .http
        .call(
            Method::GET,
            &format!("{}/api/conversations?cursor=garbage", api.url),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_cursor"))
    );
    let written: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM outbox)",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(written, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn health_names_what_is_down() {
    let mut env = TestEnv::new().await;
    let proxy = env.broker_proxy().await;
    let amqp = env.amqp_url_via("127.0.0.1", proxy.port());
    let api = env.start_api(&[("AMQP_URL", amqp)]).await;
    let url = format!("{}/api/health", api.url);
    let (status, body) = env.http.call(Method::GET, &url, None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    proxy.cut();
    let http = env.http.clone();
    let body = fastprep_tests::wait_for(
        "health to report the broker down",
        std::time::Duration::from_secs(5),
        || {
            let http = http.clone();
            let url = url.clone();
            async move {
                let (status, body) = http.call(Method::GET, &url, None, None).await;
                (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
            }
        },
    )
    .await;
    // The realtime stream rides the same link, so it may be named too.
    let down = body["down"].as_array().unwrap();
    assert!(down.contains(&json!("rabbitmq")), "{body}");
    assert!(
        down.iter().all(|d| d == "rabbitmq" || d == "realtime"),
        "{body}"
    );
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(body["checks"]["redis"], "ok");
    proxy.restore();
    let http = env.http.clone();
    fastprep_tests::wait_for(
        "health to recover, realtime stream included",
        std::time::Duration::from_secs(15),
        || {
            let http = http.clone();
            let url = url.clone();
            async move {
                let (status, _) = http.call(Method::GET, &url, None, None).await;
                (status == StatusCode::OK).then_some(())
            }
        },
    )
    .await;
    env.cleanup().await;
}

#[tokio::test]
async fn conversations_paginate_without_gaps_or_repeats() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let token = env
        .http
        .login(&api.url, env::ADMIN_EMAIL, env::ADMIN_PASSWORD)
        .await;
    for i in 0..25 {
        sqlx::query("INSERT INTO conversations (id, tg_chat_id, title, last_message_at) VALUES ($1, $2, 'c', now() - ($3 || ' minutes')::interval)")
            .bind(uuid::Uuid::now_v7())
            .bind(100 + i as i64)
            .bind((i % 5).to_string())
            .execute(&env.pool)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/api/conversations?limit=7", api.url);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let (s, page) = env.http.call(Method::GET, &url, Some(&token), None).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        for c in page["items"].as_array().unwrap() {
            seen.push(c["tg_chat_id"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 25, "{seen:?}");
    assert_eq!(seen.len(), 25);
    env.cleanup().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('|', "%7C")
        .replace(':', "%3A")
}

#[tokio::test]
async fn the_api_serves_the_committed_openapi_document() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let resp = env
        .http
        .raw()
        .get(format!("{}/api/openapi.json", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json",
        "served as JSON"
    );
    let served = resp.text().await.unwrap();
    let committed = include_str!("../../../docs/openapi.json");
    assert!(
        served == committed,
        "GET /api/openapi.json differs from docs/openapi.json: run \
         `cargo run -p api --bin fastprep-api -- openapi > docs/openapi.json` and rebuild"
    );
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // Public, and in its own document.
    assert_eq!(
        doc["paths"]["/api/openapi.json"]["get"]["x-access"],
        "public"
    );
    env.cleanup().await;
}
