//! The sender of each alerts instance: takes queued alerts and summaries
//! from the `alerts:outbox` stream, posts them to Slack until Slack accepts
//! (back-off on errors, `Retry-After` on 429), then settles them, which
//! starts an alert's cooldown. Every second it also queues the summaries of
//! cooldowns that ended.
//!
//! Delivery is at least once: an entry whose sender died is claimed by
//! another sender after [`STALE_AFTER`]. A sender holds one entry at a time
//! and renews its claim every [`KEEP_EVERY`], also while it waits out a
//! back-off or a `Retry-After`, and checks it still holds the entry before
//! each post; so only a sender that dies between Slack's answer and the
//! settlement leaves an entry that is posted again.

use std::{sync::Arc, time::Duration};

use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    AlertMetrics, AlertSettings,
    kind::Kind,
    slack::{self, PostError, Webhook},
    state::{AlertState, Entry},
};

/// An entry left this long by its sender is claimed by another.
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// How often a sender looks for new entries when not woken.
const POLL: Duration = Duration::from_millis(250);
/// How often a sender still retrying an entry tells the group so.
const KEEP_EVERY: Duration = Duration::from_secs(10);
/// Longest back-off between failed posts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub struct Sender {
    state: AlertState,
    webhook: Option<Webhook>,
    settings: Arc<AlertSettings>,
    metrics: AlertMetrics,
    wake: Arc<Notify>,
    consumer: String,
}

impl Sender {
    pub fn new(
        state: AlertState,
        webhook: Option<Webhook>,
        settings: Arc<AlertSettings>,
        metrics: AlertMetrics,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            state,
            webhook,
            settings,
            metrics,
            wake,
            consumer: format!("alerts-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Runs until `shutdown`. An entry being posted when it comes stays in
    /// the stream for another sender.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if self.webhook.is_none() {
            tracing::warn!(
                "SLACK_WEBHOOK_URL is not set: alerts are logged and counted, not posted"
            );
        }
        if !self.join_group(&shutdown).await {
            return Ok(());
        }
        let mut last_claim: Option<Instant> = None;
        let mut last_sweep: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            if last_sweep.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_sweep = Some(Instant::now());
                match self.state.sweep(self.settings.cooldown).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(summaries = n, "cooldowns ended; summaries queued"),
                    Err(e) => tracing::warn!(error = %e, "cooldown sweep failed"),
                }
            }
            let mut entries = match self.state.read_new(&self.consumer, 1).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "reading queued alerts failed");
                    // Redis restarted empty: the stream and its group are
                    // gone; make them again.
                    if e.to_string().contains("NOGROUP") && !self.join_group(&shutdown).await {
                        return Ok(());
                    }
                    Vec::new()
                }
            };
            if entries.is_empty()
                && last_claim.is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
            {
                last_claim = Some(Instant::now());
                match self.state.claim_stale(&self.consumer, STALE_AFTER).await {
                    Ok(stale) => {
                        if !stale.is_empty() {
                            tracing::warn!(
                                count = stale.len(),
                                "took over alerts another sender left"
                            );
                        }
                        entries.extend(stale);
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming stale alerts failed"),
                }
            }
            if entries.is_empty() {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            for entry in entries {
                if !self.deliver(&entry, &shutdown).await {
                    break;
                }
            }
        }
        if let Err(e) = self.state.leave(&self.consumer).await {
            tracing::debug!(error = %e, "leaving the senders' group failed");
        }
        Ok(())
    }

    /// Makes sure the stream and the senders' group exist; `false` when
    /// shutdown came first.
    async fn join_group(&self, shutdown: &CancellationToken) -> bool {
        while let Err(e) = self.state.ensure_group().await {
            tracing::warn!(error = %e, "alerts stream not ready; retrying");
            if pause(shutdown, Duration::from_secs(1)).await {
                return false;
            }
        }
        true
    }

    /// Posts `entry` until Slack accepts it; `false` when shutdown came first.
    async fn deliver(&self, entry: &Entry, shutdown: &CancellationToken) -> bool {
        let Some(kind) = Kind::from_label(&entry.kind) else {
            tracing::error!(
                kind = entry.kind,
                id = entry.id,
                "queued alert of an unknown kind; dropped"
            );
            let _ = self.state.settle(entry, Duration::ZERO).await;
            return true;
        };
        let body = slack::render(kind, &entry.body, &self.settings.links);
        let mut backoff = Duration::from_secs(1);
        loop {
            // Still ours? (After a long wait another sender may have taken it.)
            match self.state.keep(&self.consumer, &entry.id).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(id = entry.id, "another sender took this alert over");
                    return true;
                }
                Err(e) => tracing::warn!(error = %e, "could not renew the claim on an alert"),
            }
            let posted = match &self.webhook {
                Some(webhook) => webhook.post(&body).await,
                None => {
                    tracing::warn!(
                        kind = kind.label(),
                        alert = body["text"].as_str().unwrap_or_default(),
                        "alert (no SLACK_WEBHOOK_URL)"
                    );
                    Ok(())
                }
            };
            let wait = match posted {
                Ok(()) => break,
                Err(PostError::Wait(wait)) => {
                    self.metrics.delivery_error();
                    tracing::warn!(wait = ?wait, "Slack asked to wait");
                    wait
                }
                Err(PostError::Failed(reason)) => {
                    self.metrics.delivery_error();
                    tracing::warn!(reason, retry_in = ?backoff, "posting to Slack failed; retrying");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            // Wait in slices, renewing the claim, so that nobody takes the
            // entry over while this sender is only waiting.
            let until = Instant::now() + wait;
            while Instant::now() < until {
                let slice = (until - Instant::now()).min(KEEP_EVERY);
                if pause(shutdown, slice).await {
                    return false;
                }
                if Instant::now() < until
                    && let Err(e) = self.state.keep(&self.consumer, &entry.id).await
                {
                    tracing::warn!(error = %e, "could not renew the claim on an alert");
                }
            }
        }
        self.metrics.sent(kind);
        tracing::info!(
            kind = kind.label(),
            kind_of_message = entry.kind_of_message,
            "alert delivered"
        );
        // Slack has it: settle, retrying Redis briefly (an unsettled entry is
        // posted again by another sender after STALE_AFTER).
        for _ in 0..5 {
            match self.state.settle(entry, self.settings.cooldown).await {
                Ok(_) => return true,
                Err(e) => {
                    tracing::warn!(error = %e, "settling a delivered alert failed; retrying");
                    if pause(shutdown, Duration::from_millis(200)).await {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// Sleeps `d`; `true` when shutdown came first.
async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}
