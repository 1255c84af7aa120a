//! A reply's delivery state in words: the label, the time of the next try,
//! and the reason of a retry or a failure as people read it.

import type { MessageKey } from "../i18n/en";
import type { Message } from "../api/types";
import type { T } from "../i18n";

const KNOWN_CODES = [
  "chat_not_found",
  "user_blocked",
  "file_too_large",
  "attachment_storage_unconfigured",
  "message_not_found",
] as const;

/** The reason a tg-delivery error string gives, in the user's language. */
export function reasonText(t: T, raw: string): string {
  const reason = raw.trim();
  const gaveUp = /^(.*) \(gave up after (\d+) attempts\)$/.exec(reason);
  if (gaveUp) return t("reason.gave_up", { n: gaveUp[2]!, reason: reasonText(t, gaveUp[1]!) });
  const flood = /^flood wait (\d+)s$/.exec(reason);
  if (flood) return t("reason.flood_wait", { seconds: flood[1]! });
  if (reason === "the Telegram account needs a login") return t("reason.needs_login");
  if ((KNOWN_CODES as readonly string[]).includes(reason)) return t(`reason.${reason}` as MessageKey);
  if (/server error|\b5\d\d\b|timed? ?out/i.test(reason)) return `${t("reason.server_error")} (${reason})`;
  return reason;
}

export type DeliveryView =
  | { kind: "queued" | "sending" | "unknown"; label: string }
  | { kind: "sent"; label: string }
  | { kind: "retrying"; label: string; reason: string | null }
  | { kind: "failed"; label: string; reason: string | null };

/** What the status line under an outbound reply says at `now`. */
export function deliveryView(m: Message, t: T, time: (iso: string) => string, now: number): DeliveryView {
  switch (m.status) {
    case "queued":
      return { kind: "queued", label: t("delivery.queued") };
    case "sending":
      return { kind: "sending", label: t("delivery.sending") };
    case "sent":
      if (m.read_at) return { kind: "sent", label: t("delivery.read_at", { time: time(m.read_at) }) };
      return { kind: "sent", label: m.sent_at ? t("delivery.sent_at", { time: time(m.sent_at) }) : t("delivery.sent") };
    case "retrying": {
      const reason = m.error ? reasonText(t, m.error) : null;
      if (!m.retry_at) return { kind: "retrying", label: t("delivery.retrying_now"), reason };
      const seconds = Math.max(0, Math.ceil((Date.parse(m.retry_at) - now) / 1000));
      return {
        kind: "retrying",
        label: seconds > 0 ? t("delivery.retrying", { time: time(m.retry_at), seconds }) : t("delivery.retrying_now"),
        reason,
      };
    }
    case "failed":
      return { kind: "failed", label: t("delivery.failed"), reason: m.error ? reasonText(t, m.error) : null };
    default:
      return { kind: "unknown", label: m.status };
  }
}

export type ChangeView = {
  kind: "queued" | "sent" | "retrying" | "failed";
  label: string;
  reason: string | null;
};

/**
 * What the line under a reply says of an operator's edit or deletion of it
 * in Telegram (`change_kind`, `change_status`), at `now`; null when none.
 */
export function changeView(m: Message, t: T, time: (iso: string) => string, now: number): ChangeView | null {
  const kind = m.change_kind;
  if (kind !== "edit" && kind !== "delete") return null;
  const reason = m.change_error ? reasonText(t, m.change_error) : null;
  switch (m.change_status) {
    case "queued":
    case "sending":
      return { kind: "queued", label: t(`change.${kind}.queued`), reason: null };
    case "sent":
      return { kind: "sent", label: t(`change.${kind}.sent`), reason: null };
    case "retrying": {
      const seconds = m.change_retry_at ? Math.max(0, Math.ceil((Date.parse(m.change_retry_at) - now) / 1000)) : 0;
      return {
        kind: "retrying",
        label:
          m.change_retry_at && seconds > 0
            ? t(`change.${kind}.retrying`, { time: time(m.change_retry_at), seconds })
            : t(`change.${kind}.retrying_now`),
        reason,
      };
    }
    case "failed":
      return { kind: "failed", label: t(`change.${kind}.failed`), reason };
    default:
      return null;
  }
}

/** Telegram lets the account edit its message for 48 hours. */
export const EDIT_WINDOW_MS = 48 * 3600 * 1000;

/** Whether an operator may edit (`"edit"`) or delete a reply now. */
export function changeable(m: Message, what: "edit" | "delete", now: number): boolean {
  if (m.direction !== "out" || m.kind !== "text" || m.status !== "sent" || m.deleted_at) return false;
  if (what === "delete") return true;
  if (m.attachments.length > 0) return false;
  return !m.sent_at || now - Date.parse(m.sent_at) < EDIT_WINDOW_MS;
}
