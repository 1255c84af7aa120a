//! The narrowest seam between the backend and Telegram: a serialized TL
//! function in, its serialized result (or an RPC error) out, in the
//! account's home datacenter or a named one. grammers' sender pool
//! implements it for the real network; tests implement it with a fake that
//! decodes the function and answers as Telegram would.

use std::sync::Arc;

use grammers_mtsender::{InvocationError, SenderPoolHandle};
use grammers_session::{BoxFuture, Session};
use grammers_tl_types::{Deserializable, RemoteCall};

use super::session::SessionFile;

/// Raw calls to Telegram.
pub trait Rpc: Send + Sync + 'static {
    /// Invokes one serialized function in `dc` (the home datacenter when
    /// `None`). No retries and no sleeping: the caller decides.
    fn call(
        &self,
        dc: Option<i32>,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, InvocationError>>;

    /// Makes `dc` the account's home datacenter (after PHONE_MIGRATE_X or
    /// USER_MIGRATE_X during login).
    fn migrate(&self, dc: i32) -> BoxFuture<'_, Result<(), InvocationError>>;

    /// The home datacenter.
    fn home_dc(&self) -> i32;
}

/// Invokes a typed function through `rpc`.
pub async fn invoke<R: RemoteCall>(
    rpc: &dyn Rpc,
    request: &R,
) -> Result<R::Return, InvocationError> {
    let body = rpc.call(None, request.to_bytes()).await?;
    Ok(R::Return::from_bytes(&body)?)
}

/// Invokes a typed function in datacenter `dc`.
pub async fn invoke_in<R: RemoteCall>(
    rpc: &dyn Rpc,
    dc: i32,
    request: &R,
) -> Result<R::Return, InvocationError> {
    let body = rpc.call(Some(dc), request.to_bytes()).await?;
    Ok(R::Return::from_bytes(&body)?)
}

/// The real network: grammers' sender pool, whose runner owns the
/// connections (one per datacenter, created on demand).
pub struct PoolRpc {
    handle: SenderPoolHandle,
    session: Arc<SessionFile>,
}

impl PoolRpc {
    pub fn new(handle: SenderPoolHandle, session: Arc<SessionFile>) -> Self {
        Self { handle, session }
    }
}

impl Rpc for PoolRpc {
    fn call(
        &self,
        dc: Option<i32>,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<Vec<u8>, InvocationError>> {
        Box::pin(async move {
            let dc = match dc {
                Some(dc) => dc,
                None => self.home_dc(),
            };
            // `raw_invoke_in_dc` bypasses the pool's retry policy: a
            // FLOOD_WAIT comes back at once and becomes a 429.
            self.handle.raw_invoke_in_dc(dc, body).await
        })
    }

    fn migrate(&self, dc: i32) -> BoxFuture<'_, Result<(), InvocationError>> {
        Box::pin(async move {
            let old = self.home_dc();
            self.handle.disconnect_from_dc(old);
            self.session
                .set_home_dc_id(dc)
                .await
                .map_err(|e| InvocationError::Session(Box::new(e)))
        })
    }

    fn home_dc(&self) -> i32 {
        self.session.home_dc_id().unwrap_or(2)
    }
}

/// Whether `e` is Telegram asking to use another datacenter, and which.
pub fn migrate_to(e: &InvocationError) -> Option<i32> {
    match e {
        InvocationError::Rpc(rpc) if rpc.code == 303 => {
            rpc.value.and_then(|v| i32::try_from(v).ok())
        }
        _ => None,
    }
}

/// The constructor id a serialized function starts with.
pub fn constructor_of(body: &[u8]) -> Option<u32> {
    body.get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
}
