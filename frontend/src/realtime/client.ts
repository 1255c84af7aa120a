//! The WebSocket client of docs/WEBSOCKET.md: authenticate with the first
//! frame, keep one position, resume after a drop, reload over REST on a new
//! stream or a `resync` (holding the frames that arrive meanwhile), renew the
//! token on the open socket, and end the session on 4005.

import type { EpData, EventFrame, ServerFrame } from "../api/types";

export type LinkState = "connecting" | "live" | "offline";

/** The part of the browser's WebSocket this client uses (a fake in tests). */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

export interface RealtimeDeps {
  url: string;
  connect(url: string): SocketLike;
  /** A current access token, renewed first if about to expire; null when signed out. */
  token(): Promise<string | null>;
  /** Rotates the refresh token; null when the session ended or the API is unreachable. */
  refresh(): Promise<string | null>;
  /** Whether the session is over (then the client stops). */
  ended(): boolean;
  onEvent(frame: EventFrame): void;
  /** Reloads over REST what the screen shows. */
  reload(): Promise<void>;
  onPermissions(data: EpData): void;
  /** 4005: the account was deactivated. */
  onDisabled(): void;
  onState(state: LinkState): void;
  timers?: Timers;
  random?: () => number;
}

const OPEN = 1;
/** A ping is sent after this long without a frame; the socket is dropped after twice as long. */
export const QUIET_MS = 25_000;

/** Wait before reconnect attempt `attempt` (0-based) after close `code`, before jitter. */
export function backoffMs(code: number, attempt: number): number {
  if (code === 1012) return 1_000;
  return Math.min(30_000, 500 * 2 ** attempt);
}

const defaultTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
  now: () => Date.now(),
};

export class RealtimeClient {
  /** The id of the last event frame processed, or of the last `resync`. */
  position: number | null = null;
  private attempt = 0;
  private pending: EventFrame[] | null = null;
  private ws: SocketLike | null = null;
  private authenticated = false;
  private stopped = true;
  private reconnectTimer: unknown = null;
  private quietTimer: unknown = null;
  private lastFrameAt = 0;
  private readonly timers: Timers;
  private readonly random: () => number;

  constructor(private readonly deps: RealtimeDeps) {
    this.timers = deps.timers ?? defaultTimers;
    this.random = deps.random ?? Math.random;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.deps.onState("connecting");
    this.open();
  }

  stop(): void {
    this.stopped = true;
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.close(1000, "signed_out");
    }
  }

  /** Puts a renewed access token in force on the open socket. */
  renew(token: string): void {
    if (this.ws && this.authenticated && this.ws.readyState === OPEN) {
      this.ws.send(JSON.stringify({ type: "auth", token }));
    }
  }

  /** The network is back: skip the rest of the back-off and reconnect now. */
  reconnectNow(): void {
    if (this.stopped || this.reconnectTimer === null) return;
    this.timers.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.open();
  }

  private open(): void {
    if (this.stopped) return;
    const ws = this.deps.connect(this.deps.url);
    this.ws = ws;
    this.authenticated = false;
    const fresh = this.position === null;
    let first = true;
    ws.onopen = () => {
      void this.deps.token().then((token) => {
        if (this.ws !== ws) return;
        if (!token) {
          if (this.deps.ended()) this.stop();
          else ws.close(4000, "no_token");
          return;
        }
        ws.send(
          JSON.stringify(
            fresh ? { type: "auth", token } : { type: "resume", token, since: this.position },
          ),
        );
      });
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastFrameAt = this.timers.now();
      let frame: ServerFrame;
      try {
        frame = JSON.parse(String(ev.data)) as ServerFrame;
      } catch {
        return;
      }
      switch (frame.type) {
        case "ep.update":
          if (first) {
            first = false;
            this.authenticated = true;
            this.attempt = 0;
            this.deps.onState("live");
            this.watchQuiet(ws);
            if (fresh) {
              this.position = frame.id;
              this.reload();
            }
          }
          this.deps.onPermissions(frame.data);
          if (!frame.data.token_current) void this.renewAfterChange();
          break;
        case "resync":
          this.position = frame.id;
          this.reload();
          break;
        case "pong":
        case "error":
          break;
        default:
          this.onEvent(frame);
      }
    };
    ws.onerror = () => {
      // A close event follows; it decides what to do.
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.authenticated = false;
      this.clearTimers();
      void this.afterClose(ev.code);
    };
  }

  private async afterClose(code: number): Promise<void> {
    if (this.stopped) return;
    if (code === 4005) {
      this.stop();
      this.deps.onDisabled();
      return;
    }
    this.deps.onState("offline");
    if (code === 4002 || code === 4003 || code === 4004) {
      // The token was refused: a new one first. A 401 ends the session.
      await this.deps.refresh();
      if (this.deps.ended()) {
        this.stop();
        return;
      }
    }
    if (this.stopped) return;
    const wait = backoffMs(code, this.attempt++) * (0.5 + this.random());
    this.reconnectTimer = this.timers.setTimeout(() => {
      this.reconnectTimer = null;
      this.open();
    }, wait);
  }

  private async renewAfterChange(): Promise<void> {
    const token = await this.deps.refresh();
    if (token) this.renew(token);
    else if (this.deps.ended()) this.stop();
  }

  private onEvent(frame: EventFrame): void {
    if (this.position !== null && frame.id <= this.position) return;
    this.position = frame.id;
    if (this.pending) this.pending.push(frame);
    else this.deps.onEvent(frame);
  }

  private reload(): void {
    const held: EventFrame[] = [];
    this.pending = held;
    const done = () => {
      if (this.pending === held) this.pending = null;
      for (const f of held) this.deps.onEvent(f);
    };
    this.deps.reload().then(done, done);
  }

  /** Pings when the socket has been quiet, and drops it when even that gets no answer. */
  private watchQuiet(ws: SocketLike): void {
    const check = () => {
      if (this.ws !== ws) return;
      const quiet = this.timers.now() - this.lastFrameAt;
      if (quiet >= 2 * QUIET_MS) {
        ws.close(4000, "no_answer");
        return;
      }
      if (quiet >= QUIET_MS && ws.readyState === OPEN) ws.send(JSON.stringify({ type: "ping" }));
      this.quietTimer = this.timers.setTimeout(check, QUIET_MS / 2);
    };
    this.quietTimer = this.timers.setTimeout(check, QUIET_MS / 2);
  }

  private clearTimers(): void {
    if (this.reconnectTimer !== null) this.timers.clearTimeout(this.reconnectTimer);
    if (this.quietTimer !== null) this.timers.clearTimeout(this.quietTimer);
    this.reconnectTimer = null;
    this.quietTimer = null;
  }
}
