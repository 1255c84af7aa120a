//! One PostgreSQL pool per process, shared by sqlx queries and sea-orm.

use std::time::Duration;

use sea_orm::{DatabaseConnection, SqlxPostgresConnector};
use sqlx::{PgPool, postgres::PgPoolOptions};

/// Connects a pool of at most `max_connections`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
}

/// The same pool as a sea-orm connection.
pub fn orm(pool: &PgPool) -> DatabaseConnection {
    SqlxPostgresConnector::from_sqlx_postgres_pool(pool.clone())
}

/// Applies every pending migration; idempotent.
pub async fn migrate(pool: &PgPool) -> Result<(), sea_orm::DbErr> {
    use sea_orm_migration::MigratorTrait;
    crate::Migrator::up(&orm(pool), None).await
}
