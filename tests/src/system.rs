//! Starting the real processes of the system inside a [`TestEnv`].

use std::{collections::HashMap, time::Duration};

use serde_json::Value;

use crate::{TestEnv, env, free_port, wait_for};

/// The body of `POST /sandbox/inbound`: a customer's message (or, with
/// `edit`, their edit of message `tg_message_id`) as Telegram delivers it.
pub fn sandbox_update(chat_id: i64, tg_message_id: i64, text: &str, edit: bool) -> Value {
    serde_json::json!({
        "chat_id": chat_id,
        "tg_message_id": tg_message_id,
        "text": text,
        "edit": edit,
        "sender": {"id": chat_id, "username": format!("user{chat_id}"), "first_name": "Test"},
    })
}

/// Handles of one started process.
#[derive(Debug, Clone)]
pub struct Started {
    pub idx: usize,
    pub url: String,
    pub metrics_url: String,
}

impl TestEnv {
    /// The sandbox TG adapter, with budgets high enough not to interfere.
    pub async fn start_adapter(&mut self, extra: &[(&str, String)]) -> Started {
        let port = free_port();
        let metrics = free_port();
        let data = self.dir.join("tg-adapter-data");
        let mut vars = vec![
            ("PORT", port.to_string()),
            ("METRICS_PORT", metrics.to_string()),
            ("TG_BACKEND", "sandbox".to_owned()),
            ("DATA_DIR", data.display().to_string()),
            ("TG_CHAT_RATE_PER_SEC", "1000".to_owned()),
            ("TG_CHAT_BURST", "1000".to_owned()),
            ("TG_GLOBAL_RATE_PER_SEC", "100000".to_owned()),
            ("TG_GLOBAL_BURST", "100000".to_owned()),
        ];
        vars.extend(extra.iter().cloned());
        let idx = self.spawn("fastprep-tg-adapter", &[], &vars);
        let url = format!("http://127.0.0.1:{port}");
        self.wait_http(&format!("{url}/health")).await;
        Started {
            idx,
            url,
            metrics_url: format!("http://127.0.0.1:{metrics}/metrics"),
        }
    }

    /// The API; waits until its health check passes.
    pub async fn start_api(&mut self, extra: &[(&str, String)]) -> Started {
        let port = free_port();
        let metrics = free_port();
        let mut vars = vec![
            ("PORT", port.to_string()),
            ("METRICS_PORT", metrics.to_string()),
            // Every test signs in from 127.0.0.1, and the throttling
            // counters live in the shared Redis: only the throttling suite,
            // with addresses and accounts of its own, sets real limits.
            ("LOGIN_ADDRESS_LIMIT", "1000000".to_owned()),
            ("LOGIN_ACCOUNT_LIMIT", "1000000".to_owned()),
            ("LOGIN_ACCOUNT_SLOW_AFTER", "1000000".to_owned()),
            // Attachments in the local store, one folder for every API
            // instance of the test (they serve each other's signed URLs),
            // and the origin its URLs start with, as a deployment sets it.
            ("DATA_DIR", self.dir.join("api-data").display().to_string()),
            ("ATTACHMENTS_URL_BASE", format!("http://127.0.0.1:{port}")),
        ];
        vars.extend(extra.iter().cloned());
        let idx = self.spawn("fastprep-api", &["serve"], &vars);
        let url = format!("http://127.0.0.1:{port}");
        // Healthy, not just answering: the realtime stream is bound then.
        self.wait_healthy(&format!("{url}/api/health")).await;
        Started {
            idx,
            url,
            metrics_url: format!("http://127.0.0.1:{metrics}/metrics"),
        }
    }

    /// `fastprep-consumers <process>` talking to `adapter`.
    pub async fn start_consumer(
        &mut self,
        process: &str,
        adapter: Option<&Started>,
        extra: &[(&str, String)],
    ) -> Started {
        let metrics = free_port();
        let mut vars = vec![
            ("METRICS_PORT", metrics.to_string()),
            ("RELAY_POLL_INTERVAL", "200ms".to_owned()),
            // Every send is marked `sending`, so suites can watch the whole
            // state machine; the lazy mark has its own test.
            ("TG_SENDING_AFTER", "0s".to_owned()),
        ];
        if let Some(a) = adapter {
            vars.push(("TG_ADAPTER_URL", a.url.clone()));
        }
        vars.extend(extra.iter().cloned());
        let idx = self.spawn("fastprep-consumers", &[process], &vars);
        let metrics_url = format!("http://127.0.0.1:{metrics}/metrics");
        self.wait_http(&format!("http://127.0.0.1:{metrics}/health"))
            .await;
        Started {
            idx,
            url: String::new(),
            metrics_url,
        }
    }

    /// The adapter, and two instances each of the API, relay, tg-delivery
    /// and inbound: every suite runs against several instances of what
    /// scales out, unless it needs one of each.
    pub async fn start_system(&mut self) -> System {
        self.start_system_with(&[]).await
    }

    /// As [`TestEnv::start_system`], with extra environment for the
    /// consumers (relay, tg-delivery, inbound).
    pub async fn start_system_with(&mut self, consumer_env: &[(&str, String)]) -> System {
        let mut sys = self.start_single_system_with(consumer_env).await;
        let api = self.start_api(&[]).await;
        let relay = self.start_consumer("relay", None, consumer_env).await;
        let delivery = self
            .start_consumer("tg-delivery", Some(&sys.adapter), consumer_env)
            .await;
        let inbound = self.start_consumer("inbound", None, consumer_env).await;
        sys.second = Some(Second {
            api,
            relay,
            delivery,
            inbound,
        });
        sys
    }

    /// One instance of each: for suites that count what one process did,
    /// or arm a fault in the one instance that must meet it.
    pub async fn start_single_system(&mut self) -> System {
        self.start_single_system_with(&[]).await
    }

    /// As [`TestEnv::start_single_system`], with extra environment for the
    /// consumers.
    pub async fn start_single_system_with(&mut self, consumer_env: &[(&str, String)]) -> System {
        let adapter = self.start_adapter(&[]).await;
        let api = self.start_api(&[]).await;
        let relay = self.start_consumer("relay", None, consumer_env).await;
        let delivery = self
            .start_consumer("tg-delivery", Some(&adapter), consumer_env)
            .await;
        let inbound = self.start_consumer("inbound", None, consumer_env).await;
        let token = self
            .http
            .login(&api.url, env::ADMIN_EMAIL, env::ADMIN_PASSWORD)
            .await;
        System {
            adapter,
            api,
            relay,
            delivery,
            inbound,
            second: None,
            token,
            turn: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Injects an inbound Telegram message at the sandbox.
    pub async fn inject(
        &self,
        adapter: &Started,
        chat_id: i64,
        tg_message_id: i64,
        text: &str,
    ) -> Value {
        self.sandbox_inbound(adapter, chat_id, tg_message_id, text, false)
            .await
    }

    /// Injects the customer's edit of message `tg_message_id` to `text`.
    pub async fn inject_edit(
        &self,
        adapter: &Started,
        chat_id: i64,
        tg_message_id: i64,
        text: &str,
    ) -> Value {
        self.sandbox_inbound(adapter, chat_id, tg_message_id, text, true)
            .await
    }

    async fn sandbox_inbound(
        &self,
        adapter: &Started,
        chat_id: i64,
        tg_message_id: i64,
        text: &str,
        edit: bool,
    ) -> Value {
        let (status, body) = self
            .try_sandbox_inbound(adapter, chat_id, tg_message_id, text, edit)
            .await;
        assert!(status.is_success(), "inject failed: {status} {body}");
        body
    }

    /// Injects an inbound message as Telegram delivers it: an update the
    /// adapter could not hand on (`503 broker_unavailable`, while it
    /// reconnects to the broker) comes again, for up to 30 s.
    pub async fn inject_until_taken(
        &self,
        adapter: &Started,
        chat_id: i64,
        tg_message_id: i64,
        text: &str,
    ) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self
                .try_sandbox_inbound(adapter, chat_id, tg_message_id, text, false)
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

    async fn try_sandbox_inbound(
        &self,
        adapter: &Started,
        chat_id: i64,
        tg_message_id: i64,
        text: &str,
        edit: bool,
    ) -> (reqwest::StatusCode, Value) {
        self.http
            .sandbox(
                &adapter.url,
                reqwest::Method::POST,
                "/sandbox/inbound",
                Some(sandbox_update(chat_id, tg_message_id, text, edit)),
            )
            .await
    }

    /// Scripts the sandbox's next sends (`/sandbox/faults`).
    pub async fn set_faults(&self, adapter: &Started, plan: Value) {
        self.sandbox_post(adapter, "/sandbox/faults", plan).await;
    }

    /// Sets the sandbox account's session (`/sandbox/session`).
    pub async fn set_session(&self, adapter: &Started, session: Value) {
        self.sandbox_post(adapter, "/sandbox/session", session)
            .await;
    }

    /// POSTs a control body to the sandbox; it must be taken.
    async fn sandbox_post(&self, adapter: &Started, path: &str, body: Value) {
        let (status, answer) = self
            .http
            .sandbox(&adapter.url, reqwest::Method::POST, path, Some(body))
            .await;
        assert!(status.is_success(), "{path}: {status} {answer}");
    }

    /// Clears the sandbox's log of sent messages (ids keep counting).
    pub async fn reset_sandbox(&self, adapter: &Started) {
        let (status, body) = self
            .http
            .sandbox(&adapter.url, reqwest::Method::POST, "/sandbox/reset", None)
            .await;
        assert!(status.is_success(), "sandbox reset: {status} {body}");
    }

    /// What the sandbox has sent.
    pub async fn sent(&self, adapter: &Started) -> Value {
        let (status, body) = self
            .http
            .sandbox(&adapter.url, reqwest::Method::GET, "/sandbox/sent", None)
            .await;
        assert!(status.is_success(), "sandbox sent: {status} {body}");
        body
    }

    /// What the sandbox has sent, per chat in the order Telegram got it
    /// (by `tg_message_id`); panics on a text sent twice to one chat.
    pub async fn arrivals(&self, adapter: &Started) -> HashMap<i64, Vec<String>> {
        let sent = self.sent(adapter).await;
        let mut records: Vec<(i64, i64, String)> = sent["messages"]
            .as_array()
            .expect("sent messages")
            .iter()
            .map(|m| {
                (
                    m["chat_id"].as_i64().unwrap_or_default(),
                    m["tg_message_id"].as_i64().unwrap_or_default(),
                    m["text"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        records.sort();
        let mut by_chat: HashMap<i64, Vec<String>> = HashMap::new();
        for (chat, _, text) in records {
            let seen = by_chat.entry(chat).or_default();
            assert!(!seen.contains(&text), "{text:?} was sent twice");
            seen.push(text);
        }
        by_chat
    }

    /// Waits for a conversation for `chat_id` to exist and returns its id.
    pub async fn conversation_for(&self, sys: &System, chat_id: i64) -> String {
        let http = self.http.clone();
        let url = format!("{}/api/conversations", sys.api.url);
        let token = sys.token.clone();
        wait_for(
            "the conversation to appear",
            Duration::from_secs(20),
            || {
                let http = http.clone();
                let url = url.clone();
                let token = token.clone();
                async move {
                    let (_, body) = http
                        .call(reqwest::Method::GET, &url, Some(&token), None)
                        .await;
                    body["items"].as_array()?.iter().find_map(|c| {
                        (c["tg_chat_id"].as_i64() == Some(chat_id))
                            .then(|| c["id"].as_str().unwrap_or_default().to_owned())
                    })
                }
            },
        )
        .await
    }

    /// Rows of `messages` as the API shows them, newest first.
    pub async fn messages(&self, sys: &System, conversation_id: &str) -> Vec<Value> {
        let (status, body) = self
            .http
            .call(
                reqwest::Method::GET,
                &format!(
                    "{}/api/conversations/{conversation_id}/messages",
                    sys.next_api().url
                ),
                Some(&sys.token),
                None,
            )
            .await;
        assert!(status.is_success(), "messages: {status} {body}");
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// Posts a reply; returns the message as the API answered.
    pub async fn reply(
        &self,
        sys: &System,
        conversation_id: &str,
        text: &str,
        client_msg_id: &str,
    ) -> Value {
        let (status, body) = self
            .http
            .call(
                reqwest::Method::POST,
                &format!(
                    "{}/api/conversations/{conversation_id}/messages",
                    sys.next_api().url
                ),
                Some(&sys.token),
                Some(serde_json::json!({"text": text, "client_msg_id": client_msg_id})),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "reply: {body}");
        body
    }

    /// A message's row, straight from the database.
    pub async fn message_row(&self, id: &str) -> (String, Option<i64>, i32, Option<String>) {
        sqlx::query_as(
            "SELECT status, tg_message_id, attempts, error FROM messages WHERE id = $1::uuid",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .expect("message row")
    }

    /// Waits until a message reaches `status`.
    pub async fn wait_status(
        &self,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> (String, Option<i64>, i32, Option<String>) {
        let what = format!("message {id} to become {status}");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let row = self.message_row(id).await;
            if row.0 == status {
                return row;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {what}; last {row:?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The running system of one test.
pub struct System {
    pub adapter: Started,
    pub api: Started,
    pub relay: Started,
    pub delivery: Started,
    pub inbound: Started,
    /// The second instances, when the system runs two of each.
    pub second: Option<Second>,
    pub token: String,
    /// Which API instance takes the next reply.
    turn: std::sync::atomic::AtomicUsize,
}

/// Second instances of the processes that scale out.
pub struct Second {
    pub api: Started,
    pub relay: Started,
    pub delivery: Started,
    pub inbound: Started,
}

impl System {
    /// The API instances, in turn: replies are posted to each in turn, so a
    /// chat's replies come through both.
    pub fn next_api(&self) -> &Started {
        let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &self.second {
            Some(second) if turn % 2 == 1 => &second.api,
            _ => &self.api,
        }
    }
}

impl TestEnv {
    /// Waits until at least `n` inbound messages are stored; returns how many.
    pub async fn wait_inbound_stored(&self, n: i64, timeout: Duration) -> i64 {
        self.wait_count(
            "the inbound messages to be stored",
            "SELECT count(*) FROM messages WHERE direction = 'in'",
            timeout,
            |stored| stored >= n,
        )
        .await
    }

    /// Waits until no outbox row is pending.
    pub async fn wait_outbox_drained(&self, timeout: Duration) {
        self.wait_count(
            "the outbox to drain",
            "SELECT count(*) FROM outbox WHERE status = 'pending'",
            timeout,
            |pending| pending == 0,
        )
        .await;
    }

    /// Waits until the broker counts `n` consumers on `queue` (its
    /// management statistics lag by up to 5 s).
    pub async fn wait_consumers(&self, queue: &str, n: i64) {
        wait_for(
            &format!("{n} consumers on {queue}"),
            Duration::from_secs(20),
            || async move { (self.queue(queue).await?["consumers"].as_i64()? == n).then_some(()) },
        )
        .await;
    }

    /// Waits until the count `sql` returns passes `done`; returns it then.
    pub async fn wait_count(
        &self,
        what: &str,
        sql: &'static str,
        timeout: Duration,
        done: impl Fn(i64) -> bool,
    ) -> i64 {
        let pool = self.pool.clone();
        let done = &done;
        wait_for(what, timeout, || {
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.ok()?;
                done(n).then_some(n)
            }
        })
        .await
    }
}

impl TestEnv {
    /// A TCP proxy of the test's own in front of the shared RabbitMQ.
    pub async fn broker_proxy(&self) -> crate::TcpProxy {
        let target = format!("{}:{}", self.services.amqp_host, self.services.amqp_port);
        crate::TcpProxy::start(target.parse().expect("broker address")).await
    }
}
