import { describe, expect, it } from "vitest";
import { DEFAULT_FILTERS, belongs, filtersToParams, filtersToQuery, parseFilters } from "./filters";
import { conv } from "../test/fixtures";

describe("filters in the URL", () => {
  it("reads defaults from an empty query and writes none back", () => {
    expect(parseFilters(new URLSearchParams())).toEqual(DEFAULT_FILTERS);
    expect(filtersToParams(DEFAULT_FILTERS).toString()).toBe("");
  });

  it("round-trips every filter", () => {
    const f = { view: "mine", status: null, unread: true, q: "exam" } as const;
    const params = filtersToParams(f);
    expect(params.toString()).toBe("view=mine&status=all&unread=1&q=exam");
    expect(parseFilters(params)).toEqual(f);
  });

  it("ignores values it does not know", () => {
    expect(parseFilters(new URLSearchParams("view=boss&status=weird&unread=yes"))).toEqual(DEFAULT_FILTERS);
  });

  it("asks the API with its own parameter names", () => {
    expect(filtersToQuery({ view: "unassigned", status: "pending", unread: true, q: " a " })).toEqual({
      assignee: "unassigned",
      status: "pending",
      unread: true,
      q: "a",
    });
    expect(filtersToQuery({ ...DEFAULT_FILTERS, status: null })).toEqual({});
  });
});

describe("belongs", () => {
  it("decides status, assignee and unread locally, and leaves a search to the server", () => {
    const f = { view: "mine", status: "open", unread: true, q: "" } as const;
    expect(belongs(conv({ assignee_id: "me", unread_count: 1 }), f, "me")).toBe(true);
    expect(belongs(conv({ assignee_id: "other", unread_count: 1 }), f, "me")).toBe(false);
    expect(belongs(conv({ assignee_id: "me", unread_count: 0 }), f, "me")).toBe(false);
    expect(belongs(conv({ assignee_id: "me", unread_count: 1, status: "resolved" }), f, "me")).toBe(false);
    expect(belongs(conv(), { ...DEFAULT_FILTERS, view: "unassigned" }, "me")).toBe(true);
    expect(belongs(conv(), { ...DEFAULT_FILTERS, q: "ann" }, "me")).toBe("unknown");
  });
});
