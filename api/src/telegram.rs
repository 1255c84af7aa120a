//! The Telegram account as the adapter that holds it reports it
//! (`GET /v1/status`, `/v1/auth/*` of DESIGN §7), for `/api/ops/telegram`:
//! its session's health and the login (phone, code, 2FA password).

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// `TG_ADAPTER_URL` and `TG_ADAPTER_TOKEN`, as the API reads them.
#[derive(Debug, Clone)]
pub struct AdapterLink {
    pub url: url::Url,
    pub token: SecretString,
}

/// The state of the account's session (`GET /v1/status`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    /// `authorized`, `needs_login` or `flood_wait`.
    pub session: SessionName,
    /// The end of a `flood_wait`.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

/// The session states of DESIGN §7.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionName {
    Authorized,
    NeedsLogin,
    FloodWait,
}

/// Where the login stands: what the adapter waits for next.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginView {
    /// `phone`: send the number; `code`: Telegram sent a code; `password`:
    /// the account has a 2FA password; `authorized`: logged in.
    pub step: LoginStepName,
    /// The number the code went to, masked by the adapter.
    #[serde(default)]
    pub phone: Option<String>,
    /// The 2FA password's hint, when the account set one.
    #[serde(default)]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoginStepName {
    Phone,
    Code,
    Password,
    Authorized,
}

impl LoginStepName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Phone => "phone",
            Self::Code => "code",
            Self::Password => "password",
            Self::Authorized => "authorized",
        }
    }
}

/// Codes the adapter gives a refused login step (its `LoginError`); any
/// other comes back as `login_refused`.
const REFUSALS: &[&str] = &[
    "phone_number_invalid",
    "phone_code_invalid",
    "phone_code_expired",
    "password_invalid",
    "sign_up_required",
    "login_unsupported",
    "password_algorithm_unsupported",
    "login_refused",
];

/// How long one call to the adapter may take: a login step waits on
/// Telegram, which answers `auth.sendCode` in seconds.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Calls the adapter on behalf of `/api/ops/telegram`.
pub struct TelegramAdmin {
    http: reqwest::Client,
    link: Option<AdapterLink>,
}

impl TelegramAdmin {
    pub fn new(link: Option<AdapterLink>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        Self { http, link }
    }

    /// The session's state.
    pub async fn session(&self) -> ApiResult<SessionView> {
        let (status, body) = self.call(Method::GET, "v1/status", None).await?;
        if status != StatusCode::OK {
            return Err(unexpected(status, &body));
        }
        decode(body)
    }

    /// Where the login stands; `None` when the backend has no account to
    /// log in (the sandbox).
    pub async fn login_step(&self) -> ApiResult<Option<LoginView>> {
        let (status, body) = self.call(Method::GET, "v1/auth", None).await?;
        match status {
            StatusCode::OK => decode(body).map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(answer_error(status, &body)),
        }
    }

    /// One login step: `phone`, `code` or `password`, with its value.
    pub async fn submit(&self, step: &str, field: &str, value: &str) -> ApiResult<LoginView> {
        let body = serde_json::json!({ field: value });
        let (status, body) = self
            .call(Method::POST, &format!("v1/auth/{step}"), Some(body))
            .await?;
        if status == StatusCode::OK {
            decode(body)
        } else {
            Err(answer_error(status, &body))
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> ApiResult<(StatusCode, Value)> {
        let Some(link) = &self.link else {
            return Err(ApiError::Unavailable {
                what: "tg-adapter",
                cause: "TG_ADAPTER_URL is not set for the API".into(),
            });
        };
        let url = link.url.join(path).map_err(|e| ApiError::Unavailable {
            what: "tg-adapter",
            cause: e.to_string(),
        })?;
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(link.token.expose_secret());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| ApiError::Unavailable {
            what: "tg-adapter",
            cause: e.without_url().to_string(),
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| ApiError::Unavailable {
            what: "tg-adapter",
            cause: e.without_url().to_string(),
        })?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, body))
    }
}

fn decode<T: DeserializeOwned>(body: Value) -> ApiResult<T> {
    serde_json::from_value(body).map_err(|e| ApiError::Unavailable {
        what: "tg-adapter",
        cause: format!("an answer not of the contract: {e}"),
    })
}

fn unexpected(status: StatusCode, body: &Value) -> ApiError {
    ApiError::Unavailable {
        what: "tg-adapter",
        cause: format!("answered {status}: {}", code_of(body).unwrap_or("-")),
    }
}

fn code_of(body: &Value) -> Option<&str> {
    body.get("code").and_then(Value::as_str)
}

/// A refused login step as the API answers it. The adapter's own faults
/// (a token it refuses, its errors) are `503`: nothing the caller can fix.
fn answer_error(status: StatusCode, body: &Value) -> ApiError {
    let code = code_of(body).unwrap_or("");
    match status {
        StatusCode::NOT_FOUND => ApiError::Conflict {
            code: "login_unavailable",
            message: "the adapter's backend has no Telegram account to log in (the sandbox)".into(),
        },
        StatusCode::CONFLICT => ApiError::Conflict {
            code: "login_out_of_order",
            message: body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("this step does not fit where the login stands")
                .chars()
                .take(200)
                .collect(),
        },
        StatusCode::TOO_MANY_REQUESTS => ApiError::TooManyRequests {
            retry_after_secs: body
                .get("retry_after")
                .and_then(Value::as_u64)
                .unwrap_or(60)
                .max(1),
        },
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable {
            code: REFUSALS
                .iter()
                .find(|known| **known == code)
                .copied()
                .unwrap_or("login_refused"),
            message: "Telegram refused this login step".into(),
        },
        _ => unexpected(status, body),
    }
}

/// The number as the audit log keeps it: its last two digits.
pub fn masked_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    let shown: String = digits[digits.len().saturating_sub(2)..].iter().collect();
    format!("…{shown}")
}

/// A phone number as people write it: 7 to 15 digits, an optional `+`
/// before them, spaces or dashes between them. [`plain_phone`] is what goes
/// on to the adapter, which takes digits only.
pub fn valid_phone(phone: &str) -> bool {
    let rest = phone.strip_prefix('+').unwrap_or(phone);
    let digits = rest.chars().filter(char::is_ascii_digit).count();
    (7..=15).contains(&digits)
        && rest
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
}

/// The number as the adapter takes it: the `+` and the digits.
pub fn plain_phone(phone: &str) -> String {
    phone
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_checked_and_masked() {
        assert!(valid_phone("+44 7700 900123"));
        assert!(valid_phone("79991234567"));
        assert!(!valid_phone("+44 7700 900123; DROP"));
        assert!(!valid_phone("12345"));
        assert!(!valid_phone(""));
        assert_eq!(masked_phone("+44 7700 900123"), "…23");
        assert_eq!(masked_phone("7"), "…7");
        assert_eq!(plain_phone("+44 7700-900123"), "+447700900123");
    }

    #[test]
    fn refusals_keep_known_codes_only() {
        let known = answer_error(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"code": "phone_code_invalid"}),
        );
        assert!(matches!(
            known,
            ApiError::Unprocessable {
                code: "phone_code_invalid",
                ..
            }
        ));
        let unknown = answer_error(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"code": "<script>"}),
        );
        assert!(matches!(
            unknown,
            ApiError::Unprocessable {
                code: "login_refused",
                ..
            }
        ));
        assert!(matches!(
            answer_error(
                StatusCode::TOO_MANY_REQUESTS,
                &serde_json::json!({"code": "flood_wait", "retry_after": 31})
            ),
            ApiError::TooManyRequests {
                retry_after_secs: 31
            }
        ));
        assert!(matches!(
            answer_error(StatusCode::UNAUTHORIZED, &Value::Null),
            ApiError::Unavailable { .. }
        ));
    }
}
