//! Operations on-call runs (ADR 0015): the outbox's state and the retry of
//! its failed rows, the dead-letter queues, and the retry of replies that
//! failed at Telegram. The API's `/api/ops/*` routes and the `fastprep-ops`
//! command line call the same functions here; each change is audited.

pub mod cli;
pub mod dlq;
pub mod outbox;
