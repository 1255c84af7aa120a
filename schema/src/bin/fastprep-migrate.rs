//! Applies every pending migration to DATABASE_URL; safe to run again.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::install_crypto_provider();
    let env = platform::Env::process();
    let url: String = env.required("DATABASE_URL")?;
    let pool = schema::pool::connect(&url, 2).await?;
    schema::pool::migrate(&pool).await?;
    println!("database migrated");
    Ok(())
}
