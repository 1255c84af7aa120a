//! sea-orm entities, one per table the migrations create. The test
//! `schema/tests/entities_match_schema/` keeps them equal to the migrated
//! schema: a column, type, key or foreign key that differs fails it.

/// `impl Related<super::<table>::Entity> for Entity` through the named
/// variant of the entity's `Relation`, for each pair given.
macro_rules! related {
    ($($table:ident => $variant:ident),+ $(,)?) => {
        $(
            impl Related<super::$table::Entity> for Entity {
                fn to() -> RelationDef {
                    Relation::$variant.def()
                }
            }
        )+
    };
}
use related;

/// `impl Related<super::<target>::Entity> for Entity` through the join
/// table `<via>`: its relation to the target, and back to this entity.
macro_rules! related_via {
    ($target:ident via $via:ident: $to:ident, $back:ident) => {
        impl Related<super::$target::Entity> for Entity {
            fn to() -> RelationDef {
                super::$via::Relation::$to.def()
            }

            fn via() -> Option<RelationDef> {
                Some(super::$via::Relation::$back.def().rev())
            }
        }
    };
}
use related_via;

pub mod prelude;

pub mod attachments;
pub mod audit_log;
pub mod contacts;
pub mod conversation_reads;
pub mod conversations;
pub mod message_edits;
pub mod messages;
pub mod outbox;
pub mod permissions;
pub mod processed_messages;
pub mod refresh_tokens;
pub mod role_permissions;
pub mod roles;
pub mod user_roles;
pub mod users;
