//! The adapter's one typed config, read from the environment and validated at
//! start-up (DESIGN §10); a bad value stops the process naming the variable.

use std::{fmt, path::PathBuf, str::FromStr};

use platform::{ConfigError, Env};
use secrecy::{ExposeSecret, SecretString};

/// Default HTTP port of the adapter.
pub const DEFAULT_PORT: u16 = 8081;
/// Default port of the `/metrics` server (`0` turns it off).
pub const DEFAULT_METRICS_PORT: u16 = 9090;
/// Shortest accepted `TG_ADAPTER_TOKEN`.
pub const MIN_TOKEN_LEN: usize = 16;

/// Which Telegram the adapter talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// A simulated Telegram with `/sandbox/*` control routes.
    Sandbox,
    /// Real Telegram over MTProto (grammers; ADR 0018).
    Mtproto,
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sandbox" => Ok(Self::Sandbox),
            "mtproto" => Ok(Self::Mtproto),
            other => Err(format!("expected sandbox or mtproto, got {other:?}")),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sandbox => "sandbox",
            Self::Mtproto => "mtproto",
        })
    }
}

/// Shortest accepted `TDLIB_ENCRYPTION_KEY`.
pub const MIN_SESSION_KEY_LEN: usize = 32;

/// What the MTProto backend needs: the application's credentials and the
/// key the session file is sealed with.
#[derive(Debug, Clone)]
pub struct MtprotoConfig {
    /// `TG_API_ID`: the application's id (my.telegram.org).
    pub api_id: i32,
    /// `TG_API_HASH`: the application's hash.
    pub api_hash: SecretString,
    /// `TDLIB_ENCRYPTION_KEY`: seals `DATA_DIR/telegram.session`.
    pub session_key: SecretString,
}

impl MtprotoConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let api_id: i32 = env.required("TG_API_ID")?;
        if api_id <= 0 {
            return Err(ConfigError::Invalid {
                name: "TG_API_ID".into(),
                reason: "must be a positive number".into(),
            });
        }
        Ok(Self {
            api_id,
            api_hash: env.secret_min_len("TG_API_HASH", 32)?,
            session_key: env.strong_secret("TDLIB_ENCRYPTION_KEY", MIN_SESSION_KEY_LEN)?,
        })
    }
}

/// Telegram-like send budgets: a sustained rate and a burst, per chat and for
/// the whole account.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    pub chat_rate_per_sec: f64,
    pub chat_burst: u32,
    pub global_rate_per_sec: f64,
    pub global_burst: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            chat_rate_per_sec: 1.0,
            chat_burst: 20,
            global_rate_per_sec: 30.0,
            global_burst: 300,
        }
    }
}

/// Everything the adapter needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `PORT`: the HTTP API.
    pub port: u16,
    /// `METRICS_PORT`: the `/metrics` server; `None` when set to 0.
    pub metrics_port: Option<u16>,
    /// `METRICS_BIND`: the address `/metrics` listens on (loopback by default).
    pub metrics_bind: std::net::IpAddr,
    /// `TG_ADAPTER_TOKEN`: bearer token of every `/v1` route.
    pub token: SecretString,
    /// `SANDBOX_TOKEN`: bearer token of the `/sandbox` control routes (sandbox
    /// backend only); a different value from `TG_ADAPTER_TOKEN`.
    pub sandbox_token: Option<SecretString>,
    /// `TG_BACKEND`.
    pub backend: BackendKind,
    /// `DATA_DIR`: idempotency store and sandbox log (created if missing).
    pub data_dir: PathBuf,
    /// `AMQP_URL`: where inbound updates are published.
    pub amqp_url: SecretString,
    pub budgets: BudgetConfig,
    /// With `TG_BACKEND=mtproto` only.
    pub mtproto: Option<MtprotoConfig>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let backend: BackendKind = env.required("TG_BACKEND")?;
        let mtproto = match backend {
            BackendKind::Mtproto => Some(MtprotoConfig::from_env(env)?),
            BackendKind::Sandbox => None,
        };
        let defaults = BudgetConfig::default();
        let metrics_port: u16 = env.or("METRICS_PORT", DEFAULT_METRICS_PORT)?;
        let token = env.strong_secret("TG_ADAPTER_TOKEN", MIN_TOKEN_LEN)?;
        let sandbox_token = match backend {
            BackendKind::Sandbox => {
                let t = env.strong_secret("SANDBOX_TOKEN", MIN_TOKEN_LEN)?;
                if t.expose_secret() == token.expose_secret() {
                    return Err(ConfigError::Invalid {
                        name: "SANDBOX_TOKEN".into(),
                        reason: "must differ from TG_ADAPTER_TOKEN".into(),
                    });
                }
                Some(t)
            }
            BackendKind::Mtproto => None,
        };
        Ok(Self {
            port: env.or("PORT", DEFAULT_PORT)?,
            metrics_port: (metrics_port != 0).then_some(metrics_port),
            metrics_bind: env.metrics_bind()?,
            token,
            sandbox_token,
            backend,
            data_dir: env.required("DATA_DIR")?,
            amqp_url: SecretString::from(broker_config::connection::amqp_url(env)?),
            budgets: BudgetConfig {
                chat_rate_per_sec: rate(env, "TG_CHAT_RATE_PER_SEC", defaults.chat_rate_per_sec)?,
                chat_burst: burst(env, "TG_CHAT_BURST", defaults.chat_burst)?,
                global_rate_per_sec: rate(
                    env,
                    "TG_GLOBAL_RATE_PER_SEC",
                    defaults.global_rate_per_sec,
                )?,
                global_burst: burst(env, "TG_GLOBAL_BURST", defaults.global_burst)?,
            },
            mtproto,
        })
    }
}

/// A positive, finite rate (fractions allowed: `0.5` is one send per 2 s).
fn rate(env: &Env, name: &str, default: f64) -> Result<f64, ConfigError> {
    let value: f64 = env.or(name, default)?;
    if value.is_finite() && value > 0.0 && value <= 1_000_000.0 {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            name: name.into(),
            reason: format!("must be a number above 0 (got {value})"),
        })
    }
}

fn burst(env: &Env, name: &str, default: u32) -> Result<u32, ConfigError> {
    let value: u32 = env.or(name, default)?;
    if value == 0 {
        return Err(ConfigError::Invalid {
            name: name.into(),
            reason: "must be at least 1".into(),
        });
    }
    Ok(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("TG_ADAPTER_TOKEN", "Kx7pQ2vN9mZt4RwB"),
            ("SANDBOX_TOKEN", "Lc8sD3fG6hJ1kP5y"),
            ("TG_BACKEND", "sandbox"),
            ("DATA_DIR", "/tmp/x"),
            ("AMQP_URL", "amqp://localhost"),
        ]
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        let mut pairs = base();
        pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        pairs.extend_from_slice(extra);
        Config::from_env(&Env::from_pairs(pairs))
    }

    #[test]
    fn defaults_apply() {
        let c = with(&[]).unwrap();
        assert_eq!(c.port, 8081);
        assert_eq!(c.metrics_port, Some(9090));
        assert_eq!(c.backend, BackendKind::Sandbox);
        assert_eq!(c.budgets, BudgetConfig::default());
        assert_eq!(c.token.expose_secret(), "Kx7pQ2vN9mZt4RwB");
    }

    #[test]
    fn the_sandbox_token_is_its_own_and_published_tokens_are_refused() {
        let err = with(&[("SANDBOX_TOKEN", "Kx7pQ2vN9mZt4RwB")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("SANDBOX_TOKEN"), "{err}");
        let err = with(&[("TG_ADAPTER_TOKEN", "dev-only-adapter-token-0123456789")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("TG_ADAPTER_TOKEN"), "{err}");
        assert!(
            with(&[
                ("TG_ADAPTER_TOKEN", "dev-only-adapter-token-0123456789"),
                ("FASTPREP_ENV", "development"),
            ])
            .is_ok()
        );
    }

    #[test]
    fn metrics_port_zero_turns_metrics_off() {
        assert_eq!(with(&[("METRICS_PORT", "0")]).unwrap().metrics_port, None);
    }

    #[test]
    fn mtproto_needs_its_credentials_and_key() {
        let mtproto = [
            ("TG_BACKEND", "mtproto"),
            ("TG_API_ID", "12345"),
            ("TG_API_HASH", "0123456789abcdef0123456789abcdef"),
            ("TDLIB_ENCRYPTION_KEY", "Zq8wX2cV5bN1mK4jH7gF3dS6aP9oI0uY"),
        ];
        let c = with(&mtproto).unwrap();
        assert_eq!(c.backend, BackendKind::Mtproto);
        let m = c.mtproto.unwrap();
        assert_eq!(m.api_id, 12345);
        assert!(c.sandbox_token.is_none());
        assert!(with(&[]).unwrap().mtproto.is_none());
        for name in ["TG_API_ID", "TG_API_HASH", "TDLIB_ENCRYPTION_KEY"] {
            let mut pairs = base();
            pairs.extend(
                mtproto
                    .iter()
                    .filter(|(k, _)| *k != name && *k != "TG_BACKEND"),
            );
            pairs.retain(|(k, _)| *k != "TG_BACKEND");
            pairs.push(("TG_BACKEND", "mtproto"));
            let err = Config::from_env(&Env::from_pairs(pairs)).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        let err = with(&[
            ("TG_BACKEND", "mtproto"),
            ("TG_API_ID", "-1"),
            ("TG_API_HASH", "0123456789abcdef0123456789abcdef"),
            ("TDLIB_ENCRYPTION_KEY", "Zq8wX2cV5bN1mK4jH7gF3dS6aP9oI0uY"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("TG_API_ID"), "{err}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("TG_ADAPTER_TOKEN", "short"),
            ("TG_BACKEND", "bot"),
            ("TG_CHAT_RATE_PER_SEC", "0"),
            ("TG_GLOBAL_RATE_PER_SEC", "fast"),
            ("TG_CHAT_BURST", "0"),
            ("PORT", "http"),
        ] {
            let err = with(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
        for name in ["DATA_DIR", "AMQP_URL", "TG_ADAPTER_TOKEN", "TG_BACKEND"] {
            let mut pairs = base();
            pairs.retain(|(k, _)| *k != name);
            let err = Config::from_env(&Env::from_pairs(pairs)).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn fractional_rates_are_allowed() {
        let c = with(&[("TG_CHAT_RATE_PER_SEC", "0.5")]).unwrap();
        assert!((c.budgets.chat_rate_per_sec - 0.5).abs() < f64::EPSILON);
    }
}
