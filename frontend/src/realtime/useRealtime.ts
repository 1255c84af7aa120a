//! Runs the socket while the user is signed in, feeding frames into the query
//! cache, and tells the shell whether the inbox is live.

import { useEffect, useState, type RefObject } from "react";
import { useServices } from "../app/services";
import { wsUrl } from "../config";
import { applyFrame, reloadAll, type SyncContext } from "../inbox/sync";
import { RealtimeClient, type LinkState, type SocketLike } from "./client";

export interface Link {
  state: LinkState;
  /** The browser says it has no network. */
  browserOffline: boolean;
}

export function useRealtime(sync: RefObject<SyncContext>): Link {
  const { session, queryClient } = useServices();
  const [state, setState] = useState<LinkState>("connecting");
  const [browserOffline, setBrowserOffline] = useState(() => typeof navigator !== "undefined" && !navigator.onLine);

  useEffect(() => {
    const client = new RealtimeClient({
      url: wsUrl(),
      connect: (url) => new WebSocket(url) as unknown as SocketLike,
      token: () => session.freshToken(),
      refresh: () => session.refresh(),
      ended: () => !session.active,
      onEvent: (frame) => applyFrame(queryClient, frame, sync.current),
      reload: () => reloadAll(queryClient),
      // Controls follow the new rights at once; what was loaded under the old ones is loaded again.
      onPermissions: (data) => {
        if (session.setPermissions(data.permissions)) void reloadAll(queryClient);
      },
      onDisabled: () => session.end("disabled"),
      onState: setState,
    });
    const offToken = session.onToken((token) => client.renew(token));
    const online = () => {
      setBrowserOffline(false);
      client.reconnectNow();
    };
    const offline = () => setBrowserOffline(true);
    window.addEventListener("online", online);
    window.addEventListener("offline", offline);
    client.start();
    return () => {
      offToken();
      window.removeEventListener("online", online);
      window.removeEventListener("offline", offline);
      client.stop();
    };
  }, [session, queryClient, sync]);

  return { state, browserOffline };
}
