//! The account's session on `DATA_DIR`, sealed (see `sealed`): the auth key
//! of each datacenter, the peer cache (ids and access hashes), the update
//! state and a login in progress. It implements grammers' `Session`, so the
//! library reads and writes it, and every change is on disk before the call
//! that made it returns.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use grammers_session::{
    BoxFuture, Session, SessionData,
    types::{DcOption, PeerId, PeerInfo, UpdateState, UpdatesState},
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::sealed::{SealError, Sealer};

/// The session's file name in `DATA_DIR`.
pub const SESSION_FILE: &str = "telegram.session";

/// A login between "code sent" and "signed in", kept so a restart does not
/// need a new code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum PendingLogin {
    /// `auth.sendCode` answered; the code is awaited.
    Code {
        phone: String,
        phone_code_hash: String,
    },
    /// The code was right and the account has a 2FA password.
    Password {
        phone: String,
        #[serde(default)]
        hint: Option<String>,
    },
}

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Contents {
    home_dc: i32,
    dc_options: Vec<DcOption>,
    peers: Vec<PeerInfo>,
    updates: UpdatesState,
    #[serde(default)]
    login: Option<PendingLogin>,
}

impl Default for Contents {
    fn default() -> Self {
        let data = SessionData::default();
        let mut dc_options: Vec<DcOption> = data.dc_options.into_values().collect();
        dc_options.sort_by_key(|d| d.id);
        Self {
            home_dc: data.home_dc,
            dc_options,
            peers: Vec::new(),
            updates: UpdatesState::default(),
            login: None,
        }
    }
}

/// The live state, indexed, and the file it is written to.
struct State {
    home_dc: i32,
    dc_options: HashMap<i32, DcOption>,
    peers: HashMap<PeerId, PeerInfo>,
    updates: UpdatesState,
    login: Option<PendingLogin>,
}

impl State {
    fn contents(&self) -> Contents {
        let mut dc_options: Vec<DcOption> = self.dc_options.values().cloned().collect();
        dc_options.sort_by_key(|d| d.id);
        let mut peers: Vec<PeerInfo> = self.peers.values().cloned().collect();
        peers.sort_by_key(|p| p.id().bot_api_dialog_id_unchecked());
        Contents {
            home_dc: self.home_dc,
            dc_options,
            peers,
            updates: self.updates.clone(),
            login: self.login.clone(),
        }
    }

    fn from_contents(c: Contents) -> Self {
        Self {
            home_dc: c.home_dc,
            dc_options: c.dc_options.into_iter().map(|d| (d.id, d)).collect(),
            peers: c.peers.into_iter().map(|p| (p.id(), p)).collect(),
            updates: c.updates,
            login: c.login,
        }
    }
}

/// Why the session could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum SessionFileError {
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("{path} opened but does not hold a session: {error}")]
    Corrupt {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("there is no session at {path}: nothing to rotate")]
    Missing { path: PathBuf },
    #[error("the session's lock is poisoned")]
    Poisoned,
    #[error(
        "another process holds {path}: stop the running adapter before `login` or `rotate-key`"
    )]
    InUse { path: PathBuf },
}

/// The sealed session file, implementing grammers' `Session`.
pub struct SessionFile {
    path: PathBuf,
    sealer: Mutex<Sealer>,
    state: Mutex<State>,
    /// An exclusive lock on `telegram.session.lock`, held while this is
    /// open: a second process (a `login` beside a running adapter) is
    /// refused instead of overwriting the other's writes.
    _held: std::fs::File,
}

/// Takes the session's lock file, or says who holds it.
fn hold(data_dir: &Path) -> Result<std::fs::File, SessionFileError> {
    let path = data_dir.join(format!("{SESSION_FILE}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| SealError::Io {
            path: path.clone(),
            error,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(SessionFileError::InUse { path }),
        Err(std::fs::TryLockError::Error(error)) => Err(SealError::Io { path, error }.into()),
    }
}

impl SessionFile {
    /// Opens `DATA_DIR/telegram.session` with `key`, or starts an empty
    /// session (written at its first change) when there is none. A key that
    /// does not open the file is an error and the file is not touched.
    pub fn open(data_dir: &Path, key: &SecretString) -> Result<Self, SessionFileError> {
        let held = hold(data_dir)?;
        let path = data_dir.join(SESSION_FILE);
        let (sealer, contents) = match Sealer::open(key, &path)? {
            Some((sealer, plain)) => {
                let contents =
                    serde_json::from_slice(&plain).map_err(|error| SessionFileError::Corrupt {
                        path: path.clone(),
                        error,
                    })?;
                (sealer, contents)
            }
            None => (Sealer::new(key.clone()), Contents::default()),
        };
        Ok(Self {
            path,
            sealer: Mutex::new(sealer),
            state: Mutex::new(State::from_contents(contents)),
            _held: held,
        })
    }

    /// Re-encrypts the session in `data_dir` from `old` to `new`, with a new
    /// salt, replacing the file atomically. The old key must open it.
    pub fn rotate_key(
        data_dir: &Path,
        old: &SecretString,
        new: &SecretString,
    ) -> Result<(), SessionFileError> {
        let _held = hold(data_dir)?;
        let path = data_dir.join(SESSION_FILE);
        let Some((_, plain)) = Sealer::open(old, &path)? else {
            return Err(SessionFileError::Missing { path });
        };
        Sealer::new(new.clone()).write(&path, &plain)?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, SessionFileError> {
        self.state.lock().map_err(|_| SessionFileError::Poisoned)
    }

    /// Changes the state with `change` and writes it when it changed.
    fn change(&self, change: impl FnOnce(&mut State) -> bool) -> Result<(), SessionFileError> {
        let mut state = self.lock()?;
        if !change(&mut state) {
            return Ok(());
        }
        let plain =
            serde_json::to_vec(&state.contents()).map_err(|error| SessionFileError::Corrupt {
                path: self.path.clone(),
                error,
            })?;
        let sealer = self.sealer.lock().map_err(|_| SessionFileError::Poisoned)?;
        sealer.write(&self.path, &plain)?;
        Ok(())
    }

    /// The login in progress, if any.
    pub fn pending_login(&self) -> Result<Option<PendingLogin>, SessionFileError> {
        Ok(self.lock()?.login.clone())
    }

    pub fn set_pending_login(&self, login: Option<PendingLogin>) -> Result<(), SessionFileError> {
        self.change(|s| {
            let changed = s.login != login;
            s.login = login;
            changed
        })
    }

    /// The logged-in account's user id, if a login completed.
    pub fn self_user(&self) -> Result<Option<i64>, SessionFileError> {
        Ok(self.lock()?.peers.values().find_map(|p| match p {
            PeerInfo::User {
                id,
                is_self: Some(true),
                ..
            } => Some(*id),
            _ => None,
        }))
    }

    /// Forgets the account (a revoked session): the login and the update
    /// state go; the auth keys (which a new login binds again) and the peer
    /// cache stay.
    pub fn sign_out(&self) -> Result<(), SessionFileError> {
        self.change(|s| {
            for p in s.peers.values_mut() {
                if let PeerInfo::User { is_self, .. } = p {
                    *is_self = None;
                }
            }
            s.updates = UpdatesState::default();
            s.login = None;
            true
        })
    }

    /// A cached peer by its Bot API dialog id.
    pub fn cached(&self, dialog_id: i64) -> Result<Option<PeerInfo>, SessionFileError> {
        let Some(id) = PeerId::from_bot_api_dialog_id(dialog_id) else {
            return Ok(None);
        };
        Ok(self.lock()?.peers.get(&id).cloned())
    }

    /// The update state as saved.
    pub fn saved_updates_state(&self) -> Result<UpdatesState, SessionFileError> {
        Ok(self.lock()?.updates.clone())
    }
}

fn apply(updates: &mut UpdatesState, change: UpdateState) {
    match change {
        UpdateState::All(all) => *updates = all,
        UpdateState::Primary { pts, date, seq } => {
            updates.pts = pts;
            updates.date = date;
            updates.seq = seq;
        }
        UpdateState::Secondary { qts } => updates.qts = qts,
        UpdateState::Channel { id, pts } => {
            match updates.channels.iter_mut().find(|c| c.id == id) {
                Some(c) => c.pts = pts,
                None => updates
                    .channels
                    .push(grammers_session::types::ChannelState { id, pts }),
            }
        }
    }
}

impl Session for SessionFile {
    type Error = SessionFileError;

    fn home_dc_id(&self) -> Result<i32, Self::Error> {
        Ok(self.lock()?.home_dc)
    }

    fn set_home_dc_id(&self, dc_id: i32) -> BoxFuture<'_, Result<(), Self::Error>> {
        Box::pin(async move {
            self.change(|s| {
                let changed = s.home_dc != dc_id;
                s.home_dc = dc_id;
                changed
            })
        })
    }

    fn dc_option(&self, dc_id: i32) -> Result<Option<DcOption>, Self::Error> {
        Ok(self.lock()?.dc_options.get(&dc_id).cloned())
    }

    fn set_dc_option(&self, dc_option: &DcOption) -> BoxFuture<'_, Result<(), Self::Error>> {
        let dc_option = dc_option.clone();
        Box::pin(async move {
            self.change(|s| {
                let changed = s.dc_options.get(&dc_option.id) != Some(&dc_option);
                s.dc_options.insert(dc_option.id, dc_option);
                changed
            })
        })
    }

    fn peer(&self, peer: PeerId) -> BoxFuture<'_, Result<Option<PeerInfo>, Self::Error>> {
        Box::pin(async move {
            let state = self.lock()?;
            if peer == PeerId::self_user() {
                return Ok(state
                    .peers
                    .values()
                    .find(|p| {
                        matches!(
                            p,
                            PeerInfo::User {
                                is_self: Some(true),
                                ..
                            }
                        )
                    })
                    .cloned());
            }
            Ok(state.peers.get(&peer).cloned())
        })
    }

    fn cache_peer(&self, peer: PeerInfo) -> BoxFuture<'_, Result<(), Self::Error>> {
        Box::pin(async move { self.cache_peers(vec![peer]).await })
    }

    fn cache_peers(&self, peers: Vec<PeerInfo>) -> BoxFuture<'_, Result<(), Self::Error>> {
        Box::pin(async move {
            self.change(|s| {
                let mut changed = false;
                for peer in peers {
                    match s.peers.get_mut(&peer.id()) {
                        Some(known) => {
                            let before = known.clone();
                            known.extend_info(&peer);
                            changed |= *known != before;
                        }
                        None => {
                            s.peers.insert(peer.id(), peer);
                            changed = true;
                        }
                    }
                }
                changed
            })
        })
    }

    fn updates_state(&self) -> BoxFuture<'_, Result<UpdatesState, Self::Error>> {
        Box::pin(async move { self.saved_updates_state() })
    }

    fn set_update_state(&self, update: UpdateState) -> BoxFuture<'_, Result<(), Self::Error>> {
        Box::pin(async move {
            self.change(|s| {
                let before = s.updates.clone();
                apply(&mut s.updates, update);
                s.updates != before
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use grammers_session::types::PeerAuth;

    use super::*;

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tg-session-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn key(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    async fn fill(session: &SessionFile) {
        let mut dc = session.dc_option(2).unwrap().unwrap();
        dc.auth_key = Some([7u8; 256]);
        session.set_dc_option(&dc).await.unwrap();
        session.set_home_dc_id(2).await.unwrap();
        session
            .cache_peers(vec![
                PeerInfo::User {
                    id: 1001,
                    auth: Some(PeerAuth::from_hash(-55)),
                    bot: Some(false),
                    is_self: Some(true),
                },
                PeerInfo::User {
                    id: 42,
                    auth: Some(PeerAuth::from_hash(99)),
                    bot: None,
                    is_self: None,
                },
                PeerInfo::Channel {
                    id: 777,
                    auth: Some(PeerAuth::from_hash(5)),
                    kind: None,
                },
            ])
            .await
            .unwrap();
        session
            .set_update_state(UpdateState::Primary {
                pts: 10,
                date: 20,
                seq: 30,
            })
            .await
            .unwrap();
        session
            .set_update_state(UpdateState::Channel { id: 777, pts: 4 })
            .await
            .unwrap();
        session
            .set_pending_login(Some(PendingLogin::Code {
                phone: "+15550100".into(),
                phone_code_hash: "abc123".into(),
            }))
            .unwrap();
    }

    #[tokio::test]
    async fn everything_survives_a_reopen_and_nothing_is_in_clear() {
        let dir = dir();
        let k = key("a long enough key for tests");
        {
            let session = SessionFile::open(&dir, &k).unwrap();
            fill(&session).await;
        }
        let session = SessionFile::open(&dir, &k).unwrap();
        assert_eq!(session.home_dc_id().unwrap(), 2);
        assert_eq!(
            session.dc_option(2).unwrap().unwrap().auth_key,
            Some([7u8; 256])
        );
        assert_eq!(session.self_user().unwrap(), Some(1001));
        assert_eq!(
            session
                .peer(PeerId::self_user())
                .await
                .unwrap()
                .unwrap()
                .id(),
            PeerId::user(1001).unwrap()
        );
        assert_eq!(
            session.cached(42).unwrap().unwrap().auth(),
            Some(PeerAuth::from_hash(99))
        );
        assert_eq!(
            session.cached(-1_000_000_000_777).unwrap().unwrap().auth(),
            Some(PeerAuth::from_hash(5))
        );
        assert!(session.cached(43).unwrap().is_none());
        let updates = session.updates_state().await.unwrap();
        assert_eq!((updates.pts, updates.date, updates.seq), (10, 20, 30));
        assert_eq!(updates.channels.len(), 1);
        assert_eq!(
            session.pending_login().unwrap(),
            Some(PendingLogin::Code {
                phone: "+15550100".into(),
                phone_code_hash: "abc123".into(),
            })
        );
        let raw = std::fs::read(dir.join(SESSION_FILE)).unwrap();
        for needle in [&b"abc123"[..], b"15550100", b"phone_code_hash"] {
            assert!(!raw.windows(needle.len()).any(|w| w == needle));
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_wrong_key_stops_and_leaves_the_file_byte_for_byte() {
        let dir = dir();
        {
            let session = SessionFile::open(&dir, &key("the right key")).unwrap();
            fill(&session).await;
        }
        let path = dir.join(SESSION_FILE);
        let before = std::fs::read(&path).unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let err = SessionFile::open(&dir, &key("the wrong key"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("TDLIB_ENCRYPTION_KEY") && err.contains("left as it is"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            modified
        );
        assert!(!dir.join(format!("{SESSION_FILE}.tmp")).exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn key_rotation_re_encrypts_everything() {
        let dir = dir();
        let (old, new) = (key("the old key"), key("the new key"));
        {
            let session = SessionFile::open(&dir, &old).unwrap();
            fill(&session).await;
        }
        let before = SessionFile::open(&dir, &old)
            .unwrap()
            .lock()
            .unwrap()
            .contents();
        // The wrong old key rotates nothing.
        assert!(SessionFile::rotate_key(&dir, &new, &old).is_err());
        SessionFile::rotate_key(&dir, &old, &new).unwrap();
        assert!(SessionFile::open(&dir, &old).is_err());
        let after = SessionFile::open(&dir, &new)
            .unwrap()
            .lock()
            .unwrap()
            .contents();
        assert_eq!(after, before);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn one_process_at_a_time() {
        let dir = dir();
        let first = SessionFile::open(&dir, &key("k")).unwrap();
        let err = SessionFile::open(&dir, &key("k")).err().unwrap();
        assert!(matches!(err, SessionFileError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("stop the running adapter"));
        assert!(matches!(
            SessionFile::rotate_key(&dir, &key("k"), &key("k2")),
            Err(SessionFileError::InUse { .. })
        ));
        drop(first);
        SessionFile::open(&dir, &key("k")).unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn sign_out_forgets_the_account_and_keeps_peers() {
        let dir = dir();
        let session = SessionFile::open(&dir, &key("k")).unwrap();
        fill(&session).await;
        session.sign_out().unwrap();
        assert_eq!(session.self_user().unwrap(), None);
        assert_eq!(
            session.dc_option(2).unwrap().unwrap().auth_key,
            Some([7u8; 256])
        );
        assert!(session.cached(42).unwrap().is_some());
        assert_eq!(session.pending_login().unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
