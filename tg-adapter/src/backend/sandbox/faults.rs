//! Scripted failures of the sandbox (`/sandbox/faults`): the next n sends fail
//! in a chosen way, and every send may be slowed down.

use std::{sync::Mutex, time::Duration};

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
}

impl Faults {
    pub fn set(&self, plan: FaultPlan) {
        *self.lock() = plan;
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

    /// Consumes one scripted failure, if any is left.
    pub fn take(&self) -> Option<Injected> {
        let mut plan = self.lock();
        if plan.fail_next == 0 {
            return None;
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
                faults.take(),
                Some(Injected::Before(SendError::FloodWait {
                    retry_after_secs: 7
                }))
            );
        }
        assert_eq!(faults.take(), None);
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
        assert_eq!(faults.take(), None);
    }
}
