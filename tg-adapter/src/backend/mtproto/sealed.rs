//! The session file's envelope: XChaCha20-Poly1305 under a key derived with
//! HKDF-SHA256 from `TDLIB_ENCRYPTION_KEY` and a salt of the file's own.
//! Written through a temporary file, fsync and rename, so a crash leaves the
//! old file or the new one, never half of either; a file the key does not
//! open is refused and never written over.
//!
//! Layout: `FPTGSES1` | salt (16) | nonce (24) | ciphertext+tag. The first
//! 40 bytes (magic and salt) are the cipher's associated data.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use hkdf::Hkdf;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

const MAGIC: &[u8; 8] = b"FPTGSES1";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = MAGIC.len() + SALT_LEN;
const INFO: &[u8] = b"fastprep tg-adapter session v1";

/// Why a sealed file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is not a session file of this adapter (bad header); it was left as it is")]
    NotASessionFile { path: PathBuf },
    #[error(
        "TDLIB_ENCRYPTION_KEY does not open {path} (a wrong key, or a damaged file); \
         the file was left as it is: start with the key it was written under, or move it \
         away to log in again"
    )]
    WrongKey { path: PathBuf },
    #[error("encrypting the session failed")]
    Encrypt,
}

/// A key secret and the per-file salt it is stretched with.
#[derive(Clone)]
pub struct Sealer {
    secret: SecretString,
    salt: [u8; SALT_LEN],
}

impl Sealer {
    /// A sealer for a new file, with a fresh salt.
    pub fn new(secret: SecretString) -> Self {
        let mut salt = [0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        Self { secret, salt }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        let mut key = [0u8; 32];
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = Hkdf::<Sha256>::new(Some(&self.salt), self.secret.expose_secret().as_bytes())
            .expand(INFO, &mut key);
        XChaCha20Poly1305::new(&key.into())
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[..MAGIC.len()].copy_from_slice(MAGIC);
        header[MAGIC.len()..].copy_from_slice(&self.salt);
        header
    }

    /// Reads and opens `path`: `Ok(None)` when there is no such file.
    pub fn open(secret: &SecretString, path: &Path) -> Result<Option<(Self, Vec<u8>)>, SealError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(SealError::Io {
                    path: path.to_owned(),
                    error,
                });
            }
        };
        if bytes.len() < HEADER_LEN + NONCE_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(SealError::NotASessionFile {
                path: path.to_owned(),
            });
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&bytes[MAGIC.len()..HEADER_LEN]);
        let sealer = Self {
            secret: secret.clone(),
            salt,
        };
        let nonce = XNonce::from_slice(&bytes[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
        let plain = sealer
            .cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: &bytes[HEADER_LEN + NONCE_LEN..],
                    aad: &bytes[..HEADER_LEN],
                },
            )
            .map_err(|_| SealError::WrongKey {
                path: path.to_owned(),
            })?;
        Ok(Some((sealer, plain)))
    }

    /// Seals `plain` and replaces `path` with it atomically.
    pub fn write(&self, path: &Path, plain: &[u8]) -> Result<(), SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let header = self.header();
        let sealed = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &header,
                },
            )
            .map_err(|_| SealError::Encrypt)?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        write_atomically(path, &bytes)
    }
}

/// Temp file, fsync, rename over, fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SealError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |error| SealError::Io { path, error }
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io(&tmp))?;
        file.write_all(bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tg-sealed-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn round_trip_and_a_wrong_key_is_refused_without_a_write() {
        let dir = dir();
        let path = dir.join("s");
        let key = SecretString::from("correct horse battery staple");
        assert!(Sealer::open(&key, &path).unwrap().is_none());
        Sealer::new(key.clone()).write(&path, b"hello").unwrap();
        let (sealer, plain) = Sealer::open(&key, &path).unwrap().unwrap();
        assert_eq!(plain, b"hello");
        let on_disk = fs::read(&path).unwrap();
        assert!(
            !on_disk.windows(5).any(|w| w == b"hello"),
            "plaintext on disk"
        );

        let err = Sealer::open(&SecretString::from("another key"), &path)
            .err()
            .unwrap();
        assert!(matches!(err, SealError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains("TDLIB_ENCRYPTION_KEY"));
        assert_eq!(fs::read(&path).unwrap(), on_disk);

        // A second write keeps the salt and changes the nonce.
        sealer.write(&path, b"hello").unwrap();
        let again = fs::read(&path).unwrap();
        assert_eq!(again[..HEADER_LEN], on_disk[..HEADER_LEN]);
        assert_ne!(again, on_disk);
        assert!(!dir.join("s.tmp").exists());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_tampered_file_or_header_is_refused() {
        let dir = dir();
        let path = dir.join("s");
        let key = SecretString::from("k");
        Sealer::new(key.clone()).write(&path, b"hello").unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[MAGIC.len()] ^= 1; // the salt is authenticated
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Sealer::open(&key, &path),
            Err(SealError::WrongKey { .. })
        ));
        fs::write(&path, b"not a session").unwrap();
        assert!(matches!(
            Sealer::open(&key, &path),
            Err(SealError::NotASessionFile { .. })
        ));
        let _ = fs::remove_dir_all(dir);
    }
}
