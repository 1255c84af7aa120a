//! The API's RabbitMQ link, used for the health check (and, later, the
//! realtime queue). Reconnects lazily.

use std::time::Duration;

use lapin::Connection;
use tokio::sync::Mutex;

pub struct Broker {
    url: String,
    conn: Mutex<Option<Connection>>,
}

impl Broker {
    pub fn new(url: String) -> Self {
        Self {
            url,
            conn: Mutex::new(None),
        }
    }

    /// Ok when a live connection exists or a new one can be opened.
    pub async fn check(&self) -> Result<(), lapin::Error> {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_some_and(|c| c.status().connected()) {
            return Ok(());
        }
        let conn = tokio::time::timeout(
            Duration::from_secs(2),
            broker_config::connection::connect(&self.url, "fastprep-api"),
        )
        .await
        .map_err(|_| lapin::Error::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
        *guard = Some(conn);
        Ok(())
    }
}
