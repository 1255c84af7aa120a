//! `fastprep-bench attachments`: (a) presigning under 50 connections: the
//! download link (`GET /api/attachments/{id}/url`, under wrk) and the
//! upload (`POST /api/attachments`, 50 users at once, since each may hold
//! 50 unused uploads); (b) a file from its upload to the sandbox Telegram
//! receiving it, at 1, 20 and 100 MiB, with the peak memory of the api,
//! tg-delivery and the adapter after each, on S3 (s3s-fs) and on the local
//! store.

use std::time::{Duration, Instant};

use fastprep_tests::{
    TestEnv,
    accounts::{OPERATOR_ROLE, USER_PASSWORD},
    system::Started,
};
use futures::{StreamExt, stream::FuturesUnordered};
use reqwest::Method;
use serde_json::{Value, json};
use storage::testing::S3sFs;

pub struct Args {
    pub wrk_seconds: u64,
    pub rounds: usize,
    pub uploaders: usize,
    pub uploads_each: usize,
}

const MIB: usize = 1024 * 1024;

fn s3_vars(s3: &S3sFs) -> Vec<(&'static str, String)> {
    vec![
        ("S3_ENDPOINT", s3.endpoint.to_string()),
        ("S3_BUCKET", s3.bucket.clone()),
        ("S3_ACCESS_KEY_ID", S3sFs::ACCESS_KEY.to_owned()),
        ("S3_SECRET_ACCESS_KEY", S3sFs::SECRET_KEY.to_owned()),
        ("S3_REGION", "us-east-1".to_owned()),
    ]
}

struct System {
    env: TestEnv,
    api: Started,
    delivery: Started,
    adapter: Started,
}

/// The API, relay, tg-delivery and the adapter on one store (`s3`, or the
/// local store without it).
async fn start(s3: Option<&S3sFs>) -> System {
    let mut env = TestEnv::new().await;
    let store = s3.map(s3_vars).unwrap_or_default();
    let adapter = env.start_adapter(&[]).await;
    // Room for the largest file measured.
    let mut api_env = store.clone();
    api_env.push(("ATTACHMENT_MAX_BYTES", (100 * MIB).to_string()));
    let api = env.start_api(&api_env).await;
    let mut delivery_env = store.clone();
    if s3.is_none() {
        delivery_env.push(("DATA_DIR", env.dir.join("api-data").display().to_string()));
        delivery_env.push(("ATTACHMENTS_URL_BASE", api.url.clone()));
    }
    // Files of 20 MiB take longer than a text to hand over.
    delivery_env.push(("TG_ADAPTER_TIMEOUT", "120s".to_owned()));
    env.start_consumer("relay", None, &[]).await;
    let delivery = env
        .start_consumer("tg-delivery", Some(&adapter), &delivery_env)
        .await;
    System {
        env,
        api,
        delivery,
        adapter,
    }
}

async fn upload(sys: &System, token: &str, name: &str, content_type: &str, size: usize) -> Value {
    let (s, body) = sys
        .env
        .http
        .call(
            Method::POST,
            &format!("{}/api/attachments", sys.api.url),
            Some(token),
            Some(json!({"filename": name, "content_type": content_type, "size_bytes": size})),
        )
        .await;
    assert!(s.is_success(), "upload: {s} {body}");
    body
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1)]
}

/// `POST /api/attachments` from `uploaders` users at once, `each` uploads
/// apiece: requests/s and p99 (ms).
async fn presign_uploads(sys: &System, admin: &str, uploaders: usize, each: usize) -> (f64, f64) {
    let mut tokens = Vec::with_capacity(uploaders);
    for i in 0..uploaders {
        let email = format!(
            "bench-up-{i}-{}@fastprep.test",
            uuid::Uuid::now_v7().simple()
        );
        sys.env
            .create_user(&sys.api.url, admin, &email, &[OPERATOR_ROLE])
            .await;
        tokens.push(
            sys.env
                .sign_in(&sys.api.url, &email, USER_PASSWORD)
                .await
                .access,
        );
    }
    let started = Instant::now();
    let mut runs: FuturesUnordered<_> = tokens
        .iter()
        .map(|token| async move {
            let mut took = Vec::with_capacity(each);
            for n in 0..each {
                let t = Instant::now();
                upload(sys, token, &format!("f{n}.pdf"), "application/pdf", 1000).await;
                took.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            took
        })
        .collect();
    let mut all = Vec::with_capacity(uploaders * each);
    while let Some(took) = runs.next().await {
        all.extend(took);
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    (rate, percentile(&all, 0.99))
}

fn peak_mib(env: &mut TestEnv, who: &Started) -> f64 {
    env.proc(who.idx).peak_rss_kib().unwrap_or(0) as f64 / 1024.0
}

/// A file of `size` bytes from the start of its upload to the sandbox
/// recording it: seconds.
async fn file_end_to_end(sys: &System, token: &str, conv: &str, chat: i64, size: usize) -> f64 {
    let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let started = Instant::now();
    let up = upload(sys, token, "big.pdf", "application/pdf", size).await;
    let put = reqwest::Client::new()
        .put(up["upload_url"].as_str().unwrap())
        .header("content-type", "application/pdf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "PUT: {}", put.status());
    let (s, reply) = sys
        .env
        .http
        .call(
            Method::POST,
            &format!("{}/api/conversations/{conv}/messages", sys.api.url),
            Some(token),
            Some(json!({"text": "", "attachment_ids": [up["id"]], "client_msg_id": uuid::Uuid::now_v7().to_string()})),
        )
        .await;
    assert!(s.is_success(), "reply: {s} {reply}");
    let key = reply["id"].as_str().unwrap().to_owned();
    fastprep_tests::wait_for("the file at the sandbox", Duration::from_secs(300), || {
        let key = key.clone();
        async move {
            let sent = sys.env.sent(&sys.adapter).await;
            sent["messages"]
                .as_array()?
                .iter()
                .any(|m| m["chat_id"] == chat && m["idempotency_key"] == key.as_str())
                .then_some(())
        }
    })
    .await;
    started.elapsed().as_secs_f64()
}

async fn one_store(args: &Args, s3: Option<&S3sFs>) -> Value {
    let store = if s3.is_some() { "s3" } else { "local" };
    let mut sys = start(s3).await;
    let admin = sys.env.admin_session(&sys.api.url).await.access;

    // (a) Presigning.
    let up = upload(&sys, &admin, "link.pdf", "application/pdf", 5).await;
    let link_url = format!(
        "{}/api/attachments/{}/url",
        sys.api.url,
        up["id"].as_str().unwrap()
    );
    crate::authz::wrk(&link_url, 2, Some(&admin));
    let mut links = Vec::new();
    for round in 1..=args.rounds {
        let (rps, p99) = crate::authz::wrk(&link_url, args.wrk_seconds, Some(&admin));
        println!(
            "[{store}] round {round}: GET /api/attachments/{{id}}/url, 50 connections: {rps:.0} req/s, p99 {p99:.2} ms"
        );
        links.push(json!({"per_sec": rps, "p99_ms": p99}));
    }
    let (rate, p99) = presign_uploads(&sys, &admin, args.uploaders, args.uploads_each).await;
    println!(
        "[{store}] POST /api/attachments, {} users at once, {} each: {rate:.0} req/s, p99 {p99:.2} ms",
        args.uploaders, args.uploads_each
    );

    // (b) Files end to end, smaller first: peak memory only grows.
    let conv = sys.env.insert_conversation(9090, None).await;
    let mut files = Vec::new();
    for mib in [1, 20, 100] {
        let secs = file_end_to_end(&sys, &admin, &conv, 9090, mib * MIB).await;
        let (api, delivery, adapter) = (
            peak_mib(&mut sys.env, &sys.api),
            peak_mib(&mut sys.env, &sys.delivery),
            peak_mib(&mut sys.env, &sys.adapter),
        );
        println!(
            "[{store}] {mib} MiB file, upload to sandbox: {secs:.2} s; peak RSS so far: api {api:.1} MiB, tg-delivery {delivery:.1} MiB, tg-adapter {adapter:.1} MiB"
        );
        files.push(json!({
            "mib": mib, "seconds": secs,
            "peak_rss_mib": {"api": api, "tg-delivery": delivery, "tg-adapter": adapter},
        }));
    }
    sys.env.cleanup().await;
    json!({
        "store": store,
        "download_link_rounds": links,
        "upload_presign": {"per_sec": rate, "p99_ms": p99, "users": args.uploaders, "each": args.uploads_each},
        "files": files,
    })
}

pub async fn run(args: Args) -> Value {
    println!(
        "attachments benchmark; binaries from {}",
        fastprep_tests::process::bin_dir().display()
    );
    let s3 = S3sFs::start().await;
    let on_s3 = one_store(&args, Some(&s3)).await;
    drop(s3);
    let local = one_store(&args, None).await;
    json!({"s3": on_s3, "local": local})
}
