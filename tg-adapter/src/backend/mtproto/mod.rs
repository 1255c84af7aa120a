//! Real Telegram over MTProto with grammers (ADR 0018): the account is a
//! user account whose session is sealed on `DATA_DIR`. Sends, edits,
//! deletions, read marks and downloads are raw TL calls through [`Rpc`];
//! their failures go through the one table in [`errors`]; inbound updates
//! come from grammers' update stream ([`updates`]).

pub mod errors;
#[cfg(test)]
pub mod fake;
pub mod files;
pub mod login;
pub mod rpc;
pub mod sealed;
pub mod session;
#[cfg(test)]
mod tests;
pub mod updates;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use grammers_mtsender::InvocationError;
use grammers_session::{
    Session,
    types::{PeerId, PeerKind},
    updates::UpdatesLike,
};
use grammers_tl_types as tl;
use secrecy::SecretString;
use tokio::sync::{mpsc, watch};

use super::{
    AccountLogin, Backend, Download, EditRequest, InboundUpdate, LoginError, LoginStep, SendError,
    SendRequest, Sent, SessionState, SessionStatus,
};
use errors::{Failure, classify};
use files::ExportedDcs;
pub use login::ApiCredentials;
use rpc::{Rpc, invoke};
pub use session::SessionFile;

/// Inbound updates waiting for the forwarder.
const UPDATE_BUFFER: usize = 256;
/// Dialogs read after a login, to learn their access hashes.
const WARM_DIALOGS: i32 = 100;

/// The account, through MTProto.
pub struct MtprotoBackend {
    rpc: Arc<dyn Rpc>,
    session: Arc<SessionFile>,
    api: ApiCredentials,
    status: Arc<watch::Sender<SessionStatus>>,
    updates_tx: mpsc::Sender<InboundUpdate>,
    updates_rx: Mutex<Option<mpsc::Receiver<InboundUpdate>>>,
    http: reqwest::Client,
    /// One login step at a time.
    login_lock: tokio::sync::Mutex<()>,
    dcs: ExportedDcs,
    /// Where the answers of our own calls go into the update stream, so
    /// the sequence they advance has no gap to fetch.
    feed: Option<mpsc::Sender<UpdatesLike>>,
}

impl MtprotoBackend {
    /// The backend over `rpc` and the opened `session`: `authorized` when
    /// the session holds a logged-in account, else `needs_login`.
    pub fn new(rpc: Arc<dyn Rpc>, session: Arc<SessionFile>, api: ApiCredentials) -> Self {
        let logged_in = matches!(session.self_user(), Ok(Some(_)));
        let (updates_tx, updates_rx) = mpsc::channel(UPDATE_BUFFER);
        Self {
            rpc,
            session,
            api,
            status: Arc::new(watch::Sender::new(SessionStatus {
                session: if logged_in {
                    SessionState::Authorized
                } else {
                    SessionState::NeedsLogin
                },
                until: None,
            })),
            updates_tx,
            updates_rx: Mutex::new(Some(updates_rx)),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(3))
                .timeout(std::time::Duration::from_secs(300))
                .build()
                .unwrap_or_default(),
            login_lock: tokio::sync::Mutex::new(()),
            dcs: ExportedDcs::default(),
            feed: None,
        }
    }

    /// Hands the answers of sends, edits, deletes and read marks to the
    /// update stream through `feed`.
    pub fn with_update_feed(mut self, feed: mpsc::Sender<UpdatesLike>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Never waits: a full feed only means the stream fetches the gap.
    fn feed(&self, updates: UpdatesLike) {
        if let Some(feed) = &self.feed {
            let _ = feed.try_send(updates);
        }
    }

    /// Where the update pump hands inbound events (to the forwarder).
    pub fn inbound_sender(&self) -> mpsc::Sender<InboundUpdate> {
        self.updates_tx.clone()
    }

    pub fn session_file(&self) -> &Arc<SessionFile> {
        &self.session
    }

    /// Why nothing can be sent now, if so (checked before any call).
    fn refusal(&self) -> Option<SendError> {
        let status = self.status.borrow().clone();
        match status.session {
            SessionState::Authorized => None,
            SessionState::NeedsLogin => Some(SendError::NeedsLogin),
            SessionState::FloodWait => {
                let left = status
                    .until
                    .map(|u| (u - Utc::now()).num_seconds())
                    .unwrap_or(0);
                (left > 0).then(|| SendError::FloodWait {
                    retry_after_secs: u64::try_from(left).unwrap_or(1),
                })
            }
        }
    }

    /// Maps a failed call through the table and moves the session's state
    /// as it says: a 401 means a login is needed, a flood wait holds every
    /// send until it ends.
    fn fail(&self, e: &InvocationError) -> SendError {
        let failure = classify(e);
        match &failure {
            Failure::Unauthorized => {
                tracing::error!(error = %e, "Telegram signed the account out; a login is needed");
                if let Err(e) = self.session.sign_out() {
                    tracing::error!(error = %e, "could not record the sign-out in the session file");
                }
                self.status.send_replace(SessionStatus {
                    session: SessionState::NeedsLogin,
                    until: None,
                });
            }
            Failure::FloodWait { secs } => self.wait_until(
                Utc::now()
                    + chrono::Duration::seconds(i64::try_from(*secs).unwrap_or(i64::MAX / 2)),
            ),
            Failure::PeerFlood => {
                tracing::error!(
                    "Telegram limits this account (PEER_FLOOD): sends are held for {}s",
                    errors::PEER_FLOOD_WAIT.as_secs()
                );
                self.wait_until(
                    Utc::now()
                        + chrono::Duration::from_std(errors::PEER_FLOOD_WAIT)
                            .unwrap_or_else(|_| chrono::Duration::hours(1)),
                );
            }
            Failure::Permanent(_) | Failure::Transient(_) => {}
        }
        failure.into_send_error()
    }

    /// `flood_wait` until `until`, then `authorized` again (unless the state
    /// moved on meanwhile).
    fn wait_until(&self, until: DateTime<Utc>) {
        let status = self.status.clone();
        self.status.send_replace(SessionStatus {
            session: SessionState::FloodWait,
            until: Some(until),
        });
        let wait = (until - Utc::now()).to_std().unwrap_or_default();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            status.send_if_modified(|now| {
                let ended = now.session == SessionState::FloodWait && now.until == Some(until);
                if ended {
                    *now = SessionStatus {
                        session: SessionState::Authorized,
                        until: None,
                    };
                }
                ended
            });
        });
    }

    /// The chat's input peer from the cache: a chat whose access hash the
    /// account has never seen is `chat_not_found`, never a guess.
    async fn input_peer(&self, chat_id: i64) -> Result<(PeerId, tl::enums::InputPeer), SendError> {
        let not_found = || SendError::Permanent {
            code: "chat_not_found".into(),
        };
        let id = PeerId::from_bot_api_dialog_id(chat_id).ok_or_else(not_found)?;
        let peer = self
            .session
            .peer(id)
            .await
            .map_err(|e| SendError::Transient {
                reason: format!("session file: {e}"),
            })?
            .ok_or_else(not_found)?;
        let peer = match (id.kind(), peer.auth()) {
            (PeerKind::Chat, _) => id.to_ambient_ref(),
            (_, Some(auth)) if auth.hash() != 0 => grammers_session::types::PeerRef { id, auth },
            _ => return Err(not_found()),
        };
        Ok((id, peer.into()))
    }

    async fn call<R: tl::RemoteCall>(&self, request: &R) -> Result<R::Return, SendError> {
        invoke(self.rpc.as_ref(), request)
            .await
            .map_err(|e| self.fail(&e))
    }

    /// After a login: `authorized`, and the dialogs warmed so their access
    /// hashes are known before the first reply.
    async fn logged_in(&self) {
        self.status.send_replace(SessionStatus {
            session: SessionState::Authorized,
            until: None,
        });
        if let Err(e) = self.warm_dialogs().await {
            tracing::warn!(error = %e, "warming the dialogs after login failed");
        }
    }

    /// Reads the newest dialogs and caches their peers' access hashes.
    pub async fn warm_dialogs(&self) -> Result<usize, SendError> {
        let dialogs = self
            .call(&tl::functions::messages::GetDialogs {
                exclude_pinned: false,
                folder_id: None,
                offset_date: 0,
                offset_id: 0,
                offset_peer: tl::enums::InputPeer::Empty,
                limit: WARM_DIALOGS,
                hash: 0,
            })
            .await?;
        let (users, chats) = match dialogs {
            tl::enums::messages::Dialogs::Dialogs(d) => (d.users, d.chats),
            tl::enums::messages::Dialogs::Slice(d) => (d.users, d.chats),
            tl::enums::messages::Dialogs::NotModified(_) => (Vec::new(), Vec::new()),
        };
        let peers = known_peers(users, chats);
        let n = peers.len();
        self.session
            .cache_peers(peers)
            .await
            .map_err(|e| SendError::Transient {
                reason: format!("session file: {e}"),
            })?;
        tracing::info!(peers = n, "dialogs warmed");
        Ok(n)
    }

    /// Caches the peers a call's answer names.
    async fn remember(&self, updates: &tl::enums::Updates) {
        let (users, chats) = match updates {
            tl::enums::Updates::Updates(u) => (u.users.clone(), u.chats.clone()),
            tl::enums::Updates::Combined(u) => (u.users.clone(), u.chats.clone()),
            _ => return,
        };
        if let Err(e) = self.session.cache_peers(known_peers(users, chats)).await {
            tracing::warn!(error = %e, "could not cache peers");
        }
    }

    async fn send_media(
        &self,
        peer: tl::enums::InputPeer,
        request: &SendRequest,
    ) -> Result<tl::enums::Updates, SendError> {
        let mut media = Vec::with_capacity(request.attachments.len());
        for file in &request.attachments {
            let fail = |e: &InvocationError| self.fail(e);
            media.push(files::upload(self.rpc.as_ref(), &self.http, file, &fail).await?);
        }
        if media.len() == 1 {
            let media = media.pop().ok_or_else(|| SendError::Transient {
                reason: "no media".into(),
            })?;
            return self
                .call(&tl::functions::messages::SendMedia {
                    silent: false,
                    background: false,
                    clear_draft: false,
                    peer,
                    reply_to: None,
                    media,
                    message: request.text.clone(),
                    random_id: request.random_id,
                    reply_markup: None,
                    entities: None,
                    schedule_date: None,
                    schedule_repeat_period: None,
                    send_as: None,
                    noforwards: false,
                    update_stickersets_order: false,
                    invert_media: false,
                    quick_reply_shortcut: None,
                    effect: None,
                    allow_paid_floodskip: false,
                    allow_paid_stars: None,
                    suggested_post: None,
                })
                .await;
        }
        // An album: each file becomes a stored document first, then one
        // call sends them together, the text as the first one's caption.
        let mut multi = Vec::with_capacity(media.len());
        for (i, uploaded) in media.into_iter().enumerate() {
            let stored = self
                .call(&tl::functions::messages::UploadMedia {
                    business_connection_id: None,
                    peer: peer.clone(),
                    media: uploaded,
                })
                .await?;
            let tl::enums::MessageMedia::Document(tl::types::MessageMediaDocument {
                document: Some(tl::enums::Document::Document(doc)),
                ..
            }) = stored
            else {
                return Err(SendError::Transient {
                    reason: "Telegram stored a file as something other than a document".into(),
                });
            };
            multi.push(
                tl::types::InputSingleMedia {
                    media: tl::types::InputMediaDocument {
                        spoiler: false,
                        id: tl::types::InputDocument {
                            id: doc.id,
                            access_hash: doc.access_hash,
                            file_reference: doc.file_reference,
                        }
                        .into(),
                        video_cover: None,
                        video_timestamp: None,
                        ttl_seconds: None,
                        query: None,
                    }
                    .into(),
                    random_id: album_random_id(request.random_id, i),
                    message: if i == 0 {
                        request.text.clone()
                    } else {
                        String::new()
                    },
                    entities: None,
                }
                .into(),
            );
        }
        self.call(&tl::functions::messages::SendMultiMedia {
            silent: false,
            background: false,
            clear_draft: false,
            peer,
            reply_to: None,
            schedule_date: None,
            multi_media: multi,
            send_as: None,
            noforwards: false,
            update_stickersets_order: false,
            invert_media: false,
            quick_reply_shortcut: None,
            effect: None,
            allow_paid_floodskip: false,
            allow_paid_stars: None,
        })
        .await
    }
}

/// The random id of an album's `i`-th file: the first is the request's own
/// (so the message id found is the album's first).
fn album_random_id(random_id: i64, i: usize) -> i64 {
    random_id.wrapping_add(i64::try_from(i).unwrap_or(0))
}

/// Peers with a usable access hash (min users' hashes are not).
fn known_peers(
    users: Vec<tl::enums::User>,
    chats: Vec<tl::enums::Chat>,
) -> Vec<grammers_session::types::PeerInfo> {
    use grammers_session::types::PeerInfo;
    let users = users.into_iter().filter(|u| match u {
        tl::enums::User::User(u) => !u.min && u.access_hash.is_some(),
        tl::enums::User::Empty(_) => false,
    });
    let chats = chats.into_iter().filter(|c| match c {
        tl::enums::Chat::Channel(c) => !c.min && c.access_hash.is_some(),
        _ => true,
    });
    users
        .map(PeerInfo::from)
        .chain(chats.map(PeerInfo::from))
        .collect()
}

/// The id Telegram gave the message sent with `random_id`.
pub fn sent_message_id(updates: &tl::enums::Updates, random_id: i64) -> Option<(i64, Option<i32>)> {
    use tl::enums::{Update, Updates};
    let find = |list: &[Update], date: i32| {
        list.iter().find_map(|u| match u {
            Update::MessageId(m) if m.random_id == random_id => Some((i64::from(m.id), Some(date))),
            _ => None,
        })
    };
    match updates {
        Updates::UpdateShortSentMessage(s) => Some((i64::from(s.id), Some(s.date))),
        Updates::Updates(u) => find(&u.updates, u.date),
        Updates::Combined(u) => find(&u.updates, u.date),
        _ => None,
    }
}

fn sent_at(date: Option<i32>) -> DateTime<Utc> {
    date.and_then(|d| DateTime::from_timestamp(i64::from(d), 0))
        .unwrap_or_else(Utc::now)
}

fn message_id(id: i64) -> Result<i32, SendError> {
    i32::try_from(id).map_err(|_| SendError::Permanent {
        code: "message_not_found".into(),
    })
}

#[async_trait]
impl Backend for MtprotoBackend {
    async fn send_message(&self, request: &SendRequest) -> Result<Sent, SendError> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        let (_, peer) = self.input_peer(request.chat_id).await?;
        let updates = if request.attachments.is_empty() {
            let send = tl::functions::messages::SendMessage {
                no_webpage: true,
                silent: false,
                background: false,
                clear_draft: false,
                peer,
                reply_to: None,
                message: request.text.clone(),
                random_id: request.random_id,
                reply_markup: None,
                entities: None,
                schedule_date: None,
                schedule_repeat_period: None,
                send_as: None,
                noforwards: false,
                update_stickersets_order: false,
                invert_media: false,
                quick_reply_shortcut: None,
                effect: None,
                allow_paid_floodskip: false,
                allow_paid_stars: None,
                suggested_post: None,
                rich_message: None,
            };
            let updates = self.call(&send).await?;
            match &updates {
                tl::enums::Updates::UpdateShortSentMessage(short) => {
                    self.feed(UpdatesLike::ShortSentMessage {
                        request: send,
                        update: short.clone(),
                    });
                }
                other => self.feed(UpdatesLike::Updates(other.clone())),
            }
            updates
        } else {
            let updates = self.send_media(peer, request).await?;
            self.feed(UpdatesLike::Updates(updates.clone()));
            updates
        };
        self.remember(&updates).await;
        let (tg_message_id, date) =
            sent_message_id(&updates, request.random_id).ok_or_else(|| SendError::Transient {
                reason: "Telegram's answer did not name the sent message".into(),
            })?;
        Ok(Sent {
            tg_message_id,
            sent_at: sent_at(date),
        })
    }

    async fn edit_message(&self, request: &EditRequest) -> Result<DateTime<Utc>, SendError> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        let (_, peer) = self.input_peer(request.chat_id).await?;
        let result = invoke(
            self.rpc.as_ref(),
            &tl::functions::messages::EditMessage {
                no_webpage: true,
                invert_media: false,
                peer,
                id: message_id(request.tg_message_id)?,
                message: Some(request.text.clone()),
                media: None,
                reply_markup: None,
                entities: None,
                schedule_date: None,
                schedule_repeat_period: None,
                quick_reply_shortcut_id: None,
                rich_message: None,
            },
        )
        .await;
        match result {
            Ok(updates) => {
                self.remember(&updates).await;
                self.feed(UpdatesLike::Updates(updates));
                Ok(Utc::now())
            }
            // The text is already this: a retried edit.
            Err(e) if e.is("MESSAGE_NOT_MODIFIED") => Ok(Utc::now()),
            Err(e) => Err(self.fail(&e)),
        }
    }

    async fn delete_messages(&self, chat_id: i64, tg_message_ids: &[i64]) -> Result<(), SendError> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        let (id, peer) = self.input_peer(chat_id).await?;
        let ids = tg_message_ids
            .iter()
            .map(|&m| message_id(m))
            .collect::<Result<Vec<_>, _>>()?;
        if let (PeerKind::Channel, tl::enums::InputPeer::Channel(c)) = (id.kind(), peer) {
            let tl::enums::messages::AffectedMessages::Messages(affected) = self
                .call(&tl::functions::channels::DeleteMessages {
                    channel: tl::types::InputChannel {
                        channel_id: c.channel_id,
                        access_hash: c.access_hash,
                    }
                    .into(),
                    id: ids.clone(),
                })
                .await?;
            self.feed(UpdatesLike::AffectedChannelMessages {
                affected,
                channel_id: c.channel_id,
                message_ids: ids,
            });
        } else {
            // Private chats and small groups: ids are the account's own
            // numbering, so the chat is not named.
            let tl::enums::messages::AffectedMessages::Messages(affected) = self
                .call(&tl::functions::messages::DeleteMessages {
                    revoke: true,
                    id: ids,
                })
                .await?;
            self.feed(UpdatesLike::AffectedMessages(affected));
        }
        Ok(())
    }

    async fn mark_read(&self, chat_id: i64, max_id: i64) -> Result<(), SendError> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        let (id, peer) = self.input_peer(chat_id).await?;
        let max_id = message_id(max_id)?;
        if let (PeerKind::Channel, tl::enums::InputPeer::Channel(c)) = (id.kind(), peer.clone()) {
            self.call(&tl::functions::channels::ReadHistory {
                channel: tl::types::InputChannel {
                    channel_id: c.channel_id,
                    access_hash: c.access_hash,
                }
                .into(),
                max_id,
            })
            .await?;
        } else {
            let tl::enums::messages::AffectedMessages::Messages(affected) = self
                .call(&tl::functions::messages::ReadHistory { peer, max_id })
                .await?;
            self.feed(UpdatesLike::AffectedMessages(affected));
        }
        Ok(())
    }

    fn login(&self) -> Option<&dyn AccountLogin> {
        Some(self)
    }

    async fn status(&self) -> SessionStatus {
        self.status.borrow().clone()
    }

    fn session(&self) -> watch::Receiver<SessionStatus> {
        self.status.subscribe()
    }

    fn take_updates(&self) -> Option<mpsc::Receiver<InboundUpdate>> {
        self.updates_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    async fn download(&self, file_id: &str) -> Result<Option<Download>, SendError> {
        if let Some(SendError::NeedsLogin) = self.refusal() {
            return Err(SendError::NeedsLogin);
        }
        let fail = |e: &InvocationError| self.fail(e);
        files::download(self.rpc.clone(), &self.dcs, file_id, &fail).await
    }
}

#[async_trait]
impl AccountLogin for MtprotoBackend {
    async fn step(&self) -> Result<LoginStep, LoginError> {
        login::step(&self.session).map_err(|e| LoginError::Unavailable(e.to_string()))
    }

    async fn submit_phone(&self, phone: &str) -> Result<LoginStep, LoginError> {
        let _one = self.login_lock.lock().await;
        login::submit_phone(self.rpc.as_ref(), &self.session, &self.api, phone).await
    }

    async fn submit_code(&self, code: &str) -> Result<LoginStep, LoginError> {
        let _one = self.login_lock.lock().await;
        let step = login::submit_code(self.rpc.as_ref(), &self.session, code).await?;
        if step == LoginStep::Authorized {
            self.logged_in().await;
        }
        Ok(step)
    }

    async fn submit_password(&self, password: &SecretString) -> Result<LoginStep, LoginError> {
        let _one = self.login_lock.lock().await;
        let step = login::submit_password(self.rpc.as_ref(), &self.session, password).await?;
        if step == LoginStep::Authorized {
            self.logged_in().await;
        }
        Ok(step)
    }
}
