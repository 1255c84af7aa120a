//! `fastprep-consumers <relay|tg-delivery|inbound|authz-fanout|alerts|all>`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    consumers::cli::main().await
}
