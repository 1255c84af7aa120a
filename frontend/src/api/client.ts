//! The typed REST client: every path, parameter and body is checked against
//! the types generated from docs/openapi.json. Requests carry the session's
//! access token; a 401 for a stale or expired token is refreshed and retried
//! once, and a deactivated account ends the session.

import createClient from "openapi-fetch";
import type { paths } from "./schema";
import { ApiFailure } from "./failure";
import type { AuthTransport, Session } from "../auth/session";
import type { TokensOut } from "./types";

export type Api = ReturnType<typeof createClient<paths>>;

async function send(req: Request): Promise<Response> {
  try {
    return await fetch(req);
  } catch (e) {
    throw ApiFailure.network(e);
  }
}

async function codeOf(res: Response): Promise<string | undefined> {
  try {
    const body = (await res.clone().json()) as { error?: { code?: string } };
    return body.error?.code;
  } catch {
    return undefined;
  }
}

export function createApi(session: Session, baseUrl: string): Api {
  const authed = async (req: Request): Promise<Response> => {
    const spare = req.clone();
    const token = await session.freshToken();
    if (token) req.headers.set("Authorization", `Bearer ${token}`);
    const res = await send(req);
    if (res.status !== 401 || !token) return res;
    const code = await codeOf(res);
    if (code === "account_disabled") {
      session.end("disabled");
      return res;
    }
    if (code !== "invalid_token" && code !== "token_stale") return res;
    const next = await session.refresh();
    if (!next) return res;
    spare.headers.set("Authorization", `Bearer ${next}`);
    return send(spare);
  };
  return createClient<paths>({ baseUrl, fetch: authed });
}

/** The data of a successful call, or its failure thrown as `ApiFailure`. */
export async function unwrap<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) throw await ApiFailure.fromResponse(response, error);
  return data as T;
}

/** Asks for the refresh token in the httpOnly cookie; also the API's CSRF guard (ADR 0019). */
const COOKIE_MODE = { "X-Refresh-Cookie": "1" } as const;

/**
 * Runs `fn` under a lock every tab of this origin shares (Web Locks), so two
 * tabs never present the same refresh cookie at once (the second would be
 * taken for a stolen copy and end the session); without the API, just runs it.
 */
export async function acrossTabs<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const locks = typeof navigator === "undefined" ? undefined : navigator.locks;
  return locks ? await locks.request(name, fn) : fn();
}

/**
 * Sign-in, refresh and sign-out, over a client that adds no token of its own.
 * The refresh token stays in the API's httpOnly cookie, sent with
 * `credentials: "include"` to these calls only.
 */
export function authTransport(baseUrl: string): AuthTransport {
  const api = createClient<paths>({ baseUrl, fetch: send, credentials: "include" });
  return {
    login: (email, password): Promise<TokensOut> =>
      unwrap(api.POST("/api/auth/login", { body: { email, password }, params: { header: COOKIE_MODE } })),
    refresh: (): Promise<TokensOut> =>
      acrossTabs("fastprep-refresh", () =>
        unwrap(api.POST("/api/auth/refresh", { body: {}, params: { header: COOKIE_MODE } })),
      ),
    logout: async (access): Promise<void> => {
      await unwrap(
        api.POST("/api/auth/logout", {
          body: {},
          params: { header: COOKIE_MODE },
          headers: { Authorization: `Bearer ${access}` },
        }),
      );
    },
  };
}
