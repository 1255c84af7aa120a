//! What is counted, per kind: each kind has its own window, cooldown and
//! summary, its metric label and its runbook section.

use broker_config::topology::{AUTHZ_FANOUT, INBOUND, TG_DELIVERY};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Replies that failed for good (`message.delivery_failed.v1`).
    Delivery,
    /// The Telegram account cannot send (`needs_login`, a long `flood_wait`).
    TelegramSession,
    /// Messages another work queue dead-lettered.
    DeadLetter(&'static str),
}

impl Kind {
    /// The kind of a dead letter from `queue`, `None` for a queue that is not
    /// a work queue.
    pub fn dead_letter(queue: &str) -> Option<Kind> {
        [TG_DELIVERY.name, INBOUND.name, AUTHZ_FANOUT.name]
            .into_iter()
            .find(|q| *q == queue)
            .map(Kind::DeadLetter)
    }

    /// The metric label and Redis key part (a bounded set).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Delivery => "delivery",
            Kind::TelegramSession => "telegram_session",
            Kind::DeadLetter(q) if q == TG_DELIVERY.name => "dead_letter_tg_delivery",
            Kind::DeadLetter(q) if q == INBOUND.name => "dead_letter_inbound",
            Kind::DeadLetter(q) if q == AUTHZ_FANOUT.name => "dead_letter_authz_fanout",
            Kind::DeadLetter(_) => "dead_letter_other",
        }
    }

    pub fn from_label(label: &str) -> Option<Kind> {
        match label {
            "delivery" => Some(Kind::Delivery),
            "telegram_session" => Some(Kind::TelegramSession),
            _ => label
                .strip_prefix("dead_letter_")
                .map(|q| q.replace('_', "-"))
                .and_then(|q| Kind::dead_letter(&q)),
        }
    }

    pub fn title(self) -> String {
        match self {
            Kind::Delivery => "replies are not reaching Telegram".into(),
            Kind::TelegramSession => "the Telegram account cannot send".into(),
            Kind::DeadLetter(q) => format!("{q} is dead-lettering messages"),
        }
    }

    /// One line about `count` of this kind.
    pub fn describe(self, count: i64) -> String {
        match self {
            Kind::Delivery => format!("{count} replies failed for good"),
            Kind::TelegramSession => "the Telegram session needs attention".into(),
            Kind::DeadLetter(q) => format!("{count} messages went to {q}.dlq"),
        }
    }

    /// The runbook section of DESIGN's alerts (docs/RUNBOOK.md).
    pub fn runbook_section(self) -> &'static str {
        match self {
            Kind::Delivery => "Alert: replies are not reaching Telegram",
            Kind::TelegramSession => "Alert: the Telegram account cannot send",
            Kind::DeadLetter(_) => "Alert: a queue is dead-lettering",
        }
    }

    pub fn runbook_anchor(self) -> &'static str {
        match self {
            Kind::Delivery => "alert-replies-are-not-reaching-telegram",
            Kind::TelegramSession => "alert-the-telegram-account-cannot-send",
            Kind::DeadLetter(_) => "alert-a-queue-is-dead-lettering",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_stay_bounded() {
        for kind in [
            Kind::Delivery,
            Kind::TelegramSession,
            Kind::DeadLetter("tg-delivery"),
            Kind::DeadLetter("inbound"),
            Kind::DeadLetter("authz-fanout"),
        ] {
            assert_eq!(Kind::from_label(kind.label()), Some(kind));
        }
        assert_eq!(Kind::dead_letter("alerts"), None);
        assert_eq!(Kind::dead_letter("anything"), None);
    }
}
