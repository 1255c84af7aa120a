//! Traces across processes: every process exports its spans over OTLP to a
//! receiver of the test's own, and a reply and an inbound message each make
//! one trace tree that crosses every process on its way.

use std::{collections::HashSet, time::Duration};

use fastprep_tests::{
    TestEnv,
    otlp::{OtlpReceiver, Span},
};

/// Whether `spans` form one tree: one root, every parent present.
fn one_tree(spans: &[Span]) -> bool {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    spans.iter().filter(|s| s.parent_id.is_empty()).count() == 1
        && spans
            .iter()
            .all(|s| s.parent_id.is_empty() || ids.contains(s.parent_id.as_str()))
}

/// Checks `spans` form one tree: one root, every parent present.
fn assert_one_tree(what: &str, spans: &[Span]) {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<&Span> = spans.iter().filter(|s| s.parent_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "{what}: roots {roots:#?}\nall: {spans:#?}");
    for s in spans {
        assert!(
            s.parent_id.is_empty() || ids.contains(s.parent_id.as_str()),
            "{what}: {} ({}) has a parent that is not in the trace\nall: {spans:#?}",
            s.name,
            s.service
        );
    }
}

/// Waits until the trace holding `name` has spans of every service in
/// `services` and every name in `also`, and forms one tree (spans arrive in
/// batches, a child's sometimes before its parent's); a trace that never
/// does fails the test with every span seen.
async fn trace_through(
    otlp: &OtlpReceiver,
    name: &str,
    services: &[&str],
    also: &[&str],
) -> Vec<Span> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let trace = otlp.trace_of(name);
        let present: HashSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
        let named: HashSet<&str> = trace.iter().map(|s| s.name.as_str()).collect();
        if services.iter().all(|s| present.contains(s))
            && also.iter().all(|n| named.contains(n))
            && one_tree(&trace)
        {
            return trace;
        }
        if tokio::time::Instant::now() >= deadline {
            let all: Vec<String> = otlp
                .spans()
                .iter()
                .map(|s| {
                    format!(
                        "{} {} {} <- {} {}",
                        &s.trace_id[..8],
                        s.service,
                        s.name,
                        s.parent_id,
                        s.span_id
                    )
                })
                .collect();
            panic!(
                "no trace of {name} through {services:?} with {also:?}; this one: {trace:#?}\nevery span:\n{}",
                all.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_reply_and_an_inbound_message_each_make_one_trace_across_processes() {
    let mut env = TestEnv::new().await;
    let otlp = OtlpReceiver::start().await;
    env.set_for_all("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint);
    env.set_for_all("OTEL_BSP_SCHEDULE_DELAY", "100");
    let sys = env.start_system().await;

    // Inbound: adapter → inbound → relay → the API's realtime frame.
    env.inject(&sys.adapter, 4242, 1, "traced hello").await;
    let conv = env.conversation_for(&sys, 4242).await;
    let inbound = trace_through(
        &otlp,
        "POST /sandbox/inbound",
        &[
            "fastprep-tg-adapter",
            "fastprep-inbound",
            "fastprep-relay",
            "fastprep-api",
        ],
        &["inbound process", "message.received.v1 publish"],
    )
    .await;
    assert_one_tree("inbound", &inbound);
    let root = inbound.iter().find(|s| s.parent_id.is_empty()).unwrap();
    assert_eq!(
        (root.name.as_str(), root.service.as_str(), root.kind),
        ("POST /sandbox/inbound", "fastprep-tg-adapter", 2)
    );
    assert!(
        inbound
            .iter()
            .any(|s| s.service == "fastprep-api" && s.kind == 5 && s.name.ends_with("process")),
        "the realtime frame: {inbound:#?}"
    );

    // A reply: API request → outbox → relay → tg-delivery → adapter.
    let msg = env.reply(&sys, &conv, "traced reply", "trace-1").await;
    env.wait_status(msg["id"].as_str().unwrap(), "sent", Duration::from_secs(30))
        .await;
    let reply = trace_through(
        &otlp,
        "POST /api/conversations/{id}/messages",
        &[
            "fastprep-api",
            "fastprep-relay",
            "fastprep-tg-delivery",
            "fastprep-tg-adapter",
        ],
        &[
            "outbox create message.outgoing.v1",
            "message.outgoing.v1 publish",
            "tg-delivery process",
            "POST /v1/messages",
        ],
    )
    .await;
    assert_one_tree("reply", &reply);
    let root = reply.iter().find(|s| s.parent_id.is_empty()).unwrap();
    assert_eq!(
        (root.name.as_str(), root.service.as_str(), root.kind),
        ("POST /api/conversations/{id}/messages", "fastprep-api", 2)
    );
    // The adapter call is a client span in tg-delivery and a server span in
    // the adapter, the latter the child of the former.
    let client = reply
        .iter()
        .find(|s| s.service == "fastprep-tg-delivery" && s.kind == 3)
        .expect("the adapter call's client span");
    assert!(
        reply.iter().any(|s| s.service == "fastprep-tg-adapter"
            && s.kind == 2
            && s.parent_id == client.span_id),
        "{reply:#?}"
    );
    env.cleanup().await;
}
