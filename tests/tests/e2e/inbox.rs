//! The shared inbox over REST: filters, unread counts and read marks,
//! assignment / status / snooze with their events and audit rows, private
//! notes, contacts, and pagination while messages keep arriving.

use std::time::Duration;

use fastprep_tests::{
    TestEnv,
    accounts::{OPERATOR_ROLE, USER_PASSWORD, VIEWER_ROLE},
    api::Api,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

async fn contact_conversation(
    env: &TestEnv,
    chat: i64,
    first: &str,
    assignee: Option<&str>,
) -> String {
    let contact = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO contacts (id, tg_user_id, first_name, username) VALUES ($1, $2, $3, $4)",
    )
    .bind(contact)
    .bind(chat)
    .bind(first)
    .bind(format!("{}_tg", first.to_lowercase()))
    .execute(&env.pool)
    .await
    .unwrap();
    let id = env.insert_conversation(chat, assignee).await;
    sqlx::query("UPDATE conversations SET contact_id = $2 WHERE id = $1::uuid")
        .bind(&id)
        .bind(contact)
        .execute(&env.pool)
        .await
        .unwrap();
    id
}

async fn inbound(env: &TestEnv, conv: &str, text: &str) {
    sqlx::query(
        "WITH m AS (INSERT INTO messages (id, conversation_id, direction, text, tg_message_id, status)
                    VALUES ($1, $2::uuid, 'in', $3, (random() * 1e12)::bigint, 'received') RETURNING created_at)
         UPDATE conversations SET last_message_at = (SELECT created_at FROM m) WHERE id = $2::uuid",
    )
    .bind(Uuid::now_v7())
    .bind(conv)
    .bind(text)
    .execute(&env.pool)
    .await
    .unwrap();
}

async fn ids(env: &TestEnv, api: &str, token: &str, query: &str) -> Vec<String> {
    Api::new(&env.http, api, token)
        .conversations(query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e:?}"))
        .items
        .iter()
        .map(|c| c.id.to_string())
        .collect()
}

#[tokio::test]
async fn filters_unread_counts_and_read_marks() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let admin = env.admin_session(&api.url).await;
    let op_id = env
        .create_user(
            &api.url,
            &admin.access,
            "op1@fastprep.test",
            &[OPERATOR_ROLE],
        )
        .await;
    let op = env
        .sign_in(&api.url, "op1@fastprep.test", USER_PASSWORD)
        .await
        .access;
    let anna = contact_conversation(&env, 501, "Anna", Some(&op_id)).await;
    let boris = contact_conversation(&env, 502, "Boris", None).await;
    let clara = contact_conversation(&env, 503, "Clara", Some(&admin.user_id)).await;
    inbound(&env, &anna, "When is my SAT mock exam?").await;
    inbound(&env, &boris, "Can I pay in two parts?").await;
    inbound(&env, &boris, "Also: is there a discount 100%_off?").await;
    sqlx::query("UPDATE conversations SET status = 'pending' WHERE id = $1::uuid")
        .bind(&clara)
        .execute(&env.pool)
        .await
        .unwrap();

    // Newest activity first.
    assert_eq!(
        ids(&env, &api.url, &op, "").await,
        [boris.clone(), anna.clone(), clara.clone()]
    );
    assert_eq!(
        ids(&env, &api.url, &op, "assignee=mine").await,
        vec![anna.clone()]
    );
    assert_eq!(
        ids(&env, &api.url, &op, "assignee=unassigned").await,
        vec![boris.clone()]
    );
    assert_eq!(
        ids(&env, &api.url, &op, &format!("assignee={}", admin.user_id)).await,
        vec![clara.clone()]
    );
    assert_eq!(
        ids(&env, &api.url, &op, "status=pending").await,
        vec![clara.clone()]
    );
    assert_eq!(
        ids(&env, &api.url, &op, "q=sat%20mock").await,
        vec![anna.clone()]
    );
    assert_eq!(
        ids(&env, &api.url, &op, "q=bor").await,
        vec![boris.clone()],
        "by contact name"
    );
    assert_eq!(
        ids(&env, &api.url, &op, "q=100%25_off").await,
        vec![boris.clone()],
        "pattern characters are literal"
    );
    assert!(ids(&env, &api.url, &op, "q=100%25x").await.is_empty());
    assert_eq!(
        ids(&env, &api.url, &op, "unread=true").await,
        [boris.clone(), anna.clone()]
    );
    for bad in ["status=closed", "assignee=someone", "limit=0"] {
        let refused = Api::new(&env.http, &api.url, &op)
            .conversations(bad)
            .await
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
    }

    let unread = |body: &Value, id: &str| {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()["unread_count"]
            .as_i64()
            .unwrap()
    };
    let (_, body) = env
        .http
        .get(&format!("{}/api/conversations", api.url), &op)
        .await;
    assert_eq!((unread(&body, &boris), unread(&body, &anna)), (2, 1));
    let (s, _) = env
        .http
        .call(
            Method::POST,
            &format!("{}/api/conversations/{boris}/read", api.url),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, body) = env
        .http
        .get(&format!("{}/api/conversations", api.url), &op)
        .await;
    assert_eq!(unread(&body, &boris), 0);
    // Read marks are per user.
    let (_, body) = env
        .http
        .get(&format!("{}/api/conversations", api.url), &admin.access)
        .await;
    assert_eq!(unread(&body, &boris), 2);
    assert_eq!(
        ids(&env, &api.url, &op, "unread=true").await,
        vec![anna.clone()]
    );
    inbound(&env, &boris, "Hello?").await;
    let (_, body) = env
        .http
        .get(&format!("{}/api/conversations/{boris}", api.url), &op)
        .await;
    assert_eq!(body["unread_count"], 1);
    assert_eq!(body["contact_first_name"], "Boris");
    env.cleanup().await;
}

#[tokio::test]
async fn assignment_status_and_snooze_write_an_event_and_an_audit_row() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let admin = env.admin_session(&api.url).await;
    let op_id = env
        .create_user(
            &api.url,
            &admin.access,
            "op2@fastprep.test",
            &[OPERATOR_ROLE],
        )
        .await;
    env.create_user(
        &api.url,
        &admin.access,
        "view@fastprep.test",
        &[VIEWER_ROLE],
    )
    .await;
    let op = env
        .sign_in(&api.url, "op2@fastprep.test", USER_PASSWORD)
        .await
        .access;
    let viewer = env
        .sign_in(&api.url, "view@fastprep.test", USER_PASSWORD)
        .await
        .access;
    let conv = contact_conversation(&env, 601, "Dana", None).await;
    let url = format!("{}/api/conversations/{conv}", api.url);
    let patch = |body: Value| env.http.call(Method::PATCH, &url, Some(&op), Some(body));
    let events = |env: &TestEnv| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, Value>(
                "SELECT payload FROM outbox WHERE event_type = 'conversation.updated.v1' ORDER BY id",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };

    let (s, body) = patch(json!({"assignee_id": op_id})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["assignee_id"], op_id);
    let (s, body) = patch(json!({"status": "resolved"})).await;
    assert_eq!(
        (s, body["status"].clone()),
        (StatusCode::OK, json!("resolved"))
    );
    let until = chrono::Utc::now() + chrono::Duration::hours(3);
    let (s, body) = patch(json!({"snoozed_until": until})).await;
    assert_eq!(
        (s, body["status"].clone()),
        (StatusCode::OK, json!("snoozed")),
        "{body}"
    );
    let (s, body) = patch(json!({"assignee_id": null})).await;
    assert_eq!(
        (s, body["assignee_id"].clone()),
        (StatusCode::OK, Value::Null)
    );
    // The same again changes nothing and announces nothing.
    let (s, _) = patch(json!({"assignee_id": null})).await;
    assert_eq!(s, StatusCode::OK);

    let written = events(&env).await;
    let changed: Vec<Value> = written.iter().map(|p| p["changed"].clone()).collect();
    assert_eq!(changed.len(), 4, "{changed:?}");
    assert_eq!(changed[0], json!({"assignee_id": op_id}));
    assert_eq!(changed[1], json!({"status": "resolved"}));
    assert_eq!(changed[2]["status"], "snoozed");
    assert!(changed[2]["snoozed_until"].is_string());
    assert_eq!(changed[3], json!({"assignee_id": null}));
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'conversation.updated' AND target_id = $1 AND before IS NOT NULL AND after IS NOT NULL",
    )
    .bind(&conv)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(audited, 4);

    // Refused, and nothing written.
    for (token, body, status) in [
        (&viewer, json!({"status": "open"}), StatusCode::FORBIDDEN),
        (
            &op,
            json!({"status": "closed"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &op,
            json!({"status": "snoozed"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &op,
            json!({"snoozed_until": "2001-01-01T00:00:00Z"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &op,
            json!({"assignee_id": Uuid::now_v7()}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &op,
            json!({"assignee_id": "not-a-uuid"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (s, err) = env
            .http
            .call(Method::PATCH, &url, Some(token), Some(body.clone()))
            .await;
        assert_eq!(s, status, "{body}: {err}");
    }
    assert_eq!(events(&env).await.len(), 4);

    // A snooze whose time has come reopens the conversation, announced.
    sqlx::query("UPDATE conversations SET snoozed_until = now() - interval '1 second', status = 'snoozed' WHERE id = $1::uuid")
        .bind(&conv)
        .execute(&env.pool)
        .await
        .unwrap();
    fastprep_tests::wait_for("the snooze to end", Duration::from_secs(30), || async {
        let status: String =
            sqlx::query_scalar("SELECT status FROM conversations WHERE id = $1::uuid")
                .bind(&conv)
                .fetch_one(&env.pool)
                .await
                .unwrap();
        (status == "open").then_some(())
    })
    .await;
    assert_eq!(
        events(&env).await.last().unwrap()["changed"]["status"],
        "open"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn notes_stay_with_staff_and_contacts_show_their_history() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let admin = env.admin_session(&api.url).await;
    let conv = contact_conversation(&env, 701, "Emil", None).await;
    inbound(&env, &conv, "Hi, I need help with IELTS").await;
    let note_url = format!("{}/api/conversations/{conv}/notes", api.url);
    let body = json!({"text": "Parent called; prefers evenings", "client_msg_id": "note-1"});
    let (s, note) = env
        .http
        .call(
            Method::POST,
            &note_url,
            Some(&admin.access),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{note}");
    assert_eq!(
        (note["kind"].clone(), note["status"].clone()),
        (json!("note"), json!("internal"))
    );
    assert_eq!(note["author_name"], "Administrator");
    // Idempotent like replies; never queued for Telegram.
    let (s, again) = env
        .http
        .call(Method::POST, &note_url, Some(&admin.access), Some(body))
        .await;
    assert_eq!(
        (s, again["id"].clone()),
        (StatusCode::CREATED, note["id"].clone())
    );
    let outgoing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'message.outgoing.v1'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(outgoing, 0);
    let noted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'message.note_added.v1'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(noted, 1);
    let timeline = Api::new(&env.http, &api.url, &admin.access)
        .messages(&conv, "")
        .await
        .unwrap();
    let kinds: Vec<(&str, &str)> = timeline
        .items
        .iter()
        .map(|m| (m.direction.as_str(), m.kind.as_str()))
        .collect();
    assert_eq!(kinds, [("out", "note"), ("in", "text")]);

    let contact: String =
        sqlx::query_scalar("SELECT contact_id::text FROM conversations WHERE id = $1::uuid")
            .bind(&conv)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    let profile = Api::new(&env.http, &api.url, &admin.access)
        .contact(&contact)
        .await
        .unwrap();
    assert_eq!(
        (profile.first_name.as_deref(), profile.username.as_deref()),
        (Some("Emil"), Some("emil_tg"))
    );
    assert_eq!(profile.conversations[0].id.to_string(), conv);
    assert_eq!(profile.conversations[0].message_count, 2);
    // Someone limited to assigned conversations does not see this contact.
    let role = env
        .create_role(
            &api.url,
            &admin.access,
            "assigned",
            &["inbox.read_assigned", "inbox.reply"],
        )
        .await;
    env.create_user(&api.url, &admin.access, "as@fastprep.test", &[&role])
        .await;
    let scoped = env
        .sign_in(&api.url, "as@fastprep.test", USER_PASSWORD)
        .await
        .access;
    let refused = Api::new(&env.http, &api.url, &scoped)
        .contact(&contact)
        .await
        .unwrap_err();
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    let (s, _) = env
        .http
        .call(
            Method::POST,
            &note_url,
            Some(&scoped),
            Some(json!({"text": "x", "client_msg_id": "n2"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    env.cleanup().await;
}

#[tokio::test]
async fn message_pages_neither_skip_nor_repeat_while_messages_arrive() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let admin = env.admin_session(&api.url).await.access;
    let conv = contact_conversation(&env, 801, "Fay", None).await;
    for i in 0..120 {
        inbound(&env, &conv, &format!("before {i}")).await;
    }
    let writer = {
        let pool = env.pool.clone();
        let conv = conv.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                sqlx::query(
                    "INSERT INTO messages (id, conversation_id, direction, text, tg_message_id, status)
                     VALUES ($1, $2::uuid, 'in', $3, $4, 'received')",
                )
                .bind(Uuid::now_v7())
                .bind(&conv)
                .bind(format!("during {i}"))
                .bind(1_000_000 + i)
                .execute(&pool)
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor
            .as_ref()
            .map(|c| format!("&cursor={}", urlencode(c)))
            .unwrap_or_default();
        let (s, body) = env
            .http
            .get(
                &format!("{}/api/conversations/{conv}/messages?limit=7{q}", api.url),
                &admin,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        for m in body["items"].as_array().unwrap() {
            seen.push(m["text"].as_str().unwrap().to_owned());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    writer.await.unwrap();
    let before: Vec<&String> = seen.iter().filter(|t| t.starts_with("before")).collect();
    assert_eq!(before.len(), 120, "every older message exactly once");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no message twice");
    env.cleanup().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A reply is written in one statement that renders its `view` for the
/// realtime gateways in SQL: that rendering is the reply's JSON as the
/// `POST` answers it, field for field, and a repeated `POST` writes nothing
/// (not even the conversation's last activity).
#[tokio::test]
async fn a_replys_view_is_its_json() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let admin = env.admin_session(&api.url).await;
    let chat = 3131;
    let conv = env.insert_conversation(chat, None).await;
    for i in 0..25 {
        let text = format!("reply {i} «ünï» \"quoted\" \\ {}", "x".repeat(i));
        let (s, answer) = env
            .http
            .call(
                Method::POST,
                &format!("{}/api/conversations/{conv}/messages", api.url),
                Some(&admin.access),
                Some(json!({"text": text, "client_msg_id": format!("v{i}")})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{answer}");
        let payload: Value = sqlx::query_scalar(
            "SELECT payload FROM outbox WHERE event_type = 'message.outgoing.v1' AND aggregate_id = $1",
        )
        .bind(answer["id"].as_str().unwrap())
        .fetch_one(&env.pool)
        .await
        .unwrap();
        assert_eq!(payload["view"], answer, "the view is the POST's answer");
        assert_eq!(payload["tg_chat_id"], chat);
        assert_eq!(payload["text"], text.as_str());
        assert!(payload.get("assignee_id").is_none(), "{payload}");
    }
    let last = |pool: sqlx::PgPool, conv: String| async move {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
            "SELECT last_message_at FROM conversations WHERE id = $1::uuid",
        )
        .bind(conv)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let before = last(env.pool.clone(), conv.clone()).await;
    let (s, again) = env
        .http
        .call(
            Method::POST,
            &format!("{}/api/conversations/{conv}/messages", api.url),
            Some(&admin.access),
            Some(json!({"text": "reply 0 «ünï» \"quoted\" \\ ", "client_msg_id": "v0"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{again}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE aggregate_id = $1")
        .bind(again["id"].as_str().unwrap())
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "a repeated POST writes no event");
    assert_eq!(last(env.pool.clone(), conv.clone()).await, before);

    // The SQL rendering of a time is chrono's, whatever its fraction.
    let sql = format!(
        "SELECT {}",
        api::inbox::messages::json_time("$1::timestamptz")
    );
    for t in [
        "2026-12-06T10:00:00Z",
        "2026-12-06T10:00:00.120Z",
        "2026-12-06T10:00:00.000100Z",
        "2026-12-06T10:00:00.123456Z",
        "1999-01-02T03:04:05.000001Z",
    ] {
        let t: chrono::DateTime<chrono::Utc> = t.parse().unwrap();
        // The expression is the API's own, over a bind parameter.
        let rendered: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .bind(t)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        assert_eq!(json!(rendered), json!(t), "{t}");
    }
    env.cleanup().await;
}
