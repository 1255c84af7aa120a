//! What the migrated database has, read from `information_schema`.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgPool;

use super::ForeignKey;

/// One table as the migrated database has it.
#[derive(Default)]
pub struct Table {
    pub columns: BTreeMap<String, Column>,
    pub primary_key: Vec<String>,
    /// Columns with a unique constraint of their own.
    pub unique: BTreeSet<String>,
    pub foreign_keys: Vec<ForeignKey>,
}

pub struct Column {
    pub pg_type: String,
    pub nullable: bool,
    /// Filled by a sequence (`serial`) or an identity.
    pub generated: bool,
}

pub async fn load_tables(pool: &PgPool) -> BTreeMap<String, Table> {
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .expect("list tables");
    for (name,) in names {
        tables.insert(name, Table::default());
    }

    type ColumnRow = (String, String, String, bool, Option<i32>, bool);
    let columns: Vec<ColumnRow> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, udt_name::text, is_nullable = 'YES',
                character_maximum_length::int4,
                is_identity = 'YES' OR coalesce(column_default LIKE 'nextval(%', false)
           FROM information_schema.columns
          WHERE table_schema = 'public'",
    )
    .fetch_all(pool)
    .await
    .expect("list columns");
    for (table, column, udt, nullable, length, generated) in columns {
        let pg_type = match length {
            Some(n) => format!("{udt}({n})"),
            None => udt,
        };
        if let Some(t) = tables.get_mut(&table) {
            let column_def = Column {
                pg_type,
                nullable,
                generated,
            };
            t.columns.insert(column, column_def);
        }
    }

    // Key columns in key order, grouped by constraint.
    let keys: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT tc.table_name::text, tc.constraint_name::text, tc.constraint_type::text,
                kcu.column_name::text
           FROM information_schema.table_constraints tc
           JOIN information_schema.key_column_usage kcu
             ON kcu.constraint_schema = tc.constraint_schema
            AND kcu.constraint_name = tc.constraint_name
          WHERE tc.table_schema = 'public' AND tc.constraint_type IN ('PRIMARY KEY', 'UNIQUE')
          ORDER BY tc.constraint_name, kcu.ordinal_position",
    )
    .fetch_all(pool)
    .await
    .expect("list keys");
    let mut unique: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (table, constraint, kind, column) in keys {
        let Some(t) = tables.get_mut(&table) else {
            continue;
        };
        if kind == "PRIMARY KEY" {
            t.primary_key.push(column);
        } else {
            unique.entry((table, constraint)).or_default().push(column);
        }
    }
    // Composite unique constraints (`messages`) are left out: the entities
    // do not declare them.
    for ((table, _), mut columns) in unique {
        if let (Some(t), Some(column), true) =
            (tables.get_mut(&table), columns.pop(), columns.is_empty())
        {
            t.unique.insert(column);
        }
    }

    type ForeignKeyRow = (String, String, String, String, String, String, String);
    let references: Vec<ForeignKeyRow> = sqlx::query_as(
        "SELECT rc.constraint_name::text, kcu.table_name::text, kcu.column_name::text,
                ref.table_name::text, ref.column_name::text,
                rc.delete_rule::text, rc.update_rule::text
           FROM information_schema.referential_constraints rc
           JOIN information_schema.key_column_usage kcu
             ON kcu.constraint_schema = rc.constraint_schema
            AND kcu.constraint_name = rc.constraint_name
           JOIN information_schema.key_column_usage ref
             ON ref.constraint_schema = rc.unique_constraint_schema
            AND ref.constraint_name = rc.unique_constraint_name
            AND ref.ordinal_position = kcu.position_in_unique_constraint
          WHERE rc.constraint_schema = 'public'
          ORDER BY rc.constraint_name, kcu.ordinal_position",
    )
    .fetch_all(pool)
    .await
    .expect("list foreign keys");
    let mut foreign_keys: BTreeMap<String, ForeignKey> = BTreeMap::new();
    for (constraint, table, column, ref_table, ref_column, on_delete, on_update) in references {
        let fk = foreign_keys
            .entry(constraint)
            .or_insert_with(|| ForeignKey {
                table,
                columns: Vec::new(),
                ref_table,
                ref_columns: Vec::new(),
                on_delete,
                on_update,
            });
        fk.columns.push(column);
        fk.ref_columns.push(ref_column);
    }
    for fk in foreign_keys.into_values() {
        if let Some(t) = tables.get_mut(&fk.table) {
            t.foreign_keys.push(fk);
        }
    }
    tables
}
