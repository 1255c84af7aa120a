//! A three-node RabbitMQ cluster (`scripts/cluster`): a node is stopped while
//! replies and inbound messages flow, then started again. Nothing is lost,
//! nothing is sent twice, each chat keeps its order, and every process
//! reconnects to a surviving node by itself.

use std::{path::PathBuf, process::Command, time::Duration};

use fastprep_tests::{TestEnv, system::Started, wait_for};

fn cluster(args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster");
    let out = Command::new(script)
        .args(args)
        .output()
        .expect("run scripts/cluster");
    assert!(
        out.status.success(),
        "scripts/cluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn node(i: u8) -> String {
    let host = String::from_utf8(Command::new("hostname").arg("-s").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    format!("fastprep-{i}@{host}")
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .arg("-n")
        .arg(node(1))
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An inbound message as Telegram delivers it: an update the adapter could
/// not hand on (`503 broker_unavailable` while it reconnects) comes again.
async fn inject_until_taken(env: &TestEnv, adapter: &Started, chat: i64, id: i64, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = env
            .http
            .sandbox(
                &adapter.url,
                reqwest::Method::POST,
                "/sandbox/inbound",
                Some(serde_json::json!({
                    "chat_id": chat, "tg_message_id": id, "text": text,
                    "sender": {"id": chat, "username": format!("user{chat}"), "first_name": "Test"},
                })),
            )
            .await;
        if status.is_success() {
            return;
        }
        assert!(
            status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                && std::time::Instant::now() < deadline,
            "inject: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_node_stopped_mid_flow_loses_nothing_and_sends_nothing_twice() {
    cluster(&["start"]);
    // Node 1 is back up whatever an earlier run left.
    cluster(&["start-node", "1"]);
    let mut env = TestEnv::new().await;
    let vhost = format!("{}_cluster", env.vhost);
    rabbitmqctl(&["add_vhost", &vhost]);
    rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let nodes = cluster(&["urls"]).replace("%2f", &vhost);
    env.set_for_all("AMQP_URL", &nodes);
    let sys = env.start_system().await;

    const CHATS: i64 = 5;
    const PER_CHAT: usize = 12;
    let mut convs = Vec::new();
    for chat in 0..CHATS {
        env.inject(&sys.adapter, 740_000 + chat, 1, "hello").await;
        convs.push(env.conversation_for(&sys, 740_000 + chat).await);
    }
    let mut ids = Vec::new();
    for i in 0..PER_CHAT {
        if i == PER_CHAT / 3 {
            // Every process started on node 1 (the first listed): stop it.
            cluster(&["stop-node", "1"]);
        }
        if i == 2 * PER_CHAT / 3 {
            cluster(&["start-node", "1"]);
        }
        for (c, conv) in convs.iter().enumerate() {
            let msg = env
                .reply(
                    &sys,
                    conv,
                    &format!("chat {c} reply {i:02}"),
                    &format!("cl-{c}-{i}"),
                )
                .await;
            ids.push(msg["id"].as_str().unwrap().to_owned());
            // Inbound flows too, through the adapter's own connection.
            inject_until_taken(
                &env,
                &sys.adapter,
                740_000 + c as i64,
                10 + i as i64,
                &format!("in {i:02}"),
            )
            .await;
        }
    }
    for id in &ids {
        env.wait_status(id, "sent", Duration::from_secs(60)).await;
    }
    let sent = env.sent(&sys.adapter).await;
    let mut records: Vec<(i64, i64, String)> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["chat_id"].as_i64().unwrap(),
                m["tg_message_id"].as_i64().unwrap(),
                m["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    records.sort();
    for c in 0..CHATS {
        let texts: Vec<&str> = records
            .iter()
            .filter(|r| r.0 == 740_000 + c)
            .map(|r| r.2.as_str())
            .collect();
        let expected: Vec<String> = (0..PER_CHAT)
            .map(|i| format!("chat {c} reply {i:02}"))
            .collect();
        assert_eq!(texts, expected, "chat {c}: in order, each once");
    }
    // Every inbound message stored once.
    let pool = env.pool.clone();
    let stored = wait_for("every inbound message", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE direction = 'in'")
                .fetch_one(&pool)
                .await
                .ok()?;
            (n >= CHATS * (PER_CHAT as i64 + 1)).then_some(n)
        }
    })
    .await;
    assert_eq!(stored, CHATS * (PER_CHAT as i64 + 1));
    // The processes moved off the stopped node by themselves.
    let logs = crate::faults::strip_ansi(&env.logs());
    let moved = logs
        .lines()
        .filter(|l| {
            l.contains("connected to RabbitMQ") && (l.contains("node=2") || l.contains("node=3"))
        })
        .count();
    assert!(
        moved >= 3,
        "processes reconnected to a surviving node\n{logs}"
    );
    rabbitmqctl(&["delete_vhost", &vhost]);
    env.cleanup().await;
    // The nodes go, so nothing idles beside later benchmarks.
    cluster(&["down"]);
}
