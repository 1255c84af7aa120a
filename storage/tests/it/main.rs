//! Integration tests of the storage backends, over real HTTP: one contract
//! that both backends must keep (against a real s3s-fs server and against the
//! local backend's routes on port 0), and what only the local routes do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
mod contract;
mod local_blob;
