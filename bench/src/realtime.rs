//! `fastprep-bench realtime`: two API instances with the relay, `sockets`
//! authenticated WebSockets split between them.
//!
//! (a) Memory per idle socket: each instance's resident memory before and
//!     after its sockets opened and authenticated.
//! (b) Fan-out: `rate` events per second for `seconds` (a note written with
//!     its outbox row in one transaction); latency from the commit returning
//!     to the frame read by each socket, every socket receiving every event.
//! (c) `ep.update`: `changes` permission changes of a user with one socket
//!     on each instance; latency from the admin's request sent (so the
//!     commit comes after it: an upper bound) to the frame on both sockets.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use broker_config::{Envelope, Event, events::MessageNoteAdded};
use fastprep_tests::{TestEnv, accounts::USER_PASSWORD, ws::Ws};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::{ms, percentile};

/// Who reads each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Audience {
    /// Its assignee's socket and the supervisors' (one socket in twenty).
    Scoped,
    /// Every socket.
    Broadcast,
}

impl Audience {
    pub fn name(self) -> &'static str {
        match self {
            Audience::Scoped => "scoped",
            Audience::Broadcast => "broadcast",
        }
    }
}

pub struct Args {
    pub audience: Audience,
    pub sockets: usize,
    pub rate: u64,
    pub seconds: u64,
    pub changes: usize,
}

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

/// What one socket heard: (message id or perm version, when).
#[derive(Default)]
struct Heard {
    messages: Vec<(Uuid, Instant)>,
    eps: Vec<(i64, Instant)>,
    /// Text frames read, timed or not.
    frames: usize,
    closed: Option<String>,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An authenticated socket (its `ep.update` read), as the bare stream.
async fn open(api: &str, token: &str) -> Socket {
    Ws::connect(api, token).await.0.into_inner()
}

/// Reads until `stop`. A timed socket notes what arrived when; the others
/// only read and count (the client shares the machine's two cores with
/// everything it measures, so it parses no more than it needs).
fn listen(
    mut ws: Socket,
    mut stop: watch::Receiver<bool>,
    timed: bool,
) -> tokio::task::JoinHandle<Heard> {
    tokio::spawn(async move {
        let mut heard = Heard::default();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                m = ws.next() => match m {
                    Some(Ok(Message::Text(t))) => {
                        let at = Instant::now();
                        heard.frames += 1;
                        if !timed {
                            continue;
                        }
                        let Ok(f) = serde_json::from_str::<FrameHead>(&t) else { continue };
                        match f.kind.as_str() {
                            "message.created" => {
                                if let Some(id) = f.data.id {
                                    heard.messages.push((id, at));
                                }
                            }
                            "ep.update" => {
                                if let Some(v) = f.data.perm_version {
                                    heard.eps.push((v, at));
                                }
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(Message::Close(c))) => {
                        heard.closed = Some(format!("{c:?}"));
                        break;
                    }
                    Some(Ok(_)) => {}
                    _ => {
                        heard.closed = Some("connection ended".into());
                        break;
                    }
                },
            }
        }
        let _ = ws.close(None).await;
        heard
    })
}

pub async fn run(args: Args) -> Value {
    let mut env = TestEnv::new().await;
    // A socket whose token is stale is held until a fresh token arrives;
    // the changes phase keeps its user stale for its whole length.
    let knobs = [("WS_REAUTH_GRACE", "10m".to_owned())];
    // Accounts are made on an instance of their own, stopped before the
    // measurements: password hashing (argon2, 19 MiB a hash) would leave
    // allocator caches behind in the instances whose memory is measured.
    let setup = env.start_api(&knobs).await;
    let admin = env.admin_session(&setup.url).await;
    println!(
        "realtime benchmark: {} sockets over two API instances, {} events/s for {} s, {} permission changes",
        args.sockets, args.rate, args.seconds, args.changes
    );
    // The socket holders, written straight to the database with tokens
    // minted with the deployment's secret (signing in a thousand users
    // would be a thousand argon2 verifications, which is not what this
    // measures). `scoped`: a team of operators, each with the conversations
    // assigned to them, and supervisors reading everything (one in twenty):
    // an event reaches its assignee and the supervisors. `broadcast`: every
    // holder reads everything and every event reaches every socket.
    let supervisors = match args.audience {
        Audience::Scoped => (args.sockets / 20).max(1),
        Audience::Broadcast => args.sockets,
    };
    let read_all = env
        .create_role(
            &setup.url,
            &admin.access,
            "bench-supervisors",
            &["inbox.read_all"],
        )
        .await;
    let assigned = env
        .create_role(
            &setup.url,
            &admin.access,
            "bench-operators",
            &["inbox.read_assigned", "inbox.reply"],
        )
        .await;
    let keys = api::auth::jwt::Keys::new(
        &secrecy::SecretString::from(fastprep_tests::env::JWT_SECRET),
        Duration::from_secs(300),
    )
    .unwrap();
    let holders: Vec<Uuid> = (0..args.sockets).map(|_| Uuid::now_v7()).collect();
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1::uuid")
        .bind(&admin.user_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let roles: Vec<Uuid> = (0..args.sockets)
        .map(|i| {
            if i < supervisors {
                &read_all
            } else {
                &assigned
            }
        })
        .map(|r| r.parse().unwrap())
        .collect();
    insert_holders(&env.pool, "holder", &holders, &hash, &roles).await;
    // One conversation per operator, assigned to them (under `broadcast`,
    // a hundred unassigned ones).
    let conversations: Vec<(Uuid, Option<Uuid>)> = if supervisors < args.sockets {
        holders[supervisors..]
            .iter()
            .map(|h| (Uuid::now_v7(), Some(*h)))
            .collect()
    } else {
        (0..100).map(|_| (Uuid::now_v7(), None)).collect()
    };
    sqlx::query(
        "INSERT INTO conversations (id, tg_chat_id, title, assignee_id)
         SELECT c.id, 500000 + c.n, 'bench ' || c.n, c.a
         FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS c(id, a, n)",
    )
    .bind(conversations.iter().map(|c| c.0).collect::<Vec<_>>())
    .bind(conversations.iter().map(|c| c.1).collect::<Vec<_>>())
    .execute(&env.pool)
    .await
    .unwrap();
    let tokens: Vec<String> = holders.iter().map(|h| keys.issue(*h, 1).unwrap()).collect();
    let ep_role = env
        .create_role(&setup.url, &admin.access, "bench-ep", &["inbox.read_all"])
        .await;
    let ep_user = env
        .create_user(
            &setup.url,
            &admin.access,
            "bench-ep@fastprep.test",
            &[&ep_role],
        )
        .await;
    let ep_token = env
        .sign_in(&setup.url, "bench-ep@fastprep.test", USER_PASSWORD)
        .await
        .access;
    env.proc(setup.idx).terminate(Duration::from_secs(10));
    let one = env.start_api(&knobs).await;
    let two = env.start_api(&knobs).await;
    env.start_consumer("relay", None, &[("RELAY_POLL_INTERVAL", "1s".into())])
        .await;

    // (a) After a warm-up (sockets opened and closed, so one-off
    // allocations of the upgrade path are made), the lowest of a few
    // readings.
    let mut warm = Vec::new();
    for i in 0..100 {
        let api = if i % 2 == 0 { &one.url } else { &two.url };
        warm.push(open(api, &ep_token).await);
    }
    for mut ws in warm {
        let _ = ws.close(None).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut rss_before = [u64::MAX; 2];
    for _ in 0..5 {
        for (i, idx) in [one.idx, two.idx].into_iter().enumerate() {
            rss_before[i] = rss_before[i].min(env.proc(idx).rss_kib().unwrap_or(0));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut sockets = Vec::with_capacity(args.sockets);
    let opened = Instant::now();
    for (i, token) in tokens.iter().enumerate() {
        let api = if i % 2 == 0 { &one.url } else { &two.url };
        sockets.push(open(api, token).await);
    }
    let open_secs = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut rss_after = [0u64; 2];
    for _ in 0..5 {
        for (i, idx) in [one.idx, two.idx].into_iter().enumerate() {
            rss_after[i] = rss_after[i].max(env.proc(idx).rss_kib().unwrap_or(0));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let per_instance = args.sockets as f64 / 2.0;
    let per_socket: Vec<f64> = (0..2)
        .map(|i| (rss_after[i] as f64 - rss_before[i] as f64) / per_instance)
        .collect();
    println!(
        "(a) {} sockets opened and authenticated in {open_secs:.1} s; resident memory per idle socket: {:.1} KiB (instance 1: {} → {} KiB), {:.1} KiB (instance 2: {} → {} KiB)",
        args.sockets,
        per_socket[0],
        rss_before[0],
        rss_after[0],
        per_socket[1],
        rss_before[1],
        rss_after[1]
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    // Under `broadcast`, every fifth socket is timed (half on each
    // instance); under `scoped`, every socket.
    let listeners: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let timed = args.audience == Audience::Scoped || i % 5 == 0;
            listen(ws, stop_rx.clone(), timed)
        })
        .collect();

    // (b)
    let author: Uuid = admin.user_id.parse().unwrap();
    let mut rng = rand::rng();
    let total = (args.rate * args.seconds) as usize;
    let mut every = tokio::time::interval(Duration::from_micros(1_000_000 / args.rate.max(1)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    // Each event its own transaction, started on its tick whether or not the
    // previous commit has returned (a commit waits for its fsync).
    let mut writers = Vec::with_capacity(total);
    // The bench writes as a service does: it wakes the relay after each commit.
    let wake_tasks =
        platform::supervisor::Supervisor::new(tokio_util::sync::CancellationToken::new());
    let wake = schema::RelayWake::start(&env.pool, &wake_tasks);
    for i in 0..total {
        every.tick().await;
        let pool = env.pool.clone();
        let wake = wake.clone();
        let (conv, assignee) =
            conversations[rand::Rng::random_range(&mut rng, 0..conversations.len())];
        writers.push(tokio::spawn(async move {
            let id = Uuid::now_v7();
            let text = format!("bench note {i}: the SAT mock is on Saturday");
            let tx = schema::pool::orm(&pool).begin().await.unwrap();
            tx.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO messages (id, conversation_id, direction, kind, author_id, text, status)
                 VALUES ($1, $2, 'out', 'note', $3, $4, 'internal')",
                [id.into(), conv.into(), author.into(), text.clone().into()],
            ))
            .await
            .unwrap();
            let event = Envelope::new(Event::MessageNoteAdded(MessageNoteAdded {
                message_id: id,
                conversation_id: conv,
                author_id: author,
                preview: text,
                assignee_id: assignee,
                view: None,
            }));
            schema::enqueue(&tx, &event).await.unwrap();
            tx.commit().await.unwrap();
            wake.committed();
            (id, Instant::now(), assignee)
        }));
    }
    let mut committed: HashMap<Uuid, (Instant, Option<Uuid>)> = HashMap::with_capacity(total);
    for w in writers {
        let (id, at, assignee) = w.await.unwrap();
        committed.insert(id, (at, assignee));
    }
    let sent_rate = total as f64 / started.elapsed().as_secs_f64();

    // (c)
    let ep_sockets = [
        listen(open(&one.url, &ep_token).await, stop_rx.clone(), true),
        listen(open(&two.url, &ep_token).await, stop_rx.clone(), true),
    ];
    // Let the fan-out phase's last frames arrive first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sets = [
        vec!["inbox.read_all"],
        vec!["inbox.read_all", "attachments.read"],
    ];
    let mut changes = Vec::with_capacity(args.changes);
    for i in 0..args.changes {
        let t0 = Instant::now();
        env.set_role_permissions(&one.url, &admin.access, &ep_role, &sets[i % 2])
            .await;
        let answered = t0.elapsed();
        let version: i64 = sqlx::query_scalar("SELECT perm_version FROM users WHERE id = $1::uuid")
            .bind(&ep_user)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        changes.push((t0, answered, version));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let [a, b] = ep_sockets;
    let ep_heard = [a.await.unwrap(), b.await.unwrap()];
    let mut heard = Vec::with_capacity(listeners.len());
    for l in listeners {
        heard.push(l.await.unwrap());
    }

    // Fan-out figures.
    let mut fanout = Vec::with_capacity(total * heard.len());
    let mut missing = 0usize;
    let mut closed = 0usize;
    let mut timed = 0usize;
    let mut strays = 0usize;
    let mut expected_frames = 0usize;
    for (i, h) in heard.iter().enumerate() {
        if h.closed.is_some() {
            closed += 1;
        }
        let holder = holders[i];
        let expected = if i < supervisors {
            total
        } else {
            committed
                .values()
                .filter(|(_, a)| *a == Some(holder))
                .count()
        };
        expected_frames += expected;
        missing += expected.saturating_sub(h.frames);
        if h.messages.is_empty() {
            continue;
        }
        timed += 1;
        for (id, at) in &h.messages {
            match committed.get(id) {
                Some((t, a)) if i < supervisors || *a == Some(holder) => {
                    fanout.push(at.duration_since(*t).as_secs_f64() * 1000.0);
                }
                _ => strays += 1,
            }
        }
    }
    fanout.sort_by(f64::total_cmp);
    println!(
        "(b) fan-out ({}): {total} events at {sent_rate:.0}/s to {} sockets ({supervisors} reading everything, the rest their assigned conversations), {expected_frames} frames due, {} read; timed on {timed} sockets ({} frames): commit → frame p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; frames missing {missing}, frames a socket should not have had {strays}, sockets closed early {closed}",
        args.audience.name(),
        heard.len(),
        heard.iter().map(|h| h.frames).sum::<usize>(),
        fanout.len(),
        percentile(&fanout, 0.5),
        percentile(&fanout, 0.99),
        fanout.last().copied().unwrap_or(f64::NAN),
    );

    // ep.update figures: per change, when the frame was on both sockets.
    let (mut both, mut answered_ms) = (Vec::new(), Vec::new());
    let mut ep_missing = 0;
    for (t0, answered, version) in &changes {
        answered_ms.push(answered.as_secs_f64() * 1000.0);
        let arrivals: Vec<Option<f64>> = ep_heard
            .iter()
            .map(|h| {
                h.eps
                    .iter()
                    .find(|(v, _)| v == version)
                    .map(|(_, at)| at.duration_since(*t0).as_secs_f64() * 1000.0)
            })
            .collect();
        match (arrivals[0], arrivals[1]) {
            (Some(a), Some(b)) => both.push(a.max(b)),
            _ => ep_missing += 1,
        }
    }
    both.sort_by(f64::total_cmp);
    answered_ms.sort_by(f64::total_cmp);
    println!(
        "(c) ep.update: {} changes: admin request sent → frame on both instances' sockets p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; missing {ep_missing}; the admin's answer (which waits out the 100 ms memory lease) p50 {:.1} ms",
        changes.len(),
        percentile(&both, 0.5),
        percentile(&both, 0.99),
        both.last().copied().unwrap_or(f64::NAN),
        percentile(&answered_ms, 0.5),
    );
    env.cleanup().await;
    json!({
        "sockets": args.sockets,
        "memory_per_idle_socket_kib": per_socket,
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "fanout": {"audience": args.audience.name(), "supervisors": supervisors, "events": total, "rate": sent_rate, "frames_due": expected_frames, "timed_sockets": timed, "commit_to_frame": ms(&fanout), "missing": missing, "strays": strays, "closed_early": closed},
        "ep_update": {"changes": changes.len(), "request_to_frame_on_both": ms(&both), "missing": ep_missing, "admin_answer": ms(&answered_ms)},
    })
}

/// Inserts users `ids` (emails `<prefix>-<id>@fastprep.test`, all with
/// `password_hash`), each holding the role at the same index of `roles`, in
/// one statement: the many socket holders of the realtime and soak benches.
pub(crate) async fn insert_holders(
    pool: &sqlx::PgPool,
    prefix: &str,
    ids: &[Uuid],
    password_hash: &str,
    roles: &[Uuid],
) {
    sqlx::query(
        "WITH u AS (
           INSERT INTO users (id, email, display_name, password_hash)
           SELECT id, $4 || '-' || id || '@fastprep.test', 'Holder', $2 FROM unnest($1::uuid[]) AS id
           RETURNING id)
         INSERT INTO user_roles (user_id, role_id) SELECT * FROM unnest($1::uuid[], $3::uuid[])",
    )
    .bind(ids)
    .bind(password_hash)
    .bind(roles)
    .bind(prefix)
    .execute(pool)
    .await
    .unwrap();
}
