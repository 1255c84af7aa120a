//! The long-lived tasks of a process, watched. A task that ends while the
//! process is meant to be running (it returned, or it panicked) is a fault:
//! the supervisor logs it and cancels the process's shutdown token, so the
//! process stops, and stops with an error, rather than serving on with a
//! part of it dead. On shutdown the process waits for its tasks to drain.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[derive(Clone)]
pub struct Supervisor {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// The first task that ended before shutdown, and how.
    fault: Arc<Mutex<Option<String>>>,
}

impl Supervisor {
    /// Watches tasks of the process whose shutdown is `shutdown`.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            shutdown,
            fault: Arc::new(Mutex::new(None)),
        }
    }

    /// The token that stops the process (cancelled by a fault too).
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Spawns `task`, which is meant to run until shutdown.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.watch(name, async move {
            task.await;
            Ok(())
        });
    }

    /// Spawns `task`, which is meant to run until shutdown; an error it
    /// returns, even at shutdown, is a fault.
    pub fn spawn_fallible<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.watch(name, task);
    }

    fn watch<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let inner = tokio::spawn(task);
        let me = self.clone();
        self.tracker.spawn(async move {
            let ended = match inner.await {
                Ok(Ok(())) if me.shutdown.is_cancelled() => return,
                Ok(Ok(())) => "returned".to_owned(),
                Ok(Err(e)) => format!("failed: {e:#}"),
                Err(e) if e.is_panic() => "panicked".to_owned(),
                Err(e) => format!("was cancelled ({e})"),
            };
            tracing::error!(task = name, "task {ended}; stopping the process");
            let mut fault = me.fault.lock().unwrap_or_else(|p| p.into_inner());
            fault.get_or_insert_with(|| format!("task {name} {ended}"));
            me.shutdown.cancel();
        });
    }

    /// After shutdown: waits for the tasks to end (at most `grace`, when
    /// given), then says whether the process stopped because a task failed.
    pub async fn finish(&self, grace: Option<Duration>) -> anyhow::Result<()> {
        self.tracker.close();
        match grace {
            None => self.tracker.wait().await,
            Some(grace) => {
                if tokio::time::timeout(grace, self.tracker.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        ?grace,
                        "tasks still running at the end of the shutdown grace"
                    );
                }
            }
        }
        let fault = self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match fault {
            Some(fault) => Err(anyhow::anyhow!("{fault}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_stops_the_process_with_an_error() {
        let supervisor = Supervisor::new(CancellationToken::new());
        let stop = supervisor.shutdown().clone();
        supervisor.spawn("steady", async move { stop.cancelled().await });
        supervisor.spawn("fragile", async { panic!("boom") });
        tokio::time::timeout(Duration::from_secs(5), supervisor.shutdown().cancelled())
            .await
            .expect("the fault cancels the shutdown token");
        let finished = supervisor.finish(Some(Duration::from_secs(5))).await;
        assert_eq!(finished.unwrap_err().to_string(), "task fragile panicked");
    }

    #[tokio::test]
    async fn an_error_is_a_fault_even_at_shutdown() {
        let supervisor = Supervisor::new(CancellationToken::new());
        let stop = supervisor.shutdown().clone();
        supervisor.spawn_fallible("closing", async move {
            stop.cancelled().await;
            anyhow::bail!("could not flush")
        });
        supervisor.shutdown().cancel();
        let finished = supervisor.finish(None).await;
        assert_eq!(
            finished.unwrap_err().to_string(),
            "task closing failed: could not flush"
        );
    }

    #[tokio::test]
    async fn tasks_that_end_at_shutdown_are_no_fault() {
        let supervisor = Supervisor::new(CancellationToken::new());
        let stop = supervisor.shutdown().clone();
        supervisor.spawn("steady", async move { stop.cancelled().await });
        supervisor.shutdown().cancel();
        supervisor
            .finish(Some(Duration::from_secs(5)))
            .await
            .unwrap();
    }
}
