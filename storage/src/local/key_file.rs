//! The local backend's signing key on disk: made once, random, readable by
//! its owner only, and read by every process that shares the directory.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use secrecy::SecretString;

use super::signing::MIN_KEY_LEN;

/// Name of the key file inside the local storage directory.
pub const KEY_FILE: &str = ".url-key";

/// The key that signs local attachment URLs, from `dir/.url-key`, created
/// there (32 random bytes, mode 0600, atomically) when missing.
///
/// The API signs upload and download URLs and serves them; the consumers
/// (tg-delivery, once it sends files) sign download URLs for the TG adapter. Both must use the
/// same key, and in local mode they share `DATA_DIR` (the local backend is
/// single-host by nature), so this file is how they agree without a new
/// setting. A key file that others may read is refused: whoever reads it can
/// sign any URL.
pub fn load_or_create_key(dir: &Path) -> io::Result<SecretString> {
    fs::create_dir_all(dir)?;
    let path = dir.join(KEY_FILE);
    match read_key(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let encoded = URL_SAFE_NO_PAD.encode(bytes);
    // Written under a name of its own, then linked into place: a process
    // that races us reads either no file or a whole one, and the first link
    // wins.
    let staging = dir.join(format!(".url-key.{:016x}", rand::random::<u64>()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staging)
        .and_then(|mut f| {
            f.write_all(encoded.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()
        })
        .and_then(|()| match fs::hard_link(&staging, &path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        });
    let _ = fs::remove_file(&staging);
    written?;
    read_key(&path)
}

fn read_key(path: &Path) -> io::Result<SecretString> {
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} may be read by others (mode {:o}); `chmod 600` it",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    let text = fs::read_to_string(path)?;
    let key = text.trim();
    if key.len() < MIN_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} holds fewer than {MIN_KEY_LEN} characters",
                path.display()
            ),
        ));
    }
    Ok(SecretString::from(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("storage-key-{name}-{:016x}", rand::random::<u64>()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_key_is_made_once_private_and_then_reused() {
        let dir = temp_dir("once");
        let first = load_or_create_key(&dir).unwrap();
        assert!(first.expose_secret().len() >= MIN_KEY_LEN);
        let mode = fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create_key(&dir).unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
        // No staging file is left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEY_FILE]);
        // Another directory, another key.
        let other = temp_dir("other");
        assert_ne!(
            load_or_create_key(&other).unwrap().expose_secret(),
            first.expose_secret()
        );
        fs::remove_dir_all(dir).unwrap();
        fs::remove_dir_all(other).unwrap();
    }

    #[test]
    fn concurrent_first_uses_agree_on_one_key() {
        let dir = temp_dir("race");
        let keys: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create_key(&dir).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().expose_secret().to_owned())
                .collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_readable_or_short_key_file_is_refused() {
        let dir = temp_dir("bad");
        let path = dir.join(KEY_FILE);
        fs::write(&path, "x".repeat(64)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_key(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::write(&path, "short\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_or_create_key(&dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
