//! One contract for every backend, for all that needs no network: the
//! sandbox runs it as it is, the MTProto backend against the in-process
//! fake Telegram (`mtproto::fake`).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use futures::StreamExt;
use grammers_session::{
    Session,
    types::{PeerAuth, PeerInfo},
};
use secrecy::SecretString;

use super::{
    Backend, EditRequest, SandboxBackend, SendError, SendRequest, SessionState,
    mtproto::{ApiCredentials, MtprotoBackend, SessionFile, fake::FakeTelegram},
};
use crate::store::Store;

/// The chat both harnesses make known to their account.
pub const CHAT: i64 = 4_200_042;

fn request(random_id: i64, text: &str) -> SendRequest {
    SendRequest {
        chat_id: CHAT,
        text: text.into(),
        attachments: vec![],
        random_id,
        idempotency_key: format!("key-{random_id}"),
    }
}

/// What every backend does alike.
pub async fn contract(backend: &dyn Backend) {
    let status = backend.status().await;
    assert_eq!(status.session, SessionState::Authorized);
    assert_eq!(backend.session().borrow().session, SessionState::Authorized);

    // A send, and the same random id again: one message.
    let first = backend.send_message(&request(1, "hello")).await.unwrap();
    let again = backend.send_message(&request(1, "hello")).await.unwrap();
    assert_eq!(first.tg_message_id, again.tg_message_id);
    let second = backend.send_message(&request(2, "second")).await.unwrap();
    assert_ne!(second.tg_message_id, first.tg_message_id);

    // Edits of a sent message; the same edit again is no error.
    let edit = EditRequest {
        chat_id: CHAT,
        tg_message_id: first.tg_message_id,
        text: "hello, edited".into(),
    };
    backend.edit_message(&edit).await.unwrap();
    backend.edit_message(&edit).await.unwrap();
    let missing = EditRequest {
        tg_message_id: 999_999,
        ..edit.clone()
    };
    assert_eq!(
        backend.edit_message(&missing).await.unwrap_err(),
        SendError::Permanent {
            code: "message_not_found".into()
        }
    );

    // Deleting twice, and read marks.
    backend
        .delete_messages(CHAT, &[second.tg_message_id])
        .await
        .unwrap();
    backend
        .delete_messages(CHAT, &[second.tg_message_id])
        .await
        .unwrap();
    backend.mark_read(CHAT, first.tg_message_id).await.unwrap();

    // A file id nobody made is no file.
    assert!(backend.download("no-such-file").await.unwrap().is_none());

    // Updates are taken once.
    assert!(backend.take_updates().is_some());
    assert!(backend.take_updates().is_none());
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tg-contract-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_sandbox_keeps_the_contract() {
    let dir = temp_dir();
    let store = Store::open(&dir, &[SandboxBackend::create_tables]).unwrap();
    let sandbox = SandboxBackend::new(store);
    assert!(sandbox.login().is_none());
    contract(&sandbox).await;
    drop(sandbox);
    let _ = std::fs::remove_dir_all(dir);
}

/// An MTProto backend over the fake, logged in, with [`CHAT`] cached.
pub async fn logged_in_mtproto(dir: &std::path::Path) -> (MtprotoBackend, Arc<FakeTelegram>) {
    let session = Arc::new(SessionFile::open(dir, &SecretString::from("a test key")).unwrap());
    session
        .cache_peers(vec![
            PeerInfo::User {
                id: super::mtproto::fake::ACCOUNT_ID,
                auth: Some(PeerAuth::from_hash(77)),
                bot: Some(false),
                is_self: Some(true),
            },
            PeerInfo::User {
                id: CHAT,
                auth: Some(PeerAuth::from_hash(31337)),
                bot: None,
                is_self: None,
            },
        ])
        .await
        .unwrap();
    let fake = Arc::new(FakeTelegram::default());
    let backend = MtprotoBackend::new(
        fake.clone(),
        session,
        ApiCredentials {
            api_id: 1,
            api_hash: SecretString::from("0123456789abcdef0123456789abcdef"),
        },
    );
    (backend, fake)
}

#[tokio::test]
async fn the_mtproto_backend_keeps_the_contract() {
    let dir = temp_dir();
    let (backend, fake) = logged_in_mtproto(&dir).await;
    assert!(backend.login().is_some());
    contract(&backend).await;
    assert_eq!(
        fake.sent_count(),
        2,
        "two distinct random ids, two messages"
    );
    drop(backend);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn mtproto_downloads_stream_in_512_kib_parts() {
    let dir = temp_dir();
    let (backend, fake) = logged_in_mtproto(&dir).await;
    let bytes: Vec<u8> = (0..1_200_000u32).map(|i| (i % 251) as u8).collect();
    fake.add_document(555, bytes.clone());
    let file_id = super::mtproto::files::FileRef {
        kind: "document".into(),
        id: 555,
        access_hash: 1,
        file_reference: vec![1, 2],
        dc_id: 2,
        thumb: String::new(),
        size: bytes.len() as i64,
        mime: Some("application/pdf".into()),
    }
    .encode();
    let download = backend.download(&file_id).await.unwrap().unwrap();
    assert_eq!(download.size, bytes.len() as u64);
    assert_eq!(download.content_type.as_deref(), Some("application/pdf"));
    let parts: Vec<bytes::Bytes> = download.body.map(|p| p.unwrap()).collect::<Vec<_>>().await;
    assert_eq!(parts.len(), 3, "512 KiB parts");
    assert_eq!(parts.concat(), bytes);
    let _ = std::fs::remove_dir_all(dir);
}
