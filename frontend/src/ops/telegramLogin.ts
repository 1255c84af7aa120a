//! The Telegram login's failures, in words.

import type { MessageKey } from "../i18n/en";
import { ApiFailure } from "../api/failure";

export interface Worded {
  key: MessageKey;
  vars?: Record<string, string | number>;
}

/** What to tell the operator when a login step fails. */
export function loginError(e: unknown): Worded {
  if (!(e instanceof ApiFailure)) return { key: "tg.err.generic", vars: { message: String(e) } };
  if (e.isNetwork) return { key: "tg.err.network" };
  switch (e.code) {
    case "login_unavailable":
      return { key: "tg.err.unavailable" };
    case "login_out_of_order":
      return { key: "tg.err.out_of_order" };
    case "phone_code_invalid":
      return { key: "tg.err.code_invalid" };
    case "phone_code_expired":
      return { key: "tg.err.code_expired" };
    case "password_invalid":
      return { key: "tg.err.password_invalid" };
    case "phone_number_invalid":
      return { key: "tg.err.phone_invalid" };
  }
  if (e.status === 429) return e.retryAfter ? { key: "tg.err.flood", vars: { seconds: e.retryAfter } } : { key: "tg.err.flood_unknown" };
  if (e.status === 503) return { key: "tg.err.adapter_down" };
  if (e.status === 403) return { key: "tg.err.forbidden" };
  return { key: "tg.err.generic", vars: { message: e.message } };
}
