//! What this instance hears through Redis: invalidations on
//! `authz.user.updated` (each drops what it names; a gap in `seq` drops the
//! whole in-memory tier) and its own ticks (which renew the lease). Each one
//! is passed on to the WebSocket gateway.

use std::sync::Arc;

use fred::{
    interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface},
    prelude::{Builder, Config as RedisConfig, ReconnectPolicy},
    types::Message,
};
use platform::authz_redis::UserUpdated;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::Authorizer;

impl Authorizer {
    /// Starts listening for invalidations and ticking. Returns once the
    /// subscription is in place; the tasks end with `shutdown`.
    pub async fn start(
        self: &Arc<Self>,
        redis_config: RedisConfig,
        tasks: &platform::supervisor::Supervisor,
    ) -> anyhow::Result<()> {
        let shutdown = tasks.shutdown().clone();
        let subscriber = Builder::from_config(redis_config)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build_subscriber_client()?;
        let mut messages = subscriber.message_rx();
        let mut reconnects = subscriber.reconnect_rx();
        subscriber.init().await?;
        let tick_channel = self.scripts.keys().tick_channel(&self.instance);
        subscriber
            .subscribe(vec![self.scripts.keys().channel(), tick_channel.clone()])
            .await?;
        let _resubscribe = subscriber.manage_subscriptions();
        let me = self.clone();
        let stop = shutdown.clone();
        tasks.spawn("authz invalidation listener", async move {
            let mut last_seq: Option<u64> = None;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    msg = messages.recv() => match msg {
                        Ok(m) => me.on_message(&m, &tick_channel, &mut last_seq),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "invalidation listener lagged; dropping the local tier");
                            me.clear_local(true);
                            last_seq = None;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = reconnects.recv() => {
                        tracing::info!("invalidation listener reconnected; dropping the local tier");
                        me.clear_local(true);
                        last_seq = None;
                    }
                }
            }
            let _ = subscriber.quit().await;
        });
        tasks.spawn("authz clock tick", self.clone().tick(shutdown));
        Ok(())
    }

    fn on_message(self: &Arc<Self>, msg: &Message, tick_channel: &str, last_seq: &mut Option<u64>) {
        let Some(payload) = msg.value.as_str() else {
            return;
        };
        if &*msg.channel == tick_channel {
            let Some((sent, seq)) = payload
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            else {
                return;
            };
            // The tick follows every invalidation it counts: having missed
            // one, or having gone unheard past the lease, the tier is dropped
            // before the lease is renewed.
            let missed = last_seq.is_none_or(|last| last < seq);
            if *last_seq != Some(seq) || !self.lease.valid() {
                self.clear_local(missed);
                *last_seq = Some(seq);
            }
            self.lease.renew(sent);
            return;
        }
        let update: UserUpdated = match serde_json::from_str(&payload) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable authz.user.updated message ignored");
                return;
            }
        };
        match (update.seq, *last_seq) {
            (Some(seq), Some(last)) if seq > last + 1 => {
                tracing::warn!(seq, last, "missed invalidations; dropping the local tier");
                self.clear_local(true);
                *last_seq = Some(seq);
            }
            (Some(seq), Some(last)) => *last_seq = Some(last.max(seq)),
            (Some(seq), None) => *last_seq = Some(seq),
            (None, _) => {}
        }
        self.local.evict(update.user_id);
        if update.perm_version.is_none() {
            // The runbook's manual path: whoever forgot the DEL, the cached
            // entry goes too. Until the DEL is done, a read can still find
            // that entry and put it back in memory, where it would stay for
            // the TTL; so the user is evicted again once the DEL is done
            // (a fill that read the entry before it is then dropped, by the
            // generation), and the gateway hears of it only then.
            let me = self.clone();
            let key = self.scripts.keys().ep(update.user_id);
            tokio::spawn(async move {
                let _: Result<i64, _> = me.redis.del(key).await;
                me.local.evict(update.user_id);
                let _ = me.updates.send(update);
            });
            return;
        }
        let _ = self.updates.send(update);
    }

    /// Drops the whole tier. When announcements may have been `missed`, the
    /// WebSocket gateway is told too (a nil user id: every socket re-reads
    /// its user's permissions).
    fn clear_local(&self, missed: bool) {
        self.local.clear();
        if missed {
            let _ = self.updates.send(UserUpdated {
                user_id: Uuid::nil(),
                perm_version: None,
                seq: None,
            });
        }
    }
}
