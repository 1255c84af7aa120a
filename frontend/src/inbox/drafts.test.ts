import { describe, expect, it } from "vitest";
import { EMPTY_DRAFT, clearDrafts, forSend, loadDraft, saveDraft, withMode, withText, type KeyValueStore } from "./drafts";

function memoryStore(): KeyValueStore & { map: Map<string, string> } {
  const map = new Map<string, string>();
  return {
    map,
    getItem: (k) => map.get(k) ?? null,
    setItem: (k, v) => void map.set(k, v),
    removeItem: (k) => void map.delete(k),
    get length() {
      return map.size;
    },
    key: (i) => [...map.keys()][i] ?? null,
  };
}

describe("drafts", () => {
  it("keeps one draft per user and conversation", () => {
    const s = memoryStore();
    saveDraft("u", "c1", { text: "one", mode: "reply", clientMsgId: null }, s);
    saveDraft("u", "c2", { text: "two", mode: "note", clientMsgId: "k" }, s);
    expect(loadDraft("u", "c1", s).text).toBe("one");
    expect(loadDraft("u", "c2", s)).toEqual({ text: "two", mode: "note", clientMsgId: "k" });
    expect(loadDraft("other", "c1", s)).toEqual(EMPTY_DRAFT);
    saveDraft("u", "c1", EMPTY_DRAFT, s);
    expect(s.map.size).toBe(1);
    s.setItem("unrelated", "x");
    clearDrafts(s);
    expect([...s.map.keys()]).toEqual(["unrelated"]);
  });

  it("sends the same text with the same client_msg_id, and new text with a new one", () => {
    let n = 0;
    const id = () => `id${++n}`;
    const first = forSend(withText(EMPTY_DRAFT, "hello"), id);
    expect(first.clientMsgId).toBe("id1");
    // A second click, or a resend after a network error: the same id.
    expect(forSend(first, id).clientMsgId).toBe("id1");
    expect(withText(first, "hello").clientMsgId).toBe("id1");
    // Edited text is another message.
    expect(forSend(withText(first, "hello!"), id).clientMsgId).toBe("id2");
    expect(withMode(first, "note").clientMsgId).toBeNull();
  });

  it("reads a damaged entry as no draft", () => {
    const s = memoryStore();
    s.setItem("fastprep.draft.u.c1", "{not json");
    expect(loadDraft("u", "c1", s)).toEqual(EMPTY_DRAFT);
  });
});
