//! The disaster-recovery rehearsal (`scripts/dr-rehearsal`): reads
//! `render.yaml` and brings the whole system up on this machine from it, as
//! Render would on an empty account. Each Rust service runs its own
//! `preDeployCommand` and `startCommand`, verbatim, in a shell, with the
//! environment the blueprint wires. What Render provides is mapped to a
//! local equivalent, and every mapping is printed: the database to a fresh,
//! empty PostgreSQL database; RabbitMQ to a fresh vhost on the local broker
//! (which also gives a fresh Redis prefix); Key Value to the local Redis;
//! a disk to a fresh folder; `generateValue` to 32 random bytes in base64;
//! each `sync: false` secret to a local stand-in (S3 to an s3s-fs server;
//! Telegram to the sandbox backend). Then it checks every process's health,
//! sends a message each way through the sandbox adapter, and prints the
//! time to a healthy system. With `--drills` it also rehearses the runbook's
//! other recoveries: a database restored from a dump taken mid-traffic,
//! and the adapter's disk lost.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use base64::Engine;
use fastprep_tests::{
    blueprint::{
        Blueprint, DatabaseProperty, Runtime, Service, ServiceProperty, ServiceType, Source,
        check_references, check_shape,
    },
    env::Services,
    free_port,
    http::Client,
};
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN_EMAIL: &str = "dr-admin@fastprep.test";

/// The runbook's commands after a restore: the caches invalidated (the
/// version floors, which sit above the restored versions, dropped first),
/// then the replies the backup holds unfinished, whose events had already
/// been handed out, handed out again (the adapter's idempotency store
/// answers those it already sent).
const AFTER_RESTORE: &str = "target/release/fastprep-ops authz flush --after-restore && \
target/release/fastprep-ops messages resume-unfinished";

/// The first line the runbook has on-call type in the api's shell: the two
/// URLs its start command composes, for the one-off commands.
const SHELL_PRELUDE: &str = r#"export AMQP_URL="amqp://$RABBITMQ_USER:$RABBITMQ_PASSWORD@$RABBITMQ_HOSTPORT/$RABBITMQ_VHOST" TG_ADAPTER_URL="http://$TG_ADAPTER_HOSTPORT""#;

struct Args {
    full: bool,
    single: bool,
    drills: bool,
    replies: usize,
    /// Replies per second of the load phase (0: none).
    load_rate: u64,
    load_seconds: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        full: false,
        single: false,
        drills: false,
        replies: 20,
        load_rate: 0,
        load_seconds: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--full" => a.full = true,
            "--single" => a.single = true,
            "--drills" => a.drills = true,
            "--replies" => a.replies = it.next().context("--replies N")?.parse()?,
            "--load" => a.load_rate = it.next().context("--load REPLIES_PER_SECOND")?.parse()?,
            "--load-seconds" => {
                a.load_seconds = it.next().context("--load-seconds S")?.parse()?;
            }
            other => bail!(
                "unknown argument {other}; use --full (run the build commands), --single (one instance \
                 of each service), --drills (restore and disk-loss drills), --replies N, --load R \
                 (replies/s through the blueprint's instances and pools), --load-seconds S"
            ),
        }
    }
    Ok(a)
}

fn say(msg: impl AsRef<str>) {
    println!("[dr] {}", msg.as_ref());
}

/// What stands in locally for what Render would create.
struct World {
    services: Services,
    name: String,
    database_url: String,
    dir: PathBuf,
    s3: storage::testing::S3sFs,
    /// Where the blueprint's metrics push goes here.
    otlp: fastprep_tests::otlp::OtlpReceiver,
}

impl World {
    async fn create() -> anyhow::Result<Self> {
        let services = Services::from_env();
        // The suites' prefix: `scripts/test` removes what an interrupted run leaves.
        let name = format!(
            "fastprep_test_dr_{:012x}",
            rand::rng().random::<u64>() >> 16
        );
        let admin = schema::pool::connect(&format!("{}/postgres", services.postgres), 1).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let database_url = format!("{}/{name}?sslmode=disable", services.postgres);
        let http = reqwest::Client::new();
        let mgmt = &services.rabbit_mgmt;
        http.put(format!("{mgmt}/api/vhosts/{name}"))
            .send()
            .await?
            .error_for_status()?;
        http.put(format!("{mgmt}/api/permissions/{name}/guest"))
            .json(&json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await?
            .error_for_status()?;
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir)?;
        let s3 = storage::testing::S3sFs::start().await;
        let otlp = fastprep_tests::otlp::OtlpReceiver::start().await;
        Ok(Self {
            services,
            name,
            database_url,
            dir,
            s3,
            otlp,
        })
    }

    async fn new_database(&self, suffix: &str) -> anyhow::Result<(String, String)> {
        let name = format!("{}_{suffix}", self.name);
        let admin =
            schema::pool::connect(&format!("{}/postgres", self.services.postgres), 1).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        Ok((
            name.clone(),
            format!("{}/{name}?sslmode=disable", self.services.postgres),
        ))
    }

    async fn drop_all(&self, databases: &[String]) {
        if let Ok(admin) =
            schema::pool::connect(&format!("{}/postgres", self.services.postgres), 1).await
        {
            for db in databases {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                )))
                .execute(&admin)
                .await;
            }
            admin.close().await;
        }
        let _ = reqwest::Client::new()
            .delete(format!(
                "{}/api/vhosts/{}",
                self.services.rabbit_mgmt, self.name
            ))
            .send()
            .await;
    }
}

/// One running instance of a service: its shell, its ports, its log.
struct Instance {
    service: String,
    index: usize,
    env: BTreeMap<String, String>,
    child: Option<Child>,
    log: PathBuf,
    health: String,
}

impl Instance {
    fn label(&self) -> String {
        format!("{}#{}", self.service, self.index)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(15);
        format!("--- {} ---\n{}", self.label(), lines[from..].join("\n"))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `line` as the platform would: a shell in the deploy folder, with
/// `env` only (and `PATH`).
fn shell(cwd: &Path, line: &str, env: &BTreeMap<String, String>, log: &Path) -> Command {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let err = out.try_clone().expect("log handle");
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(line)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .envs(env)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    cmd
}

/// The local stand-in for each `sync: false` value, or `None` to leave it
/// unset. A secret added to the blueprint without one stops the rehearsal.
fn prompted(key: &str, world: &World, api_origin: &str) -> anyhow::Result<Option<String>> {
    let s3 = &world.s3;
    Ok(match key {
        "S3_BUCKET" => Some(s3.bucket.clone()),
        "S3_ACCESS_KEY_ID" => Some(storage::testing::S3sFs::ACCESS_KEY.into()),
        "S3_SECRET_ACCESS_KEY" => Some(storage::testing::S3sFs::SECRET_KEY.into()),
        "S3_ENDPOINT" => Some(s3.endpoint.as_str().trim_end_matches('/').to_owned()),
        "S3_REGION" => Some("us-east-1".into()),
        "CORS_ORIGINS" | "PUBLIC_URL" => Some("http://127.0.0.1:5173".into()),
        "API_ORIGIN" => Some(api_origin.to_owned()),
        // Telegram is the sandbox here; Slack alerts are logged.
        "TG_API_ID" | "TG_API_HASH" | "TDLIB_ENCRYPTION_KEY" | "SLACK_WEBHOOK_URL" => None,
        "RABBITMQ_DEFAULT_PASS" => Some("guest".into()),
        // The monitoring backend is an OTLP receiver of the rehearsal's own.
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" => {
            Some(format!("{}/v1/metrics", world.otlp.endpoint))
        }
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS" => Some("Authorization=Basic%20cmVoZWFyc2Fs".into()),
        other => bail!("render.yaml prompts for {other}, which has no local stand-in here"),
    })
}

/// The environment of every Rust service, resolved from the blueprint with
/// the local mappings.
struct Resolver<'a> {
    bp: &'a Blueprint,
    world: &'a World,
    generated: HashMap<(String, String), String>,
    /// Per service: its local port (`PORT`) and its disk's local folder.
    ports: HashMap<String, u16>,
    disks: HashMap<String, PathBuf>,
    mappings: Vec<String>,
}

impl<'a> Resolver<'a> {
    fn new(bp: &'a Blueprint, world: &'a World) -> Self {
        let mut ports = HashMap::new();
        let mut disks = HashMap::new();
        for s in &bp.services {
            if s.runs_our_code() && s.kind != ServiceType::Worker {
                ports.insert(s.name.clone(), free_port());
            }
            if let Some(d) = &s.disk {
                let dir = world.dir.join("disks").join(&s.name).join(&d.name);
                std::fs::create_dir_all(&dir).expect("disk folder");
                disks.insert(s.name.clone(), dir);
            }
        }
        Self {
            bp,
            world,
            generated: HashMap::new(),
            ports,
            disks,
            mappings: Vec::new(),
        }
    }

    fn api_origin(&self) -> String {
        let api = self
            .bp
            .services
            .iter()
            .find(|s| s.kind == ServiceType::Web && s.runs_our_code())
            .map(|s| s.name.clone())
            .unwrap_or_default();
        format!(
            "http://127.0.0.1:{}",
            self.ports.get(&api).copied().unwrap_or(0)
        )
    }

    fn note(&mut self, s: &str) {
        if !self.mappings.iter().any(|m| m == s) {
            self.mappings.push(s.to_owned());
        }
    }

    /// The value `key` has on `service` (None: unset).
    fn value(&mut self, service: &Service, key: &str) -> anyhow::Result<Option<String>> {
        let var = service
            .var(key)
            .with_context(|| format!("{} does not set {key}", service.name))?;
        let source = var.source().map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        let w = self.world;
        Ok(match source {
            Source::Value(v) => {
                if let Some(d) = &service.disk
                    && v.starts_with(&d.mount_path)
                {
                    let local = self.disks[&service.name].display().to_string();
                    self.note(&format!(
                        "{}: disk {} -> {local}",
                        service.name, d.mount_path
                    ));
                    Some(v.replacen(&d.mount_path, &local, 1))
                } else if key == "PORT" {
                    let p = self.ports[&service.name];
                    self.note(&format!("{}: PORT {v} -> {p}", service.name));
                    Some(p.to_string())
                } else if key == "TG_BACKEND" {
                    self.note(&format!(
                        "{}: TG_BACKEND {v} -> sandbox (the sandbox plays Telegram)",
                        service.name
                    ));
                    Some("sandbox".into())
                } else {
                    Some(v)
                }
            }
            Source::Generated => Some(
                self.generated
                    .entry((service.name.clone(), key.to_owned()))
                    .or_insert_with(|| {
                        let bytes: [u8; 32] = rand::rng().random();
                        base64::engine::general_purpose::STANDARD.encode(bytes)
                    })
                    .clone(),
            ),
            Source::Prompted => {
                let v = prompted(key, w, &self.api_origin())?;
                self.note(&format!(
                    "{}: {key} (sync: false) -> {}",
                    service.name,
                    match (&v, key) {
                        (None, _) => "unset".to_owned(),
                        (Some(_), k)
                            if k.contains("SECRET")
                                || k.contains("PASS")
                                || k.contains("HEADERS") =>
                        {
                            "a local stand-in".to_owned()
                        }
                        (Some(v), _) => v.clone(),
                    }
                ));
                v
            }
            Source::Database(_, prop) => {
                let url = url::Url::parse(&w.database_url)?;
                self.note("database: connectionString -> a fresh, empty database");
                Some(match prop {
                    DatabaseProperty::ConnectionString => w.database_url.clone(),
                    DatabaseProperty::Host => url.host_str().unwrap_or_default().into(),
                    DatabaseProperty::Port => url.port().unwrap_or(5432).to_string(),
                    DatabaseProperty::User => url.username().into(),
                    DatabaseProperty::Password => url.password().unwrap_or_default().into(),
                    DatabaseProperty::Database => w.name.clone(),
                })
            }
            Source::ServiceProperty(kind, name, prop) => {
                let bp: &'a Blueprint = self.bp;
                let target = bp.service(name).context("fromService target")?;
                let (host, port) = match (kind, target.runtime) {
                    (ServiceType::Keyvalue | ServiceType::Redis, _) => {
                        self.note(&format!("{name}: Key Value -> {}", w.services.redis));
                        if prop == ServiceProperty::ConnectionString {
                            return Ok(Some(w.services.redis.clone()));
                        }
                        let u = url::Url::parse(&w.services.redis)?;
                        (
                            u.host_str().unwrap_or_default().to_owned(),
                            u.port().unwrap_or(6379),
                        )
                    }
                    (_, Some(Runtime::Image)) => {
                        ensure!(
                            target
                                .image
                                .as_ref()
                                .is_some_and(|i| i.url.contains("rabbitmq")),
                            "no local stand-in for the image service {name}"
                        );
                        self.note(&format!(
                            "{name}: RabbitMQ image -> {}:{} vhost {}",
                            w.services.amqp_host, w.services.amqp_port, w.name
                        ));
                        (w.services.amqp_host.clone(), w.services.amqp_port)
                    }
                    _ => ("127.0.0.1".to_owned(), self.ports[name]),
                };
                Some(match prop {
                    ServiceProperty::Host => host,
                    ServiceProperty::Port => port.to_string(),
                    ServiceProperty::Hostport => format!("{host}:{port}"),
                    ServiceProperty::ConnectionString => bail!("{name} has no connectionString"),
                })
            }
            Source::ServiceVar(_, name, other_key) => {
                let bp: &'a Blueprint = self.bp;
                let target = bp.service(name).context("fromService target")?;
                if target.runtime == Some(Runtime::Image) {
                    // The broker's own settings: the local broker's.
                    match other_key {
                        "RABBITMQ_DEFAULT_USER" | "RABBITMQ_DEFAULT_PASS" => Some("guest".into()),
                        "RABBITMQ_DEFAULT_VHOST" => Some(w.name.clone()),
                        other => self.value(target, other)?,
                    }
                } else {
                    self.value(target, other_key)?
                }
            }
        })
    }

    /// The environment one instance of `service` starts with: the
    /// blueprint's variables, then what Render sets itself (`PORT` on a web
    /// service), then a metrics port of its own (on Render each instance has
    /// a host of its own; here they share one).
    fn env(&mut self, service: &Service) -> anyhow::Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        let keys: Vec<String> = service.keys().map(str::to_owned).collect();
        for key in keys {
            if let Some(v) = self.value(service, &key)? {
                env.insert(key, v);
            }
        }
        if service.kind == ServiceType::Web && !env.contains_key("PORT") {
            env.insert("PORT".into(), self.ports[&service.name].to_string());
        }
        env.insert("METRICS_PORT".into(), free_port().to_string());
        if env.contains_key("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
            // Pushed every half second here; every minute on Render.
            env.insert("OTEL_METRIC_EXPORT_INTERVAL".into(), "500".into());
        }
        Ok(env)
    }
}

async fn wait_healthy(http: &Client, inst: &mut Instance, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = http.raw().get(&inst.health).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Some(c) = inst.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            bail!(
                "{} exited ({status}) before it was healthy\n{}",
                inst.label(),
                inst.tail()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} not healthy within {timeout:?}\n{}",
                inst.label(),
                inst.tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct System<'a> {
    world: &'a World,
    bp: &'a Blueprint,
    deploy_dir: PathBuf,
    envs: BTreeMap<String, BTreeMap<String, String>>,
    instances: Vec<Instance>,
    http: Client,
    api: String,
    adapter: String,
    sandbox_token: String,
    single: bool,
}

impl System<'_> {
    /// Every running instance of a Rust service pushes its metrics to the
    /// monitoring endpoint the blueprint wires (one `service.instance.id`
    /// each), the workers included, which no scraper could reach on Render.
    async fn metrics_pushed(&self) -> anyhow::Result<()> {
        let mut wanted: BTreeMap<String, usize> = BTreeMap::new();
        for i in self.instances.iter().filter(|i| i.child.is_some()) {
            if i.env.contains_key("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
                *wanted.entry(i.service.clone()).or_default() += 1;
            }
        }
        ensure!(
            !wanted.is_empty(),
            "no service has OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
        );
        let otlp = &self.world.otlp;
        let want = &wanted;
        let pushed = poll(
            "every instance pushing metrics",
            Duration::from_secs(20),
            || async move {
                let points = otlp.points();
                let seen = |service: &str| {
                    points
                        .iter()
                        .filter(|p| p.service == service)
                        .map(|p| p.instance.as_str())
                        .collect::<BTreeSet<&str>>()
                        .len()
                };
                want.iter()
                    .all(|(service, n)| seen(service) >= *n)
                    .then_some(())
            },
        )
        .await;
        if let Err(e) = pushed {
            let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for p in otlp.points() {
                seen.entry(p.service).or_default().insert(p.instance);
            }
            bail!("{e}: wanted instances {wanted:?}, pushed {seen:?}");
        }
        say(format!(
            "metrics: pushed over OTLP by {} instances of {} services ({})",
            wanted.values().sum::<usize>(),
            wanted.len(),
            wanted.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        Ok(())
    }

    /// Replies at `rate` per second for `seconds`, open loop, over 50
    /// chats, spread over every API instance, through the blueprint's
    /// instances and pool sizes: every reply delivered once, the latency
    /// from the `POST` to the sandbox, and the most PostgreSQL connections
    /// the deployment held at once against the sum of its pools.
    async fn load(&self, token: &str, rate: u64, seconds: u64) -> anyhow::Result<()> {
        use futures::{StreamExt, stream::FuturesUnordered};
        const CHATS: i64 = 50;
        let mut conversations = Vec::new();
        // One at a time: the newest conversation is on the list's first page.
        for chat in 0..CHATS {
            self.inbound(7000 + chat, 1, "load").await?;
            conversations.push(self.conversation(token, 7000 + chat).await?);
        }
        let apis: Vec<String> = self
            .instances
            .iter()
            .filter(|i| i.health.ends_with("/api/health"))
            .map(|i| format!("http://127.0.0.1:{}", i.env["PORT"]))
            .collect();
        let pools: u64 = self
            .instances
            .iter()
            .filter_map(|i| i.env.get("DATABASE_MAX_CONNECTIONS")?.parse::<u64>().ok())
            .sum();
        // The deployment's connections, sampled while the load runs.
        let admin =
            schema::pool::connect(&format!("{}/postgres", self.world.services.postgres), 1).await?;
        let database = url::Url::parse(&self.world.database_url)?
            .path()
            .trim_start_matches('/')
            .to_owned();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut peak = 0i64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let n: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                    )
                    .bind(&database)
                    .fetch_one(&admin)
                    .await
                    .unwrap_or(0);
                    peak = peak.max(n);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                admin.close().await;
                peak
            })
        };
        let total = (rate * seconds) as usize;
        let mut posted: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
        let mut inflight = FuturesUnordered::new();
        let mut refused = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let mut next = 0usize;
        while next < total || !inflight.is_empty() {
            tokio::select! {
                _ = tick.tick(), if next < total => {
                    let text = format!("dr-load-{next}");
                    let url = format!(
                        "{}/api/conversations/{}/messages",
                        apis[next % apis.len()],
                        conversations[next % conversations.len()]
                    );
                    posted.insert(text.clone(), chrono::Utc::now());
                    let http = &self.http;
                    inflight.push(async move {
                        let (status, body) = http
                            .call(
                                Method::POST,
                                &url,
                                Some(token),
                                Some(json!({"text": text, "client_msg_id": text})),
                            )
                            .await;
                        (status, body)
                    });
                    next += 1;
                }
                Some((status, body)) = inflight.next(), if !inflight.is_empty() => {
                    if status != StatusCode::ACCEPTED {
                        refused.push(format!("{status} {body}"));
                    }
                }
            }
        }
        let offered = started.elapsed();
        ensure!(
            refused.is_empty(),
            "{} of {total} replies refused under load, first: {}",
            refused.len(),
            refused[0]
        );
        let texts: Vec<String> = (0..total).map(|i| format!("dr-load-{i}")).collect();
        let sent = self.wait_sent(&texts).await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.await.unwrap_or(0);
        let twice: Vec<&String> = texts.iter().filter(|t| sent[*t] > 1).collect();
        ensure!(twice.is_empty(), "sent twice under load: {twice:?}");
        let (_, body) = self.sandbox(Method::GET, "/sandbox/sent", None).await;
        let mut latencies: Vec<f64> = body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|m| {
                let at = posted.get(m["text"].as_str()?)?;
                let received: chrono::DateTime<chrono::Utc> =
                    m["received_at"].as_str()?.parse().ok()?;
                Some((received - *at).num_microseconds()? as f64 / 1000.0)
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
        say(format!(
            "load: {total} replies at {rate}/s over {:.1} s through {} API instances, each \
             delivered once; POST to the sandbox p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
             PostgreSQL connections at most {peak} at once (the pools sum to {pools})",
            offered.as_secs_f64(),
            apis.len(),
            at(0.5),
            at(0.99),
            at(1.0),
        ));
        Ok(())
    }

    fn service_names(&self) -> Vec<String> {
        self.bp
            .services
            .iter()
            .filter(|s| s.runs_our_code())
            .map(|s| s.name.clone())
            .collect()
    }

    /// Runs each service's preDeployCommand to its end.
    fn pre_deploy(&self) -> anyhow::Result<()> {
        for s in self.bp.services.iter().filter(|s| s.runs_our_code()) {
            let Some(line) = &s.pre_deploy_command else {
                continue;
            };
            let log = self.world.dir.join(format!("{}-predeploy.log", s.name));
            let status = shell(&self.deploy_dir, line, &self.envs[&s.name], &log).status()?;
            ensure!(
                status.success(),
                "{}: preDeployCommand failed ({status})\n{}",
                s.name,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            say(format!("{}: preDeployCommand done", s.name));
        }
        Ok(())
    }

    /// Starts every instance of every Rust service with its startCommand.
    fn start_all(&mut self) -> anyhow::Result<()> {
        for name in self.service_names() {
            let s = self.bp.service(&name).unwrap();
            let n = if self.single {
                1
            } else {
                s.num_instances.unwrap_or(1) as usize
            };
            for i in 0..n {
                self.start(&name, i)?;
            }
        }
        Ok(())
    }

    fn start(&mut self, name: &str, index: usize) -> anyhow::Result<()> {
        let s = self.bp.service(name).unwrap();
        let mut env = self.envs[name].clone();
        if index > 0 {
            env.insert("METRICS_PORT".into(), free_port().to_string());
            if s.kind == ServiceType::Web {
                env.insert("PORT".into(), free_port().to_string());
            }
        }
        let health = match (s.kind, &s.health_check_path) {
            (ServiceType::Web, Some(p)) => format!("http://127.0.0.1:{}{p}", env["PORT"]),
            (ServiceType::Pserv, _) => format!("http://127.0.0.1:{}/health", env["PORT"]),
            _ => format!("http://127.0.0.1:{}/health", env["METRICS_PORT"]),
        };
        let log = self.world.dir.join(format!("{name}-{index}.log"));
        let line = s.start_command.clone().context("startCommand")?;
        let child = shell(&self.deploy_dir, &line, &env, &log).spawn()?;
        self.instances
            .retain(|i| !(i.service == name && i.index == index));
        self.instances.push(Instance {
            service: name.to_owned(),
            index,
            env,
            child: Some(child),
            log,
            health,
        });
        Ok(())
    }

    async fn all_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let http = self.http.clone();
        for inst in &mut self.instances {
            wait_healthy(&http, inst, timeout).await?;
        }
        Ok(())
    }

    fn instance(&mut self, name: &str) -> &mut Instance {
        self.instances
            .iter_mut()
            .find(|i| i.service == name)
            .expect("instance")
    }

    fn stop_all(&mut self) {
        for i in &mut self.instances {
            i.stop();
        }
    }

    /// The runbook's first-login step: `fastprep-api create-admin` in the
    /// api's shell, with the account given on the command line.
    fn create_admin(&self, api: &str, password: &str) -> anyhow::Result<()> {
        let mut env = self.envs[api].clone();
        env.insert("ADMIN_EMAIL".into(), ADMIN_EMAIL.into());
        env.insert("ADMIN_PASSWORD".into(), password.into());
        let log = self.world.dir.join("create-admin.log");
        let line = format!("{SHELL_PRELUDE}; target/release/fastprep-api create-admin");
        let status = shell(&self.deploy_dir, &line, &env, &log).status()?;
        ensure!(
            status.success(),
            "create-admin failed\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Ok(())
    }

    async fn sandbox(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.http
            .call(
                method,
                &format!("{}{path}", self.adapter),
                Some(&self.sandbox_token),
                body,
            )
            .await
    }

    async fn inbound(&self, chat_id: i64, tg_message_id: i64, text: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .sandbox(
                Method::POST,
                "/sandbox/inbound",
                Some(json!({
                    "chat_id": chat_id,
                    "tg_message_id": tg_message_id,
                    "text": text,
                    "sender": {"id": chat_id, "first_name": "Ann"},
                })),
            )
            .await;
        ensure!(status.is_success(), "sandbox inbound: {status} {body}");
        Ok(())
    }

    /// Texts the sandbox has sent, with how many times each.
    async fn sent(&self) -> anyhow::Result<BTreeMap<String, usize>> {
        let (status, body) = self.sandbox(Method::GET, "/sandbox/sent", None).await;
        ensure!(status.is_success(), "sandbox sent: {status} {body}");
        let mut out = BTreeMap::new();
        for m in body["messages"].as_array().cloned().unwrap_or_default() {
            *out.entry(m["text"].as_str().unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
        Ok(out)
    }

    async fn conversation(&self, token: &str, chat_id: i64) -> anyhow::Result<String> {
        let url = format!("{}/api/conversations", self.api);
        poll(
            "the inbound message's conversation",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    let (status, body) = self.http.get(&url, token).await;
                    if !status.is_success() {
                        return None;
                    }
                    body["items"].as_array()?.iter().find_map(|c| {
                        (c["tg_chat_id"].as_i64() == Some(chat_id))
                            .then(|| c["id"].as_str().map(str::to_owned))
                            .flatten()
                    })
                }
            },
        )
        .await
    }

    async fn reply(&self, token: &str, conversation: &str, text: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .http
            .call(
                Method::POST,
                &format!("{}/api/conversations/{conversation}/messages", self.api),
                Some(token),
                Some(json!({"text": text, "client_msg_id": text})),
            )
            .await;
        ensure!(status == StatusCode::ACCEPTED, "reply: {status} {body}");
        Ok(())
    }

    async fn wait_sent(&self, texts: &[String]) -> anyhow::Result<BTreeMap<String, usize>> {
        poll(
            "the replies to reach the sandbox",
            Duration::from_secs(90),
            || async move {
                let sent = self.sent().await.ok()?;
                texts.iter().all(|t| sent.contains_key(t)).then_some(sent)
            },
        )
        .await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::install_crypto_provider();
    let args = args()?;
    let root = std::env::current_dir()?;
    let yaml = std::fs::read_to_string(root.join("render.yaml")).context("render.yaml")?;
    let bp = Blueprint::parse(&yaml).map_err(|e| anyhow::anyhow!("render.yaml: {e}"))?;
    let problems: Vec<String> = check_shape(&bp)
        .into_iter()
        .chain(check_references(&bp))
        .collect();
    ensure!(problems.is_empty(), "render.yaml: {problems:#?}");

    let world = World::create().await?;
    say(format!(
        "fresh database and vhost {} (Redis keys under {}:)",
        world.name, world.name
    ));
    let result = rehearse(&args, &root, &bp, &world).await;
    let mut databases = vec![world.name.clone()];
    if let Ok(extra) = &result {
        databases.extend(extra.iter().cloned());
    }
    match &result {
        Ok(_) => {
            world.drop_all(&databases).await;
            let _ = std::fs::remove_dir_all(&world.dir);
        }
        Err(_) => {
            say(format!("logs kept in {}", world.dir.display()));
            world
                .drop_all(&[world.name.clone(), format!("{}_restored", world.name)])
                .await;
        }
    }
    result.map(|_| ())
}

/// Returns the extra databases it created (for clean-up).
async fn rehearse(
    args: &Args,
    root: &Path,
    bp: &Blueprint,
    world: &World,
) -> anyhow::Result<Vec<String>> {
    let mut resolver = Resolver::new(bp, world);
    let mut envs = BTreeMap::new();
    for s in bp.services.iter().filter(|s| s.runs_our_code()) {
        envs.insert(s.name.clone(), resolver.env(s)?);
    }
    for m in &resolver.mappings {
        say(format!("mapped {m}"));
    }

    // The build: the blueprint's own buildCommands with --full; otherwise
    // the binaries already built (CARGO_TARGET_DIR/debug), seen by the
    // start commands as target/release/.
    let deploy_dir = if args.full {
        let mut done = Vec::new();
        for s in &bp.services {
            let Some(line) = &s.build_command else {
                continue;
            };
            if done.contains(line) {
                continue;
            }
            let mut env = BTreeMap::new();
            if s.runtime == Some(Runtime::Static) {
                for key in s.keys() {
                    if let Some(v) = resolver.value(s, key)? {
                        env.insert(key.to_owned(), v);
                    }
                }
            }
            for k in ["CARGO_HOME", "RUSTUP_HOME"] {
                if let Ok(v) = std::env::var(k) {
                    env.insert(k.into(), v);
                }
            }
            say(format!("{}: buildCommand", s.name));
            let started = Instant::now();
            let log = world.dir.join(format!("{}-build.log", s.name));
            let status = shell(root, line, &env, &log).status()?;
            ensure!(
                status.success(),
                "{}: buildCommand failed\n{}",
                s.name,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            say(format!(
                "{}: built in {:.1} s",
                s.name,
                started.elapsed().as_secs_f64()
            ));
            done.push(line.clone());
        }
        root.to_path_buf()
    } else {
        let bins = fastprep_tests::process::bin_dir();
        let dir = world.dir.join("deploy");
        std::fs::create_dir_all(dir.join("target"))?;
        std::os::unix::fs::symlink(&bins, dir.join("target/release"))?;
        say(format!(
            "prebuilt binaries from {} (the buildCommands run with --full)",
            bins.display()
        ));
        dir
    };

    let api_name = bp
        .services
        .iter()
        .find(|s| s.kind == ServiceType::Web && s.runs_our_code())
        .context("no API web service")?
        .name
        .clone();
    let adapter_name = bp
        .services
        .iter()
        .find(|s| s.disk.is_some() && s.runs_our_code())
        .context("no adapter (a Rust service with a disk)")?
        .name
        .clone();
    if args.load_rate > 0 {
        // Telegram's own budgets (the blueprint's defaults: 30 sends/s for
        // the account, 1/s per chat) would cap the load far below the rate
        // asked; the load is for the pipeline and the pools.
        let adapter_env = envs
            .get_mut(&adapter_name)
            .context("the adapter's environment")?;
        for (k, v) in [
            ("TG_CHAT_RATE_PER_SEC", "1000"),
            ("TG_CHAT_BURST", "1000"),
            ("TG_GLOBAL_RATE_PER_SEC", "100000"),
            ("TG_GLOBAL_BURST", "100000"),
        ] {
            adapter_env.insert(k.into(), v.into());
        }
        say(format!(
            "mapped {adapter_name}: the sandbox's send budgets raised for the load (Telegram's: 30/s \
             for the account, 1/s per chat)"
        ));
    }
    let api = format!("http://127.0.0.1:{}", envs[&api_name]["PORT"]);
    let adapter = format!("http://127.0.0.1:{}", envs[&adapter_name]["PORT"]);
    let sandbox_token = envs[&adapter_name]
        .get("SANDBOX_TOKEN")
        .context("the adapter has no SANDBOX_TOKEN")?
        .clone();
    let mut sys = System {
        world,
        bp,
        deploy_dir,
        envs,
        instances: Vec::new(),
        http: Client::new(),
        api,
        adapter,
        sandbox_token,
        single: args.single,
    };

    // From an empty account to a healthy system.
    let t0 = Instant::now();
    sys.pre_deploy()?;
    let pre_deploy = t0.elapsed();
    sys.start_all()?;
    if let Err(e) = sys.all_healthy(Duration::from_secs(60)).await {
        sys.stop_all();
        return Err(e);
    }
    let healthy = t0.elapsed();
    say(format!(
        "{} processes healthy {:.2} s after the deploy began (preDeployCommand {:.2} s)",
        sys.instances.len(),
        healthy.as_secs_f64(),
        pre_deploy.as_secs_f64()
    ));

    let outcome = exercise(args, &mut sys, &api_name, &adapter_name).await;
    sys.stop_all();
    match outcome {
        Ok(extra) => {
            say(format!(
                "time to a healthy system: {:.2} s; rehearsal passed",
                healthy.as_secs_f64()
            ));
            Ok(extra)
        }
        Err(e) => {
            for i in &sys.instances {
                eprintln!("{}", i.tail());
            }
            Err(e)
        }
    }
}

async fn exercise(
    args: &Args,
    sys: &mut System<'_>,
    api_name: &str,
    adapter_name: &str,
) -> anyhow::Result<Vec<String>> {
    let password: String = {
        let bytes: [u8; 18] = rand::rng().random();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    sys.create_admin(api_name, &password)?;
    let token = sys.http.login(&sys.api, ADMIN_EMAIL, &password).await;
    say("first admin created (fastprep-api create-admin) and signed in");

    // One message each way.
    let chat = 4242;
    sys.inbound(chat, 1, "Hello from Telegram").await?;
    let conversation = sys.conversation(&token, chat).await?;
    say("inbound: the sandbox's message reached the inbox");
    let first = "dr-first-reply".to_owned();
    sys.reply(&token, &conversation, &first).await?;
    sys.wait_sent(std::slice::from_ref(&first)).await?;
    say("outbound: the reply reached the sandbox");
    sys.metrics_pushed().await?;
    if args.load_rate > 0 {
        sys.load(&token, args.load_rate, args.load_seconds).await?;
    }

    if !args.drills {
        return Ok(Vec::new());
    }
    let (restored, token) =
        restore_drill(args, sys, api_name, (&token, &password), &conversation).await?;
    disk_drill(sys, adapter_name, &token).await?;
    Ok(vec![restored])
}

/// A dump taken while replies flow (the sandbox slowed, so some are queued
/// or in flight), restored into a new database that every service is
/// pointed at (Render restores into a new instance), followed by the
/// runbook's steps: the cache invalidation and the hand-out of the replies
/// the dump holds unfinished. Those go out again; the adapter's idempotency
/// store (on its disk, not in the database) answers the ones it already
/// sent without a second send. Without the hand-out, the first of them
/// holds its chat's later replies for good (tried once by hand: the reply
/// written after the restore never left).
async fn restore_drill(
    args: &Args,
    sys: &mut System<'_>,
    api_name: &str,
    (token, password): (&str, &str),
    conversation: &str,
) -> anyhow::Result<(String, String)> {
    say(format!(
        "drill: restore from a dump taken mid-traffic ({} replies)",
        args.replies
    ));
    let texts: Vec<String> = (0..args.replies)
        .map(|i| format!("dr-restore-{i}"))
        .collect();
    let half = texts.len() / 2;
    // A slow Telegram, so the dump catches replies queued and in flight.
    let (status, body) = sys
        .sandbox(
            Method::POST,
            "/sandbox/faults",
            Some(json!({"latency_ms": 150})),
        )
        .await;
    ensure!(status.is_success(), "sandbox faults: {status} {body}");
    for t in &texts[..half] {
        sys.reply(token, conversation, t).await?;
    }
    let dump = sys.world.dir.join("mid-traffic.dump");
    let out = Command::new("pg_dump")
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg(sys.world.database_url.replace("?sslmode=disable", ""))
        .output()?;
    ensure!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for t in &texts[half..] {
        sys.reply(token, conversation, t).await?;
    }
    // Permissions change after the backup point: every user's version and
    // floor rise above what the dump holds.
    let log = sys.world.dir.join("flush-after-dump.log");
    let line = format!("{SHELL_PRELUDE}; target/release/fastprep-ops authz flush");
    let status = shell(&sys.deploy_dir, &line, &sys.envs[api_name], &log).status()?;
    ensure!(
        status.success(),
        "fastprep-ops authz flush failed\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    sys.wait_sent(&texts).await?;
    let (status, body) = sys
        .sandbox(Method::POST, "/sandbox/faults", Some(json!({})))
        .await;
    ensure!(status.is_success(), "sandbox faults: {status} {body}");
    say(format!(
        "dump taken after {half} of {} replies; all delivered",
        texts.len()
    ));

    // The restore: a new database from the dump, every service pointed at it.
    let started = Instant::now();
    let (db, url) = sys.world.new_database("restored").await?;
    let out = Command::new("pg_restore")
        .args(["--no-owner", "-d"])
        .arg(url.replace("?sslmode=disable", ""))
        .arg(&dump)
        .output()?;
    ensure!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sys.stop_all();
    for env in sys.envs.values_mut() {
        if env.contains_key("DATABASE_URL") {
            env.insert("DATABASE_URL".into(), url.clone());
        }
    }
    for i in &mut sys.instances {
        if i.env.contains_key("DATABASE_URL") {
            i.env.insert("DATABASE_URL".into(), url.clone());
        }
    }
    sys.pre_deploy()?;
    sys.start_all()?;
    sys.all_healthy(Duration::from_secs(60)).await?;
    // The runbook's commands after a restore, in the api's shell.
    let log = sys.world.dir.join("after-restore.log");
    let line = format!("{SHELL_PRELUDE}; {AFTER_RESTORE}");
    let status = shell(&sys.deploy_dir, &line, &sys.envs[api_name], &log).status()?;
    let printed = std::fs::read_to_string(&log).unwrap_or_default();
    ensure!(
        status.success(),
        "the runbook's commands after a restore failed\n{printed}"
    );
    let resumed = printed
        .lines()
        .find(|l| l.contains("handed out again"))
        .unwrap_or_default()
        .to_owned();
    let floors = printed
        .lines()
        .find(|l| l.contains("version floors dropped"))
        .context("the flush did not report the floors it dropped")?
        .to_owned();
    ensure!(
        !floors.trim_start().starts_with("0 "),
        "the permission change after the dump left floors, and the flush dropped none: {floors}"
    );
    say(format!("after the restore: {}", floors.trim()));
    say(format!(
        "restored into {db}, services restarted on it, caches flushed, unfinished replies handed \
         out again ({}) in {:.2} s",
        resumed.trim(),
        started.elapsed().as_secs_f64()
    ));

    // After the restore: the admin (in the dump) signs in, a message goes
    // each way, and no reply reached Telegram twice.
    let token = sys.http.login(&sys.api, ADMIN_EMAIL, password).await;
    sys.inbound(4242, 3, "After the restore").await?;
    let after = "dr-after-restore".to_owned();
    sys.reply(&token, conversation, &after).await?;
    // The chat's replies go out in order: once this one is sent, every
    // reply the restored outbox handed out again has been answered.
    let sent = sys.wait_sent(std::slice::from_ref(&after)).await?;
    let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(twice.is_empty(), "sent twice after the restore: {twice:?}");
    ensure!(
        texts.iter().all(|t| sent.contains_key(t)),
        "a reply of before the restore is missing at the sandbox"
    );
    say(format!(
        "after the restore: signed in, a message each way, no reply sent twice ({} texts at the sandbox)",
        sent.len()
    ));
    Ok((db, token))
}

/// The adapter's disk lost: the adapter is stopped, its folder emptied, and
/// started again on the empty folder. Replies written while it is away wait
/// in the broker (tg-delivery retries them) and go out once it is back.
/// With `TG_BACKEND=mtproto` the session file goes with the disk, so the
/// account must log in again; the sandbox has no session to lose.
async fn disk_drill(sys: &mut System<'_>, adapter_name: &str, token: &str) -> anyhow::Result<()> {
    say("drill: the adapter's disk is lost");
    let disk = sys
        .bp
        .service(adapter_name)
        .and_then(|s| s.disk.as_ref())
        .context("the adapter's disk")?;
    let local = PathBuf::from(
        sys.envs[adapter_name]
            .values()
            .find(|v| v.contains(&format!("/disks/{adapter_name}/{}", disk.name)))
            .context("the adapter's local disk folder")?,
    );
    // A chat of its own: the sandbox numbers the messages it sends from a
    // counter on its disk, which starts again on a new disk, and a number
    // already used in a conversation is refused there. Telegram numbers
    // messages itself; this is the sandbox's limit, not the system's.
    sys.inbound(5151, 1, "A new customer").await?;
    let conversation = sys.conversation(token, 5151).await?;
    sys.instance(adapter_name).stop();
    std::fs::remove_dir_all(&local)?;
    std::fs::create_dir_all(&local)?;
    let texts: Vec<String> = (0..3)
        .map(|i| format!("dr-while-the-adapter-is-away-{i}"))
        .collect();
    for t in &texts {
        sys.reply(token, &conversation, t).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    sys.start(adapter_name, 0)?;
    let http = sys.http.clone();
    wait_healthy(&http, sys.instance(adapter_name), Duration::from_secs(30)).await?;
    let sent = sys.wait_sent(&texts).await?;
    let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(
        twice.is_empty(),
        "sent twice after the disk loss: {twice:?}"
    );
    say(format!(
        "the adapter came back on an empty disk; the {} replies written while it was away were \
         delivered {:.1} s after it started, each once",
        texts.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
