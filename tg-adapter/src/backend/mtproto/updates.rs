//! The update stream: each update from grammers' stream is mapped
//! (`mapping`), handed to the confirmed publisher, and the update state is
//! checkpointed in the session only after the broker confirmed the event: a
//! crash or a failed publish re-delivers (inbound dedups on chat and message
//! id), it never loses. After downtime grammers' catch-up
//! (`updates.getDifference`) starts from the last checkpoint.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use grammers_client::Client;
use grammers_mtsender::UpdatesConfiguration;
use grammers_session::{
    Session,
    types::UpdateState,
    updates::{MessageBox, State, UpdatesLike},
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{mapping::map_update, session::SessionFile};
use crate::backend::{Inbound, InboundUpdate, PublishFailed, SessionState, SessionStatus};

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
    // The network's updates go to whichever stream runs now; before the
    // first one starts they wait (the pool's channel holds the rest).
    let (current, mut current_rx) = watch::channel::<Option<mpsc::Sender<UpdatesLike>>>(None);
    let relay = {
        let stop = stop.clone();
        async move {
            loop {
                let raw = tokio::select! {
                    _ = stop.cancelled() => return,
                    raw = network.recv() => raw,
                    Some(raw) = own_calls.recv() => Some(raw),
                };
                let Some(raw) = raw else { return };
                let tx = tokio::select! {
                    _ = stop.cancelled() => return,
                    tx = current_rx.wait_for(Option::is_some) => match tx {
                        Ok(tx) => tx.clone(),
                        Err(_) => return,
                    },
                };
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
            current.send_replace(Some(tx));
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
    use grammers_session::types::PeerAuth;
    use grammers_tl_types as tl;
    use secrecy::SecretString;

    use super::super::mapping::tests::{message, names, new_message, now, private};
    use super::*;

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

    /// The whole pump, offline: an update from the network side is
    /// published, the first publish fails and the checkpoint stays, the
    /// retry is confirmed and only then the checkpoint moves.
    #[tokio::test]
    async fn the_pump_retries_a_failed_publish_and_checkpoints_after_the_confirm() {
        let (dir, session) = session();
        session
            .cache_peer(grammers_session::types::PeerInfo::User {
                id: 5_000_001,
                auth: Some(PeerAuth::from_hash(77)),
                bot: Some(false),
                is_self: Some(true),
            })
            .await
            .unwrap();
        let grammers_mtsender::SenderPool { runner, handle, .. } =
            grammers_mtsender::SenderPool::new(session.clone(), 1);
        drop(runner);
        let client = Client::new(handle);
        let (network, network_rx) = mpsc::channel(4);
        let (_own, own_rx) = mpsc::channel(4);
        let (forwarder_tx, mut forwarder_rx) = mpsc::channel::<InboundUpdate>(4);
        let status = watch::Sender::new(SessionStatus {
            session: SessionState::Authorized,
            until: None,
        });
        let stop = CancellationToken::new();
        let pump = tokio::spawn(pump(
            client,
            network_rx,
            own_rx,
            forwarder_tx,
            session.clone(),
            status.subscribe(),
            stop.clone(),
        ));
        network
            .send(UpdatesLike::Updates(
                tl::types::Updates {
                    updates: vec![new_message(message(
                        7,
                        private(42),
                        None,
                        false,
                        "hi",
                        None,
                    ))],
                    users: vec![],
                    chats: vec![],
                    date: 1_700_000_000,
                    seq: 0,
                }
                .into(),
            ))
            .await
            .unwrap();
        let wait = Duration::from_secs(10);
        let first = tokio::time::timeout(wait, forwarder_rx.recv())
            .await
            .unwrap()
            .unwrap();
        let _ = first.ack.send(Err(PublishFailed("broker down".into())));
        let second = tokio::time::timeout(wait, forwarder_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.update, first.update);
        assert_eq!(session.saved_updates_state().unwrap().pts, 0);
        let _ = second.ack.send(Ok(uuid::Uuid::now_v7()));
        tokio::time::timeout(wait, async {
            while session.saved_updates_state().unwrap().pts != 5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        stop.cancel();
        tokio::time::timeout(wait, pump).await.unwrap().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
