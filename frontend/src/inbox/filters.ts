//! The conversation list's filters, kept in the URL (`?view=mine&status=open&unread=1&q=…`)
//! so a link or a reload shows the same list.

import type { Conversation, ConversationStatus } from "../api/types";

export type View = "all" | "mine" | "unassigned";
export const VIEWS: readonly View[] = ["all", "mine", "unassigned"];
export const STATUSES: readonly ConversationStatus[] = ["open", "pending", "snoozed", "resolved"];

export interface Filters {
  view: View;
  /** null: every status. */
  status: ConversationStatus | null;
  unread: boolean;
  q: string;
}

export const DEFAULT_FILTERS: Filters = { view: "all", status: "open", unread: false, q: "" };

export function parseFilters(params: URLSearchParams): Filters {
  const view = params.get("view");
  const status = params.get("status");
  return {
    view: VIEWS.includes(view as View) ? (view as View) : DEFAULT_FILTERS.view,
    status:
      status === "all"
        ? null
        : STATUSES.includes(status as ConversationStatus)
          ? (status as ConversationStatus)
          : DEFAULT_FILTERS.status,
    unread: params.get("unread") === "1",
    q: (params.get("q") ?? "").slice(0, 200),
  };
}

/** The URL's search part for `f`; defaults are left out to keep links short. */
export function filtersToParams(f: Filters): URLSearchParams {
  const p = new URLSearchParams();
  if (f.view !== DEFAULT_FILTERS.view) p.set("view", f.view);
  if (f.status !== DEFAULT_FILTERS.status) p.set("status", f.status ?? "all");
  if (f.unread) p.set("unread", "1");
  if (f.q.trim()) p.set("q", f.q.trim());
  return p;
}

/** The query of `GET /api/conversations` for `f`. */
export function filtersToQuery(f: Filters): {
  status?: ConversationStatus;
  assignee?: string;
  unread?: boolean;
  q?: string;
} {
  const query: ReturnType<typeof filtersToQuery> = {};
  if (f.status) query.status = f.status;
  if (f.view !== "all") query.assignee = f.view;
  if (f.unread) query.unread = true;
  if (f.q.trim()) query.q = f.q.trim();
  return query;
}

/**
 * Whether `c` belongs in a list filtered by `f`, as far as the client can
 * tell: "unknown" when a text search decides it (only the server knows).
 */
export function belongs(c: Conversation, f: Filters, meId: string | null): boolean | "unknown" {
  if (f.status && c.status !== f.status) return false;
  if (f.view === "mine" && (meId === null || c.assignee_id !== meId)) return false;
  if (f.view === "unassigned" && c.assignee_id !== null) return false;
  if (f.unread && c.unread_count <= 0) return false;
  return f.q.trim() ? "unknown" : true;
}
