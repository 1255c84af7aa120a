//! The MTProto backend against the fake Telegram: the error table's side
//! effects on the session, peers that must be known, uploads streamed from
//! URLs, and the resumable login.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::{Router, routing::get};
use broker_config::events::AttachmentRef;
use grammers_session::Session;
use grammers_tl_types as tl;
use secrecy::SecretString;

use super::{
    ApiCredentials, MtprotoBackend, SessionFile,
    fake::{self, FakeTelegram, rpc_error},
    session::PendingLogin,
};
use crate::backend::{
    AccountLogin, Backend, LoginError, LoginStep, SendError, SendRequest, SessionState,
    contract::{CHAT, logged_in_mtproto},
};

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tg-mtproto-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn key() -> SecretString {
    SecretString::from("a test key")
}

fn api() -> ApiCredentials {
    ApiCredentials {
        api_id: 1,
        api_hash: SecretString::from("0123456789abcdef0123456789abcdef"),
    }
}

fn text(chat_id: i64, random_id: i64) -> SendRequest {
    SendRequest {
        chat_id,
        text: "hi".into(),
        attachments: vec![],
        random_id,
        idempotency_key: "k".into(),
    }
}

#[tokio::test]
async fn without_a_session_it_needs_a_login_and_sends_nothing() {
    let dir = temp_dir();
    let fake = Arc::new(FakeTelegram::default());
    let session = Arc::new(SessionFile::open(&dir, &key()).unwrap());
    let backend = MtprotoBackend::new(fake.clone(), session, api());
    assert_eq!(backend.status().await.session, SessionState::NeedsLogin);
    assert_eq!(
        backend.send_message(&text(CHAT, 1)).await.unwrap_err(),
        SendError::NeedsLogin
    );
    assert_eq!(fake.calls::<tl::functions::messages::SendMessage>(), 0);
    assert_eq!(backend.step().await.unwrap(), LoginStep::Phone);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_chat_never_seen_is_not_found_and_never_guessed() {
    let dir = temp_dir();
    let (backend, fake) = logged_in_mtproto(&dir).await;
    for chat in [CHAT + 1, -100_123, 0] {
        assert_eq!(
            backend.send_message(&text(chat, 1)).await.unwrap_err(),
            SendError::Permanent {
                code: "chat_not_found".into()
            },
            "{chat}"
        );
    }
    assert_eq!(fake.calls::<tl::functions::messages::SendMessage>(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_flood_wait_answers_retry_after_and_holds_later_sends() {
    let dir = temp_dir();
    let (backend, fake) = logged_in_mtproto(&dir).await;
    fake.fail_next::<tl::functions::messages::SendMessage>(rpc_error(420, "FLOOD_WAIT_31"));
    assert_eq!(
        backend.send_message(&text(CHAT, 1)).await.unwrap_err(),
        SendError::FloodWait {
            retry_after_secs: 31
        }
    );
    let status = backend.status().await;
    assert_eq!(status.session, SessionState::FloodWait);
    assert!(status.until.is_some());
    // Held without asking Telegram again.
    let held = backend.send_message(&text(CHAT, 2)).await.unwrap_err();
    assert!(
        matches!(held, SendError::FloodWait { retry_after_secs } if (29..=31).contains(&retry_after_secs)),
        "{held:?}"
    );
    assert_eq!(fake.calls::<tl::functions::messages::SendMessage>(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_shorter_flood_wait_does_not_cut_a_longer_one() {
    let dir = temp_dir();
    let (backend, fake) = logged_in_mtproto(&dir).await;
    fake.fail_next::<tl::functions::messages::ReadHistory>(rpc_error(420, "FLOOD_WAIT_600"));
    assert!(backend.mark_read(CHAT, 1).await.is_err());
    let long = backend.status().await.until.unwrap();
    // Held before the call: the running wait answers.
    assert!(matches!(
        backend.delete_messages(CHAT, &[1]).await.unwrap_err(),
        SendError::FloodWait { retry_after_secs } if retry_after_secs > 500
    ));
    // A call already in flight that meets a shorter wait keeps the longer.
    assert_eq!(
        backend.fail(&rpc_error(420, "FLOOD_WAIT_5")),
        SendError::FloodWait {
            retry_after_secs: 5
        }
    );
    assert_eq!(backend.status().await.until, Some(long));
    // A longer one extends it.
    backend.fail(&rpc_error(420, "FLOOD_WAIT_900"));
    assert!(backend.status().await.until.unwrap() > long);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn peer_flood_holds_sends_for_an_hour() {
    let dir = temp_dir();
    let (backend, fake) = logged_in_mtproto(&dir).await;
    fake.fail_next::<tl::functions::messages::SendMessage>(rpc_error(400, "PEER_FLOOD"));
    assert_eq!(
        backend.send_message(&text(CHAT, 1)).await.unwrap_err(),
        SendError::FloodWait {
            retry_after_secs: 3_600
        }
    );
    assert_eq!(backend.status().await.session, SessionState::FloodWait);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_revoked_session_needs_a_login_even_after_a_restart() {
    let dir = temp_dir();
    let (backend, fake) = logged_in_mtproto(&dir).await;
    fake.fail_next::<tl::functions::messages::SendMessage>(rpc_error(401, "SESSION_REVOKED"));
    assert_eq!(
        backend.send_message(&text(CHAT, 1)).await.unwrap_err(),
        SendError::NeedsLogin
    );
    assert_eq!(backend.status().await.session, SessionState::NeedsLogin);
    drop(backend);
    let session = Arc::new(SessionFile::open(&dir, &key()).unwrap());
    // The peer cache survives for the next login.
    assert!(session.cached(CHAT).unwrap().is_some());
    let again = MtprotoBackend::new(fake, session, api());
    assert_eq!(again.status().await.session, SessionState::NeedsLogin);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn permanent_refusals_keep_their_codes() {
    let dir = temp_dir();
    let (backend, fake) = logged_in_mtproto(&dir).await;
    fake.fail_next::<tl::functions::messages::SendMessage>(rpc_error(400, "USER_IS_BLOCKED"));
    assert_eq!(
        backend.send_message(&text(CHAT, 1)).await.unwrap_err(),
        SendError::Permanent {
            code: "user_blocked".into()
        }
    );
    assert_eq!(backend.status().await.session, SessionState::Authorized);
    let _ = std::fs::remove_dir_all(dir);
}

/// Serves `bytes` at `/file` on port 0.
async fn file_server(bytes: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/file", get(move || async move { bytes.clone() }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/file")
}

#[tokio::test]
async fn an_attachment_is_streamed_from_its_url_in_parts() {
    let dir = temp_dir();
    let (backend, fake) = logged_in_mtproto(&dir).await;
    let bytes: Vec<u8> = (0..1_100_000u32).map(|i| (i % 253) as u8).collect();
    let url = file_server(bytes.clone()).await;
    let mut request = text(CHAT, 9);
    request.attachments = vec![AttachmentRef {
        url: url.clone(),
        filename: "notes.pdf".into(),
        content_type: "application/pdf".into(),
        size: bytes.len() as i64,
    }];
    let sent = backend.send_message(&request).await.unwrap();
    assert!(sent.tg_message_id > 0);
    assert_eq!(fake.calls::<tl::functions::upload::SaveFilePart>(), 3);
    assert_eq!(fake.uploaded(), vec![bytes.clone()]);
    assert_eq!(fake.calls::<tl::functions::messages::SendMedia>(), 1);

    // A file of another size than declared is refused for good.
    request.attachments[0].size += 1;
    request.random_id = 10;
    assert_eq!(
        backend.send_message(&request).await.unwrap_err(),
        SendError::Permanent {
            code: "file_size_mismatch".into()
        }
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn login_with_a_password_resumes_after_a_restart() {
    let dir = temp_dir();
    let fake = Arc::new(FakeTelegram::default());
    fake.set_password("correct horse");
    fake.add_dialog_user(fake::user(CHAT, 31337, "Customer", false));
    {
        let session = Arc::new(SessionFile::open(&dir, &key()).unwrap());
        let backend = MtprotoBackend::new(fake.clone(), session, api());
        assert_eq!(
            backend.submit_code("12345").await.unwrap_err(),
            LoginError::OutOfOrder("no code was requested; send the phone first")
        );
        assert_eq!(
            backend.submit_phone("+1 555 0100").await.unwrap(),
            LoginStep::Code {
                phone: "+1*****00".into()
            }
        );
    }
    // The adapter restarts between "code sent" and "code entered".
    let session = Arc::new(SessionFile::open(&dir, &key()).unwrap());
    assert_eq!(
        session.pending_login().unwrap(),
        Some(PendingLogin::Code {
            phone: "+15550100".into(),
            phone_code_hash: "hash-of-the-code".into(),
        })
    );
    let backend = MtprotoBackend::new(fake.clone(), session.clone(), api());
    let mut status = backend.session();
    assert_eq!(
        backend.step().await.unwrap(),
        LoginStep::Code {
            phone: "+1*****00".into()
        }
    );
    assert_eq!(
        backend.submit_code("00000").await.unwrap_err(),
        LoginError::Refused("phone_code_invalid")
    );
    assert_eq!(
        backend.submit_code("12345").await.unwrap(),
        LoginStep::Password {
            hint: Some("the usual".into())
        }
    );
    assert_eq!(
        backend
            .submit_password(&SecretString::from("wrong"))
            .await
            .unwrap_err(),
        LoginError::Refused("password_invalid")
    );
    assert_eq!(backend.status().await.session, SessionState::NeedsLogin);
    assert_eq!(
        backend
            .submit_password(&SecretString::from("correct horse"))
            .await
            .unwrap(),
        LoginStep::Authorized
    );
    // One code for the whole login.
    assert_eq!(fake.calls::<tl::functions::auth::SendCode>(), 1);
    assert_eq!(backend.status().await.session, SessionState::Authorized);
    assert!(status.has_changed().unwrap());
    assert_eq!(status.borrow_and_update().session, SessionState::Authorized);
    assert_eq!(session.self_user().unwrap(), Some(fake::ACCOUNT_ID));
    assert_eq!(session.pending_login().unwrap(), None);
    // The update state to catch up from, and the warmed dialogs.
    assert_eq!(session.updates_state().await.unwrap().seq, 1);
    assert!(session.cached(CHAT).unwrap().is_some());
    assert_eq!(
        backend.submit_phone("+15550100").await.unwrap_err(),
        LoginError::OutOfOrder("the account is already logged in")
    );
    // And it sends.
    backend.send_message(&text(CHAT, 1)).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn login_without_a_password_and_flood_on_the_phone() {
    let dir = temp_dir();
    let fake = Arc::new(FakeTelegram::default());
    let session = Arc::new(SessionFile::open(&dir, &key()).unwrap());
    let backend = MtprotoBackend::new(fake.clone(), session, api());
    fake.fail_next::<tl::functions::auth::SendCode>(rpc_error(420, "FLOOD_WAIT_600"));
    assert_eq!(
        backend.submit_phone("+15550100").await.unwrap_err(),
        LoginError::FloodWait { secs: 600 }
    );
    assert_eq!(backend.step().await.unwrap(), LoginStep::Phone);
    assert_eq!(
        backend.submit_phone("not a phone").await.unwrap_err(),
        LoginError::Refused("phone_number_invalid")
    );
    // PHONE_MIGRATE_4: the account lives in DC 4; the code is asked there.
    fake.fail_next::<tl::functions::auth::SendCode>(rpc_error(303, "PHONE_MIGRATE_4"));
    backend.submit_phone("+15550100").await.unwrap();
    assert_eq!(super::rpc::Rpc::home_dc(fake.as_ref()), 4);
    assert_eq!(
        backend.submit_code(" 12345 ").await.unwrap(),
        LoginStep::Authorized
    );
    assert_eq!(backend.status().await.session, SessionState::Authorized);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn answers_of_our_own_calls_go_to_the_update_stream() {
    let dir = temp_dir();
    let (backend, _fake) = logged_in_mtproto(&dir).await;
    let (feed, mut fed) = tokio::sync::mpsc::channel(8);
    let backend = backend.with_update_feed(feed);
    let sent = backend.send_message(&text(CHAT, 1)).await.unwrap();
    let Ok(grammers_session::updates::UpdatesLike::ShortSentMessage { request, update }) =
        fed.try_recv()
    else {
        panic!("the send's answer was not fed");
    };
    assert_eq!(request.random_id, 1);
    assert_eq!(i64::from(update.id), sent.tg_message_id);
    backend
        .delete_messages(CHAT, &[sent.tg_message_id])
        .await
        .unwrap();
    assert!(matches!(
        fed.try_recv(),
        Ok(grammers_session::updates::UpdatesLike::AffectedMessages(_))
    ));
    backend.mark_read(CHAT, sent.tg_message_id).await.unwrap();
    assert!(matches!(
        fed.try_recv(),
        Ok(grammers_session::updates::UpdatesLike::AffectedMessages(_))
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_flood_wait_during_an_upload_holds_the_account_too() {
    let dir = temp_dir();
    let (backend, fake) = logged_in_mtproto(&dir).await;
    let url = file_server(vec![7u8; 2048]).await;
    let mut request = text(CHAT, 11);
    request.attachments = vec![AttachmentRef {
        url,
        filename: "a.txt".into(),
        content_type: "text/plain".into(),
        size: 2048,
    }];
    fake.fail_next::<tl::functions::upload::SaveFilePart>(rpc_error(420, "FLOOD_WAIT_7"));
    assert_eq!(
        backend.send_message(&request).await.unwrap_err(),
        SendError::FloodWait {
            retry_after_secs: 7
        }
    );
    assert_eq!(backend.status().await.session, SessionState::FloodWait);
    assert_eq!(fake.calls::<tl::functions::messages::SendMedia>(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_album_is_stored_then_sent_together_under_the_first_id() {
    let dir = temp_dir();
    let (backend, fake) = logged_in_mtproto(&dir).await;
    let url = file_server(vec![3u8; 4096]).await;
    let file = |name: &str| AttachmentRef {
        url: url.clone(),
        filename: name.into(),
        content_type: "application/pdf".into(),
        size: 4096,
    };
    let mut request = text(CHAT, 500);
    request.attachments = vec![file("a.pdf"), file("b.pdf")];
    let sent = backend.send_message(&request).await.unwrap();
    assert_eq!(fake.calls::<tl::functions::messages::UploadMedia>(), 2);
    assert_eq!(fake.calls::<tl::functions::messages::SendMultiMedia>(), 1);
    // The reply's id is the album's first message; a retry sends nothing.
    let again = backend.send_message(&request).await.unwrap();
    assert_eq!(again.tg_message_id, sent.tg_message_id);
    assert_eq!(fake.sent_count(), 2);
    let _ = std::fs::remove_dir_all(dir);
}
