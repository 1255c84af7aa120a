//! The local backend's URL signatures: HMAC-SHA256 over everything a URL
//! grants (operation, key, expiry, content type, and the size for an upload
//! or the download name for a download), checked in constant time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::StorageError;

/// Shortest signing key accepted, in bytes.
pub(crate) const MIN_KEY_LEN: usize = 32;

/// What a URL allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Upload exactly `size` bytes of `content_type` to `key`.
    Put {
        key: String,
        content_type: String,
        size: u64,
    },
    /// Download `key` as `content_type`, named `download_name`.
    Get {
        key: String,
        content_type: String,
        download_name: String,
    },
}

/// Why a signed URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not signed by us, or changed since.
    BadSignature,
    /// Signed, but its time is up.
    Expired,
}

#[derive(Clone)]
pub(crate) struct UrlSigner {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(..)")
    }
}

impl UrlSigner {
    const LABEL: &'static [u8] = b"fastprep-admin attachment url v1";

    /// A signer whose key is derived from `secret` (at least
    /// [`MIN_KEY_LEN`] bytes), so the same secret could serve other
    /// purposes without its MACs being interchangeable.
    pub(crate) fn new(secret: &SecretString) -> Result<Self, StorageError> {
        let secret = secret.expose_secret().as_bytes();
        if secret.len() < MIN_KEY_LEN {
            return Err(StorageError::Config(format!(
                "the attachment URL signing key must be at least {MIN_KEY_LEN} bytes"
            )));
        }
        let mut kdf = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        kdf.update(Self::LABEL);
        let key = kdf.finalize().into_bytes();
        Ok(Self {
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
        })
    }

    /// The signature (base64url) of `grant` until `expires` (Unix seconds).
    pub(crate) fn sign(&self, grant: &Grant, expires: u64) -> String {
        URL_SAFE_NO_PAD.encode(self.tag(grant, expires))
    }

    /// Checks `signature` for `grant` until `expires`, at `now`.
    pub(crate) fn verify(
        &self,
        grant: &Grant,
        expires: u64,
        signature: &str,
        now: SystemTime,
    ) -> Result<(), Refusal> {
        let given = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Refusal::BadSignature)?;
        let expected = self.tag(grant, expires);
        if !bool::from(expected.as_slice().ct_eq(&given)) {
            return Err(Refusal::BadSignature);
        }
        if unix_seconds(now) > expires {
            return Err(Refusal::Expired);
        }
        Ok(())
    }

    fn tag(&self, grant: &Grant, expires: u64) -> [u8; 32] {
        let mut mac = self.mac.clone();
        // Every field length-prefixed: no two grants share an encoding.
        let mut field = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        match grant {
            Grant::Put {
                key,
                content_type,
                size,
            } => {
                field(b"put");
                field(key.as_bytes());
                field(&expires.to_be_bytes());
                field(content_type.as_bytes());
                field(&size.to_be_bytes());
            }
            Grant::Get {
                key,
                content_type,
                download_name,
            } => {
                field(b"get");
                field(key.as_bytes());
                field(&expires.to_be_bytes());
                field(content_type.as_bytes());
                field(download_name.as_bytes());
            }
        }
        mac.finalize().into_bytes().into()
    }
}

/// Seconds since the Unix epoch (0 for a clock before it).
pub(crate) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The expiry of a URL signed at `now` for `ttl`, rounded up to a second.
pub(crate) fn expiry(now: SystemTime, ttl: Duration) -> u64 {
    let ttl = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    unix_seconds(now).saturating_add(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(secret: &str) -> UrlSigner {
        UrlSigner::new(&SecretString::from(secret.to_owned())).unwrap()
    }

    fn put() -> Grant {
        Grant::Put {
            key: "attachments/1".to_owned(),
            content_type: "image/png".to_owned(),
            size: 1000,
        }
    }

    fn get() -> Grant {
        Grant::Get {
            key: "attachments/1".to_owned(),
            content_type: "image/png".to_owned(),
            download_name: "photo.png".to_owned(),
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    #[test]
    fn a_signature_verifies_until_it_expires() {
        let s = signer(SECRET);
        let now = SystemTime::now();
        let exp = expiry(now, Duration::from_secs(600));
        assert_eq!(exp, unix_seconds(now) + 600);
        for grant in [put(), get()] {
            let sig = s.sign(&grant, exp);
            assert_eq!(s.verify(&grant, exp, &sig, now), Ok(()));
            assert_eq!(
                s.verify(&grant, exp, &sig, now + Duration::from_secs(600)),
                Ok(())
            );
            assert_eq!(
                s.verify(&grant, exp, &sig, now + Duration::from_secs(601)),
                Err(Refusal::Expired)
            );
        }
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let s = signer(SECRET);
        let now = SystemTime::now();
        let exp = expiry(now, Duration::from_secs(60));
        let sig = s.sign(&put(), exp);
        let changed = [
            Grant::Put {
                key: "attachments/2".to_owned(),
                content_type: "image/png".to_owned(),
                size: 1000,
            },
            Grant::Put {
                key: "attachments/1".to_owned(),
                content_type: "text/html".to_owned(),
                size: 1000,
            },
            Grant::Put {
                key: "attachments/1".to_owned(),
                content_type: "image/png".to_owned(),
                size: 1001,
            },
            Grant::Get {
                key: "attachments/1".to_owned(),
                content_type: "image/png".to_owned(),
                download_name: String::new(),
            },
        ];
        for grant in changed {
            assert_eq!(
                s.verify(&grant, exp, &sig, now),
                Err(Refusal::BadSignature),
                "{grant:?}"
            );
        }
        // A later expiry is not granted by an earlier signature.
        assert_eq!(
            s.verify(&put(), exp + 3600, &sig, now),
            Err(Refusal::BadSignature)
        );
        // Nor does another key sign the same grant.
        let other = signer("fedcba9876543210fedcba9876543210-other");
        assert_eq!(
            other.verify(&put(), exp, &sig, now),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn tampered_or_malformed_signatures_are_refused() {
        let s = signer(SECRET);
        let now = SystemTime::now();
        let exp = expiry(now, Duration::from_secs(60));
        let sig = s.sign(&put(), exp);
        let mut flipped = sig.clone().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [
            flipped.as_str(),
            &sig[..sig.len() - 1],
            "",
            "!!!",
            &format!("{sig}AA"),
        ] {
            assert_eq!(
                s.verify(&put(), exp, bad, now),
                Err(Refusal::BadSignature),
                "{bad:?}"
            );
        }
        // An expired URL with a bad signature says "bad signature": the
        // expiry of a forged URL is not worth reporting.
        assert_eq!(
            s.verify(&put(), exp, &flipped, now + Duration::from_secs(3600)),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn a_short_key_is_refused() {
        assert!(UrlSigner::new(&SecretString::from("short".to_owned())).is_err());
    }

    #[test]
    fn expiry_rounds_a_partial_second_up() {
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(expiry(now, Duration::from_millis(1)), 101);
        assert_eq!(expiry(now, Duration::from_secs(1)), 101);
        assert_eq!(expiry(now, Duration::ZERO), 100);
    }
}
