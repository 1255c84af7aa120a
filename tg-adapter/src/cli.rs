//! The commands that work on the session file with the adapter stopped:
//! an interactive login and the rotation of `TDLIB_ENCRYPTION_KEY`.

use std::io::{BufRead, Write};

use anyhow::Context;
use platform::Env;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::{
    backend::{AccountLogin, LoginError, LoginStep, mtproto::SessionFile},
    config::{MIN_SESSION_KEY_LEN, MtprotoConfig},
};

/// `fastprep-tg-adapter rotate-key`: re-encrypts the session under
/// `TDLIB_ENCRYPTION_KEY_NEW` (the old key must open it), atomically.
pub fn rotate_key(env: &Env) -> anyhow::Result<()> {
    let data_dir: std::path::PathBuf = env.required("DATA_DIR")?;
    let old = env.secret("TDLIB_ENCRYPTION_KEY")?;
    let new = env.strong_secret("TDLIB_ENCRYPTION_KEY_NEW", MIN_SESSION_KEY_LEN)?;
    SessionFile::rotate_key(&data_dir, &old, &new).context("rotating the session key")?;
    println!(
        "{} is now sealed with TDLIB_ENCRYPTION_KEY_NEW; set TDLIB_ENCRYPTION_KEY to it before starting the adapter",
        data_dir
            .join(crate::backend::mtproto::session::SESSION_FILE)
            .display()
    );
    Ok(())
}

fn prompt(question: &str) -> anyhow::Result<String> {
    print!("{question}: ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// `fastprep-tg-adapter login`: asks for what the current step needs until
/// the account is logged in. A step Telegram refuses is asked again.
pub async fn login(env: &Env) -> anyhow::Result<()> {
    let data_dir: std::path::PathBuf = env.required("DATA_DIR")?;
    let settings = MtprotoConfig::from_env(env)?;
    std::fs::create_dir_all(&data_dir)?;
    let stop = CancellationToken::new();
    let telegram = crate::telegram::start(&data_dir, &settings, stop.clone())?;
    let connections = tokio::spawn(telegram.connections);
    let account = telegram.backend;
    let result = async {
        let mut step = account.step().await?;
        loop {
            let next = match &step {
                LoginStep::Authorized => {
                    println!("the account is logged in");
                    return Ok(());
                }
                LoginStep::Phone => {
                    let phone = prompt("phone number (international format)")?;
                    account.submit_phone(&phone).await
                }
                LoginStep::Code { phone } => {
                    let code = prompt(&format!("code sent to {phone}"))?;
                    account.submit_code(&code).await
                }
                LoginStep::Password { hint } => {
                    let hint = hint.as_deref().unwrap_or("none");
                    // Read without echo: the terminal never shows it.
                    let password =
                        rpassword::prompt_password(format!("2FA password (hint: {hint}): "))?;
                    account.submit_password(&SecretString::from(password)).await
                }
            };
            step = match next {
                Ok(step) => step,
                Err(LoginError::Refused(code)) => {
                    eprintln!("Telegram refused: {code}");
                    account.step().await?
                }
                Err(e) => return Err(anyhow::Error::from(e)),
            };
        }
    }
    .await;
    stop.cancel();
    let _ = connections.await;
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rotate_key_re_seals_the_session_under_the_new_key() {
        let dir = std::env::temp_dir().join(format!("tg-cli-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = "Vq3nT8wL1xR6bY0cK5mJ9hF2dS7gA4pZ";
        let new = "Hx6cN1vB8mQ3wE5rT0yU7iO2pA9sD4fG";
        SessionFile::open(&dir, &SecretString::from(old))
            .unwrap()
            .set_pending_login(Some(crate::backend::mtproto::session::PendingLogin::Code {
                phone: "+15550100".into(),
                phone_code_hash: "h".into(),
            }))
            .unwrap();
        let data_dir = dir.to_string_lossy().into_owned();
        let env = |old: &str, new: &str| {
            Env::from_pairs([
                ("DATA_DIR", data_dir.clone()),
                ("TDLIB_ENCRYPTION_KEY", old.to_owned()),
                ("TDLIB_ENCRYPTION_KEY_NEW", new.to_owned()),
            ])
        };
        // A weak new key is refused before anything is read.
        let err = rotate_key(&env(old, "short")).unwrap_err().to_string();
        assert!(err.contains("TDLIB_ENCRYPTION_KEY_NEW"), "{err}");
        // The wrong old key changes nothing.
        let before = std::fs::read(dir.join("telegram.session")).unwrap();
        assert!(rotate_key(&env(new, old)).is_err());
        assert_eq!(std::fs::read(dir.join("telegram.session")).unwrap(), before);

        rotate_key(&env(old, new)).unwrap();
        assert!(SessionFile::open(&dir, &SecretString::from(old)).is_err());
        let session = SessionFile::open(&dir, &SecretString::from(new)).unwrap();
        assert!(session.pending_login().unwrap().is_some());
        let _ = std::fs::remove_dir_all(dir);
    }
}
