//! Where the API and its WebSocket are, from `config.js` (set per deployment).

declare global {
  interface Window {
    FASTPREP_CONFIG?: { apiBase?: string };
  }
}

/** The API's origin, without a trailing slash; "" is the page's own. */
export function apiBase(): string {
  const base = typeof window === "undefined" ? "" : (window.FASTPREP_CONFIG?.apiBase ?? "");
  return base.replace(/\/+$/, "");
}

/** `ws(s)://…/api/ws` for the API at `base` (the page's origin when empty). */
export function wsUrl(base: string = apiBase(), origin: string = window.location.origin): string {
  return `${(base || origin).replace(/^http/, "ws")}/api/ws`;
}
