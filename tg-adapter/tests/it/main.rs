//! Integration tests of the TG adapter: the real `run` on port 0 with a
//! temporary DATA_DIR, driven over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod inbound;
mod messages;
mod mtproto;
mod sandbox;
