//! `TG_BACKEND=mtproto` through the real `run`, with no network: started
//! without a session it reports `needs_login` (status and the confirmed
//! `tg.session.changed.v1`), answers sends with 503 and the login with its
//! first step; a wrong `TDLIB_ENCRYPTION_KEY` stops start-up and leaves the
//! session file as it was. Nothing here reaches Telegram: no call is made
//! before a login.

use std::time::Duration;

use broker_config::{Envelope, Event, events::SessionState};
use futures::StreamExt;
use lapin::options::BasicAckOptions;
use platform::{Env, Telemetry};
use reqwest::StatusCode;
use secrecy::SecretString;
use tg_adapter::{Config, backend::mtproto::SessionFile};
use tokio_util::sync::CancellationToken;

use crate::helpers::{App, TOKEN, TempDir, Vhost, status_json};

const KEY: &str = "a-session-key-for-tests-0123456789";

fn mtproto(key: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("TG_BACKEND", "mtproto"),
        ("TG_API_ID", "12345"),
        ("TG_API_HASH", "0123456789abcdef0123456789abcdef"),
        ("TDLIB_ENCRYPTION_KEY", key),
    ]
}

#[tokio::test]
async fn mtproto_without_a_session_needs_login_and_answers_503() {
    let vhost = Vhost::create().await;
    let (conn, mut deliveries) = vhost.listen("tg.session.#").await;

    let dir = TempDir::new();
    let mut env = mtproto(KEY);
    env.push(("AMQP_URL", vhost.amqp_url.as_str()));
    let app = App::start(dir.path(), &env).await;

    let status = app.get("/v1/status").await;
    assert_eq!(status["session"], "needs_login");
    let (code, body) = status_json(app.send_text("k-1", 42, "hello").await).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["code"], "session_needs_login");
    // Not stored as a result: the same key sends once the account is in.
    let (code, _) = status_json(app.send_text("k-1", 42, "hello").await).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.get("/v1/auth").await["step"], "phone");
    // The sandbox's routes do not exist here.
    let response = app
        .client
        .get(app.url("/sandbox/sent"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let delivery = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
        .await
        .expect("tg.session.changed.v1 within 10 s")
        .unwrap()
        .unwrap();
    let envelope: Envelope = serde_json::from_slice(&delivery.data).unwrap();
    let Event::TgSessionChanged(changed) = envelope.event else {
        panic!("{envelope:?}");
    };
    assert_eq!(changed.state, SessionState::NeedsLogin);
    delivery.ack(BasicAckOptions::default()).await.unwrap();

    app.stop().await;
    let _ = conn.close(200, "done".into()).await;
    vhost.remove().await;
}

#[tokio::test]
async fn a_wrong_session_key_stops_start_up_and_leaves_the_file() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    {
        let session = SessionFile::open(dir.path(), &SecretString::from(KEY)).unwrap();
        session
            .set_pending_login(Some(
                tg_adapter::backend::mtproto::session::PendingLogin::Code {
                    phone: "+15550100".into(),
                    phone_code_hash: "h".into(),
                },
            ))
            .unwrap();
    }
    let path = dir.path().join("telegram.session");
    let before = std::fs::read(&path).unwrap();

    let data_dir = dir.path().to_string_lossy().into_owned();
    let mut pairs = mtproto("another-session-key-0123456789abcdef");
    pairs.extend([
        ("TG_ADAPTER_TOKEN", TOKEN),
        ("FASTPREP_ENV", "development"),
        ("DATA_DIR", data_dir.as_str()),
        ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    ]);
    let config = Config::from_env(&Env::from_pairs(pairs)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = tg_adapter::run(
        config,
        listener,
        Telemetry::metrics_only().unwrap(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("TDLIB_ENCRYPTION_KEY") && message.contains("left as it is"),
        "{message}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
