//! The chaos run (`scripts/chaos`, issue 19): the whole system under
//! traffic in both directions while faults land anywhere, on a seeded random
//! schedule, then a count of what was lost or doubled.
//!
//! Two API instances, two relays, two tg-delivery, two inbound, two
//! authz-fanout, two alerts and the sandbox adapter run on the three-node
//! broker cluster of `scripts/cluster`, with a PostgreSQL cluster and a Redis
//! of the run's own (the faults restart them; the machine's shared ones are
//! never touched). Every link to PostgreSQL, Redis and the broker goes
//! through a TCP proxy the run owns: group A (the first instance of each
//! process) and group B (the second ones and the adapter) each have their
//! own, so a cut is a partition of half the system.
//!
//! Traffic: inbound messages injected at the sandbox and customers' edits of
//! them, replies (some with a file) and internal notes from the admin and
//! three operators with a `client_msg_id` each, edits and deletions of sent
//! replies, assignment changes, grants and revocations of a role on the
//! operators (each timed until both instances answer with it), and two
//! admin sockets: one that stays connected (the reference) and one that
//! drops every few seconds and resumes with `since` on the other instance.
//! The alerts instances post to a Slack the run plays.
//!
//! Faults, each step followed by a probe (a reply and an inbound message)
//! whose delivery measures the recovery; every third step lands two faults
//! at once, the second while the first is in force: SIGKILL and restart of
//! any process; a broker node stopped and started; PostgreSQL restarted
//! (fast or immediate); Redis restarted (empty: it has no persistence); a
//! link of one group cut; the adapter slowed, answering 5xx, or 429.
//!
//! The process is its own supervisor: the outer process starts PostgreSQL
//! and Redis, runs the driver as a child process with `TEST_POSTGRES_URL` and
//! `TEST_REDIS_URL` pointing at them (the harness reads those), and removes
//! them and the broker cluster afterwards, whatever became of the child.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use fastprep_tests::{TcpProxy, TestEnv, accounts::USER_PASSWORD, cluster, env as harness};
use futures::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng, rngs::StdRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

static STARTED: OnceLock<Instant> = OnceLock::new();

fn say(msg: impl AsRef<str>) {
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    println!("[chaos {t:6.1}s] {}", msg.as_ref());
}

const CHAT_BASE: i64 = 880_000;
const PROBE_CHAT: i64 = 889_999;
const OPERATORS: usize = 3;
const REPLY_PERMS: &[&str] = &[
    "inbox.read_all",
    "inbox.reply",
    "attachments.upload",
    "attachments.read",
];
const ASSIGN_PERMS: &[&str] = &["inbox.assign"];
const EVENT_FRAMES: &[&str] = &[
    "message.created",
    "message.status",
    "message.updated",
    "conversation.updated",
];

#[derive(Debug, Clone)]
struct Args {
    seed: u64,
    minutes: f64,
    faults: usize,
    chats: i64,
    json: PathBuf,
    /// Count one made-up duplicate, to show the report catches one.
    self_test: bool,
    /// Make the adapter faults harmful (permanent errors: replies fail for
    /// good), to show the report catches a loss.
    harmful: bool,
    /// Print the schedule the seed gives and stop.
    plan: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        seed: rand::rng().random_range(1..1_000_000),
        minutes: 0.0,
        faults: 6,
        chats: 6,
        json: PathBuf::from("bench-results/chaos.json"),
        self_test: false,
        harmful: false,
        plan: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seed" => a.seed = it.next().context("--seed S")?.parse()?,
            "--minutes" => a.minutes = it.next().context("--minutes N")?.parse()?,
            "--faults" => a.faults = it.next().context("--faults N")?.parse()?,
            "--chats" => a.chats = it.next().context("--chats N")?.parse()?,
            "--json" => a.json = it.next().context("--json PATH")?.into(),
            "--self-test-duplicate" => a.self_test = true,
            "--harmful" => a.harmful = true,
            "--plan" => a.plan = true,
            other => bail!(
                "unknown argument {other}; use --seed S, --minutes N (traffic for at least N \
                 minutes), --faults N, --chats N, --json PATH, --self-test-duplicate, --harmful, --plan (print the schedule only)"
            ),
        }
    }
    ensure!(a.faults >= 1, "--faults must be at least 1");
    ensure!((1..=100).contains(&a.chats), "--chats between 1 and 100");
    Ok(a)
}

fn to_args(a: &Args) -> Vec<String> {
    let mut v = vec![
        "--seed".into(),
        a.seed.to_string(),
        "--minutes".into(),
        a.minutes.to_string(),
        "--faults".into(),
        a.faults.to_string(),
        "--chats".into(),
        a.chats.to_string(),
        "--json".into(),
        a.json.display().to_string(),
    ];
    if a.self_test {
        v.push("--self-test-duplicate".into());
    }
    if a.harmful {
        v.push("--harmful".into());
    }
    v
}

// ---------------------------------------------------------------------------
// The private PostgreSQL and Redis, and the supervisor around the driver.

/// Runs a command, as the `postgres` OS user when `as_postgres`.
fn run(as_postgres: bool, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).args(args);
        c
    } else {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        c
    };
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {args:?}"))?;
    ensure!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The run's own PostgreSQL cluster: where its data and log are.
#[derive(Debug, Clone)]
struct Pg {
    data: PathBuf,
    log: PathBuf,
}

impl Pg {
    fn from_root(root: &Path) -> Self {
        Self {
            data: root.join("pg"),
            log: root.join("pg.log"),
        }
    }

    fn start(&self, port: u16, root: &Path) -> anyhow::Result<()> {
        let data = self.data.display().to_string();
        run(
            true,
            &[
                "initdb",
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c max_connections=400 -c fsync=off -c full_page_writes=off -c shared_buffers=64MB",
            root.display()
        );
        run(
            true,
            &[
                "pg_ctl",
                "-D",
                &data,
                "-l",
                &self.log.display().to_string(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        Ok(())
    }

    /// `pg_ctl restart -m <mode>`: the same options as at the start.
    fn restart(&self, mode: &str) -> anyhow::Result<()> {
        run(
            true,
            &[
                "pg_ctl",
                "-D",
                &self.data.display().to_string(),
                "-l",
                &self.log.display().to_string(),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "restart",
            ],
        )?;
        Ok(())
    }

    fn stop(&self) {
        let _ = run(
            true,
            &[
                "pg_ctl",
                "-D",
                &self.data.display().to_string(),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }
}

/// The run's own Redis, daemonized with a pid file so the driver (a child
/// process) can restart it and the supervisor can stop it.
#[derive(Debug, Clone)]
struct Redis {
    port: u16,
    pidfile: PathBuf,
    log: PathBuf,
}

impl Redis {
    fn from_root(root: &Path, port: u16) -> Self {
        Self {
            port,
            pidfile: root.join("redis.pid"),
            log: root.join("redis.log"),
        }
    }

    fn start(&self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&self.pidfile);
        run(
            false,
            &[
                "redis-server",
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--daemonize",
                "yes",
                "--pidfile",
                &self.pidfile.display().to_string(),
                "--logfile",
                &self.log.display().to_string(),
            ],
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            ensure!(Instant::now() < deadline, "redis did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGKILL, and waits until the port is free.
    fn kill(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match std::fs::read_to_string(&self.pidfile) {
                Ok(pid) if !pid.trim().is_empty() => {
                    let _ = run(false, &["kill", "-9", pid.trim()]);
                    let _ = std::fs::remove_file(&self.pidfile);
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline + Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn cluster_down() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster");
    let _ = Command::new(script)
        .arg("down")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The outer process: private services up, the driver as a child, then
/// everything down again.
fn supervise(args: &Args) -> anyhow::Result<ExitCode> {
    let root = std::env::temp_dir().join(format!(
        "fastprep-chaos-{}-{:06x}",
        args.seed,
        rand::rng().random_range(0..0xff_ffffu32)
    ));
    std::fs::create_dir_all(&root)?;
    run(
        false,
        &["chown", "postgres:postgres", &root.display().to_string()],
    )?;
    let pg_port = fastprep_tests::free_port();
    let redis_port = fastprep_tests::free_port();
    let pg = Pg::from_root(&root);
    let redis = Redis::from_root(&root, redis_port);
    say(format!(
        "seed {} (repeat with --seed {}); private PostgreSQL on {pg_port}, Redis on {redis_port}, in {}",
        args.seed,
        args.seed,
        root.display()
    ));
    let started = pg
        .start(pg_port, &root)
        .and_then(|()| redis.start())
        .map(|()| {
            Command::new(std::env::current_exe().expect("own path"))
                .args(to_args(args))
                .env("CHAOS_CHILD", "1")
                .env("CHAOS_ROOT", &root)
                .env("CHAOS_REDIS_PORT", redis_port.to_string())
                .env(
                    "TEST_POSTGRES_URL",
                    format!("postgres://postgres@127.0.0.1:{pg_port}"),
                )
                .env("TEST_REDIS_URL", format!("redis://127.0.0.1:{redis_port}"))
                .status()
        });
    // Whatever happened: the cluster down, Redis and PostgreSQL stopped.
    cluster_down();
    redis.kill();
    pg.stop();
    let status = started??;
    if status.success() {
        let _ = std::fs::remove_dir_all(&root);
        say("private services stopped and removed");
    } else {
        let _ = std::fs::remove_dir_all(root.join("pg"));
        say(format!(
            "private services stopped; their logs: {}",
            root.display()
        ));
    }
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(1) => ExitCode::from(1),
        _ => ExitCode::from(2),
    })
}

fn main() -> ExitCode {
    STARTED.get_or_init(Instant::now);
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("[chaos] {e:#}");
            return ExitCode::from(2);
        }
    };
    if args.plan {
        let names: Vec<(String, usize)> = process_names().into_iter().map(|n| (n, 0)).collect();
        let mut rng = StdRng::seed_from_u64(args.seed);
        for line in plan_lines(&schedule(&mut rng, args.faults, names.len()), &names) {
            println!("{line}");
        }
        return ExitCode::SUCCESS;
    }
    if std::env::var_os("CHAOS_CHILD").is_none() {
        return supervise(&args).unwrap_or_else(|e| {
            eprintln!("[chaos] {e:#}");
            ExitCode::from(2)
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(drive(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("[chaos] the run failed: {e:#}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP without panics: under faults every call may fail.

async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(StatusCode, Value), reqwest::Error> {
    let mut req = http.request(method, url).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// A signed-in user whose token is renewed when refused or old.
struct Account {
    email: String,
    password: String,
    user_id: String,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl Account {
    fn new(email: &str, password: &str, user_id: &str) -> Arc<Self> {
        Arc::new(Self {
            email: email.to_owned(),
            password: password.to_owned(),
            user_id: user_id.to_owned(),
            token: tokio::sync::Mutex::new(None),
        })
    }

    async fn token(&self, ctx: &Ctx) -> Option<String> {
        let mut t = self.token.lock().await;
        if let Some((tok, at)) = t.as_ref()
            && at.elapsed() < Duration::from_secs(200)
        {
            return Some(tok.clone());
        }
        let fresh = ctx.login(&self.email, &self.password, None).await?;
        *t = Some((fresh.clone(), Instant::now()));
        Some(fresh)
    }

    async fn forget(&self) {
        *self.token.lock().await = None;
    }
}

#[derive(Debug)]
enum Outcome {
    Done(StatusCode, Value),
    /// No definite answer before the deadline.
    Uncertain,
}

#[derive(Clone)]
struct Ctx {
    http: reqwest::Client,
    apis: Arc<Vec<String>>,
    adapter: String,
    pool: sqlx::PgPool,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
    turn: Arc<AtomicUsize>,
    next_tg: Arc<AtomicI64>,
    seed: u64,
}

impl Ctx {
    fn next_api(&self) -> String {
        let i = self.turn.fetch_add(1, Ordering::Relaxed);
        self.apis[i % self.apis.len()].clone()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Signs in on `api`, or on any instance that answers.
    async fn login(&self, email: &str, password: &str, api: Option<&str>) -> Option<String> {
        let body = json!({"email": email, "password": password});
        let candidates: Vec<String> = match api {
            Some(a) => vec![a.to_owned()],
            None => (0..self.apis.len()).map(|_| self.next_api()).collect(),
        };
        for api in candidates {
            if let Ok((StatusCode::OK, v)) = send(
                &self.http,
                Method::POST,
                &format!("{api}/api/auth/login"),
                None,
                Some(&body),
            )
            .await
                && let Some(t) = v["access_token"].as_str()
            {
                return Some(t.to_owned());
            }
        }
        None
    }

    /// Calls `path` under `/api` as `who` until a definite answer (not a
    /// transport error, 5xx, 408 or 429; a 401 renews the token), for up to
    /// `within`, alternating the instances.
    async fn request(
        &self,
        who: &Account,
        method: Method,
        path: &str,
        body: Option<Value>,
        within: Duration,
    ) -> Outcome {
        let until = Instant::now() + within;
        loop {
            if let Some(token) = who.token(self).await {
                let api = self.next_api();
                match send(
                    &self.http,
                    method.clone(),
                    &format!("{api}/api{path}"),
                    Some(&token),
                    body.as_ref(),
                )
                .await
                {
                    Ok((StatusCode::UNAUTHORIZED, _)) => who.forget().await,
                    Ok((s, _))
                        if s.is_server_error()
                            || s == StatusCode::TOO_MANY_REQUESTS
                            || s == StatusCode::REQUEST_TIMEOUT => {}
                    Ok((s, v)) => return Outcome::Done(s, v),
                    Err(_) => {}
                }
            }
            if Instant::now() >= until {
                return Outcome::Uncertain;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A sandbox control call.
    async fn sandbox(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        send(
            &self.http,
            method,
            &format!("{}{path}", self.adapter),
            Some(harness::SANDBOX_TOKEN),
            body,
        )
        .await
    }

    /// Injects an inbound message as Telegram would deliver it: again, with
    /// the same message id, until the adapter takes it (up to `within`).
    async fn inject(&self, chat: i64, tg: i64, text: &str, within: Duration) -> bool {
        self.post_update(chat, tg, text, false, within).await
    }

    /// Injects the customer's edit of message `tg` of `chat`, as
    /// Telegram's `updateEditMessage`, until the adapter takes it.
    async fn inject_edit(&self, chat: i64, tg: i64, text: &str, within: Duration) -> bool {
        self.post_update(chat, tg, text, true, within).await
    }

    /// Posts an update to the sandbox again, as Telegram would, until the
    /// adapter takes it (up to `within`); a 4xx ends the tries.
    async fn post_update(
        &self,
        chat: i64,
        tg: i64,
        text: &str,
        edit: bool,
        within: Duration,
    ) -> bool {
        let body = fastprep_tests::system::sandbox_update(chat, tg, text, edit);
        let until = Instant::now() + within;
        loop {
            match self
                .sandbox(Method::POST, "/sandbox/inbound", Some(&body))
                .await
            {
                Ok((s, _)) if s.is_success() => return true,
                Ok((s, v)) if s.is_client_error() => {
                    say(format!(
                        "update {chat}/{tg} (edit: {edit}) refused: {s} {v}"
                    ));
                    return false;
                }
                _ => {}
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every send the sandbox recorded.
    async fn sent(&self) -> anyhow::Result<Vec<Value>> {
        for _ in 0..50 {
            if let Ok((s, v)) = self.sandbox(Method::GET, "/sandbox/sent", None).await
                && s.is_success()
            {
                return Ok(v["messages"].as_array().cloned().unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("the sandbox did not list what it sent")
    }
}

// ---------------------------------------------------------------------------
// What the traffic asked for, and what the system answered.

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Accepted,
    Refused(u16),
    Uncertain,
}

#[derive(Debug, Clone)]
struct ReplyRec {
    key: String,
    chat: i64,
    message_id: Option<String>,
    file_sha: Option<String>,
    answer: Answer,
}

#[derive(Debug, Clone)]
struct InRec {
    chat: i64,
    tg: i64,
    text: String,
    acked: bool,
}

#[derive(Debug, Clone)]
struct EditRec {
    text: String,
    certain: bool,
}

#[derive(Default)]
struct Ledger {
    replies: Vec<ReplyRec>,
    inbound: Vec<InRec>,
    edits: HashMap<String, EditRec>,
    edits_accepted: u64,
    edits_refused: u64,
    edits_uncertain: u64,
    /// Conversation → (assignee, certain).
    assigns: HashMap<String, (Option<String>, bool)>,
    assigns_made: u64,
    /// Operator's user id → (holds the assign role, certain).
    perms: HashMap<String, (bool, bool)>,
    perm_changes: u64,
    /// Seconds from each role change's answer until both instances answered
    /// with the new permissions (`None`: not within the wait).
    perm_in_force: Vec<(String, Option<f64>)>,
    notes: Vec<NoteRec>,
    /// Reply id → the deletion was certainly accepted.
    deletes: HashMap<String, bool>,
    deletes_accepted: u64,
    deletes_refused: u64,
    /// (chat, Telegram message id) → (the customer's last text, the adapter
    /// took that edit).
    customer_edits: HashMap<(i64, i64), (String, bool)>,
}

#[derive(Debug, Clone)]
struct NoteRec {
    key: String,
    text: String,
    answer: Answer,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Uploads a small file; its id and SHA-256.
async fn upload(ctx: &Ctx, who: &Account, name: &str) -> Option<(String, String)> {
    let body: Vec<u8> = format!("{name} ").repeat(200).into_bytes();
    let Outcome::Done(StatusCode::CREATED, up) = ctx
        .request(
            who,
            Method::POST,
            "/attachments",
            Some(json!({"filename": format!("{name}.txt"), "content_type": "text/plain", "size_bytes": body.len()})),
            Duration::from_secs(10),
        )
        .await
    else {
        return None;
    };
    let mut req = ctx
        .http
        .put(up["upload_url"].as_str()?)
        .timeout(Duration::from_secs(10));
    for (k, v) in up["headers"].as_object()? {
        if !k.eq_ignore_ascii_case("content-length") {
            req = req.header(k.as_str(), v.as_str()?);
        }
    }
    let sha = sha256_hex(&body);
    let ok = req
        .body(body)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    ok.then(|| (up["id"].as_str().unwrap_or_default().to_owned(), sha))
}

async fn replier(ctx: Ctx, actor: usize, who: Arc<Account>, convs: Arc<Vec<(i64, String)>>) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ (0x1000 + actor as u64));
    let mut n = 0;
    while !ctx.stopped() {
        n += 1;
        let (chat, conv) = convs[rng.random_range(0..convs.len())].clone();
        if rng.random_range(0..7) == 0 {
            // An internal note: stored and shown, never sent to Telegram.
            let key = format!("chaos-note-{actor}-{n}");
            let text = format!("note {actor}.{n} on {chat} (seed {})", ctx.seed);
            let out = ctx
                .request(
                    &who,
                    Method::POST,
                    &format!("/conversations/{conv}/notes"),
                    Some(json!({"text": text, "client_msg_id": key})),
                    Duration::from_secs(30),
                )
                .await;
            let answer = match &out {
                Outcome::Done(s, _) if s.is_success() => Answer::Accepted,
                Outcome::Done(s, v) => {
                    say(format!("note {key} refused: {s} {v}"));
                    Answer::Refused(s.as_u16())
                }
                Outcome::Uncertain => Answer::Uncertain,
            };
            ctx.ledger
                .lock()
                .unwrap()
                .notes
                .push(NoteRec { key, text, answer });
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..900))).await;
            continue;
        }
        let key = format!("chaos-{actor}-{n}");
        let text = format!("reply {actor}.{n} to {chat} (seed {})", ctx.seed);
        let file = if rng.random_range(0..8) == 0 {
            upload(&ctx, &who, &key).await
        } else {
            None
        };
        let mut body = json!({"text": text, "client_msg_id": key});
        if let Some((id, _)) = &file {
            body["attachment_ids"] = json!([id]);
        }
        let out = ctx
            .request(
                &who,
                Method::POST,
                &format!("/conversations/{conv}/messages"),
                Some(body),
                Duration::from_secs(30),
            )
            .await;
        let (answer, message_id) = match &out {
            Outcome::Done(s, v) if s.is_success() => {
                (Answer::Accepted, v["id"].as_str().map(str::to_owned))
            }
            Outcome::Done(s, v) => {
                say(format!("reply {key} refused: {s} {v}"));
                (Answer::Refused(s.as_u16()), None)
            }
            Outcome::Uncertain => (Answer::Uncertain, None),
        };
        ctx.ledger.lock().unwrap().replies.push(ReplyRec {
            key,
            chat,
            message_id,
            file_sha: file.map(|(_, sha)| sha),
            answer,
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..900))).await;
    }
}

async fn injector(ctx: Ctx, chats: Arc<Vec<i64>>) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x2000);
    let mut edits = 0;
    while !ctx.stopped() {
        if rng.random_range(0..5) == 0 {
            // The customer edits a message of theirs already stored.
            let row: Option<(i64, i64)> = sqlx::query_as(
                "SELECT c.tg_chat_id, m.tg_message_id FROM messages m
                 JOIN conversations c ON c.id = m.conversation_id
                 WHERE m.direction = 'in' AND m.tg_message_id IS NOT NULL AND c.tg_chat_id = ANY($1)
                 ORDER BY random() LIMIT 1",
            )
            .bind(chats.as_slice())
            .fetch_optional(&ctx.pool)
            .await
            .ok()
            .flatten();
            if let Some((chat, tg)) = row {
                edits += 1;
                let text = format!(
                    "customer edit {edits} of {tg} in {chat} (seed {})",
                    ctx.seed
                );
                let acked = ctx
                    .inject_edit(chat, tg, &text, Duration::from_secs(30))
                    .await;
                let mut l = ctx.ledger.lock().unwrap();
                let e = l
                    .customer_edits
                    .entry((chat, tg))
                    .or_insert_with(|| (text.clone(), acked));
                *e = (text, acked);
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(150..500))).await;
            continue;
        }
        let chat = chats[rng.random_range(0..chats.len())];
        let tg = ctx.next_tg.fetch_add(1, Ordering::Relaxed);
        let text = format!("inbound {tg} from {chat} (seed {})", ctx.seed);
        let acked = ctx.inject(chat, tg, &text, Duration::from_secs(30)).await;
        ctx.ledger.lock().unwrap().inbound.push(InRec {
            chat,
            tg,
            text,
            acked,
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..500))).await;
    }
}

async fn editor(ctx: Ctx, admin: Arc<Account>) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x3000);
    let mut k = 0;
    while !ctx.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(700..1500))).await;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT m.id::text, m.conversation_id::text FROM messages m
             JOIN conversations c ON c.id = m.conversation_id
             WHERE m.direction = 'out' AND m.kind = 'text' AND m.status = 'sent'
               AND m.deleted_at IS NULL AND c.tg_chat_id <> $1
               AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.message_id = m.id)
             ORDER BY random() LIMIT 1",
        )
        .bind(PROBE_CHAT)
        .fetch_optional(&ctx.pool)
        .await
        .ok()
        .flatten();
        let Some((id, conv)) = row else { continue };
        k += 1;
        let text = format!("edit {k} of {id} (seed {})", ctx.seed);
        let out = ctx
            .request(
                &admin,
                Method::PATCH,
                &format!("/conversations/{conv}/messages/{id}"),
                Some(json!({"text": text})),
                Duration::from_secs(30),
            )
            .await;
        let mut l = ctx.ledger.lock().unwrap();
        match out {
            Outcome::Done(s, _) if s.is_success() => {
                l.edits_accepted += 1;
                l.edits.insert(
                    id,
                    EditRec {
                        text,
                        certain: true,
                    },
                );
            }
            Outcome::Done(..) => l.edits_refused += 1,
            Outcome::Uncertain => {
                l.edits_uncertain += 1;
                if let Some(e) = l.edits.get_mut(&id) {
                    e.certain = false;
                } else {
                    l.edits.insert(
                        id,
                        EditRec {
                            text,
                            certain: false,
                        },
                    );
                }
            }
        }
    }
}

/// Deletes a sent reply for everyone now and then.
async fn deleter(ctx: Ctx, admin: Arc<Account>) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x6000);
    while !ctx.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..4500))).await;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT m.id::text, m.conversation_id::text FROM messages m
             JOIN conversations c ON c.id = m.conversation_id
             WHERE m.direction = 'out' AND m.kind = 'text' AND m.status = 'sent'
               AND m.deleted_at IS NULL AND c.tg_chat_id <> $1
             ORDER BY random() LIMIT 1",
        )
        .bind(PROBE_CHAT)
        .fetch_optional(&ctx.pool)
        .await
        .ok()
        .flatten();
        let Some((id, conv)) = row else { continue };
        let out = ctx
            .request(
                &admin,
                Method::DELETE,
                &format!("/conversations/{conv}/messages/{id}"),
                None,
                Duration::from_secs(30),
            )
            .await;
        let mut l = ctx.ledger.lock().unwrap();
        match out {
            Outcome::Done(s, _) if s.is_success() => {
                l.deletes_accepted += 1;
                l.deletes.insert(id, true);
            }
            Outcome::Done(..) => l.deletes_refused += 1,
            Outcome::Uncertain => {
                l.deletes.entry(id).or_insert(false);
            }
        }
    }
}

async fn assigner(
    ctx: Ctx,
    admin: Arc<Account>,
    convs: Arc<Vec<(i64, String)>>,
    operators: Vec<String>,
) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x4000);
    while !ctx.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(600..1400))).await;
        let conv = convs[rng.random_range(0..convs.len())].1.clone();
        let pick = rng.random_range(0..=operators.len());
        let assignee = operators.get(pick).cloned();
        let out = ctx
            .request(
                &admin,
                Method::PATCH,
                &format!("/conversations/{conv}"),
                Some(json!({"assignee_id": assignee})),
                Duration::from_secs(30),
            )
            .await;
        let mut l = ctx.ledger.lock().unwrap();
        match out {
            Outcome::Done(s, _) if s.is_success() => {
                l.assigns_made += 1;
                l.assigns.insert(conv, (assignee, true));
            }
            Outcome::Done(s, v) => say(format!("assignment refused: {s} {v}")),
            Outcome::Uncertain => {
                l.assigns.insert(conv, (assignee, false));
            }
        }
    }
}

async fn permissions(
    ctx: Ctx,
    admin: Arc<Account>,
    operators: Vec<Arc<Account>>,
    reply_role: String,
    assign_role: String,
) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x5000);
    while !ctx.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1200..2600))).await;
        let account = operators[rng.random_range(0..operators.len())].clone();
        let op = account.user_id.clone();
        let grant = !ctx
            .ledger
            .lock()
            .unwrap()
            .perms
            .get(&op)
            .is_some_and(|p| p.0);
        let roles = if grant {
            json!([reply_role, assign_role])
        } else {
            json!([reply_role])
        };
        let out = ctx
            .request(
                &admin,
                Method::PUT,
                &format!("/users/{op}/roles"),
                Some(json!({"role_ids": roles})),
                Duration::from_secs(30),
            )
            .await;
        let answered = Instant::now();
        let accepted = matches!(&out, Outcome::Done(s, _) if s.is_success());
        {
            let mut l = ctx.ledger.lock().unwrap();
            match out {
                Outcome::Done(s, _) if s.is_success() => {
                    l.perm_changes += 1;
                    l.perms.insert(op, (grant, true));
                }
                Outcome::Done(s, v) => say(format!("role change refused: {s} {v}")),
                Outcome::Uncertain => {
                    l.perms.insert(op, (grant, false));
                }
            }
        }
        if accepted {
            let took = in_force(&ctx, &account, grant, answered, PERM_WAIT).await;
            ctx.ledger
                .lock()
                .unwrap()
                .perm_in_force
                .push((account.email.clone(), took.map(|d| d.as_secs_f64())));
        }
    }
}

/// How long a role change waits to be seen in force before it counts as
/// not in force in time.
const PERM_WAIT: Duration = Duration::from_secs(15);

/// Asks every instance for the operator's effective permissions until each
/// answers with `inbox.assign` held as `granted`: the time since `since`, or
/// `None` when one still did not after `limit`.
async fn in_force(
    ctx: &Ctx,
    op: &Account,
    granted: bool,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut pending: Vec<String> = ctx.apis.iter().cloned().collect();
    while since.elapsed() < limit {
        let mut still = Vec::new();
        for api in pending {
            let holds = match op.token(ctx).await {
                Some(token) => match send(
                    &ctx.http,
                    Method::GET,
                    &format!("{api}/api/auth/me/ep"),
                    Some(&token),
                    None,
                )
                .await
                {
                    Ok((StatusCode::OK, v)) => v["permissions"]
                        .as_array()
                        .map(|p| p.iter().any(|p| p == ASSIGN_PERMS[0])),
                    Ok((StatusCode::UNAUTHORIZED, _)) => {
                        op.forget().await;
                        None
                    }
                    _ => None,
                },
                None => None,
            };
            if holds != Some(granted) {
                still.push(api);
            }
        }
        if still.is_empty() {
            return Some(since.elapsed());
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

// ---------------------------------------------------------------------------
// Sockets.

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

enum Heard {
    Frame(Value),
    Closed,
    Silence,
}

async fn ws_next(s: &mut WsStream, wait: Duration) -> Heard {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Err(_) => return Heard::Silence,
            Ok(None | Some(Err(_)) | Some(Ok(WsMessage::Close(_)))) => return Heard::Closed,
            Ok(Some(Ok(WsMessage::Text(t)))) => {
                return Heard::Frame(serde_json::from_str(&t).unwrap_or(Value::Null));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// What one socket heard: the event ids it took, in order, and the
/// stretches of the stream it covered without a gap (from a start position,
/// exclusive, to the last id taken).
#[derive(Debug, Default, Clone)]
struct WsLog {
    ids: Vec<i64>,
    segments: Vec<(i64, i64)>,
    doubled: Vec<i64>,
    resumes: u64,
    reconnects: u64,
    resyncs: u64,
    last_frame: Option<Instant>,
}

impl WsLog {
    fn covers(&self, id: i64) -> bool {
        self.segments.iter().any(|(a, b)| *a < id && id <= *b)
    }
}

/// An admin socket. The reference (`resumer == false`) stays on its instance
/// while it can and signs in afresh after a drop (a new stretch); the
/// resumer drops every few seconds and resumes on the other instance with
/// `since`.
async fn socket(
    ctx: Ctx,
    admin: Arc<Account>,
    resumer: bool,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<WsLog>>,
) {
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ if resumer { 0x6001 } else { 0x6000 });
    let mut pos: Option<i64> = None;
    let mut which = usize::from(resumer);
    while !stop.load(Ordering::Relaxed) {
        let api = ctx.apis[which % ctx.apis.len()].clone();
        let Some(token) = admin.token(&ctx).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let url = format!("{}/api/ws", api.replacen("http", "ws", 1));
        let Ok(Ok((mut s, _))) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(url),
        )
        .await
        else {
            which += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let resuming = resumer && pos.is_some();
        let first = match pos {
            Some(p) if resumer => json!({"type": "resume", "token": token, "since": p}),
            _ => json!({"type": "auth", "token": token}),
        };
        if s.send(WsMessage::Text(first.to_string().into()))
            .await
            .is_err()
        {
            which += 1;
            continue;
        }
        let ep = match ws_next(&mut s, Duration::from_secs(10)).await {
            Heard::Frame(f) if f["type"] == "ep.update" => f,
            _ => {
                which += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        {
            let mut l = log.lock().unwrap();
            l.reconnects += 1;
            if resuming {
                l.resumes += 1;
            } else {
                let at = ep["id"].as_i64().unwrap_or_default();
                pos = Some(at);
                l.segments.push((at, at));
            }
        }
        let opened = Instant::now();
        let mut renewed = Instant::now();
        let drop_after = Duration::from_millis(rng.random_range(3000..8000));
        loop {
            if stop.load(Ordering::Relaxed) {
                let _ = s.close(None).await;
                return;
            }
            if resumer && opened.elapsed() >= drop_after {
                let _ = s.close(None).await;
                break;
            }
            match ws_next(&mut s, Duration::from_millis(500)).await {
                Heard::Silence => {}
                Heard::Closed => break,
                Heard::Frame(f) => {
                    let kind = f["type"].as_str().unwrap_or_default();
                    let id = f["id"].as_i64().unwrap_or_default();
                    let mut l = log.lock().unwrap();
                    if kind == "resync" {
                        l.resyncs += 1;
                        pos = Some(id);
                        l.segments.push((id, id));
                    } else if EVENT_FRAMES.contains(&kind) {
                        l.last_frame = Some(Instant::now());
                        if pos.is_some_and(|p| id <= p) {
                            l.doubled.push(id);
                        } else {
                            pos = Some(id);
                            l.ids.push(id);
                            if let Some(seg) = l.segments.last_mut() {
                                seg.1 = id;
                            }
                        }
                    } else if kind == "ep.update" && f["data"]["token_current"] == false {
                        drop(l);
                        admin.forget().await;
                        if let Some(t) = admin.token(&ctx).await {
                            let _ = s
                                .send(WsMessage::Text(
                                    json!({"type": "auth", "token": t}).to_string().into(),
                                ))
                                .await;
                        }
                    }
                }
            }
            // Renew the token on the open socket before it expires.
            if renewed.elapsed() > Duration::from_secs(150) {
                renewed = Instant::now();
                if let Some(t) = admin.token(&ctx).await {
                    let _ = s
                        .send(WsMessage::Text(
                            json!({"type": "auth", "token": t}).to_string().into(),
                        ))
                        .await;
                }
            }
        }
        if resumer {
            which += 1;
        }
    }
}

// ---------------------------------------------------------------------------
// Faults.

#[derive(Debug, Clone)]
enum Fault {
    Kill {
        proc: usize,
        down_ms: u64,
    },
    BrokerNode {
        node: u8,
        hold_ms: u64,
    },
    PgRestart {
        mode: &'static str,
    },
    RedisRestart {
        down_ms: u64,
    },
    Cut {
        service: &'static str,
        group: usize,
        hold_ms: u64,
    },
    Adapter {
        label: &'static str,
        plan: Value,
        hold_ms: u64,
    },
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "process killed",
            Fault::BrokerNode { .. } => "broker node stopped",
            Fault::PgRestart { .. } => "PostgreSQL restarted",
            Fault::RedisRestart { .. } => "Redis restarted",
            Fault::Cut { .. } => "link cut",
            Fault::Adapter { .. } => "adapter slow/5xx/429",
        }
    }

    fn describe(&self, procs: &[(String, usize)]) -> String {
        match self {
            Fault::Kill { proc, down_ms } => {
                format!("SIGKILL {}, restarted after {down_ms} ms", procs[*proc].0)
            }
            Fault::BrokerNode { node, hold_ms } => {
                format!("broker node {node} stopped for {hold_ms} ms, then started")
            }
            Fault::PgRestart { mode } => format!("PostgreSQL restarted (-m {mode})"),
            Fault::RedisRestart { down_ms } => {
                format!("Redis killed, restarted empty after {down_ms} ms")
            }
            Fault::Cut {
                service,
                group,
                hold_ms,
            } => format!(
                "{service} link of group {} cut for {hold_ms} ms",
                ["A", "B"][*group]
            ),
            Fault::Adapter {
                label,
                plan,
                hold_ms,
            } => format!("adapter {label} ({plan}) for {hold_ms} ms"),
        }
    }
}

/// The consumers each group runs one of.
const PER_GROUP: [&str; 5] = ["relay", "tg-delivery", "inbound", "authz-fanout", "alerts"];

/// The processes in the order the run starts them (the schedule's
/// `Kill` faults name them by position).
fn process_names() -> Vec<String> {
    let mut names = vec![
        "tg-adapter".to_owned(),
        "api-1".to_owned(),
        "api-2".to_owned(),
    ];
    for g in 1..=2 {
        for p in PER_GROUP {
            names.push(format!("{p}-{g}"));
        }
    }
    names
}

fn schedule(rng: &mut StdRng, n: usize, procs: usize) -> Vec<Fault> {
    let mut out = Vec::with_capacity(n);
    let mut kinds: Vec<u8> = Vec::new();
    for _ in 0..n {
        if kinds.is_empty() {
            kinds = (0..6).collect();
            // A shuffle from the seed: every kind comes once per six faults.
            for i in (1..kinds.len()).rev() {
                let j = rng.random_range(0..=i);
                kinds.swap(i, j);
            }
        }
        let kind = kinds.pop().unwrap();
        out.push(match kind {
            0 => Fault::Kill {
                proc: rng.random_range(0..procs),
                down_ms: rng.random_range(200..2500),
            },
            1 => Fault::BrokerNode {
                node: rng.random_range(1..=3),
                hold_ms: rng.random_range(1000..4000),
            },
            2 => Fault::PgRestart {
                mode: if rng.random_bool(0.5) {
                    "fast"
                } else {
                    "immediate"
                },
            },
            3 => Fault::RedisRestart {
                down_ms: rng.random_range(200..2000),
            },
            4 => Fault::Cut {
                service: ["postgres", "redis", "broker", "tg-adapter"][rng.random_range(0..4)],
                group: rng.random_range(0..2),
                hold_ms: rng.random_range(1500..5000),
            },
            _ => {
                let hold_ms = rng.random_range(2000..5000);
                match rng.random_range(0..4) {
                    0 => Fault::Adapter {
                        label: "slow",
                        plan: json!({"latency_ms": rng.random_range(800..2500)}),
                        hold_ms,
                    },
                    1 => Fault::Adapter {
                        label: "5xx",
                        plan: json!({"fail_next": rng.random_range(3..12), "mode": "server_error"}),
                        hold_ms,
                    },
                    2 => Fault::Adapter {
                        label: "429",
                        plan: json!({"fail_next": rng.random_range(2..6), "mode": "flood_wait", "retry_after": rng.random_range(1..4)}),
                        hold_ms,
                    },
                    _ => Fault::Adapter {
                        label: "slow+random 5xx",
                        plan: json!({"latency_ms": 400, "error_percent": rng.random_range(20..50)}),
                        hold_ms,
                    },
                }
            }
        });
    }
    out
}

/// The proxies of one group: its links to PostgreSQL, Redis and each node.
struct Links {
    pg: TcpProxy,
    redis: TcpProxy,
    broker: Vec<TcpProxy>,
    /// tg-delivery's link to the adapter (HTTP), once the adapter is up.
    tg: Option<TcpProxy>,
    pg_url: String,
    redis_url: String,
    amqp_url: String,
}

impl Links {
    async fn new(env: &TestEnv, redis_port: u16, vhost: &str) -> Self {
        let (pg, pg_url) = env.database_proxy().await;
        let redis = TcpProxy::start(format!("127.0.0.1:{redis_port}").parse().unwrap()).await;
        let mut broker = Vec::new();
        for port in 5681..=5683u16 {
            broker.push(TcpProxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await);
        }
        let amqp_url = broker
            .iter()
            .map(|p| format!("amqp://guest:guest@127.0.0.1:{}/{vhost}", p.port()))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            tg: None,
            redis_url: format!("redis://127.0.0.1:{}", redis.port()),
            pg,
            redis,
            broker,
            pg_url,
            amqp_url,
        }
    }

    fn set(&self, service: &str, up: bool) {
        let proxies: Vec<&TcpProxy> = match service {
            "postgres" => vec![&self.pg],
            "redis" => vec![&self.redis],
            "tg-adapter" => self.tg.iter().collect(),
            _ => self.broker.iter().collect(),
        };
        for p in proxies {
            if up { p.restore() } else { p.cut() }
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.pg_url.clone()),
            ("REDIS_URL", self.redis_url.clone()),
            ("AMQP_URL", self.amqp_url.clone()),
            // Retries come back within seconds, so a run settles in bounded
            // time (the production schedule goes on to 1 and 5 minutes).
            ("RETRY_SCHEDULE", "1s,1s,10s".to_owned()),
            ("RETRY_CLOCK_SCALE", "0.2".to_owned()),
            // As deployed: only a slow send is marked `sending`, and the
            // replies that pile up go in batches (ADR 0023).
            ("TG_SENDING_AFTER", "250ms".to_owned()),
        ]
    }
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

/// The probe after a fault: a reply on the probe chat and an inbound
/// message; how long from `since` until the reply is in Telegram and the
/// inbound message stored (None: not within `limit`).
async fn probe(
    ctx: &Ctx,
    admin: &Account,
    conv: &str,
    i: usize,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let key = format!("probe-{i}");
    let text = format!("probe {i} (seed {})", ctx.seed);
    let tg = ctx.next_tg.fetch_add(1, Ordering::Relaxed);
    let in_text = format!("inbound probe {i} (seed {})", ctx.seed);
    let path = format!("/conversations/{conv}/messages");
    let reply = ctx.request(
        admin,
        Method::POST,
        &path,
        Some(json!({"text": text, "client_msg_id": key})),
        limit,
    );
    let inject = ctx.inject(PROBE_CHAT, tg, &in_text, limit);
    let (reply, acked) = tokio::join!(reply, inject);
    {
        let mut l = ctx.ledger.lock().unwrap();
        let (answer, message_id) = match &reply {
            Outcome::Done(s, v) if s.is_success() => {
                (Answer::Accepted, v["id"].as_str().map(str::to_owned))
            }
            Outcome::Done(s, _) => (Answer::Refused(s.as_u16()), None),
            Outcome::Uncertain => (Answer::Uncertain, None),
        };
        l.replies.push(ReplyRec {
            key: key.clone(),
            chat: PROBE_CHAT,
            message_id,
            file_sha: None,
            answer,
        });
        l.inbound.push(InRec {
            chat: PROBE_CHAT,
            tg,
            text: in_text.clone(),
            acked,
        });
    }
    let id = match reply {
        Outcome::Done(s, v) if s.is_success() => v["id"].as_str()?.to_owned(),
        _ => return None,
    };
    let deadline = since + limit;
    let mut delivered = false;
    let mut stored = false;
    while Instant::now() < deadline {
        if !delivered
            && let Ok((s, v)) = ctx
                .sandbox(
                    Method::GET,
                    &format!("/sandbox/sent?chat_id={PROBE_CHAT}"),
                    None,
                )
                .await
            && s.is_success()
        {
            delivered = v["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["idempotency_key"] == id.as_str()));
        }
        if !stored {
            stored = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM messages WHERE direction = 'in' AND text = $1",
            )
            .bind(&in_text)
            .fetch_one(&ctx.pool)
            .await
            .is_ok_and(|n| n > 0);
        }
        if delivered && stored {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    None
}

#[derive(Debug, Clone)]
struct FaultRec {
    kind: &'static str,
    what: String,
    at_s: f64,
    held_ms: u128,
    recovery: Option<Duration>,
    /// Landed together with another fault (the recovery is the pair's).
    overlapped: bool,
}

/// The schedule's steps: fault indices, one per step, and every third step
/// two (consecutive faults of one shuffle of the six kinds, so never two of
/// a kind).
fn steps(n: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        if out.len() % 3 == 2 && i + 1 < n {
            out.push(vec![i, i + 1]);
            i += 2;
        } else {
            out.push(vec![i]);
            i += 1;
        }
    }
    out
}

/// The schedule as printed: each step's faults, a pair marked as such.
fn plan_lines(faults: &[Fault], procs: &[(String, usize)]) -> Vec<String> {
    let mut out = Vec::new();
    for step in steps(faults.len()) {
        for (k, i) in step.iter().enumerate() {
            let mark = match (step.len(), k) {
                (1, _) => "",
                (_, 0) => " (with the next, at once)",
                _ => " (while the previous is in force)",
            };
            out.push(format!("{i:>3}. {}{mark}", faults[*i].describe(procs)));
        }
    }
    out
}

/// What a fault acts on.
struct World<'a> {
    env: Mutex<&'a mut TestEnv>,
    procs: &'a [(String, usize)],
    groups: &'a [Links; 2],
    pg: &'a Pg,
    redis: &'a Redis,
    ctx: &'a Ctx,
}

/// Injects one fault and takes it back.
async fn inflict(w: &World<'_>, fault: &Fault) -> anyhow::Result<()> {
    match fault {
        Fault::Kill { proc, down_ms } => {
            let idx = w.procs[*proc].1;
            w.env.lock().unwrap().proc(idx).kill();
            tokio::time::sleep(Duration::from_millis(*down_ms)).await;
            w.env.lock().unwrap().proc(idx).restart_with(&[]);
        }
        Fault::BrokerNode { node, hold_ms } => {
            let n = node.to_string();
            blocking("stop-node", move || cluster::script(&["stop-node", &n])).await?;
            tokio::time::sleep(Duration::from_millis(*hold_ms)).await;
            let n = node.to_string();
            blocking("start-node", move || cluster::script(&["start-node", &n])).await?;
        }
        Fault::PgRestart { mode } => {
            let pg = w.pg.clone();
            let mode = *mode;
            blocking("pg_ctl restart", move || pg.restart(mode)).await??;
        }
        Fault::RedisRestart { down_ms } => {
            let r = w.redis.clone();
            blocking("redis kill", move || r.kill()).await?;
            tokio::time::sleep(Duration::from_millis(*down_ms)).await;
            let r = w.redis.clone();
            blocking("redis start", move || r.start()).await??;
        }
        Fault::Cut {
            service,
            group,
            hold_ms,
        } => {
            w.groups[*group].set(service, false);
            tokio::time::sleep(Duration::from_millis(*hold_ms)).await;
            w.groups[*group].set(service, true);
        }
        Fault::Adapter { plan, hold_ms, .. } => {
            let mut set = false;
            for _ in 0..20 {
                if let Ok((s, _)) = w
                    .ctx
                    .sandbox(Method::POST, "/sandbox/faults", Some(plan))
                    .await
                    && s.is_success()
                {
                    set = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            ensure!(set, "the sandbox did not take the fault plan {plan}");
            tokio::time::sleep(Duration::from_millis(*hold_ms)).await;
            for _ in 0..20 {
                if let Ok((s, _)) = w.ctx.sandbox(Method::DELETE, "/sandbox/faults", None).await
                    && s.is_success()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The run.

async fn drive(args: Args) -> anyhow::Result<bool> {
    platform::install_crypto_provider();
    let wall = Instant::now();
    let root = PathBuf::from(std::env::var("CHAOS_ROOT").context("CHAOS_ROOT")?);
    let redis_port: u16 = std::env::var("CHAOS_REDIS_PORT")?.parse()?;
    let pg = Pg::from_root(&root);
    let redis = Redis::from_root(&root, redis_port);
    let mut rng = StdRng::seed_from_u64(args.seed);

    let mut env = TestEnv::new().await;
    say(format!(
        "test world {} (logs in {})",
        env.name,
        env.dir.display()
    ));
    let vhost = format!("{}_chaos", env.vhost);
    say("starting the three-node broker cluster (scripts/cluster start)");
    {
        let vhost = vhost.clone();
        blocking("scripts/cluster start", move || {
            cluster::start_with_vhost(&vhost)
        })
        .await?;
    }
    let mut groups = [
        Links::new(&env, redis_port, &vhost).await,
        Links::new(&env, redis_port, &vhost).await,
    ];

    say("starting the processes");
    let mut procs: Vec<(String, usize)> = Vec::new();
    let adapter = env
        .start_adapter(&[("AMQP_URL", groups[1].amqp_url.clone())])
        .await;
    procs.push(("tg-adapter".into(), adapter.idx));
    let adapter_addr = adapter
        .url
        .trim_start_matches("http://")
        .parse()
        .context("adapter address")?;
    for links in &mut groups {
        links.tg = Some(TcpProxy::start(adapter_addr).await);
    }
    let mut apis = Vec::new();
    for (g, links) in groups.iter().enumerate() {
        let api = env.start_api(&links.env()).await;
        procs.push((format!("api-{}", g + 1), api.idx));
        apis.push(api);
    }
    // Slack, played by the run: every alert either alerts instance posts.
    let slack = fastprep_tests::slack::SlackReceiver::start().await;
    for (g, links) in groups.iter().enumerate() {
        for process in PER_GROUP {
            let mut vars = links.env();
            if process == "alerts" {
                vars.push(("SLACK_WEBHOOK_URL", slack.url.clone()));
                // Any failure for good alerts.
                vars.push(("FAIL_ALERT_THRESHOLD", "1".to_owned()));
            }
            if process == "tg-delivery" {
                vars.push(("DATA_DIR", env.dir.join("api-data").display().to_string()));
                vars.push(("ATTACHMENTS_URL_BASE", apis[g].url.clone()));
                if let Some(tg) = &links.tg {
                    vars.push(("TG_ADAPTER_URL", format!("http://127.0.0.1:{}", tg.port())));
                }
            }
            let adapter_ref = (process == "tg-delivery").then_some(&adapter);
            let started = env.start_consumer(process, adapter_ref, &vars).await;
            procs.push((format!("{process}-{}", g + 1), started.idx));
        }
    }
    ensure!(
        procs.iter().map(|p| p.0.clone()).collect::<Vec<_>>() == process_names(),
        "the processes started out of order"
    );
    say(format!(
        "{} processes up: {}",
        procs.len(),
        procs
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // Roles, operators, conversations.
    let admin_s = env.admin_session(&apis[0].url).await;
    let reply_role = env
        .create_role(&apis[0].url, &admin_s.access, "chaos-reply", REPLY_PERMS)
        .await;
    let assign_role = env
        .create_role(&apis[0].url, &admin_s.access, "chaos-assign", ASSIGN_PERMS)
        .await;
    let ctx = Ctx {
        http: reqwest::Client::new(),
        apis: Arc::new(apis.iter().map(|a| a.url.clone()).collect()),
        adapter: adapter.url.clone(),
        pool: env.pool.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        ledger: Arc::new(Mutex::new(Ledger::default())),
        turn: Arc::new(AtomicUsize::new(0)),
        next_tg: Arc::new(AtomicI64::new(10)),
        seed: args.seed,
    };
    let admin = Account::new(
        harness::ADMIN_EMAIL,
        harness::ADMIN_PASSWORD,
        &admin_s.user_id,
    );
    let mut operators = Vec::new();
    for i in 0..OPERATORS {
        let email = format!("chaos-op{i}@fastprep.test");
        let id = env
            .create_user(&apis[0].url, &admin_s.access, &email, &[&reply_role])
            .await;
        ctx.ledger
            .lock()
            .unwrap()
            .perms
            .insert(id.clone(), (false, true));
        operators.push(Account::new(&email, USER_PASSWORD, &id));
    }
    let chats: Vec<i64> = (0..args.chats).map(|c| CHAT_BASE + c).collect();
    let mut convs = Vec::new();
    let mut probe_conv = String::new();
    for chat in chats.iter().copied().chain([PROBE_CHAT]) {
        let text = format!("hello from {chat} (seed {})", args.seed);
        ensure!(
            ctx.inject(chat, 1, &text, Duration::from_secs(20)).await,
            "the first message of chat {chat} was not taken"
        );
        ctx.ledger.lock().unwrap().inbound.push(InRec {
            chat,
            tg: 1,
            text,
            acked: true,
        });
        let conv: String =
            fastprep_tests::wait_for("the conversation", Duration::from_secs(30), || {
                let pool = ctx.pool.clone();
                async move {
                    sqlx::query_scalar("SELECT id::text FROM conversations WHERE tg_chat_id = $1")
                        .bind(chat)
                        .fetch_optional(&pool)
                        .await
                        .ok()
                        .flatten()
                }
            })
            .await;
        if chat == PROBE_CHAT {
            probe_conv = conv;
        } else {
            convs.push((chat, conv));
        }
    }
    let convs = Arc::new(convs);
    let chats = Arc::new(chats);

    // The schedule, from the seed.
    let mut faults = schedule(&mut rng, args.faults, procs.len());
    if args.harmful {
        for f in &mut faults {
            if let Fault::Adapter { label, plan, .. } = f {
                *label = "permanent errors (--harmful)";
                *plan = json!({"fail_next": 3, "mode": "permanent", "code": "chat_not_found"});
            }
        }
    }
    say(format!(
        "seed {}: {} faults scheduled{}",
        args.seed,
        faults.len(),
        if args.minutes > 0.0 {
            format!(", traffic for at least {} min", args.minutes)
        } else {
            String::new()
        }
    ));
    for line in plan_lines(&faults, &procs) {
        say(format!("  {line}"));
    }

    // Traffic.
    say(format!(
        "traffic: {} chats, the admin and {OPERATORS} operators replying and writing notes, customers writing and editing, edits and deletions of replies, assignments, role changes, 2 sockets",
        chats.len()
    ));
    let ws_stop = Arc::new(AtomicBool::new(false));
    let reference = Arc::new(Mutex::new(WsLog::default()));
    let resumer = Arc::new(Mutex::new(WsLog::default()));
    let sockets = vec![
        tokio::spawn(socket(
            ctx.clone(),
            admin.clone(),
            false,
            ws_stop.clone(),
            reference.clone(),
        )),
        tokio::spawn(socket(
            ctx.clone(),
            admin.clone(),
            true,
            ws_stop.clone(),
            resumer.clone(),
        )),
    ];
    let mut traffic = vec![
        tokio::spawn(replier(ctx.clone(), 0, admin.clone(), convs.clone())),
        tokio::spawn(injector(ctx.clone(), chats.clone())),
        tokio::spawn(editor(ctx.clone(), admin.clone())),
        tokio::spawn(assigner(
            ctx.clone(),
            admin.clone(),
            convs.clone(),
            operators.iter().map(|o| o.user_id.clone()).collect(),
        )),
        tokio::spawn(permissions(
            ctx.clone(),
            admin.clone(),
            operators.clone(),
            reply_role.clone(),
            assign_role.clone(),
        )),
        tokio::spawn(deleter(ctx.clone(), admin.clone())),
    ];
    for (i, op) in operators.iter().enumerate() {
        traffic.push(tokio::spawn(replier(
            ctx.clone(),
            i + 1,
            op.clone(),
            convs.clone(),
        )));
    }

    // Faults: one at a time, and every third step two at once, each step
    // followed by its probe.
    let traffic_started = Instant::now();
    let target = Duration::from_secs_f64(args.minutes * 60.0);
    let mut records = Vec::new();
    let steps = steps(faults.len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    {
        let world = World {
            env: Mutex::new(&mut env),
            procs: &procs,
            groups: &groups,
            pg: &pg,
            redis: &redis,
            ctx: &ctx,
        };
        for (si, step) in steps.iter().enumerate() {
            let left = target.saturating_sub(traffic_started.elapsed());
            let gap = if left.is_zero() {
                Duration::from_millis(rng.random_range(1000..3000))
            } else {
                (left / u32::try_from(steps.len() - si).unwrap_or(1))
                    .mul_f64(rng.random_range(0.3..1.0))
            };
            tokio::time::sleep(gap).await;
            let label = step
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("+");
            let what = step
                .iter()
                .map(|i| faults[*i].describe(&procs))
                .collect::<Vec<_>>()
                .join("; meanwhile ");
            say(format!("fault {label}: {what}"));
            let at = Instant::now();
            match step.as_slice() {
                [a, b] => {
                    // The second lands while the first is still in force.
                    let offset = Duration::from_millis(rng.random_range(0..1500));
                    let (ra, rb) = tokio::join!(inflict(&world, &faults[*a]), async {
                        tokio::time::sleep(offset).await;
                        inflict(&world, &faults[*b]).await
                    });
                    ra?;
                    rb?;
                }
                _ => {
                    for i in step {
                        inflict(&world, &faults[*i]).await?;
                    }
                }
            }
            let ended = Instant::now();
            let recovery = probe(
                &ctx,
                &admin,
                &probe_conv,
                si,
                ended,
                Duration::from_secs(60),
            )
            .await;
            say(format!(
                "fault {label} over after {:.1} s; recovered {}",
                (ended - at).as_secs_f64(),
                recovery.map_or("NOT within 60 s".to_owned(), |d| format!(
                    "in {:.2} s",
                    d.as_secs_f64()
                ))
            ));
            for i in step {
                records.push(FaultRec {
                    kind: faults[*i].kind(),
                    what: faults[*i].describe(&procs),
                    at_s: (at - wall).as_secs_f64(),
                    held_ms: (ended - at).as_millis(),
                    recovery,
                    overlapped: step.len() > 1,
                });
            }
        }
    }
    let left = target.saturating_sub(traffic_started.elapsed());
    if !left.is_zero() {
        say(format!(
            "traffic goes on for {:.0} s more",
            left.as_secs_f64()
        ));
        tokio::time::sleep(left).await;
    }

    // Settle.
    say("traffic stops; settling");
    ctx.stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.await?;
    }
    let traffic_s = traffic_started.elapsed().as_secs_f64();
    for (name, idx) in &procs {
        if let Some(status) = env.proc(*idx).exited() {
            say(format!("{name} had exited ({status}): restarted"));
            env.proc(*idx).restart_with(&[]);
        }
    }
    let settled = settle(&ctx, &vhost, Duration::from_secs(120)).await;
    say(match settled {
        Some(d) => format!("settled in {:.1} s", d.as_secs_f64()),
        None => "NOT settled within 120 s: counting what is there".to_owned(),
    });
    // Both sockets quiet for 3 s (at most 20 s).
    let quiet_deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < quiet_deadline {
        let last = [&reference, &resumer]
            .iter()
            .filter_map(|l| l.lock().unwrap().last_frame)
            .max();
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(3)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ws_stop.store(true, Ordering::Relaxed);
    for s in sockets {
        s.await?;
    }

    let reference_log = reference.lock().unwrap().clone();
    let resumer_log = resumer.lock().unwrap().clone();
    // Count.
    let report = count(
        &ctx,
        &args,
        &operators,
        &probe_conv,
        &reference_log,
        &resumer_log,
        &slack,
        &vhost,
    )
    .await?;
    let pass = print_report(&args, &report, &records, traffic_s, settled, wall.elapsed())?;
    if pass {
        env.cleanup().await;
    } else {
        say(format!(
            "logs kept in {} (the database goes with the private PostgreSQL)",
            env.dir.display()
        ));
        drop(env);
    }
    {
        let vhost = vhost.clone();
        blocking("cluster finish", move || cluster::finish(&vhost)).await?;
    }
    Ok(pass)
}

/// Waits until nothing is in flight: no pending outbox row, no reply or
/// change unfinished, the work queues empty and the inbound rows steady.
async fn settle(ctx: &Ctx, vhost: &str, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let urls = (5681..=5683)
        .map(|p| format!("amqp://guest:guest@127.0.0.1:{p}/{vhost}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut queues = Vec::new();
    for q in ["tg-delivery", "inbound", "authz-fanout", "alerts"] {
        queues.push(q.to_owned());
        for d in broker_config::topology::RETRY_TIERS {
            queues.push(broker_config::topology::retry_queue_name(q, d));
        }
    }
    let mut steady = 0;
    let mut last_in = -1;
    while started.elapsed() < limit {
        let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT (SELECT count(*) FROM outbox WHERE status = 'pending'),
                    (SELECT count(*) FROM messages WHERE direction = 'out' AND kind = 'text'
                       AND status IN ('queued', 'sending', 'retrying')),
                    (SELECT count(*) FROM messages WHERE change_status IN ('queued', 'sending', 'retrying')),
                    (SELECT count(*) FROM messages WHERE direction = 'in')",
        )
        .fetch_one(&ctx.pool)
        .await
        .ok();
        let mut depth = 0;
        if let Ok(conn) = broker_config::connection::connect(&urls, "chaos-settle").await {
            for q in &queues {
                depth += broker_config::dlq::depth(&conn, q).await.unwrap_or(1);
            }
            let _ = conn.close(200, "bye".into()).await;
        } else {
            depth = 1;
        }
        match row {
            Some((0, 0, 0, inbound)) if depth == 0 && inbound == last_in => {
                steady += 1;
                if steady >= 3 {
                    return Some(started.elapsed());
                }
            }
            Some((.., inbound)) => {
                steady = 0;
                last_in = inbound;
            }
            None => steady = 0,
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    None
}

#[derive(Debug, Default)]
struct Report {
    lines: Vec<(String, i64, bool)>,
    details: BTreeMap<String, Value>,
}

impl Report {
    /// A line of the table; `bad` lines must be zero.
    fn line(&mut self, name: &str, n: usize, bad: bool) {
        self.lines
            .push((name.to_owned(), i64::try_from(n).unwrap_or(i64::MAX), bad));
    }

    fn detail(&mut self, name: &str, v: Value) {
        self.details.insert(name.to_owned(), v);
    }
}

/// A reply's row: id, chat, text, status, client_msg_id, files.
type OutRow = (String, i64, String, String, Option<String>, i64);

#[allow(clippy::too_many_arguments)]
async fn count(
    ctx: &Ctx,
    args: &Args,
    operators: &[Arc<Account>],
    probe_conv: &str,
    reference: &WsLog,
    resumer: &WsLog,
    slack: &fastprep_tests::slack::SlackReceiver,
    vhost: &str,
) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let ledger = std::mem::take(&mut *ctx.ledger.lock().unwrap());
    let sent = ctx.sent().await?;

    // Replies.
    let rows: Vec<OutRow> = sqlx::query_as(
        "SELECT m.id::text, c.tg_chat_id, m.text, m.status, m.client_msg_id,
                (SELECT count(*) FROM attachments a WHERE a.message_id = m.id)
         FROM messages m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.direction = 'out' AND m.kind = 'text'",
    )
    .fetch_all(&ctx.pool)
    .await?;
    let stored: HashMap<&str, &OutRow> = rows.iter().map(|row| (row.0.as_str(), row)).collect();
    let mut by_key: HashMap<&str, Vec<&Value>> = HashMap::new();
    for m in &sent {
        let key = m["idempotency_key"].as_str().unwrap_or_default();
        by_key
            .entry(key.split('/').next().unwrap_or(key))
            .or_default()
            .push(m);
    }
    let accepted: Vec<&ReplyRec> = ledger
        .replies
        .iter()
        .filter(|x| x.answer == Answer::Accepted)
        .collect();
    let with_file = accepted.iter().filter(|x| x.file_sha.is_some()).count();
    let not_stored: Vec<Value> = accepted
        .iter()
        .filter(|x| {
            x.message_id
                .as_deref()
                .is_none_or(|id| !stored.contains_key(id))
        })
        .map(|x| json!({"client_msg_id": x.key, "chat": x.chat, "id": x.message_id}))
        .collect();
    let mut lost = Vec::new();
    let mut failed = Vec::new();
    let mut delivered = 0;
    let mut dup_key = Vec::new();
    for (id, _chat, _text, status, _key, _files) in &rows {
        match by_key.get(id.as_str()) {
            None if status == "failed" => failed.push(id.clone()),
            None => lost.push(json!({"id": id, "status": status})),
            Some(entries) => {
                delivered += 1;
                let sends: u64 = entries
                    .iter()
                    .map(|e| e["send_count"].as_u64().unwrap_or(1))
                    .sum();
                if sends > 1 {
                    dup_key.push(json!({"id": id, "sends": sends}));
                }
            }
        }
    }
    let mut by_content: HashMap<(i64, &str), usize> = HashMap::new();
    for m in &sent {
        let text = m["text"].as_str().unwrap_or_default();
        if !text.is_empty() {
            *by_content
                .entry((m["chat_id"].as_i64().unwrap_or_default(), text))
                .or_default() += 1;
        }
    }
    let mut dup_content: Vec<Value> = by_content
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|((chat, text), n)| json!({"chat": chat, "text": text, "times": n}))
        .collect();
    if args.self_test {
        // Made up on purpose: the report must catch it.
        dup_content.push(json!({"chat": 0, "text": "self-test duplicate", "times": 2}));
    }
    let unexplained: Vec<&str> = by_key
        .keys()
        .filter(|k| !stored.contains_key(*k))
        .copied()
        .collect();
    let mut files_bad = Vec::new();
    for x in accepted.iter().filter(|x| x.file_sha.is_some()) {
        let Some(id) = &x.message_id else { continue };
        let got = by_key.get(id.as_str()).and_then(|e| {
            e.iter()
                .find_map(|m| m["files"].as_array()?.first()?["sha256"].as_str())
        });
        if got.is_some() && got != x.file_sha.as_deref() {
            files_bad.push(id.clone());
        }
    }
    let uncertain = ledger
        .replies
        .iter()
        .filter(|x| x.answer == Answer::Uncertain)
        .count();
    let refused = ledger
        .replies
        .iter()
        .filter(|x| matches!(x.answer, Answer::Refused(_)))
        .count();
    r.line("replies accepted by the API (202)", accepted.len(), false);
    r.line("  of them with a file", with_file, false);
    r.line(
        "  refused (4xx) / no answer within 30 s",
        refused + uncertain,
        false,
    );
    r.line("replies stored (out rows)", rows.len(), false);
    r.line("replies delivered to Telegram", delivered, false);
    r.line("replies accepted but not stored", not_stored.len(), true);
    r.line(
        "replies lost (stored, never reached Telegram)",
        lost.len(),
        true,
    );
    r.line("replies failed for good", failed.len(), true);
    r.line(
        "duplicated at the adapter, by idempotency key",
        dup_key.len(),
        true,
    );
    r.line(
        "duplicated at the adapter, by content",
        dup_content.len(),
        true,
    );
    r.line(
        "sends Telegram got that no reply explains",
        unexplained.len(),
        true,
    );
    r.line("files altered on the way", files_bad.len(), true);
    r.detail("replies_not_stored", json!(not_stored));
    r.detail("replies_lost", json!(lost));
    r.detail("replies_failed", json!(failed));
    r.detail("duplicated_by_key", json!(dup_key));
    r.detail("duplicated_by_content", json!(dup_content));
    r.detail("unexplained_sends", json!(unexplained));
    r.detail("files_altered", json!(files_bad));

    // Notes: stored once each, never sent.
    let note_rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT coalesce(client_msg_id, id::text), text FROM messages WHERE kind = 'note'",
    )
    .fetch_all(&ctx.pool)
    .await?;
    let mut note_keys: HashMap<&str, usize> = HashMap::new();
    for (key, _) in &note_rows {
        *note_keys.entry(key.as_str()).or_default() += 1;
    }
    let sent_texts: HashSet<&str> = sent
        .iter()
        .flat_map(|m| {
            std::iter::once(m["text"].as_str().unwrap_or_default()).chain(
                m["edits"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str),
            )
        })
        .collect();
    let notes_accepted: Vec<&NoteRec> = ledger
        .notes
        .iter()
        .filter(|n| n.answer == Answer::Accepted)
        .collect();
    let notes_missing: Vec<&str> = notes_accepted
        .iter()
        .filter(|n| !note_keys.contains_key(n.key.as_str()))
        .map(|n| n.key.as_str())
        .collect();
    let notes_twice: Vec<&str> = note_keys
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| *k)
        .collect();
    let notes_sent: Vec<&str> = ledger
        .notes
        .iter()
        .filter(|n| sent_texts.contains(n.text.as_str()))
        .map(|n| n.key.as_str())
        .collect();
    r.line("notes accepted (201)", notes_accepted.len(), false);
    r.line("notes stored", note_rows.len(), false);
    r.line("notes accepted but not stored", notes_missing.len(), true);
    r.line("notes stored twice", notes_twice.len(), true);
    r.line("notes sent to Telegram", notes_sent.len(), true);
    r.detail("notes_not_stored", json!(notes_missing));
    r.detail("notes_stored_twice", json!(notes_twice));
    r.detail("notes_sent", json!(notes_sent));

    // Deletions: gone for everyone in Telegram and marked in the database.
    let deleted_rows: HashMap<String, Option<String>> =
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT id::text, change_status FROM messages WHERE deleted_at IS NOT NULL",
        )
        .fetch_all(&ctx.pool)
        .await?
        .into_iter()
        .collect();
    let mut deletes_lost = Vec::new();
    for (id, certain) in &ledger.deletes {
        if !certain {
            continue;
        }
        let in_telegram = by_key
            .get(id.as_str())
            .is_some_and(|es| es.iter().any(|m| m["deleted"] == true));
        if !in_telegram || !deleted_rows.contains_key(id) {
            deletes_lost.push(json!({
                "id": id, "telegram": in_telegram, "stored": deleted_rows.contains_key(id),
                "change_status": deleted_rows.get(id).cloned().flatten(),
            }));
        }
    }
    r.line(
        "deletions of replies accepted",
        usize::try_from(ledger.deletes_accepted)?,
        false,
    );
    r.line(
        "  refused / no answer",
        usize::try_from(ledger.deletes_refused)? + ledger.deletes.values().filter(|c| !**c).count(),
        false,
    );
    r.line(
        "deletions not in force (Telegram and database)",
        deletes_lost.len(),
        true,
    );
    r.detail("deletions_not_in_force", json!(deletes_lost));

    // Edits (of replies not deleted since).
    let mut edits_lost = Vec::new();
    let mut checked = 0;
    for (id, e) in &ledger.edits {
        if !e.certain || ledger.deletes.contains_key(id) {
            continue;
        }
        checked += 1;
        let last = by_key.get(id.as_str()).and_then(|es| {
            es.iter()
                .find_map(|m| m["edits"].as_array()?.last()?.as_str().map(str::to_owned))
        });
        let db_text = stored.get(id.as_str()).map(|row| row.2.clone());
        if last.as_deref() != Some(e.text.as_str()) || db_text.as_deref() != Some(e.text.as_str()) {
            edits_lost
                .push(json!({"id": id, "asked": e.text, "telegram": last, "stored": db_text}));
        }
    }
    r.line(
        "edits accepted",
        usize::try_from(ledger.edits_accepted)?,
        false,
    );
    r.line(
        "  refused / no answer",
        usize::try_from(ledger.edits_refused + ledger.edits_uncertain)?,
        false,
    );
    r.line(
        "edits not in force in Telegram (last asked text)",
        edits_lost.len(),
        true,
    );
    r.detail("edits_checked", json!(checked));
    r.detail("edits_not_in_force", json!(edits_lost));

    // Inbound.
    let in_rows: Vec<(i64, Option<i64>, String)> = sqlx::query_as(
        "SELECT c.tg_chat_id, m.tg_message_id, m.text FROM messages m
         JOIN conversations c ON c.id = m.conversation_id WHERE m.direction = 'in'",
    )
    .fetch_all(&ctx.pool)
    .await?;
    let have: HashSet<(i64, i64)> = in_rows
        .iter()
        .filter_map(|(c, t, _)| Some((*c, (*t)?)))
        .collect();
    let mut texts: HashMap<&str, usize> = HashMap::new();
    for (_, _, text) in &in_rows {
        *texts.entry(text.as_str()).or_default() += 1;
    }
    let acked: Vec<&InRec> = ledger.inbound.iter().filter(|x| x.acked).collect();
    let in_lost: Vec<Value> = acked
        .iter()
        .filter(|x| !have.contains(&(x.chat, x.tg)))
        .map(|x| json!({"chat": x.chat, "tg_message_id": x.tg, "text": x.text}))
        .collect();
    let in_dup: Vec<Value> = texts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(t, n)| json!({"text": t, "times": n}))
        .collect();
    let in_text: HashMap<(i64, i64), &str> = in_rows
        .iter()
        .filter_map(|(c, t, text)| Some(((*c, (*t)?), text.as_str())))
        .collect();
    let customer_edits_taken = ledger.customer_edits.values().filter(|e| e.1).count();
    let customer_edits_lost: Vec<Value> = ledger
        .customer_edits
        .iter()
        .filter(|(k, (text, acked))| *acked && in_text.get(*k) != Some(&text.as_str()))
        .map(|((chat, tg), (text, _))| {
            json!({"chat": chat, "tg_message_id": tg, "asked": text, "stored": in_text.get(&(*chat, *tg))})
        })
        .collect();
    r.line("inbound messages taken by the adapter", acked.len(), false);
    r.line(
        "  not taken within 30 s",
        ledger.inbound.len() - acked.len(),
        false,
    );
    r.line("inbound messages stored", in_rows.len(), false);
    r.line("inbound messages lost", in_lost.len(), true);
    r.line("inbound messages duplicated", in_dup.len(), true);
    r.line(
        "customer edits taken (the last of each message)",
        customer_edits_taken,
        false,
    );
    r.line(
        "customer edits not in force",
        customer_edits_lost.len(),
        true,
    );
    r.detail("inbound_lost", json!(in_lost));
    r.detail("inbound_duplicated", json!(in_dup));
    r.detail("customer_edits_not_in_force", json!(customer_edits_lost));

    // Assignments.
    let assigned: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id::text, assignee_id::text FROM conversations")
            .fetch_all(&ctx.pool)
            .await?;
    let assigned: HashMap<String, Option<String>> = assigned.into_iter().collect();
    let assign_wrong: Vec<Value> = ledger
        .assigns
        .iter()
        .filter(|(conv, (who, certain))| *certain && assigned.get(*conv) != Some(who))
        .map(|(conv, (who, _))| json!({"conversation": conv, "asked": who, "stored": assigned.get(conv)}))
        .collect();
    r.line(
        "assignment changes made",
        usize::try_from(ledger.assigns_made)?,
        false,
    );
    r.line("assignments not in force", assign_wrong.len(), true);
    r.detail("assignments_not_in_force", json!(assign_wrong));

    // Permissions: each operator's effective permissions on each instance,
    // and one check that needs the role that changed.
    let mut perm_wrong = Vec::new();
    for op in operators {
        let Some((granted, true)) = ledger.perms.get(&op.user_id).copied() else {
            continue;
        };
        let mut expected: Vec<&str> = REPLY_PERMS.to_vec();
        if granted {
            expected.extend(ASSIGN_PERMS);
        }
        expected.sort_unstable();
        for api in ctx.apis.iter() {
            let Some(token) = ctx.login(&op.email, &op.password, Some(api)).await else {
                perm_wrong.push(json!({"operator": op.email, "api": api, "error": "no login"}));
                continue;
            };
            let ep = send(
                &ctx.http,
                Method::GET,
                &format!("{api}/api/auth/me/ep"),
                Some(&token),
                None,
            )
            .await
            .ok()
            .map(|(_, v)| v);
            let mut got: Vec<String> = ep
                .as_ref()
                .and_then(|v| v["permissions"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect();
            got.sort_unstable();
            let assign = send(
                &ctx.http,
                Method::PATCH,
                &format!("{api}/api/conversations/{probe_conv}"),
                Some(&token),
                Some(&json!({"status": "open"})),
            )
            .await
            .map(|(s, _)| s.as_u16())
            .unwrap_or(0);
            let assign_ok = if granted {
                assign == 200
            } else {
                assign == 403
            };
            if got != expected || !assign_ok {
                perm_wrong.push(json!({
                    "operator": op.email, "api": api, "expected": expected, "effective": got,
                    "patch_conversation_status": assign,
                }));
            }
        }
    }
    r.line(
        "permission changes made",
        usize::try_from(ledger.perm_changes)?,
        false,
    );
    r.line(
        "permission changes not in force (operator x instance)",
        perm_wrong.len(),
        true,
    );
    r.detail("permissions_not_in_force", json!(perm_wrong));
    let mut took: Vec<f64> = ledger.perm_in_force.iter().filter_map(|x| x.1).collect();
    took.sort_by(f64::total_cmp);
    let late: Vec<&String> = ledger
        .perm_in_force
        .iter()
        .filter(|x| x.1.is_none())
        .map(|x| &x.0)
        .collect();
    let ms = |q: f64| {
        took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)))
            .map_or(0, |s| (s * 1000.0).round() as usize)
    };
    r.line(
        "  role changes timed until both instances answered with them",
        took.len(),
        false,
    );
    r.line("    p50, ms", ms(0.5), false);
    r.line("    longest, ms", ms(1.0), false);
    r.line(
        &format!(
            "role changes not in force on both instances within {} s",
            PERM_WAIT.as_secs()
        ),
        late.len(),
        true,
    );
    r.detail(
        "permission_in_force_s",
        json!(
            ledger
                .perm_in_force
                .iter()
                .map(|x| json!({"operator": x.0, "seconds": x.1}))
                .collect::<Vec<_>>()
        ),
    );

    // Alerts: Slack hears of every failure for good or dead letter, and of
    // nothing else.
    let urls = (5681..=5683)
        .map(|p| format!("amqp://guest:guest@127.0.0.1:{p}/{vhost}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut dead = 0u32;
    if let Ok(conn) = broker_config::connection::connect(&urls, "chaos-count").await {
        for q in broker_config::topology::WORK_QUEUES {
            dead += broker_config::dlq::depth(&conn, &broker_config::topology::dlq_name(q.name))
                .await
                .unwrap_or(0);
        }
        let _ = conn.close(200, "bye".into()).await;
    }
    let causes = failed.len() + dead as usize;
    let wait_until = Instant::now() + Duration::from_secs(15);
    while causes > 0 && slack.accepted().is_empty() && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let alerts = slack.accepted();
    r.line("replies failed for good and dead letters", causes, false);
    r.line("Slack alerts posted", alerts.len(), false);
    r.line(
        "Slack alerts with nothing failed behind them",
        if causes == 0 { alerts.len() } else { 0 },
        true,
    );
    r.line(
        "failures for good with no Slack alert",
        if causes > 0 && alerts.is_empty() {
            causes
        } else {
            0
        },
        true,
    );
    r.detail(
        "alerts",
        json!(alerts.iter().map(|p| p.body.clone()).collect::<Vec<_>>()),
    );

    // Sockets: the resumer against the reference, where both covered the stream.
    let got: HashSet<i64> = resumer.ids.iter().copied().collect();
    let theirs: HashSet<i64> = reference.ids.iter().copied().collect();
    let missed: Vec<i64> = reference
        .ids
        .iter()
        .copied()
        .filter(|id| resumer.covers(*id) && !got.contains(id))
        .collect();
    let ref_missed: Vec<i64> = resumer
        .ids
        .iter()
        .copied()
        .filter(|id| reference.covers(*id) && !theirs.contains(id))
        .collect();
    let compared = reference
        .ids
        .iter()
        .filter(|id| resumer.covers(**id))
        .count();
    r.line(
        "socket frames, reference (never resumed)",
        reference.ids.len(),
        false,
    );
    r.line("socket frames, resuming client", resumer.ids.len(), false);
    r.line(
        &format!(
            "  frames compared (resumes {}, resyncs {}, reference reconnects {})",
            resumer.resumes,
            resumer.resyncs + reference.resyncs,
            reference.reconnects.saturating_sub(1)
        ),
        compared,
        false,
    );
    r.line(
        "socket frames missed by the resuming client",
        missed.len(),
        true,
    );
    r.line(
        "socket frames doubled for the resuming client",
        resumer.doubled.len(),
        true,
    );
    r.line(
        "socket frames the reference missed or doubled",
        ref_missed.len() + reference.doubled.len(),
        true,
    );
    r.detail("ws_missed", json!(missed));
    r.detail("ws_doubled", json!(resumer.doubled));
    r.detail("ws_reference_missed", json!(ref_missed));
    r.detail("ws_reference_doubled", json!(reference.doubled));
    r.detail(
        "ws",
        json!({
            "reference": {"frames": reference.ids.len(), "segments": reference.segments.len(),
                          "reconnects": reference.reconnects, "resyncs": reference.resyncs},
            "resumer": {"frames": resumer.ids.len(), "segments": resumer.segments.len(),
                        "resumes": resumer.resumes, "resyncs": resumer.resyncs},
        }),
    );
    Ok(r)
}

fn print_report(
    args: &Args,
    r: &Report,
    faults: &[FaultRec],
    traffic_s: f64,
    settled: Option<Duration>,
    wall: Duration,
) -> anyhow::Result<bool> {
    let bad: Vec<&(String, i64, bool)> = r.lines.iter().filter(|l| l.2 && l.1 != 0).collect();
    let unrecovered = faults.iter().filter(|f| f.recovery.is_none()).count();
    let pass = bad.is_empty() && unrecovered == 0 && settled.is_some();
    println!();
    println!(
        "chaos, seed {}: {} faults over {traffic_s:.0} s of traffic, wall time {:.0} s",
        args.seed,
        faults.len(),
        wall.as_secs_f64()
    );
    println!();
    println!("| {:<72} | {:>7} |", "what", "count");
    println!("|{:-<74}|{:->9}|", "", "");
    for (name, n, is_bad) in &r.lines {
        let mark = if *is_bad && *n != 0 { " <-" } else { "" };
        println!("| {name:<72} | {n:>7} |{mark}");
    }
    println!();
    println!(
        "faults that landed while another was in force: {} of {}",
        faults.iter().filter(|f| f.overlapped).count(),
        faults.len()
    );
    println!(
        "| {:<22} | {:>5} | {:>12} | {:>12} |",
        "fault", "times", "longest rec.", "median rec."
    );
    println!("|{:-<24}|{:->7}|{:->14}|{:->14}|", "", "", "", "");
    let mut kinds: BTreeMap<&str, Vec<Option<Duration>>> = BTreeMap::new();
    for f in faults {
        kinds.entry(f.kind).or_default().push(f.recovery);
    }
    let mut recoveries = serde_json::Map::new();
    for (kind, rs) in &kinds {
        let mut ok: Vec<f64> = rs.iter().flatten().map(Duration::as_secs_f64).collect();
        ok.sort_by(f64::total_cmp);
        let longest = if ok.len() < rs.len() {
            "none in 60 s".to_owned()
        } else {
            format!("{:.2} s", ok.last().copied().unwrap_or_default())
        };
        let median = ok
            .get(ok.len() / 2)
            .map_or("-".to_owned(), |m| format!("{m:.2} s"));
        println!(
            "| {kind:<22} | {:>5} | {longest:>12} | {median:>12} |",
            rs.len()
        );
        recoveries.insert(
            (*kind).to_owned(),
            json!({"times": rs.len(), "unrecovered": rs.len() - ok.len(),
                   "longest_s": ok.last(), "median_s": ok.get(ok.len() / 2)}),
        );
    }
    println!();
    if pass {
        println!("PASS: nothing lost, nothing doubled, every fault recovered from");
    } else {
        for (name, n, _) in &bad {
            println!("FAIL: {name}: {n}");
        }
        if unrecovered > 0 {
            println!("FAIL: {unrecovered} faults without a recovery within 60 s");
        }
        if settled.is_none() {
            println!("FAIL: the system did not settle within 120 s");
        }
        println!("details in {}", args.json.display());
    }
    let doc = json!({
        "seed": args.seed,
        "faults_asked": args.faults,
        "minutes": args.minutes,
        "chats": args.chats,
        "pass": pass,
        "wall_s": wall.as_secs_f64(),
        "traffic_s": traffic_s,
        "settle_s": settled.map(|d| d.as_secs_f64()),
        "lines": r.lines.iter().map(|(n, c, b)| json!({"what": n, "count": c, "must_be_zero": b})).collect::<Vec<_>>(),
        "recoveries": recoveries,
        "faults": faults.iter().map(|f| json!({
            "kind": f.kind, "what": f.what, "at_s": f.at_s, "held_ms": f.held_ms, "overlapped": f.overlapped,
            "recovery_s": f.recovery.map(|d| d.as_secs_f64()),
        })).collect::<Vec<_>>(),
        "details": r.details,
    });
    if let Some(dir) = args.json.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&doc)?)?;
    println!("written to {}", args.json.display());
    Ok(pass)
}
