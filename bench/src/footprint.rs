//! `fastprep-bench footprint`: what ships, at rest. The size of every
//! binary the blueprint deploys; for each long-running process, the time
//! from `exec` to its health check passing and its resident memory once it
//! has idled, over several starts. Run it on the release build (the profile
//! the blueprint builds).

use std::time::{Duration, Instant};

use fastprep_tests::{TestEnv, free_port, process::bin_dir};
use serde_json::{Value, json};

use super::percentile;

pub struct Args {
    pub starts: usize,
    /// How long a process idles before its memory is read.
    pub idle: Duration,
}

/// The binaries `render.yaml` builds.
const BINARIES: [&str; 6] = [
    "fastprep-api",
    "fastprep-ops",
    "fastprep-migrate",
    "fastprep-broker",
    "fastprep-consumers",
    "fastprep-tg-adapter",
];

/// A long-running process: its binary and arguments, and whether its
/// health is the API's readiness (`/api/health` on `PORT`, which checks
/// PostgreSQL, Redis and RabbitMQ) or liveness on `METRICS_PORT`.
struct Process {
    name: &'static str,
    bin: &'static str,
    args: &'static [&'static str],
    api: bool,
}

const PROCESSES: [Process; 7] = [
    Process {
        name: "api",
        bin: "fastprep-api",
        args: &["serve"],
        api: true,
    },
    Process {
        name: "relay",
        bin: "fastprep-consumers",
        args: &["relay"],
        api: false,
    },
    Process {
        name: "tg-delivery",
        bin: "fastprep-consumers",
        args: &["tg-delivery"],
        api: false,
    },
    Process {
        name: "inbound",
        bin: "fastprep-consumers",
        args: &["inbound"],
        api: false,
    },
    Process {
        name: "authz-fanout",
        bin: "fastprep-consumers",
        args: &["authz-fanout"],
        api: false,
    },
    Process {
        name: "alerts",
        bin: "fastprep-consumers",
        args: &["alerts"],
        api: false,
    },
    Process {
        name: "tg-adapter",
        bin: "fastprep-tg-adapter",
        args: &[],
        api: false,
    },
];

fn mib(bytes: f64) -> f64 {
    bytes / 1024.0 / 1024.0
}

pub async fn run(args: Args) -> Value {
    let dir = bin_dir();
    println!("binaries in {}", dir.display());
    let mut sizes = serde_json::Map::new();
    println!("\n| binary | size |\n|---|---|");
    for bin in BINARIES {
        let bytes = std::fs::metadata(dir.join(bin))
            .unwrap_or_else(|e| panic!("{bin}: {e}; build it first"))
            .len();
        println!("| `{bin}` | {:.1} MiB |", mib(bytes as f64));
        sizes.insert(bin.to_owned(), json!(bytes));
    }

    let mut env = TestEnv::new().await;
    // The consumers that call the adapter, and the API's ops pages, find one.
    let adapter = env.start_adapter(&[]).await;
    let client = reqwest::Client::new();
    let mut processes = serde_json::Map::new();
    println!(
        "\n{} starts each; start = from exec to the first 2xx of its health check; RSS {} s after that\n",
        args.starts,
        args.idle.as_secs()
    );
    println!("| process | start to healthy p50 / max | idle RSS p50 / max |\n|---|---|---|");
    for p in &PROCESSES {
        let mut starts = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..args.starts {
            let port = free_port();
            let metrics = free_port();
            let data = env.dir.join(format!("footprint-{}-{port}", p.name));
            let mut vars = vec![
                ("PORT", port.to_string()),
                ("METRICS_PORT", metrics.to_string()),
                ("DATA_DIR", data.display().to_string()),
                // Attachments in the local store need the origin their links start with.
                ("ATTACHMENTS_URL_BASE", format!("http://127.0.0.1:{port}")),
                ("TG_ADAPTER_URL", adapter.url.clone()),
                ("RUST_LOG", "warn".to_owned()),
            ];
            if p.name == "tg-adapter" {
                vars.push(("TG_BACKEND", "sandbox".to_owned()));
            }
            let health = if p.api {
                format!("http://127.0.0.1:{port}/api/health")
            } else {
                format!("http://127.0.0.1:{metrics}/health")
            };
            let started = Instant::now();
            let idx = env.spawn(p.bin, p.args, &vars);
            loop {
                if let Ok(r) = client.get(&health).send().await
                    && r.status().is_success()
                {
                    break;
                }
                if let Some(status) = env.proc(idx).exited() {
                    panic!(
                        "{} exited ({status}) before it was healthy\n{}",
                        p.name,
                        env.proc(idx).log_tail()
                    );
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{} was not healthy within 60 s\n{}",
                    p.name,
                    env.proc(idx).log_tail()
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            starts.push(started.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(args.idle).await;
            rss.push(env.proc(idx).rss_kib().unwrap_or_default() as f64 / 1024.0);
            env.proc(idx).terminate(Duration::from_secs(10));
        }
        starts.sort_by(f64::total_cmp);
        rss.sort_by(f64::total_cmp);
        println!(
            "| {} | {:.0} / {:.0} ms | {:.1} / {:.1} MiB |",
            p.name,
            percentile(&starts, 0.5),
            starts.last().copied().unwrap_or(f64::NAN),
            percentile(&rss, 0.5),
            rss.last().copied().unwrap_or(f64::NAN),
        );
        processes.insert(
            p.name.to_owned(),
            json!({
                "start_to_healthy_ms": {"p50": percentile(&starts, 0.5), "max": starts.last(), "samples": starts},
                "idle_rss_mib": {"p50": percentile(&rss, 0.5), "max": rss.last(), "samples": rss},
            }),
        );
    }
    json!({
        "binaries_bytes": sizes,
        "processes": processes,
        "starts": args.starts,
        "idle_seconds": args.idle.as_secs(),
    })
}
