//! Files through MTProto: a reply's attachments are streamed from their
//! presigned URLs into `upload.saveFilePart` parts (never whole in memory),
//! and an inbound file is read back with `upload.getFile`, part by part,
//! from the datacenter that holds it. An inbound file's `file_id` is a
//! [`FileRef`]: what `upload.getFile` needs, sealed in base64url JSON.

use std::{collections::HashSet, sync::Arc};

use base64::Engine;
use broker_config::events::AttachmentRef;
use bytes::{Bytes, BytesMut};
use grammers_tl_types as tl;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{
    errors::classify,
    rpc::{Rpc, invoke, invoke_in},
};
use crate::backend::{Download, SendError};

/// Telegram's upload part size (the largest it accepts).
pub const PART: usize = 512 * 1024;
/// Files above this go as "big" files (`upload.saveBigFilePart`).
const BIG_FILE: i64 = 10 * 1024 * 1024;
/// Telegram's upload limit for a regular account (2000 MiB).
pub const MAX_FILE_BYTES: i64 = 2000 * 1024 * 1024;

/// What `upload.getFile` needs to read an inbound file again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// `photo` or `document`.
    pub kind: String,
    pub id: i64,
    pub access_hash: i64,
    #[serde(with = "b64")]
    pub file_reference: Vec<u8>,
    pub dc_id: i32,
    /// The photo size to read (`""` for documents).
    pub thumb: String,
    pub size: i64,
    #[serde(default)]
    pub mime: Option<String>,
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

impl FileRef {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// `None` for anything this adapter did not make.
    pub fn decode(file_id: &str) -> Option<Self> {
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(file_id)
            .ok()?;
        serde_json::from_slice(&json).ok()
    }

    fn location(&self) -> tl::enums::InputFileLocation {
        if self.kind == "photo" {
            tl::types::InputPhotoFileLocation {
                id: self.id,
                access_hash: self.access_hash,
                file_reference: self.file_reference.clone(),
                thumb_size: self.thumb.clone(),
            }
            .into()
        } else {
            tl::types::InputDocumentFileLocation {
                id: self.id,
                access_hash: self.access_hash,
                file_reference: self.file_reference.clone(),
                thumb_size: String::new(),
            }
            .into()
        }
    }
}

/// Maps a failed call; the backend's own also moves the session's state
/// (a FLOOD_WAIT holds later sends, a 401 asks for a login).
pub type OnFailure<'a> =
    &'a (dyn Fn(&grammers_mtsender::InvocationError) -> SendError + Send + Sync);

fn send_error(e: &grammers_mtsender::InvocationError) -> SendError {
    classify(e).into_send_error()
}

/// Streams `file` from its URL into Telegram's upload parts and returns
/// the media to send it as.
pub async fn upload(
    rpc: &dyn Rpc,
    http: &reqwest::Client,
    file: &AttachmentRef,
    fail: OnFailure<'_>,
) -> Result<tl::enums::InputMedia, SendError> {
    use rand::Rng;
    let transient = |reason: String| SendError::Transient { reason };
    if file.size > MAX_FILE_BYTES {
        return Err(SendError::Permanent {
            code: "file_too_large".into(),
        });
    }
    let mut response = http.get(&file.url).send().await.map_err(|e| {
        transient(format!(
            "file {:?} unreachable: {}",
            file.filename,
            e.without_url()
        ))
    })?;
    if !response.status().is_success() {
        return Err(transient(format!(
            "file {:?}: its URL answered {}",
            file.filename,
            response.status().as_u16()
        )));
    }
    let big = file.size > BIG_FILE;
    let total_parts =
        i32::try_from(file.size.max(1).unsigned_abs().div_ceil(PART as u64)).unwrap_or(i32::MAX);
    let file_id: i64 = rand::rng().random();
    let mut buffer = BytesMut::with_capacity(PART);
    let mut part: i32 = 0;
    let mut size: i64 = 0;
    let save = async |bytes: Bytes, part: i32| -> Result<(), SendError> {
        let saved = if big {
            invoke(
                rpc,
                &tl::functions::upload::SaveBigFilePart {
                    file_id,
                    file_part: part,
                    file_total_parts: total_parts,
                    bytes: bytes.to_vec(),
                },
            )
            .await
        } else {
            invoke(
                rpc,
                &tl::functions::upload::SaveFilePart {
                    file_id,
                    file_part: part,
                    bytes: bytes.to_vec(),
                },
            )
            .await
        }
        .map_err(|e| fail(&e))?;
        if saved {
            Ok(())
        } else {
            Err(transient("Telegram did not save a file part".into()))
        }
    };
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        transient(format!(
            "file {:?} cut off: {}",
            file.filename,
            e.without_url()
        ))
    })? {
        size += chunk.len() as i64;
        if size > file.size {
            return Err(SendError::Permanent {
                code: "file_size_mismatch".into(),
            });
        }
        buffer.extend_from_slice(&chunk);
        while buffer.len() >= PART {
            save(buffer.split_to(PART).freeze(), part).await?;
            part += 1;
        }
    }
    if size != file.size {
        return Err(SendError::Permanent {
            code: "file_size_mismatch".into(),
        });
    }
    if !buffer.is_empty() || part == 0 {
        save(buffer.split().freeze(), part).await?;
        part += 1;
    }
    let input_file: tl::enums::InputFile = if big {
        tl::types::InputFileBig {
            id: file_id,
            parts: part,
            name: file.filename.clone(),
        }
        .into()
    } else {
        tl::types::InputFile {
            id: file_id,
            parts: part,
            name: file.filename.clone(),
            md5_checksum: String::new(),
        }
        .into()
    };
    Ok(tl::types::InputMediaUploadedDocument {
        nosound_video: false,
        force_file: true,
        spoiler: false,
        file: input_file,
        thumb: None,
        mime_type: file.content_type.clone(),
        attributes: vec![
            tl::types::DocumentAttributeFilename {
                file_name: file.filename.clone(),
            }
            .into(),
        ],
        stickers: None,
        ttl_seconds: None,
        video_cover: None,
        video_timestamp: None,
    }
    .into())
}

/// Datacenters this session has copied its authorization to.
#[derive(Default)]
pub struct ExportedDcs(Mutex<HashSet<i32>>);

impl ExportedDcs {
    /// Makes the account authorized in `dc` (where a file lives).
    async fn ensure(&self, rpc: &dyn Rpc, dc: i32, fail: OnFailure<'_>) -> Result<(), SendError> {
        if dc == rpc.home_dc() {
            return Ok(());
        }
        let mut done = self.0.lock().await;
        if done.contains(&dc) {
            return Ok(());
        }
        let tl::enums::auth::ExportedAuthorization::Authorization(exported) =
            invoke(rpc, &tl::functions::auth::ExportAuthorization { dc_id: dc })
                .await
                .map_err(|e| fail(&e))?;
        invoke_in(
            rpc,
            dc,
            &tl::functions::auth::ImportAuthorization {
                id: exported.id,
                bytes: exported.bytes,
            },
        )
        .await
        .map_err(|e| fail(&e))?;
        done.insert(dc);
        Ok(())
    }
}

/// Reads an inbound file part by part. `Ok(None)` when the id is not one
/// this adapter made or Telegram no longer has the file.
pub async fn download(
    rpc: Arc<dyn Rpc>,
    dcs: &ExportedDcs,
    file_id: &str,
    fail: OnFailure<'_>,
) -> Result<Option<Download>, SendError> {
    let Some(file) = FileRef::decode(file_id) else {
        return Ok(None);
    };
    dcs.ensure(rpc.as_ref(), file.dc_id, fail).await?;
    let location = file.location();
    let limit = PART as i32;
    let first = get_part(rpc.as_ref(), file.dc_id, &location, 0, limit, fail).await;
    let first = match first {
        Ok(bytes) => bytes,
        Err(SendError::Permanent { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = u64::try_from(file.size).unwrap_or(0);
    let dc = file.dc_id;
    let done = first.len() < PART;
    let body = futures::stream::unfold(
        (Some(first), i64::from(limit), done, rpc, location),
        move |(pending, offset, done, rpc, location)| async move {
            if let Some(bytes) = pending {
                return Some((Ok(bytes), (None, offset, done, rpc, location)));
            }
            if done {
                return None;
            }
            // Later parts fail the body's stream; the table still names why.
            match get_part(rpc.as_ref(), dc, &location, offset, limit, &send_error).await {
                Ok(bytes) => {
                    let last = bytes.len() < PART;
                    if bytes.is_empty() {
                        return None;
                    }
                    Some((
                        Ok(bytes),
                        (None, offset + i64::from(limit), last, rpc, location),
                    ))
                }
                Err(e) => Some((
                    Err(std::io::Error::other(e.to_string())),
                    (None, offset, true, rpc, location),
                )),
            }
        },
    );
    Ok(Some(Download {
        size,
        content_type: file.mime.clone(),
        body: Box::pin(body),
    }))
}

async fn get_part(
    rpc: &dyn Rpc,
    dc: i32,
    location: &tl::enums::InputFileLocation,
    offset: i64,
    limit: i32,
    fail: OnFailure<'_>,
) -> Result<Bytes, SendError> {
    let request = tl::functions::upload::GetFile {
        precise: false,
        cdn_supported: false,
        location: location.clone(),
        offset,
        limit,
    };
    let result = if dc == rpc.home_dc() {
        invoke(rpc, &request).await
    } else {
        invoke_in(rpc, dc, &request).await
    };
    match result.map_err(|e| fail(&e))? {
        tl::enums::upload::File::File(f) => Ok(Bytes::from(f.bytes)),
        tl::enums::upload::File::CdnRedirect(_) => Err(SendError::Transient {
            reason: "Telegram redirected a download to its CDN, which this adapter does not use"
                .into(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_refs_round_trip_and_strangers_are_none() {
        let file = FileRef {
            kind: "document".into(),
            id: 1,
            access_hash: -2,
            file_reference: vec![0, 255, 3],
            dc_id: 4,
            thumb: String::new(),
            size: 10,
            mime: Some("application/pdf".into()),
        };
        assert_eq!(FileRef::decode(&file.encode()).unwrap(), file);
        assert!(FileRef::decode("not-a-file").is_none());
    }
}
