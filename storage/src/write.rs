//! Streams a body into an `object_store` store so that nothing is visible
//! under the key until the whole body is in: small bodies go in one `put`,
//! larger ones in a multipart upload that is completed at the end or aborted
//! (S3 keeps the parts out of sight; the local file system writes a staging
//! file and renames it).

use std::{io, sync::Arc};

use futures::StreamExt;
use object_store::{Attributes, ObjectStore, buffered::BufWriter, path::Path};
use tokio::io::AsyncWriteExt;

use crate::ByteStream;

/// Bytes held in memory before switching to a multipart upload, and the
/// part size, for S3 (which wants at least 5 MiB per part but the last).
pub(crate) const S3_PART_SIZE: usize = 8 * 1024 * 1024;
/// The same for the local file system, which takes parts of any size: what
/// an upload holds in memory stays small.
pub(crate) const LOCAL_PART_SIZE: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("the body is longer than the {expected} bytes expected")]
    TooLarge { expected: u64 },
    #[error("the body ended after {got} of the {expected} bytes expected")]
    TooShort { got: u64, expected: u64 },
    #[error("reading the body: {0}")]
    Body(io::Error),
    #[error("writing the object: {0}")]
    Store(io::Error),
}

/// Writes `body` to `path`, holding at most about `part_size` bytes (times
/// the parts in flight) in memory. With `expected`, a body of any other
/// length is refused (and nothing is written); reading stops at the first
/// byte past it. Returns the length written.
pub(crate) async fn write_stream(
    store: Arc<dyn ObjectStore>,
    path: Path,
    attributes: Attributes,
    mut body: ByteStream,
    expected: Option<u64>,
    part_size: usize,
) -> Result<u64, WriteError> {
    let mut writer = BufWriter::with_capacity(store, path, part_size);
    if !attributes.is_empty() {
        writer = writer.with_attributes(attributes);
    }
    let mut written: u64 = 0;
    let failure = loop {
        let chunk = match body.next().await {
            None => break None,
            Some(Err(e)) => break Some(WriteError::Body(e)),
            Some(Ok(chunk)) => chunk,
        };
        written = written.saturating_add(chunk.len() as u64);
        if let Some(expected) = expected
            && written > expected
        {
            break Some(WriteError::TooLarge { expected });
        }
        if let Err(e) = writer.put(chunk).await {
            break Some(WriteError::Store(e.into()));
        }
    };
    let failure = match (failure, expected) {
        (None, Some(expected)) if written < expected => Some(WriteError::TooShort {
            got: written,
            expected,
        }),
        (failure, _) => failure,
    };
    if let Some(failure) = failure {
        if let Err(e) = writer.abort().await {
            tracing::warn!(error = %e, "aborting a refused upload failed");
        }
        return Err(failure);
    }
    writer.shutdown().await.map_err(WriteError::Store)?;
    Ok(written)
}
