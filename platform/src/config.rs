//! Typed configuration from environment variables. Every process builds its
//! own config struct with these readers; a missing or malformed variable stops
//! the process with an error that names the variable.

use std::{collections::HashMap, fmt::Display, str::FromStr, time::Duration};

use secrecy::SecretString;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {name} is required but not set")]
    Missing { name: String },
    #[error("environment variable {name} has an invalid value: {reason}")]
    Invalid { name: String, reason: String },
}

/// A source of configuration values: the process environment, or a map in
/// tests (so tests build configs without touching global state).
#[derive(Debug, Clone, Default)]
pub struct Env {
    overrides: Option<HashMap<String, String>>,
}

impl Env {
    /// Reads from the real process environment.
    pub fn process() -> Self {
        Self { overrides: None }
    }

    /// Reads only from the given pairs.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            overrides: Some(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        }
    }

    fn raw(&self, name: &str) -> Option<String> {
        let value = match &self.overrides {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        };
        value.filter(|v| !v.trim().is_empty())
    }

    /// A required value parsed with `FromStr`.
    pub fn required<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let raw = self.raw(name).ok_or_else(|| ConfigError::Missing {
            name: name.to_owned(),
        })?;
        parse(name, &raw)
    }

    /// An optional value parsed with `FromStr`.
    pub fn optional<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.raw(name).map(|raw| parse(name, &raw)).transpose()
    }

    /// A value with a default used when the variable is unset.
    pub fn or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.optional(name)?.unwrap_or(default))
    }

    /// Like [`Self::or`], for a count that must be at least 1 (zero is
    /// refused with a clear error, never taken to mean "none").
    pub fn at_least_one_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialEq + Default,
        T::Err: Display,
    {
        let value = self.or(name, default)?;
        if value == T::default() {
            return Err(ConfigError::Invalid {
                name: name.to_owned(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(value)
    }

    /// A human-readable duration (`500ms`, `10s`, `7days`); a bare number is seconds.
    pub fn duration_or(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some(raw) => parse_duration(&raw).map_err(|reason| ConfigError::Invalid {
                name: name.to_owned(),
                reason,
            }),
        }
    }

    /// A required secret; it never appears in `Debug` output or logs.
    pub fn secret(&self, name: &str) -> Result<SecretString, ConfigError> {
        let raw = self.raw(name).ok_or_else(|| ConfigError::Missing {
            name: name.to_owned(),
        })?;
        Ok(SecretString::from(raw))
    }

    /// A required secret of at least `min_len` bytes.
    pub fn secret_min_len(&self, name: &str, min_len: usize) -> Result<SecretString, ConfigError> {
        let raw = self.raw(name).ok_or_else(|| ConfigError::Missing {
            name: name.to_owned(),
        })?;
        if raw.len() < min_len {
            return Err(ConfigError::Invalid {
                name: name.to_owned(),
                reason: format!("must be at least {min_len} characters long"),
            });
        }
        Ok(SecretString::from(raw))
    }

    /// Whether the process runs in explicit development mode
    /// (`FASTPREP_ENV=development`, set by `scripts/dev` and the tests).
    /// Anything else, unset included, is production.
    pub fn is_development(&self) -> bool {
        self.raw("FASTPREP_ENV")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("development"))
    }

    /// A required secret of at least `min_len` bytes that, outside
    /// development mode, is neither a value published in this repository nor
    /// obviously weak (see [`weakness`]).
    pub fn strong_secret(&self, name: &str, min_len: usize) -> Result<SecretString, ConfigError> {
        let secret = self.secret_min_len(name, min_len)?;
        if !self.is_development()
            && let Some(reason) = weakness(secrecy::ExposeSecret::expose_secret(&secret))
        {
            return Err(ConfigError::Invalid {
                name: name.to_owned(),
                reason: format!(
                    "{reason}; generate one (e.g. `openssl rand -base64 48`), or set \
                     FASTPREP_ENV=development on a development machine"
                ),
            });
        }
        Ok(secret)
    }

    /// An optional secret, held to [`Self::strong_secret`]'s rules when set.
    pub fn optional_strong_secret(
        &self,
        name: &str,
        min_len: usize,
    ) -> Result<Option<SecretString>, ConfigError> {
        match self.raw(name) {
            None => Ok(None),
            Some(_) => self.strong_secret(name, min_len).map(Some),
        }
    }

    /// `METRICS_BIND`: the address `/metrics` listens on. Loopback unless
    /// set: metrics describe the system and must reach only the scraper.
    pub fn metrics_bind(&self) -> Result<std::net::IpAddr, ConfigError> {
        self.or(
            "METRICS_BIND",
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        )
    }

    /// A comma-separated list; empty when unset.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.raw(name)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Secrets published in this repository (`scripts/dev`, the test harness):
/// anyone can sign with them, so production refuses them.
const PUBLISHED_SECRETS: &[&str] = &[
    "dev-only-jwt-secret-change-me-0123456789abcdef",
    "dev-only-adapter-token-0123456789",
    "dev-only-sandbox-token-0123456789",
    "test-jwt-secret-0123456789abcdef0123456789",
    "test-adapter-token-0123456789",
    "test-sandbox-token-0123456789",
    "test-token-0123456789",
    "0123456789abcdef",
    "fedcba9876543210",
    "q8xr2vn0pzt5lmkc7ywb1shd9fjga3ue",
    // Admin passwords of `scripts/dev` and the test harness.
    "fastprep-admin",
    "correct-horse-battery-staple",
];

/// Words that mark a value as a placeholder.
const PLACEHOLDERS: &[&str] = &[
    "dev-only",
    "change-me",
    "changeme",
    "example",
    "placeholder",
];

/// Fewest distinct characters a production secret may have.
const MIN_DISTINCT_CHARS: usize = 10;

/// Why `secret` must not be used in production, if it must not.
pub fn weakness(secret: &str) -> Option<&'static str> {
    let lower = secret.trim().to_ascii_lowercase();
    if PUBLISHED_SECRETS.iter().any(|p| lower == *p) {
        return Some("is a development value published in the repository");
    }
    if PLACEHOLDERS.iter().any(|w| lower.contains(w)) {
        return Some("looks like a placeholder");
    }
    let mut distinct: Vec<char> = secret.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT_CHARS {
        return Some("is too repetitive to be random");
    }
    None
}

fn parse<T>(name: &str, raw: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    raw.trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::Invalid {
            name: name.to_owned(),
            reason: format!("{e} (got {raw:?})"),
        })
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(raw)
        .map_err(|e| format!("{e} (got {raw:?}; use e.g. 30s, 5m, 7days)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_required_names_the_variable() {
        let env = Env::from_pairs([("OTHER", "1")]);
        let err = env.required::<u16>("PORT").unwrap_err();
        assert!(err.to_string().contains("PORT"), "{err}");
    }

    #[test]
    fn a_count_of_zero_is_refused_and_unset_takes_the_default() {
        let env = Env::from_pairs([("ZERO", "0"), ("TWO", "2"), ("JUNK", "-1")]);
        let err = env.at_least_one_or("ZERO", 5u32).unwrap_err().to_string();
        assert!(err.contains("ZERO") && err.contains("at least 1"), "{err}");
        assert_eq!(env.at_least_one_or("TWO", 5u32).unwrap(), 2);
        assert_eq!(env.at_least_one_or("UNSET", 5u32).unwrap(), 5);
        assert!(env.at_least_one_or("JUNK", 5u32).is_err());
    }

    #[test]
    fn malformed_value_names_the_variable_and_value() {
        let env = Env::from_pairs([("PORT", "eighty")]);
        let err = env.required::<u16>("PORT").unwrap_err().to_string();
        assert!(err.contains("PORT") && err.contains("eighty"), "{err}");
    }

    #[test]
    fn durations_accept_seconds_and_human_units() {
        let env = Env::from_pairs([("A", "30"), ("B", "7days"), ("C", "250ms"), ("D", "soon")]);
        assert_eq!(
            env.duration_or("A", Duration::ZERO).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            env.duration_or("B", Duration::ZERO).unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(
            env.duration_or("C", Duration::ZERO).unwrap(),
            Duration::from_millis(250)
        );
        assert!(
            env.duration_or("D", Duration::ZERO)
                .unwrap_err()
                .to_string()
                .contains('D')
        );
        assert_eq!(
            env.duration_or("UNSET", Duration::from_secs(5)).unwrap(),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn published_and_weak_secrets_are_refused_outside_development() {
        for bad in [
            "dev-only-jwt-secret-change-me-0123456789abcdef",
            "please-change-me-before-going-live-0000",
            "a".repeat(64).as_str(),
            "abababababababababababababababababab",
        ] {
            let prod = Env::from_pairs([("JWT_SECRET", bad)]);
            let err = prod
                .strong_secret("JWT_SECRET", 32)
                .unwrap_err()
                .to_string();
            assert!(err.contains("JWT_SECRET"), "{err}");
            let dev = Env::from_pairs([("JWT_SECRET", bad), ("FASTPREP_ENV", "development")]);
            assert!(dev.strong_secret("JWT_SECRET", 32).is_ok(), "{bad}");
        }
        // A value this test made up at run time, so it is published nowhere.
        let fresh: String = format!(
            "{:032x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
                .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        );
        let good = Env::from_pairs([("JWT_SECRET", fresh.as_str())]);
        assert!(good.strong_secret("JWT_SECRET", 32).is_ok(), "{fresh}");
        let published = Env::from_pairs([("JWT_SECRET", "q8Xr2vN0pZt5LmKc7YwB1sHd9FjGa3Ue")]);
        assert!(published.strong_secret("JWT_SECRET", 32).is_err());
        let prod = Env::from_pairs([("FASTPREP_ENV", "production")]);
        assert!(!prod.is_development());
    }

    #[test]
    fn short_secret_is_rejected() {
        let env = Env::from_pairs([("JWT_SECRET", "short")]);
        assert!(env.secret_min_len("JWT_SECRET", 32).is_err());
    }
}
