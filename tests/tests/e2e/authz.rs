//! Authorization end to end: instant revocation on two API instances, the
//! authz-fanout consumer, the runbook's manual Redis path, the audit trail,
//! and a walk over the whole route table.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use api::authz::{Perm, pep::Access};
use broker_config::{Envelope, Event, events::AuthzRoleUpdated};
use fastprep_tests::{
    TestEnv,
    accounts::{USER_PASSWORD, session_from},
    wait_for,
};
use fred::{
    clients::SubscriberClient,
    interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface},
    prelude::{Builder, Config as RedisConfig},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

async fn listen(
    env: &TestEnv,
) -> (
    SubscriberClient,
    tokio::sync::broadcast::Receiver<fred::types::Message>,
) {
    let sub = Builder::from_config(RedisConfig::from_url(&env.services.redis).unwrap())
        .build_subscriber_client()
        .unwrap();
    let rx = sub.message_rx();
    sub.init().await.unwrap();
    sub.subscribe(env.redis_keys().channel()).await.unwrap();
    (sub, rx)
}

async fn reply(env: &TestEnv, api: &str, token: &str, conv: &str) -> (StatusCode, Value) {
    env.http
        .call(
            Method::POST,
            &format!("{api}/api/conversations/{conv}/messages"),
            Some(token),
            Some(json!({"text": "hello", "client_msg_id": Uuid::now_v7().to_string()})),
        )
        .await
}

async fn perm_version(env: &TestEnv, user: &str) -> i64 {
    sqlx::query_scalar("SELECT perm_version FROM users WHERE id = $1::uuid")
        .bind(user)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_revoked_right_is_refused_by_every_instance_on_the_very_next_request() {
    let mut env = TestEnv::new().await;
    let a = env.start_api(&[]).await;
    let b = env.start_api(&[]).await;
    let admin = env.admin_session(&a.url).await.access;
    let both = ["inbox.read_all", "inbox.reply"];
    let role = env.create_role(&a.url, &admin, "replier", &both).await;
    let op_id = env
        .create_user(&a.url, &admin, "op@fastprep.test", &[&role])
        .await;
    let conv = env.insert_conversation(7001, None).await;
    let mut op = env.sign_in(&b.url, "op@fastprep.test", USER_PASSWORD).await;

    // Keep every cache tier of both instances hot and racing the changes.
    let stop = Arc::new(AtomicBool::new(false));
    let token = Arc::new(std::sync::Mutex::new(op.access.clone()));
    let mut load = Vec::new();
    for api in [a.url.clone(), b.url.clone()] {
        let (http, stop, token) = (env.http.clone(), stop.clone(), token.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = token.lock().unwrap().clone();
                let _ = http.get(&format!("{api}/api/auth/me/ep"), &t).await;
            }
        }));
    }

    let mut accepted = 0;
    for round in 0..8 {
        let (admin_api, other) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        for api in [&a, &b] {
            let (s, body) = reply(&env, &api.url, &op.access, &conv).await;
            assert_eq!(s, StatusCode::ACCEPTED, "round {round}: {body}");
            accepted += 1;
        }
        env.set_role_permissions(&admin_api.url, &admin, &role, &["inbox.read_all"])
            .await;
        // No sleep: the admin's answer is back, so the right is dead.
        for api in [admin_api, other] {
            let (s, body) = reply(&env, &api.url, &op.access, &conv).await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "round {round} on {}: {body}",
                api.url
            );
            assert_eq!(body["error"]["code"], "token_stale", "{body}");
        }
        let (s, body) = env.refresh(&other.url, &op.refresh).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        op = session_from(&body);
        *token.lock().unwrap() = op.access.clone();
        for api in [&a, &b] {
            let (s, body) = reply(&env, &api.url, &op.access, &conv).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "round {round}: {body}");
            let (s, _) = env
                .http
                .get(&format!("{}/api/conversations", api.url), &op.access)
                .await;
            assert_eq!(s, StatusCode::OK);
        }
        env.set_role_permissions(&other.url, &admin, &role, &both)
            .await;
        let (s, body) = reply(&env, &admin_api.url, &op.access, &conv).await;
        assert_eq!(body["error"]["code"], "token_stale", "{s} {body}");
        let (_, body) = env.refresh(&admin_api.url, &op.refresh).await;
        op = session_from(&body);
        *token.lock().unwrap() = op.access.clone();
    }

    // Losing the role itself, and the account.
    let (s, body) = env
        .http
        .call(
            Method::PUT,
            &format!("{}/api/users/{op_id}/roles", a.url),
            Some(&admin),
            Some(json!({"role_ids": []})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    for api in [&a, &b] {
        let (s, body) = env
            .http
            .get(&format!("{}/api/conversations", api.url), &op.access)
            .await;
        assert_eq!(
            (s, body["error"]["code"].clone()),
            (StatusCode::UNAUTHORIZED, json!("token_stale"))
        );
    }
    let (_, body) = env.refresh(&b.url, &op.refresh).await;
    op = session_from(&body);
    let (s, _) = env
        .http
        .get(&format!("{}/api/conversations", a.url), &op.access)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = env
        .http
        .call(
            Method::DELETE,
            &format!("{}/api/users/{op_id}", b.url),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for api in [&a, &b] {
        let (s, body) = env
            .http
            .get(&format!("{}/api/auth/me", api.url), &op.access)
            .await;
        assert_eq!(
            (s, body["error"]["code"].clone()),
            (StatusCode::UNAUTHORIZED, json!("account_disabled"))
        );
    }
    let (s, _) = env.refresh(&a.url, &op.refresh).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    // Only the replies made while the right was held exist.
    assert_eq!(env.count("messages").await, accepted);
    env.cleanup().await;
}

#[tokio::test]
async fn fanout_reaches_every_holder_of_a_role() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    env.start_consumer("relay", None, &[]).await;
    // Two instances share the fan-out; each event is fanned out once.
    let fanout = env.start_consumer("authz-fanout", None, &[]).await;
    let other = env.start_consumer("authz-fanout", None, &[]).await;
    env.wait_consumers("authz-fanout", 2).await;
    let admin = env.admin_session(&api.url).await.access;
    let role = env
        .create_role(&api.url, &admin, "team", &["inbox.read_all"])
        .await;
    let mut holders = Vec::new();
    for i in 0..4 {
        holders.push(
            env.create_user(
                &api.url,
                &admin,
                &format!("holder{i}@fastprep.test"),
                &[&role],
            )
            .await,
        );
    }
    let (_sub, mut rx) = listen(&env).await;

    // An event written by hand names only the role: the consumer bumps every
    // holder and publishes each one.
    let before: Vec<i64> =
        futures::future::join_all(holders.iter().map(|h| perm_version(&env, h))).await;
    schema::enqueue(
        &schema::pool::orm(&env.pool),
        &Envelope::new(Event::AuthzRoleUpdated(AuthzRoleUpdated {
            role_id: role.parse().unwrap(),
            users: vec![],
        })),
    )
    .await
    .unwrap();
    let mut seen = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < holders.len() {
        let msg = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("fan-out incomplete: {seen:?}\n{}", env.logs()))
            .unwrap();
        let v: Value = serde_json::from_str(&msg.value.as_string().unwrap()).unwrap();
        let user = v["userId"].as_str().unwrap().to_owned();
        // Earlier events (the users' creation) are announced too; wait for
        // the bump this event makes.
        if let Some(i) = holders.iter().position(|h| *h == user)
            && v["permVersion"].as_i64() == Some(before[i] + 1)
        {
            seen.insert(user, before[i] + 1);
        }
    }
    for (h, old) in holders.iter().zip(before) {
        let now = perm_version(&env, h).await;
        assert_eq!(now, old + 1, "bumped exactly once");
        assert_eq!(seen[h], now, "published with the new version");
    }

    // A change through the API reaches every holder with its new version.
    env.set_role_permissions(&api.url, &admin, &role, &["inbox.read_assigned"])
        .await;
    let mut got = std::collections::HashSet::new();
    while got.len() < holders.len() {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("API change fan-out")
            .unwrap();
        let v: Value = serde_json::from_str(&msg.value.as_string().unwrap()).unwrap();
        let user = v["userId"].as_str().unwrap().to_owned();
        if holders.contains(&user)
            && v["permVersion"].as_i64() == Some(perm_version(&env, &user).await)
        {
            got.insert(user);
        }
    }
    let processed: i64 = wait_for(
        "authz-fanout to process both events",
        Duration::from_secs(20),
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM processed_messages WHERE consumer = 'authz-fanout'",
            )
            .fetch_one(&env.pool)
            .await
            .unwrap();
            (n >= 4).then_some(n)
        },
    )
    .await;
    assert!(
        processed >= 4,
        "role.created, hand-written, permissions_changed and user events"
    );
    // Every claimed event acked once, by one instance or the other; none
    // reached both (the second would count as a duplicate).
    let both = [&fanout, &other];
    let count = |outcome: &'static str| {
        let env = &env;
        async move {
            let mut total = 0.0;
            for instance in both {
                total += crate::metrics::handled(env, instance, "authz-fanout", outcome).await;
            }
            total
        }
    };
    wait_for(
        "every claimed event acked",
        Duration::from_secs(10),
        || async {
            let claimed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM processed_messages WHERE consumer = 'authz-fanout'",
            )
            .fetch_one(&env.pool)
            .await
            .ok()?;
            #[allow(clippy::cast_precision_loss)]
            let claimed = claimed as f64;
            (count("ack").await == claimed).then_some(())
        },
    )
    .await;
    assert_eq!(
        count("duplicate").await,
        0.0,
        "an event reached both instances"
    );
    let metrics = env.http.text(&fanout.metrics_url).await;
    assert!(metrics.contains("consumer_messages_total"), "{metrics}");
    env.cleanup().await;
}

#[tokio::test]
async fn the_runbook_manual_invalidation_still_works() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let admin = env.admin_session(&api.url).await.access;
    let role = env
        .create_role(&api.url, &admin, "manual", &["inbox.read_all"])
        .await;
    let user = env
        .create_user(&api.url, &admin, "manual@fastprep.test", &[&role])
        .await;
    let s = env
        .sign_in(&api.url, "manual@fastprep.test", USER_PASSWORD)
        .await;
    let ep = |env: &TestEnv| {
        let http = env.http.clone();
        let url = format!("{}/api/auth/me/ep", api.url);
        let token = s.access.clone();
        async move {
            let (status, body) = http.get(&url, &token).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["permissions"].clone()
        }
    };
    assert_eq!(ep(&env).await, json!(["inbox.read_all"]));
    assert_eq!(ep(&env).await, json!(["inbox.read_all"]));
    let redis = env.redis().await;

    // Someone edits the database by hand: the cache does not know.
    sqlx::query("INSERT INTO role_permissions VALUES ($1::uuid, 'audit.read')")
        .bind(&role)
        .execute(&env.pool)
        .await
        .unwrap();
    assert_eq!(
        ep(&env).await,
        json!(["inbox.read_all"]),
        "served from cache"
    );

    // The runbook: DEL + PUBLISH.
    let _: i64 = redis
        .del(env.redis_keys().ep(user.parse().unwrap()))
        .await
        .unwrap();
    let _: i64 = redis
        .publish(
            env.redis_keys().channel(),
            json!({"userId": user}).to_string(),
        )
        .await
        .unwrap();
    wait_for(
        "the manual invalidation",
        Duration::from_secs(5),
        || async { (ep(&env).await == json!(["inbox.read_all", "audit.read"])).then_some(()) },
    )
    .await;

    // A PUBLISH alone (the DEL forgotten) is an invalidation too.
    sqlx::query(
        "DELETE FROM role_permissions WHERE role_id = $1::uuid AND permission_key = 'audit.read'",
    )
    .bind(&role)
    .execute(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        ep(&env).await,
        json!(["inbox.read_all", "audit.read"]),
        "served from cache"
    );
    let _: i64 = redis
        .publish(
            env.redis_keys().channel(),
            json!({"userId": user}).to_string(),
        )
        .await
        .unwrap();
    wait_for(
        "the publish-only invalidation",
        Duration::from_secs(5),
        || async { (ep(&env).await == json!(["inbox.read_all"])).then_some(()) },
    )
    .await;
    let cached: Option<String> = redis
        .get(env.redis_keys().ep(user.parse().unwrap()))
        .await
        .unwrap();
    let cached: Value = serde_json::from_str(&cached.expect("cached again")).unwrap();
    assert_eq!(cached["permissions"], json!(["inbox.read_all"]));
    env.cleanup().await;
}

#[tokio::test]
async fn every_change_is_audited_with_before_and_after() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let admin = env.admin_session(&api.url).await;
    let role = env
        .create_role(&api.url, &admin.access, "auditors", &["audit.read"])
        .await;
    let user = env
        .create_user(&api.url, &admin.access, "aud@fastprep.test", &[])
        .await;
    let call = |method: Method, path: String, body: Value| {
        let http = env.http.clone();
        let url = format!("{}/api{path}", api.url);
        let token = admin.access.clone();
        async move {
            let (s, b) = http.call(method, &url, Some(&token), Some(body)).await;
            assert!(s.is_success(), "{url}: {s} {b}");
        }
    };
    call(
        Method::PUT,
        format!("/users/{user}/roles"),
        json!({"role_ids": [role]}),
    )
    .await;
    call(
        Method::PUT,
        format!("/roles/{role}/permissions"),
        json!({"permissions": ["audit.read", "inbox.read_all"]}),
    )
    .await;
    call(
        Method::PATCH,
        format!("/roles/{role}"),
        json!({"description": "read the log"}),
    )
    .await;
    call(
        Method::PATCH,
        format!("/users/{user}"),
        json!({"display_name": "Auditor"}),
    )
    .await;
    let (s, _) = env
        .http
        .call(
            Method::DELETE,
            &format!("{}/api/users/{user}", api.url),
            Some(&admin.access),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = env
        .http
        .call(
            Method::DELETE,
            &format!("{}/api/roles/{role}", api.url),
            Some(&admin.access),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    type AuditRow = (
        Option<Uuid>,
        String,
        Option<Value>,
        Option<Value>,
        Option<i64>,
    );
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT actor_id, action, before, after, perm_version FROM audit_log
         WHERE action <> 'user.admin_ensured' ORDER BY id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        actions,
        [
            "role.created",
            "user.created",
            "user.roles_changed",
            "role.permissions_changed",
            "role.updated",
            "user.updated",
            "user.deactivated",
            "role.deleted",
        ]
    );
    let admin_id: Uuid = admin.user_id.parse().unwrap();
    for (actor, action, before, after, pv) in &rows {
        assert_eq!(*actor, Some(admin_id), "{action}");
        if !action.ends_with("created") {
            assert!(before.is_some(), "{action} has no before");
        }
        if action != "role.deleted" {
            assert!(after.is_some(), "{action} has no after");
        }
        if action.starts_with("user.") {
            assert!(pv.is_some(), "{action} has no perm_version");
        }
    }
    assert_eq!(
        rows[3].2.as_ref().unwrap()["permissions"],
        json!(["audit.read"])
    );
    assert_eq!(
        rows[3].3.as_ref().unwrap()["permissions"],
        json!(["audit.read", "inbox.read_all"])
    );
    // Each change also wrote its authz event in the same transaction.
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type LIKE 'authz.%'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(events >= 6, "{events} authz events");
    // And the log is readable through the API by who may read it.
    let (s, body) = env
        .http
        .get(
            &format!("{}/api/audit?target_type=role&limit=2", api.url),
            &admin.access,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
    assert!(body["next_cursor"].is_string());
    env.cleanup().await;
}

#[tokio::test]
async fn every_route_but_login_refresh_health_and_the_spec_requires_its_permission() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let admin = env.admin_session(&api.url).await.access;
    let table = api::routes::table();
    let public: Vec<_> = table
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| (r.method.as_str(), r.path))
        .collect();
    assert_eq!(
        public,
        [
            ("GET", "/health"),
            ("GET", "/openapi.json"),
            ("POST", "/auth/login"),
            ("POST", "/auth/refresh")
        ]
    );
    // The WebSocket is the one route that authenticates in its first frame
    // (the realtime suite shows what an unauthenticated socket gets).
    let first_frame: Vec<_> = table
        .iter()
        .filter(|r| r.access == Access::FirstFrame)
        .map(|r| (r.method.as_str(), r.path))
        .collect();
    assert_eq!(first_frame, [("GET", "/ws")]);
    // A user with no role at all: signed in, allowed nothing.
    env.create_user(&api.url, &admin, "nobody@fastprep.test", &[])
        .await;
    let nobody = env
        .sign_in(&api.url, "nobody@fastprep.test", USER_PASSWORD)
        .await
        .access;
    let mut all_but = std::collections::HashMap::new();
    for (i, spec) in table.iter().enumerate() {
        let Access::Any(perms) = spec.access else {
            continue;
        };
        if all_but.contains_key(perms) {
            continue;
        }
        let others: Vec<&str> = Perm::ALL
            .iter()
            .filter(|p| !perms.contains(p))
            .map(|p| p.as_str())
            .collect();
        let role = env
            .create_role(&api.url, &admin, &format!("allbut{i}"), &others)
            .await;
        let email = format!("allbut{i}@fastprep.test");
        env.create_user(&api.url, &admin, &email, &[&role]).await;
        all_but.insert(
            perms,
            env.sign_in(&api.url, &email, USER_PASSWORD).await.access,
        );
    }
    let id = Uuid::now_v7();
    for spec in &table {
        let url = format!(
            "{}/api{}",
            api.url,
            spec.path
                .replace("{id}", &id.to_string())
                .replace("{message_id}", &id.to_string())
        );
        let body = (spec.method != Method::GET).then(|| json!({}));
        let call = |token: Option<String>| {
            let (http, url, body, method) = (
                env.http.clone(),
                url.clone(),
                body.clone(),
                spec.method.clone(),
            );
            async move { http.call(method, &url, token.as_deref(), body).await }
        };
        let (anon, _) = call(None).await;
        let (garbage, _) = call(Some("x.y.z".into())).await;
        let (as_admin, admin_body) = call(Some(admin.clone())).await;
        // Every route behind the PEP refuses a missing or garbage token.
        if matches!(spec.access, Access::Authenticated | Access::Any(_)) {
            for (who, status) in [("anonymous", anon), ("garbage token", garbage)] {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{} {} ({who})",
                    spec.method,
                    spec.path
                );
            }
        }
        match spec.access {
            Access::FirstFrame => {}
            Access::Public => assert!(
                anon != StatusCode::UNAUTHORIZED && anon != StatusCode::FORBIDDEN,
                "{} {} must be open",
                spec.method,
                spec.path
            ),
            Access::Authenticated => {
                let (s, b) = call(Some(nobody.clone())).await;
                assert!(
                    s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                    "{} {}: {s} {b}",
                    spec.method,
                    spec.path
                );
            }
            Access::Any(perms) => {
                let (s, b) = call(Some(nobody.clone())).await;
                assert_eq!(
                    s,
                    StatusCode::FORBIDDEN,
                    "{} {} without any role: {b}",
                    spec.method,
                    spec.path
                );
                let (s, b) = call(Some(all_but[perms].clone())).await;
                assert_eq!(
                    s,
                    StatusCode::FORBIDDEN,
                    "{} {} without {perms:?}: {b}",
                    spec.method,
                    spec.path
                );
                assert!(
                    as_admin != StatusCode::UNAUTHORIZED && as_admin != StatusCode::FORBIDDEN,
                    "{} {} as admin: {as_admin} {admin_body}",
                    spec.method,
                    spec.path
                );
            }
        }
    }
    env.cleanup().await;
}

#[tokio::test]
async fn without_redis_rights_changes_are_refused_whole_and_signed_in_users_keep_working() {
    let mut env = TestEnv::new().await;
    let redis_addr: std::net::SocketAddr = env
        .services
        .redis
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let proxy = fastprep_tests::TcpProxy::start(redis_addr).await;
    let api = env
        .start_api(&[("REDIS_URL", format!("redis://127.0.0.1:{}", proxy.port()))])
        .await;
    let admin = env.admin_session(&api.url).await.access;
    let role = env
        .create_role(&api.url, &admin, "cut", &["inbox.read_all", "inbox.reply"])
        .await;
    let user = env
        .create_user(&api.url, &admin, "cut@fastprep.test", &[&role])
        .await;
    let op = env
        .sign_in(&api.url, "cut@fastprep.test", USER_PASSWORD)
        .await;
    let conv = env.insert_conversation(7300, None).await;
    let (before_pv, before_audit, before_outbox) = (
        perm_version(&env, &user).await,
        env.count("audit_log").await,
        env.count("outbox").await,
    );

    proxy.cut();
    // A change that cannot reach every instance's cache does not happen.
    let (s, body) = env
        .http
        .call(
            Method::PUT,
            &format!("{}/api/roles/{role}/permissions", api.url),
            Some(&admin),
            Some(json!({"permissions": ["inbox.read_all"]})),
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("unavailable")),
        "{body}"
    );
    let perms: Vec<String> = sqlx::query_scalar(
        "SELECT permission_key FROM role_permissions WHERE role_id = $1::uuid ORDER BY 1",
    )
    .bind(&role)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(perms, ["inbox.read_all", "inbox.reply"]);
    assert_eq!(perm_version(&env, &user).await, before_pv);
    assert_eq!(env.count("audit_log").await, before_audit);
    assert_eq!(env.count("outbox").await, before_outbox);
    // Sign-in refuses rather than run unthrottled; signed-in users go on,
    // answered from PostgreSQL.
    let (s, _) = env
        .http
        .call(
            Method::POST,
            &format!("{}/api/auth/login", api.url),
            None,
            Some(json!({"email": "cut@fastprep.test", "password": USER_PASSWORD})),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (s, body) = reply(&env, &api.url, &op.access, &conv).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");

    proxy.restore();
    wait_for(
        "the change to go through once Redis is back",
        Duration::from_secs(20),
        || async {
            let (s, _) = env
                .http
                .call(
                    Method::PUT,
                    &format!("{}/api/roles/{role}/permissions", api.url),
                    Some(&admin),
                    Some(json!({"permissions": ["inbox.read_all"]})),
                )
                .await;
            (s == StatusCode::OK).then_some(())
        },
    )
    .await;
    let (s, body) = reply(&env, &api.url, &op.access, &conv).await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("token_stale"))
    );
    env.cleanup().await;
}
