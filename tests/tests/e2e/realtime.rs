//! The realtime gateway: events across instances in order and once, resume
//! after a disconnect, permission filtering under random traffic and when
//! rights shrink, token expiry and revocation, abuse, and queues that leave
//! with their instance.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use fastprep_tests::{
    TestEnv,
    accounts::{Session, USER_PASSWORD},
    system::Started,
    ws::{Heard, Ws},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const READ_ALL_OPERATOR: &[&str] = &["inbox.read_all", "inbox.reply", "inbox.assign"];
const ASSIGNED_OPERATOR: &[&str] = &["inbox.read_assigned", "inbox.reply"];

async fn note(env: &TestEnv, api: &str, token: &str, conv: &str, text: &str) -> Value {
    let (s, body) = env
        .http
        .call(
            Method::POST,
            &format!("{api}/api/conversations/{conv}/notes"),
            Some(token),
            Some(json!({"text": text, "client_msg_id": uuid::Uuid::now_v7().to_string()})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "note: {body}");
    body
}

async fn patch(env: &TestEnv, api: &str, token: &str, conv: &str, body: Value) {
    let (s, out) = env
        .http
        .call(
            Method::PATCH,
            &format!("{api}/api/conversations/{conv}"),
            Some(token),
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "patch: {out}");
}

/// A user holding a new role with `perms`, signed in on `api`.
async fn user_with(
    env: &TestEnv,
    api: &str,
    admin: &str,
    name: &str,
    perms: &[&str],
) -> (Session, String) {
    let role = env.create_role(api, admin, name, perms).await;
    let email = format!("{name}@fastprep.test");
    env.create_user(api, admin, &email, &[&role]).await;
    (env.sign_in(api, &email, USER_PASSWORD).await, role)
}

fn ids(frames: &[Value]) -> Vec<i64> {
    frames.iter().map(|f| f["id"].as_i64().unwrap()).collect()
}

fn conversation_of(f: &Value) -> String {
    f["data"]["conversation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Event frames only (no `ep.update`, `pong`, `error`).
fn events(frames: Vec<Value>) -> Vec<Value> {
    frames
        .into_iter()
        .filter(|f| {
            matches!(
                f["type"].as_str(),
                Some("message.created" | "message.status" | "conversation.updated")
            )
        })
        .collect()
}

#[tokio::test]
async fn a_client_on_one_instance_sees_what_happens_on_the_other_in_order_once() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let other = env.start_api(&[]).await;
    let admin = env.admin_session(&other.url).await;
    let (mut ws, ep) = Ws::connect(&sys.api.url, &admin.access).await;
    assert!(ep["data"]["permissions"].as_array().unwrap().len() > 5);
    assert_eq!(ep["data"]["token_current"], true);

    // A customer writes (the inbound consumer), an operator on the other
    // instance replies (tg-delivery sends it) and takes the conversation.
    env.inject(&sys.adapter, 7001, 1, "hello there").await;
    let conv = env.conversation_for(&sys, 7001).await;
    let (s, reply) = env
        .http
        .call(
            Method::POST,
            &format!("{}/api/conversations/{conv}/messages", other.url),
            Some(&admin.access),
            Some(json!({"text": "hi, how can we help?", "client_msg_id": "r1"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{reply}");
    let reply_id = reply["id"].as_str().unwrap().to_owned();
    env.wait_status(&reply_id, "sent", Duration::from_secs(20))
        .await;
    patch(
        &env,
        &other.url,
        &admin.access,
        &conv,
        json!({"assignee_id": admin.user_id}),
    )
    .await;

    let frames = ws
        .until(Duration::from_secs(20), |fs| {
            fs.iter().any(|f| f["type"] == "conversation.updated")
                && fs
                    .iter()
                    .any(|f| f["type"] == "message.status" && f["data"]["status"] == "sent")
        })
        .await;
    let mut frames = events(frames);
    frames.extend(events(ws.drain(Duration::from_millis(1500)).await));
    let seen: Vec<(String, String)> = frames
        .iter()
        .map(|f| {
            let what = match f["type"].as_str().unwrap() {
                "message.created" => f["data"]["direction"].as_str().unwrap().to_owned(),
                "message.status" => f["data"]["status"].as_str().unwrap().to_owned(),
                _ => f["data"]["changed"].to_string(),
            };
            (f["type"].as_str().unwrap().to_owned(), what)
        })
        .collect();
    let id_list = ids(&frames);
    assert!(
        id_list.windows(2).all(|w| w[0] < w[1]),
        "ids rise: {id_list:?}"
    );
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "each event once: {seen:?}");
    let position = |t: &str, w: &str| {
        seen.iter()
            .position(|(a, b)| a == t && b == w)
            .unwrap_or_else(|| panic!("no {t} {w} in {seen:?}"))
    };
    let inbound = position("message.created", "in");
    let outbound = position("message.created", "out");
    let sending = position("message.status", "sending");
    let sent = position("message.status", "sent");
    let assigned = position(
        "conversation.updated",
        &json!({"assignee_id": admin.user_id}).to_string(),
    );
    assert!(
        inbound < outbound && outbound < sending && sending < sent,
        "{seen:?}"
    );
    // The assignment came well after the reply was written (the first event
    // of its message, so nothing held it back): it is published later. The
    // sent status may trail it, waiting for `sending` to be marked.
    assert!(outbound < assigned, "{seen:?}");
    // The created frame is the message as the timeline shows it.
    let created = &frames[outbound]["data"];
    assert_eq!(created["id"], reply_id.as_str());
    assert_eq!(created["text"], "hi, how can we help?");
    assert_eq!(created["author_name"], "Administrator");
    assert_eq!(frames[sent]["data"]["message_id"], reply_id.as_str());
    assert!(frames[sent]["data"]["tg_message_id"].as_i64().is_some());
    ws.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn resume_after_a_disconnect_replays_exactly_what_was_missed() {
    let mut env = TestEnv::new().await;
    let one = env.start_api(&[]).await;
    let _relay = env.start_consumer("relay", None, &[]).await;
    let two = env.start_api(&[]).await;
    let admin = env.admin_session(&one.url).await;
    let convs: Vec<String> =
        futures::future::join_all((0..4).map(|i| env.insert_conversation(8000 + i, None))).await;
    // A witness stays connected the whole time.
    let (mut witness, _) = Ws::connect(&one.url, &admin.access).await;
    let (mut ws, _) = Ws::connect(&one.url, &admin.access).await;
    for (i, conv) in convs.iter().enumerate() {
        note(&env, &one.url, &admin.access, conv, &format!("before {i}")).await;
    }
    let before = events(
        ws.until(Duration::from_secs(10), |fs| events(fs.to_vec()).len() == 4)
            .await,
    );
    let last = *ids(&before).last().unwrap();
    ws.close().await;

    // Missed while away: notes and status changes, some on each instance.
    for (i, conv) in convs.iter().enumerate() {
        let api = if i % 2 == 0 { &one.url } else { &two.url };
        note(&env, api, &admin.access, conv, &format!("away {i}")).await;
        patch(&env, api, &admin.access, conv, json!({"status": "pending"})).await;
    }
    let expected = events(
        witness
            .until(Duration::from_secs(10), |fs| {
                events(fs.to_vec()).len() == 12
            })
            .await,
    );
    let missed: Vec<Value> = expected
        .into_iter()
        .filter(|f| f["id"].as_i64().unwrap() > last)
        .collect();
    assert_eq!(missed.len(), 8);

    // Back, on the other instance: exactly the missed frames, in order.
    let (mut back, _) = Ws::resume(&two.url, &admin.access, last).await;
    let replayed = events(
        back.until(Duration::from_secs(10), |fs| events(fs.to_vec()).len() == 8)
            .await,
    );
    assert_eq!(replayed, missed);
    assert!(
        events(back.drain(Duration::from_millis(800)).await).is_empty(),
        "nothing twice"
    );
    // And the stream goes on live after the replay.
    note(&env, &two.url, &admin.access, &convs[0], "after").await;
    let live = back.expect("message.created").await;
    assert!(live["id"].as_i64().unwrap() > replayed.last().unwrap()["id"].as_i64().unwrap());
    assert_eq!(live["data"]["text"], "after");

    // A position the gateway no longer holds (or never issued) gets resync,
    // at the gateway's latest position: once instance one has the live
    // event too (its witness sees it), that is at least the live one's.
    witness
        .until(Duration::from_secs(10), |fs| {
            fs.iter().any(|f| f["data"]["text"] == "after")
        })
        .await;
    let (mut old, _) = Ws::resume(&one.url, &admin.access, -5).await;
    let resync = old.expect("resync").await;
    assert!(resync["id"].as_i64().unwrap() >= live["id"].as_i64().unwrap());
    let (mut future, _) = Ws::resume(&one.url, &admin.access, i64::MAX / 2).await;
    future.expect("resync").await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_operator_limited_to_assigned_conversations_never_hears_of_others() {
    let mut env = TestEnv::new().await;
    let one = env.start_api(&[]).await;
    let two = env.start_api(&[]).await;
    let _relay = env.start_consumer("relay", None, &[]).await;
    let admin = env.admin_session(&one.url).await;
    let (op, _) = user_with(&env, &one.url, &admin.access, "assigned", ASSIGNED_OPERATOR).await;
    let (other_op, _) = user_with(
        &env,
        &one.url,
        &admin.access,
        "colleague",
        READ_ALL_OPERATOR,
    )
    .await;
    let mut convs = Vec::new();
    for i in 0..30 {
        let assignee = match i % 6 {
            0 => Some(op.user_id.as_str()),
            1 => Some(other_op.user_id.as_str()),
            _ => None,
        };
        convs.push(env.insert_conversation(9000 + i, assignee).await);
    }
    let (mut watcher, _) = Ws::connect(&two.url, &admin.access).await;
    let (mut ws, _) = Ws::connect(&one.url, &op.access).await;
    let (mut ws2, _) = Ws::connect(&two.url, &op.access).await;

    let mut rng = StdRng::seed_from_u64(0x5eed);
    let total = 150;
    for n in 0..total {
        let conv = &convs[rng.random_range(0..convs.len())];
        let api = if rng.random_bool(0.5) {
            &one.url
        } else {
            &two.url
        };
        match rng.random_range(0..10) {
            0..=5 => {
                note(&env, api, &admin.access, conv, &format!("note {n}")).await;
            }
            6..=7 => {
                let status = ["open", "pending", "resolved"][rng.random_range(0..3)];
                patch(&env, api, &admin.access, conv, json!({"status": status})).await;
            }
            _ => {
                // Reassignments, to and away from the operator.
                let to = match rng.random_range(0..3) {
                    0 => json!(op.user_id),
                    1 => json!(other_op.user_id),
                    _ => Value::Null,
                };
                patch(&env, api, &admin.access, conv, json!({"assignee_id": to})).await;
            }
        }
    }
    // Changes to what a conversation already was write no event: count what
    // was written.
    let written: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type IN ('message.note_added.v1', 'conversation.updated.v1')",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let written = usize::try_from(written).unwrap();
    assert!(written > total / 2);
    let all = events(
        watcher
            .until(Duration::from_secs(30), |fs| {
                events(fs.to_vec()).len() >= written
            })
            .await,
    );
    // The oracle: walk the full stream, tracking assignment as it goes.
    let mut assignee: HashMap<String, Option<String>> = HashMap::new();
    for (i, conv) in convs.iter().enumerate() {
        let a = match i % 6 {
            0 => Some(op.user_id.clone()),
            1 => Some(other_op.user_id.clone()),
            _ => None,
        };
        assignee.insert(conv.clone(), a);
    }
    let me = Some(op.user_id.clone());
    let mut expected = Vec::new();
    for f in &all {
        let conv = conversation_of(f);
        let before = assignee[&conv].clone();
        if let Some(a) = f["data"]["changed"].get("assignee_id") {
            assignee.insert(conv.clone(), a.as_str().map(str::to_owned));
        }
        let reassigned_from_me = f["type"] == "conversation.updated"
            && f["data"]["changed"].get("assignee_id").is_some()
            && before == me;
        if assignee[&conv] == me || reassigned_from_me {
            expected.push(f.clone());
        }
    }
    assert!(
        expected.len() > 10 && expected.len() < all.len() / 2,
        "{} of {}",
        expected.len(),
        all.len()
    );
    for socket in [&mut ws, &mut ws2] {
        let got = events(
            socket
                .until(Duration::from_secs(10), |fs| {
                    events(fs.to_vec()).len() >= expected.len()
                })
                .await,
        );
        let mut got = got;
        got.extend(events(socket.drain(Duration::from_millis(800)).await));
        assert_eq!(got.len(), expected.len());
        assert_eq!(got, expected);
    }
    env.cleanup().await;
}

#[tokio::test]
async fn when_rights_shrink_events_stop_at_once_and_a_fresh_token_applies_them() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[("WS_REAUTH_GRACE", "3s".to_owned())]).await;
    let other = env.start_api(&[]).await;
    let _relay = env.start_consumer("relay", None, &[]).await;
    let admin = env.admin_session(&api.url).await;
    let (op, role) = user_with(
        &env,
        &api.url,
        &admin.access,
        "shrinking",
        READ_ALL_OPERATOR,
    )
    .await;
    let mine = env.insert_conversation(9500, Some(&op.user_id)).await;
    let theirs = env.insert_conversation(9501, None).await;
    let (mut ws, _) = Ws::connect(&api.url, &op.access).await;
    let (mut ws_other, _) = Ws::connect(&other.url, &op.access).await;
    note(
        &env,
        &api.url,
        &admin.access,
        &theirs,
        "visible while read_all",
    )
    .await;
    assert_eq!(
        ws.expect("message.created").await["data"]["text"],
        "visible while read_all"
    );
    assert_eq!(
        ws_other.expect("message.created").await["data"]["text"],
        "visible while read_all"
    );

    // read_all becomes read_assigned: ep.update on both instances at once,
    // and from then on nothing about the unassigned conversation.
    env.set_role_permissions(
        &api.url,
        &admin.access,
        &role,
        &["inbox.read_assigned", "inbox.reply"],
    )
    .await;
    for socket in [&mut ws, &mut ws_other] {
        let ep = socket.expect("ep.update").await;
        assert_eq!(
            ep["data"]["permissions"],
            json!(["inbox.read_assigned", "inbox.reply"])
        );
        assert_eq!(ep["data"]["token_current"], false);
    }
    note(&env, &api.url, &admin.access, &theirs, "must not be seen").await;
    note(
        &env,
        &api.url,
        &admin.access,
        &mine,
        "mine, after the change",
    )
    .await;
    // The stream is held until a current token arrives.
    assert_eq!(ws.next(Duration::from_millis(800)).await, Heard::Silence);
    let (s, fresh) = env.refresh(&api.url, &op.refresh).await;
    assert_eq!(s, StatusCode::OK, "{fresh}");
    let token = fresh["access_token"].as_str().unwrap();
    ws.send(json!({"type": "auth", "token": token})).await;
    let ep = ws.expect("ep.update").await;
    assert_eq!(ep["data"]["token_current"], true);
    let after = ws.expect("message.created").await;
    assert_eq!(after["data"]["text"], "mine, after the change");
    assert!(events(ws.drain(Duration::from_millis(800)).await).is_empty());

    // The other socket never sent a fresh token: closed after the grace
    // (the default there is 15 s).
    // Revocation: logout everywhere bumps the version; with no current
    // token possible, the socket closes after the grace.
    let (s, _) = env
        .http
        .call(
            Method::POST,
            &format!("{}/api/auth/logout", api.url),
            Some(token),
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(ws.expect("ep.update").await["data"]["token_current"], false);
    note(&env, &api.url, &admin.access, &mine, "after logout").await;
    assert_eq!(
        ws.closed(Duration::from_secs(6)).await,
        Some((4004, "token_stale".to_owned()))
    );
    assert_eq!(
        ws_other.closed(Duration::from_secs(20)).await,
        Some((4004, "token_stale".to_owned()))
    );
    env.cleanup().await;
}

#[tokio::test]
async fn deactivation_closes_and_an_expired_token_closes() {
    let mut env = TestEnv::new().await;
    let api = env
        .start_api(&[("ACCESS_TOKEN_TTL", "10s".to_owned())])
        .await;
    let admin = env.admin_session(&api.url).await;
    let (op, _) = user_with(&env, &api.url, &admin.access, "leaving", READ_ALL_OPERATOR).await;
    let (mut ws, _) = Ws::connect(&api.url, &op.access).await;
    let (s, _) = env
        .http
        .call(
            Method::DELETE,
            &format!("{}/api/users/{}", api.url, op.user_id),
            Some(&admin.access),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        ws.closed(Duration::from_secs(3)).await,
        Some((4005, "account_disabled".to_owned()))
    );
    // A token kept fresh in-band outlives its first expiry; one that is not
    // is closed at its expiry.
    let (mut kept, _) = Ws::connect(&api.url, &admin.access).await;
    let (mut lapsed, _) = Ws::connect(&api.url, &admin.access).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let renewed = env.admin_session(&api.url).await;
    kept.send(json!({"type": "auth", "token": renewed.access}))
        .await;
    assert_eq!(
        kept.expect("ep.update").await["data"]["token_current"],
        true
    );
    assert_eq!(
        lapsed.closed(Duration::from_secs(8)).await,
        Some((4003, "token_expired".to_owned()))
    );
    kept.send(json!({"type": "ping"})).await;
    kept.expect("pong").await;
    // Another user's token cannot be slipped into a socket.
    let (other, _) = user_with(&env, &api.url, &admin.access, "intruder", READ_ALL_OPERATOR).await;
    kept.send(json!({"type": "auth", "token": other.access}))
        .await;
    assert_eq!(
        kept.closed(Duration::from_secs(3)).await,
        Some((4002, "invalid_token".to_owned()))
    );
    env.cleanup().await;
}

#[tokio::test]
async fn bad_sockets_are_closed_and_do_not_harm_others() {
    let mut env = TestEnv::new().await;
    let api = env
        .start_api(&[("CORS_ORIGINS", "https://admin.fastprep.test".to_owned())])
        .await;
    let _relay = env.start_consumer("relay", None, &[]).await;
    let admin = env.admin_session(&api.url).await;
    let conv = env.insert_conversation(9900, None).await;
    let (mut healthy, _) = Ws::connect(&api.url, &admin.access).await;

    // Origins: an allowed page may connect, another site may not.
    assert!(
        Ws::open_from(&api.url, "https://admin.fastprep.test")
            .await
            .is_ok()
    );
    assert_eq!(
        Ws::open_from(&api.url, "https://evil.example")
            .await
            .err()
            .map(|s| s.as_u16()),
        Some(403)
    );
    // Silent: closed after 5 s. Garbage token, garbage first frame, a
    // token in the wrong place.
    let opened = std::time::Instant::now();
    let mut silent = Ws::open(&api.url).await;
    let mut forged = Ws::open(&api.url).await;
    forged.send(json!({"type": "auth", "token": "x.y.z"})).await;
    let mut babble = Ws::open(&api.url).await;
    babble.send_text("{{{{").await;
    let mut early = Ws::open(&api.url).await;
    early.send(json!({"type": "ping"})).await;
    assert_eq!(
        forged.closed(Duration::from_secs(3)).await,
        Some((4002, "invalid_token".into()))
    );
    assert_eq!(
        babble.closed(Duration::from_secs(3)).await,
        Some((4001, "auth_required".into()))
    );
    assert_eq!(
        early.closed(Duration::from_secs(3)).await,
        Some((4001, "auth_required".into()))
    );
    assert_eq!(
        silent.closed(Duration::from_secs(8)).await,
        Some((4001, "auth_timeout".into()))
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(4500),
        "the 5 s allowed"
    );

    // Signed in but misbehaving: bad frames get errors, then a close; a
    // flood is closed; an oversize frame ends the socket; binary is refused.
    let (mut sloppy, _) = Ws::connect(&api.url, &admin.access).await;
    for _ in 0..3 {
        sloppy.send_text("not json").await;
        let e = sloppy.expect("error").await;
        assert_eq!(e["data"]["code"], "bad_frame");
    }
    sloppy
        .send(json!({"type": "resume", "token": admin.access, "since": 1}))
        .await;
    assert_eq!(
        sloppy.expect("error").await["data"]["code"],
        "already_streaming"
    );
    let (mut flood, _) = Ws::connect(&api.url, &admin.access).await;
    for _ in 0..200 {
        flood.send(json!({"type": "ping"})).await;
    }
    assert_eq!(
        flood.closed(Duration::from_secs(5)).await,
        Some((1008, "rate_limited".into()))
    );
    let (mut huge, _) = Ws::connect(&api.url, &admin.access).await;
    huge.send_text(&format!(
        "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(64 * 1024)
    ))
    .await;
    assert!(matches!(
        huge.closed(Duration::from_secs(5)).await,
        None | Some((1009, _))
    ));
    let (mut binary, _) = Ws::connect(&api.url, &admin.access).await;
    binary.send_binary(vec![0; 16]).await;
    assert_eq!(
        binary.closed(Duration::from_secs(5)).await,
        Some((1008, "binary_frame".into()))
    );

    // Through all of it, the well-behaved socket kept its stream.
    note(&env, &api.url, &admin.access, &conv, "still here").await;
    let f = healthy.expect("message.created").await;
    assert_eq!(f["data"]["text"], "still here");
    let (s, body) = env
        .http
        .call(Method::GET, &format!("{}/api/health", api.url), None, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    env.cleanup().await;
}

async fn realtime_queues(env: &TestEnv) -> Vec<String> {
    let url = format!(
        "{}/api/queues/{}",
        env.services.rabbit_mgmt,
        env.vhost.replace('/', "%2F")
    );
    let body: Value = env
        .http
        .raw()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body.as_array()
        .unwrap()
        .iter()
        .filter_map(|q| q["name"].as_str())
        .filter(|n| n.starts_with("realtime."))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn realtime_queues_come_and_go_with_their_instances() {
    let mut env = TestEnv::new().await;
    let one: Started = env.start_api(&[]).await;
    let two = env.start_api(&[]).await;
    let env_ref = &env;
    fastprep_tests::wait_for(
        "a queue per instance",
        Duration::from_secs(10),
        || async move { (realtime_queues(env_ref).await.len() == 2).then_some(()) },
    )
    .await;
    env.proc(two.idx).kill();
    let env_ref = &env;
    fastprep_tests::wait_for(
        "the killed instance's queue to go",
        Duration::from_secs(10),
        || async move { (realtime_queues(env_ref).await.len() == 1).then_some(()) },
    )
    .await;
    let three = env.start_api(&[]).await;
    let env_ref = &env;
    fastprep_tests::wait_for(
        "the new instance's queue",
        Duration::from_secs(10),
        || async move { (realtime_queues(env_ref).await.len() == 2).then_some(()) },
    )
    .await;
    env.proc(three.idx).terminate(Duration::from_secs(10));
    env.proc(one.idx).terminate(Duration::from_secs(10));
    let env_ref = &env;
    fastprep_tests::wait_for(
        "every queue to go",
        Duration::from_secs(10),
        || async move { realtime_queues(env_ref).await.is_empty().then_some(()) },
    )
    .await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_customer_edit_updates_the_text_live_and_keeps_the_previous_version() {
    let mut env = TestEnv::new().await;
    let sys = env.start_system().await;
    let (mut ws, _) = Ws::connect(&sys.api.url, &sys.token).await;
    env.inject(&sys.adapter, 7201, 5, "helo, is the course full?")
        .await;
    let conv = env.conversation_for(&sys, 7201).await;
    let created = ws.expect("message.created").await;
    let message_id = created["data"]["id"].as_str().unwrap().to_owned();
    assert!(created["data"]["edited_at"].is_null());
    patch(
        &env,
        &sys.api.url,
        &sys.token,
        &conv,
        json!({"status": "resolved"}),
    )
    .await;
    ws.expect("conversation.updated").await;

    env.inject_edit(&sys.adapter, 7201, 5, "hello, is the course full?")
        .await;
    let updated = ws.expect("message.updated").await;
    assert_eq!(updated["data"]["id"], message_id.as_str());
    assert_eq!(updated["data"]["text"], "hello, is the course full?");
    assert!(updated["data"]["edited_at"].is_string());
    // The same edit again (Telegram repeats updates) changes nothing.
    env.inject_edit(&sys.adapter, 7201, 5, "hello, is the course full?")
        .await;
    env.inject_edit(&sys.adapter, 7201, 5, "hello, is the June course full?")
        .await;
    let again = ws.expect("message.updated").await;
    assert_eq!(again["data"]["text"], "hello, is the June course full?");

    let (s, versions) = env
        .http
        .get(
            &format!(
                "{}/api/conversations/{conv}/messages/{message_id}/versions",
                sys.api.url
            ),
            &sys.token,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{versions}");
    assert_eq!(versions["text"], "hello, is the June course full?");
    let previous: Vec<&str> = versions["previous"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        previous,
        ["helo, is the course full?", "hello, is the course full?"]
    );
    let timeline = env.messages(&sys, &conv).await;
    assert_eq!(timeline.len(), 1, "an edit is not a new message");
    assert_eq!(timeline[0]["text"], "hello, is the June course full?");
    // An edit does not reopen a resolved conversation.
    let (_, c) = env
        .http
        .get(
            &format!("{}/api/conversations/{conv}", sys.api.url),
            &sys.token,
        )
        .await;
    assert_eq!(c["status"], "resolved");
    // An edit of a message never received is stored as it now is.
    env.inject_edit(&sys.adapter, 7201, 99, "an edit of a lost message")
        .await;
    let stored = ws.expect("message.created").await;
    assert_eq!(stored["data"]["text"], "an edit of a lost message");
    assert!(stored["data"]["edited_at"].is_string());
    env.cleanup().await;
}
