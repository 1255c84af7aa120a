//! Connecting to RabbitMQ, with back-off while the broker is unreachable.
//!
//! `AMQP_URL` may list the nodes of a cluster, comma-separated. Each attempt
//! tries them in turn, starting after the node this process used last, so a
//! process whose node went away lands on a surviving one.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use lapin::{Connection, ConnectionProperties, types::LongString};
use tokio_util::sync::CancellationToken;

/// The node this process tries first next time (an index into the list).
static NEXT_NODE: AtomicUsize = AtomicUsize::new(0);

/// The broker addresses of an `AMQP_URL`: one URL, or several separated by
/// commas (a comma in a password is written `%2C`).
pub fn addresses(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// The vhost of an AMQP URL (`/` when it names none); of the first node when
/// it lists a cluster's (they share their vhosts).
pub fn vhost(amqp_url: &str) -> String {
    let first = addresses(amqp_url).first().copied().unwrap_or_default();
    url::Url::parse(first)
        .ok()
        .map(|u| u.path().trim_start_matches('/').to_owned())
        .filter(|p| !p.is_empty())
        .map(|p| {
            url::form_urlencoded::parse(format!("v={p}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or(p)
        })
        .unwrap_or_else(|| "/".to_owned())
}

/// Checks an `AMQP_URL` at start-up: at least one node, each an `amqp://`
/// or `amqps://` URL. The reason never repeats the value (it holds the
/// password).
pub fn check_urls(urls: &str) -> Result<(), String> {
    let nodes = addresses(urls);
    if nodes.is_empty() {
        return Err("names no broker".into());
    }
    for (i, node) in nodes.iter().enumerate() {
        if node.parse::<lapin::uri::AMQPUri>().is_err() {
            return Err(format!(
                "node {} of {} is not an amqp:// or amqps:// URL",
                i + 1,
                nodes.len()
            ));
        }
    }
    Ok(())
}

/// `AMQP_URL` from `env`: required, and refused at start-up with a clear
/// error when it names no usable broker (see [`check_urls`]).
pub fn amqp_url(env: &platform::Env) -> Result<String, platform::ConfigError> {
    let urls: String = env.required("AMQP_URL")?;
    check_urls(&urls).map_err(|reason| platform::ConfigError::Invalid {
        name: "AMQP_URL".into(),
        reason,
    })?;
    Ok(urls)
}

/// The order to try `n` nodes in, starting at `first`.
fn rotation(n: usize, first: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |i| (first + i) % n)
}

/// The largest frame a connection proposes when its URL names none
/// (`?frame_max=`). lapin keeps a receive and a send buffer of 32 frames
/// each per connection, and traffic touches them page by page, so the
/// broker's default of 128 KiB grows every connection by 8 MiB over its
/// first minutes; 32 KiB bounds it at 2 MiB. Our events are far smaller; a
/// larger body is split into several frames.
pub const FRAME_MAX: u32 = 32 * 1024;

/// A node's URL as lapin takes it, with [`FRAME_MAX`] unless it names a
/// frame size of its own.
fn node_uri(node: &str) -> Result<lapin::uri::AMQPUri, lapin::Error> {
    let mut uri: lapin::uri::AMQPUri = node.parse().map_err(|e: String| {
        lapin::Error::from(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    })?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Ok(uri)
}

/// Connects once, to the first node of the list that answers.
pub async fn connect(urls: &str, name: &str) -> Result<Connection, lapin::Error> {
    let nodes = addresses(urls);
    let mut last_error = None;
    for i in rotation(nodes.len(), NEXT_NODE.load(Ordering::Relaxed)) {
        let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
        let connected = async { Connection::connect_uri(node_uri(nodes[i])?, props).await }.await;
        match connected {
            Ok(conn) => {
                // After this node is lost, the next attempt starts elsewhere.
                NEXT_NODE.store(i + 1, Ordering::Relaxed);
                if nodes.len() > 1 {
                    tracing::info!(node = i + 1, of = nodes.len(), "connected to RabbitMQ");
                }
                return Ok(conn);
            }
            Err(e) => {
                if nodes.len() > 1 {
                    tracing::warn!(node = i + 1, of = nodes.len(), error = %e, "RabbitMQ node unreachable; trying the next");
                }
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "AMQP_URL names no broker",
        ))
    }))
}

/// Connects, retrying with exponential back-off (capped at 5 s) until it
/// succeeds or `shutdown` is cancelled (then `None`).
pub async fn connect_with_retry(
    url: &str,
    name: &str,
    shutdown: &CancellationToken,
) -> Option<Connection> {
    let mut delay = Duration::from_millis(100);
    loop {
        match connect(url, name).await {
            Ok(conn) => return Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "RabbitMQ unreachable");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vhost_of_an_amqp_url() {
        assert_eq!(vhost("amqp://u:p@h:5672/%2f"), "/");
        assert_eq!(vhost("amqp://u:p@h:5672"), "/");
        assert_eq!(vhost("amqp://u:p@h:5672/"), "/");
        assert_eq!(
            vhost("amqp://u:p@h:5672/fastprep_test_1"),
            "fastprep_test_1"
        );
        assert_eq!(
            vhost("amqp://u:p@a:5681/shared, amqp://u:p@b:5682/shared"),
            "shared"
        );
    }

    #[test]
    fn a_connection_proposes_small_frames_unless_its_url_names_a_size() {
        let uri = node_uri("amqp://u:p@h:5672/v").unwrap();
        assert_eq!(uri.query.frame_max, Some(FRAME_MAX));
        assert_eq!(uri.vhost, "v");
        let own = node_uri("amqp://u:p@h:5672/v?frame_max=131072&heartbeat=10").unwrap();
        assert_eq!(own.query.frame_max, Some(131_072));
        assert_eq!(own.query.heartbeat, Some(10));
        assert!(node_uri("http://h/").is_err());
    }

    #[test]
    fn a_list_of_nodes_is_tried_in_turn_from_the_next_one() {
        assert_eq!(
            addresses("amqp://a:5672/%2f, amqp://b:5672/%2f,,amqp://c/%2f"),
            vec!["amqp://a:5672/%2f", "amqp://b:5672/%2f", "amqp://c/%2f"]
        );
        assert_eq!(addresses("amqp://only/%2f"), vec!["amqp://only/%2f"]);
        assert_eq!(rotation(3, 1).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(rotation(3, 3).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(rotation(1, 7).collect::<Vec<_>>(), vec![0]);
        assert_eq!(rotation(0, 2).count(), 0);
    }

    #[test]
    fn a_bad_list_is_named_without_its_password() {
        assert!(check_urls("amqp://u:p@a:5672/%2f,amqp://b/%2f").is_ok());
        assert_eq!(check_urls(" , ").unwrap_err(), "names no broker");
        let bad = check_urls("amqp://u:secret@a/%2f,http://u:secret@b/").unwrap_err();
        assert_eq!(bad, "node 2 of 2 is not an amqp:// or amqps:// URL");
    }
}
