//! The API's RabbitMQ link for the health check. Reconnects lazily. (The
//! realtime hub keeps its own connection, whose loss it handles itself.)

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

    /// A connection of its own for an ops action (a peek, a replay), closed
    /// when dropped by its caller.
    pub async fn open(&self, name: &str) -> Result<Connection, lapin::Error> {
        broker_config::connection::connect(&self.url, name).await
    }

    /// Ok when the broker answers a round trip (opening and closing a
    /// channel) on the kept connection, reconnecting once if it is gone.
    pub async fn check(&self) -> Result<(), lapin::Error> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref()
            && conn.status().connected()
            && let Ok(channel) = conn.create_channel().await
        {
            let _ = channel.close(200, "health".into()).await;
            return Ok(());
        }
        *guard = None;
        let conn = broker_config::connection::connect(&self.url, "fastprep-api").await?;
        let channel = conn.create_channel().await?;
        let _ = channel.close(200, "health".into()).await;
        *guard = Some(conn);
        Ok(())
    }
}
