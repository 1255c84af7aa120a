//! The RabbitMQ topology as code (DESIGN §4): declared idempotently at
//! start-up by every process and exported as `definitions.json`.

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use serde_json::{Value, json};

/// All events go through this topic exchange; the routing key is the event type.
pub const EVENTS_EXCHANGE: &str = "fastprep.events";
/// Dead letters of every work queue; routed by the queue's name.
pub const DLX: &str = "fastprep.dlx";
/// Deliveries of one message before a quorum queue dead-letters it even if
/// the consumer never got to reject it (crash loops, poison that kills workers).
pub const DELIVERY_LIMIT: i64 = 10;
/// Retry tiers shared by every work queue.
pub const RETRY_TIERS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(300),
];

/// A work queue and the routing keys it consumes from `fastprep.events`.
#[derive(Debug, Clone, Copy)]
pub struct WorkQueue {
    pub name: &'static str,
    pub bindings: &'static [&'static str],
    /// Whether this queue also receives what the other work queues dead-letter.
    pub receives_dead_letters: bool,
    /// One consumer at a time takes from the queue, in queue order; the
    /// others stand by and take over when its connection goes
    /// (`x-single-active-consumer`).
    pub single_active: bool,
}

pub const TG_DELIVERY: WorkQueue = WorkQueue {
    name: "tg-delivery",
    // A reply, and an operator's edit or deletion of a sent one (ADR 0020).
    bindings: &[
        "message.outgoing.*",
        "message.outgoing.edit.*",
        "message.outgoing.delete.*",
    ],
    receives_dead_letters: false,
    single_active: false,
};
pub const AUTHZ_FANOUT: WorkQueue = WorkQueue {
    name: "authz-fanout",
    bindings: &["authz.#"],
    receives_dead_letters: false,
    single_active: false,
};
pub const ALERTS: WorkQueue = WorkQueue {
    name: "alerts",
    // Session keys have four words (`tg.session.changed.v1`).
    bindings: &["message.delivery_failed.*", "tg.session.#"],
    receives_dead_letters: true,
    single_active: false,
};
pub const INBOUND: WorkQueue = WorkQueue {
    name: "inbound",
    bindings: &["tg.update.#"],
    receives_dead_letters: false,
    // Each chat's updates are stored in the order Telegram gave them,
    // whichever instance is up (ADR 0012).
    single_active: true,
};

pub const WORK_QUEUES: [WorkQueue; 4] = [TG_DELIVERY, AUTHZ_FANOUT, ALERTS, INBOUND];

/// Whether the work queue `name` has a single active consumer.
pub fn single_active(name: &str) -> bool {
    WORK_QUEUES
        .iter()
        .any(|q| q.name == name && q.single_active)
}

/// AMQP header carrying an event's position in the realtime stream: drawn
/// by the relay from `event_stream_seq` in publish order, so it rises along
/// every queue the relay feeds.
pub const STREAM_ID_HEADER: &str = "x-stream-id";

/// Routing keys of a per-instance realtime queue.
pub const REALTIME_BINDINGS: [&str; 2] = ["message.#", "conversation.#"];

/// Event types that no queue takes, each declared here on purpose (none
/// today): every other type must reach a work queue or the realtime
/// queues (`consumers`' contract test checks it).
pub const UNROUTED: [&str; 0] = [];

/// Whether the topic `pattern` (`*` one word, `#` zero or more) matches
/// `routing_key`, as RabbitMQ's topic exchange decides it.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    fn matches(pattern: &[&str], key: &[&str]) -> bool {
        match (pattern.first(), key.first()) {
            (None, None) => true,
            (Some(&"#"), _) => {
                matches(&pattern[1..], key) || (!key.is_empty() && matches(pattern, &key[1..]))
            }
            (Some(&"*"), Some(_)) => matches(&pattern[1..], &key[1..]),
            (Some(p), Some(k)) => p == k && matches(&pattern[1..], &key[1..]),
            _ => false,
        }
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    matches(&pattern, &key)
}

/// Name of a work queue's retry tier, e.g. `tg-delivery.retry.10s`.
pub fn retry_queue_name(queue: &str, delay: Duration) -> String {
    format!("{queue}.retry.{}", tier_label(delay))
}

/// Name of a work queue's dead-letter queue.
pub fn dlq_name(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// Name of an API instance's realtime queue.
pub fn realtime_queue_name(instance_id: &str) -> String {
    format!("realtime.{instance_id}")
}

fn tier_label(delay: Duration) -> String {
    let secs = delay.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// One queue declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub name: String,
    pub arguments: serde_json::Map<String, Value>,
}

/// One exchange declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeSpec {
    pub name: &'static str,
    pub kind: &'static str,
}

/// One binding of a queue to an exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingSpec {
    pub exchange: &'static str,
    pub queue: String,
    pub routing_key: String,
}

/// The whole durable topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub exchanges: Vec<ExchangeSpec>,
    pub queues: Vec<QueueSpec>,
    pub bindings: Vec<BindingSpec>,
}

fn quorum_args(pairs: &[(&str, Value)]) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    map.insert("x-queue-type".into(), json!("quorum"));
    for (k, v) in pairs {
        map.insert((*k).to_owned(), v.clone());
    }
    map
}

/// The topology of DESIGN §4.
pub fn topology() -> Topology {
    let mut queues = Vec::new();
    let mut bindings = Vec::new();
    for q in WORK_QUEUES {
        let mut arguments = quorum_args(&[
            ("x-dead-letter-exchange", json!(DLX)),
            ("x-dead-letter-routing-key", json!(q.name)),
            ("x-dead-letter-strategy", json!("at-least-once")),
            ("x-overflow", json!("reject-publish")),
            ("x-delivery-limit", json!(DELIVERY_LIMIT)),
        ]);
        if q.single_active {
            arguments.insert("x-single-active-consumer".into(), json!(true));
        }
        queues.push(QueueSpec {
            name: q.name.to_owned(),
            arguments,
        });
        for key in q.bindings {
            bindings.push(BindingSpec {
                exchange: EVENTS_EXCHANGE,
                queue: q.name.to_owned(),
                routing_key: (*key).to_owned(),
            });
        }
        for delay in RETRY_TIERS {
            let ttl_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            queues.push(QueueSpec {
                name: retry_queue_name(q.name, delay),
                arguments: quorum_args(&[
                    ("x-message-ttl", json!(ttl_ms)),
                    ("x-dead-letter-exchange", json!("")),
                    ("x-dead-letter-routing-key", json!(q.name)),
                    ("x-dead-letter-strategy", json!("at-least-once")),
                    ("x-overflow", json!("reject-publish")),
                ]),
            });
        }
        let dlq = dlq_name(q.name);
        queues.push(QueueSpec {
            name: dlq.clone(),
            arguments: quorum_args(&[]),
        });
        bindings.push(BindingSpec {
            exchange: DLX,
            queue: dlq,
            routing_key: q.name.to_owned(),
        });
    }
    for alerting in WORK_QUEUES.iter().filter(|q| q.receives_dead_letters) {
        for source in WORK_QUEUES.iter().filter(|q| q.name != alerting.name) {
            bindings.push(BindingSpec {
                exchange: DLX,
                queue: alerting.name.to_owned(),
                routing_key: source.name.to_owned(),
            });
        }
    }
    Topology {
        exchanges: vec![
            ExchangeSpec {
                name: EVENTS_EXCHANGE,
                kind: "topic",
            },
            ExchangeSpec {
                name: DLX,
                kind: "direct",
            },
        ],
        queues,
        bindings,
    }
}

/// Renders the topology in RabbitMQ's definitions format (importable with
/// `rabbitmqctl import_definitions` or the management UI).
pub fn definitions_json(t: &Topology) -> String {
    let vhost = "/";
    let doc = json!({
        "exchanges": t.exchanges.iter().map(|e| json!({
            "name": e.name, "vhost": vhost, "type": e.kind, "durable": true,
            "auto_delete": false, "internal": false, "arguments": {}
        })).collect::<Vec<_>>(),
        "queues": t.queues.iter().map(|q| json!({
            "name": q.name, "vhost": vhost, "durable": true, "auto_delete": false,
            "arguments": q.arguments
        })).collect::<Vec<_>>(),
        "bindings": t.bindings.iter().map(|b| json!({
            "source": b.exchange, "vhost": vhost, "destination": b.queue,
            "destination_type": "queue", "routing_key": b.routing_key, "arguments": {}
        })).collect::<Vec<_>>(),
    });
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

/// One way the live broker differs from the topology.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// `missing`, `different` or `unexpected`.
    pub kind: &'static str,
    /// `exchange fastprep.events`, `queue tg-delivery`, `binding …`.
    pub object: String,
    pub detail: String,
}

/// Compares `live`, the broker's definitions of one vhost (the management
/// API's `GET /api/definitions/{vhost}`), with the topology `t`: every
/// exchange, queue (with its arguments) and binding missing or different,
/// and every durable queue, exchange or binding of ours the topology does
/// not have. The API instances' realtime queues come and go and are not
/// compared.
pub fn diff(live: &Value, t: &Topology) -> Vec<Difference> {
    let mut out = Vec::new();
    let items = |key: &str| -> Vec<Value> {
        live.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let live_exchanges = items("exchanges");
    for e in &t.exchanges {
        let object = format!("exchange {}", e.name);
        match live_exchanges.iter().find(|x| text(x, "name") == e.name) {
            None => out.push(Difference {
                kind: "missing",
                object,
                detail: format!("a durable {} exchange", e.kind),
            }),
            Some(x) => {
                let durable = x.get("durable").and_then(Value::as_bool).unwrap_or(false);
                if text(x, "type") != e.kind || !durable {
                    out.push(Difference {
                        kind: "different",
                        object,
                        detail: format!(
                            "live: type {}, durable {durable}; expected: type {}, durable true",
                            text(x, "type"),
                            e.kind
                        ),
                    });
                }
            }
        }
    }
    for x in &live_exchanges {
        let name = text(x, "name");
        if name.starts_with("fastprep.") && !t.exchanges.iter().any(|e| e.name == name) {
            out.push(Difference {
                kind: "unexpected",
                object: format!("exchange {name}"),
                detail: "not in the topology".into(),
            });
        }
    }
    let live_queues = items("queues");
    for q in &t.queues {
        let object = format!("queue {}", q.name);
        match live_queues.iter().find(|x| text(x, "name") == q.name) {
            None => out.push(Difference {
                kind: "missing",
                object,
                detail: "declared by the topology, absent on the broker".into(),
            }),
            Some(x) => {
                let args = x
                    .get("arguments")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Default::default()));
                let expected = Value::Object(q.arguments.clone());
                if args != expected {
                    out.push(Difference {
                        kind: "different",
                        object,
                        detail: format!("live arguments {args}; expected {expected}"),
                    });
                }
            }
        }
    }
    for x in &live_queues {
        let name = text(x, "name");
        if !name.starts_with("realtime.") && !t.queues.iter().any(|q| q.name == name) {
            out.push(Difference {
                kind: "unexpected",
                object: format!("queue {name}"),
                detail: "not in the topology".into(),
            });
        }
    }
    let live_bindings = items("bindings");
    let key_of = |b: &Value| {
        (
            text(b, "source"),
            text(b, "destination"),
            text(b, "routing_key"),
        )
    };
    for b in &t.bindings {
        let want = (
            b.exchange.to_owned(),
            b.queue.clone(),
            b.routing_key.clone(),
        );
        if !live_bindings.iter().any(|x| key_of(x) == want) {
            out.push(Difference {
                kind: "missing",
                object: format!("binding {} -> {} ({})", b.exchange, b.queue, b.routing_key),
                detail: "declared by the topology, absent on the broker".into(),
            });
        }
    }
    for x in &live_bindings {
        let (source, destination, key) = key_of(x);
        let ours = t.exchanges.iter().any(|e| e.name == source);
        if ours
            && !destination.starts_with("realtime.")
            && !t
                .bindings
                .iter()
                .any(|b| b.exchange == source && b.queue == destination && b.routing_key == key)
        {
            out.push(Difference {
                kind: "unexpected",
                object: format!("binding {source} -> {destination} ({key})"),
                detail: "not in the topology".into(),
            });
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum DeclareError {
    #[error("declaring exchange {name}: {source}")]
    Exchange { name: String, source: lapin::Error },
    #[error(
        "declaring queue {name} (a queue with other arguments may already exist: see the runbook's \"Topology changes\"): {source}"
    )]
    Queue { name: String, source: lapin::Error },
    #[error("binding {queue} to {exchange} with {key}: {source}")]
    Binding {
        queue: String,
        exchange: String,
        key: String,
        source: lapin::Error,
    },
}

pub(crate) fn field_table(args: &serde_json::Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in args {
        let value = match v {
            Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
            Value::Number(n) => AMQPValue::LongLongInt(n.as_i64().unwrap_or_default()),
            Value::Bool(b) => AMQPValue::Boolean(*b),
            _ => continue,
        };
        table.insert(ShortString::from(k.as_str()), value);
    }
    table
}

/// Declares the whole topology; idempotent. A queue that exists with other
/// arguments fails the declaration with an error naming it.
pub async fn declare(channel: &Channel, t: &Topology) -> Result<(), DeclareError> {
    for e in &t.exchanges {
        let kind = match e.kind {
            "topic" => ExchangeKind::Topic,
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            other => ExchangeKind::Custom(other.to_owned()),
        };
        channel
            .exchange_declare(
                e.name.into(),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|source| DeclareError::Exchange {
                name: e.name.to_owned(),
                source,
            })?;
    }
    for q in &t.queues {
        channel
            .queue_declare(
                q.name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                field_table(&q.arguments),
            )
            .await
            .map_err(|source| DeclareError::Queue {
                name: q.name.clone(),
                source,
            })?;
    }
    for b in &t.bindings {
        channel
            .queue_bind(
                b.queue.as_str().into(),
                b.exchange.into(),
                b.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| DeclareError::Binding {
                queue: b.queue.clone(),
                exchange: b.exchange.to_owned(),
                key: b.routing_key.clone(),
                source,
            })?;
    }
    Ok(())
}

/// Declares an API instance's exclusive, auto-deleted realtime queue and binds
/// it, declaring the exchanges it binds to first (and nothing else: the work
/// queues are the relay's and the consumers' to declare).
pub async fn declare_realtime_queue(
    channel: &Channel,
    instance_id: &str,
) -> Result<String, DeclareError> {
    let exchanges = Topology {
        exchanges: topology().exchanges,
        queues: Vec::new(),
        bindings: Vec::new(),
    };
    declare(channel, &exchanges).await?;
    let name = realtime_queue_name(instance_id);
    channel
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|source| DeclareError::Queue {
            name: name.clone(),
            source,
        })?;
    for key in REALTIME_BINDINGS {
        channel
            .queue_bind(
                name.as_str().into(),
                EVENTS_EXCHANGE.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| DeclareError::Binding {
                queue: name.clone(),
                exchange: EVENTS_EXCHANGE.to_owned(),
                key: key.to_owned(),
                source,
            })?;
    }
    Ok(name)
}

#[cfg(test)]
mod tests {

    #[test]
    fn topic_patterns_match_as_rabbitmq_does() {
        for (pattern, key, expected) in [
            ("message.#", "message.outgoing.v1", true),
            ("message.#", "message", true),
            ("message.outgoing.*", "message.outgoing.v1", true),
            ("message.outgoing.*", "message.outgoing", false),
            ("message.outgoing.*", "message.outgoing.v1.x", false),
            ("tg.session.#", "tg.update.received.v1", false),
            ("#", "anything.at.all", true),
            ("*.status.*", "message.status.v1", true),
            ("authz.#", "authzx.role", false),
        ] {
            assert_eq!(topic_matches(pattern, key), expected, "{pattern} ~ {key}");
        }
    }

    use super::*;

    #[test]
    fn alerts_never_receives_its_own_dead_letters() {
        let t = topology();
        let into_alerts: Vec<_> = t
            .bindings
            .iter()
            .filter(|b| b.exchange == DLX && b.queue == "alerts")
            .map(|b| b.routing_key.as_str())
            .collect();
        assert!(!into_alerts.contains(&"alerts"));
        assert!(into_alerts.contains(&"tg-delivery"));
    }

    #[test]
    fn every_work_queue_has_tiers_dlq_and_a_delivery_limit() {
        let t = topology();
        for q in WORK_QUEUES {
            let spec = t.queues.iter().find(|s| s.name == q.name).unwrap();
            assert_eq!(spec.arguments["x-queue-type"], "quorum");
            assert_eq!(spec.arguments["x-delivery-limit"], DELIVERY_LIMIT);
            assert_eq!(spec.arguments["x-dead-letter-exchange"], DLX);
            assert!(t.queues.iter().any(|s| s.name == dlq_name(q.name)));
            for d in RETRY_TIERS {
                let tier = t
                    .queues
                    .iter()
                    .find(|s| s.name == retry_queue_name(q.name, d))
                    .unwrap();
                assert_eq!(tier.arguments["x-dead-letter-routing-key"], q.name);
            }
        }
        assert_eq!(
            retry_queue_name("tg-delivery", Duration::from_secs(60)),
            "tg-delivery.retry.1m"
        );
    }

    #[test]
    fn diff_names_every_difference_and_none_when_equal() {
        let t = topology();
        let live: Value = serde_json::from_str(&definitions_json(&t)).unwrap();
        assert_eq!(diff(&live, &t), vec![]);
        let mut broken = live.clone();
        let queues = broken["queues"].as_array_mut().unwrap();
        queues.retain(|q| q["name"] != "inbound.dlq");
        let tg = queues
            .iter_mut()
            .find(|q| q["name"] == "tg-delivery")
            .unwrap();
        tg["arguments"]["x-delivery-limit"] = json!(3);
        queues.push(json!({"name": "stray", "arguments": {}}));
        queues.push(json!({"name": "realtime.abc", "arguments": {}}));
        broken["bindings"]
            .as_array_mut()
            .unwrap()
            .retain(|b| b["routing_key"] != "authz.#");
        broken["exchanges"]
            .as_array_mut()
            .unwrap()
            .retain(|e| e["name"] != DLX);
        let found: Vec<(&str, String)> = diff(&broken, &t)
            .into_iter()
            .map(|d| (d.kind, d.object))
            .collect();
        assert_eq!(
            found,
            vec![
                ("missing", "exchange fastprep.dlx".to_owned()),
                ("different", "queue tg-delivery".to_owned()),
                ("missing", "queue inbound.dlq".to_owned()),
                ("unexpected", "queue stray".to_owned()),
                (
                    "missing",
                    "binding fastprep.events -> authz-fanout (authz.#)".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn committed_definitions_json_is_current() {
        let committed = include_str!("../definitions.json");
        let generated = definitions_json(&topology());
        assert!(
            committed == generated,
            "broker-config/definitions.json is stale: run `cargo run -p broker-config --bin fastprep-broker -- definitions > broker-config/definitions.json`"
        );
    }
}
