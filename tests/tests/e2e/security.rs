//! The security suite: forged and stale tokens, refresh-token reuse,
//! cross-scope access (IDOR), privilege escalation and the last
//! administrator (password guessing, accounts and the surface have files of
//! their own). Each is refused with the right status and leaves
//! nothing changed.

use api::auth::jwt::{AUDIENCE, ISSUER};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use fastprep_tests::{
    TestEnv,
    accounts::{ADMIN_ROLE, OPERATOR_ROLE, USER_PASSWORD, VIEWER_ROLE, session_from},
    env::JWT_SECRET,
};
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(sub: &str, pv: i64) -> Value {
    json!({"sub": sub, "pv": pv, "iat": now(), "exp": now() + 120, "iss": ISSUER, "aud": AUDIENCE})
}

fn sign(header: &Value, claims: &Value, secret: &[u8], alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret).unwrap(),
        alg,
    )
    .unwrap();
    format!("{message}.{sig}")
}

#[tokio::test]
async fn forged_expired_and_tampered_tokens_are_refused_and_change_nothing() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let admin = env.admin_session(&api.url).await;
    let conv = env.insert_conversation(9100, None).await;
    let me = admin.user_id.clone();
    let pv: i64 = sqlx::query_scalar("SELECT perm_version FROM users WHERE id = $1::uuid")
        .bind(&me)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let secret = JWT_SECRET.as_bytes();
    let hs = json!({"alg": "HS256", "typ": "JWT"});
    // The control: a token made this way with the right everything works.
    let good = sign(&hs, &claims(&me, pv), secret, Algorithm::HS256);
    let (s, body) = env
        .http
        .get(&format!("{}/api/auth/me", api.url), &good)
        .await;
    assert_eq!(s, StatusCode::OK, "control token: {body}");

    let mut expired = claims(&me, pv);
    expired["iat"] = json!(now() - 900);
    expired["exp"] = json!(now() - 600);
    let mut wrong_iss = claims(&me, pv);
    wrong_iss["iss"] = json!("someone-else");
    let mut wrong_aud = claims(&me, pv);
    wrong_aud["aud"] = json!("another-api");
    let tampered = {
        let mut parts: Vec<String> = admin.access.split('.').map(str::to_owned).collect();
        let mut payload: Value = serde_json::from_slice(&B64.decode(&parts[1]).unwrap()).unwrap();
        payload["pv"] = json!(payload["pv"].as_i64().unwrap() + 1);
        parts[1] = B64.encode(payload.to_string());
        parts.join(".")
    };
    let forged = [
        (
            "alg none",
            format!(
                "{}.{}.",
                B64.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
                B64.encode(claims(&me, pv).to_string())
            ),
        ),
        (
            "RS256 header, HMAC signature (algorithm confusion)",
            sign(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &claims(&me, pv),
                secret,
                Algorithm::HS256,
            ),
        ),
        (
            "HS512 with the right secret",
            sign(
                &json!({"alg": "HS512", "typ": "JWT"}),
                &claims(&me, pv),
                secret,
                Algorithm::HS512,
            ),
        ),
        (
            "wrong key",
            sign(
                &hs,
                &claims(&me, pv),
                b"an-attacker-secret-an-attacker-secret",
                Algorithm::HS256,
            ),
        ),
        ("expired", sign(&hs, &expired, secret, Algorithm::HS256)),
        (
            "wrong issuer",
            sign(&hs, &wrong_iss, secret, Algorithm::HS256),
        ),
        (
            "wrong audience",
            sign(&hs, &wrong_aud, secret, Algorithm::HS256),
        ),
        ("tampered pv", tampered),
    ];
    let (messages, outbox) = (env.count("messages").await, env.count("outbox").await);
    for (what, token) in &forged {
        for (method, path, body) in [
            (Method::GET, "/api/auth/me".to_owned(), None),
            (
                Method::POST,
                format!("/api/conversations/{conv}/messages"),
                Some(json!({"text": "forged", "client_msg_id": what})),
            ),
            (
                Method::PUT,
                format!("/api/users/{me}/roles"),
                Some(json!({"role_ids": []})),
            ),
        ] {
            let (s, err) = env
                .http
                .call(
                    method.clone(),
                    &format!("{}{path}", api.url),
                    Some(token),
                    body,
                )
                .await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "{what} on {method} {path}: {err}"
            );
            assert_eq!(err["error"]["code"], "invalid_token", "{what}: {err}");
        }
    }
    assert_eq!(env.count("messages").await, messages);
    assert_eq!(env.count("outbox").await, outbox);
    let roles: i64 = sqlx::query_scalar("SELECT count(*) FROM user_roles WHERE user_id = $1::uuid")
        .bind(&me)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(roles, 1, "the admin kept their role");

    // A token minted before a permission change is refused with the code
    // that asks the client to refresh.
    let old = sign(&hs, &claims(&me, pv - 1), secret, Algorithm::HS256);
    let (s, err) = env
        .http
        .get(&format!("{}/api/auth/me", api.url), &old)
        .await;
    assert_eq!(
        (s, err["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("token_stale"))
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_reused_refresh_token_ends_the_whole_session() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let first = env.admin_session(&api.url).await;
    let other = env.admin_session(&api.url).await;
    let (s, body) = env.refresh(&api.url, &first.refresh).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let second = session_from(&body);
    assert_ne!(second.refresh, first.refresh, "rotated");

    // The spent token comes back: someone else holds a copy.
    let (s, body) = env.refresh(&api.url, &first.refresh).await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("refresh_reused"))
    );
    // The whole family is dead, and the access token minted from it too.
    let (s, body) = env.refresh(&api.url, &second.refresh).await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("refresh_reused"))
    );
    let (s, body) = env
        .http
        .get(&format!("{}/api/auth/me", api.url), &second.access)
        .await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("token_stale"))
    );
    // Another sign-in (another family) only has to refresh.
    let (s, body) = env.refresh(&api.url, &other.refresh).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let revoked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NOT NULL AND family_id =
           (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
    )
    .bind(api::auth::session::hash(&first.refresh))
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(revoked, 2);
    let reuse_audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'auth.refresh_reused'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(reuse_audited, 1);

    // Logout ends the session and its access token at once.
    let fresh = session_from(&body);
    let (s, _) = env
        .http
        .call(
            Method::POST,
            &format!("{}/api/auth/logout", api.url),
            Some(&fresh.access),
            Some(json!({"refresh_token": fresh.refresh})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = env.refresh(&api.url, &fresh.refresh).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = env
        .http
        .get(&format!("{}/api/auth/me", api.url), &fresh.access)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    env.cleanup().await;
}

#[tokio::test]
async fn conversations_outside_the_callers_scope_do_not_exist_for_them() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let admin = env.admin_session(&api.url).await;
    let role = env
        .create_role(
            &api.url,
            &admin.access,
            "assigned-only",
            &["inbox.read_assigned", "inbox.reply"],
        )
        .await;
    let me = env
        .create_user(&api.url, &admin.access, "scoped@fastprep.test", &[&role])
        .await;
    env.create_user(
        &api.url,
        &admin.access,
        "viewer@fastprep.test",
        &[VIEWER_ROLE],
    )
    .await;
    let scoped = env
        .sign_in(&api.url, "scoped@fastprep.test", USER_PASSWORD)
        .await
        .access;
    let viewer = env
        .sign_in(&api.url, "viewer@fastprep.test", USER_PASSWORD)
        .await
        .access;
    let mine = env.insert_conversation(9201, Some(&me)).await;
    let theirs = env.insert_conversation(9202, Some(&admin.user_id)).await;
    let nobodys = env.insert_conversation(9203, None).await;

    let (s, body) = env
        .http
        .get(&format!("{}/api/conversations", api.url), &scoped)
        .await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine.as_str()]);

    let (messages, outbox) = (env.count("messages").await, env.count("outbox").await);
    for other in [&theirs, &nobodys] {
        for (method, path, body) in [
            (Method::GET, format!("/api/conversations/{other}"), None),
            (
                Method::GET,
                format!("/api/conversations/{other}/messages"),
                None,
            ),
            (
                Method::POST,
                format!("/api/conversations/{other}/messages"),
                Some(json!({"text": "not yours", "client_msg_id": other})),
            ),
        ] {
            let (s, err) = env
                .http
                .call(
                    method.clone(),
                    &format!("{}{path}", api.url),
                    Some(&scoped),
                    body,
                )
                .await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {err}");
        }
    }
    // A reader without `inbox.reply` cannot reply anywhere.
    let (s, _) = env
        .http
        .call(
            Method::POST,
            &format!("{}/api/conversations/{mine}/messages", api.url),
            Some(&viewer),
            Some(json!({"text": "viewer", "client_msg_id": "v1"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(env.count("messages").await, messages);
    assert_eq!(env.count("outbox").await, outbox);
    // Their own conversation works.
    let (s, body) = env
        .http
        .call(
            Method::POST,
            &format!("{}/api/conversations/{mine}/messages", api.url),
            Some(&scoped),
            Some(json!({"text": "mine", "client_msg_id": "m1"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    env.cleanup().await;
}

#[tokio::test]
async fn no_one_grants_what_they_lack_and_an_admin_always_remains() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let admin = env.admin_session(&api.url).await;
    let hr = env
        .create_role(&api.url, &admin.access, "hr", &["users.manage"])
        .await;
    let hr_id = env
        .create_user(&api.url, &admin.access, "hr@fastprep.test", &[&hr])
        .await;
    let hr_token = env
        .sign_in(&api.url, "hr@fastprep.test", USER_PASSWORD)
        .await
        .access;
    let call = |token: &str, method: Method, path: String, body: Option<Value>| {
        let (http, url, token) = (
            env.http.clone(),
            format!("{}/api{path}", api.url),
            token.to_owned(),
        );
        async move { http.call(method, &url, Some(&token), body).await }
    };
    // users.manage alone cannot hand out admin (or operator's inbox rights).
    for role in [ADMIN_ROLE, OPERATOR_ROLE] {
        let (s, body) = call(
            &hr_token,
            Method::PUT,
            format!("/users/{hr_id}/roles"),
            Some(json!({"role_ids": [hr, role]})),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    }
    let (s, _) = call(
        &hr_token,
        Method::POST,
        "/roles".into(),
        Some(json!({"name": "x", "permissions": ["ops.dlq"]})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT role_id::text FROM user_roles WHERE user_id = $1::uuid")
            .bind(&hr_id)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(roles, std::slice::from_ref(&hr));

    // No one removes the only admin's admin right: not the admin (no one
    // changes their own roles), nor anyone holding every permission.
    let me = &admin.user_id;
    let (s, body) = call(
        &admin.access,
        Method::PUT,
        format!("/users/{me}/roles"),
        Some(json!({"role_ids": [OPERATOR_ROLE]})),
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("own_roles"))
    );
    let all: Vec<&str> = api::authz::Perm::ALL.iter().map(|p| p.as_str()).collect();
    let everything = env
        .create_role(&api.url, &admin.access, "everything", &all)
        .await;
    env.create_user(
        &api.url,
        &admin.access,
        "super@fastprep.test",
        &[&everything],
    )
    .await;
    let superuser = env
        .sign_in(&api.url, "super@fastprep.test", USER_PASSWORD)
        .await
        .access;
    let (s, body) = call(
        &superuser,
        Method::PUT,
        format!("/users/{me}/roles"),
        Some(json!({"role_ids": [OPERATOR_ROLE]})),
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("last_admin"))
    );
    // Nor does anyone deactivate the only admin: not the admin (no one
    // deactivates themselves), nor the superuser.
    let (s, body) = call(&admin.access, Method::DELETE, format!("/users/{me}"), None).await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("own_account"))
    );
    let (s, body) = call(
        &admin.access,
        Method::PATCH,
        format!("/users/{me}"),
        Some(json!({"is_active": false})),
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("own_account"))
    );
    for (method, body) in [
        (Method::DELETE, None),
        (Method::PATCH, Some(json!({"is_active": false}))),
    ] {
        let (s, err) = call(&superuser, method, format!("/users/{me}"), body).await;
        assert_eq!(
            (s, err["error"]["code"].clone()),
            (StatusCode::CONFLICT, json!("last_admin")),
            "{err}"
        );
    }
    let (s, body) = call(
        &admin.access,
        Method::PUT,
        format!("/roles/{ADMIN_ROLE}/permissions"),
        Some(json!({"permissions": ["audit.read"]})),
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("system_role"))
    );
    let (s, _) = call(
        &admin.access,
        Method::DELETE,
        format!("/roles/{OPERATOR_ROLE}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Nothing of it changed anything; the admin still works.
    let (s, _) = call(&admin.access, Method::GET, "/users".into(), None).await;
    assert_eq!(s, StatusCode::OK);
    // With a second admin, the first may be stepped down by the second.
    env.create_user(
        &api.url,
        &admin.access,
        "admin2@fastprep.test",
        &[ADMIN_ROLE],
    )
    .await;
    let second = env
        .sign_in(&api.url, "admin2@fastprep.test", USER_PASSWORD)
        .await
        .access;
    let (s, body) = call(
        &second,
        Method::PUT,
        format!("/users/{me}/roles"),
        Some(json!({"role_ids": [OPERATOR_ROLE]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    env.cleanup().await;
}
