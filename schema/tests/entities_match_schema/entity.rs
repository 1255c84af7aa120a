//! What an entity declares, read through sea-orm's traits and put in the
//! terms `information_schema` uses.

use sea_orm::{
    ColumnTrait, EntityTrait, IdenStatic, Iterable, PrimaryKeyToColumn, PrimaryKeyTrait,
    RelationDef, RelationTrait,
    sea_query::{ColumnType, ForeignKeyAction, StringLen, TableName, TableRef},
};

use super::ForeignKey;

/// What an entity declares, in the terms the database reports.
pub struct EntityShape {
    pub table: String,
    pub columns: Vec<EntityColumn>,
    pub primary_key: Vec<String>,
    pub auto_increment: bool,
    /// `belongs_to` relations: the foreign keys this table holds.
    pub foreign_keys: Vec<ForeignKey>,
    /// `has_many`/`has_one` relations: foreign keys of other tables to this one.
    pub referenced_by: Vec<ForeignKey>,
}

pub struct EntityColumn {
    pub name: String,
    /// The PostgreSQL type, or why there is no mapping for the sea-orm type.
    pub pg_type: Result<String, String>,
    pub nullable: bool,
    pub unique: bool,
}

pub fn shape<E: EntityTrait>() -> EntityShape {
    let table = E::default().table_name().to_owned();
    let columns = E::Column::iter()
        .map(|column| {
            let def = column.def();
            EntityColumn {
                name: column.as_str().to_owned(),
                pg_type: pg_type(def.get_column_type()),
                nullable: def.is_null(),
                unique: def.is_unique(),
            }
        })
        .collect();
    let primary_key = E::PrimaryKey::iter()
        .map(|key| key.into_column().as_str().to_owned())
        .collect();
    let (mut foreign_keys, mut referenced_by) = (Vec::new(), Vec::new());
    for relation in E::Relation::iter() {
        let def = relation.def();
        // `belongs_to` is the non-owner end and runs from the referencing
        // table; `has_many` runs from the referenced one.
        if def.is_owner {
            referenced_by.push(foreign_key(&def, true));
        } else {
            foreign_keys.push(foreign_key(&def, false));
        }
    }
    EntityShape {
        table,
        columns,
        primary_key,
        auto_increment: <E::PrimaryKey as PrimaryKeyTrait>::auto_increment(),
        foreign_keys,
        referenced_by,
    }
}

fn foreign_key(def: &RelationDef, reversed: bool) -> ForeignKey {
    let (from_tbl, from_col, to_tbl, to_col) = if reversed {
        (&def.to_tbl, &def.to_col, &def.from_tbl, &def.from_col)
    } else {
        (&def.from_tbl, &def.from_col, &def.to_tbl, &def.to_col)
    };
    let action = |a: Option<ForeignKeyAction>| match a {
        None | Some(ForeignKeyAction::NoAction) => "NO ACTION".to_owned(),
        Some(ForeignKeyAction::Restrict) => "RESTRICT".to_owned(),
        Some(ForeignKeyAction::Cascade) => "CASCADE".to_owned(),
        Some(ForeignKeyAction::SetNull) => "SET NULL".to_owned(),
        Some(ForeignKeyAction::SetDefault) => "SET DEFAULT".to_owned(),
        Some(other) => format!("{other:?}"),
    };
    ForeignKey {
        table: table_name(from_tbl),
        columns: from_col.iter().map(|c| c.to_string()).collect(),
        ref_table: table_name(to_tbl),
        ref_columns: to_col.iter().map(|c| c.to_string()).collect(),
        on_delete: action(def.on_delete),
        on_update: action(def.on_update),
    }
}

fn table_name(table: &TableRef) -> String {
    match table {
        TableRef::Table(TableName(_, name), _) => name.to_string(),
        other => format!("<not a table: {other:?}>"),
    }
}

/// The PostgreSQL type a sea-orm column type is stored as, written as
/// `information_schema.columns.udt_name` with `(character_maximum_length)`
/// when there is one. Only the types a migration may plausibly use are
/// mapped; add one here when a migration needs it.
fn pg_type(ty: &ColumnType) -> Result<String, String> {
    let name = match ty {
        ColumnType::Text => "text",
        ColumnType::String(StringLen::N(n)) => return Ok(format!("varchar({n})")),
        ColumnType::String(_) => "varchar",
        ColumnType::SmallInteger => "int2",
        ColumnType::Integer => "int4",
        ColumnType::BigInteger => "int8",
        ColumnType::Float => "float4",
        ColumnType::Double => "float8",
        ColumnType::Boolean => "bool",
        ColumnType::Uuid => "uuid",
        ColumnType::TimestampWithTimeZone => "timestamptz",
        ColumnType::DateTime | ColumnType::Timestamp => "timestamp",
        ColumnType::Date => "date",
        ColumnType::Json => "json",
        ColumnType::JsonBinary => "jsonb",
        ColumnType::Blob | ColumnType::VarBinary(_) => "bytea",
        ColumnType::Inet => "inet",
        ColumnType::Cidr => "cidr",
        // An array's element length is not kept by PostgreSQL.
        ColumnType::Array(element) => {
            let element = pg_type(element)?;
            let element = element.split('(').next().unwrap_or(&element);
            return Ok(format!("_{element}"));
        }
        other => {
            return Err(format!(
                "no PostgreSQL mapping for sea-orm {other:?} (see pg_type)"
            ));
        }
    };
    Ok(name.to_owned())
}
