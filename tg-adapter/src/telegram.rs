//! Starts the MTProto backend: opens the sealed session (a wrong key stops
//! here, with the file untouched), builds grammers' sender pool with its
//! automatic flood sleeping off, and hands back the backend and the tasks
//! that drive the connections and the update stream.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use grammers_client::Client;
use grammers_mtsender::{ConnectionParams, NoRetries, SenderPool};
use tokio_util::sync::CancellationToken;

use crate::{
    backend::{
        Backend,
        mtproto::{ApiCredentials, MtprotoBackend, SessionFile, rpc::PoolRpc, updates},
    },
    config::MtprotoConfig,
};

/// Answers of our own calls waiting for the update stream.
const OWN_CALLS_BUFFER: usize = 100;

/// The running account: the backend and its two long-lived tasks.
pub struct Telegram {
    pub backend: Arc<MtprotoBackend>,
    /// Drives the connections (one per datacenter, opened on demand).
    pub connections: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Forwards updates, checkpointing after each confirm.
    pub updates: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Opens the session and wires grammers; nothing touches the network until
/// a call is made.
pub fn start(
    data_dir: &Path,
    config: &MtprotoConfig,
    stop: CancellationToken,
) -> anyhow::Result<Telegram> {
    let session = Arc::new(
        SessionFile::open(data_dir, &config.session_key).context("opening the Telegram session")?,
    );
    let pool = SenderPool::with_configuration(
        session.clone(),
        config.api_id,
        ConnectionParams {
            // A FLOOD_WAIT is answered as a 429 with its retry_after,
            // never slept through inside a request.
            retry_policy: Box::new(NoRetries),
            ..Default::default()
        },
    );
    let SenderPool {
        runner,
        handle,
        updates: network,
    } = pool;
    let client = Client::new(handle.clone());
    let rpc = Arc::new(PoolRpc::new(handle.thin.clone(), session.clone()));
    let (own_calls, own_calls_rx) = tokio::sync::mpsc::channel(OWN_CALLS_BUFFER);
    let backend = Arc::new(
        MtprotoBackend::new(
            rpc,
            session.clone(),
            ApiCredentials {
                api_id: config.api_id,
                api_hash: config.api_hash.clone(),
            },
        )
        .with_update_feed(own_calls),
    );
    let quit = handle.thin.clone();
    let connections_stop = stop.clone();
    let connections = Box::pin(async move {
        tokio::select! {
            () = runner.run() => {}
            () = connections_stop.cancelled() => { quit.quit(); }
        }
    });
    let updates = Box::pin(updates::pump(
        client,
        network,
        own_calls_rx,
        backend.inbound_sender(),
        session,
        backend.session(),
        stop,
    ));
    Ok(Telegram {
        backend,
        connections,
        updates,
    })
}
