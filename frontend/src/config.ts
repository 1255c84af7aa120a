//! Where the API and its WebSocket are, from `config.js` (set per deployment).

declare global {
  interface Window {
    FASTPREP_CONFIG?: { apiBase?: string; wsBase?: string; brokerUiUrl?: string; grafanaUrl?: string };
  }
}

/** The API's origin, without a trailing slash; "" is the page's own. */
export function apiBase(): string {
  const base = typeof window === "undefined" ? "" : (window.FASTPREP_CONFIG?.apiBase ?? "");
  return base.replace(/\/+$/, "");
}

/**
 * Where the WebSocket goes: `wsBase` when set, else the API's origin. A
 * deployment whose static host passes `/api` through to the API (so the
 * refresh cookie stays same-site) but cannot pass a WebSocket sets `wsBase`
 * to the API's own origin: the socket authenticates with the access token,
 * not the cookie.
 */
export function wsBase(): string {
  const base = typeof window === "undefined" ? undefined : window.FASTPREP_CONFIG?.wsBase;
  return base ? base.replace(/\/+$/, "") : apiBase();
}

/** `ws(s)://…/api/ws` for the API at `base` (the page's origin when empty). */
export function wsUrl(base: string = wsBase(), origin: string = window.location.origin): string {
  return `${(base || origin).replace(/^http/, "ws")}/api/ws`;
}

/**
 * The ops links: the broker's management UI and Grafana. Set at build time
 * (`VITE_BROKER_UI_URL`, `VITE_GRAFANA_URL`) or per deployment in `config.js`
 * (`brokerUiUrl`, `grafanaUrl`); a link whose URL is unset is not shown.
 */
export function opsLinks(): { broker: string | null; grafana: string | null } {
  const cfg = typeof window === "undefined" ? undefined : window.FASTPREP_CONFIG;
  const pick = (a: string | undefined, b: string | undefined) => {
    const v = (a ?? b ?? "").trim();
    return v ? v : null;
  };
  return {
    broker: pick(cfg?.brokerUiUrl, import.meta.env.VITE_BROKER_UI_URL as string | undefined),
    grafana: pick(cfg?.grafanaUrl, import.meta.env.VITE_GRAFANA_URL as string | undefined),
  };
}
