//! The routes behind the local backend's signed URLs, to be served by the
//! API: `PUT` takes an upload of exactly the signed type and size, `GET`
//! streams an object with the signed type and download name. What S3 answers
//! to the same mistakes, these answer too: 403 for a missing, wrong or
//! expired signature and for a content type other than the signed one.

use std::time::SystemTime;

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, RawQuery, State},
    http::{
        HeaderMap, HeaderValue, StatusCode,
        header::{
            CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_SECURITY_POLICY,
            CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
        },
    },
    response::{IntoResponse, Response},
    routing::put,
};
use futures::TryStreamExt;

use super::{
    LocalStore,
    signing::{Grant, Refusal},
};
use crate::{AttachmentStore, ObjectKey, content_disposition, write::WriteError};

/// The route of the signed URLs (axum syntax).
pub const BLOB_ROUTE: &str = "/api/attachments/blob/{*key}";
/// What precedes the key in a signed URL's path.
pub(super) const BLOB_PREFIX: &str = "/api/attachments/blob/";

pub(super) fn router(store: LocalStore) -> Router {
    Router::new()
        .route(BLOB_ROUTE, put(put_blob).get(get_blob))
        .with_state(store)
}

/// The signed parameters of a URL.
struct Signed {
    op: String,
    expires: u64,
    content_type: String,
    size: Option<u64>,
    download_name: Option<String>,
    signature: String,
}

impl Signed {
    /// The query, or `None` when a parameter is missing, repeated or malformed.
    fn parse(query: Option<&str>) -> Option<Self> {
        let mut fields: [Option<String>; 6] = Default::default();
        for (name, value) in url::form_urlencoded::parse(query?.as_bytes()) {
            let slot = match name.as_ref() {
                "op" => &mut fields[0],
                "exp" => &mut fields[1],
                "ct" => &mut fields[2],
                "len" => &mut fields[3],
                "dn" => &mut fields[4],
                "sig" => &mut fields[5],
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return None;
            }
        }
        let [op, expires, content_type, size, download_name, signature] = fields;
        Some(Self {
            op: op?,
            expires: expires?.parse().ok()?,
            content_type: content_type?,
            size: match size {
                Some(size) => Some(size.parse().ok()?),
                None => None,
            },
            download_name,
            signature: signature?,
        })
    }

    /// The grant this URL claims for `key`, if it is one of `op`.
    fn grant(self, key: &ObjectKey, op: &str) -> Option<(Grant, u64, String)> {
        if self.op != op {
            return None;
        }
        let key = key.as_str().to_owned();
        let grant = match (op, self.size, self.download_name) {
            ("put", Some(size), None) => Grant::Put {
                key,
                content_type: self.content_type,
                size,
            },
            ("get", None, Some(download_name)) => Grant::Get {
                key,
                content_type: self.content_type,
                download_name,
            },
            _ => return None,
        };
        Some((grant, self.expires, self.signature))
    }
}

/// Checks the URL's signature for `op` on `key`.
fn authorize(
    store: &LocalStore,
    key: &str,
    query: Option<&str>,
    op: &str,
) -> Result<(ObjectKey, Grant), Refusal> {
    let key = ObjectKey::new(key).map_err(|_| Refusal::BadSignature)?;
    let (grant, expires, signature) = Signed::parse(query)
        .and_then(|signed| signed.grant(&key, op))
        .ok_or(Refusal::BadSignature)?;
    store
        .inner
        .signer
        .verify(&grant, expires, &signature, SystemTime::now())?;
    Ok((key, grant))
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::BadSignature => refuse(
                StatusCode::FORBIDDEN,
                "invalid_signature",
                "the URL's signature is missing or wrong",
            ),
            Refusal::Expired => refuse(
                StatusCode::FORBIDDEN,
                "url_expired",
                "the URL has expired; ask for a new one",
            ),
        }
    }
}

async fn put_blob(
    State(store): State<LocalStore>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (key, grant) = match authorize(&store, &key, query.as_deref(), "put") {
        Ok(granted) => granted,
        Err(refused) => return refused.into_response(),
    };
    let Grant::Put {
        content_type, size, ..
    } = grant
    else {
        return forged();
    };
    // Like a signed header at S3: absent or different is a forged request.
    if headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes) != Some(content_type.as_bytes()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "content_type_mismatch",
            "send exactly the Content-Type the URL was signed for",
        );
    }
    let Some(length) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return refuse(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "send the Content-Length the URL was signed for",
        );
    };
    if length > size {
        return too_large(size);
    }
    if length < size {
        return length_mismatch(length, size);
    }
    let body = body.into_data_stream().map_err(std::io::Error::other);
    match store
        .write(&key, Box::pin(body), &content_type, Some(size))
        .await
    {
        Ok(_) => StatusCode::OK.into_response(),
        Err(WriteError::TooLarge { expected }) => too_large(expected),
        Err(WriteError::TooShort { got, expected }) => length_mismatch(got, expected),
        Err(WriteError::Body(e)) => {
            tracing::info!(%key, error = %e, "upload cut short");
            refuse(
                StatusCode::BAD_REQUEST,
                "upload_incomplete",
                "the upload was cut short",
            )
        }
        Err(WriteError::Store(e)) => {
            tracing::error!(%key, error = %e, "storing an upload failed");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on our side",
            )
        }
    }
}

async fn get_blob(
    State(store): State<LocalStore>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let (key, grant) = match authorize(&store, &key, query.as_deref(), "get") {
        Ok(granted) => granted,
        Err(refused) => return refused.into_response(),
    };
    let Grant::Get {
        content_type,
        download_name,
        ..
    } = grant
    else {
        return forged();
    };
    let object = match store.get(&key).await {
        Ok(Some(object)) => object,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, "not_found", "no such object"),
        Err(e) => {
            tracing::error!(%key, error = %e, "reading an object failed");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on our side",
            );
        }
    };
    let (Ok(content_type), Ok(disposition)) = (
        HeaderValue::from_str(&content_type),
        HeaderValue::from_str(&content_disposition(&download_name)),
    ) else {
        // Signed by us, so checked when it was signed.
        return forged();
    };
    let mut response = Body::from_stream(object.body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CONTENT_DISPOSITION, disposition);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(object.info.size));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    // Served from the API's own origin: never rendered as a page there,
    // whatever a browser makes of the type.
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    response
}

fn forged() -> Response {
    Refusal::BadSignature.into_response()
}

fn too_large(size: u64) -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "attachment_too_large",
        &format!("the URL was signed for {size} bytes"),
    )
}

fn length_mismatch(got: u64, size: u64) -> Response {
    refuse(
        StatusCode::BAD_REQUEST,
        "length_mismatch",
        &format!("the URL was signed for {size} bytes, not {got}"),
    )
}

/// The API's error body: `{"error": {"code", "message"}}`.
fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}
