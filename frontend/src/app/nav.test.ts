import { describe, expect, it } from "vitest";
import { mayOpen, pageOf, pagesOf, sectionOf, sectionsFor } from "./nav";

const perms = (...keys: string[]) => new Set(keys);

describe("navigation by permission", () => {
  it("shows only the sections a user may use", () => {
    expect(sectionsFor(perms("inbox.read_assigned", "inbox.reply"))).toEqual(["inbox"]);
    expect(sectionsFor(perms("inbox.read_all", "audit.read"))).toEqual(["inbox", "admin"]);
    expect(sectionsFor(perms("ops.dlq"))).toEqual(["ops"]);
    expect(sectionsFor(perms())).toEqual([]);
  });

  it("lists a section's pages in menu order, each behind its right", () => {
    const all = perms("users.manage", "roles.manage", "audit.read", "ops.outbox", "ops.dlq", "ops.telegram");
    expect(pagesOf("admin", all).map((p) => p.slug)).toEqual(["users", "roles", "audit"]);
    expect(pagesOf("ops", all).map((p) => p.slug)).toEqual(["outbox", "dlq", "telegram"]);
    expect(pagesOf("ops", perms("ops.telegram")).map((p) => p.slug)).toEqual(["telegram"]);
    expect(pagesOf("admin", perms("ops.dlq"))).toEqual([]);
  });

  it("reads the section and page from a path", () => {
    expect(sectionOf("/inbox/abc")).toBe("inbox");
    expect(sectionOf("/admin/users")).toBe("admin");
    expect(sectionOf("/ops")).toBe("ops");
    expect(pageOf("/ops/dlq")?.needs).toEqual(["ops.dlq"]);
    expect(pageOf("/ops")).toBeUndefined();
    expect(pageOf("/admin/nothing")).toBeUndefined();
  });

  it("says a page is closed once its right is gone", () => {
    const page = pageOf("/admin/roles")!;
    expect(mayOpen(page, perms("roles.manage"))).toBe(true);
    expect(mayOpen(page, perms("users.manage"))).toBe(false);
  });
});
