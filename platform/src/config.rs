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
    fn short_secret_is_rejected() {
        let env = Env::from_pairs([("JWT_SECRET", "short")]);
        assert!(env.secret_min_len("JWT_SECRET", 32).is_err());
    }
}
