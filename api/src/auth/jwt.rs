//! Access tokens: HS256 JWTs with a pinned algorithm, issuer and audience,
//! carrying the user id and the user's permission version (`pv`).

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const ISSUER: &str = "fastprep-admin";
pub const AUDIENCE: &str = "fastprep-admin-api";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: Uuid,
    pub pv: i64,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl Keys {
    pub fn new(secret: &SecretString, ttl: Duration) -> anyhow::Result<Self> {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Ok(Self {
            encoding: EncodingKey::from_secret(bytes)?,
            decoding: DecodingKey::from_secret(bytes)?,
            validation,
            ttl,
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues an access token for `user` at permission version `pv`.
    pub fn issue(&self, user: Uuid, pv: i64) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user,
            pv,
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(300),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Verifies signature, algorithm, expiry, issuer and audience.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(
            &SecretString::from("0123456789abcdef0123456789abcdef"),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    #[test]
    fn round_trip_and_wrong_key() {
        let k = keys();
        let t = k.issue(Uuid::now_v7(), 3).unwrap();
        assert_eq!(k.verify(&t).unwrap().pv, 3);
        let other = Keys::new(
            &SecretString::from("another-secret-another-secret-xx"),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(other.verify(&t).is_none());
    }

    #[test]
    fn alg_none_is_refused() {
        let k = keys();
        let t = k.issue(Uuid::now_v7(), 1).unwrap();
        let payload = t.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"}
        let forged = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(k.verify(&forged).is_none());
    }
}
