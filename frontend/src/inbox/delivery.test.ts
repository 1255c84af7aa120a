import { describe, expect, it } from "vitest";
import { deliveryView, reasonText } from "./delivery";
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
