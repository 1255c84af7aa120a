import { describe, expect, it } from "vitest";
import { applyChangeAnswer, applyStatus, flatten, insertInList, removeFromList, touched, upsertMessage, type ListData, type Thread } from "./live";
import { conv, msg } from "../test/fixtures";

const empty: Thread = { items: [], nextCursor: null };

describe("thread", () => {
  it("keeps messages once each, oldest first", () => {
    let t = upsertMessage(empty, msg({ id: "b", created_at: "2026-01-01T10:00:02Z" }));
    t = upsertMessage(t, msg({ id: "a", created_at: "2026-01-01T10:00:01Z" }));
    t = upsertMessage(t, msg({ id: "b", created_at: "2026-01-01T10:00:02Z", text: "edited" }));
    expect(t.items.map((m) => [m.id, m.text])).toEqual([
      ["a", "hi"],
      ["b", "edited"],
    ]);
  });

  it("lets a frame already applied win over a POST's older answer", () => {
    const t = applyStatus(upsertMessage(empty, msg()), {
      message_id: "m1",
      conversation_id: "c1",
      status: "sent",
      tg_message_id: 7,
      error: null,
      attempt: 1,
      retry_at: null,
    });
    expect(upsertMessage(t, msg(), true).items[0]!.status).toBe("sent");
  });

  it("applies statuses in order: retrying with its time and reason, then failed", () => {
    let t = upsertMessage(empty, msg());
    t = applyStatus(t, { message_id: "m1", conversation_id: "c1", status: "retrying", tg_message_id: null, error: "flood wait 5s", attempt: 1, retry_at: "2026-01-01T10:00:05Z" });
    expect(t.items[0]).toMatchObject({ status: "retrying", error: "flood wait 5s", retry_at: "2026-01-01T10:00:05Z", attempts: 1 });
    t = applyStatus(t, { message_id: "m1", conversation_id: "c1", status: "failed", tg_message_id: null, error: "chat_not_found", attempt: 2, retry_at: null });
    expect(t.items[0]).toMatchObject({ status: "failed", error: "chat_not_found", retry_at: null });
    expect(applyStatus(t, { message_id: "zz", conversation_id: "c1", status: "sent", tg_message_id: 1, error: null, attempt: 1, retry_at: null })).toBe(t);
  });
});

describe("list", () => {
  const data = (...ids: string[]): ListData => ({
    pages: [{ items: ids.map((id, i) => conv({ id, last_message_at: `2026-01-01T10:00:0${9 - i}Z` })), next_cursor: null }],
    pageParams: [null],
  });

  it("orders by the latest activity, each conversation once", () => {
    const d: ListData = {
      pages: [
        { items: [conv({ id: "a", last_message_at: "2026-01-01T10:00:01Z" }), conv({ id: "b", last_message_at: "2026-01-01T10:00:03Z" })], next_cursor: "x" },
        { items: [conv({ id: "a", last_message_at: "2026-01-01T10:00:01Z" }), conv({ id: "c", last_message_at: "2026-01-01T10:00:02Z" })], next_cursor: null },
      ],
      pageParams: [null, "x"],
    };
    expect(flatten(d).map((c) => c.id)).toEqual(["b", "c", "a"]);
  });

  it("breaks a tie of times as the API does: the larger id first", () => {
    const at = "2026-01-01T10:00:00Z";
    const d: ListData = { pages: [{ items: [conv({ id: "0199-a", last_message_at: at }), conv({ id: "0199-b", last_message_at: at })], next_cursor: null }], pageParams: [null] };
    expect(flatten(d).map((c) => c.id)).toEqual(["0199-b", "0199-a"]);
  });

  it("an inbound message moves its conversation up, counts it unread and reopens it", () => {
    const c = conv({ status: "resolved", unread_count: 2 });
    const next = touched(c, msg({ direction: "in", created_at: "2026-01-02T00:00:00Z" }), true);
    expect(next).toMatchObject({ last_message_at: "2026-01-02T00:00:00Z", unread_count: 3, status: "open" });
    expect(touched(c, msg({ direction: "in", created_at: "2026-01-02T00:00:00Z" }), false).unread_count).toBe(2);
    expect(touched(c, msg({ direction: "out", created_at: "2026-01-02T00:00:00Z" }), true)).toMatchObject({ unread_count: 2, status: "resolved" });
  });

  it("inserts at the top and removes everywhere", () => {
    const d = insertInList(data("a", "b"), conv({ id: "b", last_message_at: "2026-02-01T00:00:00Z" }));
    expect(d.pages[0]!.items.map((c) => c.id)).toEqual(["b", "a"]);
    expect(flatten(removeFromList(d, "b")).map((c) => c.id)).toEqual(["a"]);
    expect(insertInList({ pages: [], pageParams: [] }, conv({ id: "z" })).pages[0]!.items.map((c) => c.id)).toEqual(["z"]);
  });
});

describe("the answer to an edit or a deletion", () => {
  const thread = (m: ReturnType<typeof msg>): Thread => ({ items: [m], nextCursor: null });
  const sent = msg({ status: "sent", text: "Room 4" });

  it("shows the change asked", () => {
    const answer = msg({ status: "sent", text: "Room 5", change_kind: "edit", change_status: "queued" });
    expect(applyChangeAnswer(thread(sent), answer).items[0]).toEqual(answer);
  });

  it("does not undo frames of the same change that came before it", () => {
    const framed = msg({ status: "sent", text: "Room 5", change_kind: "edit", change_status: "sent" });
    const answer = msg({ status: "sent", text: "Room 5", change_kind: "edit", change_status: "queued" });
    expect(applyChangeAnswer(thread(framed), answer).items[0]!.change_status).toBe("sent");
    // A later change replaces the earlier one's state.
    const deleting = msg({ ...framed, change_kind: "delete", change_status: "queued", deleted_at: "2026-01-01T10:05:00Z" });
    expect(applyChangeAnswer(thread(framed), deleting).items[0]).toEqual(deleting);
    const again = msg({ ...framed, text: "Room 6", change_status: "queued" });
    expect(applyChangeAnswer(thread(framed), again).items[0]!.text).toBe("Room 6");
  });
});
