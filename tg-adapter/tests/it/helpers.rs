//! Starting and stopping the adapter for a test, and small HTTP helpers.

use std::path::{Path, PathBuf};

use platform::{Env, Telemetry};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tg_adapter::Config;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-token-0123456789";
pub const SANDBOX_TOKEN: &str = "test-sandbox-token-0123456789";

/// The bearer a path needs: the sandbox's own for its control routes.
pub fn token_for(path: &str) -> &'static str {
    if path.starts_with("/sandbox") {
        SANDBOX_TOKEN
    } else {
        TOKEN
    }
}
/// The management API of the local RabbitMQ (scripts/services enables it).
const RABBIT_MGMT: &str = "http://127.0.0.1:15672";

/// A RabbitMQ vhost of one test's own (`fastprep_test_adapter_…`): what its
/// adapter publishes never reaches another run's queues. `App::stop` (or the
/// test) removes it; `scripts/test` sweeps any that a failed test leaves.
pub struct Vhost {
    pub name: String,
    pub amqp_url: String,
}

impl Vhost {
    /// A connection to this vhost with the topology declared, and a consumer
    /// of a private queue bound to `fastprep.events` with `routing_key`.
    pub async fn listen(&self, routing_key: &str) -> (lapin::Connection, lapin::Consumer) {
        use lapin::{
            options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
            types::FieldTable,
        };
        let conn = broker_config::connection::connect(&self.amqp_url, "tg-adapter-test")
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        broker_config::topology::declare(&channel, &broker_config::topology::topology())
            .await
            .unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.name().clone(),
                broker_config::topology::EVENTS_EXCHANGE.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "tg-adapter-test".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        (conn, consumer)
    }

    pub async fn create() -> Self {
        let name = format!("fastprep_test_adapter_{}", uuid::Uuid::new_v4().simple());
        let http = reqwest::Client::new();
        http.put(format!("{RABBIT_MGMT}/api/vhosts/{name}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("create vhost (is the RabbitMQ management plugin enabled?)");
        http.put(format!("{RABBIT_MGMT}/api/permissions/{name}/guest"))
            .basic_auth("guest", Some("guest"))
            .json(&json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("grant vhost permissions");
        Self {
            amqp_url: format!("amqp://guest:guest@127.0.0.1:5672/{name}"),
            name,
        }
    }

    pub async fn remove(self) {
        let _ = reqwest::Client::new()
            .delete(format!("{RABBIT_MGMT}/api/vhosts/{}", self.name))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tg-adapter-it-{}", uuid::Uuid::new_v4()));
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running adapter.
pub struct App {
    pub base: String,
    pub client: reqwest::Client,
    pub telemetry: Telemetry,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
    /// The vhost made for this app (none when the test chose `AMQP_URL`).
    vhost: Option<Vhost>,
}

impl App {
    /// Starts the adapter on `data_dir` with the default test env plus `extra`.
    pub async fn start(data_dir: &Path, extra: &[(&str, &str)]) -> Self {
        let data_dir = data_dir.to_string_lossy().into_owned();
        let vhost = if extra.iter().any(|(k, _)| *k == "AMQP_URL") {
            None
        } else {
            Some(Vhost::create().await)
        };
        let amqp_url = vhost
            .as_ref()
            .map(|v| v.amqp_url.clone())
            .unwrap_or_default();
        let mut pairs: Vec<(String, String)> = [
            ("TG_ADAPTER_TOKEN", TOKEN),
            ("SANDBOX_TOKEN", SANDBOX_TOKEN),
            ("FASTPREP_ENV", "development"),
            ("TG_BACKEND", "sandbox"),
            ("DATA_DIR", data_dir.as_str()),
            ("AMQP_URL", amqp_url.as_str()),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in extra {
            pairs.retain(|(name, _)| name != k);
            pairs.push(((*k).to_owned(), (*v).to_owned()));
        }
        let config = Config::from_env(&Env::from_pairs(pairs)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let telemetry = Telemetry::metrics_only().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(tg_adapter::run(
            config,
            listener,
            telemetry.clone(),
            shutdown.clone(),
        ));
        Self {
            base,
            client: reqwest::Client::new(),
            telemetry,
            shutdown,
            handle,
            vhost,
        }
    }

    /// Stops the adapter and waits until it has closed its store.
    pub async fn stop(self) {
        drop(self.client);
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
        if let Some(vhost) = self.vhost {
            vhost.remove().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /v1/messages` with the token and an optional key.
    pub async fn send(&self, key: Option<&str>, body: &Value) -> Response {
        let mut request = self
            .client
            .post(self.url("/v1/messages"))
            .bearer_auth(TOKEN)
            .json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.unwrap()
    }

    pub async fn send_text(&self, key: &str, chat_id: i64, text: &str) -> Response {
        self.send(
            Some(key),
            &json!({"chat_id": chat_id, "text": text, "attachments": []}),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(token_for(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token_for(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Scripts sandbox failures.
    pub async fn faults(&self, body: Value) {
        let response = self.post("/sandbox/faults", &body).await;
        assert_eq!(response.status(), StatusCode::OK, "{body}");
    }

    /// `GET /sandbox/sent`.
    pub async fn sent(&self) -> Value {
        self.get("/sandbox/sent").await
    }
}

/// Status and JSON body of a response.
pub async fn status_json(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}
