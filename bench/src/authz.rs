//! `fastprep-bench authz`: (a) the permission check from the cache, in
//! process; (b) `GET /api/auth/me/ep` under wrk at 50 connections beside
//! nginx (one worker) serving a 2-byte file, alternating rounds; (c) fan-out
//! propagation, admin role change → `authz.user.updated` on Redis for every
//! holder, over many changes.

use std::{
    collections::HashMap,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fastprep_tests::{
    TestEnv,
    accounts::{OPERATOR_ROLE, USER_PASSWORD},
    free_port,
};
use fred::{
    interfaces::{ClientLike, EventInterface, PubsubInterface},
    prelude::{Builder, Config as RedisConfig},
};
use serde_json::{Value, json};

use super::{ms, percentile};

pub struct Args {
    pub checks: usize,
    pub wrk_seconds: u64,
    pub rounds: usize,
    pub changes: usize,
    pub holders: usize,
}

fn micros(sorted: &[f64]) -> Value {
    json!({
        "p50_us": percentile(sorted, 0.50),
        "p99_us": percentile(sorted, 0.99),
        "p999_us": percentile(sorted, 0.999),
        "max_us": sorted.last().copied().unwrap_or(f64::NAN),
    })
}

/// (a) The PEP's decision for a cached user, timed call by call.
async fn check_latency(env: &TestEnv, token: &str, n: usize) -> Value {
    let mut vars = env.base_env();
    // The API keeps uploads somewhere; this state serves none.
    vars.insert(
        "DATA_DIR".into(),
        env.dir.join("bench-api-data").display().to_string(),
    );
    let config = api::Config::from_env(&platform::Env::from_pairs(vars)).unwrap();
    let meter = opentelemetry::global::meter("bench");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let tasks = platform::supervisor::Supervisor::new(shutdown.clone());
    let state = api::state(&config, &meter, &tasks).await.unwrap();
    let claims = state.keys.verify(token).expect("token verifies");
    // Let the invalidation listener subscribe and the first ticks arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..10_000 {
        api::authz::pep::principal(&state, &claims).await.unwrap();
    }
    let mut check = Vec::with_capacity(n);
    let mut full = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let p = api::authz::pep::principal(&state, &claims).await.unwrap();
        let allowed = p.has(api::authz::Perm::InboxReply);
        check.push(t.elapsed().as_nanos() as f64 / 1000.0);
        assert!(allowed);
        let t = Instant::now();
        let p = api::authz::pep::authenticate(&state, token).await.unwrap();
        full.push(t.elapsed().as_nanos() as f64 / 1000.0);
        assert!(p.has(api::authz::Perm::InboxReply));
    }
    // For scale: one read of the Redis tier, and opening its sealed entry
    // (the HMAC check every Redis-tier hit pays).
    let mut redis = Vec::with_capacity(n / 10);
    let mut raw = None;
    for _ in 0..n / 10 {
        let t = Instant::now();
        let (entry, _) = platform::authz_redis::Scripts::new(env.redis_keys())
            .read(&state.redis, claims.sub)
            .await
            .unwrap();
        redis.push(t.elapsed().as_nanos() as f64 / 1000.0);
        raw = entry.or(raw);
    }
    let raw = raw.expect("the user's entry is in Redis");
    let key = api::authz::EntryKey::derive(&config.jwt_secret);
    let mut seal = Vec::with_capacity(n / 10);
    for _ in 0..n / 10 {
        let t = Instant::now();
        let ep = api::authz::Ep::from_json(claims.sub, &raw, &key);
        seal.push(t.elapsed().as_nanos() as f64 / 1000.0);
        assert!(ep.is_ok(), "the cached entry's seal verifies");
    }
    shutdown.cancel();
    for v in [&mut check, &mut full, &mut redis, &mut seal] {
        v.sort_by(f64::total_cmp);
    }
    json!({
        "calls": n,
        "check_cached": micros(&check),
        "check_with_jwt_verification": micros(&full),
        "redis_tier_read": micros(&redis),
        "redis_entry_seal_opened": micros(&seal),
    })
}

/// Runs wrk; returns (requests/s, p99 ms).
pub fn wrk(url: &str, seconds: u64, token: Option<&str>) -> (f64, f64) {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c50", &format!("-d{seconds}s"), "--latency"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw errors from {url}:\n{text}"
    );
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("wrk output:\n{text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| parse_wrk_duration(v.trim()))
        .unwrap_or(f64::NAN);
    (rps, p99)
}

fn parse_wrk_duration(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

/// nginx with one worker serving a 2-byte file from `dir` (made here);
/// returns its URL and child. The reference of every bench that compares
/// an HTTP path with a static server.
pub(crate) fn start_nginx(dir: &std::path::Path) -> (String, std::process::Child) {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(dir.join("www/ok"), "ok").unwrap();
    let port = free_port();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
           server {{ listen 127.0.0.1:{port}; location / {{ root {d}/www; }} }} }}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let nginx = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists() || *p == "nginx")
        .unwrap();
    let child = Command::new(nginx)
        .args([
            "-p",
            &dir.display().to_string(),
            "-c",
            &dir.join("nginx.conf").display().to_string(),
        ])
        .spawn()
        .expect("nginx (apt-get install nginx-light)");
    (format!("http://127.0.0.1:{port}/ok"), child)
}

pub async fn run(args: Args) -> Value {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&[]).await;
    env.start_consumer("relay", None, &[]).await;
    env.start_consumer("authz-fanout", None, &[]).await;
    let admin = env.admin_session(&api.url).await.access;
    env.create_user(&api.url, &admin, "bench-op@fastprep.test", &[OPERATOR_ROLE])
        .await;
    let op = env
        .sign_in(&api.url, "bench-op@fastprep.test", USER_PASSWORD)
        .await;

    // (a)
    println!(
        "(a) permission check from cache, {} calls in process",
        args.checks
    );
    let check = check_latency(&env, &op.access, args.checks).await;
    println!(
        "    cached check p50 {:.2} µs, p99 {:.2} µs (with HS256 verification: p50 {:.2} µs, p99 {:.2} µs; a Redis-tier read alone: p50 {:.1} µs, p99 {:.1} µs)",
        check["check_cached"]["p50_us"].as_f64().unwrap(),
        check["check_cached"]["p99_us"].as_f64().unwrap(),
        check["check_with_jwt_verification"]["p50_us"]
            .as_f64()
            .unwrap(),
        check["check_with_jwt_verification"]["p99_us"]
            .as_f64()
            .unwrap(),
        check["redis_tier_read"]["p50_us"].as_f64().unwrap(),
        check["redis_tier_read"]["p99_us"].as_f64().unwrap(),
    );
    println!(
        "    a Redis entry's seal opened (HMAC-SHA256 check, paid on each Redis-tier hit): p50 {:.2} µs, p99 {:.2} µs",
        check["redis_entry_seal_opened"]["p50_us"].as_f64().unwrap(),
        check["redis_entry_seal_opened"]["p99_us"].as_f64().unwrap(),
    );

    // (b)
    let (nginx_url, mut nginx) = start_nginx(&env.dir.join("nginx"));
    env.wait_http(&nginx_url).await;
    let ep_url = format!("{}/api/auth/me/ep", api.url);
    wrk(&ep_url, 2, Some(&op.access));
    wrk(&nginx_url, 2, None);
    let (mut api_rounds, mut nginx_rounds) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let n = wrk(&nginx_url, args.wrk_seconds, None);
        let a = wrk(&ep_url, args.wrk_seconds, Some(&op.access));
        println!(
            "(b) round {round}: nginx {:.0} req/s (p99 {:.2} ms), /api/auth/me/ep {:.0} req/s (p99 {:.2} ms)",
            n.0, n.1, a.0, a.1
        );
        nginx_rounds.push(n);
        api_rounds.push(a);
    }
    let _ = nginx.kill();
    let _ = nginx.wait();
    let median = |v: &mut Vec<(f64, f64)>| {
        v.sort_by(|x, y| x.0.total_cmp(&y.0));
        v[v.len() / 2]
    };
    let (api_m, nginx_m) = (median(&mut api_rounds), median(&mut nginx_rounds));
    println!(
        "    median: /api/auth/me/ep {:.0} req/s = {:.1}% of nginx's {:.0} req/s; p99 {:.2} ms",
        api_m.0,
        100.0 * api_m.0 / nginx_m.0,
        nginx_m.0,
        api_m.1
    );

    // (c)
    let role = env
        .create_role(&api.url, &admin, "bench-fanout", &["inbox.read_all"])
        .await;
    let mut holders = Vec::new();
    for i in 0..args.holders {
        holders.push(
            env.create_user(
                &api.url,
                &admin,
                &format!("holder{i}@fastprep.test"),
                &[&role],
            )
            .await,
        );
    }
    let sub = Builder::from_config(RedisConfig::from_url(&env.services.redis).unwrap())
        .build_subscriber_client()
        .unwrap();
    let mut rx = sub.message_rx();
    sub.init().await.unwrap();
    sub.subscribe(env.redis_keys().channel()).await.unwrap();
    let seen: Arc<Mutex<Vec<(String, i64, Instant)>>> = Arc::default();
    let collector = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(m) = rx.recv().await {
                let at = Instant::now();
                let Some(text) = m.value.as_string() else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if let (Some(u), Some(pv)) = (v["userId"].as_str(), v["permVersion"].as_i64()) {
                    seen.lock().unwrap().push((u.to_owned(), pv, at));
                }
            }
        })
    };
    println!(
        "(c) fan-out: {} role changes, {} holders each",
        args.changes, args.holders
    );
    let sets = [
        vec!["inbox.read_all"],
        vec!["inbox.read_all", "attachments.read"],
    ];
    let mut changes = Vec::with_capacity(args.changes);
    for i in 0..args.changes {
        let t0 = Instant::now();
        env.set_role_permissions(&api.url, &admin, &role, &sets[i % 2])
            .await;
        let answered = t0.elapsed();
        let versions: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
            "SELECT id::text, perm_version FROM users WHERE id = ANY($1::uuid[])",
        )
        .bind(&holders)
        .fetch_all(&env.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
        changes.push((t0, answered, versions));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = seen.lock().unwrap().clone();
    let (mut first, mut consumer, mut answered) = (Vec::new(), Vec::new(), Vec::new());
    let mut missing = 0;
    for (t0, took, versions) in &changes {
        answered.push(took.as_secs_f64() * 1000.0);
        for (user, v) in versions {
            let arrivals: Vec<f64> = seen
                .iter()
                .filter(|(u, pv, _)| u == user && pv == v)
                .map(|(_, _, at)| at.duration_since(*t0).as_secs_f64() * 1000.0)
                .collect();
            // Per holder and change: the API's invalidation before its
            // commit, its announcement after it, then authz-fanout's.
            match arrivals.as_slice() {
                [api_side, _, fanout, ..] => {
                    first.push(*api_side);
                    consumer.push(*fanout);
                }
                [api_side, ..] => {
                    first.push(*api_side);
                    missing += 1;
                }
                [] => missing += 2,
            }
        }
    }
    collector.abort();
    for v in [&mut first, &mut consumer, &mut answered] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "    request sent → first authz.user.updated per holder (the API, before its commit): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&first, 0.5),
        percentile(&first, 0.99)
    );
    println!(
        "    request sent → authz-fanout's publish per holder (outbox → relay → RabbitMQ → consumer): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&consumer, 0.5),
        percentile(&consumer, 0.99)
    );
    println!(
        "    admin's request answered (commit + invalidation + cache lease): p50 {:.1} ms, p99 {:.1} ms; messages missing: {missing}",
        percentile(&answered, 0.5),
        percentile(&answered, 0.99)
    );
    env.cleanup().await;
    json!({
        "check": check,
        "ep_endpoint": {
            "connections": 50,
            "seconds_per_round": args.wrk_seconds,
            "api_rounds": api_rounds.iter().map(|r| json!({"rps": r.0, "p99_ms": r.1})).collect::<Vec<_>>(),
            "nginx_rounds": nginx_rounds.iter().map(|r| json!({"rps": r.0, "p99_ms": r.1})).collect::<Vec<_>>(),
            "api_median_rps": api_m.0,
            "api_median_p99_ms": api_m.1,
            "nginx_median_rps": nginx_m.0,
            "ratio": api_m.0 / nginx_m.0,
        },
        "fanout": {
            "changes": args.changes,
            "holders": args.holders,
            "first_invalidation": ms(&first),
            "authz_fanout_consumer": ms(&consumer),
            "admin_request": ms(&answered),
            "missing": missing,
        },
    })
}
