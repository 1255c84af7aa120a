//! The audit log, newest first, filtered by target and actor (kept in the URL).

import { useInfiniteQuery, useQuery } from "@tanstack/react-query";
import { useSearchParams } from "react-router";
import { useState, type FormEvent } from "react";
import { unwrap } from "../api/client";
import { useServices, useCan } from "../app/services";
import { useI18n } from "../i18n";
import { LoadError, Loading } from "../ui/pageStates";
import { auditFilters, auditQuery, type AuditFilters } from "./auditFilters";
import { usersKey } from "./UsersPage";

export function AuditPage() {
  const { t, dateTime } = useI18n();
  const { api } = useServices();
  const [params, setParams] = useSearchParams();
  const filters = auditFilters(params);
  const canUsers = useCan("users.manage");
  const users = useQuery({
    queryKey: usersKey,
    queryFn: ({ signal }) => unwrap(api.GET("/api/users", { signal })),
    enabled: canUsers,
  });
  const nameOf = (id: string | null) =>
    id === null ? t("audit.system") : (users.data?.find((u) => u.id === id)?.display_name ?? id.slice(0, 8));
  const q = useInfiniteQuery({
    queryKey: ["admin", "audit", filters],
    initialPageParam: null as string | null,
    queryFn: ({ pageParam, signal }) =>
      unwrap(api.GET("/api/audit", { params: { query: { ...auditQuery(filters), limit: 50, ...(pageParam ? { cursor: pageParam } : {}) } }, signal })),
    getNextPageParam: (last) => last.next_cursor,
    staleTime: 0,
  });
  const [draft, setDraft] = useState<AuditFilters>(filters);
  function apply(e: FormEvent) {
    e.preventDefault();
    const next = new URLSearchParams();
    if (draft.target_type) next.set("target_type", draft.target_type.trim());
    if (draft.target_id) next.set("target_id", draft.target_id.trim());
    if (draft.actor_id) next.set("actor_id", draft.actor_id.trim());
    setParams(next);
  }
  const rows = q.data?.pages.flatMap((p) => p.items) ?? [];
  return (
    <section className="page" aria-labelledby="audit-title">
      <h1 id="audit-title">{t("nav.audit")}</h1>
      <form className="filter-bar" onSubmit={apply} aria-label={t("audit.filters")}>
        <label htmlFor="audit-type">{t("audit.target_type")}</label>
        <select id="audit-type" value={draft.target_type ?? ""} onChange={(e) => setDraft({ ...draft, target_type: e.target.value || null })}>
          <option value="">{t("audit.any")}</option>
          {["user", "role", "conversation", "message", "outbox", "dlq", "telegram"].map((v) => (
            <option key={v} value={v}>
              {v}
            </option>
          ))}
        </select>
        <label htmlFor="audit-target">{t("audit.target_id")}</label>
        <input id="audit-target" value={draft.target_id ?? ""} onChange={(e) => setDraft({ ...draft, target_id: e.target.value || null })} />
        <label htmlFor="audit-actor">{t("audit.actor")}</label>
        {users.data ? (
          <select id="audit-actor" value={draft.actor_id ?? ""} onChange={(e) => setDraft({ ...draft, actor_id: e.target.value || null })}>
            <option value="">{t("audit.anyone")}</option>
            {users.data.map((u) => (
              <option key={u.id} value={u.id}>
                {u.display_name}
              </option>
            ))}
          </select>
        ) : (
          <input id="audit-actor" value={draft.actor_id ?? ""} onChange={(e) => setDraft({ ...draft, actor_id: e.target.value || null })} />
        )}
        <button type="submit">{t("audit.apply")}</button>
        <button
          type="button"
          className="ghost"
          onClick={() => {
            setDraft({ target_type: null, target_id: null, actor_id: null });
            setParams(new URLSearchParams());
          }}
        >
          {t("filter.clear")}
        </button>
      </form>
      {q.isPending ? (
        <Loading />
      ) : q.isError ? (
        <LoadError error={q.error} retry={() => void q.refetch()} />
      ) : rows.length === 0 ? (
        <p className="state">{t("audit.empty")}</p>
      ) : (
        <>
          <table className="grid" data-testid="audit">
            <thead>
              <tr>
                <th scope="col">{t("audit.when")}</th>
                <th scope="col">{t("audit.action")}</th>
                <th scope="col">{t("audit.actor")}</th>
                <th scope="col">{t("audit.target")}</th>
                <th scope="col">{t("audit.details")}</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.id} data-testid="audit-row" data-action={r.action}>
                  <td>{dateTime(r.created_at)}</td>
                  <td>
                    <code>{r.action}</code>
                  </td>
                  <td>{nameOf(r.actor_id)}</td>
                  <td>
                    {r.target_type} <span className="muted small">{r.target_id}</span>
                  </td>
                  <td>
                    {(r.before !== null && r.before !== undefined) || (r.after !== null && r.after !== undefined) ? (
                      <details>
                        <summary>{t("audit.show")}</summary>
                        <pre className="json">{JSON.stringify({ before: r.before, after: r.after }, null, 2)}</pre>
                      </details>
                    ) : (
                      "—"
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {q.hasNextPage && (
            <p>
              <button type="button" onClick={() => void q.fetchNextPage()} disabled={q.isFetchingNextPage}>
                {q.isFetchingNextPage ? t("thread.older.loading") : t("audit.more")}
              </button>
            </p>
          )}
        </>
      )}
    </section>
  );
}
