//! Socket frames into the query cache: threads, the open conversation and
//! every cached list (moved, reordered, counted, dropped when they no longer
//! belong, or refetched when only the server can tell).

import type { QueryClient } from "@tanstack/react-query";
import type { Conversation, EventFrame } from "../api/types";
import { belongs } from "./filters";
import {
  applyStatus,
  changed,
  insertInList,
  removeFromList,
  touched,
  updateInList,
  upsertMessage,
  type ListData,
  type Thread,
} from "./live";
import { cachedLists, keys, knownConversation } from "./queries";

export interface SyncContext {
  meId: string | null;
  /** The conversation on screen, whose inbound messages are read as they come. */
  openId: string | null;
  /** Whether the page is seen (an unseen tab counts messages as unread). */
  visible: boolean;
  /** The open conversation got an inbound message: mark it read. */
  onReadNeeded(conversationId: string): void;
}

function applyToConversation(qc: QueryClient, id: string, ctx: SyncContext, change: (c: Conversation) => Conversation): void {
  const before = knownConversation(qc, id);
  qc.setQueryData<Conversation>(keys.conversation(id), (c) => (c ? change(c) : c));
  const after = before ? change(before) : undefined;
  for (const [filters, data] of cachedLists(qc)) {
    const key = keys.list(filters);
    const { data: next, found } = updateInList(data, id, change);
    const row = found ? next.pages.flatMap((p) => p.items).find((c) => c.id === id) : after;
    const fits = row ? belongs(row, filters, ctx.meId) : "unknown";
    if (fits === "unknown") {
      // Only the server knows (a search, or a conversation this tab never saw).
      if (found) qc.setQueryData<ListData>(key, next);
      void qc.invalidateQueries({ queryKey: key, exact: true });
    } else if (!fits) {
      if (found) qc.setQueryData<ListData>(key, removeFromList(next, id));
    } else if (found) {
      qc.setQueryData<ListData>(key, next);
    } else if (row) {
      qc.setQueryData<ListData>(key, insertInList(data, row));
    }
  }
}

export function applyFrame(qc: QueryClient, frame: EventFrame, ctx: SyncContext): void {
  switch (frame.type) {
    case "message.created":
    case "message.updated": {
      const m = frame.data;
      qc.setQueryData<Thread>(keys.thread(m.conversation_id), (t) => (t ? upsertMessage(t, m) : t));
      if (frame.type === "message.updated") return;
      const seen = ctx.openId === m.conversation_id && ctx.visible;
      applyToConversation(qc, m.conversation_id, ctx, (c) => touched(c, m, !seen));
      if (seen && m.direction === "in") ctx.onReadNeeded(m.conversation_id);
      return;
    }
    case "message.status":
      qc.setQueryData<Thread>(keys.thread(frame.data.conversation_id), (t) => (t ? applyStatus(t, frame.data) : t));
      return;
    case "conversation.updated":
      applyToConversation(qc, frame.data.conversation_id, ctx, (c) => changed(c, frame.data.changed));
      return;
  }
}

/** A new stream or a `resync`: everything shown is loaded again over REST. */
export async function reloadAll(qc: QueryClient): Promise<void> {
  await Promise.all([
    qc.invalidateQueries({ queryKey: keys.lists }),
    qc.invalidateQueries({ queryKey: keys.threads }),
    qc.invalidateQueries({ queryKey: ["conversation"] }),
  ]);
}

/**
 * The read mark moved: no unread messages left in any copy of the
 * conversation. It stays where it is in an "unread only" list until that
 * list is loaded again, so a row does not vanish under the pointer.
 */
export function markedRead(qc: QueryClient, id: string): void {
  const clear = (c: Conversation): Conversation => (c.unread_count === 0 ? c : { ...c, unread_count: 0 });
  qc.setQueryData<Conversation>(keys.conversation(id), (c) => (c ? clear(c) : c));
  for (const [filters, data] of cachedLists(qc)) {
    const { data: next, found } = updateInList(data, id, clear);
    if (found) qc.setQueryData<ListData>(keys.list(filters), next);
  }
}
