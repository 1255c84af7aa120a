//! The peers the account knows: a chat's access hash comes only from what
//! Telegram sent (updates, answers, dialogs), never from a guess.

use grammers_session::{
    Session,
    types::{PeerId, PeerInfo, PeerKind, PeerRef},
};
use grammers_tl_types as tl;

use super::{MtprotoBackend, WARM_DIALOGS};
use crate::backend::SendError;

impl MtprotoBackend {
    /// The chat's input peer from the cache: a chat whose access hash the
    /// account has never seen is `chat_not_found`, never a guess.
    pub(super) async fn input_peer(
        &self,
        chat_id: i64,
    ) -> Result<(PeerId, tl::enums::InputPeer), SendError> {
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
            (_, Some(auth)) if auth.hash() != 0 => PeerRef { id, auth },
            _ => return Err(not_found()),
        };
        Ok((id, peer.into()))
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
    pub(super) async fn remember(&self, updates: &tl::enums::Updates) {
        let (users, chats) = match updates {
            tl::enums::Updates::Updates(u) => (u.users.clone(), u.chats.clone()),
            tl::enums::Updates::Combined(u) => (u.users.clone(), u.chats.clone()),
            _ => return,
        };
        if let Err(e) = self.session.cache_peers(known_peers(users, chats)).await {
            tracing::warn!(error = %e, "could not cache peers");
        }
    }
}

/// Peers with a usable access hash (min users' hashes are not).
fn known_peers(users: Vec<tl::enums::User>, chats: Vec<tl::enums::Chat>) -> Vec<PeerInfo> {
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
