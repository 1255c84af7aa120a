//! Which sections and pages a user may open, from their permissions: the
//! navigation shows only these, and a page whose right goes away says so.

import type { MessageKey } from "../i18n/en";

export type Section = "inbox" | "admin" | "ops";

export interface PageDef {
  section: Exclude<Section, "inbox">;
  /** The path under `/admin` or `/ops`. */
  slug: string;
  label: MessageKey;
  /** Any one of these opens the page. */
  needs: readonly string[];
}

export const PAGES: readonly PageDef[] = [
  { section: "admin", slug: "users", label: "nav.users", needs: ["users.manage"] },
  { section: "admin", slug: "roles", label: "nav.roles", needs: ["roles.manage"] },
  { section: "admin", slug: "audit", label: "nav.audit", needs: ["audit.read"] },
  { section: "ops", slug: "outbox", label: "nav.outbox", needs: ["ops.outbox"] },
  { section: "ops", slug: "dlq", label: "nav.dlq", needs: ["ops.dlq"] },
  { section: "ops", slug: "telegram", label: "nav.telegram", needs: ["ops.telegram"] },
];

export const INBOX_NEEDS = ["inbox.read_all", "inbox.read_assigned"] as const;

export function mayOpen(page: Pick<PageDef, "needs">, perms: ReadonlySet<string>): boolean {
  return page.needs.some((p) => perms.has(p));
}

/** The pages of `section` the user may open, in menu order. */
export function pagesOf(section: Exclude<Section, "inbox">, perms: ReadonlySet<string>): PageDef[] {
  return PAGES.filter((p) => p.section === section && mayOpen(p, perms));
}

/** The sections the top bar shows. */
export function sectionsFor(perms: ReadonlySet<string>): Section[] {
  const out: Section[] = [];
  if (INBOX_NEEDS.some((p) => perms.has(p))) out.push("inbox");
  if (pagesOf("admin", perms).length > 0) out.push("admin");
  if (pagesOf("ops", perms).length > 0) out.push("ops");
  return out;
}

/** The section a path belongs to (`/inbox…`, `/admin…`, `/ops…`). */
export function sectionOf(pathname: string): Section {
  if (pathname.startsWith("/admin")) return "admin";
  if (pathname.startsWith("/ops")) return "ops";
  return "inbox";
}

/** The page a path names, if it is one of `PAGES`. */
export function pageOf(pathname: string): PageDef | undefined {
  const [, section, slug] = pathname.split("/");
  return PAGES.find((p) => p.section === section && p.slug === slug);
}
