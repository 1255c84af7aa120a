//! sea-orm-migration migrations. Each is a plain SQL file applied in one
//! transaction; the migrator records what ran, so migrating is idempotent.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(SqlMigration {
                name: "m0001_initial",
                sql: include_str!("m0001_initial.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0002_seed_authz",
                sql: include_str!("m0002_seed_authz.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0003_authz_audit",
                sql: include_str!("m0003_authz_audit.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0004_inbox",
                sql: include_str!("m0004_inbox.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0005_event_stream",
                sql: include_str!("m0005_event_stream.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0006_message_edits",
                sql: include_str!("m0006_message_edits.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0007_relay_wake",
                sql: include_str!("m0007_relay_wake.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0008_chat_turns",
                sql: include_str!("m0008_chat_turns.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0009_attachment_order",
                sql: include_str!("m0009_attachment_order.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0010_ops_telegram",
                sql: include_str!("m0010_ops_telegram.sql"),
            }),
            Box::new(SqlMigration {
                name: "m0011_message_changes",
                sql: include_str!("m0011_message_changes.sql"),
            }),
        ]
    }
}

struct SqlMigration {
    name: &'static str,
    sql: &'static str,
}

impl MigrationName for SqlMigration {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SqlMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(self.sql)
            .await?;
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(format!(
            "{} cannot be rolled back; restore from a backup instead",
            self.name
        )))
    }
}
