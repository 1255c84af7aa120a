//! The two backends as the contract sees them, each really served: s3s-fs
//! for S3, the local routes on a loopback port for the local store.

use std::{path::PathBuf, sync::Arc};

use secrecy::SecretString;
use storage::{AttachmentStore, LocalStore, ObjectKey, Presigned, testing::S3sFs};
use url::Url;

/// A backend under test.
pub struct Backend {
    pub store: Arc<dyn AttachmentStore>,
    /// Whether an upload longer than declared is refused while it is sent
    /// (local) rather than only seen by `head` afterwards (S3).
    pub refuses_oversize: bool,
    server: Server,
}

enum Server {
    S3(S3sFs),
    Local(LocalServer),
}

impl Backend {
    pub async fn s3() -> Self {
        platform::install_crypto_provider();
        let server = S3sFs::start().await;
        Self {
            store: Arc::new(server.store()),
            refuses_oversize: false,
            server: Server::S3(server),
        }
    }

    pub async fn local() -> Self {
        platform::install_crypto_provider();
        let server = LocalServer::start().await;
        Self {
            store: Arc::new(server.store.clone()),
            refuses_oversize: true,
            server: Server::Local(server),
        }
    }

    /// The object's address with no signature at all.
    pub fn unsigned_url(&self, key: &ObjectKey) -> Url {
        match &self.server {
            Server::S3(s3) => s3.object_url(key.as_str()),
            Server::Local(local) => local
                .base
                .join(&format!("api/attachments/blob/{key}"))
                .unwrap(),
        }
    }

    /// What the server said, for a failing assertion's message.
    pub fn log(&self) -> String {
        match &self.server {
            Server::S3(s3) => s3.log_tail(),
            Server::Local(_) => String::new(),
        }
    }
}

/// The local store's routes served on a loopback port, over a fresh folder.
pub struct LocalServer {
    pub store: LocalStore,
    pub base: Url,
    pub dir: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl LocalServer {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "fastprep-local-store-{:016x}",
            rand::random::<u64>()
        ));
        Self::start_in(dir, test_key()).await
    }

    /// Serves the store in `dir` signed with `key`.
    pub async fn start_in(dir: PathBuf, key: SecretString) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let store = LocalStore::open(&dir, key, base.clone()).unwrap();
        let router = store.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            store,
            base,
            dir,
            task,
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.task.abort();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A signing key made up for this run.
pub fn test_key() -> SecretString {
    SecretString::from(format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    ))
}

/// A fresh attachment key.
pub fn new_key() -> ObjectKey {
    ObjectKey::attachment(format!("{:032x}", rand::random::<u128>())).unwrap()
}

/// Sends `body` as `presigned` says, with its headers except those in
/// `leave_out`, and with `replace` headers instead of theirs.
pub async fn send(
    presigned: &Presigned,
    body: Vec<u8>,
    leave_out: &[&str],
    replace: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http_client().request(presigned.method.clone(), presigned.url.clone());
    for (name, value) in &presigned.headers {
        let name = name.as_str();
        if leave_out.contains(&name) || replace.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            continue;
        }
        // reqwest sets Content-Length from the body itself.
        if name == "content-length" {
            assert_eq!(
                value.to_str().unwrap(),
                body.len().to_string(),
                "the test sends a body of another length only through `send_sized`"
            );
            continue;
        }
        request = request.header(name, value);
    }
    for (name, value) in replace {
        request = request.header(*name, *value);
    }
    request.body(body).send().await.unwrap()
}

/// Sends `body` with the presigned Content-Type, whatever its length.
pub async fn send_sized(presigned: &Presigned, body: Vec<u8>) -> reqwest::Response {
    let mut request = http_client().request(presigned.method.clone(), presigned.url.clone());
    if let Some(ct) = presigned.headers.get("content-type") {
        request = request.header("content-type", ct);
    }
    request.body(body).send().await.unwrap()
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Some bytes of a given length that are not all alike.
pub fn bytes_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}
