//! The signed-in session. The access token lives in this object's memory only:
//! never in localStorage, sessionStorage or a readable cookie. The refresh
//! token never reaches page scripts at all: the API keeps it in an httpOnly,
//! Secure, SameSite=Strict cookie (ADR 0019), so a reload of the page restores
//! the session through that cookie (`restore`).

import type { Me, TokensOut } from "../api/types";
import { ApiFailure } from "../api/failure";

/** Why a session ended; the sign-in screen says it in words. */
export type EndReason = "signed_out" | "expired" | "revoked" | "disabled";

/** The auth calls; the refresh token travels in the session cookie, out of sight. */
export interface AuthTransport {
  login(email: string, password: string): Promise<TokensOut>;
  /** Rotates the cookie's refresh token for a new access token (one rotation at a time across tabs). */
  refresh(): Promise<TokensOut>;
  /** Ends the cookie's session and removes the cookie. */
  logout(accessToken: string): Promise<void>;
}

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export interface SessionSnapshot {
  user: Me | null;
  /** Set when a session ended by itself or by signing out; cleared at sign-in. */
  ended: EndReason | null;
  /** The user's permission keys (`ep.update`, `GET /auth/me/ep`); null before known. */
  permissions: ReadonlySet<string> | null;
  /** True while a page load asks the session cookie for the session. */
  restoring: boolean;
}

/** How long before expiry the access token is renewed: a minute, or a quarter of a short life. */
export function renewLead(lifeMs: number): number {
  return Math.min(60_000, Math.floor(lifeMs / 4));
}

/** The reason a refresh's 401 gives for the session's end. */
export function endReasonOf(code: string): EndReason {
  switch (code) {
    case "refresh_reused":
      return "revoked";
    case "account_disabled":
      return "disabled";
    default:
      return "expired";
  }
}

const RETRY_REFRESH_MS = 5_000;

export class Session {
  private access: { token: string; expiresAt: number; lifeMs: number } | null = null;
  /** Bumped by every sign-in and end: an answer for an older session is dropped. */
  private generation = 0;
  private timer: unknown = null;
  private inFlight: Promise<string | null> | null = null;
  private state: SessionSnapshot = { user: null, ended: null, permissions: null, restoring: false };
  private readonly listeners = new Set<() => void>();
  private readonly tokenListeners = new Set<(token: string) => void>();

  constructor(
    private readonly transport: AuthTransport,
    private readonly clock: Clock = realClock,
  ) {}

  snapshot = (): SessionSnapshot => this.state;

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  /** Called with each access token a silent refresh brings (the socket renews with it). */
  onToken(fn: (token: string) => void): () => void {
    this.tokenListeners.add(fn);
    return () => this.tokenListeners.delete(fn);
  }

  get active(): boolean {
    return this.state.user !== null;
  }

  async signIn(email: string, password: string): Promise<void> {
    const tokens = await this.transport.login(email, password);
    this.generation += 1;
    this.accept(tokens);
    this.set({ user: tokens.user, ended: null, permissions: null, restoring: false });
  }

  /**
   * On page load: the session the cookie still holds, if any. Without one
   * (never signed in, signed out, expired) or without the API, the sign-in
   * screen shows, with no reason given.
   */
  restore(): Promise<string | null> {
    if (this.access || this.inFlight) return this.inFlight ?? Promise.resolve(this.token());
    this.set({ ...this.state, restoring: true });
    return this.rotate(true);
  }

  /** The access token in force, without renewing it. */
  token(): string | null {
    return this.access?.token ?? null;
  }

  /** A token good for the next request: renewed first when it is about to expire. */
  async freshToken(): Promise<string | null> {
    if (!this.access) return null;
    if (this.access.expiresAt - this.clock.now() > Math.min(5_000, this.access.lifeMs / 10)) {
      return this.access.token;
    }
    return this.refresh();
  }

  /**
   * Rotates the refresh token for a new access token. One rotation runs at a
   * time: a second call joins the first, since presenting a spent refresh
   * token again would end the whole session family (across tabs, the
   * transport holds a lock). Resolves to null when the session is over (then
   * `ended` says why) or the API cannot be reached.
   */
  refresh(): Promise<string | null> {
    if (this.inFlight) return this.inFlight;
    if (!this.access) return Promise.resolve(null);
    return this.rotate(false);
  }

  private rotate(restoring: boolean): Promise<string | null> {
    const generation = this.generation;
    this.inFlight = this.transport
      .refresh()
      .then((tokens) => {
        if (this.generation !== generation) return null; // signed out or in meanwhile
        const user = this.state.user;
        if (user && user.id !== tokens.user.id) {
          // Another account signed in from another tab: the cookie is theirs now.
          this.end("expired");
          return null;
        }
        this.accept(tokens);
        if (restoring) {
          this.set({ user: tokens.user, ended: null, permissions: null, restoring: false });
        } else if (user?.perm_version !== tokens.user.perm_version) {
          this.set({ ...this.state, user: tokens.user });
        }
        for (const fn of this.tokenListeners) fn(tokens.access_token);
        return tokens.access_token;
      })
      .catch((e: unknown) => {
        if (this.generation !== generation) return null;
        if (restoring) {
          this.set({ ...this.state, restoring: false });
          return null;
        }
        if (e instanceof ApiFailure && e.status === 401) {
          this.end(endReasonOf(e.code));
          return null;
        }
        // Offline or the API is down: keep the session and try again soon.
        this.schedule(RETRY_REFRESH_MS);
        return null;
      })
      .finally(() => {
        this.inFlight = null;
      });
    return this.inFlight;
  }

  /**
   * Ends the session here, then at the API, which also removes the cookie
   * (best effort: until the API has answered, a reload could still find the
   * cookie). The access token is renewed first if it is about to expire,
   * since the API needs one to sign out.
   */
  async signOut(): Promise<void> {
    const access = await this.freshToken();
    this.end("signed_out");
    if (access) {
      try {
        await this.transport.logout(access);
      } catch {
        // The access token is gone from memory; an unreachable API cannot undo that.
      }
    }
  }

  /** Forgets the tokens and shows the sign-in screen with the reason. */
  end(reason: EndReason): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.access = null;
    this.generation += 1;
    if (this.state.user === null && this.state.ended === reason && !this.state.restoring) return;
    this.set({ user: null, ended: reason, permissions: null, restoring: false });
  }

  /** Puts the user's permissions in force; true when they changed from known ones. */
  setPermissions(permissions: readonly string[]): boolean {
    if (!this.active) return false;
    const next = new Set(permissions);
    const now = this.state.permissions;
    if (now && now.size === next.size && [...next].every((p) => now.has(p))) return false;
    this.set({ ...this.state, permissions: next });
    return now !== null;
  }

  private accept(tokens: TokensOut): void {
    const lifeMs = tokens.expires_in * 1000;
    this.access = { token: tokens.access_token, expiresAt: this.clock.now() + lifeMs, lifeMs };
    this.schedule(lifeMs - renewLead(lifeMs));
  }

  private schedule(ms: number): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      void this.refresh();
    }, Math.max(0, ms));
  }

  private set(next: SessionSnapshot): void {
    this.state = next;
    for (const fn of this.listeners) fn();
  }
}
