//! A real S3-compatible server for test suites: `s3s-fs`, which checks SigV4
//! signatures (presigned ones included) as S3 does, started on a free
//! loopback port over a temporary directory and killed when dropped.
//!
//! Install it once with
//! `cargo install s3s-fs --version 0.14.1 --locked --features binary`
//! (`scripts/test` does); `S3S_FS_BIN` may name the binary instead.

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use secrecy::SecretString;
use url::Url;

use crate::{S3Config, S3Store};

/// How to get the binary, said wherever it is missing.
pub const INSTALL_HINT: &str = "cargo install s3s-fs --version 0.14.1 --locked --features binary";

/// A running `s3s-fs` with one empty bucket.
pub struct S3sFs {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    pub endpoint: Url,
    pub bucket: String,
}

impl S3sFs {
    pub const ACCESS_KEY: &'static str = "fastprep-test-access-key";
    pub const SECRET_KEY: &'static str = "fastprep-test-secret-key-0123456789";
    pub const BUCKET: &'static str = "fastprep-test";

    /// Starts a server and waits until it accepts connections. Panics,
    /// saying how to install it, when `s3s-fs` is not installed.
    pub async fn start() -> Self {
        let bin = binary();
        let dir = std::env::temp_dir().join(format!("fastprep-s3s-{:016x}", rand::random::<u64>()));
        let root = dir.join("data");
        std::fs::create_dir_all(root.join(Self::BUCKET))
            .unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        let log = dir.join("s3s-fs.log");
        // A port picked free may be taken again before the server binds it:
        // a server that exits at once is started again on another.
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn(&bin, port, &root, &log);
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                    let endpoint = Url::parse(&format!("http://127.0.0.1:{port}"))
                        .unwrap_or_else(|e| panic!("endpoint URL: {e}"));
                    return Self {
                        child,
                        dir,
                        log,
                        endpoint,
                        bucket: Self::BUCKET.to_owned(),
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "s3s-fs did not listen on port {port} within 15 s\n{}",
                        tail(&log)
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("s3s-fs kept exiting at start\n{}", tail(&log));
    }

    /// The settings that reach this server, as `S3_*` would give them.
    pub fn config(&self) -> S3Config {
        S3Config {
            bucket: self.bucket.clone(),
            region: "us-east-1".to_owned(),
            endpoint: Some(self.endpoint.clone()),
            access_key_id: Self::ACCESS_KEY.to_owned(),
            secret_access_key: SecretString::from(Self::SECRET_KEY.to_owned()),
        }
    }

    /// A store on this server's bucket.
    pub fn store(&self) -> S3Store {
        S3Store::new(&self.config()).unwrap_or_else(|e| panic!("S3 store for s3s-fs: {e}"))
    }

    /// The URL of `key` without any signature (`{endpoint}/{bucket}/{key}`).
    pub fn object_url(&self, key: &str) -> Url {
        self.endpoint
            .join(&format!("{}/{key}", self.bucket))
            .unwrap_or_else(|e| panic!("object URL: {e}"))
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test leaves the folder (and the log) for reading.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `S3S_FS_BIN`, else `s3s-fs` on `PATH`, else in Cargo's `bin` folder.
fn binary() -> PathBuf {
    if let Ok(bin) = std::env::var("S3S_FS_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "S3S_FS_BIN={} is not a file; install s3s-fs with `{INSTALL_HINT}`",
            bin.display()
        );
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    std::env::split_paths(&path)
        .chain(cargo_home.map(|home| home.join("bin")))
        .map(|dir| dir.join("s3s-fs"))
        .find(|bin| bin.is_file())
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs is not installed, and the S3 tests need it (a real S3 server \
                 that checks signatures): install it with `{INSTALL_HINT}` \
                 (scripts/test does so), or set S3S_FS_BIN"
            )
        })
}

fn spawn(bin: &Path, port: u16, root: &Path, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("cloning a log handle: {e}"));
    Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", S3sFs::ACCESS_KEY])
        .args(["--secret-key", S3sFs::SECRET_KEY])
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()))
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(40);
    format!("--- s3s-fs log ---\n{}", lines[start..].join("\n"))
}

/// `url` with the first character of its signature (`X-Amz-Signature` on
/// S3, `sig` on the local store) changed: the same length and still
/// well-formed, so the signature comparison itself must refuse it.
pub fn tamper(url: &Url) -> Url {
    let text = url.as_str();
    let at = ["X-Amz-Signature=", "sig="]
        .iter()
        .find_map(|p| text.find(p).map(|i| i + p.len()))
        .unwrap_or_else(|| panic!("no signature in {url}"));
    let mut bytes = text.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    let tampered = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| Url::parse(t).ok())
        .unwrap_or_else(|| panic!("tampering {url} broke it"));
    assert_ne!(&tampered, url);
    tampered
}
