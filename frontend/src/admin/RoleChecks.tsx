//! The roles of an account as a set of boxes: the new-user form and the
//! roles dialog share it.

import type { components } from "../api/schema";

type Role = components["schemas"]["Role"];

/** `ids` with `id` added or removed, in the order they were ticked. */
export function toggled(ids: readonly string[], id: string, on: boolean): string[] {
  if (on) return ids.includes(id) ? [...ids] : [...ids, id];
  return ids.filter((x) => x !== id);
}

export function RoleChecks({
  roles,
  value,
  onChange,
  legend,
}: {
  roles: readonly Role[];
  value: readonly string[];
  onChange(ids: string[]): void;
  legend: string;
}) {
  return (
    <fieldset className="checks">
      <legend>{legend}</legend>
      {roles.map((r) => (
        <label key={r.id} className="check">
          <input type="checkbox" checked={value.includes(r.id)} onChange={(e) => onChange(toggled(value, r.id, e.target.checked))} />
          {r.name}
        </label>
      ))}
    </fieldset>
  );
}
