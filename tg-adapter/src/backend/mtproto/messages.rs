//! What the account says: sends (text, files, albums), edits, deletions
//! and read marks, each a raw call whose answer is also handed to the
//! update stream.

use chrono::{DateTime, Utc};
use grammers_mtsender::InvocationError;
use grammers_session::{types::PeerKind, updates::UpdatesLike};
use grammers_tl_types as tl;

use super::{MtprotoBackend, files, rpc::invoke};
use crate::backend::{EditRequest, SendError, SendRequest, Sent};

impl MtprotoBackend {
    /// `messages.sendMessage`, or the files uploaded then `sendMedia` (one)
    /// or `sendMultiMedia` (an album), de-duplicated by Telegram on
    /// `random_id`.
    pub(super) async fn send(&self, request: &SendRequest) -> Result<Sent, SendError> {
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

    /// `messages.editMessage`; the same text again is no error.
    pub(super) async fn edit(&self, request: &EditRequest) -> Result<DateTime<Utc>, SendError> {
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

    /// `messages.deleteMessages` (for everyone), or `channels.` in channels.
    pub(super) async fn delete(
        &self,
        chat_id: i64,
        tg_message_ids: &[i64],
    ) -> Result<(), SendError> {
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

    /// `messages.readHistory`, or `channels.readHistory` in channels.
    pub(super) async fn read(&self, chat_id: i64, max_id: i64) -> Result<(), SendError> {
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
