//! The realtime gateway (DESIGN §9): events from the instance's
//! `realtime.<instance-id>` queue, filtered per socket by what its user may
//! read, with resume by stream position. docs/WEBSOCKET.md is the protocol.

pub mod frames;
pub mod hub;
pub mod socket;
