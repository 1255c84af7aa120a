//! Telegram's updates as the adapter's inbound events: new messages and
//! edits become `tg.update.received.v1`, deletions `tg.update.deleted.v1`,
//! read receipts `tg.update.read.v1`; everything else (the account's own
//! messages, typing, presence) maps to nothing.

use broker_config::events::{
    TgChat, TgMedia, TgSender, TgUpdateDeleted, TgUpdateRead, TgUpdateReceived,
};
use chrono::{DateTime, Utc};
use grammers_client::{peer::Peer, peer::PeerMap};
use grammers_session::types::PeerId;
use grammers_tl_types as tl;

use super::files::FileRef;
use crate::backend::Inbound;

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Names from a map, as a `PeerMap` would give them.
    #[derive(Default)]
    pub(crate) struct Map(HashMap<i64, (&'static str, &'static str)>);

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

    pub(crate) fn names() -> Map {
        Map(HashMap::from([(42, ("ann", "Ann"))]))
    }

    /// A message as Telegram sends it, with the few fields that matter set.
    pub(crate) fn message(
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

    pub(crate) fn private(user_id: i64) -> tl::enums::Peer {
        tl::types::PeerUser { user_id }.into()
    }

    pub(crate) fn new_message(message: tl::enums::Message) -> tl::enums::Update {
        tl::types::UpdateNewMessage {
            message,
            pts: 5,
            pts_count: 1,
        }
        .into()
    }

    pub(crate) fn now() -> DateTime<Utc> {
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
}
