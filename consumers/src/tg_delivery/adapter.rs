//! The HTTP client of the TG adapter (DESIGN §7).

use std::time::{Duration, Instant};

use broker_config::adapter_api::{
    ErrorResponse, IDEMPOTENCY_KEY, MESSAGES_PATH, SendRequest, SendResponse,
};
use chrono::{DateTime, Utc};
use opentelemetry::metrics::Histogram;
use secrecy::{ExposeSecret, SecretString};
use tracing::Instrument;

/// What the adapter said.
#[derive(Debug, Clone, PartialEq)]
pub enum SendResult {
    Sent {
        tg_message_id: i64,
        sent_at: DateTime<Utc>,
    },
    /// 429: try again no earlier than this.
    FloodWait { retry_after: Duration },
    /// 503 `session_needs_login`: the account is logged out. Nothing can
    /// go until ops log it in (the session alert tells them); waiting for
    /// that is not failing, so no attempt is spent.
    NeedsLogin,
    /// 4xx: will never succeed.
    Permanent { code: String },
    /// 5xx, timeouts, connection errors, an adapter refusing our token.
    Transient { reason: String },
}

#[derive(Clone)]
pub struct AdapterClient {
    http: reqwest::Client,
    timeout: Duration,
    base: String,
    token: SecretString,
    latency: Histogram<f64>,
}

impl AdapterClient {
    pub fn new(
        base: &str,
        token: SecretString,
        timeout: Duration,
        latency: Histogram<f64>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            http,
            timeout,
            base: base.trim_end_matches('/').to_owned(),
            token,
            latency,
        })
    }

    /// Sends `body` with `Idempotency-Key: <key>`: the message's id for its
    /// first part, `<message id>/<attachment id>` for each further file.
    /// The call may take `TG_ADAPTER_TIMEOUT` plus `extra` (a file's fetch).
    pub async fn send(&self, key: &str, body: &SendRequest, extra: Duration) -> SendResult {
        let span = platform::trace::span_if_enabled(|| {
            tracing::info_span!(
                "adapter.send",
                otel.name = "POST /v1/messages",
                otel.kind = "client",
                http.request.method = "POST",
                url.path = "/v1/messages",
                http.response.status_code = tracing::field::Empty,
            )
        });
        self.send_in(key, body, extra, &span)
            .instrument(span.clone())
            .await
    }

    async fn send_in(
        &self,
        key: &str,
        body: &SendRequest,
        extra: Duration,
        span: &tracing::Span,
    ) -> SendResult {
        let started = Instant::now();
        let mut request = self
            .http
            .post(format!("{}{MESSAGES_PATH}", self.base))
            .bearer_auth(self.token.expose_secret())
            .timeout(self.timeout + extra)
            .header(IDEMPOTENCY_KEY, key);
        for (name, value) in platform::trace::inject(span) {
            request = request.header(name, value);
        }
        let response = request.json(body).send().await;
        if let Ok(resp) = &response {
            span.record("http.response.status_code", resp.status().as_u16());
        }
        let result = match response {
            Err(e) => SendResult::Transient {
                reason: format!("adapter unreachable: {}", without_url(&e)),
            },
            Ok(resp) => classify(resp).await,
        };
        self.latency.record(started.elapsed().as_secs_f64(), &[]);
        result
    }
}

/// An operator's change of a sent message, as the adapter takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageChange {
    /// `PATCH /v1/messages/{chat}/{id}` with the new text.
    Edit {
        chat_id: i64,
        tg_message_id: i64,
        text: String,
    },
    /// `DELETE /v1/messages/{chat}/{id}`: for everyone.
    Delete { chat_id: i64, tg_message_id: i64 },
}

impl AdapterClient {
    /// Makes `change` in Telegram. Both are idempotent at the adapter (the
    /// same text again, a message already gone), so a retry needs no key.
    /// `Err` is the adapter's refusal, classified as a send's is.
    pub async fn change(&self, change: &MessageChange) -> Result<(), SendResult> {
        let (method, chat_id, tg_message_id) = match change {
            MessageChange::Edit {
                chat_id,
                tg_message_id,
                ..
            } => ("PATCH", chat_id, tg_message_id),
            MessageChange::Delete {
                chat_id,
                tg_message_id,
            } => ("DELETE", chat_id, tg_message_id),
        };
        let span = platform::trace::span_if_enabled(|| {
            tracing::info_span!(
                "adapter.change",
                otel.name = format!("{method} /v1/messages/{{chat}}/{{id}}"),
                otel.kind = "client",
                http.request.method = method,
                url.path = "/v1/messages/{chat}/{id}",
                http.response.status_code = tracing::field::Empty,
            )
        });
        let started = Instant::now();
        let url = format!("{}{MESSAGES_PATH}/{chat_id}/{tg_message_id}", self.base);
        let mut request = match change {
            MessageChange::Edit { text, .. } => self
                .http
                .patch(url)
                .json(&serde_json::json!({ "text": text })),
            MessageChange::Delete { .. } => self.http.delete(url),
        }
        .bearer_auth(self.token.expose_secret())
        .timeout(self.timeout);
        for (name, value) in platform::trace::inject(&span) {
            request = request.header(name, value);
        }
        let response = request.send().instrument(span.clone()).await;
        if let Ok(resp) = &response {
            span.record("http.response.status_code", resp.status().as_u16());
        }
        let result = match response {
            Err(e) => Err(SendResult::Transient {
                reason: format!("adapter unreachable: {}", without_url(&e)),
            }),
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(classify(resp).await),
        };
        self.latency.record(started.elapsed().as_secs_f64(), &[]);
        result
    }
}

fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connect() {
        "connection refused".to_owned()
    } else {
        "request failed".to_owned()
    }
}

async fn classify(resp: reqwest::Response) -> SendResult {
    let status = resp.status();
    let header_retry = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if status.is_success() {
        return match resp.json::<SendResponse>().await {
            Ok(b) => SendResult::Sent {
                tg_message_id: b.tg_message_id,
                sent_at: b.sent_at,
            },
            Err(_) => SendResult::Transient {
                reason: "adapter answered 200 with an unreadable body".into(),
            },
        };
    }
    let body: ErrorResponse = resp.json().await.unwrap_or_default();
    match status.as_u16() {
        429 => SendResult::FloodWait {
            retry_after: Duration::from_secs(body.retry_after.or(header_retry).unwrap_or(1).max(1)),
        },
        503 if body.code == "session_needs_login" => SendResult::NeedsLogin,
        // Our own token refused: a configuration problem that ops can fix,
        // so keep the message rather than failing it for good.
        401 => SendResult::Transient {
            reason: "adapter refused our token (check TG_ADAPTER_TOKEN)".into(),
        },
        408 => SendResult::Transient {
            reason: "adapter timeout".into(),
        },
        400..=499 => SendResult::Permanent {
            code: Some(body.code)
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| format!("http_{}", status.as_u16())),
        },
        _ => SendResult::Transient {
            reason: format!("adapter answered {}", status.as_u16()),
        },
    }
}
