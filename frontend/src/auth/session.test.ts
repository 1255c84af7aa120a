import { describe, expect, it, vi } from "vitest";
import { Session, renewLead, type AuthTransport, type Clock } from "./session";
import { ApiFailure } from "../api/failure";
import type { TokensOut } from "../api/types";

const user = { id: "u1", email: "a@b.c", display_name: "Ann", perm_version: 1 };
let n = 0;
function tokens(expiresIn = 300): TokensOut {
  n += 1;
  return { access_token: `a${n}`, refresh_token: null, token_type: "Bearer", expires_in: expiresIn, refresh_expires_in: 1000, user };
}

function fakeClock() {
  let now = 0;
  const timers: Array<{ at: number; fn: () => void; id: number }> = [];
  let ids = 0;
  const clock: Clock = {
    now: () => now,
    setTimeout: (fn, ms) => {
      const id = ++ids;
      timers.push({ at: now + ms, fn, id });
      return id;
    },
    clearTimeout: (id) => {
      const i = timers.findIndex((t) => t.id === id);
      if (i >= 0) timers.splice(i, 1);
    },
  };
  return {
    clock,
    timers,
    advance(ms: number) {
      now += ms;
      for (const t of timers.filter((t) => t.at <= now)) {
        timers.splice(timers.indexOf(t), 1);
        t.fn();
      }
    },
  };
}

function transport(over: Partial<AuthTransport> = {}): AuthTransport {
  return {
    login: vi.fn(async () => tokens()),
    refresh: vi.fn(async () => tokens()),
    logout: vi.fn(async () => {}),
    ...over,
  };
}

describe("Session", () => {
  it("renews a minute ahead, or a quarter of a short life", () => {
    expect(renewLead(300_000)).toBe(60_000);
    expect(renewLead(20_000)).toBe(5_000);
  });

  it("signs in and renews silently before the access token expires", async () => {
    const c = fakeClock();
    const tr = transport();
    const s = new Session(tr, c.clock);
    const renewed: string[] = [];
    s.onToken((tok) => renewed.push(tok));
    await s.signIn("a@b.c", "pw");
    expect(s.snapshot().user?.id).toBe("u1");
    const first = s.token();
    c.advance(239_000);
    expect(tr.refresh).not.toHaveBeenCalled();
    c.advance(1_000);
    expect(tr.refresh).toHaveBeenCalledTimes(1);
    await vi.waitFor(() => expect(renewed).toHaveLength(1));
    expect(s.token()).not.toBe(first);
    expect(renewed[0]).toBe(s.token());
  });

  it("presents the refresh cookie once, however many callers ask at the same time", async () => {
    const tr = transport();
    const s = new Session(tr, fakeClock().clock);
    await s.signIn("a@b.c", "pw");
    const [a, b, c] = await Promise.all([s.refresh(), s.refresh(), s.refresh()]);
    expect(tr.refresh).toHaveBeenCalledTimes(1);
    expect(a).toBe(b);
    expect(b).toBe(c);
  });

  it.each([
    ["refresh_expired", "expired"],
    ["invalid_refresh_token", "expired"],
    ["refresh_reused", "revoked"],
    ["account_disabled", "disabled"],
  ] as const)("a refresh answered 401 %s ends the session as %s", async (code, reason) => {
    const tr = transport({ refresh: vi.fn(async () => Promise.reject(new ApiFailure(401, code, "no"))) });
    const s = new Session(tr, fakeClock().clock);
    await s.signIn("a@b.c", "pw");
    expect(await s.refresh()).toBeNull();
    expect(s.snapshot()).toMatchObject({ user: null, ended: reason });
    expect(s.token()).toBeNull();
  });

  it("keeps the session when the API cannot be reached, and tries again", async () => {
    const c = fakeClock();
    const refresh = vi.fn<AuthTransport["refresh"]>().mockRejectedValueOnce(ApiFailure.network("offline")).mockResolvedValue(tokens());
    const s = new Session(transport({ refresh }), c.clock);
    await s.signIn("a@b.c", "pw");
    expect(await s.refresh()).toBeNull();
    expect(s.active).toBe(true);
    c.advance(5_000);
    await vi.waitFor(() => expect(refresh).toHaveBeenCalledTimes(2));
    expect(s.active).toBe(true);
  });

  it("signs out: tokens forgotten at once, the API told", async () => {
    const tr = transport();
    const s = new Session(tr, fakeClock().clock);
    await s.signIn("a@b.c", "pw");
    const access = s.token();
    await s.signOut();
    expect(s.snapshot()).toMatchObject({ user: null, ended: "signed_out" });
    expect(s.token()).toBeNull();
    expect(tr.logout).toHaveBeenCalledWith(access);
  });

  it("renews an access token about to expire before signing out with it", async () => {
    const c = fakeClock();
    const tr = transport();
    const s = new Session(tr, c.clock);
    await s.signIn("a@b.c", "pw");
    c.clock.clearTimeout(1); // the silent refresh did not run (a machine asleep)
    c.advance(299_000);
    await s.signOut();
    expect(tr.refresh).toHaveBeenCalledTimes(1);
    const renewed = (await (tr.refresh as ReturnType<typeof vi.fn>).mock.results[0]?.value) as TokensOut;
    expect(tr.logout).toHaveBeenCalledWith(renewed.access_token);
    expect(s.snapshot()).toMatchObject({ user: null, ended: "signed_out" });
  });

  it("restores the session the cookie holds on page load", async () => {
    const tr = transport();
    const s = new Session(tr, fakeClock().clock);
    const restoring = s.restore();
    expect(s.snapshot()).toMatchObject({ user: null, restoring: true });
    expect(await restoring).toMatch(/^a/);
    expect(s.snapshot()).toMatchObject({ user: { id: "u1" }, ended: null, restoring: false });
    expect(s.token()).toBe(await restoring);
    expect(tr.refresh).toHaveBeenCalledTimes(1);
    expect(tr.login).not.toHaveBeenCalled();
  });

  it("without a session in the cookie, shows the sign-in screen with no reason", async () => {
    const tr = transport({ refresh: vi.fn(async () => Promise.reject(new ApiFailure(401, "invalid_refresh_token", "no"))) });
    const s = new Session(tr, fakeClock().clock);
    expect(await s.restore()).toBeNull();
    expect(s.snapshot()).toMatchObject({ user: null, ended: null, restoring: false });
    // Nor does the API being down at load show a broken page.
    const down = new Session(transport({ refresh: vi.fn(async () => Promise.reject(ApiFailure.network("x"))) }), fakeClock().clock);
    expect(await down.restore()).toBeNull();
    expect(down.snapshot()).toMatchObject({ user: null, ended: null, restoring: false });
  });

  it("ends the session when the cookie now holds another account's (a sign-in in another tab)", async () => {
    const other = { ...user, id: "u2" };
    const refresh = vi.fn<AuthTransport["refresh"]>().mockResolvedValue({ ...tokens(), user: other });
    const s = new Session(transport({ refresh }), fakeClock().clock);
    await s.signIn("a@b.c", "pw");
    expect(await s.refresh()).toBeNull();
    expect(s.snapshot()).toMatchObject({ user: null, ended: "expired" });
    expect(s.token()).toBeNull();
  });

  it("a refresh that answers after sign-out does not bring the session back", async () => {
    let answer: (t: TokensOut) => void = () => {};
    const tr = transport({ refresh: () => new Promise<TokensOut>((r) => (answer = r)) });
    const s = new Session(tr, fakeClock().clock);
    await s.signIn("a@b.c", "pw");
    const pending = s.refresh();
    await s.signOut();
    answer(tokens());
    expect(await pending).toBeNull();
    expect(s.active).toBe(false);
  });

  it("stores no token in web storage", async () => {
    const setItem = vi.fn();
    vi.stubGlobal("localStorage", { setItem, getItem: () => null });
    vi.stubGlobal("sessionStorage", { setItem, getItem: () => null });
    const s = new Session(transport(), fakeClock().clock);
    await s.signIn("a@b.c", "pw");
    await s.refresh();
    expect(setItem).not.toHaveBeenCalled();
    vi.unstubAllGlobals();
  });
});

describe("permissions", () => {
  it("tells a change from the first news and from a repeat", async () => {
    const s = new Session(transport(), fakeClock().clock);
    await s.signIn("a@b.c", "pw");
    expect(s.setPermissions(["inbox.read_all", "inbox.reply"])).toBe(false);
    expect(s.setPermissions(["inbox.reply", "inbox.read_all"])).toBe(false);
    expect(s.setPermissions(["inbox.read_all"])).toBe(true);
    expect(s.snapshot().permissions?.has("inbox.reply")).toBe(false);
  });
});
