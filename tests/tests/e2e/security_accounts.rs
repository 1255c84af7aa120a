//! The security suite, accounts: a lesser account cannot change a greater
//! one, no one changes their own roles, a refresh race leaves no access
//! token alive after reuse is detected, and `create-admin` ends the sessions
//! of the account it resets.

use std::time::Duration;

use fastprep_tests::{
    TestEnv,
    accounts::{ADMIN_ROLE, OPERATOR_ROLE, USER_PASSWORD, VIEWER_ROLE, session_from},
    env, wait_for,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn call(
    env: &TestEnv,
    api: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    env.http
        .call(method, &format!("{api}/api{path}"), Some(token), body)
        .await
}

#[tokio::test]
async fn users_manage_alone_cannot_take_over_an_account_that_outranks_it() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let api = api.url.as_str();
    let admin = env.admin_session(api).await;
    let hr_role = env
        .create_role(api, &admin.access, "hr", &["users.manage"])
        .await;
    let hr_id = env
        .create_user(api, &admin.access, "hr@fastprep.test", &[&hr_role])
        .await;
    let peer = env
        .create_user(api, &admin.access, "hr2@fastprep.test", &[&hr_role])
        .await;
    let viewer = env
        .create_user(api, &admin.access, "viewer@fastprep.test", &[VIEWER_ROLE])
        .await;
    let second_admin = env
        .create_user(api, &admin.access, "admin2@fastprep.test", &[ADMIN_ROLE])
        .await;
    // A second admin, deactivated: reactivating it is a takeover too.
    let (s, body) = call(
        &env,
        api,
        &admin.access,
        Method::DELETE,
        &format!("/users/{second_admin}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let hr = env.sign_in(api, "hr@fastprep.test", USER_PASSWORD).await;
    let audit_before = env.count("audit_log").await;

    let me = &admin.user_id;
    let attempts = [
        (
            Method::PATCH,
            format!("/users/{me}"),
            Some(json!({"password": "taken-over-password-1"})),
        ),
        (
            Method::PATCH,
            format!("/users/{me}"),
            Some(json!({"email": "attacker@evil.test"})),
        ),
        (
            Method::PATCH,
            format!("/users/{me}"),
            Some(json!({"is_active": false})),
        ),
        (Method::DELETE, format!("/users/{me}"), None),
        (
            Method::PUT,
            format!("/users/{me}/roles"),
            Some(json!({"role_ids": [hr_role]})),
        ),
        (
            Method::PATCH,
            format!("/users/{second_admin}"),
            Some(json!({"is_active": true, "password": "taken-over-password-2"})),
        ),
        // The viewer reads the whole inbox, which HR does not.
        (
            Method::PATCH,
            format!("/users/{viewer}"),
            Some(json!({"password": "taken-over-password-3"})),
        ),
    ];
    for (method, path, body) in attempts {
        let (s, err) = call(&env, api, &hr.access, method.clone(), &path, body).await;
        assert_eq!(
            (s, err["error"]["code"].clone()),
            (StatusCode::FORBIDDEN, json!("outranked")),
            "{method} {path}: {err}"
        );
    }
    assert_eq!(
        env.count("audit_log").await,
        audit_before,
        "nothing written"
    );
    // The admin still signs in with their own password and keeps their role.
    let again = env.admin_session(api).await;
    let (s, _) = call(&env, api, &again.access, Method::GET, "/audit", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = env
        .http
        .call(
            Method::POST,
            &format!("{api}/api/auth/login"),
            None,
            Some(json!({"email": "admin2@fastprep.test", "password": "taken-over-password-2"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // An account it fully covers, HR may manage.
    let (s, body) = call(
        &env,
        api,
        &hr.access,
        Method::PATCH,
        &format!("/users/{peer}"),
        Some(json!({"display_name": "Second HR"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // No one changes their own roles, not even to the same set, nor their
    // own password without the current one.
    for (token, id, roles) in [
        (&hr.access, &hr_id, json!([hr_role])),
        (&again.access, me, json!([ADMIN_ROLE, OPERATOR_ROLE])),
    ] {
        let (s, err) = call(
            &env,
            api,
            token,
            Method::PUT,
            &format!("/users/{id}/roles"),
            Some(json!({"role_ids": roles})),
        )
        .await;
        assert_eq!(
            (s, err["error"]["code"].clone()),
            (StatusCode::FORBIDDEN, json!("own_roles")),
            "{err}"
        );
        let (s, err) = call(
            &env,
            api,
            token,
            Method::PATCH,
            &format!("/users/{id}"),
            Some(json!({"password": "a-new-password-0123"})),
        )
        .await;
        assert_eq!(
            (s, err["error"]["code"].clone()),
            (StatusCode::FORBIDDEN, json!("own_password")),
            "{err}"
        );
        // Nor, with a stolen token, the email one signs in with, nor one's
        // activation.
        for (method, body) in [
            (Method::PATCH, Some(json!({"email": "stolen@evil.test"}))),
            (Method::PATCH, Some(json!({"is_active": false}))),
            (Method::DELETE, None),
        ] {
            let (s, err) = call(&env, api, token, method, &format!("/users/{id}"), body).await;
            assert_eq!(
                (s, err["error"]["code"].clone()),
                (StatusCode::FORBIDDEN, json!("own_account")),
                "{err}"
            );
        }
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_refresh_race_leaves_no_access_token_alive_once_reuse_is_detected() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let api = api.url.as_str();
    let admin = env.admin_session(api).await;
    env.create_user(api, &admin.access, "racer@fastprep.test", &[OPERATOR_ROLE])
        .await;
    let mut winners = 0;
    for round in 0..16 {
        let session = env.sign_in(api, "racer@fastprep.test", USER_PASSWORD).await;
        // The same refresh token presented four times at once: one rotation
        // wins, the others are reuse and revoke the family.
        let racers = (0..4).map(|_| {
            let (http, url, token) = (
                env.http.clone(),
                format!("{api}/api/auth/refresh"),
                session.refresh.clone(),
            );
            async move {
                http.call(
                    Method::POST,
                    &url,
                    None,
                    Some(json!({"refresh_token": token})),
                )
                .await
            }
        });
        let answers = futures::future::join_all(racers).await;
        let reused = answers
            .iter()
            .filter(|(s, b)| {
                *s == StatusCode::UNAUTHORIZED && b["error"]["code"] == "refresh_reused"
            })
            .count();
        assert!(reused >= 1, "round {round}: {answers:?}");
        for (s, body) in answers.iter().filter(|(s, _)| s.is_success()) {
            winners += 1;
            let won = session_from(body);
            let (s2, me) = env
                .http
                .get(&format!("{api}/api/auth/me"), &won.access)
                .await;
            assert_eq!(
                s2,
                StatusCode::UNAUTHORIZED,
                "round {round}: the winner's access token ({s}) outlived the family's revocation: {me}"
            );
            let (s3, _) = env.refresh(api, &won.refresh).await;
            assert_eq!(s3, StatusCode::UNAUTHORIZED, "round {round}");
        }
    }
    assert!(winners >= 1, "no round had a winner");
    env.cleanup().await;
}

#[tokio::test]
async fn no_session_obtained_around_a_password_reset_outlives_it() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    let api = api.url.as_str();
    let admin = env.admin_session(api).await;
    let victim = env
        .create_user(api, &admin.access, "victim@fastprep.test", &[OPERATOR_ROLE])
        .await;
    let mut old_password = USER_PASSWORD.to_owned();
    let mut obtained = 0;
    for round in 0..8 {
        let held = env
            .sign_in(api, "victim@fastprep.test", &old_password)
            .await;
        let new_password = format!("reset-password-round-{round}");
        // Whoever holds the old password signs in and refreshes while an
        // administrator resets it.
        let login = || {
            let (http, url, password) = (
                env.http.clone(),
                format!("{api}/api/auth/login"),
                old_password.clone(),
            );
            async move {
                http.call(
                    Method::POST,
                    &url,
                    None,
                    Some(json!({"email": "victim@fastprep.test", "password": password})),
                )
                .await
            }
        };
        let path = format!("/users/{victim}");
        let reset = call(
            &env,
            api,
            &admin.access,
            Method::PATCH,
            &path,
            Some(json!({"password": new_password})),
        );
        let (logins, refreshed, (s, body)) = tokio::join!(
            futures::future::join_all((0..4).map(|_| login())),
            env.refresh(api, &held.refresh),
            reset
        );
        assert_eq!(s, StatusCode::OK, "{body}");
        let mut sessions: Vec<_> = logins
            .into_iter()
            .filter(|(s, _)| s.is_success())
            .map(|(_, b)| session_from(&b))
            .collect();
        if refreshed.0.is_success() {
            sessions.push(session_from(&refreshed.1));
        }
        sessions.push(held);
        obtained += sessions.len();
        for session in sessions {
            let (s, _) = env.refresh(api, &session.refresh).await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "round {round}: a refresh token outlived the reset"
            );
            let (s, _) = env
                .http
                .get(&format!("{api}/api/auth/me"), &session.access)
                .await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "round {round}: an access token outlived the reset"
            );
        }
        old_password = new_password;
    }
    assert!(obtained > 8, "some sign-ins raced the resets");
    env.cleanup().await;
}

#[tokio::test]
async fn create_admin_follows_the_policy_and_a_reset_ends_every_session() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    // The reset is announced through the outbox: relay and authz-fanout.
    env.start_consumer("relay", None, &[]).await;
    env.start_consumer("authz-fanout", None, &[]).await;
    let api = api.url.as_str();
    let before = env.admin_session(api).await;
    let admin_env = |password: &str| {
        vec![
            ("ADMIN_EMAIL", env::ADMIN_EMAIL.to_owned()),
            ("ADMIN_PASSWORD", password.to_owned()),
        ]
    };

    // A password outside the policy is refused and changes nothing.
    let (status, printed) = env.run_to_end("fastprep-api", &["create-admin"], &admin_env("short"));
    assert!(!status.success(), "{printed}");
    assert!(printed.contains("ADMIN_PASSWORD"), "{printed}");
    // An address that is not one is refused too.
    let (status, printed) = env.run_to_end(
        "fastprep-api",
        &["create-admin"],
        &[
            ("ADMIN_EMAIL", "not an address".to_owned()),
            ("ADMIN_PASSWORD", "a-fresh-admin-password-42".to_owned()),
        ],
    );
    assert!(!status.success(), "{printed}");
    assert!(printed.contains("ADMIN_EMAIL"), "{printed}");
    // In production, a password published in this repository is refused.
    let mut published = admin_env("fastprep-admin");
    published.push(("FASTPREP_ENV", "production".to_owned()));
    let (status, printed) = env.run_to_end("fastprep-api", &["create-admin"], &published);
    assert_eq!(status.code(), Some(2), "{printed}");
    assert!(printed.contains("ADMIN_PASSWORD"), "{printed}");
    // The same password again: nothing to do, the session lives on.
    let (status, printed) = env.run_to_end(
        "fastprep-api",
        &["create-admin"],
        &admin_env(env::ADMIN_PASSWORD),
    );
    assert!(status.success(), "{printed}");
    let (s, body) = env.refresh(api, &before.refresh).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let before = session_from(&body);

    // A reset ends the sessions of the account: a stolen refresh token
    // does not survive it, nor its access token.
    let new_password = "a-fresh-admin-password-42";
    let (status, printed) =
        env.run_to_end("fastprep-api", &["create-admin"], &admin_env(new_password));
    assert!(status.success(), "{printed}");
    assert!(printed.contains("1 session(s) ended"), "{printed}");
    let (s, body) = env.refresh(api, &before.refresh).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    wait_for(
        "the reset to reach the API's cache",
        Duration::from_secs(10),
        || async {
            let (s, _) = env
                .http
                .get(&format!("{api}/api/auth/me"), &before.access)
                .await;
            (s == StatusCode::UNAUTHORIZED).then_some(())
        },
    )
    .await;
    let (s, _) = env
        .http
        .call(
            Method::POST,
            &format!("{api}/api/auth/login"),
            None,
            Some(json!({"email": env::ADMIN_EMAIL, "password": env::ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the old password is gone");
    env.sign_in(api, env::ADMIN_EMAIL, new_password).await;
    let audited: Value = sqlx::query_scalar(
        "SELECT after FROM audit_log WHERE action = 'user.admin_ensured' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(audited["password_changed"], true);
    assert_eq!(audited["sessions_ended"], 1);
    env.cleanup().await;
}
