//! The sea-orm entities against the schema the migrations build. Each
//! entity's columns, their types and nullability, its primary key, its
//! single-column unique constraints and its relations are compared with a
//! freshly migrated database, and every table must have an entity, so a
//! migration that changes a table fails here until its entity follows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use schema::entities::prelude::*;

mod database;
mod entity;
mod migrated;

use database::TestDatabase;
use entity::{EntityShape, shape};
use migrated::{Table, load_tables};

/// sea-orm-migration's bookkeeping table: it has no entity here.
const MIGRATIONS_TABLE: &str = "seaql_migrations";

#[tokio::test]
async fn every_table_has_an_entity_equal_to_it() {
    let db = TestDatabase::create().await;
    let pool = schema::pool::connect(&db.url, 2)
        .await
        .expect("connect the test database");
    schema::pool::migrate(&pool)
        .await
        .expect("migrate the test database");
    let tables = load_tables(&pool).await;
    pool.close().await;

    let entities = [
        shape::<Attachments>(),
        shape::<AuditLog>(),
        shape::<Contacts>(),
        shape::<ConversationReads>(),
        shape::<Conversations>(),
        shape::<MessageEdits>(),
        shape::<Messages>(),
        shape::<Outbox>(),
        shape::<Permissions>(),
        shape::<ProcessedMessages>(),
        shape::<RefreshTokens>(),
        shape::<RolePermissions>(),
        shape::<Roles>(),
        shape::<UserRoles>(),
        shape::<Users>(),
    ];
    let mut diffs = Vec::new();
    for entity in &entities {
        match tables.get(&entity.table) {
            Some(table) => compare(entity, table, &tables, &mut diffs),
            None => diffs.push(format!(
                "{}: the entity's table does not exist after migrating",
                entity.table
            )),
        }
    }
    for name in tables.keys() {
        if name != MIGRATIONS_TABLE && !entities.iter().any(|e| &e.table == name) {
            diffs.push(format!("{name}: table has no entity in schema::entities"));
        }
    }
    assert!(
        diffs.is_empty(),
        "the entities differ from the migrated schema in {} place(s) (entity vs migrations):\n  {}\n",
        diffs.len(),
        diffs.join("\n  ")
    );
}

/// One foreign key; the actions are compared for `belongs_to` only (a
/// `has_many` is the other end of one).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ForeignKey {
    table: String,
    columns: Vec<String>,
    ref_table: String,
    ref_columns: Vec<String>,
    on_delete: String,
    on_update: String,
}

impl ForeignKey {
    fn link(&self) -> String {
        format!(
            "({}) -> {}({})",
            self.columns.join(", "),
            self.ref_table,
            self.ref_columns.join(", ")
        )
    }

    fn describe(&self) -> String {
        format!(
            "{} ON DELETE {} ON UPDATE {}",
            self.link(),
            self.on_delete,
            self.on_update
        )
    }
}

/// Adds a line to `diffs` for every way `entity` differs from `table`
/// (one of `tables`).
fn compare(
    entity: &EntityShape,
    table: &Table,
    tables: &BTreeMap<String, Table>,
    diffs: &mut Vec<String>,
) {
    let t = &entity.table;
    let null = |nullable: bool| if nullable { "NULL" } else { "NOT NULL" };
    for column in &entity.columns {
        let name = &column.name;
        let Some(found) = table.columns.get(name) else {
            diffs.push(format!("{t}.{name}: in the entity, not in the table"));
            continue;
        };
        match &column.pg_type {
            Ok(ty) if *ty == found.pg_type => {}
            Ok(ty) => diffs.push(format!(
                "{t}.{name}: type: entity {ty}, migrations {}",
                found.pg_type
            )),
            Err(why) => diffs.push(format!(
                "{t}.{name}: type: {why}; migrations {}",
                found.pg_type
            )),
        }
        if column.nullable != found.nullable {
            let (e, m) = (null(column.nullable), null(found.nullable));
            diffs.push(format!(
                "{t}.{name}: nullability: entity {e}, migrations {m}"
            ));
        }
        let unique = table.unique.contains(name);
        if column.unique != unique {
            diffs.push(format!(
                "{t}.{name}: unique: entity {}, migrations {unique}",
                column.unique
            ));
        }
    }
    for (name, found) in &table.columns {
        if !entity.columns.iter().any(|c| &c.name == name) {
            let (ty, n) = (&found.pg_type, null(found.nullable));
            diffs.push(format!(
                "{t}.{name}: in the table ({ty} {n}), missing from the entity"
            ));
        }
    }

    if entity.primary_key != table.primary_key {
        diffs.push(format!(
            "{t}: primary key: entity ({}), migrations ({})",
            entity.primary_key.join(", "),
            table.primary_key.join(", ")
        ));
    }
    let generated = match table.primary_key.as_slice() {
        [key] => table.columns.get(key).is_some_and(|c| c.generated),
        _ => false,
    };
    if entity.auto_increment != generated {
        diffs.push(format!(
            "{t}: primary key auto_increment: entity {}, migrations {generated}",
            entity.auto_increment
        ));
    }

    let declared: BTreeSet<String> = entity
        .foreign_keys
        .iter()
        .map(ForeignKey::describe)
        .collect();
    let actual: BTreeSet<String> = table
        .foreign_keys
        .iter()
        .map(ForeignKey::describe)
        .collect();
    for fk in declared.difference(&actual) {
        diffs.push(format!(
            "{t}: belongs_to {fk}: no such foreign key in the migrations"
        ));
    }
    for fk in actual.difference(&declared) {
        diffs.push(format!(
            "{t}: foreign key {fk}: no belongs_to relation in the entity"
        ));
    }
    // A has_many is the other end of a foreign key of the referencing
    // table, whose actions are checked there.
    for fk in &entity.referenced_by {
        let exists = tables
            .get(&fk.table)
            .is_some_and(|other| other.foreign_keys.iter().any(|f| f.link() == fk.link()));
        if !exists {
            diffs.push(format!(
                "{t}: has_many {}.{}: no such foreign key in the migrations",
                fk.table,
                fk.link()
            ));
        }
    }
}
