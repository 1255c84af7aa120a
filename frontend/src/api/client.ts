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

/** Sign-in, refresh and sign-out, over a client that adds no token of its own. */
export function authTransport(baseUrl: string): AuthTransport {
  const api = createClient<paths>({ baseUrl, fetch: send });
  return {
    login: (email, password): Promise<TokensOut> =>
      unwrap(api.POST("/api/auth/login", { body: { email, password } })),
    refresh: (refresh_token): Promise<TokensOut> =>
      unwrap(api.POST("/api/auth/refresh", { body: { refresh_token } })),
    logout: async (access, refresh_token): Promise<void> => {
      await unwrap(
        api.POST("/api/auth/logout", {
          body: { refresh_token },
          headers: { Authorization: `Bearer ${access}` },
        }),
      );
    },
  };
}
