//! sea-orm entities for the tables the API reads and writes through the ORM.

pub mod contacts;
pub mod conversations;
pub mod messages;
pub mod users;
