//! A three-node RabbitMQ cluster (`scripts/cluster`): a node is stopped while
//! replies and inbound messages flow, then started again. Nothing is lost,
//! nothing is sent twice, each chat keeps its order, and every process
//! reconnects to a surviving node by itself.

use std::time::Duration;

use fastprep_tests::{TestEnv, cluster};

#[tokio::test]
async fn a_node_stopped_mid_flow_loses_nothing_and_sends_nothing_twice() {
    let mut env = TestEnv::new().await;
    let vhost = format!("{}_cluster", env.vhost);
    let nodes = cluster::start_with_vhost(&vhost);
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
            cluster::script(&["stop-node", "1"]);
        }
        if i == 2 * PER_CHAT / 3 {
            cluster::script(&["start-node", "1"]);
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
            env.inject_until_taken(
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
    let arrived = env.arrivals(&sys.adapter).await;
    for c in 0..CHATS {
        let expected: Vec<String> = (0..PER_CHAT)
            .map(|i| format!("chat {c} reply {i:02}"))
            .collect();
        assert_eq!(
            arrived.get(&(740_000 + c)),
            Some(&expected),
            "chat {c}: in order, each once"
        );
    }
    // Every inbound message stored once.
    let stored = env
        .wait_inbound_stored(CHATS * (PER_CHAT as i64 + 1), Duration::from_secs(60))
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
    env.cleanup().await;
    cluster::finish(&vhost);
}
