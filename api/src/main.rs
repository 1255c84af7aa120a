//! `fastprep-api [serve|create-admin]`.

// Every request allocates a little (headers, JSON, spans); glibc's malloc was
// a sixth of the API's CPU under load. Built with `no_thp`: with transparent
// huge pages, mimalloc's eagerly committed arena made 20 MiB resident at
// start, before the first request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    api::cli::main().await
}
