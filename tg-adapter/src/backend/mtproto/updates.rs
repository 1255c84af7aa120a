//! Telegram's updates as the adapter's inbound events: new messages and
//! edits become `tg.update.received.v1`, deletions `tg.update.deleted.v1`,
//! read receipts `tg.update.read.v1`. Each goes through the confirmed
//! publisher, and the update state is checkpointed in the session only
//! after the broker confirmed the event: a crash or a failed publish
//! re-delivers (inbound dedups on chat and message id), it never loses.
//! After downtime grammers' catch-up (`updates.getDifference`) starts from
//! the last checkpoint.

use std::{sync::Arc, time::Duration};

use broker_config::events::{
    TgChat, TgMedia, TgSender, TgUpdateDeleted, TgUpdateRead, TgUpdateReceived,
};
use chrono::{DateTime, Utc};
use grammers_client::{Client, peer::Peer, peer::PeerMap};
use grammers_mtsender::UpdatesConfiguration;
use grammers_session::{
    Session,
    types::{PeerId, UpdateState},
    updates::{MessageBox, State, UpdatesLike},
};
use grammers_tl_types as tl;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{files::FileRef, session::SessionFile};
use crate::backend::{Inbound, InboundUpdate, PublishFailed, SessionState, SessionStatus};

/// Names of the peers an update mentions (grammers' `PeerMap` live, a map
/// in tests).
pub trait Names {
    fn user(&self, id: i64) -> TgSender;
    fn chat(&self, peer: PeerId) -> TgChat;
}

impl Names for PeerMap {
    fn user(&self, id: i64) -> TgSender {
        let mut sender = TgSender {
            id,
            username: None,
            first_name: None,
            last_name: None,
        };
        if let Some(Peer::User(user)) = PeerId::user(id).and_then(|p| self.get(p)) {
            sender.username = user.username().map(str::to_owned);
            sender.first_name = user.first_name().map(str::to_owned);
            sender.last_name = user.last_name().map(str::to_owned);
        }
        sender
    }

    fn chat(&self, peer: PeerId) -> TgChat {
        let (kind, title) = match self.get(peer) {
            Some(Peer::User(_)) | None if peer_kind(peer) == "private" => ("private", None),
            Some(Peer::Group(g)) => ("group", g.title().map(str::to_owned)),
            Some(Peer::Channel(c)) => ("channel", Some(c.title().to_owned())),
            _ => (peer_kind(peer), None),
        };
        TgChat {
            id: peer.bot_api_dialog_id_unchecked(),
            kind: kind.to_owned(),
            title,
        }
    }
}

fn peer_kind(peer: PeerId) -> &'static str {
    match peer.kind() {
        grammers_session::types::PeerKind::User => "private",
        grammers_session::types::PeerKind::Chat => "group",
        grammers_session::types::PeerKind::Channel => "channel",
    }
}

fn time(unix: i32) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(unix), 0).unwrap_or_else(Utc::now)
}

fn channel_dialog_id(channel_id: i64) -> Option<i64> {
    PeerId::channel(channel_id).map(PeerId::bot_api_dialog_id_unchecked)
}

/// One update as an inbound event, or `None` for what the system does not
/// take (the account's own messages, typing, presence, ...).
pub fn map_update(
    update: &tl::enums::Update,
    names: &dyn Names,
    now: DateTime<Utc>,
) -> Option<Inbound> {
    use tl::enums::Update as U;
    match update {
        U::NewMessage(tl::types::UpdateNewMessage { message, .. })
        | U::NewChannelMessage(tl::types::UpdateNewChannelMessage { message, .. }) => {
            received(message, names, false).map(Inbound::Message)
        }
        U::EditMessage(tl::types::UpdateEditMessage { message, .. })
        | U::EditChannelMessage(tl::types::UpdateEditChannelMessage { message, .. }) => {
            received(message, names, true).map(Inbound::Message)
        }
        U::DeleteMessages(d) => Some(Inbound::Deleted(TgUpdateDeleted {
            chat_id: None,
            tg_message_ids: d.messages.iter().map(|&id| i64::from(id)).collect(),
            deleted_at: now,
        })),
        U::DeleteChannelMessages(d) => Some(Inbound::Deleted(TgUpdateDeleted {
            chat_id: Some(channel_dialog_id(d.channel_id)?),
            tg_message_ids: d.messages.iter().map(|&id| i64::from(id)).collect(),
            deleted_at: now,
        })),
        U::ReadHistoryOutbox(r) => Some(Inbound::Read(TgUpdateRead {
            chat_id: PeerId::from(r.peer.clone()).bot_api_dialog_id_unchecked(),
            max_id: i64::from(r.max_id),
            outgoing: true,
            read_at: now,
        })),
        U::ReadHistoryInbox(r) => Some(Inbound::Read(TgUpdateRead {
            chat_id: PeerId::from(r.peer.clone()).bot_api_dialog_id_unchecked(),
            max_id: i64::from(r.max_id),
            outgoing: false,
            read_at: now,
        })),
        U::ReadChannelOutbox(r) => Some(Inbound::Read(TgUpdateRead {
            chat_id: channel_dialog_id(r.channel_id)?,
            max_id: i64::from(r.max_id),
            outgoing: true,
            read_at: now,
        })),
        U::ReadChannelInbox(r) => Some(Inbound::Read(TgUpdateRead {
            chat_id: channel_dialog_id(r.channel_id)?,
            max_id: i64::from(r.max_id),
            outgoing: false,
            read_at: now,
        })),
        _ => None,
    }
}

fn received(
    message: &tl::enums::Message,
    names: &dyn Names,
    edit: bool,
) -> Option<TgUpdateReceived> {
    let tl::enums::Message::Message(m) = message else {
        return None;
    };
    // The account's own messages are already in the system (or were sent
    // from another app, which the inbox does not show).
    if m.out {
        return None;
    }
    let chat = PeerId::from(m.peer_id.clone());
    let sender_id = match &m.from_id {
        Some(tl::enums::Peer::User(u)) => u.user_id,
        // A private chat names no sender: it is the chat's user.
        _ if chat.kind() == grammers_session::types::PeerKind::User => chat.bare_id_unchecked(),
        // A channel post or an anonymous admin: the chat speaks.
        _ => chat.bot_api_dialog_id_unchecked(),
    };
    Some(TgUpdateReceived {
        chat: names.chat(chat),
        sender: names.user(sender_id),
        tg_message_id: i64::from(m.id),
        text: m.message.clone(),
        media: m.media.as_ref().and_then(media).into_iter().collect(),
        date: time(m.date),
        edited_at: edit.then(|| m.edit_date.map(time).unwrap_or_else(Utc::now)),
    })
}

/// A message's file, described with a `file_id` that `GET /v1/media` can
/// download later.
fn media(media: &tl::enums::MessageMedia) -> Option<TgMedia> {
    match media {
        tl::enums::MessageMedia::Photo(p) => {
            let Some(tl::enums::Photo::Photo(photo)) = &p.photo else {
                return None;
            };
            let (thumb, size) = photo
                .sizes
                .iter()
                .filter_map(|s| match s {
                    tl::enums::PhotoSize::Size(s) => Some((s.r#type.clone(), i64::from(s.size))),
                    tl::enums::PhotoSize::Progressive(s) => Some((
                        s.r#type.clone(),
                        s.sizes.iter().copied().max().map_or(0, i64::from),
                    )),
                    _ => None,
                })
                .max_by_key(|(_, size)| *size)?;
            let file = FileRef {
                kind: "photo".into(),
                id: photo.id,
                access_hash: photo.access_hash,
                file_reference: photo.file_reference.clone(),
                dc_id: photo.dc_id,
                thumb,
                size,
                mime: Some("image/jpeg".into()),
            };
            Some(TgMedia {
                kind: "photo".into(),
                file_id: Some(file.encode()),
                filename: None,
                size: Some(size),
                content_type: Some("image/jpeg".into()),
            })
        }
        tl::enums::MessageMedia::Document(d) => {
            let Some(tl::enums::Document::Document(doc)) = &d.document else {
                return None;
            };
            let mut kind = "document";
            let mut filename = None;
            for attribute in &doc.attributes {
                match attribute {
                    tl::enums::DocumentAttribute::Filename(f) => {
                        filename = Some(f.file_name.clone())
                    }
                    tl::enums::DocumentAttribute::Audio(a) => {
                        kind = if a.voice { "voice" } else { "audio" };
                    }
                    tl::enums::DocumentAttribute::Video(_) if kind == "document" => kind = "video",
                    _ => {}
                }
            }
            let file = FileRef {
                kind: "document".into(),
                id: doc.id,
                access_hash: doc.access_hash,
                file_reference: doc.file_reference.clone(),
                dc_id: doc.dc_id,
                thumb: String::new(),
                size: doc.size,
                mime: Some(doc.mime_type.clone()),
            };
            Some(TgMedia {
                kind: kind.into(),
                file_id: Some(file.encode()),
                filename,
                size: Some(doc.size),
                content_type: Some(doc.mime_type.clone()),
            })
        }
        _ => None,
    }
}

/// The part of the update state an update moves, to save once its event
/// is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    Primary { pts: i32, date: i32, seq: i32 },
    Secondary { qts: i32 },
    Channel { id: i64, pts: i32 },
}

impl Checkpoint {
    fn state(self) -> UpdateState {
        match self {
            Checkpoint::Primary { pts, date, seq } => UpdateState::Primary { pts, date, seq },
            Checkpoint::Secondary { qts } => UpdateState::Secondary { qts },
            Checkpoint::Channel { id, pts } => UpdateState::Channel { id, pts },
        }
    }
}

/// `None` for an update outside any sequence.
pub fn checkpoint_of(state: &State) -> Option<Checkpoint> {
    match state.message_box? {
        MessageBox::Common { pts } => Some(Checkpoint::Primary {
            pts,
            date: state.date,
            seq: state.seq,
        }),
        MessageBox::Secondary { qts } => Some(Checkpoint::Secondary { qts }),
        MessageBox::Channel { channel_id, pts } => Some(Checkpoint::Channel {
            id: channel_id,
            pts,
        }),
    }
}

/// Hands `event` to the forwarder, waits for the broker's confirm, and
/// only then saves `checkpoint`. A failed publish leaves the saved state
/// where it was.
pub async fn publish_then_checkpoint(
    forwarder: &mpsc::Sender<InboundUpdate>,
    session: &SessionFile,
    event: Option<Inbound>,
    checkpoint: Option<Checkpoint>,
) -> Result<(), PublishFailed> {
    if let Some(event) = event {
        let (ack, confirmed) = oneshot::channel();
        forwarder
            .send(InboundUpdate {
                update: event,
                ack,
                trace: platform::trace::inject_current(),
            })
            .await
            .map_err(|_| PublishFailed("the inbound forwarder has stopped".into()))?;
        confirmed
            .await
            .map_err(|_| PublishFailed("the inbound forwarder dropped the update".into()))??;
    }
    if let Some(checkpoint) = checkpoint {
        session
            .set_update_state(checkpoint.state())
            .await
            .map_err(|e| PublishFailed(format!("saving the update state: {e}")))?;
    }
    Ok(())
}

/// How long a failed publish waits before the same update is tried again.
const REPUBLISH_AFTER: Duration = Duration::from_secs(2);
/// The longest wait before the update stream is started again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Runs the update stream while the account is authorized: catches up
/// from the checkpoint, and forwards each update until confirmed. A stream
/// that fails is started again from the checkpoint.
pub async fn pump(
    client: Client,
    mut network: mpsc::Receiver<UpdatesLike>,
    mut own_calls: mpsc::Receiver<UpdatesLike>,
    forwarder: mpsc::Sender<InboundUpdate>,
    session: Arc<SessionFile>,
    mut status: watch::Receiver<SessionStatus>,
    stop: CancellationToken,
) {
    // The network's updates go to whichever stream runs now.
    let current: Arc<std::sync::Mutex<Option<mpsc::Sender<UpdatesLike>>>> = Arc::default();
    let relay = {
        let current = current.clone();
        let stop = stop.clone();
        async move {
            loop {
                let raw = tokio::select! {
                    _ = stop.cancelled() => return,
                    raw = network.recv() => raw,
                    Some(raw) = own_calls.recv() => Some(raw),
                };
                let Some(raw) = raw else { return };
                let tx = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some(tx) = tx {
                    let _ = tx.send(raw).await;
                }
            }
        }
    };
    let streams = async move {
        // Consecutive failures of the stream (Telegram unreachable) wait
        // longer each time, up to a minute.
        let mut backoff = REPUBLISH_AFTER;
        loop {
            // Updates need an account: wait for a login.
            while status.borrow_and_update().session == SessionState::NeedsLogin {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = status.changed() => if changed.is_err() { return },
                }
            }
            let (tx, rx) = mpsc::channel(100);
            *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
            let mut stream = match client
                .stream_updates(rx, UpdatesConfiguration { catch_up: true })
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "could not start the update stream; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            continue;
                        }
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = status.changed() => {
                        if changed.is_err() { return }
                        if status.borrow().session == SessionState::NeedsLogin { break }
                        continue;
                    }
                    next = stream.next_raw() => next,
                };
                let (update, state, peers) = match next {
                    Ok(n) => {
                        backoff = REPUBLISH_AFTER;
                        n
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            retry_in = ?backoff,
                            "update stream failed; restarting it from the checkpoint"
                        );
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        break;
                    }
                };
                let event = map_update(&update, &peers, Utc::now());
                let checkpoint = checkpoint_of(&state);
                while let Err(e) =
                    publish_then_checkpoint(&forwarder, &session, event.clone(), checkpoint).await
                {
                    tracing::warn!(error = %e, "inbound update not confirmed; trying again");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(REPUBLISH_AFTER) => {}
                    }
                }
            }
        }
    };
    tokio::join!(relay, streams);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use grammers_session::types::PeerAuth;
    use secrecy::SecretString;

    use super::*;

    /// Names from a map, as a `PeerMap` would give them.
    #[derive(Default)]
    struct Map(HashMap<i64, (&'static str, &'static str)>);

    impl Names for Map {
        fn user(&self, id: i64) -> TgSender {
            let found = self.0.get(&id);
            TgSender {
                id,
                username: found.map(|(u, _)| (*u).to_owned()),
                first_name: found.map(|(_, f)| (*f).to_owned()),
                last_name: None,
            }
        }

        fn chat(&self, peer: PeerId) -> TgChat {
            TgChat {
                id: peer.bot_api_dialog_id_unchecked(),
                kind: peer_kind(peer).to_owned(),
                title: None,
            }
        }
    }

    fn names() -> Map {
        Map(HashMap::from([(42, ("ann", "Ann"))]))
    }

    /// A message as Telegram sends it, with the few fields that matter set.
    pub fn message(
        id: i32,
        peer: tl::enums::Peer,
        from: Option<i64>,
        out: bool,
        text: &str,
        media: Option<tl::enums::MessageMedia>,
    ) -> tl::enums::Message {
        tl::enums::Message::Message(tl::types::Message {
            out,
            mentioned: false,
            media_unread: false,
            silent: false,
            post: false,
            from_scheduled: false,
            legacy: false,
            edit_hide: false,
            pinned: false,
            noforwards: false,
            invert_media: false,
            offline: false,
            video_processing_pending: false,
            paid_suggested_post_stars: false,
            paid_suggested_post_ton: false,
            id,
            from_id: from.map(|user_id| tl::types::PeerUser { user_id }.into()),
            from_boosts_applied: None,
            from_rank: None,
            peer_id: peer,
            saved_peer_id: None,
            fwd_from: None,
            via_bot_id: None,
            via_business_bot_id: None,
            guestchat_via_from: None,
            reply_to: None,
            date: 1_700_000_000,
            message: text.into(),
            media,
            reply_markup: None,
            entities: None,
            views: None,
            forwards: None,
            replies: None,
            edit_date: Some(1_700_000_500),
            post_author: None,
            grouped_id: None,
            reactions: None,
            restriction_reason: None,
            ttl_period: None,
            quick_reply_shortcut_id: None,
            effect: None,
            factcheck: None,
            report_delivery_until_date: None,
            paid_message_stars: None,
            suggested_post: None,
            schedule_repeat_period: None,
            summary_from_language: None,
            rich_message: None,
        })
    }

    fn private(user_id: i64) -> tl::enums::Peer {
        tl::types::PeerUser { user_id }.into()
    }

    fn new_message(message: tl::enums::Message) -> tl::enums::Update {
        tl::types::UpdateNewMessage {
            message,
            pts: 5,
            pts_count: 1,
        }
        .into()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_customers_message_becomes_received_and_our_own_is_skipped() {
        let update = new_message(message(7, private(42), None, false, "hello", None));
        let Some(Inbound::Message(m)) = map_update(&update, &names(), now()) else {
            panic!("not mapped");
        };
        assert_eq!(m.chat.id, 42);
        assert_eq!(m.chat.kind, "private");
        assert_eq!(m.sender.id, 42);
        assert_eq!(m.sender.first_name.as_deref(), Some("Ann"));
        assert_eq!(m.tg_message_id, 7);
        assert_eq!(m.text, "hello");
        assert_eq!(m.date.timestamp(), 1_700_000_000);
        assert_eq!(m.edited_at, None);

        let own = new_message(message(8, private(42), None, true, "reply", None));
        assert_eq!(map_update(&own, &names(), now()), None);
    }

    #[test]
    fn a_group_message_names_its_sender_and_an_edit_its_time() {
        let group: tl::enums::Peer = tl::types::PeerChat { chat_id: 900 }.into();
        let update: tl::enums::Update = tl::types::UpdateEditMessage {
            message: message(3, group, Some(42), false, "fixed", None),
            pts: 6,
            pts_count: 1,
        }
        .into();
        let Some(Inbound::Message(m)) = map_update(&update, &names(), now()) else {
            panic!("not mapped");
        };
        assert_eq!((m.chat.id, m.chat.kind.as_str()), (-900, "group"));
        assert_eq!(m.sender.id, 42);
        assert_eq!(m.edited_at.unwrap().timestamp(), 1_700_000_500);
    }

    #[test]
    fn files_get_an_id_the_adapter_can_download_with() {
        let doc = tl::types::Document {
            id: 11,
            access_hash: 12,
            file_reference: vec![1, 2, 3],
            date: 0,
            mime_type: "audio/ogg".into(),
            size: 2048,
            thumbs: None,
            video_thumbs: None,
            dc_id: 4,
            attributes: vec![
                tl::types::DocumentAttributeAudio {
                    voice: true,
                    duration: 3,
                    title: None,
                    performer: None,
                    waveform: None,
                }
                .into(),
            ],
        };
        let media: tl::enums::MessageMedia = tl::types::MessageMediaDocument {
            nopremium: false,
            spoiler: false,
            video: false,
            round: false,
            voice: true,
            document: Some(doc.into()),
            alt_documents: None,
            video_cover: None,
            video_timestamp: None,
            ttl_seconds: None,
        }
        .into();
        let update = new_message(message(9, private(42), None, false, "", Some(media)));
        let Some(Inbound::Message(m)) = map_update(&update, &names(), now()) else {
            panic!("not mapped");
        };
        assert_eq!(m.media.len(), 1);
        let file = &m.media[0];
        assert_eq!(file.kind, "voice");
        assert_eq!(file.size, Some(2048));
        assert_eq!(file.content_type.as_deref(), Some("audio/ogg"));
        let reference = FileRef::decode(file.file_id.as_deref().unwrap()).unwrap();
        assert_eq!(
            (reference.id, reference.access_hash, reference.dc_id),
            (11, 12, 4)
        );
        assert_eq!(reference.file_reference, vec![1, 2, 3]);
    }

    #[test]
    fn deletions_and_read_receipts() {
        let deleted: tl::enums::Update = tl::types::UpdateDeleteMessages {
            messages: vec![3, 4],
            pts: 7,
            pts_count: 2,
        }
        .into();
        assert_eq!(
            map_update(&deleted, &names(), now()),
            Some(Inbound::Deleted(TgUpdateDeleted {
                chat_id: None,
                tg_message_ids: vec![3, 4],
                deleted_at: now(),
            }))
        );
        let in_channel: tl::enums::Update = tl::types::UpdateDeleteChannelMessages {
            channel_id: 777,
            messages: vec![5],
            pts: 8,
            pts_count: 1,
        }
        .into();
        let Some(Inbound::Deleted(d)) = map_update(&in_channel, &names(), now()) else {
            panic!("not mapped");
        };
        assert_eq!(d.chat_id, Some(-1_000_000_000_777));
        let read: tl::enums::Update = tl::types::UpdateReadHistoryOutbox {
            peer: private(42),
            max_id: 8,
            pts: 9,
            pts_count: 1,
        }
        .into();
        assert_eq!(
            map_update(&read, &names(), now()),
            Some(Inbound::Read(TgUpdateRead {
                chat_id: 42,
                max_id: 8,
                outgoing: true,
                read_at: now(),
            }))
        );
        let typing: tl::enums::Update = tl::types::UpdateUserTyping {
            user_id: 42,
            top_msg_id: None,
            action: tl::enums::SendMessageAction::SendMessageTypingAction,
        }
        .into();
        assert_eq!(map_update(&typing, &names(), now()), None);
    }

    #[test]
    fn checkpoints_follow_the_update_sequence() {
        let state = |message_box| State {
            date: 10,
            seq: 3,
            message_box,
        };
        assert_eq!(
            checkpoint_of(&state(Some(MessageBox::Common { pts: 5 }))),
            Some(Checkpoint::Primary {
                pts: 5,
                date: 10,
                seq: 3
            })
        );
        assert_eq!(
            checkpoint_of(&state(Some(MessageBox::Channel {
                channel_id: 777,
                pts: 2
            }))),
            Some(Checkpoint::Channel { id: 777, pts: 2 })
        );
        assert_eq!(checkpoint_of(&state(None)), None);
    }

    fn session() -> (std::path::PathBuf, Arc<SessionFile>) {
        let dir = std::env::temp_dir().join(format!("tg-updates-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let session = Arc::new(SessionFile::open(&dir, &SecretString::from("k")).unwrap());
        (dir, session)
    }

    /// A forwarder that answers each update with the next of `answers`.
    fn forwarder(
        answers: Vec<Result<(), &'static str>>,
    ) -> (
        mpsc::Sender<InboundUpdate>,
        tokio::task::JoinHandle<Vec<Inbound>>,
    ) {
        let (tx, mut rx) = mpsc::channel::<InboundUpdate>(4);
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answer in answers {
                let Some(update) = rx.recv().await else { break };
                seen.push(update.update.clone());
                let _ = update.ack.send(
                    answer
                        .map(|()| uuid::Uuid::now_v7())
                        .map_err(|e| PublishFailed(e.into())),
                );
            }
            seen
        });
        (tx, task)
    }

    #[tokio::test]
    async fn the_checkpoint_moves_only_after_the_publish_is_confirmed() {
        let (dir, session) = session();
        let (tx, seen) = forwarder(vec![Err("broker down"), Ok(())]);
        let update = new_message(message(7, private(42), None, false, "hello", None));
        let event = map_update(&update, &names(), now());
        let checkpoint = checkpoint_of(&State {
            date: 10,
            seq: 3,
            message_box: Some(MessageBox::Common { pts: 5 }),
        });

        let failed = publish_then_checkpoint(&tx, &session, event.clone(), checkpoint).await;
        assert_eq!(failed, Err(PublishFailed("broker down".into())));
        assert_eq!(session.saved_updates_state().unwrap().pts, 0);
        // A restart now would catch up from where it was: nothing lost.
        drop(session);
        let session = Arc::new(SessionFile::open(&dir, &SecretString::from("k")).unwrap());
        assert_eq!(session.saved_updates_state().unwrap().pts, 0);

        publish_then_checkpoint(&tx, &session, event.clone(), checkpoint)
            .await
            .unwrap();
        let saved = session.saved_updates_state().unwrap();
        assert_eq!((saved.pts, saved.date, saved.seq), (5, 10, 3));
        assert_eq!(
            seen.await.unwrap(),
            vec![event.clone().unwrap(), event.unwrap()]
        );

        // An update that maps to nothing still moves the checkpoint.
        let (tx, _) = forwarder(vec![]);
        publish_then_checkpoint(&tx, &session, None, Some(Checkpoint::Secondary { qts: 4 }))
            .await
            .unwrap();
        assert_eq!(session.saved_updates_state().unwrap().qts, 4);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Hand-built updates fed through grammers' own update stream (its
    /// message box and peer map), offline: the pool's runner is not run, so
    /// nothing reaches the network.
    #[tokio::test]
    async fn hand_built_updates_pass_through_grammers_update_stream() {
        let (dir, session) = session();
        let pool = grammers_mtsender::SenderPool::new(session.clone(), 1);
        // Without its runner the pool cannot reach any network: a call
        // fails at once as dropped.
        let grammers_mtsender::SenderPool { runner, handle, .. } = pool;
        drop(runner);
        let client = Client::new(handle);
        let (tx, rx) = mpsc::channel(4);
        let mut stream = client
            .stream_updates(rx, UpdatesConfiguration { catch_up: false })
            .await
            .unwrap();
        let customer = super::super::fake::user(42, 4242, "Ann", false);
        tx.send(UpdatesLike::Updates(
            tl::types::Updates {
                updates: vec![new_message(message(
                    7,
                    private(42),
                    None,
                    false,
                    "hello",
                    None,
                ))],
                users: vec![customer],
                chats: vec![],
                date: 1_700_000_000,
                seq: 0,
            }
            .into(),
        ))
        .await
        .unwrap();
        let (update, state, peers) =
            tokio::time::timeout(Duration::from_secs(5), stream.next_raw())
                .await
                .unwrap()
                .unwrap();
        let Some(Inbound::Message(m)) = map_update(&update, &peers, now()) else {
            panic!("not mapped");
        };
        assert_eq!(m.text, "hello");
        assert_eq!(m.sender.first_name.as_deref(), Some("Ann"));
        assert_eq!(
            checkpoint_of(&state),
            Some(Checkpoint::Primary {
                pts: 5,
                date: 1_700_000_000,
                seq: 0
            })
        );
        // The sender's access hash was kept from the update.
        assert_eq!(
            session.cached(42).unwrap().unwrap().auth(),
            Some(PeerAuth::from_hash(4242))
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
