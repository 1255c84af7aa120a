//! Exactly-once sends from at-least-once callers: the `Idempotency-Key`
//! newtype, the `random_id` Telegram de-duplicates on, the durable result
//! store and per-key serialisation.

mod locks;
mod store;

use sha2::{Digest, Sha256};

pub use locks::{KeyGuard, KeyLocks};
pub use store::{IdempotencyStore, StoredSend};

/// Longest accepted `Idempotency-Key`.
pub const MAX_KEY_LEN: usize = 200;

/// A validated `Idempotency-Key` header value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a header value is not a usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the Idempotency-Key header is required")]
    Missing,
    #[error("the Idempotency-Key header must be 1 to 200 visible ASCII characters")]
    Invalid,
}

impl IdempotencyKey {
    /// Parses a raw header value (`None` when the header is absent).
    pub fn parse(raw: Option<&[u8]>) -> Result<Self, KeyError> {
        let raw = raw.ok_or(KeyError::Missing)?;
        let text = std::str::from_utf8(raw)
            .map_err(|_| KeyError::Invalid)?
            .trim();
        if text.is_empty() {
            return Err(KeyError::Missing);
        }
        if text.len() > MAX_KEY_LEN || !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(KeyError::Invalid);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Telegram's `random_id` for this key: the first 8 bytes of its SHA-256,
    /// big-endian. Deterministic, so a retry after a lost response (even
    /// after a restart that lost the stored result) is de-duplicated by
    /// Telegram itself.
    pub fn random_id(&self) -> i64 {
        random_id(&self.0)
    }
}

/// See [`IdempotencyKey::random_id`].
pub fn random_id(key: &str) -> i64 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn random_id_is_the_first_8_bytes_of_sha256() {
        // sha256("abc") = ba7816bf8f01cfea 414140de5dae2223 ...
        assert_eq!(
            random_id("abc"),
            i64::from_be_bytes([0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea])
        );
        assert_eq!(random_id("abc"), random_id("abc"));
        assert_ne!(random_id("abc"), random_id("abd"));
    }

    #[test]
    fn key_parsing() {
        assert_eq!(IdempotencyKey::parse(None), Err(KeyError::Missing));
        assert_eq!(IdempotencyKey::parse(Some(b"   ")), Err(KeyError::Missing));
        assert_eq!(
            IdempotencyKey::parse(Some("x".repeat(201).as_bytes())),
            Err(KeyError::Invalid)
        );
        assert_eq!(IdempotencyKey::parse(Some(b"a\tb")), Err(KeyError::Invalid));
        let key = IdempotencyKey::parse(Some(" 0190-abc ".as_bytes())).unwrap();
        assert_eq!(key.as_str(), "0190-abc");
        assert_eq!(key.random_id(), random_id("0190-abc"));
        assert!(IdempotencyKey::parse(Some("x".repeat(200).as_bytes())).is_ok());
    }
}
