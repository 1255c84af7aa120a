//! Bearer-token check for the `/v1` routes and, with a token of its own, the
//! `/sandbox` routes, compared in
//! constant time (over SHA-256 digests, so the length does not leak either).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The expected token, kept only as a digest.
#[derive(Clone)]
pub struct BearerAuth {
    digest: Arc<[u8; 32]>,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(bytes));
    out
}

impl BearerAuth {
    pub fn new(token: &SecretString) -> Self {
        Self {
            digest: Arc::new(digest(token.expose_secret().as_bytes())),
        }
    }

    /// Whether an `Authorization` header value carries the token.
    pub fn accepts(&self, header_value: Option<&[u8]>) -> bool {
        let Some(value) = header_value else {
            return false;
        };
        let Some((scheme, token)) = value.split_at_checked(7) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        digest(token.trim_ascii())
            .ct_eq(self.digest.as_ref())
            .into()
    }
}

/// Middleware: 401 unless the request carries the token.
pub async fn require_bearer(
    State(auth): State<BearerAuth>,
    request: Request,
    next: Next,
) -> Response {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if auth.accepts(value) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        let auth = BearerAuth::new(&SecretString::from("0123456789abcdef"));
        assert!(auth.accepts(Some(b"Bearer 0123456789abcdef")));
        assert!(auth.accepts(Some(b"bearer 0123456789abcdef")));
        assert!(!auth.accepts(Some(b"Bearer 0123456789abcdeF")));
        assert!(!auth.accepts(Some(b"Bearer 0123456789abcde")));
        assert!(!auth.accepts(Some(b"Basic 0123456789abcdef")));
        assert!(!auth.accepts(Some(b"Bearer")));
        assert!(!auth.accepts(None));
    }
}
