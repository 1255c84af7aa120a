import { describe, expect, it } from "vitest";
import { changeView, changeable, deliveryView, reasonText } from "./delivery";
import { translate } from "../i18n";
import type { MessageKey } from "../i18n/en";
import { msg } from "../test/fixtures";

const t = (key: MessageKey, vars?: Record<string, string | number>) => translate("en", key, vars);
const time = (iso: string) => iso.slice(11, 19);

describe("delivery in words", () => {
  it("says known reasons in words and keeps unknown ones as they are", () => {
    expect(reasonText(t, "chat_not_found")).toBe("Telegram does not know this chat.");
    expect(reasonText(t, "flood wait 37s")).toBe("Telegram asked to wait 37 s before sending more.");
    expect(reasonText(t, "sandbox: scripted server error (gave up after 2 attempts)")).toBe(
      "Gave up after 2 attempts: Telegram or the adapter had a temporary error. (sandbox: scripted server error)",
    );
    expect(reasonText(t, "something new")).toBe("something new");
    expect(translate("ru", "reason.user_blocked")).toBe("Клиент заблокировал аккаунт.");
  });

  it("shows the time of the next try and counts down to it", () => {
    const m = msg({ status: "retrying", retry_at: "2026-01-01T10:00:30Z", error: "flood wait 30s" });
    const v = deliveryView(m, t, time, Date.parse("2026-01-01T10:00:18Z"));
    expect(v).toEqual({ kind: "retrying", label: "Retrying at 10:00:30 (in 12 s)", reason: "Telegram asked to wait 30 s before sending more." });
    expect(deliveryView(m, t, time, Date.parse("2026-01-01T10:00:31Z")).label).toBe("Retrying now");
  });

  it("labels each state", () => {
    expect(deliveryView(msg({ status: "queued" }), t, time, 0).label).toBe("Queued");
    expect(deliveryView(msg({ status: "sending" }), t, time, 0).label).toBe("Sending…");
    expect(deliveryView(msg({ status: "sent", sent_at: "2026-01-01T10:00:02Z" }), t, time, 0).label).toBe("Sent 10:00:02");
    expect(deliveryView(msg({ status: "failed", error: "user_blocked" }), t, time, 0)).toEqual({
      kind: "failed",
      label: "Not delivered",
      reason: "The customer blocked the account.",
    });
  });
});

describe("an operator's change of a sent reply", () => {
  const sent = (over = {}) => msg({ status: "sent", sent_at: "2026-01-01T10:00:00Z", tg_message_id: 9, ...over });

  it("says how far an edit or a deletion got, with the reason and the next try", () => {
    expect(changeView(sent(), t, time, 0)).toBeNull();
    expect(changeView(sent({ change_kind: "edit", change_status: "queued" }), t, time, 0)?.label).toBe(
      "Edit on its way to Telegram…",
    );
    expect(changeView(sent({ change_kind: "delete", change_status: "sent" }), t, time, 0)?.label).toBe("Deleted for everyone");
    const retrying = sent({
      change_kind: "edit",
      change_status: "retrying",
      change_retry_at: "2026-01-01T10:05:10Z",
      change_error: "flood wait 10s",
    });
    expect(changeView(retrying, t, time, Date.parse("2026-01-01T10:05:00Z"))).toEqual({
      kind: "retrying",
      label: "Edit retrying at 10:05:10 (in 10 s)",
      reason: "Telegram asked to wait 10 s before sending more.",
    });
    expect(changeView(sent({ change_kind: "delete", change_status: "failed", change_error: "message_not_found" }), t, time, 0)).toEqual({
      kind: "failed",
      label: "Not deleted in Telegram",
      reason: "The message is gone in Telegram.",
    });
    expect(translate("ru", "change.edit.sent")).toBe("Изменено в Telegram");
  });

  it("offers edit and delete only where the API allows them", () => {
    const at = Date.parse("2026-01-01T12:00:00Z");
    expect(changeable(sent(), "edit", at)).toBe(true);
    expect(changeable(sent(), "delete", at)).toBe(true);
    expect(changeable(msg({ status: "queued" }), "edit", at)).toBe(false);
    expect(changeable(sent({ direction: "in" }), "delete", at)).toBe(false);
    expect(changeable(sent({ kind: "note" }), "edit", at)).toBe(false);
    expect(changeable(sent({ deleted_at: "2026-01-01T11:00:00Z" }), "delete", at)).toBe(false);
    const file = { id: "f1", filename: "a.pdf", content_type: "application/pdf", size_bytes: 1 };
    expect(changeable(sent({ attachments: [file] }), "edit", at)).toBe(false);
    expect(changeable(sent({ attachments: [file] }), "delete", at)).toBe(true);
    // Telegram's 48 hours.
    expect(changeable(sent(), "edit", Date.parse("2026-01-03T10:00:01Z"))).toBe(false);
  });

  it("says a read reply was read, and a logged-out account in words", () => {
    expect(deliveryView(sent({ read_at: "2026-01-01T10:02:00Z" }), t, time, 0).label).toBe("Read 10:02:00");
    expect(reasonText(t, "the Telegram account needs a login")).toBe("The Telegram account needs a login.");
  });
});
