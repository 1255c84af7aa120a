//! The outbox at a glance: rows by status, the relay's backlog and its oldest
//! due row, failed rows by type and error, and "retry failed" with a confirmation.

import { useState } from "react";
import { useMutation, useQuery } from "@tanstack/react-query";
import { unwrap } from "../api/client";
import { useServices } from "../app/services";
import { useI18n } from "../i18n";
import { Modal } from "../ui/Modal";
import { LoadError, Loading, failureText } from "../ui/pageStates";
import { formatAge } from "./format";

export function OutboxPage() {
  const { t, dateTime } = useI18n();
  const { api } = useServices();
  const q = useQuery({
    queryKey: ["ops", "outbox"],
    queryFn: ({ signal }) => unwrap(api.GET("/api/ops/outbox", { signal })),
    refetchInterval: 5_000,
    staleTime: 0,
  });
  // Which rows a confirmed retry takes: all failed rows, or one event type's.
  const [confirm, setConfirm] = useState<{ eventType: string | null; count: number } | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const retry = useMutation({
    mutationFn: (eventType: string | null) =>
      unwrap(api.POST("/api/ops/outbox/retry-failed", { body: eventType ? { event_type: eventType } : {} })),
    onSuccess: (r) => {
      setDone(t("outbox.retried", { count: r.retried }));
      setConfirm(null);
      void q.refetch();
    },
  });

  return (
    <section className="page" aria-labelledby="outbox-title">
      <h1 id="outbox-title">{t("nav.outbox")}</h1>
      {q.isPending ? (
        <Loading />
      ) : q.isError ? (
        <LoadError error={q.error} retry={() => void q.refetch()} />
      ) : (
        <>
          <div className="cards" data-testid="outbox-counts">
            {(["pending", "done", "failed"] as const).map((s) => (
              <div className="card" key={s}>
                <div className="card-label">{t(`outbox.status.${s}`)}</div>
                <div className="card-value" data-testid={`outbox-${s}-count`}>
                  {q.data.counts[s] ?? 0}
                </div>
              </div>
            ))}
            <div className="card">
              <div className="card-label">{t("outbox.due")}</div>
              <div className="card-value">{q.data.pending_due}</div>
            </div>
            <div className="card">
              <div className="card-label">{t("outbox.scheduled")}</div>
              <div className="card-value">{q.data.pending_scheduled}</div>
            </div>
            <div className="card">
              <div className="card-label">{t("outbox.oldest_due")}</div>
              <div className="card-value">
                {q.data.oldest_due_at && q.data.oldest_due_age_seconds !== null ? (
                  <span title={dateTime(q.data.oldest_due_at)}>{formatAge(q.data.oldest_due_age_seconds)}</span>
                ) : (
                  t("outbox.none_due")
                )}
              </div>
            </div>
          </div>
          <div className="page-bar">
            <h2>{t("outbox.failed_title")}</h2>
            <button
              type="button"
              className="primary"
              disabled={(q.data.counts.failed ?? 0) === 0}
              onClick={() => {
                setDone(null);
                retry.reset();
                setConfirm({ eventType: null, count: q.data.counts.failed ?? 0 });
              }}
            >
              {t("outbox.retry_all")}
            </button>
          </div>
          <p className="status-line" role="status">
            {done}
          </p>
          {q.data.failed.length === 0 ? (
            <p className="state" data-testid="outbox-no-failed">
              {t("outbox.no_failed")}
            </p>
          ) : (
            <table className="grid" data-testid="outbox-failed">
              <thead>
                <tr>
                  <th scope="col">{t("outbox.col.type")}</th>
                  <th scope="col">{t("outbox.col.error")}</th>
                  <th scope="col">{t("outbox.col.count")}</th>
                  <th scope="col">{t("outbox.col.last")}</th>
                  <th scope="col">
                    <span className="visually-hidden">{t("page.actions")}</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {q.data.failed.map((g) => (
                  <tr key={`${g.event_type}|${g.last_error ?? ""}`}>
                    <td>
                      <code>{g.event_type}</code>
                    </td>
                    <td>{g.last_error ?? "—"}</td>
                    <td>{g.count}</td>
                    <td>{g.last_failed_at ? dateTime(g.last_failed_at) : "—"}</td>
                    <td>
                      <button
                        type="button"
                        className="small"
                        onClick={() => {
                          setDone(null);
                          retry.reset();
                          setConfirm({ eventType: g.event_type, count: g.count });
                        }}
                      >
                        {t("outbox.retry_type", { type: g.event_type })}
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
      <Modal open={confirm !== null} onClose={() => setConfirm(null)} title={t("outbox.confirm.title")} testId="outbox-confirm">
        {confirm && (
          <>
            <p>
              {confirm.eventType
                ? t("outbox.confirm.type", { count: confirm.count, type: confirm.eventType })
                : t("outbox.confirm.all", { count: confirm.count })}
            </p>
            {retry.isError && (
              <p className="form-error" role="alert">
                {t("action.failed", { message: failureText(retry.error, t) })}
              </p>
            )}
            <div className="dialog-bar">
              <button type="button" onClick={() => setConfirm(null)}>
                {t("page.cancel")}
              </button>
              <button
                type="button"
                className="primary"
                disabled={retry.isPending}
                onClick={() => retry.mutate(confirm.eventType)}
              >
                {t("outbox.confirm.go")}
              </button>
            </div>
          </>
        )}
      </Modal>
    </section>
  );
}
