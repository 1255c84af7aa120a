//! Configuration of the API process, from the environment.

use std::time::Duration;

use platform::{ConfigError, Env};
use secrecy::SecretString;

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub database_max_connections: u32,
    pub redis_url: String,
    pub amqp_url: String,
    pub jwt_secret: SecretString,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub login_limits: crate::auth::ratelimit::LoginLimits,
    /// Password hashes running at once (each holds 19 MiB and a core).
    pub password_hash_concurrency: usize,
    pub trust_forwarded_for: bool,
    pub cors_origins: Vec<String>,
    pub ws_max_connections: usize,
    /// Sockets one client address may hold before they authenticate.
    pub ws_max_pending_per_client: usize,
    pub ws_reauth_grace: Duration,
    pub realtime_replay_events: usize,
    pub port: u16,
    pub metrics_port: u16,
    /// `METRICS_BIND`: the address `/metrics` listens on (loopback by default).
    pub metrics_bind: std::net::IpAddr,
    /// Where attachments live: `S3_*`, or a folder under `DATA_DIR`.
    pub storage: storage::StorageConfig,
    /// `ATTACHMENTS_URL_BASE`: the origin the local store's signed URLs
    /// start with (the API as clients reach it); unused with S3.
    pub attachments_url_base: url::Url,
    /// `ATTACHMENT_MAX_BYTES` and `ATTACHMENT_CONTENT_TYPES`.
    pub attachment_limits: crate::attachments::AttachmentLimits,
    /// `ATTACHMENT_PURGE_INTERVAL`: how often uploads no message took for a
    /// day are deleted.
    pub attachment_purge_interval: Duration,
    /// `TG_ADAPTER_URL` and `TG_ADAPTER_TOKEN`: the adapter whose account
    /// `/api/ops/telegram` shows and logs in (`None`: those routes answer
    /// 503).
    pub telegram: Option<crate::telegram::AdapterLink>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let access_token_ttl = env.duration_or("ACCESS_TOKEN_TTL", Duration::from_secs(300))?;
        if access_token_ttl > Duration::from_secs(300) || access_token_ttl < Duration::from_secs(10)
        {
            return Err(ConfigError::Invalid {
                name: "ACCESS_TOKEN_TTL".into(),
                reason: "must be between 10s and 5m".into(),
            });
        }
        let port = env.or("PORT", 8080)?;
        Ok(Self {
            database_url: env.required("DATABASE_URL")?,
            database_max_connections: env.or("DATABASE_MAX_CONNECTIONS", 16)?,
            redis_url: env.required("REDIS_URL")?,
            amqp_url: broker_config::connection::amqp_url(env)?,
            jwt_secret: env.strong_secret("JWT_SECRET", 32)?,
            access_token_ttl,
            refresh_token_ttl: env
                .duration_or("REFRESH_TOKEN_TTL", Duration::from_secs(14 * 86_400))?,
            login_limits: crate::auth::ratelimit::LoginLimits {
                per_account_address: env.or("LOGIN_ACCOUNT_LIMIT", 5)?,
                per_address: env.or("LOGIN_ADDRESS_LIMIT", 20)?,
                account_slow_after: env.or("LOGIN_ACCOUNT_SLOW_AFTER", 20)?,
                account_interval: env
                    .duration_or("LOGIN_ACCOUNT_INTERVAL", Duration::from_secs(5))?,
                window: env.duration_or("LOGIN_LIMIT_WINDOW", Duration::from_secs(900))?,
            },
            password_hash_concurrency: env.or(
                "PASSWORD_HASH_CONCURRENCY",
                std::thread::available_parallelism().map_or(2, usize::from),
            )?,
            trust_forwarded_for: env.or("TRUST_FORWARDED_FOR", false)?,
            cors_origins: env.list("CORS_ORIGINS"),
            ws_max_connections: env.or("WS_MAX_CONNECTIONS", 10_000)?,
            ws_max_pending_per_client: env.or("WS_MAX_PENDING_PER_CLIENT", 8)?,
            ws_reauth_grace: env.duration_or("WS_REAUTH_GRACE", Duration::from_secs(15))?,
            realtime_replay_events: env.or(
                "REALTIME_REPLAY_EVENTS",
                crate::realtime::hub::DEFAULT_REPLAY_EVENTS,
            )?,
            port,
            metrics_port: env.or("METRICS_PORT", 9090)?,
            metrics_bind: env.metrics_bind()?,
            // Read last: the settings above are each process's first concern.
            attachment_limits: attachment_limits(env)?,
            attachment_purge_interval: env
                .duration_or("ATTACHMENT_PURGE_INTERVAL", Duration::from_secs(3600))?,
            attachments_url_base: attachments_url_base(env, port)?,
            storage: storage::StorageConfig::from_env(env)?,
            telegram: telegram_adapter(env)?,
        })
    }
}

/// `TG_ADAPTER_URL` with its `TG_ADAPTER_TOKEN`. Neither is required; the
/// token is read (and held to the secrets' rules) only with a URL, which
/// without a token is a mistake worth stopping for.
fn telegram_adapter(env: &Env) -> Result<Option<crate::telegram::AdapterLink>, ConfigError> {
    let Some(url) = env.optional::<url::Url>("TG_ADAPTER_URL")? else {
        return Ok(None);
    };
    let token = env.strong_secret("TG_ADAPTER_TOKEN", 16)?;
    Ok(Some(crate::telegram::AdapterLink { url, token }))
}

/// `ATTACHMENT_MAX_BYTES` (at most Telegram's limit) and
/// `ATTACHMENT_CONTENT_TYPES` (media types, comma-separated).
fn attachment_limits(env: &Env) -> Result<crate::attachments::AttachmentLimits, ConfigError> {
    use crate::attachments::{AttachmentLimits, TELEGRAM_MAX_BYTES};
    let defaults = AttachmentLimits::default();
    let max_bytes: u64 = env.or("ATTACHMENT_MAX_BYTES", defaults.max_bytes)?;
    if max_bytes == 0 || max_bytes > TELEGRAM_MAX_BYTES {
        return Err(ConfigError::Invalid {
            name: "ATTACHMENT_MAX_BYTES".into(),
            reason: format!("must be 1 to {TELEGRAM_MAX_BYTES} (Telegram's limit for a file)"),
        });
    }
    let listed = env.list("ATTACHMENT_CONTENT_TYPES");
    let content_types = if listed.is_empty() {
        defaults.content_types
    } else {
        let mut types = Vec::with_capacity(listed.len());
        for t in listed {
            let t = t.trim().to_ascii_lowercase();
            let valid = t.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && t.bytes()
                        .all(|c| c.is_ascii_graphic() && c != b';' && c != b',')
            });
            if !valid {
                return Err(ConfigError::Invalid {
                    name: "ATTACHMENT_CONTENT_TYPES".into(),
                    reason: format!("{t:?} is not a media type (type/subtype)"),
                });
            }
            types.push(t);
        }
        types
    };
    Ok(AttachmentLimits {
        max_bytes,
        content_types,
    })
}

/// `ATTACHMENTS_URL_BASE`. The local store's URLs are handed to browsers,
/// so outside development mode a local store needs it set: a default of
/// loopback would give every client links that lead nowhere.
fn attachments_url_base(env: &Env, port: u16) -> Result<url::Url, ConfigError> {
    if let Some(base) = env.optional("ATTACHMENTS_URL_BASE")? {
        return Ok(base);
    }
    let local = env.optional::<String>("S3_BUCKET")?.is_none();
    if local && !env.is_development() {
        return Err(ConfigError::Missing {
            name: "ATTACHMENTS_URL_BASE".into(),
        });
    }
    url::Url::parse(&format!("http://127.0.0.1:{port}")).map_err(|e| ConfigError::Invalid {
        name: "PORT".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [(&str, &str); 4] = [
        ("DATABASE_URL", "postgres://localhost/x"),
        ("REDIS_URL", "redis://localhost"),
        ("AMQP_URL", "amqp://localhost"),
        (
            "JWT_SECRET",
            "a-long-random-secret-for-the-config-tests-0123456789",
        ),
    ];

    fn config(extra: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        Config::from_env(&Env::from_pairs(BASE.iter().chain(extra).copied()))
    }

    #[test]
    fn a_local_store_outside_development_needs_its_public_origin() {
        let missing = config(&[("DATA_DIR", "/data")]).unwrap_err();
        assert!(
            missing.to_string().contains("ATTACHMENTS_URL_BASE"),
            "{missing}"
        );
        let dev = config(&[("DATA_DIR", "/data"), ("FASTPREP_ENV", "development")]).unwrap();
        assert_eq!(dev.attachments_url_base.as_str(), "http://127.0.0.1:8080/");
        let set = config(&[
            ("DATA_DIR", "/data"),
            ("ATTACHMENTS_URL_BASE", "https://api.example.com"),
        ])
        .unwrap();
        assert_eq!(
            set.attachments_url_base.as_str(),
            "https://api.example.com/"
        );
    }

    #[test]
    fn attachment_limits_stay_within_telegrams() {
        let dev = [("DATA_DIR", "/data"), ("FASTPREP_ENV", "development")];
        let too_big = [dev[0], dev[1], ("ATTACHMENT_MAX_BYTES", "2097152001")];
        assert!(
            config(&too_big)
                .unwrap_err()
                .to_string()
                .contains("ATTACHMENT_MAX_BYTES")
        );
        let odd_type = [
            dev[0],
            dev[1],
            ("ATTACHMENT_CONTENT_TYPES", "image/png,notatype"),
        ];
        assert!(
            config(&odd_type)
                .unwrap_err()
                .to_string()
                .contains("ATTACHMENT_CONTENT_TYPES")
        );
        let types = [
            dev[0],
            dev[1],
            ("ATTACHMENT_CONTENT_TYPES", "Image/PNG, application/pdf"),
        ];
        assert_eq!(
            config(&types).unwrap().attachment_limits.content_types,
            ["image/png", "application/pdf"]
        );
    }
}
