//! The security suite, password guessing: attempts are counted before they
//! are checked, a stranger's failures slow an account without locking its
//! owner out, an address spraying accounts is stopped, the current password
//! cannot be guessed through a password change, and a flood of sign-ins
//! hashes only a few passwords at a time.

use std::time::Duration;

use fastprep_tests::{
    TestEnv,
    accounts::{USER_PASSWORD, VIEWER_ROLE},
    env,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A random address of this test's own, so counters in the shared Redis
/// are never another test's.
fn addr() -> String {
    format!(
        "10.{}.{}.{}",
        rand::random::<u8>(),
        rand::random::<u8>(),
        rand::random::<u8>()
    )
}

async fn login_from(
    env: &TestEnv,
    api: &str,
    ip: &str,
    email: &str,
    password: &str,
) -> (StatusCode, Option<u64>, Value) {
    let resp = env
        .http
        .raw()
        .post(format!("{api}/api/auth/login"))
        .header("x-forwarded-for", format!("203.0.113.9, {ip}"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

/// An API with real limits, its admin token and two fresh accounts.
async fn throttled(env: &mut TestEnv, limits: &[(&str, &str)]) -> (String, String, String) {
    let mut vars = vec![("TRUST_FORWARDED_FOR", "true".to_owned())];
    vars.extend(limits.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let api = env.start_api(&vars).await.url;
    let (s, _, body) = login_from(env, &api, &addr(), env::ADMIN_EMAIL, env::ADMIN_PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let admin = body["access_token"].as_str().unwrap().to_owned();
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let victim = format!("victim-{tag}@fastprep.test");
    let bystander = format!("bystander-{tag}@fastprep.test");
    env.create_user(&api, &admin, &victim, &[VIEWER_ROLE]).await;
    env.create_user(&api, &admin, &bystander, &[VIEWER_ROLE])
        .await;
    (api, victim, bystander)
}

#[tokio::test]
async fn parallel_guesses_are_counted_before_any_is_checked() {
    let mut env = TestEnv::new().await;
    let (api, victim, _) = throttled(&mut env, &[("LOGIN_ACCOUNT_LIMIT", "5")]).await;
    let ip = addr();
    let guesses: Vec<String> = (0..10).map(|i| format!("wrong-guess-{i}")).collect();
    let answers = futures::future::join_all(
        guesses
            .iter()
            .map(|guess| login_from(&env, &api, &ip, &victim, guess)),
    )
    .await;
    let checked = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = answers
        .iter()
        .filter(|(s, r, _)| *s == StatusCode::TOO_MANY_REQUESTS && r.is_some())
        .count();
    assert_eq!(
        (checked, refused),
        (5, 5),
        "10 parallel guesses against a limit of 5: {answers:?}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_strangers_failures_slow_the_account_but_never_lock_its_owner_out() {
    let mut env = TestEnv::new().await;
    let (api, victim, bystander) = throttled(
        &mut env,
        &[
            ("LOGIN_ACCOUNT_LIMIT", "3"),
            ("LOGIN_ADDRESS_LIMIT", "5"),
            ("LOGIN_ACCOUNT_SLOW_AFTER", "6"),
            ("LOGIN_ACCOUNT_INTERVAL", "2s"),
            ("LOGIN_LIMIT_WINDOW", "10m"),
        ],
    )
    .await;
    let (home, attacker) = (addr(), addr());
    // The owner signs in from home once: home becomes a known address.
    let (s, _, _) = login_from(&env, &api, &home, &victim, USER_PASSWORD).await;
    assert_eq!(s, StatusCode::OK);

    // Three failures from one address lock that address out of the account,
    // even with the right password ...
    for _ in 0..3 {
        let (s, _, _) = login_from(&env, &api, &attacker, &victim, "not-the-password").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, retry, body) = login_from(&env, &api, &attacker, &victim, USER_PASSWORD).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!((1..=600).contains(&retry.expect("Retry-After")));
    assert_eq!(body["error"]["code"], "too_many_requests");
    // ... but not the owner, from their own address or a new one.
    let (s, _, body) = login_from(&env, &api, &home, &victim, USER_PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _, body) = login_from(&env, &api, &addr(), &victim, USER_PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // Failures from many addresses (a botnet) slow the account: one attempt
    // per interval from addresses it has not signed in from.
    for _ in 0..3 {
        let (s, _, _) = login_from(&env, &api, &addr(), &victim, "not-the-password").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, _, _) = login_from(&env, &api, &addr(), &victim, "not-the-password").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "takes the slot");
    let (s, retry, _) = login_from(&env, &api, &addr(), &victim, USER_PASSWORD).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!((1..=2).contains(&retry.expect("Retry-After")), "{retry:?}");
    // The owner at home is not slowed, and the pace comes back.
    let (s, _, body) = login_from(&env, &api, &home, &victim, USER_PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, _, body) = login_from(&env, &api, &addr(), &victim, USER_PASSWORD).await;
    assert_eq!(s, StatusCode::OK, "after the interval: {body}");

    // One address spraying many accounts is stopped.
    let sprayer = addr();
    for i in 0..5 {
        let (s, _, _) = login_from(
            &env,
            &api,
            &sprayer,
            &format!("spray{i}-{victim}"),
            "guess-guess-guess",
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, retry, _) = login_from(&env, &api, &sprayer, &bystander, USER_PASSWORD).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some());
    // The same words whether the account exists or not.
    let (_, _, unknown) = login_from(&env, &api, &addr(), "nobody@fastprep.test", "x-x-x-x").await;
    let (_, _, wrong) = login_from(&env, &api, &addr(), &bystander, "x-x-x-x").await;
    assert_eq!(unknown["error"], {
        let mut w = wrong["error"].clone();
        w["request_id"] = unknown["error"]["request_id"].clone();
        w
    });
    env.cleanup().await;
}

#[tokio::test]
async fn the_current_password_cannot_be_guessed_through_a_password_change() {
    let mut env = TestEnv::new().await;
    let (api, victim, _) = throttled(&mut env, &[("LOGIN_ACCOUNT_LIMIT", "3")]).await;
    let ip = addr();
    let (s, _, body) = login_from(&env, &api, &ip, &victim, USER_PASSWORD).await;
    assert_eq!(s, StatusCode::OK);
    let token = body["access_token"].as_str().unwrap().to_owned();
    let change = |current: &str| {
        env.http
            .raw()
            .post(format!("{api}/api/auth/password"))
            .bearer_auth(&token)
            .header("x-forwarded-for", ip.clone())
            .json(&json!({"current_password": current, "new_password": "a-brand-new-password"}))
            .send()
    };
    for i in 0..3 {
        let resp = change(&format!("guess-number-{i}")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let resp = change(USER_PASSWORD).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    // Nothing changed: the password is the old one.
    let (s, _, _) = login_from(&env, &api, &addr(), &victim, USER_PASSWORD).await;
    assert_eq!(s, StatusCode::OK);
    env.cleanup().await;
}

#[tokio::test]
async fn a_flood_of_sign_ins_hashes_a_few_passwords_at_a_time() {
    let mut env = TestEnv::new().await;
    let started = env
        .start_api(&[("PASSWORD_HASH_CONCURRENCY", "2".to_owned())])
        .await;
    let api = started.url.clone();
    let pid = env.proc(started.idx).pid().unwrap();
    let rss = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
    };
    let before = rss();
    // 48 sign-ins at once, each costing an argon2 hash of 19 MiB.
    let flood = (0..48).map(|i| {
        let (http, url) = (env.http.clone(), format!("{api}/api/auth/login"));
        async move {
            http.call(
                Method::POST,
                &url,
                None,
                Some(json!({"email": format!("nobody{i}@fastprep.test"), "password": "whatever-it-is"})),
            )
            .await
        }
    });
    let answers = futures::future::join_all(flood).await;
    for (s, body) in &answers {
        assert!(
            *s == StatusCode::UNAUTHORIZED
                || (*s == StatusCode::SERVICE_UNAVAILABLE && body["error"]["code"] == "busy"),
            "{s} {body}"
        );
    }
    let grown_mib = (rss().saturating_sub(before)) / 1024;
    // Two hashes at a time stay near 2 x 19 MiB; 48 at once would need 900.
    assert!(
        grown_mib < 160,
        "peak memory grew by {grown_mib} MiB during the flood"
    );
    env.cleanup().await;
}
