import { describe, expect, it } from "vitest";
import { ApiFailure } from "../api/failure";
import { translate } from "../i18n";
import { loginError } from "./telegramLogin";
import { formatAge } from "./format";

const words = (e: unknown) => {
  const w = loginError(e);
  return translate("en", w.key, w.vars);
};

describe("the Telegram login's failures in words", () => {
  it("says the sandbox has no login", () => {
    expect(words(new ApiFailure(409, "login_unavailable", "no account"))).toMatch(/not available.*sandbox/);
  });
  it("names a wrong code, an expired code and a wrong password", () => {
    expect(words(new ApiFailure(422, "phone_code_invalid", "x"))).toBe("Telegram refused the code. Check it and type it again.");
    expect(words(new ApiFailure(422, "phone_code_expired", "x"))).toMatch(/expired/);
    expect(words(new ApiFailure(422, "password_invalid", "x"))).toBe("The password is wrong. Type it again.");
  });
  it("gives the wait of a flood wait from Retry-After", () => {
    expect(words(new ApiFailure(429, "flood_wait", "x", undefined, 42))).toBe("Telegram asks to wait 42 s before trying again.");
    expect(words(new ApiFailure(429, "flood_wait", "x"))).toBe("Telegram asks to wait before trying again.");
  });
  it("tells an adapter that is down from a network failure", () => {
    expect(words(new ApiFailure(503, "adapter_unavailable", "x"))).toMatch(/adapter cannot be reached/);
    expect(words(ApiFailure.network(new Error("offline")))).toMatch(/server cannot be reached/);
  });
  it("falls back to the API's message", () => {
    expect(words(new ApiFailure(400, "invalid_code", "the code: 1 to 16 letters"))).toBe("The step failed: the code: 1 to 16 letters");
  });
});

describe("ages", () => {
  it("reads as seconds, minutes, hours or days", () => {
    expect(formatAge(5)).toBe("5 s");
    expect(formatAge(125)).toBe("2 min");
    expect(formatAge(3 * 3600 + 300)).toBe("3 h 5 min");
    expect(formatAge(2 * 86400)).toBe("2 d");
    expect(formatAge(-3)).toBe("0 s");
  });
});
