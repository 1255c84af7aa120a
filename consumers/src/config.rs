//! Configuration of the relay and the consumers, from the environment.

use std::time::Duration;

use platform::{ConfigError, Env};
use secrecy::SecretString;

/// Settings shared by every process of this crate.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub database_max_connections: u32,
    pub amqp_url: String,
    /// Needed by `authz-fanout` only.
    pub redis_url: Option<String>,
    pub metrics_port: u16,
    /// `METRICS_BIND`: the address `/metrics` listens on (loopback by default).
    pub metrics_bind: std::net::IpAddr,
    pub relay: RelayConfig,
    pub prefetch: u16,
    pub concurrency: usize,
    pub tg_adapter_url: Option<String>,
    pub tg_adapter_token: Option<SecretString>,
    pub tg_adapter_timeout: Duration,
    /// An adapter call still running after this marks the message `sending`.
    pub tg_sending_after: Duration,
    pub tg_delivery_batch_max: usize,
    /// `RETRY_MAX_ATTEMPTS`, `RETRY_SCHEDULE`, `RETRY_JITTER`: every
    /// consumer's retry budget.
    pub retry: broker_config::RetryPolicy,
    /// `RETRY_CLOCK_SCALE`: multiplies the waits tg-delivery schedules
    /// (tests and drills shorten a 20-minute FLOOD_WAIT with it).
    pub retry_clock_scale: f64,
    pub alerts: crate::alerts::AlertSettings,
    /// `SLACK_WEBHOOK_URL`: where alerts go; unset, they are logged only.
    pub slack_webhook_url: Option<SecretString>,
    /// Where tg-delivery finds replies' files, with the origin the local
    /// store's URLs start with: the API's store (`S3_*`, or `DATA_DIR` and
    /// `ATTACHMENTS_URL_BASE` as the API has them). Neither set: a reply
    /// with files fails (`attachment_storage_unconfigured`).
    pub attachments: Option<(storage::StorageConfig, url::Url)>,
}

/// `S3_*`, or `DATA_DIR` with `ATTACHMENTS_URL_BASE`: the API's attachment
/// store, as tg-delivery reaches it.
fn attachments(env: &Env) -> Result<Option<(storage::StorageConfig, url::Url)>, ConfigError> {
    let s3 = env.optional::<String>("S3_BUCKET")?.is_some();
    if !s3 && env.optional::<String>("DATA_DIR")?.is_none() {
        return Ok(None);
    }
    let storage = storage::StorageConfig::from_env(env)?;
    let base = match env.optional::<url::Url>("ATTACHMENTS_URL_BASE")? {
        Some(base) => base,
        // Unused by S3, whose URLs are the bucket's.
        None if s3 => url::Url::parse("http://127.0.0.1/").map_err(|e| ConfigError::Invalid {
            name: "ATTACHMENTS_URL_BASE".into(),
            reason: e.to_string(),
        })?,
        None => {
            return Err(ConfigError::Missing {
                name: "ATTACHMENTS_URL_BASE".into(),
            });
        }
    };
    Ok(Some((storage, base)))
}

/// Settings of the outbox relay (DESIGN §5).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub batch_size: i64,
    /// Batches published and awaiting confirms at once.
    pub pipeline_depth: usize,
    pub poll_interval: Duration,
    pub max_attempts: i32,
    pub retention: Duration,
    pub cleanup_interval: Duration,
    pub gauge_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            pipeline_depth: 8,
            poll_interval: Duration::from_secs(1),
            max_attempts: 10,
            retention: Duration::from_secs(7 * 86_400),
            cleanup_interval: Duration::from_secs(60),
            gauge_interval: Duration::from_secs(5),
        }
    }
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = RelayConfig::default();
        let relay = RelayConfig {
            batch_size: env.or("RELAY_BATCH_SIZE", defaults.batch_size)?,
            pipeline_depth: env.or("RELAY_PIPELINE_DEPTH", defaults.pipeline_depth)?,
            poll_interval: env.duration_or("RELAY_POLL_INTERVAL", defaults.poll_interval)?,
            max_attempts: env.or("OUTBOX_MAX_ATTEMPTS", defaults.max_attempts)?,
            retention: env.duration_or("OUTBOX_RETENTION", defaults.retention)?,
            cleanup_interval: defaults.cleanup_interval,
            gauge_interval: defaults.gauge_interval,
        };
        if relay.batch_size < 1 || relay.pipeline_depth < 1 || relay.max_attempts < 1 {
            return Err(ConfigError::Invalid {
                name: "RELAY_BATCH_SIZE/RELAY_PIPELINE_DEPTH/OUTBOX_MAX_ATTEMPTS".into(),
                reason: "must be at least 1".into(),
            });
        }
        let default_retry = broker_config::RetryPolicy::default();
        let retry = broker_config::RetryPolicy {
            schedule: match env.optional::<String>("RETRY_SCHEDULE")? {
                Some(text) => broker_config::retry::parse_schedule(&text).map_err(|reason| {
                    ConfigError::Invalid {
                        name: "RETRY_SCHEDULE".into(),
                        reason,
                    }
                })?,
                None => default_retry.schedule,
            },
            max_attempts: env.or("RETRY_MAX_ATTEMPTS", default_retry.max_attempts)?,
            jitter: env.or("RETRY_JITTER", default_retry.jitter)?,
        };
        if retry.max_attempts < 1 || !(0.0..=1.0).contains(&retry.jitter) {
            return Err(ConfigError::Invalid {
                name: "RETRY_MAX_ATTEMPTS/RETRY_JITTER".into(),
                reason: "attempts must be at least 1, jitter between 0 and 1".into(),
            });
        }
        let retry_clock_scale: f64 = env.or("RETRY_CLOCK_SCALE", 1.0f64)?;
        if !(retry_clock_scale > 0.0 && retry_clock_scale <= 1.0) {
            return Err(ConfigError::Invalid {
                name: "RETRY_CLOCK_SCALE".into(),
                reason: "must be above 0 and at most 1".into(),
            });
        }
        Ok(Self {
            retry,
            retry_clock_scale,
            database_url: env.required("DATABASE_URL")?,
            database_max_connections: env.or("DATABASE_MAX_CONNECTIONS", 40)?,
            amqp_url: broker_config::connection::amqp_url(env)?,
            redis_url: env.optional("REDIS_URL")?,
            metrics_port: env.or("METRICS_PORT", 9090)?,
            metrics_bind: env.metrics_bind()?,
            relay,
            prefetch: env.or("CONSUMER_PREFETCH", 100)?,
            concurrency: env.or("CONSUMER_CONCURRENCY", 16)?,
            tg_adapter_url: env.optional("TG_ADAPTER_URL")?,
            tg_adapter_token: env.optional_strong_secret("TG_ADAPTER_TOKEN", 16)?,
            tg_adapter_timeout: env.duration_or("TG_ADAPTER_TIMEOUT", Duration::from_secs(10))?,
            tg_sending_after: env.duration_or("TG_SENDING_AFTER", Duration::from_millis(250))?,
            tg_delivery_batch_max: env.at_least_one_or("TG_DELIVERY_BATCH_MAX", 16usize)?,
            attachments: attachments(env)?,
            alerts: crate::alerts::AlertSettings {
                threshold: env.at_least_one_or("FAIL_ALERT_THRESHOLD", 5u32)?,
                window: env.duration_or("FAIL_ALERT_WINDOW_SEC", Duration::from_secs(300))?,
                cooldown: env.duration_or("FAIL_ALERT_COOLDOWN_SEC", Duration::from_secs(3600))?,
                flood_wait: env
                    .duration_or("FAIL_ALERT_FLOOD_WAIT_SEC", Duration::from_secs(300))?,
                links: crate::alerts::slack::Links {
                    public_url: env.optional("PUBLIC_URL")?,
                    runbook_url: env.optional("RUNBOOK_URL")?,
                },
            },
            slack_webhook_url: env
                .optional::<String>("SLACK_WEBHOOK_URL")?
                .map(SecretString::from),
        })
    }
}
