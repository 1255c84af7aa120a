//! The conversation list: filters kept in the URL, and a virtualized list of
//! rows (thousands scroll smoothly) that the socket reorders live.

import { useEffect, useMemo, useRef, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { useVirtualizer } from "@tanstack/react-virtual";
import { useI18n } from "../i18n";
import { ApiFailure } from "../api/failure";
import type { Conversation } from "../api/types";
import { filtersToParams, parseFilters, STATUSES, VIEWS, type Filters, type View } from "./filters";
import { flatten } from "./live";
import { useConversationList } from "./queries";
import { displayName, initials, shortTime } from "./names";

const ROW_HEIGHT = 68;

function FilterBar({ filters }: { filters: Filters }) {
  const { t } = useI18n();
  const [, setParams] = useSearchParams();
  const [q, setQ] = useState(filters.q);
  // The controls show a change at once: the URL's navigation runs as a
  // transition, which a long list can hold back for a moment.
  const [unread, setUnread] = useState(filters.unread);
  const [status, setStatus] = useState(filters.status);
  useEffect(() => setUnread(filters.unread), [filters.unread]);
  useEffect(() => setStatus(filters.status), [filters.status]);
  // A change applies to the filters in the URL as they are when it lands, not
  // as this render saw them: a click right after a tab's navigation keeps both.
  const apply = (change: Partial<Filters>) =>
    setParams((current) => filtersToParams({ ...parseFilters(current), ...change }), { replace: true });
  useEffect(() => setQ(filters.q), [filters.q]);
  // The search goes to the URL after a pause in typing.
  useEffect(() => {
    if (q === filters.q) return;
    const h = setTimeout(() => apply({ q }), 300);
    return () => clearTimeout(h);
  });
  return (
    <div className="filters" role="group" aria-label={t("list.filters")}>
      <nav className="tabs" aria-label={t("list.filters")}>
        {VIEWS.map((v: View) => (
          <Link
            key={v}
            to={{ search: filtersToParams({ ...filters, view: v }).toString() }}
            aria-current={filters.view === v ? "page" : undefined}
            className={filters.view === v ? "tab active" : "tab"}
            replace
          >
            {t(`view.${v}`)}
          </Link>
        ))}
      </nav>
      <div className="filter-row">
        <label className="visually-hidden" htmlFor="status-filter">
          {t("filter.status")}
        </label>
        <select
          id="status-filter"
          value={status ?? "all"}
          onChange={(e) => {
            const next = e.target.value === "all" ? null : (e.target.value as Filters["status"]);
            setStatus(next);
            apply({ status: next });
          }}
        >
          <option value="all">{t("filter.status.all")}</option>
          {STATUSES.map((s) => (
            <option key={s} value={s}>
              {t(`status.${s}`)}
            </option>
          ))}
        </select>
        <label className="check">
          <input
            type="checkbox"
            checked={unread}
            onChange={(e) => {
              setUnread(e.target.checked);
              apply({ unread: e.target.checked });
            }}
          />
          {t("filter.unread")}
        </label>
      </div>
      <label className="visually-hidden" htmlFor="search">
        {t("filter.search")}
      </label>
      <input
        id="search"
        type="search"
        value={q}
        placeholder={t("filter.search.placeholder")}
        onChange={(e) => setQ(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === "Enter") apply({ q });
        }}
        maxLength={200}
        aria-keyshortcuts="/"
      />
    </div>
  );
}

function Row({ c, selected, meId, search }: { c: Conversation; selected: boolean; meId: string | null; search: string }) {
  const { t, lang } = useI18n();
  const name = displayName(c);
  const unread = c.unread_count > 0;
  return (
    <Link
      to={{ pathname: `/inbox/${c.id}`, search }}
      className={`row${selected ? " selected" : ""}${unread ? " unread" : ""}`}
      aria-current={selected ? "true" : undefined}
      data-testid="conversation-row"
      data-conversation-id={c.id}
    >
      <span className="avatar" aria-hidden="true">
        {initials(name)}
      </span>
      <span className="row-main">
        <span className="row-top">
          <span className="row-name">{name}</span>
          <time className="row-time" dateTime={c.last_message_at}>
            {shortTime(c.last_message_at, lang === "ru" ? "ru-RU" : "en-GB")}
          </time>
        </span>
        <span className="row-bottom">
          <span className={`chip status-${c.status}`}>{t(`status.${c.status}`)}</span>
          {c.contact_username && <span className="row-user">@{c.contact_username}</span>}
          {c.assignee_id && (
            <span className="row-assignee">{c.assignee_id === meId ? t("list.assigned.me") : t("list.assigned.other")}</span>
          )}
          {unread && (
            <span className="badge" data-testid="unread-badge" aria-label={t("list.unread", { count: c.unread_count })}>
              {c.unread_count}
            </span>
          )}
        </span>
      </span>
    </Link>
  );
}

export function ConversationList({
  filters,
  selectedId,
  meId,
  onRows,
}: {
  filters: Filters;
  selectedId: string | null;
  meId: string | null;
  onRows(ids: string[]): void;
}) {
  const { t } = useI18n();
  const query = useConversationList(filters);
  const rows = useMemo(() => flatten(query.data), [query.data]);
  const scroller = useRef<HTMLDivElement>(null);
  const virtual = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => ROW_HEIGHT,
    overscan: 10,
  });
  const items = virtual.getVirtualItems();
  const search = filtersToParams(filters).toString();

  useEffect(() => onRows(rows.map((r) => r.id)), [rows, onRows]);

  // Load the next page when the end comes into view.
  const last = items[items.length - 1];
  useEffect(() => {
    if (last && last.index >= rows.length - 10 && query.hasNextPage && !query.isFetchingNextPage) {
      void query.fetchNextPage();
    }
  }, [last, rows.length, query]);

  // Bring the selected row into view when the selection moves (j / k), not
  // when live updates reorder the list under a reader who scrolled away.
  const rowsRef = useRef(rows);
  rowsRef.current = rows;
  useEffect(() => {
    if (!selectedId) return;
    const at = rowsRef.current.findIndex((r) => r.id === selectedId);
    if (at >= 0) virtual.scrollToIndex(at, { align: "auto" });
  }, [selectedId, virtual]);

  let body;
  if (query.isPending) {
    body = (
      <p className="state" role="status">
        {t("list.loading")}
      </p>
    );
  } else if (query.isError) {
    const message = query.error instanceof ApiFailure ? query.error.message : String(query.error);
    body = (
      <div className="state error" role="alert">
        <p>{t("list.error", { message })}</p>
        <button type="button" onClick={() => void query.refetch()}>
          {t("list.retry")}
        </button>
      </div>
    );
  } else if (rows.length === 0) {
    const filtered = search !== "";
    body = (
      <div className="state" data-testid="list-empty">
        <p>{filtered ? t("list.empty") : t("list.empty.all")}</p>
        {filtered && (
          <Link to={{ search: "" }} replace>
            {t("filter.clear")}
          </Link>
        )}
      </div>
    );
  }

  return (
    <section className="list-pane" aria-labelledby="list-title">
      <h2 id="list-title" className="visually-hidden">
        {t("list.label")}
      </h2>
      <FilterBar filters={filters} />
      {body ?? (
        <div ref={scroller} className="list-scroll" data-testid="conversation-list">
          <div role="list" aria-label={t("list.label")} style={{ height: virtual.getTotalSize(), position: "relative" }}>
            {items.map((v) => {
              const c = rows[v.index]!;
              return (
                <div
                  role="listitem"
                  key={c.id}
                  data-index={v.index}
                  style={{ position: "absolute", top: 0, left: 0, right: 0, height: ROW_HEIGHT, transform: `translateY(${v.start}px)` }}
                >
                  <Row c={c} selected={c.id === selectedId} meId={meId} search={search} />
                </div>
              );
            })}
          </div>
          {query.isFetchingNextPage && (
            <p className="state small" role="status">
              {t("list.more")}
            </p>
          )}
        </div>
      )}
    </section>
  );
}
