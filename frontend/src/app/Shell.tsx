//! The signed-in screen: the top bar, the connection banner, the inbox's two
//! panes and the shortcuts list. It owns the socket for the session.

import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { useLocation, useNavigate, useParams, useSearchParams } from "react-router";
import { useServices, useSession } from "./services";
import { useI18n } from "../i18n";
import { unwrap } from "../api/client";
import { useRealtime, type Link } from "../realtime/useRealtime";
import type { SyncContext } from "../inbox/sync";
import { markedRead } from "../inbox/sync";
import { parseFilters } from "../inbox/filters";
import { ConversationList } from "../inbox/ConversationList";
import { ConversationPane } from "../inbox/ConversationPane";
import { clearDrafts } from "../inbox/drafts";
import { LangSwitch } from "../ui/LangSwitch";
import { ShortcutsDialog, useShortcuts } from "../ui/Shortcuts";
import { MainNav, SectionView } from "./Sections";
import { sectionOf } from "./nav";

function LinkBanner({ link }: { link: Link }) {
  const { t } = useI18n();
  // A short "connecting" at start is no news; a drop is.
  const [showConnecting, setShowConnecting] = useState(false);
  useEffect(() => {
    if (link.state !== "connecting") return setShowConnecting(false);
    const h = setTimeout(() => setShowConnecting(true), 2_000);
    return () => clearTimeout(h);
  }, [link.state]);
  const text = link.browserOffline
    ? t("link.browser_offline")
    : link.state === "offline"
      ? t("link.offline")
      : link.state === "connecting" && showConnecting
        ? t("link.connecting")
        : null;
  return (
    <div className="banner-slot" role="status" aria-live="polite">
      {text && (
        <p className="banner" data-testid="offline-banner">
          {text}
        </p>
      )}
    </div>
  );
}

export function Shell() {
  const { t } = useI18n();
  const { session, api, queryClient } = useServices();
  const { user, permissions } = useSession();
  // Known and without a right to read: say so instead of failing requests.
  const mayRead = permissions === null || permissions.has("inbox.read_all") || permissions.has("inbox.read_assigned");
  const { conversationId } = useParams();
  const section = sectionOf(useLocation().pathname);
  const [params] = useSearchParams();
  const navigate = useNavigate();
  const filters = useMemo(() => parseFilters(params), [params]);
  const meId = user?.id ?? null;

  const markRead = useCallback(
    (id: string) => {
      void unwrap(api.POST("/api/conversations/{id}/read", { params: { path: { id } } })).then(
        () => markedRead(queryClient, id),
        () => {},
      );
    },
    [api, queryClient],
  );

  const sync = useRef<SyncContext>({ meId, openId: null, visible: true, onReadNeeded: markRead });
  sync.current = {
    meId,
    openId: conversationId ?? null,
    visible: typeof document === "undefined" || document.visibilityState === "visible",
    onReadNeeded: markRead,
  };
  const link = useRealtime(sync);

  // Permissions come with the socket's first frame too; this gets them when the socket is slow.
  useEffect(() => {
    let live = true;
    unwrap(api.GET("/api/auth/me/ep")).then(
      (ep) => live && session.setPermissions(ep.permissions),
      () => {},
    );
    return () => {
      live = false;
    };
  }, [api, session]);

  const [help, setHelp] = useState(false);
  const [rows, setRows] = useState<string[]>([]);
  useEffect(() => {
    if (section !== "inbox") setRows([]);
  }, [section]);
  useShortcuts({
    openHelp: () => setHelp(true),
    move: (step) => {
      if (rows.length === 0) return;
      const at = conversationId ? rows.indexOf(conversationId) : -1;
      const next = rows[Math.min(rows.length - 1, Math.max(0, at + step))];
      if (next && next !== conversationId) navigate({ pathname: `/inbox/${next}`, search: params.toString() });
    },
  });

  async function signOut() {
    clearDrafts();
    await session.signOut();
  }

  return (
    <div className="app">
      <a className="skip" href={section === "inbox" ? "#thread" : "#main"}>
        {section === "inbox" ? t("app.skip") : t("app.skip_main")}
      </a>
      <header className="topbar">
        <span className="brand">{t("app.name")}</span>
        <span className={`link-dot link-${link.state}`} data-testid="link-state" data-state={link.state}>
          {link.state === "live" ? t("link.live") : link.state === "connecting" ? t("link.connecting") : t("link.state.offline")}
        </span>
        <MainNav />
        <span className="spacer" />
        <LangSwitch />
        <button type="button" className="ghost" onClick={() => setHelp(true)} aria-keyshortcuts="?">
          {t("header.shortcuts")} <kbd>?</kbd>
        </button>
        <span className="who" title={user?.email}>
          {t("header.signed_in_as", { name: user?.display_name ?? "" })}
        </span>
        <button type="button" onClick={() => void signOut()} data-testid="sign-out">
          {t("header.signout")}
        </button>
      </header>
      <LinkBanner link={link} />
      {section !== "inbox" ? (
        <SectionView section={section} />
      ) : mayRead ? (
        <div className="panes">
          <ConversationList filters={filters} selectedId={conversationId ?? null} meId={meId} onRows={setRows} />
          <ConversationPane key={conversationId ?? "none"} id={conversationId} meId={meId} />
        </div>
      ) : (
        <main className="centered" data-testid="inbox-forbidden">
          <h1>{t("inbox.forbidden.title")}</h1>
          <p>{t("inbox.forbidden")}</p>
        </main>
      )}
      <ShortcutsDialog open={help} onClose={() => setHelp(false)} />
    </div>
  );
}
