//! How socket frames and REST answers change what the client holds, as pure
//! functions over the cached data: a thread's messages, and pages of the
//! conversation list. Frames are applied in order and idempotently.

import type { Conversation, ConversationChange, Message, PageConversation, StatusFrameData } from "../api/types";

/** A conversation's loaded messages, oldest first, and the cursor to older ones. */
export interface Thread {
  items: Message[];
  nextCursor: string | null;
}

function byTime(a: Message, b: Message): number {
  return a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * Puts `m` in the thread, replacing the copy with its id. With `keepExisting`
 * (a POST's answer, which may be older than frames already applied) an
 * existing copy wins.
 */
export function upsertMessage(thread: Thread, m: Message, keepExisting = false): Thread {
  const at = thread.items.findIndex((x) => x.id === m.id);
  if (at >= 0) {
    if (keepExisting) return thread;
    const items = thread.items.slice();
    items[at] = m;
    return { ...thread, items };
  }
  return { ...thread, items: [...thread.items, m].sort(byTime) };
}

/**
 * Puts the answer to an edit or a deletion in the thread, unless the copy
 * there already shows that change: the socket's frames of it (how far it got
 * in Telegram) may have come before the answer, and are as new or newer.
 */
export function applyChangeAnswer(thread: Thread, m: Message): Thread {
  const current = thread.items.find((x) => x.id === m.id);
  const shown =
    current !== undefined &&
    current.change_status !== null &&
    current.change_kind === m.change_kind &&
    current.text === m.text &&
    (current.deleted_at === null) === (m.deleted_at === null);
  return shown ? thread : upsertMessage(thread, m);
}

/** Applies a `message.status` frame to the reply it names, if loaded. */
export function applyStatus(thread: Thread, s: StatusFrameData): Thread {
  const at = thread.items.findIndex((x) => x.id === s.message_id);
  const current = thread.items[at];
  if (!current) return thread;
  const items = thread.items.slice();
  items[at] = {
    ...current,
    status: s.status,
    error: s.error,
    retry_at: s.retry_at,
    attempts: s.attempt,
    tg_message_id: s.tg_message_id ?? current.tg_message_id,
    sent_at: s.status === "sent" ? (current.sent_at ?? new Date().toISOString()) : current.sent_at,
  };
  return { ...thread, items };
}

/** Older messages (a REST page, newest first) joined to the thread. */
export function appendOlder(thread: Thread, page: Message[], nextCursor: string | null): Thread {
  let next: Thread = { ...thread, nextCursor };
  for (const m of page) next = upsertMessage(next, m, true);
  return next;
}

/** A REST page (newest first) as a thread. */
export function threadFromPage(page: Message[], nextCursor: string | null): Thread {
  return { items: page.slice().sort(byTime), nextCursor };
}

export interface ListData {
  pages: PageConversation[];
  pageParams: unknown[];
}

/** Changes one conversation wherever it is in the list's pages. */
export function updateInList(
  data: ListData,
  id: string,
  change: (c: Conversation) => Conversation,
): { data: ListData; found: boolean } {
  let found = false;
  const pages = data.pages.map((page) => {
    if (!page.items.some((c) => c.id === id)) return page;
    found = true;
    return { ...page, items: page.items.map((c) => (c.id === id ? change(c) : c)) };
  });
  return { data: found ? { ...data, pages } : data, found };
}

/** Removes a conversation from every page of the list. */
export function removeFromList(data: ListData, id: string): ListData {
  return { ...data, pages: data.pages.map((p) => ({ ...p, items: p.items.filter((c) => c.id !== id) })) };
}

/** Puts a conversation at the top of the list (a new one, or one that now belongs). */
export function insertInList(data: ListData, c: Conversation): ListData {
  const cleaned = removeFromList(data, c.id);
  const [head, ...tail] = cleaned.pages;
  if (!head) return { pages: [{ items: [c], next_cursor: null }], pageParams: [null] };
  return { ...cleaned, pages: [{ ...head, items: [c, ...head.items] }, ...tail] };
}

/** What an inbound or outbound message does to its conversation's row. */
export function touched(c: Conversation, m: Message, countUnread: boolean): Conversation {
  const later = m.created_at > c.last_message_at ? m.created_at : c.last_message_at;
  const inbound = m.direction === "in" && m.edited_at === null;
  return {
    ...c,
    last_message_at: later,
    // An inbound message reopens a resolved or snoozed conversation (no frame says so).
    status: inbound && (c.status === "resolved" || c.status === "snoozed") ? "open" : c.status,
    snoozed_until: inbound ? null : c.snoozed_until,
    unread_count: inbound && countUnread ? c.unread_count + 1 : c.unread_count,
  };
}

export function changed(c: Conversation, ch: ConversationChange["changed"]): Conversation {
  return { ...c, ...ch };
}

/**
 * The list's rows, each once, in the API's order: newest activity first,
 * then the larger id (Telegram's dates have whole seconds, so ties are common).
 */
export function flatten(data: ListData | undefined): Conversation[] {
  if (!data) return [];
  const seen = new Map<string, Conversation>();
  for (const page of data.pages) for (const c of page.items) if (!seen.has(c.id)) seen.set(c.id, c);
  const desc = (a: string, b: string) => (a < b ? 1 : a > b ? -1 : 0);
  return [...seen.values()].sort((a, b) => desc(a.last_message_at, b.last_message_at) || desc(a.id, b.id));
}
