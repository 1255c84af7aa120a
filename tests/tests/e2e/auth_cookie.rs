//! The refresh token in a cookie (ADR 0019): its attributes, refresh and
//! sign-out through it, refused without the guard header or from a foreign
//! origin, rotation and reuse detection as with a token in the body; and
//! clients that do not ask for it see the API as before.

use fastprep_tests::{TestEnv, accounts::session_from, env};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

const APP: &str = "https://app.fastprep.test";
const GUARD: &str = "x-refresh-cookie";

/// One answer: status, `Set-Cookie` lines, body.
struct Answer {
    status: StatusCode,
    set_cookie: Vec<String>,
    body: Value,
}

impl Answer {
    /// The `fastprep_refresh` value the answer sets ("" when it removes it).
    fn cookie(&self) -> Option<String> {
        self.set_cookie.iter().find_map(|c| {
            c.strip_prefix("fastprep_refresh=")
                .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
        })
    }
}

struct Req<'a> {
    method: Method,
    path: &'a str,
    guard: bool,
    origin: Option<&'a str>,
    cookie: Option<&'a str>,
    bearer: Option<&'a str>,
    body: Value,
}

impl<'a> Req<'a> {
    fn post(path: &'a str, body: Value) -> Self {
        Self {
            method: Method::POST,
            path,
            guard: true,
            origin: Some(APP),
            cookie: None,
            bearer: None,
            body,
        }
    }
}

async fn send(env: &TestEnv, api: &str, r: Req<'_>) -> Answer {
    let mut req = env
        .http
        .raw()
        .request(r.method, format!("{api}/api{}", r.path))
        .json(&r.body);
    if r.guard {
        req = req.header(GUARD, "1");
    }
    if let Some(o) = r.origin {
        req = req.header(header::ORIGIN, o);
    }
    if let Some(c) = r.cookie {
        req = req.header(header::COOKIE, format!("other=1; fastprep_refresh={c}"));
    }
    if let Some(t) = r.bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let set_cookie = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        set_cookie,
        body,
    }
}

fn credentials() -> Value {
    json!({"email": env::ADMIN_EMAIL, "password": env::ADMIN_PASSWORD})
}

async fn start(env: &mut TestEnv) -> String {
    env.start_api(&[
        ("CORS_ORIGINS", APP.to_owned()),
        ("REFRESH_TOKEN_TTL", "3600s".to_owned()),
    ])
    .await
    .url
}

/// Signs in asking for the cookie; its value.
async fn sign_in(env: &TestEnv, api: &str) -> (String, String) {
    let a = send(env, api, Req::post("/auth/login", credentials())).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let cookie = a.cookie().expect("a refresh cookie");
    (a.body["access_token"].as_str().unwrap().to_owned(), cookie)
}

async fn me(env: &TestEnv, api: &str, access: &str) -> StatusCode {
    env.http.get(&format!("{api}/api/auth/me"), access).await.0
}

#[tokio::test]
async fn the_refresh_cookie_is_http_only_secure_strict_and_scoped_and_refreshes() {
    let mut env = TestEnv::new().await;
    let api = start(&mut env).await;

    // Asked for: the refresh token is in the cookie only.
    let login = send(&env, &api, Req::post("/auth/login", credentials())).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    assert!(login.body["refresh_token"].is_null(), "{}", login.body);
    assert_eq!(login.set_cookie.len(), 1, "{:?}", login.set_cookie);
    let line = &login.set_cookie[0];
    let attrs: Vec<&str> = line.split(';').map(str::trim).skip(1).collect();
    for want in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/api/auth",
        "Max-Age=3600",
    ] {
        assert!(attrs.contains(&want), "{want} missing from {line}");
    }
    assert!(
        !attrs.iter().any(|a| a.starts_with("Domain")),
        "a host-only cookie: {line}"
    );
    let first = login.cookie().unwrap();
    assert_eq!(first.len(), 64, "{line}");

    // Refresh through the cookie: a new access token, the cookie rotated.
    let mut r = Req::post("/auth/refresh", json!({}));
    r.cookie = Some(&first);
    let refreshed = send(&env, &api, r).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert!(refreshed.body["refresh_token"].is_null());
    let second = refreshed.cookie().expect("a rotated cookie");
    assert_ne!(second, first);
    let access = refreshed.body["access_token"].as_str().unwrap();
    assert_eq!(me(&env, &api, access).await, StatusCode::OK);

    // Without the header, from a script: the token in the body, no cookie,
    // as before.
    let mut plain = Req::post("/auth/login", credentials());
    plain.guard = false;
    plain.origin = None;
    let plain = send(&env, &api, plain).await;
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.body);
    assert!(plain.set_cookie.is_empty(), "{:?}", plain.set_cookie);
    let session = session_from(&plain.body);
    assert_eq!(session.refresh.len(), 64);
    let (s, body) = env.refresh(&api, &session.refresh).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body["refresh_token"].is_string());
    env.cleanup().await;
}

#[tokio::test]
async fn a_cookie_refresh_is_refused_without_the_header_or_from_a_foreign_origin() {
    let mut env = TestEnv::new().await;
    let api = start(&mut env).await;
    let (_, cookie) = sign_in(&env, &api).await;

    // The cookie alone (what a cross-site form could send) is not read.
    let mut bare = Req::post("/auth/refresh", json!({}));
    bare.guard = false;
    bare.cookie = Some(&cookie);
    let bare = send(&env, &api, bare).await;
    assert_eq!(
        bare.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        bare.body
    );
    assert_eq!(bare.body["error"]["code"], "missing_refresh_token");
    assert!(bare.set_cookie.is_empty());

    // The header from a page on a site not in CORS_ORIGINS.
    let mut foreign = Req::post("/auth/refresh", json!({}));
    foreign.origin = Some("https://evil.test");
    foreign.cookie = Some(&cookie);
    let foreign = send(&env, &api, foreign).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN, "{}", foreign.body);
    assert_eq!(foreign.body["error"]["code"], "origin_not_allowed");
    let mut login = Req::post("/auth/login", credentials());
    login.origin = Some("https://evil.test");
    let login = send(&env, &api, login).await;
    assert_eq!(login.status, StatusCode::FORBIDDEN, "{}", login.body);
    assert!(login.set_cookie.is_empty());

    // The browser's preflight for the header: granted to the listed origin
    // only, with credentials.
    let preflight = |origin: &'static str| {
        env.http
            .raw()
            .request(Method::OPTIONS, format!("{api}/api/auth/refresh"))
            .header(header::ORIGIN, origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-refresh-cookie",
            )
            .send()
    };
    let ours = preflight(APP).await.unwrap();
    let h = ours.headers();
    assert_eq!(h["access-control-allow-origin"], APP);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("x-refresh-cookie"),
        "{h:?}"
    );
    let theirs = preflight("https://evil.test").await.unwrap();
    assert!(
        theirs
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "{:?}",
        theirs.headers()
    );

    // None of the refusals spent the cookie.
    let mut ok = Req::post("/auth/refresh", json!({}));
    ok.cookie = Some(&cookie);
    let ok = send(&env, &api, ok).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);

    // No cookie at all: a plain 401, nothing to remove but the name.
    let none = send(&env, &api, Req::post("/auth/refresh", json!({}))).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{}", none.body);
    assert_eq!(none.body["error"]["code"], "invalid_refresh_token");
    env.cleanup().await;
}

#[tokio::test]
async fn sign_out_through_the_cookie_ends_the_session_and_removes_the_cookie() {
    let mut env = TestEnv::new().await;
    let api = start(&mut env).await;
    let (access, cookie) = sign_in(&env, &api).await;
    let (other_access, other_cookie) = sign_in(&env, &api).await;

    let mut out = Req::post("/auth/logout", json!({}));
    out.cookie = Some(&cookie);
    out.bearer = Some(&access);
    let out = send(&env, &api, out).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.body);
    assert_eq!(out.cookie().as_deref(), Some(""), "{:?}", out.set_cookie);
    assert!(
        out.set_cookie[0].contains("Max-Age=0"),
        "{:?}",
        out.set_cookie
    );

    // The cookie's session is over, and its access tokens with it.
    let mut again = Req::post("/auth/refresh", json!({}));
    again.cookie = Some(&cookie);
    let again = send(&env, &api, again).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{}", again.body);
    assert_eq!(
        again.cookie().as_deref(),
        Some(""),
        "a refused cookie is removed"
    );
    assert_eq!(me(&env, &api, &access).await, StatusCode::UNAUTHORIZED);

    // Another browser's session is its own.
    let mut other = Req::post("/auth/refresh", json!({}));
    other.cookie = Some(&other_cookie);
    let other = send(&env, &api, other).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let _ = other_access;
    env.cleanup().await;
}

#[tokio::test]
async fn a_spent_cookie_presented_again_ends_the_family() {
    let mut env = TestEnv::new().await;
    let api = start(&mut env).await;
    let (_, first) = sign_in(&env, &api).await;

    let mut r = Req::post("/auth/refresh", json!({}));
    r.cookie = Some(&first);
    let rotated = send(&env, &api, r).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let second = rotated.cookie().unwrap();
    let access = rotated.body["access_token"].as_str().unwrap().to_owned();

    // A copy of the first cookie comes back: reuse.
    let mut stolen = Req::post("/auth/refresh", json!({}));
    stolen.cookie = Some(&first);
    let stolen = send(&env, &api, stolen).await;
    assert_eq!(stolen.status, StatusCode::UNAUTHORIZED, "{}", stolen.body);
    assert_eq!(stolen.body["error"]["code"], "refresh_reused");
    assert_eq!(stolen.cookie().as_deref(), Some(""));

    // The whole family is over: the current cookie and its access token.
    let mut current = Req::post("/auth/refresh", json!({}));
    current.cookie = Some(&second);
    let current = send(&env, &api, current).await;
    assert_eq!(current.status, StatusCode::UNAUTHORIZED, "{}", current.body);
    assert_eq!(me(&env, &api, &access).await, StatusCode::UNAUTHORIZED);
    env.cleanup().await;
}
