//! Drafts, one per conversation and user, kept in localStorage so a switch of
//! conversation, an expired session or a reload loses no text. Each draft
//! carries the `client_msg_id` of its send: sending the same text again (a
//! double click, a retry after a network error) reuses it, so the API answers
//! the first message instead of queueing a second; editing the text drops it.

export type Mode = "reply" | "note";

export interface Draft {
  text: string;
  mode: Mode;
  /** Set at the first send of this text; null until then. */
  clientMsgId: string | null;
}

export const EMPTY_DRAFT: Draft = { text: "", mode: "reply", clientMsgId: null };
const PREFIX = "fastprep.draft.";

export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
  readonly length: number;
  key(index: number): string | null;
}

function store(): KeyValueStore | null {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

const keyOf = (userId: string, conversationId: string) => `${PREFIX}${userId}.${conversationId}`;

export function loadDraft(userId: string, conversationId: string, s: KeyValueStore | null = store()): Draft {
  try {
    const raw = s?.getItem(keyOf(userId, conversationId));
    if (!raw) return EMPTY_DRAFT;
    const d = JSON.parse(raw) as Partial<Draft>;
    return {
      text: typeof d.text === "string" ? d.text : "",
      mode: d.mode === "note" ? "note" : "reply",
      clientMsgId: typeof d.clientMsgId === "string" ? d.clientMsgId : null,
    };
  } catch {
    return EMPTY_DRAFT;
  }
}

export function saveDraft(userId: string, conversationId: string, d: Draft, s: KeyValueStore | null = store()): void {
  try {
    if (!d.text && d.mode === "reply") s?.removeItem(keyOf(userId, conversationId));
    else s?.setItem(keyOf(userId, conversationId), JSON.stringify(d));
  } catch {
    // Full or blocked storage: the draft lives on in memory.
  }
}

/** Removes every draft (sign-out on a shared computer). */
export function clearDrafts(s: KeyValueStore | null = store()): void {
  if (!s) return;
  const doomed: string[] = [];
  for (let i = 0; i < s.length; i++) {
    const k = s.key(i);
    if (k?.startsWith(PREFIX)) doomed.push(k);
  }
  for (const k of doomed) s.removeItem(k);
}

/** The draft with new text; a changed text is a new message with a new id. */
export function withText(d: Draft, text: string): Draft {
  return text === d.text ? d : { ...d, text, clientMsgId: null };
}

export function withMode(d: Draft, mode: Mode): Draft {
  return mode === d.mode ? d : { ...d, mode, clientMsgId: null };
}

/** The id to send `d` with: its own if it was sent before, else a new one. */
export function forSend(d: Draft, newId: () => string): Draft & { clientMsgId: string } {
  return { ...d, clientMsgId: d.clientMsgId ?? newId() };
}
