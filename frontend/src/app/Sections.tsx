//! The top bar's navigation (Inbox / Admin / Ops, only what the user may
//! use), and the admin and ops sections: their page menu, the page, and what
//! a page says when its right is gone while it is open.

import { lazy, Suspense, type ComponentType } from "react";
import { Navigate, NavLink, useLocation } from "react-router";
import { useI18n } from "../i18n";
import { useSession } from "./services";
import { pageOf, pagesOf, sectionsFor, type Section } from "./nav";
import { Forbidden, Loading } from "../ui/pageStates";
import { opsLinks } from "../config";

// The admin and ops pages load on first use: the inbox's first render does
// not wait for them.
const ops = () => import("./opsPages");
const admin = () => import("./adminPages");
const OutboxPage = lazy(() => ops().then((m) => ({ default: m.OutboxPage })));
const DlqPage = lazy(() => ops().then((m) => ({ default: m.DlqPage })));
const TelegramPage = lazy(() => ops().then((m) => ({ default: m.TelegramPage })));
const UsersPage = lazy(() => admin().then((m) => ({ default: m.UsersPage })));
const RolesPage = lazy(() => admin().then((m) => ({ default: m.RolesPage })));
const AuditPage = lazy(() => admin().then((m) => ({ default: m.AuditPage })));

const NAMES: Record<Section, "nav.inbox" | "nav.admin" | "nav.ops"> = {
  inbox: "nav.inbox",
  admin: "nav.admin",
  ops: "nav.ops",
};

export function MainNav() {
  const { t } = useI18n();
  const { permissions } = useSession();
  const sections = permissions ? sectionsFor(permissions) : [];
  // One section alone needs no menu.
  if (sections.length < 2) return null;
  return (
    <nav aria-label={t("nav.label")} className="mainnav">
      {sections.map((s) => (
        <NavLink key={s} to={`/${s}`} className={({ isActive }) => `tab${isActive ? " active" : ""}`} data-testid={`nav-${s}`}>
          {t(NAMES[s])}
        </NavLink>
      ))}
    </nav>
  );
}

const PAGE_COMPONENTS: Record<string, ComponentType> = {
  "admin/users": UsersPage,
  "admin/roles": RolesPage,
  "admin/audit": AuditPage,
  "ops/outbox": OutboxPage,
  "ops/dlq": DlqPage,
  "ops/telegram": TelegramPage,
};

function OpsLinks() {
  const { t } = useI18n();
  const { broker, grafana } = opsLinks();
  if (!broker && !grafana) return null;
  return (
    <ul className="side-links" aria-label={t("nav.tools")}>
      {broker && (
        <li>
          <a href={broker} target="_blank" rel="noreferrer" data-testid="link-broker">
            {t("nav.broker")}
          </a>
        </li>
      )}
      {grafana && (
        <li>
          <a href={grafana} target="_blank" rel="noreferrer" data-testid="link-grafana">
            {t("nav.grafana")}
          </a>
        </li>
      )}
    </ul>
  );
}

export function SectionView({ section }: { section: Exclude<Section, "inbox"> }) {
  const { t } = useI18n();
  const { permissions } = useSession();
  const { pathname } = useLocation();
  if (!permissions) return <Loading />;
  const pages = pagesOf(section, permissions);
  const page = pageOf(pathname);
  // `/admin` or `/ops` alone: the first page the user may open.
  if (!page) {
    const first = pages[0];
    if (first) return <Navigate to={`/${section}/${first.slug}`} replace />;
  }
  const allowed = page && pages.some((p) => p.slug === page.slug);
  const Page = page ? PAGE_COMPONENTS[`${page.section}/${page.slug}`] : undefined;
  return (
    <div className="section">
      <nav className="side" aria-label={t(section === "admin" ? "nav.admin" : "nav.ops")}>
        <ul>
          {pages.map((p) => (
            <li key={p.slug}>
              <NavLink to={`/${section}/${p.slug}`} className={({ isActive }) => `side-link${isActive ? " active" : ""}`}>
                {t(p.label)}
              </NavLink>
            </li>
          ))}
        </ul>
        {section === "ops" && <OpsLinks />}
      </nav>
      <main className="section-main" id="main">
        {allowed && Page ? (
          <Suspense fallback={<Loading />}>
            <Page key={pathname} />
          </Suspense>
        ) : (
          <Forbidden />
        )}
      </main>
    </div>
  );
}
