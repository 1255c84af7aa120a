//! An operator's edit and deletion of a sent reply, through the outbox and
//! tg-delivery to the sandbox Telegram (ADR 0020); and what Telegram says of
//! messages afterwards: deletions and read receipts.

use std::time::Duration;

use fastprep_tests::{TestEnv, system::System, wait_for};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The reply's `change_kind`, `change_status` and `change_error`, from the
/// database.
async fn change_of(env: &TestEnv, id: &str) -> (Option<String>, Option<String>, Option<String>) {
    sqlx::query_as(
        "SELECT change_kind, change_status, change_error FROM messages WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&env.pool)
    .await
    .unwrap()
}

async fn wait_change(env: &TestEnv, id: &str, status: &str) -> (Option<String>, Option<String>) {
    let want = status.to_owned();
    let (kind, _, error) = wait_for(
        &format!("the change of {id} to become {status}"),
        Duration::from_secs(40),
        || {
            let want = want.clone();
            async move {
                let row = change_of(env, id).await;
                (row.1.as_deref() == Some(want.as_str())).then_some(row)
            }
        },
    )
    .await;
    (kind, error)
}

/// The sandbox's record of the message sent under `key`.
async fn sent_record(env: &TestEnv, sys: &System, key: &str) -> Value {
    let sent = env.sent(&sys.adapter).await;
    let mine: Vec<&Value> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["idempotency_key"] == key)
        .collect();
    assert_eq!(mine.len(), 1, "{sent}");
    mine[0].clone()
}

async fn call(
    env: &TestEnv,
    sys: &System,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    env.http
        .call(
            method,
            &format!("{}{path}", sys.next_api().url),
            Some(&sys.token),
            body,
        )
        .await
}

/// A conversation with one reply the sandbox has: (conversation, reply id).
async fn sent_reply(env: &TestEnv, sys: &System, chat: i64, text: &str) -> (String, String) {
    env.inject(&sys.adapter, chat, 1, "Hi, when is the next mock test?")
        .await;
    let conv = env.conversation_for(sys, chat).await;
    let msg = env.reply(sys, &conv, text, "c-1").await;
    let id = msg["id"].as_str().unwrap().to_owned();
    env.wait_status(&id, "sent", Duration::from_secs(20)).await;
    (conv, id)
}

#[tokio::test]
async fn a_sent_reply_is_edited_then_deleted_in_telegram_once_each() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let (conv, id) = sent_reply(&env, &sys, 7101, "The mock test is on Tuesday.").await;
    let path = format!("/api/conversations/{conv}/messages/{id}");

    let (status, body) = call(
        &env,
        &sys,
        Method::PATCH,
        &path,
        Some(json!({"text": "The mock test is on Wednesday."})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["text"], "The mock test is on Wednesday.");
    assert_eq!(body["change_kind"], "edit");
    assert_eq!(body["change_status"], "queued");
    assert!(body["edited_at"].is_string(), "{body}");
    let (kind, error) = wait_change(&env, &id, "sent").await;
    assert_eq!(kind.as_deref(), Some("edit"));
    assert_eq!(error, None);
    let record = sent_record(&env, &sys, &id).await;
    assert_eq!(record["edits"], json!(["The mock test is on Wednesday."]));
    assert_eq!(record["send_count"], 1);

    // The same edit again changes nothing, here or in Telegram.
    let (status, body) = call(
        &env,
        &sys,
        Method::PATCH,
        &path,
        Some(json!({"text": "The mock test is on Wednesday."})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["change_status"], "sent");
    // The old text is kept, with who replaced it; the edit is audited.
    let (status, versions) = call(&env, &sys, Method::GET, &format!("{path}/versions"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        versions["previous"][0]["text"],
        "The mock test is on Tuesday."
    );
    assert_eq!(versions["text"], "The mock test is on Wednesday.");
    let editors: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM message_edits WHERE message_id = $1::uuid AND editor_id IS NOT NULL",
    )
    .bind(&id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(editors, 1);

    let (status, body) = call(&env, &sys, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body["deleted_at"].is_string(), "{body}");
    assert_eq!(body["change_kind"], "delete");
    wait_change(&env, &id, "sent").await;
    let record = sent_record(&env, &sys, &id).await;
    assert_eq!(record["deleted"], true, "{record}");
    assert_eq!(record["edits"].as_array().unwrap().len(), 1);
    // Deleting again changes nothing; a deleted reply is not edited.
    let (status, _) = call(&env, &sys, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &env,
        &sys,
        Method::PATCH,
        &path,
        Some(json!({"text": "too late"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "message_deleted");

    // Each change was audited, and each step told the inbox.
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE target_id = $1 ORDER BY id")
            .bind(&id)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(actions, ["message.edit", "message.delete"]);
    let updates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'message.updated.v1' AND aggregate_id = $1",
    )
    .bind(&id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    // Asked and made, for each of the two changes.
    assert_eq!(updates, 4);
    env.cleanup().await;
}

#[tokio::test]
async fn an_edit_that_meets_a_flood_wait_shows_retrying_then_goes() {
    let mut env = TestEnv::new().await;
    let sys = env.start_single_system().await;
    let (conv, id) = sent_reply(&env, &sys, 7102, "Room 4").await;
    env.set_faults(
        &sys.adapter,
        json!({"fail_next": 1, "mode": "flood_wait", "retry_after": 1}),
    )
    .await;
    let (status, body) = call(
        &env,
        &sys,
        Method::PATCH,
        &format!("/api/conversations/{conv}/messages/{id}"),
        Some(json!({"text": "Room 5"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, error) = wait_change(&env, &id, "retrying").await;
    assert_eq!(error.as_deref(), Some("flood wait 1s"));
    let retry_at: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT change_retry_at FROM messages WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(retry_at.is_some());
    wait_change(&env, &id, "sent").await;
    let record = sent_record(&env, &sys, &id).await;
    assert_eq!(record["edits"], json!(["Room 5"]));
    env.cleanup().await;
}

#[tokio::test]
async fn a_change_telegram_refuses_fails_with_its_reason_and_the_reply_stays_sent() {
    let mut env = TestEnv::new().await;
    let sys = env.start_single_system().await;
    let (conv, id) = sent_reply(&env, &sys, 7103, "See you at 10").await;
    env.set_faults(
        &sys.adapter,
        json!({"fail_next": 1, "mode": "permanent", "code": "message_not_found"}),
    )
    .await;
    let (status, _) = call(
        &env,
        &sys,
        Method::PATCH,
        &format!("/api/conversations/{conv}/messages/{id}"),
        Some(json!({"text": "See you at 11"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, error) = wait_change(&env, &id, "failed").await;
    assert_eq!(error.as_deref(), Some("message_not_found"));
    // The reply itself was delivered: its status stays `sent`, and no
    // delivery failure is raised for it.
    let (status, ..) = env.message_row(&id).await;
    assert_eq!(status, "sent");
    let failures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'message.delivery_failed.v1'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(failures, 0);
    assert!(
        sent_record(&env, &sys, &id).await["edits"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    env.cleanup().await;
}

#[tokio::test]
async fn only_a_sent_reply_can_be_changed_and_bad_input_is_refused() {
    let mut env = TestEnv::new().await;
    let sys = env.start_single_system().await;
    let (conv, id) = sent_reply(&env, &sys, 7104, "Hello").await;
    let inbound: String = sqlx::query_scalar(
        "SELECT id::text FROM messages WHERE direction = 'in' AND conversation_id = $1::uuid",
    )
    .bind(&conv)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let (status, note) = call(
        &env,
        &sys,
        Method::POST,
        &format!("/api/conversations/{conv}/notes"),
        Some(json!({"text": "call back later", "client_msg_id": "n-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let note = note["id"].as_str().unwrap().to_owned();
    // A reply Telegram never got: the chat blocked the account.
    env.set_faults(&sys.adapter, json!({"blocked_chats": [7104]}))
        .await;
    let failed = env.reply(&sys, &conv, "Are you there?", "c-2").await;
    let failed = failed["id"].as_str().unwrap().to_owned();
    env.wait_status(&failed, "failed", Duration::from_secs(20))
        .await;

    let patch = |message: String, body: Value| {
        let path = format!("/api/conversations/{conv}/messages/{message}");
        let env = &env;
        let sys = &sys;
        async move { call(env, sys, Method::PATCH, &path, Some(body)).await }
    };
    for (message, body, want, code) in [
        (inbound.clone(), json!({"text": "x"}), 409, "not_a_reply"),
        (note.clone(), json!({"text": "x"}), 409, "not_a_reply"),
        (failed.clone(), json!({"text": "x"}), 409, "not_sent"),
        (id.clone(), json!({"text": "  "}), 422, "empty_text"),
        (id.clone(), json!({"text": "a\u{0}b"}), 422, "invalid_text"),
        (
            id.clone(),
            json!({"text": "я".repeat(4097)}),
            422,
            "text_too_long",
        ),
        (
            uuid::Uuid::new_v4().to_string(),
            json!({"text": "x"}),
            404,
            "not_found",
        ),
    ] {
        let (status, body) = patch(message, body).await;
        assert_eq!(status.as_u16(), want, "{code}: {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    let (status, body) = call(
        &env,
        &sys,
        Method::DELETE,
        &format!("/api/conversations/{conv}/messages/{failed}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "not_sent");
    // Nothing was written by any refusal.
    let changed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE change_kind IS NOT NULL OR deleted_at IS NOT NULL",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(changed, 0);
    assert_eq!(env.count("message_edits").await, 0);
    env.cleanup().await;
}

/// The events the MTProto backend publishes for a deletion and a read
/// receipt, as the adapter publishes them.
async fn publish_update(env: &TestEnv, event_type: &str, aggregate_id: &str, data: Value) {
    let event = json!({
        "id": uuid::Uuid::new_v4(),
        "type": event_type,
        "occurred_at": "2026-12-06T10:00:00Z",
        "aggregate_type": "tg_chat",
        "aggregate_id": aggregate_id,
        "data": data,
    });
    let id = event["id"].as_str().unwrap().to_owned();
    env.publish_raw(event_type, event.to_string().as_bytes(), &id)
        .await;
}

#[tokio::test]
async fn deletions_and_read_receipts_mark_the_messages_and_reach_the_inbox() {
    let mut env = TestEnv::new().await;
    let sys = env.start_single_system().await;
    let (_, reply) = sent_reply(&env, &sys, 7105, "Your score is 1450").await;
    let (_, reply_tg, ..) = env.message_row(&reply).await;
    let reply_tg = reply_tg.unwrap();
    // The customer read the reply, then deleted their own first message
    // (private chats' deletions name no chat).
    publish_update(
        &env,
        "tg.update.read.v1",
        "7105",
        json!({"chat_id": 7105, "max_id": reply_tg, "outgoing": true, "read_at": "2026-12-06T10:00:00Z"}),
    )
    .await;
    publish_update(
        &env,
        "tg.update.deleted.v1",
        "account",
        json!({"tg_message_ids": [1], "deleted_at": "2026-12-06T10:00:01Z"}),
    )
    .await;
    let pool = env.pool.clone();
    wait_for("both stored", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM messages
                 WHERE (direction = 'out' AND read_at IS NOT NULL)
                    OR (direction = 'in' AND deleted_at IS NOT NULL)",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (n == 2).then_some(())
        }
    })
    .await;
    // The account reading the chat in another app marks nothing.
    publish_update(
        &env,
        "tg.update.read.v1",
        "7105",
        json!({"chat_id": 7105, "max_id": 1, "outgoing": false, "read_at": "2026-12-06T10:00:02Z"}),
    )
    .await;
    env.wait_count(
        "the four updates handled (the message, the reads, the deletion)",
        "SELECT count(*) FROM processed_messages WHERE consumer = 'inbound'",
        Duration::from_secs(20),
        |n| n == 4,
    )
    .await;
    env.wait_outbox_drained(Duration::from_secs(20)).await;
    let updates: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'message.updated.v1'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(updates, 2);
    fastprep_tests::wait_for("inbound drained", Duration::from_secs(10), || async {
        let q = env.queue("inbound").await?;
        (q["messages"].as_u64()? == 0).then_some(())
    })
    .await;
    // The management API counts a new queue's messages only after its
    // first statistics (up to 5 s).
    let dead = wait_for("inbound.dlq's count", Duration::from_secs(20), || async {
        env.queue("inbound.dlq").await?["messages"].as_u64()
    })
    .await;
    assert_eq!(dead, 0, "nothing was dead-lettered");
    env.cleanup().await;
}
