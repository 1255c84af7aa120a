//! The security suite, the system's surface: published secrets refused in
//! production, permission cache entries that Redis cannot forge, NUL bytes,
//! request ids, unauthenticated WebSocket handshakes, the metrics listener
//! and the adapter's two tokens.

use std::time::Duration;

use api::auth::jwt::{AUDIENCE, ISSUER};
use fastprep_tests::{
    TestEnv,
    accounts::{USER_PASSWORD, VIEWER_ROLE},
    env, free_port, wait_for,
    ws::Ws,
};
use fred::interfaces::KeysInterface;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PRODUCTION: (&str, &str) = ("FASTPREP_ENV", "production");

/// Starts `bin` and waits for it to exit on its own; panics if it is still
/// running after 15 s (it accepted what it should have refused).
async fn refused_at_start(
    env: &mut TestEnv,
    bin: &str,
    args: &[&str],
    vars: &[(&str, String)],
) -> (i32, String) {
    let idx = env.spawn(bin, args, vars);
    let status = wait_for(
        &format!("{bin} to refuse its configuration"),
        Duration::from_secs(15),
        || {
            let status = env.proc(idx).exited();
            async move { status }
        },
    )
    .await;
    (status.code().unwrap_or(-1), env.logs())
}

fn forge(secret: &str, sub: &str, pv: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "pv": pv, "iat": now, "exp": now + 120, "iss": ISSUER, "aud": AUDIENCE}),
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn published_development_secrets_are_refused_outside_development_mode() {
    let mut env = TestEnv::new().await;
    let dev_jwt = "dev-only-jwt-secret-change-me-0123456789abcdef";
    for secret in [dev_jwt, env::JWT_SECRET, &"a".repeat(48)] {
        let (code, logs) = refused_at_start(
            &mut env,
            "fastprep-api",
            &["serve"],
            &[
                (PRODUCTION.0, PRODUCTION.1.to_owned()),
                ("JWT_SECRET", secret.to_owned()),
                ("PORT", free_port().to_string()),
            ],
        )
        .await;
        assert_eq!(code, 2, "{logs}");
        assert!(logs.contains("JWT_SECRET"), "{logs}");
    }
    let (code, logs) = refused_at_start(
        &mut env,
        "fastprep-consumers",
        &["tg-delivery"],
        &[
            (PRODUCTION.0, PRODUCTION.1.to_owned()),
            ("TG_ADAPTER_URL", "http://127.0.0.1:9".to_owned()),
            (
                "TG_ADAPTER_TOKEN",
                "dev-only-adapter-token-0123456789".to_owned(),
            ),
        ],
    )
    .await;
    assert_eq!(code, 2, "{logs}");
    assert!(logs.contains("TG_ADAPTER_TOKEN"), "{logs}");
    let data_dir = env.dir.join("adapter").display().to_string();
    let (code, logs) = refused_at_start(
        &mut env,
        "fastprep-tg-adapter",
        &[],
        &[
            (PRODUCTION.0, PRODUCTION.1.to_owned()),
            ("PORT", free_port().to_string()),
            ("TG_BACKEND", "sandbox".to_owned()),
            ("DATA_DIR", data_dir),
            (
                "TG_ADAPTER_TOKEN",
                "dev-only-adapter-token-0123456789".to_owned(),
            ),
        ],
    )
    .await;
    assert_eq!(code, 2, "{logs}");
    assert!(logs.contains("TG_ADAPTER_TOKEN"), "{logs}");

    // With a secret of its own, production starts, and tokens signed with
    // the published secrets are forgeries.
    let own = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let api = env
        .start_api(&[(PRODUCTION.0, PRODUCTION.1.to_owned()), ("JWT_SECRET", own)])
        .await;
    let admin = env.admin_session(&api.url).await;
    for published in [dev_jwt, env::JWT_SECRET] {
        let (s, body) = env
            .http
            .get(
                &format!("{}/api/users", api.url),
                &forge(published, &admin.user_id, 1),
            )
            .await;
        assert_eq!(
            (s, body["error"]["code"].clone()),
            (StatusCode::UNAUTHORIZED, json!("invalid_token"))
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_permission_entry_written_into_redis_grants_nothing() {
    let mut env = TestEnv::new().await;
    let first = env.start_api(&[]).await;
    let admin = env.admin_session(&first.url).await;
    let user = env
        .create_user(
            &first.url,
            &admin.access,
            "reader@fastprep.test",
            &[VIEWER_ROLE],
        )
        .await;
    let reader = env
        .sign_in(&first.url, "reader@fastprep.test", USER_PASSWORD)
        .await;
    let (s, _) = env
        .http
        .get(&format!("{}/api/auth/me/ep", first.url), &reader.access)
        .await;
    assert_eq!(s, StatusCode::OK);
    let redis = env.redis().await;
    let key = env.redis_keys().ep(user.parse().unwrap());
    let genuine: String = redis.get(&key).await.unwrap();
    let genuine: Value = serde_json::from_str(&genuine).unwrap();
    let version = genuine["v"].as_i64().unwrap();
    let admin_entry: String = redis
        .get(env.redis_keys().ep(admin.user_id.parse().unwrap()))
        .await
        .unwrap();
    let mut admin_entry: Value = serde_json::from_str(&admin_entry).unwrap();
    admin_entry["v"] = json!(version);

    let everything: Vec<&str> = api::authz::Perm::ALL.iter().map(|p| p.as_str()).collect();
    let forgeries = [
        // Rights added to the user's own entry, its seal kept.
        json!({"v": version, "active": true, "permissions": everything, "mac": genuine["mac"]}),
        // No seal at all, and a version from the future.
        json!({"v": version + 100, "active": true, "permissions": everything}),
        // The admin's sealed entry, moved under the user's key.
        admin_entry,
    ];
    for forged in forgeries {
        let _: () = redis
            .set(&key, forged.to_string(), None, None, false)
            .await
            .unwrap();
        // A fresh instance has nothing in memory: it reads Redis.
        let api = env.start_api(&[]).await;
        let (s, body) = env
            .http
            .get(&format!("{}/api/users", api.url), &reader.access)
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{forged}: {body}");
        let (s, ep) = env
            .http
            .get(&format!("{}/api/auth/me/ep", api.url), &reader.access)
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            ep["permissions"],
            json!(["inbox.read_all", "attachments.read"])
        );
        // The forgery was replaced by a sealed entry from PostgreSQL.
        let now: String = redis.get(&key).await.unwrap();
        let now: Value = serde_json::from_str(&now).unwrap();
        assert_eq!(now["permissions"], genuine["permissions"], "{forged}");
        assert_eq!(now["v"], json!(version));
        let metrics = env.http.text(&api.metrics_url).await;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("authz_ep_cache_total{") && l.contains("result=\"refused\"")),
            "{metrics}"
        );
    }
    // The admin's own rights are untouched by all this.
    let (s, _) = env
        .http
        .get(&format!("{}/api/users", first.url), &admin.access)
        .await;
    assert_eq!(s, StatusCode::OK);
    env.cleanup().await;
}

#[tokio::test]
async fn nul_bytes_are_refused_with_422_and_inbound_nul_is_stored() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let api = sys.api.url.as_str();
    let token = sys.token.as_str();
    let conv = env.insert_conversation(9300, None).await;
    let me = env.admin_session(api).await.user_id;
    let (messages, outbox, users) = (
        env.count("messages").await,
        env.count("outbox").await,
        env.count("users").await,
    );
    let cases: Vec<(Method, String, Option<Value>, &str)> = vec![
        (
            Method::GET,
            "/api/conversations?q=a%00b".into(),
            None,
            "invalid_query",
        ),
        (
            Method::GET,
            "/api/audit?target_id=x%00".into(),
            None,
            "invalid_target_id",
        ),
        (
            Method::POST,
            format!("/api/conversations/{conv}/notes"),
            Some(json!({"text": "a\u{0}b", "client_msg_id": "n1"})),
            "invalid_text",
        ),
        (
            Method::POST,
            format!("/api/conversations/{conv}/messages"),
            Some(json!({"text": "a\u{0}b", "client_msg_id": "m1"})),
            "invalid_text",
        ),
        (
            Method::PATCH,
            format!("/api/users/{me}"),
            Some(json!({"display_name": "Ad\u{0}min"})),
            "invalid_display_name",
        ),
        (
            Method::POST,
            "/api/users".into(),
            Some(
                json!({"email": "x@fastprep.test", "display_name": "x\u{0}", "password": USER_PASSWORD}),
            ),
            "invalid_display_name",
        ),
        // A field with no check of its own meets the backstop.
        (
            Method::POST,
            "/api/roles".into(),
            Some(json!({"name": "nul", "description": "a\u{0}b", "permissions": []})),
            "invalid_character",
        ),
    ];
    for (method, path, body, code) in cases {
        let (s, err) = env
            .http
            .call(method.clone(), &format!("{api}{path}"), Some(token), body)
            .await;
        assert_eq!(
            (s, err["error"]["code"].clone()),
            (StatusCode::UNPROCESSABLE_ENTITY, json!(code)),
            "{method} {path}: {err}"
        );
    }
    let (s, err) = env
        .http
        .call(
            Method::POST,
            &format!("{api}/api/auth/login"),
            None,
            Some(json!({"email": "admin\u{0}@fastprep.test", "password": "whatever-it-is"})),
        )
        .await;
    assert_eq!(
        (s, err["error"]["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("invalid_email"))
    );
    assert_eq!(env.count("messages").await, messages);
    assert_eq!(env.count("outbox").await, outbox);
    assert_eq!(env.count("users").await, users);

    // A customer's NUL is not a poison message: stored, with U+FFFD.
    env.inject(&sys.adapter, 9301, 1, "before\u{0}after").await;
    let conversation = env.conversation_for(&sys, 9301).await;
    let texts: Vec<Value> = env
        .messages(&sys, &conversation)
        .await
        .into_iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, [json!("before\u{FFFD}after")]);
    env.cleanup().await;
}

#[tokio::test]
async fn a_clients_request_id_is_echoed_only_when_short_and_plain() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let ask = |id: &str| {
        env.http
            .raw()
            .get(format!("{}/api/auth/me", api.url))
            .header("x-request-id", id)
            .send()
    };
    let resp = ask("trace-42.a_b:c").await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-42.a_b:c");
    for bad in [
        "x".repeat(65),
        "<script>alert(1)</script>".to_owned(),
        "has space".to_owned(),
        "quote\"d".to_owned(),
    ] {
        let resp = ask(&bad).await.unwrap();
        let echoed = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(echoed, bad);
        assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["request_id"], json!(echoed));
    }
    env.cleanup().await;
}

#[tokio::test]
async fn unauthenticated_sockets_are_capped_per_client() {
    let mut env = TestEnv::new().await;
    let api = env
        .start_api(&[("WS_MAX_PENDING_PER_CLIENT", "3".to_owned())])
        .await;
    let admin = env.admin_session(&api.url).await;
    let (mut signed_in, _) = Ws::connect(&api.url, &admin.access).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(Ws::try_open(&api.url).await.expect("within the allowance"));
    }
    let refused = Ws::try_open(&api.url).await.err();
    assert_eq!(refused, Some(StatusCode::TOO_MANY_REQUESTS));
    // Signing in frees the slot; the signed-in socket was never counted.
    let mut first = idle.remove(0);
    first
        .send(json!({"type": "auth", "token": admin.access}))
        .await;
    first.expect("ep.update").await;
    let mut again = Ws::try_open(&api.url).await.expect("a slot was freed");
    again
        .send(json!({"type": "auth", "token": admin.access}))
        .await;
    again.expect("ep.update").await;
    signed_in.send(json!({"type": "ping"})).await;
    signed_in.expect("pong").await;
    env.cleanup().await;
}

#[tokio::test]
async fn metrics_listen_on_loopback_unless_told_otherwise() {
    let mut env = TestEnv::new().await;
    let port = free_port();
    env.start_api(&[("METRICS_PORT", port.to_string())]).await;
    let get = |host: &str| {
        env.http
            .raw()
            .get(format!("http://{host}:{port}/metrics"))
            .timeout(Duration::from_secs(2))
            .send()
    };
    assert!(
        get("127.0.0.1")
            .await
            .is_ok_and(|r| r.status().is_success())
    );
    assert!(
        get("127.0.0.2").await.is_err(),
        "metrics answered on another address than loopback"
    );
    let other = free_port();
    env.start_api(&[
        ("METRICS_PORT", other.to_string()),
        ("METRICS_BIND", "127.0.0.2".to_owned()),
    ])
    .await;
    let reply = env
        .http
        .raw()
        .get(format!("http://127.0.0.2:{other}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(reply.status().is_success());
    env.cleanup().await;
}

#[tokio::test]
async fn the_adapter_token_does_not_open_the_sandbox_nor_the_reverse() {
    let mut env = TestEnv::new().await;
    let adapter = env.start_adapter(&[]).await;
    let ask = |path: &str, token: &str| {
        env.http
            .raw()
            .get(format!("{}{path}", adapter.url))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        ask("/sandbox/sent", env::ADAPTER_TOKEN)
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        ask("/v1/status", env::SANDBOX_TOKEN)
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        ask("/sandbox/sent", env::SANDBOX_TOKEN)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        ask("/v1/status", env::ADAPTER_TOKEN)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_broker_list_with_a_bad_node_is_refused_at_start_without_echoing_it() {
    let mut env = TestEnv::new().await;
    let bad = format!("{},http://guest:s3cret-node@127.0.0.1:1/", env.amqp_url());
    for (bin, args) in [
        ("fastprep-api", &["serve"][..]),
        ("fastprep-consumers", &["inbound"][..]),
    ] {
        let (code, logs) =
            refused_at_start(&mut env, bin, args, &[("AMQP_URL", bad.clone())]).await;
        assert_ne!(code, 0, "{bin} started with a bad AMQP_URL");
        assert!(
            logs.contains("AMQP_URL") && logs.contains("node 2 of 2"),
            "{bin} did not name the bad node\n{logs}"
        );
        assert!(
            !logs.contains("s3cret-node"),
            "{bin} echoed the value\n{logs}"
        );
    }
    env.cleanup().await;
}
