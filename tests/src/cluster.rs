//! The three-node RabbitMQ cluster of `scripts/cluster`, for the suites and
//! the benchmarks that need one.

use std::{path::PathBuf, process::Command};

/// Runs `scripts/cluster <args>`; returns what it printed.
pub fn script(args: &[&str]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster");
    let out = Command::new(path)
        .args(args)
        .output()
        .expect("run scripts/cluster");
    assert!(
        out.status.success(),
        "scripts/cluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `rabbitmqctl <args>` on node 1.
fn ctl(args: &[&str]) {
    let host = String::from_utf8(Command::new("hostname").arg("-s").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    let out = Command::new("rabbitmqctl")
        .args(["-q", "-n", &format!("fastprep-1@{host}")])
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the cluster (if it is not up) with a vhost of its own named
/// `vhost`; returns the `AMQP_URL` list of its three nodes for that vhost.
pub fn start_with_vhost(vhost: &str) -> String {
    script(&["start"]);
    ctl(&["add_vhost", vhost]);
    ctl(&["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]);
    script(&["urls"]).replace("%2f", vhost)
}

/// Drops the vhost and takes the cluster down, so no node idles beside
/// later benchmarks.
pub fn finish(vhost: &str) {
    ctl(&["delete_vhost", vhost]);
    script(&["down"]);
}
