//! `POST /sandbox/inbound` publishes `tg.update.received.v1` with a broker
//! confirm (real RabbitMQ), and answers 503 when the broker is unreachable.

use std::time::Duration;

use broker_config::{Envelope, Event, events::types};
use futures::StreamExt;
use lapin::options::BasicAckOptions;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{App, TempDir, Vhost, status_json};

#[tokio::test]
async fn inbound_message_is_published_with_confirm() {
    let vhost = Vhost::create().await;
    // DESIGN §4 binds `inbound` with `tg.update.*`, which does not match the
    // four-word `tg.update.received.v1`; bind the event type itself so this
    // test checks the adapter, not the topology.
    let (conn, mut consumer) = vhost.listen(types::TG_UPDATE_RECEIVED).await;

    let dir = TempDir::new();
    let app = App::start(dir.path(), &[("AMQP_URL", &vhost.amqp_url)]).await;
    // A chat id no other test uses, so stray deliveries are recognisable.
    let chat_id = -(rand_chat_id());
    let (status, body) = status_json(
        app.post(
            "/sandbox/inbound",
            &json!({"chat_id": chat_id, "sender": {"id": 777, "username": "student", "first_name": "Ann"},
                    "text": "when is the exam?"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let event_id = body["event_id"].as_str().unwrap().to_owned();
    let tg_message_id = body["tg_message_id"].as_i64().unwrap();
    assert!(tg_message_id > 0);

    let envelope = loop {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("no delivery within 10s")
            .unwrap()
            .unwrap();
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        let envelope: Envelope = serde_json::from_slice(&delivery.data).unwrap();
        if envelope.id.to_string() == event_id {
            assert_eq!(
                delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.as_str()),
                Some(event_id.as_str())
            );
            break envelope;
        }
    };
    assert_eq!(envelope.event_type(), "tg.update.received.v1");
    let Event::TgUpdateReceived(update) = envelope.event else {
        panic!("unexpected event {:?}", envelope.event);
    };
    assert_eq!(update.chat.id, chat_id);
    assert_eq!(update.chat.kind, "private");
    assert_eq!(update.sender.id, 777);
    assert_eq!(update.sender.username.as_deref(), Some("student"));
    assert_eq!(update.text, "when is the exam?");
    assert_eq!(update.tg_message_id, tg_message_id);

    // An explicit message id is kept.
    let (status, body) = status_json(
        app.post(
            "/sandbox/inbound",
            &json!({"chat_id": chat_id, "sender": {"id": 777}, "text": "again", "tg_message_id": 5_000_000}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tg_message_id"], 5_000_000);
    app.stop().await;
    let _ = conn.close(200, "bye".into()).await;
    vhost.remove().await;
}

#[tokio::test]
async fn inbound_is_refused_when_the_broker_is_unreachable() {
    let dir = TempDir::new();
    let app = App::start(
        dir.path(),
        &[("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")],
    )
    .await;
    let (status, body) = status_json(
        app.post(
            "/sandbox/inbound",
            &json!({"chat_id": 99, "sender": {"id": 1}, "text": "lost?"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "broker_unavailable");
    // Sending does not need the broker.
    assert_eq!(
        app.send_text("no-broker", 99, "hi").await.status(),
        StatusCode::OK
    );
    app.stop().await;
}

fn rand_chat_id() -> i64 {
    i64::from(uuid::Uuid::new_v4().as_u128() as u32) + 1_000_000_000
}
