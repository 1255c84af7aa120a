//! `POST /api/attachments` and `GET /api/attachments/{id}/url` (see
//! [`crate::attachments`]).

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use uuid::Uuid;

use crate::{
    AppState,
    attachments::{self, Download, Upload, UploadRequest},
    authz::pep::Principal,
    error::{ApiResult, ErrorBody},
};

/// `POST /attachments` (`attachments.upload`): a `pending` attachment and
/// the presigned `PUT` to upload it with.
#[utoipa::path(
    post,
    path = "/api/attachments",
    tag = "attachments",
    summary = "Start an upload",
    description = "Checks the file's name, declared size and content type, records a pending attachment under a key the server chooses, and answers a URL valid 600 s. Upload the file with `method` to `upload_url`, sending exactly `headers`. Replies cannot take attachments yet.",
    request_body = UploadRequest,
    responses(
        (status = 201, description = "The pending attachment and where to upload it", body = Upload),
        (status = 409, description = "`too_many_pending_uploads`: 50 uploads of the caller's wait for a message", body = ErrorBody),
        (status = 413, description = "`attachment_too_large`: over `ATTACHMENT_MAX_BYTES`", body = ErrorBody),
        (status = 422, description = "`invalid_filename`, `content_type_not_allowed`, `invalid_size`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the storage could not sign the upload; nothing was recorded", body = ErrorBody),
    )
)]
pub async fn create(
    caller: Principal,
    State(state): State<AppState>,
    Json(input): Json<UploadRequest>,
) -> ApiResult<(StatusCode, Json<Upload>)> {
    let upload = attachments::create(&state.db, &state.attachments, caller.id, input).await?;
    Ok((StatusCode::CREATED, Json(upload)))
}

/// `GET /attachments/{id}/url`: a presigned `GET` valid 300 s, for a file of
/// a conversation the caller may read (`attachments.read`), or for the
/// caller's own upload not attached yet.
#[utoipa::path(
    get,
    path = "/api/attachments/{id}/url",
    tag = "attachments",
    summary = "A download link",
    description = "Made on demand after the check, valid 300 s; the download carries the original file name. Anything the caller may not read answers 404, whether it exists or not.",
    params(("id" = Uuid, Path, description = "The attachment's id")),
    responses(
        (status = 200, description = "The link", body = Download),
        (status = 404, description = "`not_found`: no such attachment, or not the caller's to read", body = ErrorBody),
        (status = 503, description = "`unavailable`: the storage could not sign the link", body = ErrorBody),
    )
)]
pub async fn url(
    caller: Principal,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Download>> {
    Ok(Json(
        attachments::download_url(&state.db, &state.attachments, &caller, id).await?,
    ))
}
