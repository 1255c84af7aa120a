//! Scripted failures of the sandbox (`/sandbox/faults`): the next n sends fail
//! in a chosen way, a share of sends fails at random, each chat's first send
//! may meet a FLOOD_WAIT, and every send may be slowed down.

use std::{collections::HashSet, sync::Mutex, time::Duration};

use serde::{Deserialize, Serialize};

use crate::backend::SendError;

/// How a scripted send fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    /// Telegram answers 5xx: transient, nothing sent.
    ServerError,
    /// FLOOD_WAIT_x: nothing sent.
    FloodWait,
    /// A permanent error such as `chat_not_found`: nothing sent.
    Permanent,
    /// The message IS sent, then the answer is lost (a timeout after
    /// delivery). A retry with the same key must not send it again.
    LostResponse,
}

/// The body of `POST /sandbox/faults`, also what `GET` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    #[serde(default)]
    pub fail_next: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FaultMode>,
    /// Seconds of FLOOD_WAIT (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Permanent error code (default `chat_not_found`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Delay added to every send while set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Per cent of sends (0–100) answered with a server error at random,
    /// beside any `fail_next`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_percent: Option<u8>,
    /// The first send to each chat after the plan is set meets a FLOOD_WAIT
    /// of `retry_after` seconds (once per chat).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flood_wait_once_per_chat: bool,
    /// Chats that blocked the account: every send to one answers the
    /// permanent `user_blocked` until the plan changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_chats: Vec<i64>,
}

pub const DEFAULT_FLOOD_WAIT_SECS: u64 = 5;
pub const DEFAULT_PERMANENT_CODE: &str = "chat_not_found";

impl FaultPlan {
    /// Checks the plan makes sense; the message is shown to the caller.
    pub fn validate(&self) -> Result<(), String> {
        if self.fail_next > 0 && self.mode.is_none() {
            return Err(
                "fail_next needs a mode: server_error, flood_wait, permanent or lost_response"
                    .into(),
            );
        }
        if let Some(secs) = self.retry_after
            && !(1..=86_400).contains(&secs)
        {
            return Err("retry_after must be between 1 and 86400 seconds".into());
        }
        if let Some(code) = &self.code
            && (code.is_empty()
                || code.len() > 64
                || !code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
        {
            return Err("code must be snake_case, at most 64 characters".into());
        }
        if self.latency_ms.is_some_and(|ms| ms > 60_000) {
            return Err("latency_ms must be at most 60000".into());
        }
        if self.blocked_chats.len() > 10_000 {
            return Err("blocked_chats holds at most 10000 chats".into());
        }
        if self.error_percent.is_some_and(|p| p > 100) {
            return Err("error_percent must be between 0 and 100".into());
        }
        Ok(())
    }
}

/// What a scripted fault does to one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Injected {
    /// Fail before anything is recorded.
    Before(SendError),
    /// Record the send, then fail.
    AfterRecord(SendError),
}

/// The current plan, shared by all sends.
#[derive(Debug, Default)]
pub struct Faults {
    plan: Mutex<FaultPlan>,
    /// Chats that met their FLOOD_WAIT under the current plan.
    flooded: Mutex<HashSet<i64>>,
}

impl Faults {
    pub fn set(&self, plan: FaultPlan) {
        *self.lock() = plan;
        self.flooded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn clear(&self) {
        self.set(FaultPlan::default());
    }

    pub fn current(&self) -> FaultPlan {
        self.lock().clone()
    }

    pub fn latency(&self) -> Option<Duration> {
        self.lock()
            .latency_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }

    /// Consumes one scripted failure for a send to `chat_id`, if any is due.
    pub fn take(&self, chat_id: i64) -> Option<Injected> {
        let mut plan = self.lock();
        if plan.blocked_chats.contains(&chat_id) {
            return Some(Injected::Before(SendError::Permanent {
                code: "user_blocked".to_owned(),
            }));
        }
        if plan.flood_wait_once_per_chat
            && self
                .flooded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(chat_id)
        {
            return Some(Injected::Before(SendError::FloodWait {
                retry_after_secs: plan.retry_after.unwrap_or(DEFAULT_FLOOD_WAIT_SECS),
            }));
        }
        if plan.fail_next == 0 {
            let percent = plan.error_percent.unwrap_or(0);
            return (percent > 0 && rand::random_range(0..100u8) < percent).then(|| {
                Injected::Before(SendError::Transient {
                    reason: "sandbox: random server error".into(),
                })
            });
        }
        let mode = plan.mode?;
        plan.fail_next -= 1;
        Some(match mode {
            FaultMode::ServerError => Injected::Before(SendError::Transient {
                reason: "sandbox: scripted server error".into(),
            }),
            FaultMode::FloodWait => Injected::Before(SendError::FloodWait {
                retry_after_secs: plan.retry_after.unwrap_or(DEFAULT_FLOOD_WAIT_SECS),
            }),
            FaultMode::Permanent => Injected::Before(SendError::Permanent {
                code: plan
                    .code
                    .clone()
                    .unwrap_or_else(|| DEFAULT_PERMANENT_CODE.to_owned()),
            }),
            FaultMode::LostResponse => Injected::AfterRecord(SendError::Transient {
                reason: "sandbox: scripted lost response".into(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultPlan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_chat_refuses_every_send_until_unblocked() {
        let faults = Faults::default();
        faults.set(FaultPlan {
            blocked_chats: vec![7],
            ..Default::default()
        });
        for _ in 0..3 {
            assert_eq!(
                faults.take(7),
                Some(Injected::Before(SendError::Permanent {
                    code: "user_blocked".into()
                }))
            );
        }
        assert_eq!(faults.take(8), None);
        faults.clear();
        assert_eq!(faults.take(7), None);
    }

    #[test]
    fn next_n_sends_fail_then_pass() {
        let faults = Faults::default();
        faults.set(FaultPlan {
            fail_next: 2,
            mode: Some(FaultMode::FloodWait),
            retry_after: Some(7),
            ..Default::default()
        });
        for _ in 0..2 {
            assert_eq!(
                faults.take(42),
                Some(Injected::Before(SendError::FloodWait {
                    retry_after_secs: 7
                }))
            );
        }
        assert_eq!(faults.take(42), None);
    }

    #[test]
    fn each_chat_meets_one_flood_wait_and_a_new_plan_starts_over() {
        let faults = Faults::default();
        let plan = FaultPlan {
            flood_wait_once_per_chat: true,
            retry_after: Some(3),
            ..Default::default()
        };
        faults.set(plan.clone());
        let flood = Some(Injected::Before(SendError::FloodWait {
            retry_after_secs: 3,
        }));
        assert_eq!(faults.take(1), flood);
        assert_eq!(faults.take(2), flood);
        assert_eq!(faults.take(1), None);
        assert_eq!(faults.take(2), None);
        faults.set(plan);
        assert_eq!(faults.take(1), flood);
    }

    #[test]
    fn error_percent_fails_about_that_share() {
        let faults = Faults::default();
        faults.set(FaultPlan {
            error_percent: Some(30),
            ..Default::default()
        });
        let failed = (0..2000).filter(|_| faults.take(5).is_some()).count();
        assert!((450..750).contains(&failed), "{failed} of 2000 failed");
        faults.set(FaultPlan {
            error_percent: Some(0),
            ..Default::default()
        });
        assert!((0..100).all(|_| faults.take(5).is_none()));
        assert!(
            FaultPlan {
                error_percent: Some(101),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn validation() {
        let bad = |p: FaultPlan| assert!(p.validate().is_err(), "{p:?}");
        bad(FaultPlan {
            fail_next: 1,
            ..Default::default()
        });
        bad(FaultPlan {
            code: Some("Chat Not Found".into()),
            ..Default::default()
        });
        bad(FaultPlan {
            retry_after: Some(0),
            ..Default::default()
        });
        let latency_only = FaultPlan {
            latency_ms: Some(100),
            ..Default::default()
        };
        assert!(latency_only.validate().is_ok());
        let faults = Faults::default();
        faults.set(latency_only);
        assert_eq!(faults.latency(), Some(Duration::from_millis(100)));
        assert_eq!(faults.take(42), None);
    }
}
