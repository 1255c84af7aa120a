//! Authentication: passwords, access tokens, refresh-token sessions, login
//! throttling and the `/api/auth/*` routes.

pub mod admin;
pub mod jwt;
pub mod password;
pub mod ratelimit;
pub mod routes;
pub mod session;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use axum::http::HeaderMap;

/// Session settings from the configuration.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub refresh_ttl: Duration,
    pub trust_forwarded_for: bool,
}

impl AuthSettings {
    /// The client's address: the peer, or with `TRUST_FORWARDED_FOR` the
    /// last hop of `X-Forwarded-For` (the address the trusted proxy saw).
    pub fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        if self.trust_forwarded_for
            && let Some(last) = headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            return last;
        }
        peer.ip()
    }
}
