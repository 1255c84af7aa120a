import { describe, expect, it, vi } from "vitest";
import { RealtimeClient, backoffMs, type RealtimeDeps, type SocketLike, type Timers } from "./client";
import type { EventFrame } from "../api/types";

class FakeSocket implements SocketLike {
  readyState = 0;
  sent: unknown[] = [];
  closed: { code?: number } | null = null;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close(code?: number) {
    this.closed = { code };
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  frame(f: unknown) {
    this.onmessage?.({ data: JSON.stringify(f) });
  }
  drop(code: number) {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
}

function manualTimers() {
  const pending: Array<{ fn: () => void; ms: number; id: number }> = [];
  let id = 0;
  const timers: Timers = {
    setTimeout: (fn, ms) => {
      pending.push({ fn, ms, id: ++id });
      return id;
    },
    clearTimeout: (h) => {
      const i = pending.findIndex((p) => p.id === h);
      if (i >= 0) pending.splice(i, 1);
    },
    now: () => 0,
  };
  return { timers, pending, runReconnect: () => pending.splice(0).filter((p) => p.ms !== 12_500).forEach((p) => p.fn()) };
}

const ep = (id: number, token_current = true) => ({ id, type: "ep.update", data: { permissions: ["inbox.read_all"], perm_version: 1, token_current } });
const created = (id: number): EventFrame => ({ id, type: "message.created", data: { id: `m${id}` } as never });

function setup(over: Partial<RealtimeDeps> = {}) {
  const sockets: FakeSocket[] = [];
  const events: number[] = [];
  let reloadDone: () => void = () => {};
  const t = manualTimers();
  let ended = false;
  const deps: RealtimeDeps = {
    url: "ws://x/api/ws",
    connect: () => {
      const s = new FakeSocket();
      sockets.push(s);
      return s;
    },
    token: async () => "tok",
    refresh: vi.fn(async () => "tok2"),
    ended: () => ended,
    onEvent: (f) => events.push(f.id),
    reload: vi.fn(() => new Promise<void>((r) => (reloadDone = r))),
    onPermissions: vi.fn(),
    onDisabled: vi.fn(),
    onState: vi.fn(),
    timers: t.timers,
    random: () => 0.5,
    ...over,
  };
  const client = new RealtimeClient(deps);
  return {
    client,
    deps,
    sockets,
    events,
    t,
    finishReload: () => reloadDone(),
    end: () => (ended = true),
    last: () => sockets[sockets.length - 1]!,
  };
}

const flush = () => new Promise((r) => setTimeout(r, 0));

describe("RealtimeClient", () => {
  it("authenticates, starts its position at the first ep.update and reloads, holding frames meanwhile", async () => {
    const h = setup();
    h.client.start();
    h.last().open();
    await flush();
    expect(h.last().sent).toEqual([{ type: "auth", token: "tok" }]);
    h.last().frame(ep(100));
    expect(h.client.position).toBe(100);
    expect(h.deps.reload).toHaveBeenCalledTimes(1);
    expect(h.deps.onState).toHaveBeenLastCalledWith("live");
    h.last().frame(created(101));
    h.last().frame(created(103));
    expect(h.events).toEqual([]);
    h.finishReload();
    await flush();
    expect(h.events).toEqual([101, 103]);
    h.last().frame(created(104));
    expect(h.events).toEqual([101, 103, 104]);
  });

  it("drops frames at or below its position", async () => {
    const h = setup();
    h.client.start();
    h.last().open();
    await flush();
    h.last().frame(ep(10));
    h.finishReload();
    await flush();
    h.last().frame(created(11));
    h.last().frame(created(11));
    h.last().frame(created(9));
    expect(h.events).toEqual([11]);
  });

  it("resumes from its position after a drop, and shows itself offline meanwhile", async () => {
    const h = setup();
    h.client.start();
    h.last().open();
    await flush();
    h.last().frame(ep(10));
    h.finishReload();
    await flush();
    h.last().frame(created(12));
    h.last().drop(1006);
    await flush();
    expect(h.deps.onState).toHaveBeenLastCalledWith("offline");
    expect(h.t.pending.map((p) => p.ms)).toContain(500);
    h.t.runReconnect();
    h.last().open();
    await flush();
    expect(h.last().sent).toEqual([{ type: "resume", token: "tok", since: 12 }]);
    h.last().frame(ep(12));
    expect(h.client.position).toBe(12);
    expect(h.deps.reload).toHaveBeenCalledTimes(1);
    h.last().frame(created(13));
    expect(h.events).toEqual([12, 13]);
  });

  it("reloads on resync and continues from the resync's id", async () => {
    const h = setup();
    h.client.start();
    h.last().open();
    await flush();
    h.last().frame(ep(50));
    h.finishReload();
    await flush();
    h.last().frame({ id: 7, type: "resync", data: {} });
    expect(h.client.position).toBe(7);
    expect(h.deps.reload).toHaveBeenCalledTimes(2);
    h.last().frame(created(8));
    h.finishReload();
    await flush();
    expect(h.events).toEqual([8]);
  });

  it("4005: the account is disabled; no reconnect", async () => {
    const h = setup();
    h.client.start();
    h.last().open();
    await flush();
    h.last().frame(ep(1));
    h.last().drop(4005);
    await flush();
    expect(h.deps.onDisabled).toHaveBeenCalled();
    expect(h.t.pending.filter((p) => p.ms !== 12_500)).toEqual([]);
    expect(h.sockets).toHaveLength(1);
  });

  it.each([4002, 4003, 4004])("%i: refreshes the token, then reconnects and resumes", async (code) => {
    const h = setup();
    h.client.start();
    h.last().open();
    await flush();
    h.last().frame(ep(5));
    h.last().drop(code);
    await flush();
    expect(h.deps.refresh).toHaveBeenCalledTimes(1);
    h.t.runReconnect();
    expect(h.sockets).toHaveLength(2);
  });

  it.each([4003, 4004])("%i with a refresh the API refuses: stops, leaving the session's end to the sign-in screen", async (code) => {
    const h = setup();
    h.deps.refresh = vi.fn(async () => {
      h.end();
      return null;
    });
    h.client.start();
    h.last().open();
    await flush();
    h.last().frame(ep(5));
    h.last().drop(code);
    await flush();
    h.t.runReconnect();
    expect(h.sockets).toHaveLength(1);
  });

  it("renews on the open socket, and after a permission change sends a fresh token", async () => {
    const h = setup();
    h.client.start();
    h.last().open();
    await flush();
    h.last().frame(ep(5));
    h.client.renew("newer");
    expect(h.last().sent.at(-1)).toEqual({ type: "auth", token: "newer" });
    h.last().frame(ep(6, false));
    await flush();
    expect(h.deps.refresh).toHaveBeenCalled();
    expect(h.last().sent.at(-1)).toEqual({ type: "auth", token: "tok2" });
    expect(h.client.position).toBe(5);
  });

  it("pings a quiet socket, and drops one that stays silent", async () => {
    let now = 0;
    const h = setup();
    h.deps.timers = { ...h.t.timers, now: () => now };
    const client = new RealtimeClient(h.deps);
    client.start();
    h.last().open();
    await flush();
    h.last().frame(ep(1));
    const tick = () => h.t.pending.splice(0).forEach((p) => p.fn());
    now = 12_500;
    tick();
    expect(h.last().sent).toHaveLength(1); // only the auth
    now = 25_000;
    tick();
    expect(h.last().sent.at(-1)).toEqual({ type: "ping" });
    now = 50_000;
    tick();
    expect(h.last().closed).toEqual({ code: 4000 });
  });

  it("backs off from half a second to thirty, and comes back at once after a restart", () => {
    expect(backoffMs(1006, 0)).toBe(500);
    expect(backoffMs(1006, 3)).toBe(4_000);
    expect(backoffMs(1006, 20)).toBe(30_000);
    expect(backoffMs(1012, 9)).toBe(1_000);
  });
});
