//! On-call's command line; see `api::ops::cli`.

#[tokio::main]
async fn main() {
    std::process::exit(api::ops::cli::main().await);
}
