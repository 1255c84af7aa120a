//! The app's long-lived objects (session, REST client, query cache) and the
//! hooks that reach them.

import { createContext, useContext, useSyncExternalStore, type ReactNode } from "react";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { Session, type SessionSnapshot } from "../auth/session";
import { authTransport, createApi, type Api } from "../api/client";
import { ApiFailure } from "../api/failure";
import { apiBase } from "../config";

export interface Services {
  session: Session;
  api: Api;
  queryClient: QueryClient;
}

export function createServices(base: string = apiBase()): Services {
  const session = new Session(authTransport(base));
  const api = createApi(session, base);
  const queryClient = new QueryClient({
    defaultOptions: {
      queries: {
        // The socket keeps what is shown current; REST answers stay fresh until it says otherwise.
        staleTime: 60_000,
        refetchOnWindowFocus: false,
        retry: (count, error) =>
          count < 2 && !(error instanceof ApiFailure && error.status >= 400 && error.status < 500),
      },
    },
  });
  // A new sign-in starts from an empty cache: nothing of the last user's stays.
  session.subscribe(() => {
    if (!session.active) queryClient.clear();
  });
  return { session, api, queryClient };
}

/** The app's services for the page, with the session the cookie holds asked for at once. */
export function startServices(base: string = apiBase()): Services {
  const services = createServices(base);
  void services.session.restore();
  return services;
}

const Ctx = createContext<Services | null>(null);

export function ServicesProvider({ services, children }: { services: Services; children: ReactNode }) {
  return (
    <Ctx.Provider value={services}>
      <QueryClientProvider client={services.queryClient}>{children}</QueryClientProvider>
    </Ctx.Provider>
  );
}

export function useServices(): Services {
  const v = useContext(Ctx);
  if (!v) throw new Error("useServices outside ServicesProvider");
  return v;
}

export function useSession(): SessionSnapshot {
  const { session } = useServices();
  return useSyncExternalStore(session.subscribe, session.snapshot);
}

/** Whether the signed-in user holds `key` (false while permissions are unknown). */
export function useCan(key: string): boolean {
  return useSession().permissions?.has(key) ?? false;
}
