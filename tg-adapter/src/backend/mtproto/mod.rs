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
pub mod mapping;
mod messages;
mod peers;
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
use grammers_session::updates::UpdatesLike;
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
/// The longest flood wait the session shows (30 days); Telegram's are far
/// shorter.
const LONGEST_WAIT_SECS: i64 = 30 * 86_400;
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
                    + chrono::Duration::seconds(
                        i64::try_from(*secs)
                            .unwrap_or(LONGEST_WAIT_SECS)
                            .min(LONGEST_WAIT_SECS),
                    ),
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
    /// moved on meanwhile). A wait already running that ends later stays.
    fn wait_until(&self, until: DateTime<Utc>) {
        let status = self.status.clone();
        let longer = self.status.send_if_modified(|now| {
            let shorter_running = now.session == SessionState::FloodWait
                && now.until.is_some_and(|running| running >= until);
            if !shorter_running {
                *now = SessionStatus {
                    session: SessionState::FloodWait,
                    until: Some(until),
                };
            }
            !shorter_running
        });
        if !longer {
            return;
        }
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
}

#[async_trait]
impl Backend for MtprotoBackend {
    async fn send_message(&self, request: &SendRequest) -> Result<Sent, SendError> {
        self.send(request).await
    }

    async fn edit_message(&self, request: &EditRequest) -> Result<DateTime<Utc>, SendError> {
        self.edit(request).await
    }

    async fn delete_messages(&self, chat_id: i64, tg_message_ids: &[i64]) -> Result<(), SendError> {
        self.delete(chat_id, tg_message_ids).await
    }

    async fn mark_read(&self, chat_id: i64, max_id: i64) -> Result<(), SendError> {
        self.read(chat_id, max_id).await
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
