//! `fastprep-bench soak`: every path under load at once, for N minutes,
//! against one system of two API instances, two each of relay, tg-delivery
//! and inbound (`TestEnv::start_system`), the sandbox adapter and one
//! authz-fanout.
//!
//! - replies at a steady rate, open loop, round-robin over the chats and
//!   the two API instances, each timed from its `POST` sent to the
//!   sandbox's `received_at`;
//! - inbound messages injected into the sandbox at a steady rate, each
//!   timed from its injection to its row's insert (the millisecond in its
//!   UUIDv7 id, minted by inbound as it inserts; `created_at` is Telegram's
//!   date);
//! - `sockets` WebSockets open and authenticated for the whole run: a few
//!   read everything and are timed (an inbound message's injection, or a
//!   reply's `POST`, to its `message.created` frame), the others are
//!   operators, one per chat assigned to them while there are chats;
//! - role grants and revokes on an operator with a socket on each API
//!   instance, each timed from the request sent to its `ep.update` frame
//!   on both sockets.
//!
//! Every "minute" (`--seconds-per-minute`, 60 unless smoke-testing), one
//! line per path and one of each process's resident memory; at the end a
//! table minute by minute, a verdict on private memory (`RssAnon`; last
//! minute against the first after the warm-up, and the least-squares
//! slope) with the whole resident set beside it, and the
//! exactly-once checks. A minute's samples are those whose origin (the
//! `POST`, the injection, the change) fell in it.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use fastprep_tests::{
    TestEnv,
    accounts::OPERATOR_ROLE,
    system::Started,
    wait_for,
    ws::{Heard, Ws},
};
use futures::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::percentile;

pub struct Args {
    pub minutes: u64,
    pub replies_per_sec: u64,
    pub inbound_per_sec: u64,
    pub sockets: usize,
    pub perm_changes_per_min: u64,
    pub chats: i64,
    pub seconds_per_minute: u64,
    pub warmup_minutes: u64,
    pub timed_sockets: usize,
}

/// A process's growth is flagged past the larger of these.
pub(crate) const GROWTH_FRACTION: f64 = 0.10;
pub(crate) const GROWTH_MIB: f64 = 5.0;
/// The drain after the load waits at most this long in all...
const DRAIN_LIMIT: Duration = Duration::from_secs(20 * 60);
/// ...and gives up after this long without progress.
const DRAIN_STALL: Duration = Duration::from_secs(60);
/// A drain longer than this means the load outran the system.
const KEPT_UP_DRAIN_S: f64 = 15.0;

#[derive(Deserialize)]
struct FrameHead {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: FrameData,
}

#[derive(Deserialize, Default)]
struct FrameData {
    id: Option<Uuid>,
    perm_version: Option<i64>,
}

struct ReplyRec {
    posted_at: DateTime<Utc>,
    /// The message id when accepted (202).
    id: Option<Uuid>,
}

struct InRec {
    chat: i64,
    tg_message_id: i64,
    injected_at: DateTime<Utc>,
    ok: bool,
}

struct PermRec {
    sent_at: DateTime<Utc>,
    version: Option<i64>,
}

/// One row of the sandbox's log, collected before each reset.
struct SentRec {
    key: String,
    tg_message_id: i64,
    received_at: DateTime<Utc>,
    send_count: i64,
}

#[derive(Default)]
struct Shared {
    replies: Mutex<Vec<ReplyRec>>,
    inbound: Mutex<Vec<InRec>>,
    perms: Mutex<Vec<PermRec>>,
    sent: Mutex<Vec<SentRec>>,
    /// (timed socket, message id, when) of `message.created` frames.
    frames: Mutex<Vec<(usize, Uuid, DateTime<Utc>)>>,
    /// (socket 0 or 1, perm_version, when) of the operator's `ep.update`.
    eps: Mutex<Vec<(usize, i64, DateTime<Utc>)>>,
    frames_read: AtomicUsize,
    closed: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

enum Timing {
    No,
    Messages(usize),
    Eps(usize),
}

fn listen(
    mut ws: Socket,
    mut stop: watch::Receiver<bool>,
    timing: Timing,
    shared: Arc<Shared>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                m = ws.next() => match m {
                    Some(Ok(Message::Text(t))) => {
                        shared.frames_read.fetch_add(1, Ordering::Relaxed);
                        let at = Utc::now();
                        let (Timing::Messages(_) | Timing::Eps(_)) = timing else { continue };
                        let Ok(f) = serde_json::from_str::<FrameHead>(&t) else { continue };
                        match (&timing, f.kind.as_str(), f.data.id, f.data.perm_version) {
                            (Timing::Messages(s), "message.created", Some(id), _) => {
                                shared.frames.lock().unwrap().push((*s, id, at));
                            }
                            (Timing::Eps(s), "ep.update", _, Some(v)) => {
                                shared.eps.lock().unwrap().push((*s, v, at));
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(Message::Close(c))) => {
                        shared.closed.lock().unwrap().push(format!("{c:?}"));
                        break;
                    }
                    Some(Ok(_)) => {}
                    _ => {
                        shared.closed.lock().unwrap().push("connection ended".into());
                        break;
                    }
                },
            }
        }
        let _ = ws.close(None).await;
    })
}

/// A steady tick of `per_sec` until `end`.
pub(crate) fn ticker(per_sec: f64) -> tokio::time::Interval {
    let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec.max(1e-6)));
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    t
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// (p50, p99, count) of unsorted milliseconds.
fn stats(mut v: Vec<f64>) -> (f64, f64, usize) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 0.5), percentile(&v, 0.99), v.len())
}

fn stats_json(v: &[f64]) -> Value {
    let (p50, p99, n) = stats(v.to_vec());
    json!({"p50_ms": p50, "p99_ms": p99, "count": n})
}

/// Least-squares slope of (x, y).
pub(crate) fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// Everything one minute's report needs, recomputed from what was
/// collected so far.
struct Minute {
    replies: Vec<f64>,
    replies_posted: usize,
    replies_errors: usize,
    inbound: Vec<f64>,
    inbound_injected: usize,
    frames_in: Vec<f64>,
    frames_out: Vec<f64>,
    perms: Vec<f64>,
    perms_made: usize,
}

/// The soak's inbound rows (Telegram ids from 2; 1 made the chats):
/// (chat, tg message id) → (message id, when stored, rows). `created_at`
/// is the Telegram date, so "stored" is the millisecond in the message's
/// UUIDv7 id, which inbound mints as it inserts the row.
async fn stored_inbound(pool: &sqlx::PgPool) -> HashMap<(i64, i64), (Uuid, DateTime<Utc>, usize)> {
    let rows: Vec<(i64, i64, Uuid)> = sqlx::query_as(
        "SELECT c.tg_chat_id, m.tg_message_id, m.id
         FROM messages m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.direction = 'in' AND m.tg_message_id >= 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out: HashMap<(i64, i64), (Uuid, DateTime<Utc>, usize)> = HashMap::new();
    for (chat, tg, id) in rows {
        let at = id
            .get_timestamp()
            .and_then(|t| {
                let (s, n) = t.to_unix();
                DateTime::from_timestamp(i64::try_from(s).ok()?, n)
            })
            .unwrap_or_default();
        out.entry((chat, tg))
            .and_modify(|e| e.2 += 1)
            .or_insert((id, at, 1));
    }
    out
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).as_seconds_f64() * 1000.0
}

fn minutes_of(
    shared: &Shared,
    stored: &HashMap<(i64, i64), (Uuid, DateTime<Utc>, usize)>,
    start: DateTime<Utc>,
    spm: f64,
    count: usize,
) -> Vec<Minute> {
    let idx = |t: DateTime<Utc>| -> Option<usize> {
        let s = (t - start).as_seconds_f64();
        (s >= 0.0)
            .then(|| (s / spm) as usize)
            .filter(|m| *m < count)
    };
    let mut out: Vec<Minute> = (0..count)
        .map(|_| Minute {
            replies: Vec::new(),
            replies_posted: 0,
            replies_errors: 0,
            inbound: Vec::new(),
            inbound_injected: 0,
            frames_in: Vec::new(),
            frames_out: Vec::new(),
            perms: Vec::new(),
            perms_made: 0,
        })
        .collect();
    // Replies: the first receipt of each key.
    let mut received: HashMap<&str, DateTime<Utc>> = HashMap::new();
    let sent = shared.sent.lock().unwrap();
    for s in sent.iter() {
        received
            .entry(s.key.as_str())
            .and_modify(|r| *r = (*r).min(s.received_at))
            .or_insert(s.received_at);
    }
    let replies = shared.replies.lock().unwrap();
    let mut reply_origin: HashMap<Uuid, DateTime<Utc>> = HashMap::with_capacity(replies.len());
    for r in replies.iter() {
        let Some(m) = idx(r.posted_at) else { continue };
        out[m].replies_posted += 1;
        match r.id {
            None => out[m].replies_errors += 1,
            Some(id) => {
                reply_origin.insert(id, r.posted_at);
                if let Some(at) = received.get(id.to_string().as_str()) {
                    out[m].replies.push(ms_between(r.posted_at, *at));
                }
            }
        }
    }
    drop(sent);
    drop(replies);
    // Inbound.
    let mut in_origin: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    for r in shared.inbound.lock().unwrap().iter() {
        let Some(m) = idx(r.injected_at) else {
            continue;
        };
        out[m].inbound_injected += 1;
        if let Some((id, at, _)) = stored.get(&(r.chat, r.tg_message_id)) {
            out[m].inbound.push(ms_between(r.injected_at, *at));
            in_origin.insert(*id, r.injected_at);
        }
    }
    // Frames on the timed sockets.
    for (_, id, at) in shared.frames.lock().unwrap().iter() {
        if let Some(t) = in_origin.get(id) {
            if let Some(m) = idx(*t) {
                out[m].frames_in.push(ms_between(*t, *at));
            }
        } else if let Some(t) = reply_origin.get(id)
            && let Some(m) = idx(*t)
        {
            out[m].frames_out.push(ms_between(*t, *at));
        }
    }
    // Permission changes: the frame on both sockets.
    let eps = shared.eps.lock().unwrap();
    for p in shared.perms.lock().unwrap().iter() {
        let Some(m) = idx(p.sent_at) else { continue };
        out[m].perms_made += 1;
        let Some(v) = p.version else { continue };
        let on = |s: usize| {
            eps.iter()
                .filter(|(sock, pv, _)| *sock == s && *pv == v)
                .map(|e| e.2)
                .min()
        };
        if let (Some(a), Some(b)) = (on(0), on(1)) {
            out[m].perms.push(ms_between(p.sent_at, a.max(b)));
        }
    }
    out
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.1}")
    }
}

pub async fn run(args: Args) -> Value {
    let spm = args.seconds_per_minute.max(1);
    let total_minutes = args.warmup_minutes + args.minutes;
    let run_secs = total_minutes * spm;
    let mut env = TestEnv::new().await;
    // The permission-change operator's sockets stay stale (its token is
    // never refreshed): held, not closed, for the whole run.
    env.set_for_all("WS_REAUTH_GRACE", &format!("{}s", run_secs + 900));
    let knobs = [
        ("RELAY_POLL_INTERVAL", "1s".to_owned()),
        ("TG_SENDING_AFTER", "250ms".to_owned()),
    ];
    let sys = env.start_system_with(&knobs).await;
    let second = sys.second.as_ref().expect("two of each");
    let fanout = env.start_consumer("authz-fanout", None, &[]).await;
    println!(
        "soak: {} min (+{} warm-up) of {} s; replies {}/s, inbound {}/s, {} sockets, {} permission changes/min, {} chats; two API instances, two each of relay, tg-delivery, inbound; one tg-adapter (sandbox) and one authz-fanout",
        args.minutes,
        args.warmup_minutes,
        spm,
        args.replies_per_sec,
        args.inbound_per_sec,
        args.sockets,
        args.perm_changes_per_min,
        args.chats
    );
    println!(
        "binaries from {}",
        fastprep_tests::process::bin_dir().display()
    );
    let procs: Vec<(&str, Started)> = vec![
        ("api-1", sys.api.clone()),
        ("api-2", second.api.clone()),
        ("relay-1", sys.relay.clone()),
        ("relay-2", second.relay.clone()),
        ("tg-delivery-1", sys.delivery.clone()),
        ("tg-delivery-2", second.delivery.clone()),
        ("inbound-1", sys.inbound.clone()),
        ("inbound-2", second.inbound.clone()),
        ("tg-adapter", sys.adapter.clone()),
        ("authz-fanout", fanout.clone()),
    ];
    let apis = [sys.api.url.clone(), second.api.url.clone()];
    let adapter_url = sys.adapter.url.clone();

    // Conversations: one message from each chat.
    for chat in 1..=args.chats {
        env.inject(&sys.adapter, chat, 1, "hello").await;
    }
    let chats = args.chats;
    let convs: Vec<(Uuid, i64)> = wait_for("conversations", Duration::from_secs(120), || {
        let pool = env.pool.clone();
        async move {
            let rows: Vec<(Uuid, i64)> =
                sqlx::query_as("SELECT id, tg_chat_id FROM conversations ORDER BY tg_chat_id")
                    .fetch_all(&pool)
                    .await
                    .ok()?;
            (rows.len() as i64 == chats).then_some(rows)
        }
    })
    .await;

    // Tokens that outlive the run, minted with the deployment's secret.
    let keys = api::auth::jwt::Keys::new(
        &secrecy::SecretString::from(fastprep_tests::env::JWT_SECRET),
        Duration::from_secs(run_secs + 3600),
    )
    .unwrap();
    let admin = env.admin_session(&sys.api.url).await;
    let admin_id: Uuid = admin.user_id.parse().unwrap();
    let pv_of = |pool: sqlx::PgPool, id: Uuid| async move {
        sqlx::query_scalar::<_, i64>("SELECT perm_version FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let admin_token = keys
        .issue(admin_id, pv_of(env.pool.clone(), admin_id).await)
        .unwrap();

    // Socket holders, as the realtime bench makes them.
    let read_all = env
        .create_role(
            &sys.api.url,
            &admin.access,
            "soak-supervisors",
            &["inbox.read_all"],
        )
        .await;
    let assigned = env
        .create_role(
            &sys.api.url,
            &admin.access,
            "soak-operators",
            &["inbox.read_assigned", "inbox.reply"],
        )
        .await;
    let extra = env
        .create_role(
            &sys.api.url,
            &admin.access,
            "soak-extra",
            &["attachments.read"],
        )
        .await;
    let timed = args.timed_sockets.min(args.sockets);
    let holders: Vec<Uuid> = (0..args.sockets).map(|_| Uuid::now_v7()).collect();
    let roles: Vec<Uuid> = (0..args.sockets)
        .map(|i| if i < timed { &read_all } else { &assigned })
        .map(|r| r.parse().unwrap())
        .collect();
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(admin_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    crate::realtime::insert_holders(&env.pool, "soak", &holders, &hash, &roles).await;
    for (conv, holder) in convs.iter().zip(holders.iter().skip(timed)) {
        sqlx::query("UPDATE conversations SET assignee_id = $2 WHERE id = $1")
            .bind(conv.0)
            .bind(holder)
            .execute(&env.pool)
            .await
            .unwrap();
    }
    let ep_user: Uuid = env
        .create_user(
            &sys.api.url,
            &admin.access,
            "soak-op@fastprep.test",
            &[OPERATOR_ROLE],
        )
        .await
        .parse()
        .unwrap();

    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let opened = Instant::now();
    let mut listeners = Vec::with_capacity(args.sockets + 2);
    for (i, h) in holders.iter().enumerate() {
        let ws = open_socket(&apis[i % 2], &keys, *h, &env.pool).await;
        let timing = if i < timed {
            Timing::Messages(i)
        } else {
            Timing::No
        };
        listeners.push(listen(ws, stop_rx.clone(), timing, shared.clone()));
    }
    for (s, api) in apis.iter().enumerate() {
        let ws = open_socket(api, &keys, ep_user, &env.pool).await;
        listeners.push(listen(ws, stop_rx.clone(), Timing::Eps(s), shared.clone()));
    }
    println!(
        "{} sockets open and authenticated in {:.1} s ({timed} reading everything and timed, the rest operators; +2 of the permission-change operator)",
        args.sockets,
        opened.elapsed().as_secs_f64()
    );

    let start = Utc::now();
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(run_secs);
    let mut loads = tokio::task::JoinSet::new();
    // Replies, open loop.
    {
        let (shared, http, token) = (shared.clone(), env.http.raw().clone(), admin_token.clone());
        let (apis, convs) = (apis.clone(), convs.clone());
        let rate = args.replies_per_sec;
        loads.spawn(async move {
            let mut tick = ticker(rate as f64);
            let mut posts = tokio::task::JoinSet::new();
            let mut i = 0usize;
            while Instant::now() < end && rate > 0 {
                tick.tick().await;
                if Instant::now() >= end {
                    break;
                }
                let url = format!(
                    "{}/api/conversations/{}/messages",
                    apis[i % 2],
                    convs[(i / 2) % convs.len()].0
                );
                let (http, token, shared) = (http.clone(), token.clone(), shared.clone());
                posts.spawn(async move {
                    let client_msg_id = format!("soak-{i}");
                    let posted_at = Utc::now();
                    let resp = http
                        .post(url)
                        .bearer_auth(token)
                        .json(&json!({"text": format!("{client_msg_id}: your lesson is confirmed"), "client_msg_id": client_msg_id}))
                        .send()
                        .await;
                    let id = match resp {
                        Ok(r) if r.status() == 202 => r
                            .json::<Value>()
                            .await
                            .ok()
                            .and_then(|b| b["id"].as_str().and_then(|s| s.parse().ok())),
                        Ok(r) => {
                            shared.errors.lock().unwrap().push(format!("reply: {}", r.status()));
                            None
                        }
                        Err(e) => {
                            shared.errors.lock().unwrap().push(format!("reply: {e}"));
                            None
                        }
                    };
                    shared.replies.lock().unwrap().push(ReplyRec { posted_at, id });
                });
                while posts.try_join_next().is_some() {}
                i += 1;
            }
            while posts.join_next().await.is_some() {}
        });
    }
    // Inbound, open loop.
    {
        let (shared, http, adapter) = (shared.clone(), env.http.clone(), adapter_url.clone());
        let rate = args.inbound_per_sec;
        let chat_ids: Vec<i64> = convs.iter().map(|c| c.1).collect();
        loads.spawn(async move {
            let mut tick = ticker(rate as f64);
            let mut posts = tokio::task::JoinSet::new();
            let mut i = 0usize;
            while Instant::now() < end && rate > 0 {
                tick.tick().await;
                if Instant::now() >= end {
                    break;
                }
                let chat = chat_ids[i % chat_ids.len()];
                let tg_message_id = 2 + (i / chat_ids.len()) as i64;
                let (http, adapter, shared) = (http.clone(), adapter.clone(), shared.clone());
                posts.spawn(async move {
                    let injected_at = Utc::now();
                    let answer = http
                        .try_call(
                            Method::POST,
                            &format!("{adapter}/sandbox/inbound"),
                            Some(fastprep_tests::env::SANDBOX_TOKEN),
                            Some(fastprep_tests::system::sandbox_update(
                                chat,
                                tg_message_id,
                                &format!("soak inbound {i}: when is my next lesson?"),
                                false,
                            )),
                        )
                        .await;
                    let ok = match answer {
                        Ok((status, _)) if status.is_success() => true,
                        Ok((status, body)) => {
                            shared
                                .errors
                                .lock()
                                .unwrap()
                                .push(format!("inject: {status} {body}"));
                            false
                        }
                        Err(e) => {
                            shared.errors.lock().unwrap().push(format!("inject: {e}"));
                            false
                        }
                    };
                    shared.inbound.lock().unwrap().push(InRec {
                        chat,
                        tg_message_id,
                        injected_at,
                        ok,
                    });
                });
                while posts.try_join_next().is_some() {}
                i += 1;
            }
            while posts.join_next().await.is_some() {}
        });
    }
    // Role grants and revokes on the operator, one after another.
    {
        let (shared, http, admin_token_for_perms) =
            (shared.clone(), env.http.clone(), admin_token.clone());
        let per_sec = args.perm_changes_per_min as f64 / spm as f64;
        let url = format!("{}/api/users/{ep_user}/roles", apis[0]);
        let sets = [
            vec![OPERATOR_ROLE.to_owned()],
            vec![OPERATOR_ROLE.to_owned(), extra.clone()],
        ];
        loads.spawn(async move {
            if per_sec <= 0.0 {
                return;
            }
            let mut tick = ticker(per_sec);
            let mut i = 0usize;
            while Instant::now() < end {
                tick.tick().await;
                if Instant::now() >= end {
                    break;
                }
                let sent_at = Utc::now();
                let (status, body) = http
                    .call(
                        Method::PUT,
                        &url,
                        Some(&admin_token_for_perms),
                        Some(json!({"role_ids": sets[(i + 1) % 2]})),
                    )
                    .await;
                if !status.is_success() {
                    shared
                        .errors
                        .lock()
                        .unwrap()
                        .push(format!("roles: {status} {body}"));
                }
                shared.perms.lock().unwrap().push(PermRec {
                    sent_at,
                    version: body["perm_version"].as_i64(),
                });
                i += 1;
            }
        });
    }
    // The sandbox's log, collected and cleared every few seconds (its store
    // would otherwise grow all run long, in the adapter's memory too).
    let (collect_stop_tx, collect_stop_rx) = watch::channel(false);
    let collector = {
        let (shared, http, adapter) = (shared.clone(), env.http.clone(), adapter_url.clone());
        let every = Duration::from_secs((spm / 12).clamp(1, 5));
        tokio::spawn(async move {
            let mut stop = collect_stop_rx;
            loop {
                let last = *stop.borrow();
                collect(&http, &adapter, &shared).await;
                if last {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => {}
                }
            }
        })
    };

    // The minutes: RSS sampled every few seconds, a report after each.
    let sample_every = Duration::from_secs_f64((spm as f64 / 12.0).clamp(1.0, 5.0));
    let settle = Duration::from_secs_f64((spm as f64 / 4.0).min(5.0));
    let mut samples: Vec<(f64, Vec<u64>)> = Vec::new();
    let mut anon_samples: Vec<(f64, Vec<u64>)> = Vec::new();
    let mut minute_rss: Vec<Vec<u64>> = Vec::new();
    let mut minute_anon: Vec<Vec<u64>> = Vec::new();
    let mut reported = 0u64;
    let mut next_sample = t0;
    while reported < total_minutes {
        let now = Instant::now();
        let minute_end = t0 + Duration::from_secs((reported + 1) * spm);
        if now >= next_sample {
            let (rss, anon): (Vec<u64>, Vec<u64>) = procs
                .iter()
                .map(|(_, s)| env.proc(s.idx).rss_and_anon_kib().unwrap_or((0, 0)))
                .unzip();
            let at = now.duration_since(t0).as_secs_f64();
            // The minute's memory: the last reading inside it.
            let m = (at / spm as f64) as usize;
            if m < total_minutes as usize {
                if minute_rss.len() <= m {
                    minute_rss.resize(m + 1, Vec::new());
                    minute_anon.resize(m + 1, Vec::new());
                }
                minute_rss[m] = rss.clone();
                minute_anon[m] = anon.clone();
            }
            samples.push((at, rss));
            anon_samples.push((at, anon));
            next_sample += sample_every;
        }
        if now >= minute_end + settle {
            let stored = stored_inbound(&env.pool).await;
            let all = minutes_of(&shared, &stored, start, spm as f64, total_minutes as usize);
            let m = reported as usize;
            print_minute(m, &args, &all[m], minute_rss.get(m), &procs);
            reported += 1;
            continue;
        }
        let wake = next_sample.min(minute_end + settle);
        tokio::time::sleep_until(wake.into()).await;
    }
    while let Some(r) = loads.join_next().await {
        r.unwrap();
    }

    // Drain: every accepted reply at the sandbox and every injection stored.
    // A backlog the load left behind drains as long as it keeps shrinking
    // (a minute without progress ends the wait), up to DRAIN_LIMIT, so a
    // reply still queued is told apart from one lost.
    let drain_started = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_left = usize::MAX;
    loop {
        let accepted: HashSet<String> = shared
            .replies
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| r.id.map(|i| i.to_string()))
            .collect();
        let seen: HashSet<String> = shared
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.key.clone())
            .collect();
        let injected = shared
            .inbound
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.ok)
            .count();
        let stored = stored_inbound(&env.pool).await.len();
        // A reply unseen by the listings may have gone between a listing
        // and its reset: the database says whether it is still to go.
        let unseen: Vec<Uuid> = accepted
            .difference(&seen)
            .filter_map(|id| id.parse().ok())
            .collect();
        let to_go: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM messages WHERE id = ANY($1) AND status <> 'sent'",
        )
        .bind(&unseen)
        .fetch_one(&env.pool)
        .await
        .unwrap_or(i64::try_from(unseen.len()).unwrap_or(i64::MAX));
        let left = usize::try_from(to_go).unwrap_or(usize::MAX) + injected.saturating_sub(stored);
        if left == 0 {
            break;
        }
        if left < last_left {
            last_left = left;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > DRAIN_STALL || drain_started.elapsed() > DRAIN_LIMIT {
            println!(
                "drain: {left} still undelivered after {:.0} s; counting",
                drain_started.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    // Stragglers: a last look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = collect_stop_tx.send(true);
    collector.await.unwrap();
    let _ = stop_tx.send(true);
    for l in listeners {
        let _ = l.await;
    }

    // The table, from everything collected.
    let stored = stored_inbound(&env.pool).await;
    let all = minutes_of(&shared, &stored, start, spm as f64, total_minutes as usize);
    println!();
    println!(
        "minute by minute (ms; warm-up minutes marked w; a sample's minute is its POST's, injection's or change's):"
    );
    println!(
        "{:>6} | {:>22} | {:>22} | {:>22} | {:>22} | {:>22}",
        "minute",
        "reply e2e p50/p99 (n)",
        "inbound p50/p99 (n)",
        "frame in p50/p99 (n)",
        "frame out p50/p99 (n)",
        "perm p50/p99 (n)"
    );
    let mut table = Vec::new();
    for (m, mm) in all.iter().enumerate() {
        let cell = |v: &Vec<f64>| {
            let (a, b, n) = stats(v.clone());
            format!("{}/{} ({n})", fmt_ms(a), fmt_ms(b))
        };
        let label = if (m as u64) < args.warmup_minutes {
            format!("w{}", m + 1)
        } else {
            format!("{}", m as u64 + 1 - args.warmup_minutes)
        };
        println!(
            "{label:>6} | {:>22} | {:>22} | {:>22} | {:>22} | {:>22}",
            cell(&mm.replies),
            cell(&mm.inbound),
            cell(&mm.frames_in),
            cell(&mm.frames_out),
            cell(&mm.perms)
        );
        let rss: serde_json::Map<String, Value> = procs
            .iter()
            .enumerate()
            .map(|(i, (n, _))| {
                (
                    (*n).to_owned(),
                    json!(minute_rss.get(m).and_then(|r| r.get(i)).map(|k| mib(*k))),
                )
            })
            .collect();
        table.push(json!({
            "minute": label,
            "warmup": (m as u64) < args.warmup_minutes,
            "replies": {"posted": mm.replies_posted, "errors": mm.replies_errors, "e2e": stats_json(&mm.replies)},
            "inbound": {"injected": mm.inbound_injected, "stored": stats_json(&mm.inbound)},
            "frame_inbound": stats_json(&mm.frames_in),
            "frame_reply": stats_json(&mm.frames_out),
            "perm_change": {"made": mm.perms_made, "ep_update_on_both": stats_json(&mm.perms)},
            "rss_mib": rss,
        }));
    }

    // Memory verdict, on private memory (RssAnon: heap, stacks, buffers),
    // with the whole resident set beside it. The rest of RSS is file-backed:
    // the executable's code pages in as its paths first run, bounded by its
    // size and dropped by the kernel under pressure, so it is no leak.
    println!();
    println!(
        "memory: private (RssAnon) and resident (RSS), last minute against the first after the warm-up (minute {}), and the least-squares slope over the measured minutes; flagged when private memory grows by more than {:.0}% or {GROWTH_MIB:.0} MiB, whichever is larger (by the minutes, or by the slope over the run's length)",
        1,
        GROWTH_FRACTION * 100.0
    );
    let first_m = args.warmup_minutes as usize;
    let last_m = total_minutes as usize - 1;
    let measured_from = (first_m as u64 * spm) as f64;
    let run_hours = (args.minutes * spm) as f64 / 3600.0;
    let growth = |minutes: &Vec<Vec<u64>>, samples: &[(f64, Vec<u64>)], i: usize| {
        let at = |m: usize| {
            minutes
                .get(m)
                .and_then(|r| r.get(i))
                .map(|k| mib(*k))
                .unwrap_or(f64::NAN)
        };
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.0 >= measured_from)
            .map(|s| (s.0 / 3600.0, mib(s.1[i])))
            .collect();
        (at(first_m), at(last_m), slope(&points))
    };
    let mut memory = serde_json::Map::new();
    let mut flagged_any = false;
    for (i, (name, _)) in procs.iter().enumerate() {
        let (first, last, per_hour) = growth(&minute_anon, &anon_samples, i);
        let (rss_first, rss_last, rss_per_hour) = growth(&minute_rss, &samples, i);
        let bound = (first * GROWTH_FRACTION).max(GROWTH_MIB);
        let grew = last - first;
        let flagged = grew > bound || per_hour * run_hours > bound;
        flagged_any |= flagged;
        println!(
            "    {name:<14} private {first:>6.1} → {last:>6.1} MiB ({grew:+.1}), slope {per_hour:+.1} MiB/h, bound {bound:.1} MiB{}; resident {rss_first:.1} → {rss_last:.1} MiB ({:+.1}), slope {rss_per_hour:+.1} MiB/h",
            if flagged { "  <- GROWS" } else { "  flat" },
            rss_last - rss_first,
        );
        memory.insert(
            (*name).to_owned(),
            json!({"first_mib": first, "last_mib": last, "growth_mib": grew, "slope_mib_per_hour": per_hour, "bound_mib": bound, "flagged": flagged,
                   "rss_first_mib": rss_first, "rss_last_mib": rss_last, "rss_growth_mib": rss_last - rss_first, "rss_slope_mib_per_hour": rss_per_hour}),
        );
    }

    // Exactly once.
    let (posted, accepted, once, dup, unseen, seen_ids) = {
        let sent = shared.sent.lock().unwrap();
        let mut per_key: HashMap<&str, (usize, i64)> = HashMap::new();
        let mut seen_ids: HashSet<i64> = HashSet::new();
        for s in sent.iter() {
            let e = per_key.entry(s.key.as_str()).or_default();
            e.0 += 1;
            e.1 = e.1.max(s.send_count);
            seen_ids.insert(s.tg_message_id);
        }
        let replies = shared.replies.lock().unwrap();
        let accepted: Vec<Uuid> = replies.iter().filter_map(|r| r.id).collect();
        let (mut once, mut dup, mut unseen) = (0usize, 0usize, Vec::new());
        for id in &accepted {
            match per_key.get(id.to_string().as_str()) {
                Some((1, c)) if *c <= 1 => once += 1,
                Some(_) => dup += 1,
                None => unseen.push(*id),
            }
        }
        (replies.len(), accepted, once, dup, unseen, seen_ids)
    };
    // A send between a listing and its reset is not in any listing: the
    // database says whether it went (its Telegram id, unseen by the bench).
    let rows: Vec<(Uuid, String, Option<i64>)> =
        sqlx::query_as("SELECT id, status, tg_message_id FROM messages WHERE id = ANY($1)")
            .bind(&unseen)
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let in_reset_window = rows
        .iter()
        .filter(|r| r.1 == "sent" && r.2.is_some_and(|t| !seen_ids.contains(&t)))
        .count();
    let still_queued = rows
        .iter()
        .filter(|r| matches!(r.1.as_str(), "queued" | "sending" | "retrying"))
        .count();
    let lost = unseen.len() - in_reset_window - still_queued;
    let injected: Vec<(i64, i64)> = shared
        .inbound
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.ok)
        .map(|r| (r.chat, r.tg_message_id))
        .collect();
    let (mut in_once, mut in_dup, mut in_lost) = (0usize, 0usize, 0usize);
    for k in &injected {
        match stored.get(k) {
            Some((_, _, 1)) => in_once += 1,
            Some(_) => in_dup += 1,
            None => in_lost += 1,
        }
    }
    let closed = shared.closed.lock().unwrap().clone();
    let errors = shared.errors.lock().unwrap().clone();
    println!();
    println!(
        "replies: {posted} posted, {} accepted; delivered exactly once {once}, sent between a listing and its reset (in the database as sent, not timed) {in_reset_window}, duplicated {dup}, lost {lost}, still queued when the drain ended {still_queued}",
        accepted.len()
    );
    println!(
        "drain after the load: {drain_s:.1} s (the backlog the load left; a system that keeps up drains in seconds)"
    );
    println!(
        "inbound: {} injected; stored exactly once {in_once}, more than once {in_dup}, not stored {in_lost}",
        injected.len()
    );
    println!(
        "sockets: {} frames read, {} closed before the end{}; request errors {}{}",
        shared.frames_read.load(Ordering::Relaxed),
        closed.len(),
        closed
            .first()
            .map(|c| format!(" (first: {c})"))
            .unwrap_or_default(),
        errors.len(),
        errors
            .first()
            .map(|c| format!(" (first: {c})"))
            .unwrap_or_default(),
    );
    let exactly_once =
        dup == 0 && lost == 0 && in_dup == 0 && in_lost == 0 && accepted.len() == posted;
    let kept_up = still_queued == 0 && drain_s < KEPT_UP_DRAIN_S;
    println!(
        "verdict: memory {}; exactly once {}; kept up {}",
        if flagged_any {
            "GROWS (see above)"
        } else {
            "flat"
        },
        if exactly_once { "yes" } else { "NO" },
        if kept_up {
            "yes".to_owned()
        } else {
            format!("NO (drained in {drain_s:.0} s, {still_queued} still queued)")
        }
    );
    env.cleanup().await;
    json!({
        "at": Utc::now(),
        "minutes": args.minutes,
        "warmup_minutes": args.warmup_minutes,
        "seconds_per_minute": spm,
        "replies_per_sec": args.replies_per_sec,
        "inbound_per_sec": args.inbound_per_sec,
        "sockets": args.sockets,
        "timed_sockets": timed,
        "perm_changes_per_min": args.perm_changes_per_min,
        "chats": args.chats,
        "system": "two API instances, two each of relay, tg-delivery, inbound; one tg-adapter (sandbox), one authz-fanout",
        "minute_by_minute": table,
        "rss_samples": samples.iter().zip(&anon_samples).map(|((at, r), (_, a))| json!({"at_s": at, "rss_kib": r, "anon_kib": a})).collect::<Vec<_>>(),
        "processes": procs.iter().map(|p| p.0).collect::<Vec<_>>(),
        "memory": {"measure": "private (RssAnon); resident beside it", "bound": format!("{:.0}% or {GROWTH_MIB} MiB, whichever is larger", GROWTH_FRACTION * 100.0), "flagged": flagged_any, "per_process": memory},
        "replies": {"posted": posted, "accepted": accepted.len(), "exactly_once": once, "in_reset_window": in_reset_window, "duplicated": dup, "lost": lost, "still_queued": still_queued},
        "drain_s": drain_s,
        "kept_up": kept_up,
        "inbound": {"injected": injected.len(), "exactly_once": in_once, "duplicated": in_dup, "lost": in_lost},
        "sockets_closed_early": closed.len(),
        "request_errors": errors.len(),
        "exactly_once": exactly_once,
    })
}

/// An authenticated socket of `user`, its token minted at the user's
/// current `perm_version`; a socket refused at sign-in (the version moved
/// under it) is tried again, a few times.
async fn open_socket(
    api: &str,
    keys: &api::auth::jwt::Keys,
    user: Uuid,
    pool: &sqlx::PgPool,
) -> Socket {
    let mut last = None;
    for _ in 0..5 {
        let pv: i64 = sqlx::query_scalar("SELECT perm_version FROM users WHERE id = $1")
            .bind(user)
            .fetch_one(pool)
            .await
            .unwrap();
        let mut ws = Ws::open(api).await;
        ws.send(json!({"type": "auth", "token": keys.issue(user, pv).unwrap()}))
            .await;
        loop {
            match ws.next(Duration::from_secs(10)).await {
                Heard::Frame(f) if f["type"] == "ep.update" => return ws.into_inner(),
                Heard::Frame(_) => {}
                other => {
                    last = Some(other);
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("socket of {user} not signed in: {last:?}");
}

/// One listing of the sandbox's log, then a reset.
async fn collect(http: &fastprep_tests::http::Client, adapter: &str, shared: &Shared) {
    let (status, body) = http
        .sandbox(adapter, Method::GET, "/sandbox/sent", None)
        .await;
    if !status.is_success() {
        shared
            .errors
            .lock()
            .unwrap()
            .push(format!("sandbox sent: {status}"));
        return;
    }
    let _ = http
        .sandbox(adapter, Method::POST, "/sandbox/reset", None)
        .await;
    let mut out = shared.sent.lock().unwrap();
    for m in body["messages"].as_array().into_iter().flatten() {
        let Ok(received_at) = serde_json::from_value::<DateTime<Utc>>(m["received_at"].clone())
        else {
            continue;
        };
        out.push(SentRec {
            key: m["idempotency_key"].as_str().unwrap_or_default().to_owned(),
            tg_message_id: m["tg_message_id"].as_i64().unwrap_or_default(),
            received_at,
            send_count: m["send_count"].as_i64().unwrap_or(1),
        });
    }
}

fn print_minute(
    m: usize,
    args: &Args,
    mm: &Minute,
    rss: Option<&Vec<u64>>,
    procs: &[(&str, Started)],
) {
    let label = if (m as u64) < args.warmup_minutes {
        format!("warm-up {}/{}", m + 1, args.warmup_minutes)
    } else {
        format!(
            "minute {}/{}",
            m as u64 + 1 - args.warmup_minutes,
            args.minutes
        )
    };
    let (a, b, n) = stats(mm.replies.clone());
    println!(
        "[{label}] replies   p50 {} ms, p99 {} ms; posted {}, delivered {n}, errors {}",
        fmt_ms(a),
        fmt_ms(b),
        mm.replies_posted,
        mm.replies_errors
    );
    let (a, b, n) = stats(mm.inbound.clone());
    println!(
        "[{label}] inbound   p50 {} ms, p99 {} ms; injected {}, stored {n}",
        fmt_ms(a),
        fmt_ms(b),
        mm.inbound_injected
    );
    let (a, b, n) = stats(mm.frames_in.clone());
    let (c, d, k) = stats(mm.frames_out.clone());
    println!(
        "[{label}] frame     inbound→frame p50 {} ms, p99 {} ms ({n} frames); reply POST→frame p50 {} ms, p99 {} ms ({k} frames)",
        fmt_ms(a),
        fmt_ms(b),
        fmt_ms(c),
        fmt_ms(d)
    );
    let (a, b, n) = stats(mm.perms.clone());
    println!(
        "[{label}] perm      p50 {} ms, p99 {} ms; changes {}, ep.update on both sockets {n}",
        fmt_ms(a),
        fmt_ms(b),
        mm.perms_made
    );
    let rss = rss
        .map(|r| {
            procs
                .iter()
                .zip(r)
                .map(|((n, _), k)| format!("{n} {:.1}", mib(*k)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "-".into());
    println!("[{label}] rss MiB   {rss}");
}
