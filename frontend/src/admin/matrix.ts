//! The permission matrix's logic: a role's permissions with one key turned
//! on or off, sorted like the catalogue, without duplicates.

export function withPermission(current: readonly string[], key: string, on: boolean, order: readonly string[] = []): string[] {
  const set = new Set(current);
  if (on) set.add(key);
  else set.delete(key);
  const rank = (k: string) => {
    const i = order.indexOf(k);
    return i === -1 ? order.length : i;
  };
  return [...set].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/** Groups catalogue keys by their prefix (`inbox`, `ops`, …), keeping their order. */
export function groupByArea<T extends { key: string }>(perms: readonly T[]): Array<[string, T[]]> {
  const out = new Map<string, T[]>();
  for (const p of perms) {
    const area = p.key.split(".")[0] ?? p.key;
    const list = out.get(area) ?? [];
    list.push(p);
    out.set(area, list);
  }
  return [...out];
}
