//! `/api/ops/telegram` (`ops.telegram`): the company account's session and
//! its login, through the adapter that holds it. Every login step is
//! audited with its outcome; the code and the password never are.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    AppState,
    audit::{Entry, Target},
    authz::pep::Principal,
    error::{ApiError, ApiResult, ErrorBody},
    telegram::{LoginView, SessionView, masked_phone, plain_phone, valid_phone},
};

/// The account at a glance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TelegramAccount {
    pub session: SessionView,
    /// Where the login stands; `null` when the adapter runs a backend with
    /// no account to log in (the sandbox).
    pub login: Option<LoginView>,
}

/// `GET /ops/telegram`: the session's state and where the login stands.
#[utoipa::path(
    get,
    path = "/api/ops/telegram",
    tag = "ops",
    summary = "The Telegram account: its session's state and where its login stands",
    responses(
        (status = 200, description = "The account", body = TelegramAccount),
        (status = 503, description = "`unavailable`: the adapter cannot be reached, or the API has no `TG_ADAPTER_URL`", body = ErrorBody),
    )
)]
pub async fn account(State(state): State<AppState>) -> ApiResult<Json<TelegramAccount>> {
    let (session, login) = tokio::try_join!(state.telegram.session(), state.telegram.login_step())?;
    Ok(Json(TelegramAccount { session, login }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneBody {
    /// The account's number, international form (`+44 7700 900123`).
    #[schema(min_length = 7, max_length = 32)]
    pub phone: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    /// The code Telegram sent.
    #[schema(min_length = 1, max_length = 16)]
    pub code: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    /// The account's 2FA password.
    #[schema(min_length = 1, max_length = 256)]
    pub password: String,
}

/// Runs one step at the adapter and audits it with its outcome, whatever it
/// was: who tried to log the company account in is worth keeping.
async fn step(
    state: &AppState,
    caller: &Principal,
    action: &'static str,
    (path, field, value): (&str, &str, &str),
    detail: serde_json::Value,
) -> ApiResult<Json<LoginView>> {
    let outcome = state.telegram.submit(path, field, value).await;
    let mut after = detail;
    after["outcome"] = match &outcome {
        Ok(view) => json!(view.step.as_str()),
        Err(e) => json!(e.public().0),
    };
    Entry::new(
        Some(caller.id),
        action,
        Target::new("telegram_account", "account"),
    )
    .after(Some(after))
    .write(&state.db)
    .await?;
    outcome.map(Json)
}

/// `POST /ops/telegram/login/phone`: asks Telegram for a login code.
#[utoipa::path(
    post,
    path = "/api/ops/telegram/login/phone",
    tag = "ops",
    summary = "Start the Telegram account's login: Telegram sends a code to the phone; audited",
    request_body = PhoneBody,
    responses(
        (status = 200, description = "The next step", body = LoginView),
        (status = 400, description = "`invalid_phone`", body = ErrorBody),
        (status = 409, description = "`login_unavailable` (a backend with no account) or `login_out_of_order`", body = ErrorBody),
        (status = 422, description = "Telegram refused the step (`phone_number_invalid`, …)", body = ErrorBody),
        (status = 429, description = "A flood wait: try again after `Retry-After`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the adapter or Telegram cannot be reached", body = ErrorBody),
    )
)]
pub async fn login_phone(
    caller: Principal,
    State(state): State<AppState>,
    Json(body): Json<PhoneBody>,
) -> ApiResult<Json<LoginView>> {
    if !valid_phone(&body.phone) {
        return Err(ApiError::bad_request(
            "invalid_phone",
            "a phone number of 7 to 15 digits, international form",
        ));
    }
    let detail = json!({ "phone": masked_phone(&body.phone) });
    // The adapter takes digits only: "+44 7700-900123" goes as "+447700900123".
    let phone = plain_phone(&body.phone);
    step(
        &state,
        &caller,
        "telegram.login.phone",
        ("phone", "phone", &phone),
        detail,
    )
    .await
}

/// `POST /ops/telegram/login/code`: the code Telegram sent.
#[utoipa::path(
    post,
    path = "/api/ops/telegram/login/code",
    tag = "ops",
    summary = "Enter the login code Telegram sent; audited without the code",
    request_body = CodeBody,
    responses(
        (status = 200, description = "The next step", body = LoginView),
        (status = 400, description = "`invalid_code`", body = ErrorBody),
        (status = 409, description = "`login_unavailable` or `login_out_of_order`", body = ErrorBody),
        (status = 422, description = "Telegram refused the code (`phone_code_invalid`, `phone_code_expired`)", body = ErrorBody),
        (status = 429, description = "A flood wait: try again after `Retry-After`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the adapter or Telegram cannot be reached", body = ErrorBody),
    )
)]
pub async fn login_code(
    caller: Principal,
    State(state): State<AppState>,
    Json(body): Json<CodeBody>,
) -> ApiResult<Json<LoginView>> {
    let code = body.code.trim();
    if code.is_empty() || code.len() > 16 || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::bad_request(
            "invalid_code",
            "the code Telegram sent: 1 to 16 letters or digits",
        ));
    }
    step(
        &state,
        &caller,
        "telegram.login.code",
        ("code", "code", code),
        json!({}),
    )
    .await
}

/// `POST /ops/telegram/login/password`: the account's 2FA password.
#[utoipa::path(
    post,
    path = "/api/ops/telegram/login/password",
    tag = "ops",
    summary = "Enter the account's 2FA password; audited without the password",
    request_body = PasswordBody,
    responses(
        (status = 200, description = "The next step", body = LoginView),
        (status = 400, description = "`invalid_password`", body = ErrorBody),
        (status = 409, description = "`login_unavailable` or `login_out_of_order`", body = ErrorBody),
        (status = 422, description = "Telegram refused the password (`password_invalid`)", body = ErrorBody),
        (status = 429, description = "A flood wait: try again after `Retry-After`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the adapter or Telegram cannot be reached", body = ErrorBody),
    )
)]
pub async fn login_password(
    caller: Principal,
    State(state): State<AppState>,
    Json(body): Json<PasswordBody>,
) -> ApiResult<Json<LoginView>> {
    if body.password.is_empty() || body.password.len() > 256 {
        return Err(ApiError::bad_request(
            "invalid_password",
            "the account's 2FA password: 1 to 256 bytes",
        ));
    }
    step(
        &state,
        &caller,
        "telegram.login.password",
        ("password", "password", &body.password),
        json!({}),
    )
    .await
}
