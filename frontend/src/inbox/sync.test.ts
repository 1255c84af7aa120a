import { describe, expect, it, vi } from "vitest";
import { QueryClient } from "@tanstack/react-query";
import { applyFrame, markedRead, type SyncContext } from "./sync";
import { keys } from "./queries";
import { DEFAULT_FILTERS, type Filters } from "./filters";
import { flatten, type ListData, type Thread } from "./live";
import { conv, msg } from "../test/fixtures";

const ctx = (over: Partial<SyncContext> = {}): SyncContext => ({
  meId: "me",
  openId: null,
  visible: true,
  onReadNeeded: vi.fn(),
  ...over,
});

function withList(qc: QueryClient, f: Filters, ...ids: string[]) {
  const data: ListData = {
    pages: [{ items: ids.map((id, i) => conv({ id, last_message_at: `2026-01-01T10:00:0${9 - i}Z` })), next_cursor: null }],
    pageParams: [null],
  };
  qc.setQueryData(keys.list(f), data);
}
const ids = (qc: QueryClient, f: Filters) => flatten(qc.getQueryData<ListData>(keys.list(f))).map((c) => c.id);

describe("frames into the cache", () => {
  it("an inbound message moves its conversation to the top, unread, and into the open thread", () => {
    const qc = new QueryClient();
    withList(qc, DEFAULT_FILTERS, "a", "b", "c");
    qc.setQueryData<Thread>(keys.thread("c"), { items: [], nextCursor: null });
    applyFrame(qc, { id: 1, type: "message.created", data: msg({ id: "m9", conversation_id: "c", direction: "in", created_at: "2026-01-02T00:00:00Z" }) }, ctx());
    expect(ids(qc, DEFAULT_FILTERS)).toEqual(["c", "a", "b"]);
    expect(flatten(qc.getQueryData<ListData>(keys.list(DEFAULT_FILTERS)))[0]!.unread_count).toBe(1);
    expect(qc.getQueryData<Thread>(keys.thread("c"))!.items.map((m) => m.id)).toEqual(["m9"]);
  });

  it("a message read as it comes asks for the read mark instead of counting", () => {
    const qc = new QueryClient();
    withList(qc, DEFAULT_FILTERS, "a");
    const c = ctx({ openId: "a" });
    applyFrame(qc, { id: 1, type: "message.created", data: msg({ conversation_id: "a", direction: "in", created_at: "2026-01-02T00:00:00Z" }) }, c);
    expect(c.onReadNeeded).toHaveBeenCalledWith("a");
    expect(flatten(qc.getQueryData<ListData>(keys.list(DEFAULT_FILTERS)))[0]!.unread_count).toBe(0);
  });

  it("a conversation the tab never saw makes the lists load again", () => {
    const qc = new QueryClient();
    withList(qc, DEFAULT_FILTERS, "a");
    const spy = vi.spyOn(qc, "invalidateQueries");
    applyFrame(qc, { id: 1, type: "message.created", data: msg({ conversation_id: "new", direction: "in" }) }, ctx());
    expect(spy).toHaveBeenCalledWith({ queryKey: keys.list(DEFAULT_FILTERS), exact: true });
  });

  it("a status change leaves lists it no longer fits and enters those it does", () => {
    const qc = new QueryClient();
    const resolved: Filters = { ...DEFAULT_FILTERS, status: "resolved" };
    withList(qc, DEFAULT_FILTERS, "a", "b");
    withList(qc, resolved, "z");
    applyFrame(qc, { id: 1, type: "conversation.updated", data: { conversation_id: "a", changed: { status: "resolved" } } }, ctx());
    expect(ids(qc, DEFAULT_FILTERS)).toEqual(["b"]);
    expect(ids(qc, resolved).sort()).toEqual(["a", "z"]);
  });

  it("an assignment away from me leaves my list", () => {
    const qc = new QueryClient();
    const mine: Filters = { ...DEFAULT_FILTERS, view: "mine" };
    qc.setQueryData<ListData>(keys.list(mine), { pages: [{ items: [conv({ id: "a", assignee_id: "me" })], next_cursor: null }], pageParams: [null] });
    applyFrame(qc, { id: 1, type: "conversation.updated", data: { conversation_id: "a", changed: { assignee_id: "other" } } }, ctx());
    expect(ids(qc, mine)).toEqual([]);
  });

  it("delivery statuses reach the thread", () => {
    const qc = new QueryClient();
    qc.setQueryData<Thread>(keys.thread("c1"), { items: [msg()], nextCursor: null });
    applyFrame(qc, { id: 2, type: "message.status", data: { message_id: "m1", conversation_id: "c1", status: "sent", tg_message_id: 5, error: null, attempt: 1, retry_at: null } }, ctx());
    expect(qc.getQueryData<Thread>(keys.thread("c1"))!.items[0]).toMatchObject({ status: "sent", tg_message_id: 5 });
  });

  it("a read mark clears the badge but keeps the row in an unread-only list", () => {
    const qc = new QueryClient();
    const unread: Filters = { ...DEFAULT_FILTERS, unread: true };
    qc.setQueryData<ListData>(keys.list(unread), { pages: [{ items: [conv({ id: "a", unread_count: 3 })], next_cursor: null }], pageParams: [null] });
    markedRead(qc, "a");
    expect(flatten(qc.getQueryData<ListData>(keys.list(unread)))).toMatchObject([{ id: "a", unread_count: 0 }]);
  });
});
