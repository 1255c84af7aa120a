//! Slack messages: an alert or a summary rendered with Block Kit, posted to
//! the incoming webhook. Only kinds, counts, error codes and links go out:
//! never a customer's message text or name.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::kind::Kind;

/// Where the links of a message point.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// `PUBLIC_URL`: the web app; conversations link to `/conversations/<id>`.
    pub public_url: Option<String>,
    /// `RUNBOOK_URL`: the runbook's address; sections link to `#<anchor>`.
    pub runbook_url: Option<String>,
}

fn human(ms: i64) -> String {
    let secs = ms / 1000;
    match secs {
        s if s % 3600 == 0 && s >= 3600 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The Slack body of a queued message (`alert` or `summary`).
pub fn render(kind: Kind, message: &Value, links: &Links) -> Value {
    let count = message["count"].as_i64().unwrap_or(0);
    let summary = message["type"] == "summary";
    let what = kind.describe(count);
    let headline = if summary {
        format!(
            "{} more while alerts were paused ({}): {what}",
            count,
            human(message["cooldown_ms"].as_i64().unwrap_or(0))
        )
    } else {
        format!(
            "{what} within {}",
            human(message["window_ms"].as_i64().unwrap_or(0))
        )
    };
    let codes: Vec<String> = message["codes"]
        .as_array()
        .map(|codes| {
            codes
                .iter()
                .map(|c| format!("`{}` × {}", c[0].as_str().unwrap_or("?"), c[1]))
                .collect()
        })
        .unwrap_or_default();
    let conversations: Vec<String> = message["conversations"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .enumerate()
                .map(|(i, id)| match &links.public_url {
                    Some(base) => format!(
                        "<{}/conversations/{id}|conversation {}>",
                        base.trim_end_matches('/'),
                        i + 1
                    ),
                    None => format!("conversation `{id}`"),
                })
                .collect()
        })
        .unwrap_or_default();
    let runbook = match &links.runbook_url {
        Some(url) => format!(
            "<{url}#{}|Runbook: {}>",
            kind.runbook_anchor(),
            kind.title()
        ),
        None => format!(
            "Runbook: docs/RUNBOOK.md, section \"{}\"",
            kind.runbook_section()
        ),
    };
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Kind*\n{}", kind.label())}),
        json!({"type": "mrkdwn", "text": format!("*Count*\n{count}")}),
    ];
    if !codes.is_empty() {
        fields
            .push(json!({"type": "mrkdwn", "text": format!("*Top errors*\n{}", codes.join("\n"))}));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": format!(
            "{} {}", if summary { "Summary:" } else { "Alert:" }, kind.title()
        )}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": headline}, "fields": fields}),
    ];
    if !conversations.is_empty() {
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": format!(
                "*Affected*: {}", conversations.join(", ")
            )}}),
        );
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": if summary {
            format!("{runbook}. Alerts of this kind are on again.")
        } else {
            format!("{runbook}. Further alerts of this kind are paused; a summary follows.")
        }}
    ]}));
    json!({
        "text": format!("FastPrep {}: {headline}", if summary { "summary" } else { "alert" }),
        "blocks": blocks,
    })
}

/// Why a post did not land.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// Slack asked us to wait (429 with `Retry-After`).
    #[error("Slack asked to wait {0:?}")]
    Wait(Duration),
    /// Worth retrying after a back-off (5xx, timeout, connection, or a 4xx
    /// that only a configuration change can fix: retried, never dropped).
    #[error("{0}")]
    Failed(String),
}

/// Posts to the webhook.
#[derive(Clone)]
pub struct Webhook {
    url: SecretString,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: SecretString, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            url,
            client: reqwest::Client::builder().timeout(timeout).build()?,
        })
    }

    pub async fn post(&self, body: &Value) -> Result<(), PostError> {
        let resp = self
            .client
            .post(self.url.expose_secret())
            .json(body)
            .send()
            .await
            .map_err(|e| {
                PostError::Failed(if e.is_timeout() {
                    "Slack timed out".into()
                } else {
                    "Slack unreachable".into()
                })
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        if status.as_u16() == 429 {
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1);
            return Err(PostError::Wait(Duration::from_secs(wait.max(1))));
        }
        Err(PostError::Failed(format!(
            "Slack answered {}",
            status.as_u16()
        )))
    }
}
