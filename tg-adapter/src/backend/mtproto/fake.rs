//! An in-process Telegram at the [`Rpc`] seam, for tests: it decodes each
//! serialized TL function and answers with serialized TL results, as the
//! servers would, for the calls the backend makes. Sends are de-duplicated
//! on `random_id`, uploaded parts are kept and can be read back, and any
//! call can be scripted to fail (FLOOD_WAIT, a 401, ...) before it runs.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use grammers_crypto::two_factor_auth::calculate_2fa;
use grammers_mtsender::{InvocationError, RpcError};
use grammers_session::BoxFuture;
use grammers_tl_types::{self as tl, Deserializable, Identifiable, Serializable};

use super::rpc::{Rpc, constructor_of};

/// Telegram's published 2048-bit SRP prime (with g = 3).
const SRP_P: &str = "c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f48198a0aa7c14058229493d22530f4dbfa336f6e0ac925139543aed44cce7c3720fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f642477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4a4a695811051907e162753b56b0f6b410dba74d8a84b2a14b3144e0ef1284754fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce929851f0d8115f635b105ee2e4e15d04b2454bf6f4fadf034b10403119cd8e3b92fcc5b";

pub const ACCOUNT_ID: i64 = 5_000_001;
pub const CODE: &str = "12345";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// An RPC error as Telegram sends it (`FLOOD_WAIT_31`).
pub fn rpc_error(code: i32, message: &str) -> InvocationError {
    InvocationError::Rpc(RpcError::from(tl::types::RpcError {
        error_code: code,
        error_message: message.into(),
    }))
}

/// A TL string: length, bytes, padding to 4.
fn tl_string(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 254 {
        out.push(len as u8);
    } else {
        out.push(254);
        out.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
    }
    out.extend_from_slice(s.as_bytes());
    let written = if len < 254 { 1 + len } else { 4 + len };
    out.extend(std::iter::repeat_n(0u8, (4 - written % 4) % 4));
}

/// A user with an access hash and a first name (built from its wire form,
/// which names only the fields set).
pub fn user(id: i64, access_hash: i64, first_name: &str, is_self: bool) -> tl::enums::User {
    let mut b = Vec::new();
    b.extend_from_slice(&tl::types::User::CONSTRUCTOR_ID.to_le_bytes());
    let flags: u32 = 1 | 2 | if is_self { 1024 } else { 0 };
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&access_hash.to_le_bytes());
    tl_string(&mut b, first_name);
    tl::enums::User::from_bytes(&b).unwrap_or(tl::enums::User::Empty(tl::types::UserEmpty { id }))
}

#[derive(Default)]
struct State {
    next_id: i32,
    pts: i32,
    /// random_id → message id.
    sent: HashMap<i64, i32>,
    /// message id → text.
    messages: HashMap<i32, String>,
    /// file id → its parts, in order.
    uploads: HashMap<i64, Vec<Vec<u8>>>,
    /// Inbound files: document id → bytes.
    documents: HashMap<i64, Vec<u8>>,
    /// Failures to answer before running a call, by constructor id.
    script: VecDeque<(u32, InvocationError)>,
    /// Constructor ids of every call, in order.
    calls: Vec<u32>,
    /// The last `auth.checkPassword` SRP inputs the client sent.
    password: Option<String>,
    /// Users the dialogs list.
    dialog_users: Vec<tl::enums::User>,
}

/// The fake Telegram.
pub struct FakeTelegram {
    state: Mutex<State>,
    home: std::sync::atomic::AtomicI32,
}

impl Default for FakeTelegram {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                next_id: 100,
                pts: 1,
                ..State::default()
            }),
            home: std::sync::atomic::AtomicI32::new(2),
        }
    }
}

impl FakeTelegram {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The account has a 2FA password.
    pub fn set_password(&self, password: &str) {
        self.with(|s| s.password = Some(password.to_owned()));
    }

    /// The next call of function `R` fails with `error` instead of running.
    pub fn fail_next<R: Identifiable>(&self, error: InvocationError) {
        self.with(|s| s.script.push_back((R::CONSTRUCTOR_ID, error)));
    }

    /// A file customers sent, readable with `upload.getFile`.
    pub fn add_document(&self, id: i64, bytes: Vec<u8>) {
        self.with(|s| s.documents.insert(id, bytes));
    }

    /// A user `messages.getDialogs` lists.
    pub fn add_dialog_user(&self, user: tl::enums::User) {
        self.with(|s| s.dialog_users.push(user));
    }

    /// How many times function `R` was called.
    pub fn calls<R: Identifiable>(&self) -> usize {
        self.with(|s| s.calls.iter().filter(|c| **c == R::CONSTRUCTOR_ID).count())
    }

    /// Bytes of every upload, joined in part order.
    pub fn uploaded(&self) -> Vec<Vec<u8>> {
        self.with(|s| s.uploads.values().map(|parts| parts.concat()).collect())
    }

    /// How many messages were really sent.
    pub fn sent_count(&self) -> usize {
        self.with(|s| s.sent.len())
    }

    fn authorization(&self) -> Vec<u8> {
        tl::enums::auth::Authorization::Authorization(tl::types::auth::Authorization {
            setup_password_required: false,
            otherwise_relogin_days: None,
            tmp_sessions: None,
            future_auth_token: None,
            user: user(ACCOUNT_ID, 77, "FastPrep", true),
        })
        .to_bytes()
    }

    fn srp(&self) -> tl::types::PasswordKdfAlgoSha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow {
        tl::types::PasswordKdfAlgoSha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow {
            salt1: vec![1; 8],
            salt2: vec![2; 16],
            g: 3,
            p: hex(SRP_P),
        }
    }

    const SRP_B: [u8; 256] = [5; 256];
    const SECURE_RANDOM: [u8; 256] = [9; 256];

    fn answer(&self, constructor: u32, body: &[u8]) -> Result<Vec<u8>, InvocationError> {
        use tl::functions as f;
        let bad = |_| rpc_error(400, "FAKE_BAD_REQUEST");
        match constructor {
            f::auth::SendCode::CONSTRUCTOR_ID => {
                Ok(tl::enums::auth::SentCode::Code(tl::types::auth::SentCode {
                    r#type: tl::types::auth::SentCodeTypeSms { length: 5 }.into(),
                    phone_code_hash: "hash-of-the-code".into(),
                    next_type: None,
                    timeout: None,
                })
                .to_bytes())
            }
            f::auth::SignIn::CONSTRUCTOR_ID => {
                let r = f::auth::SignIn::from_bytes(body).map_err(bad)?;
                if r.phone_code_hash != "hash-of-the-code" {
                    return Err(rpc_error(400, "PHONE_CODE_HASH_EMPTY"));
                }
                if r.phone_code.as_deref() != Some(CODE) {
                    return Err(rpc_error(400, "PHONE_CODE_INVALID"));
                }
                if self.with(|s| s.password.is_some()) {
                    return Err(rpc_error(401, "SESSION_PASSWORD_NEEDED"));
                }
                Ok(self.authorization())
            }
            f::account::GetPassword::CONSTRUCTOR_ID => Ok(tl::enums::account::Password::Password(
                tl::types::account::Password {
                    has_recovery: false,
                    has_secure_values: false,
                    has_password: true,
                    current_algo: Some(self.srp().into()),
                    srp_b: Some(Self::SRP_B.to_vec()),
                    srp_id: Some(4242),
                    hint: Some("the usual".into()),
                    email_unconfirmed_pattern: None,
                    new_algo: tl::enums::PasswordKdfAlgo::Unknown,
                    new_secure_algo: tl::enums::SecurePasswordKdfAlgo::Unknown,
                    secure_random: Self::SECURE_RANDOM.to_vec(),
                    pending_reset_date: None,
                    login_email_pattern: None,
                },
            )
            .to_bytes()),
            f::auth::CheckPassword::CONSTRUCTOR_ID => {
                let r = f::auth::CheckPassword::from_bytes(body).map_err(bad)?;
                let tl::enums::InputCheckPasswordSrp::Srp(srp) = r.password else {
                    return Err(rpc_error(400, "PASSWORD_HASH_INVALID"));
                };
                let password = self.with(|s| s.password.clone()).unwrap_or_default();
                let algo = self.srp();
                let (m1, g_a) = calculate_2fa(
                    &algo.salt1,
                    &algo.salt2,
                    &algo.p,
                    &algo.g,
                    Self::SRP_B.to_vec(),
                    Self::SECURE_RANDOM.to_vec(),
                    password.as_bytes(),
                );
                if srp.srp_id != 4242 || srp.m1 != m1 || srp.a != g_a {
                    return Err(rpc_error(400, "PASSWORD_HASH_INVALID"));
                }
                Ok(self.authorization())
            }
            f::updates::GetState::CONSTRUCTOR_ID => {
                let pts = self.with(|s| s.pts);
                Ok(tl::enums::updates::State::State(tl::types::updates::State {
                    pts,
                    qts: 0,
                    date: 1_700_000_000,
                    seq: 1,
                    unread_count: 0,
                })
                .to_bytes())
            }
            f::messages::GetDialogs::CONSTRUCTOR_ID => {
                let users = self.with(|s| s.dialog_users.clone());
                Ok(
                    tl::enums::messages::Dialogs::Dialogs(tl::types::messages::Dialogs {
                        dialogs: vec![],
                        messages: vec![],
                        chats: vec![],
                        users,
                    })
                    .to_bytes(),
                )
            }
            f::messages::SendMessage::CONSTRUCTOR_ID => {
                let r = f::messages::SendMessage::from_bytes(body).map_err(bad)?;
                let (id, pts) = self.record(r.random_id, r.message);
                Ok(
                    tl::enums::Updates::UpdateShortSentMessage(tl::types::UpdateShortSentMessage {
                        out: true,
                        id,
                        pts,
                        pts_count: 1,
                        date: 1_700_000_100,
                        media: None,
                        entities: None,
                        ttl_period: None,
                    })
                    .to_bytes(),
                )
            }
            f::messages::SendMedia::CONSTRUCTOR_ID => {
                let r = f::messages::SendMedia::from_bytes(body).map_err(bad)?;
                let (id, _) = self.record(r.random_id, r.message);
                Ok(tl::enums::Updates::Updates(tl::types::Updates {
                    updates: vec![
                        tl::types::UpdateMessageId {
                            id,
                            random_id: r.random_id,
                        }
                        .into(),
                    ],
                    users: vec![],
                    chats: vec![],
                    date: 1_700_000_100,
                    seq: 0,
                })
                .to_bytes())
            }
            f::messages::UploadMedia::CONSTRUCTOR_ID => {
                let r = f::messages::UploadMedia::from_bytes(body).map_err(bad)?;
                let tl::enums::InputMedia::UploadedDocument(uploaded) = r.media else {
                    return Err(rpc_error(400, "MEDIA_INVALID"));
                };
                let tl::enums::InputFile::File(file) = uploaded.file else {
                    return Err(rpc_error(400, "MEDIA_INVALID"));
                };
                let stored = self.with(|s| s.uploads.contains_key(&file.id));
                if !stored {
                    return Err(rpc_error(400, "FILE_PARTS_INVALID"));
                }
                Ok(
                    tl::enums::MessageMedia::Document(tl::types::MessageMediaDocument {
                        nopremium: false,
                        spoiler: false,
                        video: false,
                        round: false,
                        voice: false,
                        document: Some(
                            tl::types::Document {
                                id: file.id,
                                access_hash: 1,
                                file_reference: vec![1],
                                date: 0,
                                mime_type: uploaded.mime_type,
                                size: 0,
                                thumbs: None,
                                video_thumbs: None,
                                dc_id: 2,
                                attributes: uploaded.attributes,
                            }
                            .into(),
                        ),
                        alt_documents: None,
                        video_cover: None,
                        video_timestamp: None,
                        ttl_seconds: None,
                    })
                    .to_bytes(),
                )
            }
            f::messages::SendMultiMedia::CONSTRUCTOR_ID => {
                let r = f::messages::SendMultiMedia::from_bytes(body).map_err(bad)?;
                let mut updates = Vec::new();
                for single in r.multi_media {
                    let tl::enums::InputSingleMedia::Media(single) = single;
                    if !matches!(single.media, tl::enums::InputMedia::Document(_)) {
                        return Err(rpc_error(400, "MEDIA_INVALID"));
                    }
                    let (id, _) = self.record(single.random_id, single.message);
                    updates.push(
                        tl::types::UpdateMessageId {
                            id,
                            random_id: single.random_id,
                        }
                        .into(),
                    );
                }
                Ok(tl::enums::Updates::Updates(tl::types::Updates {
                    updates,
                    users: vec![],
                    chats: vec![],
                    date: 1_700_000_100,
                    seq: 0,
                })
                .to_bytes())
            }
            f::upload::SaveFilePart::CONSTRUCTOR_ID => {
                let r = f::upload::SaveFilePart::from_bytes(body).map_err(bad)?;
                self.with(|s| {
                    let parts = s.uploads.entry(r.file_id).or_default();
                    if parts.len() as i32 != r.file_part {
                        return Err(rpc_error(400, "FILE_PART_INVALID"));
                    }
                    parts.push(r.bytes);
                    Ok(true.to_bytes())
                })
            }
            f::messages::EditMessage::CONSTRUCTOR_ID => {
                let r = f::messages::EditMessage::from_bytes(body).map_err(bad)?;
                self.with(|s| match s.messages.get_mut(&r.id) {
                    None => Err(rpc_error(400, "MESSAGE_ID_INVALID")),
                    Some(text) if Some(&*text) == r.message.as_ref() => {
                        Err(rpc_error(400, "MESSAGE_NOT_MODIFIED"))
                    }
                    Some(text) => {
                        *text = r.message.unwrap_or_default();
                        Ok(tl::enums::Updates::Updates(tl::types::Updates {
                            updates: vec![],
                            users: vec![],
                            chats: vec![],
                            date: 1_700_000_200,
                            seq: 0,
                        })
                        .to_bytes())
                    }
                })
            }
            f::messages::DeleteMessages::CONSTRUCTOR_ID
            | f::messages::ReadHistory::CONSTRUCTOR_ID => {
                if constructor == f::messages::DeleteMessages::CONSTRUCTOR_ID {
                    let r = f::messages::DeleteMessages::from_bytes(body).map_err(bad)?;
                    self.with(|s| {
                        for id in r.id {
                            s.messages.remove(&id);
                        }
                    });
                }
                let pts = self.with(|s| {
                    s.pts += 1;
                    s.pts
                });
                Ok(tl::enums::messages::AffectedMessages::Messages(
                    tl::types::messages::AffectedMessages { pts, pts_count: 1 },
                )
                .to_bytes())
            }
            f::upload::GetFile::CONSTRUCTOR_ID => {
                let r = f::upload::GetFile::from_bytes(body).map_err(bad)?;
                let tl::enums::InputFileLocation::InputDocumentFileLocation(location) = r.location
                else {
                    return Err(rpc_error(400, "LOCATION_INVALID"));
                };
                let Some(bytes) = self.with(|s| s.documents.get(&location.id).cloned()) else {
                    return Err(rpc_error(400, "LOCATION_INVALID"));
                };
                let start = usize::try_from(r.offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let end = (start + usize::try_from(r.limit).unwrap_or(0)).min(bytes.len());
                Ok(tl::enums::upload::File::File(tl::types::upload::File {
                    r#type: tl::enums::storage::FileType::FileUnknown,
                    mtime: 0,
                    bytes: bytes[start..end].to_vec(),
                })
                .to_bytes())
            }
            _ => Err(rpc_error(400, "FAKE_UNSCRIPTED")),
        }
    }

    /// A send, once per random id.
    fn record(&self, random_id: i64, text: String) -> (i32, i32) {
        self.with(|s| {
            if let Some(id) = s.sent.get(&random_id) {
                return (*id, s.pts);
            }
            s.next_id += 1;
            s.pts += 1;
            let id = s.next_id;
            s.sent.insert(random_id, id);
            s.messages.insert(id, text);
            (id, s.pts)
        })
    }
}

impl Rpc for FakeTelegram {
    fn call(
        &self,
        _dc: Option<i32>,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, InvocationError>> {
        Box::pin(async move {
            let constructor = constructor_of(&body).ok_or_else(|| rpc_error(400, "EMPTY"))?;
            let scripted = self.with(|s| {
                s.calls.push(constructor);
                let at = s.script.iter().position(|(c, _)| *c == constructor)?;
                s.script.remove(at).map(|(_, e)| e)
            });
            if let Some(error) = scripted {
                return Err(error);
            }
            // A function's fields follow its constructor id.
            self.answer(constructor, &body[4..])
        })
    }

    fn migrate(&self, dc: i32) -> BoxFuture<'_, Result<(), InvocationError>> {
        self.home.store(dc, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }

    fn home_dc(&self) -> i32 {
        self.home.load(std::sync::atomic::Ordering::SeqCst)
    }
}
