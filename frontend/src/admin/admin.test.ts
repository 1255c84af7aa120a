import { describe, expect, it } from "vitest";
import { groupByArea, withPermission } from "./matrix";
import { auditFilters, auditQuery } from "./auditFilters";
import { toggled } from "./RoleChecks";

describe("the permission matrix", () => {
  const order = ["inbox.read_all", "inbox.reply", "users.manage", "ops.dlq"];
  it("adds and removes one key, in the catalogue's order, without duplicates", () => {
    expect(withPermission(["ops.dlq", "inbox.read_all"], "inbox.reply", true, order)).toEqual(["inbox.read_all", "inbox.reply", "ops.dlq"]);
    expect(withPermission(["inbox.reply"], "inbox.reply", true, order)).toEqual(["inbox.reply"]);
    expect(withPermission(["inbox.reply", "ops.dlq"], "inbox.reply", false, order)).toEqual(["ops.dlq"]);
    expect(withPermission([], "zzz.new", true, order)).toEqual(["zzz.new"]);
  });
  it("groups the catalogue by area", () => {
    const groups = groupByArea(order.map((key) => ({ key })));
    expect(groups.map(([a, ps]) => [a, ps.length])).toEqual([
      ["inbox", 2],
      ["users", 1],
      ["ops", 1],
    ]);
  });
});

describe("the audit log's filters", () => {
  it("reads them from the URL and leaves unset ones out of the query", () => {
    const id = "0b7c6f9e-1d2a-4c3b-9e8f-123456789abc";
    const f = auditFilters(new URLSearchParams(`target_type=role&actor_id=${id}&target_id=%20`));
    expect(f).toEqual({ target_type: "role", target_id: null, actor_id: id });
    expect(auditQuery(f)).toEqual({ target_type: "role", actor_id: id });
  });
  it("drops an actor that is not an id", () => {
    expect(auditFilters(new URLSearchParams("actor_id=bob")).actor_id).toBeNull();
  });
});

describe("role checkboxes", () => {
  it("add a role once, in the order ticked, and remove it", () => {
    expect(toggled([], "a", true)).toEqual(["a"]);
    expect(toggled(["a"], "b", true)).toEqual(["a", "b"]);
    expect(toggled(["a", "b"], "a", true)).toEqual(["a", "b"]);
    expect(toggled(["a", "b"], "a", false)).toEqual(["b"]);
    expect(toggled(["b"], "a", false)).toEqual(["b"]);
  });
});
