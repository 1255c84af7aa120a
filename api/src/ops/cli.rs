//! `fastprep-ops`: on-call's command line (ADR 0015). Every command prints a
//! table for people, or JSON with `--json` for scripts; it exits 0 when it
//! did what it was asked, 1 when it failed (or, for `topology diff`, found a
//! difference), 2 on a usage error.
//!
//! It reads the services' own variables: `DATABASE_URL`, `AMQP_URL`,
//! `REDIS_URL` and `JWT_SECRET` (only `authz flush`), and
//! `RABBITMQ_MANAGEMENT_URL` (only `topology diff`; by default AMQP_URL's
//! host on port 15672 with its credentials).

use std::io::{IsTerminal, Write};

use broker_config::{dlq::ReplayFilter, topology};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};
use sea_orm::DatabaseConnection;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{audit::Target, authz::change::AuthzChange};

#[derive(Parser)]
#[command(
    name = "fastprep-ops",
    about = "FastPrep on-call tooling: dead letters, outbox, broker, caches"
)]
struct Cli {
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Dead-letter queues.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// The transactional outbox.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Replies that failed at Telegram.
    #[command(subcommand)]
    Messages(MessagesCommand),
    /// The RabbitMQ topology.
    #[command(subcommand)]
    Topology(TopologyCommand),
    /// The effective-permission caches.
    #[command(subcommand)]
    Authz(AuthzCommand),
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Each DLQ with its depth, oldest message age and top reasons.
    List,
    /// The first messages of a DLQ, leaving it as it was.
    Peek {
        queue: String,
        #[arg(short, default_value_t = 10)]
        n: usize,
    },
    /// Sends dead letters back to the queue each came from.
    Replay {
        queue: String,
        #[command(flatten)]
        filter: ReplayArgs,
    },
    /// Drops every message of a DLQ.
    Purge {
        queue: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
struct ReplayArgs {
    /// Replay at most this many.
    #[arg(long)]
    limit: Option<usize>,
    /// Only events of this type (e.g. message.outgoing.v1).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Only those that died since: an RFC 3339 time or an age such as 2h.
    #[arg(long, value_parser = parse_since)]
    since: Option<DateTime<Utc>>,
    /// Count what would be replayed; replay nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Counts by status, the oldest due row, failed rows by type and error.
    Stats,
    /// Puts failed rows back to pending (the runbook's SQL, scoped).
    RetryFailed {
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only rows failed since: an RFC 3339 time or an age such as 2h.
        #[arg(long, value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
        /// Only this row (repeatable).
        #[arg(long = "id")]
        ids: Vec<i64>,
    },
}

#[derive(Subcommand)]
enum MessagesCommand {
    /// Sends again the replies that failed at Telegram.
    RetryFailed {
        #[arg(long)]
        conversation: Option<Uuid>,
        /// Only replies failed since: an RFC 3339 time or an age such as 2h.
        #[arg(long, value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
    },
    /// After a database restore: hands out again the replies the restored
    /// database holds unfinished (queued, sending or retrying, their event
    /// already published), so the relay publishes them in order and no chat
    /// stays held. The adapter answers those it already sent without a
    /// second send.
    ResumeUnfinished {
        #[arg(long)]
        conversation: Option<Uuid>,
        /// List what would be handed out; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum TopologyCommand {
    /// Declares the topology on the broker (idempotent).
    Apply,
    /// Prints the topology in RabbitMQ's definitions format.
    Export,
    /// Compares the live broker with the topology; exits 1 on a difference.
    Diff,
}

#[derive(Subcommand)]
enum AuthzCommand {
    /// Invalidates cached permissions everywhere: bumps the users'
    /// perm_version and announces it (all users, or one).
    Flush {
        #[arg(long)]
        user: Option<Uuid>,
        /// After a database restore: first drop every version floor. The
        /// floors sit above the restored versions, and until they expire
        /// (2 h) every permission lookup would go to the database.
        #[arg(long, conflicts_with = "user")]
        after_restore: bool,
    },
}

fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let age = humantime::parse_duration(s)
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor an age such as 2h"))?;
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .ok_or_else(|| format!("{s:?} reaches too far back"))
}

/// Runs the command line; the process's exit code.
pub async fn main() -> i32 {
    platform::install_crypto_provider();
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(code) => code,
        Err(e) => {
            if cli.json {
                println!("{}", json!({"error": format!("{e:#}")}));
            } else {
                eprintln!("error: {e:#}");
            }
            1
        }
    }
}

struct Out {
    json: bool,
}

impl Out {
    fn print<T: Serialize>(&self, value: &T, table: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            println!("{}", table());
        }
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    t.to_string()
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn age(secs: Option<i64>) -> String {
    secs.map_or_else(
        || "-".to_owned(),
        |s| {
            humantime::format_duration(std::time::Duration::from_secs(s.unsigned_abs())).to_string()
        },
    )
}

/// Wakes the relay after this command wrote outbox rows (it polls anyway).
async fn wake_relay(db: &DatabaseConnection) {
    schema::outbox::notify_relay(db.get_postgres_connection_pool()).await;
}

async fn db() -> anyhow::Result<DatabaseConnection> {
    let env = platform::Env::process();
    let url: String = env.required("DATABASE_URL")?;
    let pool = schema::pool::connect(&url, 2).await?;
    Ok(schema::pool::orm(&pool))
}

async fn broker() -> anyhow::Result<lapin::Connection> {
    let url = broker_config::connection::amqp_url(&platform::Env::process())?;
    Ok(broker_config::connection::connect(&url, "fastprep-ops").await?)
}

async fn run(cli: &Cli) -> anyhow::Result<i32> {
    let out = Out { json: cli.json };
    match &cli.command {
        Command::Dlq(cmd) => dlq(cmd, &out).await,
        Command::Outbox(cmd) => outbox(cmd, &out).await,
        Command::Messages(MessagesCommand::RetryFailed {
            conversation,
            since,
        }) => retry_messages(*conversation, *since, &out).await,
        Command::Messages(MessagesCommand::ResumeUnfinished {
            conversation,
            dry_run,
        }) => resume_unfinished(*conversation, *dry_run, &out).await,
        Command::Topology(cmd) => topology_cmd(cmd, &out).await,
        Command::Authz(AuthzCommand::Flush {
            user,
            after_restore,
        }) => authz_flush(*user, *after_restore, &out).await,
    }
}

async fn dlq(cmd: &DlqCommand, out: &Out) -> anyhow::Result<i32> {
    if let DlqCommand::Peek { queue, .. }
    | DlqCommand::Replay { queue, .. }
    | DlqCommand::Purge { queue, .. } = cmd
    {
        // Named here, before anything connects: the error lists the DLQs.
        broker_config::dlq::known(queue)?;
    }
    let conn = broker().await?;
    // Each DLQ operation holds its queue's lock in PostgreSQL, and audits.
    let db = db().await?;
    let code = match cmd {
        DlqCommand::List => {
            let list = super::dlq::list(&db, &conn).await?;
            out.print(&list, || {
                table(
                    &["queue", "depth", "oldest", "top reasons (first 100)"],
                    list.iter()
                        .map(|s| {
                            vec![
                                s.queue.clone(),
                                match (s.declared, s.busy) {
                                    (false, _) => "not declared".to_owned(),
                                    (true, true) => {
                                        format!("{} (busy: a peek, replay or purge runs)", s.depth)
                                    }
                                    (true, false) => s.depth.to_string(),
                                },
                                age(s.oldest_age_seconds),
                                s.top_reasons
                                    .iter()
                                    .map(|r| format!("{} ×{}", r.reason, r.count))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            ]
                        })
                        .collect(),
                )
            });
            0
        }
        DlqCommand::Peek { queue, n } => {
            let letters = super::dlq::peek(&db, &conn, queue, *n).await?;
            out.print(&letters, || {
                if letters.is_empty() {
                    return format!("{queue} is empty");
                }
                let mut s = table(
                    &[
                        "#",
                        "event",
                        "type",
                        "from",
                        "reason",
                        "died",
                        "deliveries",
                        "replays",
                    ],
                    letters
                        .iter()
                        .map(|l| {
                            vec![
                                l.position.to_string(),
                                or_dash(l.message_id.as_deref()),
                                or_dash(l.event_type.as_deref()),
                                or_dash(l.source_queue.as_deref()),
                                l.cause(),
                                or_dash(l.died_at.map(|t| t.to_rfc3339())),
                                l.delivery_count.to_string(),
                                l.replays.to_string(),
                            ]
                        })
                        .collect(),
                );
                for l in &letters {
                    s.push_str(&format!(
                        "\n#{} payload {}\n   headers {}\n   x-death {}",
                        l.position, l.payload, l.headers, l.x_death
                    ));
                }
                s
            });
            0
        }
        DlqCommand::Replay { queue, filter } => {
            let filter = ReplayFilter {
                limit: filter.limit,
                event_type: filter.event_type.clone(),
                since: filter.since,
                dry_run: filter.dry_run,
            };
            let bar = (!out.json && std::io::stderr().is_terminal()).then(|| {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {msg} [{bar:40}] {pos}/{len} examined ({per_sec}, {eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar
            });
            let summary = super::dlq::replay(
                &db,
                super::dlq::hold(&db, queue).await?,
                &conn,
                None,
                queue,
                &filter,
                |p| {
                    if let Some(bar) = &bar {
                        bar.set_length(u64::from(p.depth_at_start).max(p.examined as u64));
                        bar.set_position(p.examined as u64);
                        bar.set_message(format!("{} replayed", p.replayed));
                    }
                },
            )
            .await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let summary = summary?;
            out.print(&summary, || {
                let mut lines = vec![format!(
                    "{} {} of {} dead letters in {} (examined {})",
                    if summary.dry_run { "would replay" } else { "replayed" },
                    summary.replayed,
                    summary.depth_at_start,
                    summary.queue,
                    summary.examined,
                )];
                for (queue, n) in &summary.by_queue {
                    lines.push(format!("  → {queue}: {n}"));
                }
                lines.push(format!(
                    "left in place: {} filtered out, {} replayed {} times already, {} of unknown origin, {} dead-lettered during the replay",
                    summary.filtered_out,
                    summary.over_replay_cap,
                    broker_config::dlq::MAX_REPLAYS,
                    summary.unknown_source,
                    summary.arrived_during
                ));
                lines.push(format!("{} messages are in {} now", summary.remaining, summary.queue));
                lines.join("\n")
            });
            0
        }
        DlqCommand::Purge { queue, yes } => {
            broker_config::dlq::known(queue)?;
            let depth = broker_config::dlq::depth(&conn, queue).await?;
            if !yes {
                if !std::io::stdin().is_terminal() {
                    anyhow::bail!(
                        "{queue} holds {depth} messages; purging them needs --yes when not asked at a terminal"
                    );
                }
                eprint!("{queue} holds {depth} messages. Type the queue's name to drop them all: ");
                let _ = std::io::stderr().flush();
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if answer.trim() != queue {
                    eprintln!("not confirmed; nothing was dropped");
                    let _ = conn.close(200, "bye".into()).await;
                    return Ok(1);
                }
            }
            let purged = super::dlq::purge(&db, &conn, None, queue).await?;
            out.print(&json!({"queue": queue, "purged": purged}), || {
                format!("purged {purged} messages from {queue}")
            });
            0
        }
    };
    let _ = conn.close(200, "bye".into()).await;
    Ok(code)
}

async fn outbox(cmd: &OutboxCommand, out: &Out) -> anyhow::Result<i32> {
    let db = db().await?;
    match cmd {
        OutboxCommand::Stats => {
            let stats = super::outbox::stats(&db).await?;
            out.print(&stats, || {
                let mut s = table(
                    &["status", "rows"],
                    stats
                        .counts
                        .iter()
                        .map(|(k, v)| vec![k.clone(), v.to_string()])
                        .collect(),
                );
                s.push_str(&format!(
                    "\npending due now: {} (oldest due for {}); scheduled later: {}\n",
                    stats.pending_due,
                    age(stats.oldest_due_age_seconds),
                    stats.pending_scheduled
                ));
                s.push_str(&table(
                    &["failed event type", "error", "rows", "last failed"],
                    stats
                        .failed
                        .iter()
                        .map(|f| {
                            vec![
                                f.event_type.clone(),
                                or_dash(f.last_error.as_deref()),
                                f.count.to_string(),
                                or_dash(f.last_failed_at.map(|t| t.to_rfc3339())),
                            ]
                        })
                        .collect(),
                ));
                s
            });
        }
        OutboxCommand::RetryFailed {
            event_type,
            since,
            ids,
        } => {
            let scope = super::outbox::RetryScope {
                event_type: event_type.clone(),
                since: *since,
                ids: ids.clone(),
            };
            let retried = super::outbox::retry_failed_audited(&db, None, &scope).await?;
            if retried > 0 {
                wake_relay(&db).await;
            }
            out.print(&json!({"retried": retried}), || {
                format!("{retried} failed outbox rows put back to pending")
            });
        }
    }
    Ok(0)
}

async fn retry_messages(
    conversation: Option<Uuid>,
    since: Option<DateTime<Utc>>,
    out: &Out,
) -> anyhow::Result<i32> {
    let db = db().await?;
    let failed = crate::inbox::messages::failed_replies(&db, conversation, since).await?;
    let mut retried = Vec::new();
    let mut refused: Vec<Value> = Vec::new();
    let mut errors: Vec<Value> = Vec::new();
    for (conversation, message) in failed {
        match crate::inbox::messages::retry(
            &db,
            None,
            conversation,
            message,
            crate::inbox::InboxScope::All,
        )
        .await
        {
            Ok(_) => retried.push(message),
            // Retried meanwhile by someone else: not failed any more.
            Err(e @ crate::error::ApiError::Conflict { .. }) => {
                refused.push(json!({"message_id": message, "error": e.to_string()}));
            }
            Err(e) => {
                errors.push(json!({"message_id": message, "error": e.to_string()}));
            }
        }
    }
    if !retried.is_empty() {
        wake_relay(&db).await;
    }
    let result = json!({"retried": retried.len(), "message_ids": retried, "skipped": refused, "errors": errors});
    out.print(&result, || {
        let mut s = format!(
            "{} failed replies queued again; {} skipped (no longer failed)",
            retried.len(),
            refused.len()
        );
        for e in &errors {
            s.push_str(&format!("\nerror: {e}"));
        }
        s
    });
    Ok(i32::from(!errors.is_empty()))
}

async fn resume_unfinished(
    conversation: Option<Uuid>,
    dry_run: bool,
    out: &Out,
) -> anyhow::Result<i32> {
    let db = db().await?;
    let scope = super::outbox::ResumeScope {
        conversation,
        dry_run,
    };
    let resumed = super::outbox::resume_unfinished(&db, None, &scope).await?;
    if !resumed.message_ids.is_empty() && !dry_run {
        wake_relay(&db).await;
    }
    out.print(&resumed, || {
        let n = resumed.message_ids.len();
        let mut s = if dry_run {
            format!("would hand out {n} unfinished replies again (nothing changed)")
        } else {
            format!("{n} unfinished replies handed out again; the relay publishes them in order")
        };
        for id in &resumed.message_ids {
            s.push_str(&format!("\n  {id}"));
        }
        s
    });
    Ok(0)
}

fn management_url(env: &platform::Env, amqp_url: &str) -> anyhow::Result<url::Url> {
    if let Some(url) = env.optional::<String>("RABBITMQ_MANAGEMENT_URL")? {
        return Ok(url::Url::parse(&url)?);
    }
    let first = amqp_url.split(',').next().unwrap_or_default();
    let amqp = url::Url::parse(first)?;
    let mut url = url::Url::parse(&format!(
        "http://{}:15672/",
        amqp.host_str().unwrap_or("127.0.0.1")
    ))?;
    let _ = url.set_username(amqp.username());
    let _ = url.set_password(amqp.password());
    Ok(url)
}

async fn topology_cmd(cmd: &TopologyCommand, out: &Out) -> anyhow::Result<i32> {
    let t = topology::topology();
    match cmd {
        TopologyCommand::Export => {
            print!("{}", topology::definitions_json(&t));
            Ok(0)
        }
        TopologyCommand::Apply => {
            let conn = broker().await?;
            let channel = conn.create_channel().await?;
            topology::declare(&channel, &t).await?;
            let _ = conn.close(200, "bye".into()).await;
            out.print(
                &json!({"applied": true, "queues": t.queues.len(), "bindings": t.bindings.len()}),
                || {
                    format!(
                        "topology applied: {} exchanges, {} queues, {} bindings",
                        t.exchanges.len(),
                        t.queues.len(),
                        t.bindings.len()
                    )
                },
            );
            Ok(0)
        }
        TopologyCommand::Diff => {
            let env = platform::Env::process();
            let amqp_url = broker_config::connection::amqp_url(&env)?;
            let vhost = broker_config::connection::vhost(&amqp_url);
            let mut base = management_url(&env, &amqp_url)?;
            let (user, password) = (
                base.username().to_owned(),
                base.password().map(str::to_owned),
            );
            let _ = base.set_username("");
            let _ = base.set_password(None);
            let url = base.join(&format!(
                "api/definitions/{}",
                url::form_urlencoded::byte_serialize(vhost.as_bytes()).collect::<String>()
            ))?;
            let live: Value = reqwest::Client::new()
                .get(url.clone())
                .basic_auth(user, password)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let differences = topology::diff(&live, &t);
            out.print(&differences, || {
                if differences.is_empty() {
                    format!("the broker ({vhost}) matches definitions.json")
                } else {
                    table(
                        &["difference", "object", "detail"],
                        differences
                            .iter()
                            .map(|d| vec![d.kind.to_owned(), d.object.clone(), d.detail.clone()])
                            .collect(),
                    )
                }
            });
            Ok(i32::from(!differences.is_empty()))
        }
    }
}

async fn authz_flush(user: Option<Uuid>, after_restore: bool, out: &Out) -> anyhow::Result<i32> {
    let env = platform::Env::process();
    let db = db().await?;
    let redis_url: String = env.required("REDIS_URL")?;
    let secret = env.strong_secret("JWT_SECRET", 32)?;
    let amqp_url = broker_config::connection::amqp_url(&env)?;
    let redis = fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&redis_url)?)
        .build()?;
    fred::prelude::ClientLike::init(&redis).await?;
    let keys = platform::authz_redis::Keys::for_vhost(&broker_config::connection::vhost(&amqp_url));
    let floors_dropped = if after_restore {
        drop_floors(&redis, &keys).await?
    } else {
        0
    };
    let authorizer = crate::authz::cache::Authorizer::new(
        db.clone(),
        redis.clone(),
        crate::authz::EntryKey::derive(&secret),
        keys,
        crate::authz::cache::CacheSettings::default(),
        &opentelemetry::global::meter("fastprep-ops"),
    );
    let mut change = AuthzChange::begin(&db, None).await?;
    let users = match user {
        Some(u) => vec![u],
        None => {
            use sea_orm::{EntityTrait, QuerySelect};
            schema::entities::users::Entity::find()
                .select_only()
                .column(schema::entities::users::Column::Id)
                .into_tuple()
                .all(change.conn())
                .await?
        }
    };
    let mut versions = Vec::new();
    for u in &users {
        versions.push(json!({"user_id": u, "perm_version": change.bump_user(*u).await?}));
    }
    change
        .audit(
            "authz.flush",
            Target::new(
                "user",
                user.map_or_else(|| "*".to_owned(), |u| u.to_string()),
            ),
            None,
            Some(json!({"users": users.len(), "floors_dropped": floors_dropped})),
            None,
        )
        .await?;
    change
        .commit(&authorizer, &schema::RelayWake::none())
        .await?;
    wake_relay(&db).await;
    let _ = fred::prelude::ClientLike::quit(&redis).await;
    out.print(
        &json!({"flushed": users.len(), "floors_dropped": floors_dropped, "users": versions}),
        || {
            let mut s = format!(
                "permissions of {} user(s) invalidated on every instance",
                users.len()
            );
            if after_restore {
                s = format!("{floors_dropped} version floors dropped; {s}");
            }
            s
        },
    );
    Ok(0)
}

/// Deletes every version floor of the deployment (`SCAN`, then `DEL` by
/// hundreds); the number deleted.
async fn drop_floors(
    redis: &fred::prelude::Client,
    keys: &platform::authz_redis::Keys,
) -> anyhow::Result<i64> {
    use fred::interfaces::KeysInterface;
    use futures::TryStreamExt;
    let found: Vec<fred::types::Key> = redis
        .scan_buffered(keys.floors_pattern(), Some(500), None)
        .try_collect()
        .await?;
    let mut dropped = 0;
    for chunk in found.chunks(100) {
        let n: i64 = redis.del(chunk.to_vec()).await?;
        dropped += n;
    }
    Ok(dropped)
}
