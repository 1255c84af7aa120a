//! The refresh token as a cookie, for browsers (ADR 0019).
//!
//! A client asks for it with `X-Refresh-Cookie: 1` on `login`, `refresh`,
//! `logout` and `password`: the refresh token then travels only in an
//! `HttpOnly; Secure; SameSite=Strict` cookie scoped to `/api/auth`, and the
//! JSON answers carry `refresh_token: null`. Without the header nothing
//! changes: the token is in the body, as non-browser clients use it.
//!
//! The header is also the CSRF guard. A page on another site can make a
//! browser send the cookie only with a request it may not read; a custom
//! header makes that request need a CORS preflight, which only the origins
//! of `CORS_ORIGINS` pass. The `Origin` a browser sends with the request is
//! checked against the same list as well, and `SameSite=Strict` keeps the
//! cookie out of requests another site starts.

use std::time::Duration;

use axum::http::{
    HeaderMap, HeaderValue,
    header::{COOKIE, ORIGIN},
};

use crate::error::ApiError;

/// The cookie's name.
pub const NAME: &str = "fastprep_refresh";
/// The header that asks for the cookie (and guards against CSRF).
pub const MODE_HEADER: &str = "x-refresh-cookie";
/// The only path the browser sends the cookie to.
pub const PATH: &str = "/api/auth";

/// Whether the request asked for the cookie: `X-Refresh-Cookie: 1`, from no
/// origin (a script) or one of `origins`. `403 origin_not_allowed` for the
/// header from any other origin, `400 invalid_refresh_cookie_header` for
/// another value.
pub fn requested(headers: &HeaderMap, origins: &[String]) -> Result<bool, ApiError> {
    let Some(value) = headers.get(MODE_HEADER) else {
        return Ok(false);
    };
    if value.as_bytes() != b"1" {
        return Err(ApiError::BadRequest {
            code: "invalid_refresh_cookie_header",
            message: format!("{MODE_HEADER} must be 1"),
        });
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| origins.iter().any(|allowed| allowed == o));
        if !allowed {
            return Err(ApiError::ForbiddenBecause {
                code: "origin_not_allowed",
                message: "this origin may not use the session cookie",
            });
        }
    }
    Ok(true)
}

/// The refresh token the request's cookie carries, if any.
pub fn read(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == NAME)
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a session's refresh token, living `ttl`.
pub fn set(secret: &str, ttl: Duration) -> HeaderValue {
    header(secret, ttl.as_secs())
}

/// `Set-Cookie` that removes the cookie.
pub fn clear() -> HeaderValue {
    HeaderValue::from_static(
        "fastprep_refresh=; Max-Age=0; Path=/api/auth; HttpOnly; Secure; SameSite=Strict",
    )
}

fn header(value: &str, max_age: u64) -> HeaderValue {
    // The secret is hex, so the value is always a valid header; were it
    // not, the cookie is removed rather than set.
    HeaderValue::from_str(&format!(
        "{NAME}={value}; Max-Age={max_age}; Path={PATH}; HttpOnly; Secure; SameSite=Strict"
    ))
    .unwrap_or_else(|_| clear())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_header_asks_and_the_origin_must_be_listed() {
        let origins = vec!["https://app.example".to_owned()];
        assert!(!requested(&headers(&[]), &origins).unwrap());
        assert!(requested(&headers(&[(MODE_HEADER, "1")]), &origins).unwrap());
        assert!(
            requested(
                &headers(&[(MODE_HEADER, "1"), ("origin", "https://app.example")]),
                &origins
            )
            .unwrap()
        );
        let foreign = requested(
            &headers(&[(MODE_HEADER, "1"), ("origin", "https://evil.example")]),
            &origins,
        );
        assert!(matches!(
            foreign,
            Err(ApiError::ForbiddenBecause {
                code: "origin_not_allowed",
                ..
            })
        ));
        // `Origin: null` (a sandboxed frame, a file) is not a listed origin.
        assert!(
            requested(
                &headers(&[(MODE_HEADER, "1"), ("origin", "null")]),
                &origins
            )
            .is_err()
        );
        assert!(requested(&headers(&[(MODE_HEADER, "yes")]), &origins).is_err());
        // Without the header, the origin is not this module's business.
        assert!(!requested(&headers(&[("origin", "https://evil.example")]), &origins).unwrap());
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        assert_eq!(read(&headers(&[])), None);
        assert_eq!(
            read(&headers(&[("cookie", "a=1; fastprep_refresh=abc12; b=2")])),
            Some("abc12".to_owned())
        );
        assert_eq!(
            read(&headers(&[
                ("cookie", "a=1"),
                ("cookie", "fastprep_refresh=ff")
            ])),
            Some("ff".to_owned())
        );
        assert_eq!(read(&headers(&[("cookie", "fastprep_refresh=")])), None);
        assert_eq!(read(&headers(&[("cookie", "xfastprep_refresh=1")])), None);
    }

    #[test]
    fn the_cookie_is_http_only_secure_strict_and_scoped() {
        let v = set("00ff", Duration::from_secs(60));
        assert_eq!(
            v.to_str().unwrap(),
            "fastprep_refresh=00ff; Max-Age=60; Path=/api/auth; HttpOnly; Secure; SameSite=Strict"
        );
        assert!(
            clear()
                .to_str()
                .unwrap()
                .starts_with("fastprep_refresh=; Max-Age=0;")
        );
    }
}
