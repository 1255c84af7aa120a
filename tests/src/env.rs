//! A per-test world: its own PostgreSQL database (migrated, with an admin),
//! its own RabbitMQ vhost, and the processes started in it.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use rand::Rng;
use sqlx::PgPool;

use crate::{Proc, free_port, http::Client};

pub const ADMIN_EMAIL: &str = "admin@fastprep.test";
pub const ADMIN_PASSWORD: &str = "correct-horse-battery-staple";
pub const ADAPTER_TOKEN: &str = "test-adapter-token-0123456789";
/// Bearer of the sandbox adapter's `/sandbox` control routes.
pub const SANDBOX_TOKEN: &str = "test-sandbox-token-0123456789";
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Base URLs of the shared services; override with `TEST_*` variables.
pub struct Services {
    pub postgres: String,
    pub redis: String,
    pub amqp_host: String,
    pub amqp_port: u16,
    pub rabbit_mgmt: String,
}

impl Services {
    pub fn from_env() -> Self {
        Self {
            postgres: var("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432"),
            redis: var("TEST_REDIS_URL", "redis://127.0.0.1:6379"),
            amqp_host: var("TEST_AMQP_HOST", "127.0.0.1"),
            amqp_port: var("TEST_AMQP_PORT", "5672").parse().unwrap_or(5672),
            rabbit_mgmt: var("TEST_RABBITMQ_MGMT", "http://guest:guest@127.0.0.1:15672"),
        }
    }
}

pub struct TestEnv {
    pub name: String,
    pub services: Services,
    pub database_url: String,
    pub pool: PgPool,
    pub vhost: String,
    pub dir: PathBuf,
    pub http: Client,
    procs: Vec<Proc>,
    /// Set for every process this test starts from now on.
    extra_env: Vec<(String, String)>,
    /// Set by [`TestEnv::cleanup`]; a test that panics before it is
    /// cleaned up on drop, so no database or vhost (with its quorum
    /// queues, which weigh on the shared broker) is left behind.
    cleaned: bool,
}

/// Drops a test's database and vhost.
async fn drop_world(services: &Services, database: &str, vhost: &str) {
    if let Ok(admin) = schema::pool::connect(&format!("{}/postgres", services.postgres), 1).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
        admin.close().await;
    }
    let _ = reqwest::Client::new()
        .delete(format!("{}/api/vhosts/{vhost}", services.rabbit_mgmt))
        .timeout(Duration::from_secs(30))
        .send()
        .await;
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // A failed test: its processes die with their handles; the
        // database and vhost go here, on a runtime of their own (the
        // test's may be unwinding). The log folder stays for reading.
        for p in &mut self.procs {
            p.kill();
        }
        let services = Services::from_env();
        let (name, vhost) = (self.name.clone(), self.vhost.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_world(&services, &name, &vhost));
            }
        })
        .join();
    }
}

impl TestEnv {
    /// A fresh database and vhost named after a random id.
    pub async fn new() -> Self {
        platform::install_crypto_provider();
        let services = Services::from_env();
        let name = format!("fastprep_test_{:016x}", rand::rng().random::<u64>());
        let admin = schema::pool::connect(&format!("{}/postgres", services.postgres), 1)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {} is not answering: {e}", services.postgres)
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        // Over loopback, TLS protects nothing and costs PostgreSQL and every
        // client a few per cent of the machine (sqlx's default is `prefer`).
        let loopback = ["@127.0.0.1", "@localhost", "@[::1]"]
            .iter()
            .any(|host| services.postgres.contains(host));
        let database_url = if loopback {
            format!("{}/{name}?sslmode=disable", services.postgres)
        } else {
            format!("{}/{name}", services.postgres)
        };
        let pool = schema::pool::connect(&database_url, 8)
            .await
            .expect("connect test database");
        schema::pool::migrate(&pool)
            .await
            .expect("migrate test database");
        api::ensure_admin(&pool, ADMIN_EMAIL, ADMIN_PASSWORD)
            .await
            .expect("create admin");
        let http = Client::new();
        let mgmt = &services.rabbit_mgmt;
        http.raw()
            .put(format!("{mgmt}/api/vhosts/{name}"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("create vhost (is the RabbitMQ management plugin enabled?)");
        http.raw()
            .put(format!("{mgmt}/api/permissions/{name}/guest"))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("grant vhost permissions");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("test dir");
        Self {
            vhost: name.clone(),
            name,
            services,
            database_url,
            pool,
            dir,
            http,
            procs: Vec::new(),
            extra_env: Vec::new(),
            cleaned: false,
        }
    }

    /// This test's Redis keys and channels: the API and the consumers put
    /// theirs under the test's vhost, so tests sharing one Redis never see
    /// each other's.
    pub fn redis_keys(&self) -> platform::authz_redis::Keys {
        platform::authz_redis::Keys::for_vhost(&self.vhost)
    }

    /// A client of the shared Redis, connected.
    pub async fn redis(&self) -> fred::prelude::Client {
        use fred::interfaces::ClientLike;
        let client = fred::prelude::Builder::from_config(
            fred::prelude::Config::from_url(&self.services.redis).expect("redis url"),
        )
        .build()
        .expect("redis client");
        client.init().await.expect("redis connects");
        client
    }

    /// A connection to this test's vhost with the topology declared, as any
    /// process of the system would, whichever starts first.
    pub async fn broker(&self) -> lapin::Connection {
        let conn = broker_config::connection::connect(&self.amqp_url(), "test")
            .await
            .expect("connect to RabbitMQ");
        let channel = conn.create_channel().await.expect("channel");
        broker_config::topology::declare(&channel, &broker_config::topology::topology())
            .await
            .expect("declare the topology");
        conn
    }

    /// Publishes `body` to `fastprep.events` under `routing_key`, confirmed,
    /// as whoever holds the broker's credentials could: a poison message, a
    /// duplicate or a forged event.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8], message_id: &str) {
        use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
        let conn = self.broker().await;
        let channel = conn.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let confirm = channel
            .basic_publish(
                broker_config::topology::EVENTS_EXCHANGE.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                lapin::BasicProperties::default().with_message_id(message_id.into()),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "the broker refused the message");
        let _ = conn.close(200, "published".into()).await;
    }

    /// A queue of this test's vhost as the management API describes it.
    pub async fn queue(&self, name: &str) -> Option<serde_json::Value> {
        let url = format!(
            "{}/api/queues/{}/{name}",
            self.services.rabbit_mgmt, self.vhost
        );
        self.http
            .raw()
            .get(url)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// AMQP URL of this test's vhost on the real broker.
    pub fn amqp_url(&self) -> String {
        self.amqp_url_via(&self.services.amqp_host, self.services.amqp_port)
    }

    /// AMQP URL of this test's vhost through another address (a proxy).
    pub fn amqp_url_via(&self, host: &str, port: u16) -> String {
        format!("amqp://guest:guest@{host}:{port}/{}", self.vhost)
    }

    /// A TCP proxy of the test's own in front of the shared PostgreSQL, and
    /// the test database's URL through it.
    pub async fn database_proxy(&self) -> (crate::TcpProxy, String) {
        let url = url::Url::parse(&self.database_url).expect("database URL");
        let target = format!(
            "{}:{}",
            url.host_str().expect("database host"),
            url.port().unwrap_or(5432)
        );
        let proxy =
            crate::TcpProxy::start(target.parse().expect("database address (an IP address)")).await;
        let mut via = url.clone();
        via.set_port(Some(proxy.port())).expect("set port");
        (proxy, via.to_string())
    }

    /// The `AMQP_URL` the processes get: this test's vhost, or what
    /// `set_for_all` put in its place (the nodes of a cluster).
    pub fn processes_amqp_url(&self) -> String {
        self.base_env()["AMQP_URL"].clone()
    }

    /// Sets `name` for every process started from now on.
    pub fn set_for_all(&mut self, name: &str, value: &str) {
        self.extra_env.push((name.to_owned(), value.to_owned()));
    }

    /// Environment every process of the system needs.
    pub fn base_env(&self) -> HashMap<String, String> {
        let mut env = self.fixed_env();
        env.extend(self.extra_env.iter().cloned());
        env
    }

    fn fixed_env(&self) -> HashMap<String, String> {
        HashMap::from([
            ("DATABASE_URL".into(), self.database_url.clone()),
            ("REDIS_URL".into(), self.services.redis.clone()),
            ("AMQP_URL".into(), self.amqp_url()),
            ("JWT_SECRET".into(), JWT_SECRET.into()),
            ("TG_ADAPTER_TOKEN".into(), ADAPTER_TOKEN.into()),
            ("SANDBOX_TOKEN".into(), SANDBOX_TOKEN.into()),
            // The secrets above are published: only development mode takes them.
            ("FASTPREP_ENV".into(), "development".into()),
            ("RUST_LOG".into(), "info,lapin=warn,sqlx=warn".into()),
            ("METRICS_PORT".into(), free_port().to_string()),
        ])
    }

    /// Starts a binary with the base environment plus `extra`, keeps it for
    /// clean-up and returns its index.
    pub fn spawn(&mut self, bin: &str, args: &[&str], extra: &[(&str, String)]) -> usize {
        let mut env = self.base_env();
        for (k, v) in extra {
            env.insert((*k).to_owned(), v.clone());
        }
        let label = format!("{bin}-{}", self.procs.len());
        let proc = Proc::spawn(bin, args, env, self.dir.join(format!("{label}.log")));
        self.procs.push(proc);
        self.procs.len() - 1
    }

    /// Runs a binary of the workspace to its end with the base environment
    /// plus `extra`; returns its exit status and everything it printed.
    pub fn run_to_end(
        &self,
        bin: &str,
        args: &[&str],
        extra: &[(&str, String)],
    ) -> (std::process::ExitStatus, String) {
        let mut env = self.base_env();
        for (k, v) in extra {
            env.insert((*k).to_owned(), v.clone());
        }
        let out = std::process::Command::new(crate::process::bin_dir().join(bin))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&env)
            .output()
            .unwrap_or_else(|e| panic!("run {bin}: {e}"));
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, printed)
    }

    pub fn proc(&mut self, idx: usize) -> &mut Proc {
        &mut self.procs[idx]
    }

    /// Logs of every process, for failure messages.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(Proc::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every process and drops the database and vhost.
    pub async fn cleanup(mut self) {
        for p in &mut self.procs {
            p.kill();
        }
        self.pool.close().await;
        drop_world(&self.services, &self.name, &self.vhost).await;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.cleaned = true;
    }

    /// Waits for a process's HTTP endpoint to answer, whatever the status.
    pub async fn wait_http(&self, url: &str) {
        self.wait_answer(url, "answer", |_| true).await;
    }

    /// Waits for an endpoint to answer 2xx (a health check that passes).
    pub async fn wait_healthy(&self, url: &str) {
        self.wait_answer(url, "pass", |s| s.is_success()).await;
    }

    async fn wait_answer(&self, url: &str, what: &str, ok: fn(reqwest::StatusCode) -> bool) {
        let client = self.http.raw().clone();
        let url = url.to_owned();
        crate::wait_for(&format!("{url} to {what}"), Duration::from_secs(30), || {
            let client = client.clone();
            let url = url.clone();
            async move {
                let status = client.get(&url).send().await.ok()?.status();
                ok(status).then_some(())
            }
        })
        .await;
    }
}
