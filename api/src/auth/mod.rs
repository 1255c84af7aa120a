//! Authentication: passwords, access tokens, refresh-token sessions, login
//! throttling and the `/api/auth/*` routes.

pub mod admin;
pub mod cookie;
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
    /// `CORS_ORIGINS`: the only origins a browser may use the refresh
    /// cookie from.
    pub origins: Vec<String>,
}

impl AuthSettings {
    /// The client as throttling and connection caps count it: the peer, or
    /// with `TRUST_FORWARDED_FOR` the last hop of `X-Forwarded-For` (the
    /// address the trusted proxy saw, on the last header line if it sent
    /// several). An IPv6 client is its /64, since one host holds a whole
    /// /64; an IPv4-mapped address is its IPv4 address.
    pub fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let forwarded = self
            .trust_forwarded_for
            .then(|| {
                headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .next_back()
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.rsplit(',').next())
                    .and_then(|v| v.trim().parse::<IpAddr>().ok())
            })
            .flatten();
        network(forwarded.unwrap_or_else(|| peer.ip()))
    }
}

/// An account's email, trimmed and lower-cased, or `422 invalid_email`:
/// 3 to 254 characters, no whitespace or control characters, one `@` with a
/// dotted domain.
pub fn check_email(raw: &str) -> crate::error::ApiResult<String> {
    let email = raw.trim().to_lowercase();
    let ok = (3..=254).contains(&email.len())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if ok {
        Ok(email)
    } else {
        Err(crate::error::ApiError::Unprocessable {
            code: "invalid_email",
            message: "email is not a valid address".into(),
        })
    }
}

/// An address as one client: IPv6 reduced to its /64.
fn network(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_addresses_and_ipv6_networks() {
        let settings = AuthSettings {
            refresh_ttl: Duration::from_secs(1),
            trust_forwarded_for: true,
            origins: Vec::new(),
        };
        let peer: SocketAddr = "10.0.0.1:1234".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(
            settings.client_addr(peer, &headers),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        headers.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
        headers.append(
            "x-forwarded-for",
            "2001:db8:1:2:aaaa::1, 2001:db8:1:2:bbbb::2"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            settings.client_addr(peer, &headers),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap(),
            "the last line's last hop, as its /64"
        );
        let mut mapped = HeaderMap::new();
        mapped.append("x-forwarded-for", "::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(
            settings.client_addr(peer, &mapped),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }
}
