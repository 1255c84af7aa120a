//! The relay and the consumers. Each runs alone as its own process; `all`
//! runs them together for local use.

pub mod alerts;
pub mod authz_fanout;
pub mod cli;
pub mod config;
pub mod inbound;
pub mod relay;
pub mod tg_delivery;

use std::sync::Arc;

use broker_config::{RunnerConfig, metrics::ConsumerMetrics, runner};
use platform::Telemetry;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// A process this crate can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Process {
    Relay,
    TgDelivery,
    Inbound,
    AuthzFanout,
    Alerts,
    /// Relay and every consumer in one process.
    All,
}

impl Process {
    /// The work queue it consumes, if it is one of the consumers.
    pub fn queue(self) -> Option<&'static str> {
        use broker_config::topology::{ALERTS, AUTHZ_FANOUT, INBOUND, TG_DELIVERY};
        match self {
            Process::TgDelivery => Some(TG_DELIVERY.name),
            Process::Inbound => Some(INBOUND.name),
            Process::AuthzFanout => Some(AUTHZ_FANOUT.name),
            Process::Alerts => Some(ALERTS.name),
            Process::Relay | Process::All => None,
        }
    }

    /// Its name in logs and traces (`service.name`).
    pub fn service_name(self) -> &'static str {
        match self {
            Process::Relay => "fastprep-relay",
            Process::TgDelivery => "fastprep-tg-delivery",
            Process::Inbound => "fastprep-inbound",
            Process::AuthzFanout => "fastprep-authz-fanout",
            Process::Alerts => "fastprep-alerts",
            Process::All => "fastprep-consumers",
        }
    }
}

/// Runs `process` until `shutdown` is cancelled or a part of it fails.
pub async fn run(
    process: Process,
    config: Config,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = schema::pool::connect(&config.database_url, config.database_max_connections).await?;
    let db = schema::pool::orm(&pool);
    let meter = telemetry.meter("fastprep-consumers");
    let consumer_metrics = ConsumerMetrics::new(&meter);
    let runner_config = RunnerConfig {
        amqp_url: config.amqp_url.clone(),
        prefetch: config.prefetch,
        concurrency: config.concurrency,
        policy: config.retry.clone(),
    };
    let tasks = platform::supervisor::Supervisor::new(shutdown.clone());
    let wants = |p: Process| process == p || process == Process::All;
    if wants(Process::Relay) {
        let metrics = relay::RelayMetrics::new(&meter);
        tasks.spawn_fallible(
            "relay",
            relay::run(
                pool.clone(),
                config.amqp_url.clone(),
                config.relay.clone(),
                metrics,
                shutdown.clone(),
            ),
        );
    }
    if wants(Process::TgDelivery) {
        let url = config
            .tg_adapter_url
            .clone()
            .ok_or_else(|| platform::ConfigError::Missing {
                name: "TG_ADAPTER_URL".into(),
            })?;
        let token =
            config
                .tg_adapter_token
                .clone()
                .ok_or_else(|| platform::ConfigError::Missing {
                    name: "TG_ADAPTER_TOKEN".into(),
                })?;
        let (metrics, latency) = tg_delivery::DeliveryMetrics::new(&meter);
        let adapter =
            tg_delivery::AdapterClient::new(&url, token, config.tg_adapter_timeout, latency)?;
        // Replies' files: the store the API keeps them in.
        let files = match &config.attachments {
            Some((storage, url_base)) => Some(storage.open(url_base.clone(), None)?.store),
            None => None,
        };
        let handler = Arc::new(tg_delivery::TgDelivery::new(
            db.clone(),
            adapter,
            metrics,
            schema::RelayWake::start(&pool, &tasks),
            tg_delivery::DeliverySettings {
                sending_after: config.tg_sending_after,
                batch_max: config.tg_delivery_batch_max,
                retry: config.retry.clone(),
                clock_scale: config.retry_clock_scale,
            },
            files,
        ));
        tasks.spawn_fallible(
            "tg-delivery",
            runner::run(
                handler,
                db.clone(),
                runner_config.clone(),
                consumer_metrics.clone(),
                shutdown.clone(),
            ),
        );
    }
    if wants(Process::Inbound) {
        tasks.spawn_fallible(
            "inbound",
            runner::run(
                Arc::new(inbound::Inbound::new(
                    schema::RelayWake::start(&pool, &tasks),
                    inbound_media(&config)?,
                )),
                db.clone(),
                runner_config.clone(),
                consumer_metrics.clone(),
                shutdown.clone(),
            ),
        );
    }
    if wants(Process::AuthzFanout) {
        tasks.spawn_fallible(
            "authz-fanout",
            runner::run(
                Arc::new(authz_fanout::AuthzFanout::new(
                    db.clone(),
                    redis_client(&config)?,
                    &broker_config::connection::vhost(&config.amqp_url),
                )),
                db.clone(),
                runner_config.clone(),
                consumer_metrics.clone(),
                shutdown.clone(),
            ),
        );
    }
    if wants(Process::Alerts) {
        let state = alerts::state::AlertState::new(
            redis_client(&config)?,
            &broker_config::connection::vhost(&config.amqp_url),
        );
        let settings = Arc::new(config.alerts.clone());
        let metrics = alerts::AlertMetrics::new(&meter);
        let wake = Arc::new(tokio::sync::Notify::new());
        let webhook = config
            .slack_webhook_url
            .clone()
            .map(|url| alerts::slack::Webhook::new(url, std::time::Duration::from_secs(10)))
            .transpose()?;
        tasks.spawn_fallible(
            "alerts sender",
            alerts::sender::Sender::new(
                state.clone(),
                webhook,
                settings.clone(),
                metrics.clone(),
                wake.clone(),
            )
            .run(shutdown.clone()),
        );
        tasks.spawn_fallible(
            "alerts",
            runner::run(
                Arc::new(alerts::Alerts::new(state, settings, metrics, wake)),
                db.clone(),
                runner_config.clone(),
                consumer_metrics.clone(),
                shutdown.clone(),
            ),
        );
    }
    // Every task runs until shutdown (a signal, or one of them failing);
    // then each finishes its in-flight work.
    shutdown.cancelled().await;
    let result = tasks.finish(None).await;
    pool.close().await;
    result
}

/// A Redis client for `REDIS_URL` that connects in the background: while
/// Redis is away, deliveries wait in the retry tiers instead of the process
/// exiting.
fn redis_client(config: &Config) -> anyhow::Result<fred::prelude::Client> {
    let url = config
        .redis_url
        .clone()
        .ok_or_else(|| platform::ConfigError::Missing {
            name: "REDIS_URL".into(),
        })?;
    let redis = fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&url)?)
        .set_policy(fred::prelude::ReconnectPolicy::new_exponential(
            0, 100, 5_000, 2,
        ))
        .with_performance_config(|p| {
            p.default_command_timeout = std::time::Duration::from_secs(2);
        })
        .build()?;
    fred::interfaces::ClientLike::connect(&redis);
    Ok(redis)
}

/// Where inbound's files go: the attachment store, fed from the TG adapter.
/// `None` without either.
fn inbound_media(config: &Config) -> anyhow::Result<Option<inbound::InboundMedia>> {
    let (Some((storage, url_base)), Some(adapter_url), Some(token)) = (
        &config.attachments,
        &config.tg_adapter_url,
        &config.tg_adapter_token,
    ) else {
        return Ok(None);
    };
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .read_timeout(config.tg_adapter_timeout)
        .build()?;
    Ok(Some(inbound::InboundMedia {
        store: storage.open(url_base.clone(), None)?.store,
        http,
        adapter_url: adapter_url.clone(),
        token: token.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use broker_config::{
        events::types,
        topology::{REALTIME_BINDINGS, UNROUTED, WORK_QUEUES, topic_matches},
    };
    use clap::ValueEnum;

    use super::Process;

    /// The event contract, checked from the one list of event types: each
    /// has its own label in the relay's metrics, and reaches a work queue
    /// that a process of this crate consumes or the realtime queues, unless
    /// it is declared as reaching none.
    #[test]
    fn every_event_type_has_a_metric_label_a_binding_and_a_consumer() {
        for event_type in types::ALL {
            assert_eq!(
                crate::relay::metrics::static_label(event_type),
                event_type,
                "{event_type} has no label of its own"
            );
            let queues: Vec<&str> = WORK_QUEUES
                .iter()
                .filter(|q| q.bindings.iter().any(|b| topic_matches(b, event_type)))
                .map(|q| q.name)
                .collect();
            let realtime = REALTIME_BINDINGS
                .iter()
                .any(|b| topic_matches(b, event_type));
            assert_eq!(
                queues.is_empty() && !realtime,
                UNROUTED.contains(&event_type),
                "{event_type}: routed to {queues:?} (realtime: {realtime}), declared unrouted: {}",
                UNROUTED.contains(&event_type)
            );
            for queue in queues {
                assert!(
                    Process::value_variants()
                        .iter()
                        .any(|p| p.queue() == Some(queue)),
                    "{event_type} goes to {queue}, which no process consumes"
                );
            }
        }
    }
}
