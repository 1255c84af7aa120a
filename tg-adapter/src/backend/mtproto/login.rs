//! Logging the account in: phone, then the code Telegram sends, then the
//! 2FA password when the account has one. Each step's outcome is in the
//! session file before the step answers, so a restart between "code sent"
//! and "code entered" resumes at the code (the `phone_code_hash` is kept,
//! sealed, with the session) instead of asking Telegram for a new one.
//!
//! The raw calls are `auth.sendCode`, `auth.signIn`, `account.getPassword`,
//! `auth.checkPassword` and `updates.getState`, through [`Rpc`], so the
//! same machine runs against Telegram and against a scripted fake.

use grammers_crypto::two_factor_auth::{calculate_2fa, check_p_and_g};
use grammers_mtsender::InvocationError;
use grammers_session::{
    Session,
    types::{PeerAuth, PeerInfo, UpdateState, UpdatesState},
};
use grammers_tl_types as tl;
use secrecy::{ExposeSecret, SecretString};

use super::{
    errors::{Failure, classify},
    rpc::{Rpc, invoke, migrate_to},
    session::{PendingLogin, SessionFile, SessionFileError},
};
use crate::backend::{LoginError, LoginStep};

/// The application's credentials (`TG_API_ID`, `TG_API_HASH`).
#[derive(Clone)]
pub struct ApiCredentials {
    pub api_id: i32,
    pub api_hash: SecretString,
}

/// Where the login stands, from the session file alone.
pub fn step(session: &SessionFile) -> Result<LoginStep, SessionFileError> {
    if session.self_user()?.is_some() {
        return Ok(LoginStep::Authorized);
    }
    Ok(match session.pending_login()? {
        None => LoginStep::Phone,
        Some(PendingLogin::Code { phone, .. }) => LoginStep::Code {
            phone: mask(&phone),
        },
        Some(PendingLogin::Password { hint, .. }) => LoginStep::Password { hint },
    })
}

/// `+15550100` → `+1*****00`: enough for an operator to recognise it.
fn mask(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() <= 4 {
        return "*".repeat(chars.len());
    }
    let keep_start = if chars[0] == '+' { 2 } else { 1 };
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keep_start || i >= chars.len() - 2 {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

fn session_error(e: SessionFileError) -> LoginError {
    LoginError::Unavailable(format!("session file: {e}"))
}

fn telegram_error(e: &InvocationError) -> LoginError {
    match classify(e) {
        Failure::FloodWait { secs } => LoginError::FloodWait { secs },
        Failure::PeerFlood => LoginError::FloodWait {
            secs: super::errors::PEER_FLOOD_WAIT.as_secs(),
        },
        Failure::Permanent(code) => LoginError::Refused(code),
        Failure::Unauthorized => LoginError::Refused("login_refused"),
        Failure::Transient(reason) => LoginError::Unavailable(reason),
    }
}

/// Step 1: asks Telegram to send a code to `phone`.
pub async fn submit_phone(
    rpc: &dyn Rpc,
    session: &SessionFile,
    api: &ApiCredentials,
    phone: &str,
) -> Result<LoginStep, LoginError> {
    if step(session).map_err(session_error)? == LoginStep::Authorized {
        return Err(LoginError::OutOfOrder("the account is already logged in"));
    }
    let phone: String = phone.chars().filter(|c| !c.is_whitespace()).collect();
    if phone.len() < 5
        || !phone
            .trim_start_matches('+')
            .chars()
            .all(|c| c.is_ascii_digit())
    {
        return Err(LoginError::Refused("phone_number_invalid"));
    }
    let request = tl::functions::auth::SendCode {
        phone_number: phone.clone(),
        api_id: api.api_id,
        api_hash: api.api_hash.expose_secret().to_owned(),
        settings: tl::types::CodeSettings {
            allow_flashcall: false,
            current_number: false,
            allow_app_hash: false,
            allow_missed_call: false,
            allow_firebase: false,
            unknown_number: false,
            logout_tokens: None,
            token: None,
            app_sandbox: None,
        }
        .into(),
    };
    let sent = match invoke(rpc, &request).await {
        Err(e) if migrate_to(&e).is_some() => {
            let dc = migrate_to(&e).unwrap_or(2);
            rpc.migrate(dc).await.map_err(|e| telegram_error(&e))?;
            invoke(rpc, &request).await
        }
        other => other,
    }
    .map_err(|e| telegram_error(&e))?;
    let phone_code_hash = match sent {
        tl::enums::auth::SentCode::Code(code) => code.phone_code_hash,
        tl::enums::auth::SentCode::Success(_) | tl::enums::auth::SentCode::PaymentRequired(_) => {
            return Err(LoginError::Refused("login_unsupported"));
        }
    };
    session
        .set_pending_login(Some(PendingLogin::Code {
            phone: phone.clone(),
            phone_code_hash,
        }))
        .map_err(session_error)?;
    Ok(LoginStep::Code {
        phone: mask(&phone),
    })
}

/// Step 2: the code. A wrong code keeps the login at this step; an expired
/// one starts it over.
pub async fn submit_code(
    rpc: &dyn Rpc,
    session: &SessionFile,
    code: &str,
) -> Result<LoginStep, LoginError> {
    let Some(PendingLogin::Code {
        phone,
        phone_code_hash,
    }) = session.pending_login().map_err(session_error)?
    else {
        return Err(LoginError::OutOfOrder(
            "no code was requested; send the phone first",
        ));
    };
    let request = tl::functions::auth::SignIn {
        phone_number: phone.clone(),
        phone_code_hash,
        phone_code: Some(code.trim().to_owned()),
        email_verification: None,
    };
    match invoke(rpc, &request).await {
        Ok(tl::enums::auth::Authorization::Authorization(auth)) => {
            complete(rpc, session, auth).await
        }
        Ok(tl::enums::auth::Authorization::SignUpRequired(_)) => {
            session.set_pending_login(None).map_err(session_error)?;
            Err(LoginError::Refused("sign_up_required"))
        }
        Err(e) if e.is("SESSION_PASSWORD_NEEDED") => {
            let password = password_info(rpc).await?;
            session
                .set_pending_login(Some(PendingLogin::Password {
                    phone,
                    hint: password.hint.clone(),
                }))
                .map_err(session_error)?;
            Ok(LoginStep::Password {
                hint: password.hint,
            })
        }
        Err(e) if e.is("PHONE_CODE_EXPIRED") => {
            session.set_pending_login(None).map_err(session_error)?;
            Err(LoginError::Refused("phone_code_expired"))
        }
        Err(e) => Err(telegram_error(&e)),
    }
}

async fn password_info(rpc: &dyn Rpc) -> Result<tl::types::account::Password, LoginError> {
    let tl::enums::account::Password::Password(password) =
        invoke(rpc, &tl::functions::account::GetPassword {})
            .await
            .map_err(|e| telegram_error(&e))?;
    Ok(password)
}

/// Step 3: the 2FA password, proven with SRP (the password never leaves).
pub async fn submit_password(
    rpc: &dyn Rpc,
    session: &SessionFile,
    password: &SecretString,
) -> Result<LoginStep, LoginError> {
    let Some(PendingLogin::Password { .. }) = session.pending_login().map_err(session_error)?
    else {
        return Err(LoginError::OutOfOrder("no password is asked for now"));
    };
    // Fresh SRP parameters for each try: they are single-use.
    let info = password_info(rpc).await?;
    let Some(tl::enums::PasswordKdfAlgo::Sha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow(algo)) =
        info.current_algo.clone()
    else {
        return Err(LoginError::Refused("password_algorithm_unsupported"));
    };
    let (Some(srp_b), Some(srp_id)) = (info.srp_b.clone(), info.srp_id) else {
        return Err(LoginError::Refused("password_algorithm_unsupported"));
    };
    if !check_p_and_g(&algo.p, &algo.g) {
        return Err(LoginError::Unavailable(
            "Telegram sent SRP parameters that fail the safety checks".into(),
        ));
    }
    let (m1, g_a) = calculate_2fa(
        &algo.salt1,
        &algo.salt2,
        &algo.p,
        &algo.g,
        srp_b,
        info.secure_random.clone(),
        password.expose_secret().as_bytes(),
    );
    let request = tl::functions::auth::CheckPassword {
        password: tl::types::InputCheckPasswordSrp {
            srp_id,
            a: g_a.to_vec(),
            m1: m1.to_vec(),
        }
        .into(),
    };
    match invoke(rpc, &request).await {
        Ok(tl::enums::auth::Authorization::Authorization(auth)) => {
            complete(rpc, session, auth).await
        }
        Ok(tl::enums::auth::Authorization::SignUpRequired(_)) => {
            Err(LoginError::Refused("sign_up_required"))
        }
        Err(e) => Err(telegram_error(&e)),
    }
}

/// Records the account as the session's own, takes the update state to
/// start from, and clears the pending login.
async fn complete(
    rpc: &dyn Rpc,
    session: &SessionFile,
    auth: tl::types::auth::Authorization,
) -> Result<LoginStep, LoginError> {
    let tl::enums::User::User(user) = auth.user else {
        return Err(LoginError::Unavailable(
            "Telegram answered an empty user".into(),
        ));
    };
    session
        .cache_peer(PeerInfo::User {
            id: user.id,
            auth: user.access_hash.map(PeerAuth::from_hash),
            bot: Some(user.bot),
            is_self: Some(true),
        })
        .await
        .map_err(session_error)?;
    // Without a state, updates start from whatever Telegram sends next.
    if let Ok(tl::enums::updates::State::State(state)) =
        invoke(rpc, &tl::functions::updates::GetState {}).await
    {
        session
            .set_update_state(UpdateState::All(UpdatesState {
                pts: state.pts,
                qts: state.qts,
                date: state.date,
                seq: state.seq,
                channels: Vec::new(),
            }))
            .await
            .map_err(session_error)?;
    }
    session.set_pending_login(None).map_err(session_error)?;
    Ok(LoginStep::Authorized)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_masked() {
        assert_eq!(mask("+15550100"), "+1*****00");
        assert_eq!(mask("447700900123"), "4*********23");
        assert_eq!(mask("123"), "***");
    }
}
