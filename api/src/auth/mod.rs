//! Authentication: passwords, access tokens, refresh-token sessions, login
//! throttling and the `/api/auth/*` routes.

pub mod jwt;
pub mod password;
pub mod ratelimit;
pub mod routes;
pub mod session;

use std::time::Duration;

/// Session settings from the configuration.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub refresh_ttl: Duration,
    pub trust_forwarded_for: bool,
}
