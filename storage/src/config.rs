//! Which backend holds attachments, read from the environment at start-up:
//! S3 when `S3_BUCKET` is set, otherwise a directory under `DATA_DIR`.

use std::{path::PathBuf, sync::Arc};

use platform::config::{ConfigError, Env};
use secrecy::SecretString;
use url::Url;

use crate::{AttachmentStore, LocalStore, S3Store, StorageError, load_or_create_key};

/// The S3 variables other than `S3_BUCKET`: setting any of them without a
/// bucket is a mistake, not a request for local storage.
const S3_COMPANIONS: [&str; 4] = [
    "S3_ENDPOINT",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "S3_REGION",
];

/// Folder of `DATA_DIR` that holds the local backend's objects and key.
const LOCAL_FOLDER: &str = "attachments";

/// Where attachments are stored.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    /// An S3-compatible bucket.
    S3(S3Config),
    /// `DATA_DIR/attachments/`, served by the API's signed blob routes.
    Local { dir: PathBuf },
}

/// An S3-compatible bucket: AWS S3 (no endpoint; virtual-hosted URLs),
/// or any other service at `endpoint` (path-style URLs): Cloudflare R2 is
/// `https://<account>.r2.cloudflarestorage.com` with region `auto`.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `S3_BUCKET`.
    pub bucket: String,
    /// `S3_REGION`, default `us-east-1`.
    pub region: String,
    /// `S3_ENDPOINT`; plain `http://` is allowed only when written so.
    pub endpoint: Option<Url>,
    /// `S3_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `S3_SECRET_ACCESS_KEY`.
    pub secret_access_key: SecretString,
}

/// A backend built by [`StorageConfig::open`].
#[derive(Debug)]
pub struct Opened {
    pub store: Arc<dyn AttachmentStore>,
    /// In local mode, the signed blob routes the API must serve
    /// ([`LocalStore::router`]); `None` for S3.
    pub blob_routes: Option<axum::Router>,
}

impl StorageConfig {
    /// Reads `S3_BUCKET`, `S3_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY`,
    /// `S3_REGION`, `S3_ENDPOINT` and, without S3, `DATA_DIR`. A missing or
    /// malformed variable is an error that names it.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let Some(bucket) = env.optional::<String>("S3_BUCKET")? else {
            for name in S3_COMPANIONS {
                if env.optional::<String>(name)?.is_some() {
                    // The partner of a half-configured S3 is the bucket.
                    return Err(ConfigError::Missing {
                        name: "S3_BUCKET".to_owned(),
                    });
                }
            }
            let data_dir: PathBuf = env.required("DATA_DIR")?;
            return Ok(Self::Local {
                dir: data_dir.join(LOCAL_FOLDER),
            });
        };
        check_bucket(&bucket).map_err(|reason| ConfigError::Invalid {
            name: "S3_BUCKET".to_owned(),
            reason,
        })?;
        let endpoint: Option<Url> = env.optional("S3_ENDPOINT")?;
        if let Some(url) = &endpoint
            && !matches!(url.scheme(), "http" | "https")
        {
            return Err(ConfigError::Invalid {
                name: "S3_ENDPOINT".to_owned(),
                reason: format!("must be an http:// or https:// URL (got {url})"),
            });
        }
        Ok(Self::S3(S3Config {
            bucket,
            region: env.or("S3_REGION", "us-east-1".to_owned())?,
            endpoint,
            access_key_id: env.required("S3_ACCESS_KEY_ID")?,
            secret_access_key: env.secret("S3_SECRET_ACCESS_KEY")?,
        }))
    }

    /// Builds the backend. `url_base` is the API's public origin (the local
    /// backend's URLs start with it); `url_key` signs the local backend's
    /// URLs and must be the same in every process that presigns or serves
    /// them. Without one, the key file in the local directory is used,
    /// created on first use ([`load_or_create_key`]).
    pub fn open(
        &self,
        url_base: Url,
        url_key: Option<SecretString>,
    ) -> Result<Opened, StorageError> {
        match self {
            Self::S3(config) => Ok(Opened {
                store: Arc::new(S3Store::new(config)?),
                blob_routes: None,
            }),
            Self::Local { dir } => {
                let key = match url_key {
                    Some(key) => key,
                    None => load_or_create_key(dir)?,
                };
                let local = LocalStore::open(dir, key, url_base)?;
                Ok(Opened {
                    blob_routes: Some(local.router()),
                    store: Arc::new(local),
                })
            }
        }
    }
}

/// S3's bucket naming rules, short form.
fn check_bucket(bucket: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{bucket:?} is not a bucket name (3-63 lowercase letters, digits, '-' or '.')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn s3(config: StorageConfig) -> S3Config {
        match config {
            StorageConfig::S3(s3) => s3,
            StorageConfig::Local { dir } => panic!("local at {}", dir.display()),
        }
    }

    #[test]
    fn no_bucket_means_a_folder_of_data_dir() {
        let env = Env::from_pairs([("DATA_DIR", "/var/lib/fastprep")]);
        match StorageConfig::from_env(&env).unwrap() {
            StorageConfig::Local { dir } => {
                assert_eq!(dir, PathBuf::from("/var/lib/fastprep/attachments"));
            }
            StorageConfig::S3(s3) => panic!("{s3:?}"),
        }
        let err = StorageConfig::from_env(&Env::from_pairs([("OTHER", "1")])).unwrap_err();
        assert!(err.to_string().contains("DATA_DIR"), "{err}");
    }

    #[test]
    fn a_bucket_with_keys_is_s3_in_us_east_1_by_default() {
        let env = Env::from_pairs([
            ("S3_BUCKET", "fastprep-attachments"),
            ("S3_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("S3_SECRET_ACCESS_KEY", "s3cr3t"),
        ]);
        let config = s3(StorageConfig::from_env(&env).unwrap());
        assert_eq!(config.bucket, "fastprep-attachments");
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.endpoint, None);
        assert_eq!(config.access_key_id, "AKIAEXAMPLE");
        assert_eq!(config.secret_access_key.expose_secret(), "s3cr3t");
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }

    #[test]
    fn r2_settings_are_read_as_given() {
        let env = Env::from_pairs([
            ("S3_BUCKET", "files"),
            ("S3_ACCESS_KEY_ID", "k"),
            ("S3_SECRET_ACCESS_KEY", "s"),
            ("S3_REGION", "auto"),
            ("S3_ENDPOINT", "https://0123abcd.r2.cloudflarestorage.com"),
            ("DATA_DIR", "/data"),
        ]);
        let config = s3(StorageConfig::from_env(&env).unwrap());
        assert_eq!(config.region, "auto");
        assert_eq!(
            config.endpoint.unwrap().as_str(),
            "https://0123abcd.r2.cloudflarestorage.com/"
        );
    }

    #[test]
    fn a_partial_s3_setting_names_what_is_missing() {
        let full = [
            ("S3_BUCKET", "files"),
            ("S3_ACCESS_KEY_ID", "k"),
            ("S3_SECRET_ACCESS_KEY", "s"),
        ];
        for missing in ["S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"] {
            let env = Env::from_pairs(full.iter().filter(|(k, _)| *k != missing).copied());
            let err = StorageConfig::from_env(&env).unwrap_err().to_string();
            assert!(err.contains(missing), "{missing}: {err}");
        }
        for companion in S3_COMPANIONS {
            let env = Env::from_pairs([(companion, "x"), ("DATA_DIR", "/data")]);
            let err = StorageConfig::from_env(&env).unwrap_err().to_string();
            assert!(err.contains("S3_BUCKET"), "{companion}: {err}");
        }
    }

    #[test]
    fn malformed_values_are_named() {
        let base = [
            ("S3_ACCESS_KEY_ID", "k"),
            ("S3_SECRET_ACCESS_KEY", "s"),
            ("S3_BUCKET", "files"),
        ];
        for (name, value) in [
            ("S3_ENDPOINT", "not a url"),
            ("S3_ENDPOINT", "ftp://example.com"),
            ("S3_BUCKET", "Files"),
            ("S3_BUCKET", "a/b"),
            ("S3_BUCKET", "x"),
        ] {
            let mut pairs: Vec<(&str, &str)> =
                base.iter().filter(|(k, _)| *k != name).copied().collect();
            pairs.push((name, value));
            let err = StorageConfig::from_env(&Env::from_pairs(pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }
}
