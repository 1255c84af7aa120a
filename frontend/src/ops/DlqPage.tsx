//! Dead-letter queues: depth, age and commonest reasons; peek at the first
//! letters; replay with live progress; purge behind a typed confirmation.

import { useState } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { unwrap } from "../api/client";
import { ApiFailure } from "../api/failure";
import type { components, paths } from "../api/schema";
import { useServices } from "../app/services";
import { useI18n } from "../i18n";
import { Modal } from "../ui/Modal";
import { LoadError, Loading, failureText } from "../ui/pageStates";
import { formatAge } from "./format";
import { isStopped, readReplay, replayFraction, type ReplayLine, type ReplayProgress } from "./replay";

type Summary = components["schemas"]["Summary"];
type QueueName = NonNullable<paths["/api/ops/dlq/{queue}/messages"]["get"]["parameters"]["path"]>["queue"];
/** The queue's name as the API's paths take it (the list names only known queues). */
const named = (q: string) => q as QueueName;

const dlqKey = ["ops", "dlq"] as const;

type Run =
  | { state: "running"; last: ReplayProgress | null }
  | { state: "done"; last: ReplayProgress }
  | { state: "failed"; message: string; last: ReplayProgress | null };

function Peek({ queue }: { queue: string }) {
  const { t, dateTime } = useI18n();
  const { api } = useServices();
  const q = useQuery({
    queryKey: ["ops", "dlq", queue, "peek"],
    queryFn: ({ signal }) =>
      unwrap(api.GET("/api/ops/dlq/{queue}/messages", { params: { path: { queue: named(queue) }, query: { n: 20 } }, signal })),
    staleTime: 0,
    gcTime: 0,
  });
  if (q.isPending) return <Loading />;
  if (q.isError) return <LoadError error={q.error} retry={() => void q.refetch()} />;
  if (q.data.length === 0) return <p className="state">{t("dlq.peek.empty")}</p>;
  return (
    <table className="grid" data-testid="dlq-peek">
      <caption className="visually-hidden">{t("dlq.peek.caption", { queue })}</caption>
      <thead>
        <tr>
          <th scope="col">#</th>
          <th scope="col">{t("dlq.col.type")}</th>
          <th scope="col">{t("dlq.col.failure")}</th>
          <th scope="col">{t("dlq.col.source")}</th>
          <th scope="col">{t("dlq.col.died")}</th>
          <th scope="col">{t("dlq.col.replays")}</th>
          <th scope="col">{t("dlq.col.payload")}</th>
        </tr>
      </thead>
      <tbody>
        {q.data.map((l) => (
          <tr key={`${l.position}-${l.message_id ?? ""}`}>
            <td>{l.position}</td>
            <td>
              <code>{l.event_type ?? "—"}</code>
            </td>
            <td>{[l.failure, l.reason].filter(Boolean).join(" · ") || "—"}</td>
            <td>{l.source_queue ?? "—"}</td>
            <td>{l.died_at ? dateTime(l.died_at) : "—"}</td>
            <td>{l.replays}</td>
            <td>
              <details>
                <summary>{t("dlq.payload.show", { bytes: l.size_bytes })}</summary>
                <pre className="json">{JSON.stringify(l.payload, null, 2)}</pre>
              </details>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function ReplayStatus({ run }: { run: Run }) {
  const { t } = useI18n();
  const p = run.last;
  const pct = p ? Math.round(replayFraction(p) * 100) : 0;
  return (
    <div className="replay" data-testid="replay-progress" data-state={run.state}>
      <progress max={100} value={run.state === "running" && !p ? undefined : pct} aria-label={t("dlq.replay.progress")} />
      <p role="status">
        {run.state === "running"
          ? p
            ? t("dlq.replay.running", { examined: p.examined, total: p.depth_at_start, replayed: p.replayed })
            : t("dlq.replay.starting")
          : run.state === "done"
            ? run.last.dry_run
              ? t("dlq.replay.dry_done", { replayed: run.last.replayed })
              : t("dlq.replay.done", { replayed: run.last.replayed, remaining: run.last.remaining ?? 0 })
            : t("dlq.replay.failed", { message: run.message })}
      </p>
      {p && (p.filtered_out > 0 || p.over_replay_cap > 0 || p.unknown_source > 0 || p.arrived_during > 0) && (
        <p className="muted small">
          {t("dlq.replay.left", {
            filtered: p.filtered_out,
            cap: p.over_replay_cap,
            unknown: p.unknown_source,
            again: p.arrived_during,
          })}
        </p>
      )}
    </div>
  );
}

function QueueCard({ s }: { s: Summary }) {
  const { t, dateTime } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const [peek, setPeek] = useState(false);
  const [run, setRun] = useState<Run | null>(null);
  const [purging, setPurging] = useState(false);
  const [typed, setTyped] = useState("");
  const [note, setNote] = useState<string | null>(null);
  const [dryRun, setDryRun] = useState(false);

  async function replay() {
    setNote(null);
    setRun({ state: "running", last: null });
    let last: ReplayProgress | null = null;
    try {
      const res = await api.POST("/api/ops/dlq/{queue}/replay", {
        params: { path: { queue: named(s.queue) } },
        body: dryRun ? { dry_run: true } : {},
        parseAs: "stream",
      });
      const body = res.response.body;
      if (!res.response.ok || !body) throw await ApiFailure.fromResponse(res.response, res.error);
      await readReplay(body, (line: ReplayLine) => {
        if (isStopped(line)) {
          setRun({ state: "failed", message: line.error.message || line.error.code, last });
          return;
        }
        last = line;
        setRun(line.done ? { state: "done", last: line } : { state: "running", last: line });
      });
      setRun((r) => (r && r.state === "running" ? { state: "failed", message: t("dlq.replay.cut"), last } : r));
    } catch (e) {
      setRun({ state: "failed", message: failureText(e, t), last });
    } finally {
      // The list first, then an open peek: a peek holds the queue while it
      // reads, and the list would show it busy.
      void qc
        .invalidateQueries({ queryKey: dlqKey, exact: true })
        .then(() => qc.invalidateQueries({ queryKey: [...dlqKey, s.queue, "peek"] }));
    }
  }

  const purge = useMutation({
    mutationFn: () => unwrap(api.DELETE("/api/ops/dlq/{queue}/messages", { params: { path: { queue: named(s.queue) } } })),
    onSuccess: (r) => {
      setPurging(false);
      setTyped("");
      setNote(t("dlq.purged", { count: r.purged, queue: r.queue }));
      setPeek(false);
      void qc.invalidateQueries({ queryKey: dlqKey, exact: true });
    },
  });

  const running = run?.state === "running";
  return (
    <li className="queue" data-testid="dlq-queue" data-queue={s.queue} data-depth={s.depth}>
      <div className="queue-head">
        <h2>
          <code>{s.queue}</code>
        </h2>
        <span className={`depth ${s.depth > 0 ? "depth-some" : ""}`} data-testid="dlq-depth">
          {t("dlq.depth", { count: s.depth })}
        </span>
        {!s.declared && <span className="chip">{t("dlq.undeclared")}</span>}
        {s.busy && <span className="chip status-pending">{t("dlq.busy")}</span>}
        <span className="spacer" />
        <button type="button" className="small" aria-expanded={peek} onClick={() => setPeek((v) => !v)} disabled={!s.declared}>
          {peek ? t("dlq.peek.hide") : t("dlq.peek")}
        </button>
        <label className="check small">
          <input type="checkbox" checked={dryRun} onChange={(e) => setDryRun(e.target.checked)} disabled={running} />
          {t("dlq.dry_run")}
        </label>
        <button type="button" className="small primary" onClick={() => void replay()} disabled={running || s.depth === 0 || !s.declared}>
          {t("dlq.replay")}
        </button>
        <button type="button" className="small danger" onClick={() => setPurging(true)} disabled={running || s.depth === 0 || !s.declared}>
          {t("dlq.purge")}
        </button>
      </div>
      {s.depth > 0 && (
        <p className="muted">
          {s.oldest_age_seconds !== null && s.oldest_died_at && (
            <span title={dateTime(s.oldest_died_at)}>{t("dlq.oldest", { age: formatAge(s.oldest_age_seconds) })} </span>
          )}
          {s.top_reasons.length > 0 &&
            t("dlq.reasons", { reasons: s.top_reasons.map((r) => `${r.reason} (${r.count})`).join(", ") })}
        </p>
      )}
      {run && <ReplayStatus run={run} />}
      {note && (
        <p role="status" className="status-line">
          {note}
        </p>
      )}
      {peek && <Peek queue={s.queue} />}
      <Modal open={purging} onClose={() => setPurging(false)} title={t("dlq.purge.title", { queue: s.queue })} testId="purge-confirm">
        <form
          onSubmit={(e) => {
            e.preventDefault();
            if (typed === s.queue) purge.mutate();
          }}
        >
          <p>{t("dlq.purge.warning", { count: s.depth })}</p>
          <label htmlFor={`purge-${s.queue}`}>{t("dlq.purge.type", { queue: s.queue })}</label>
          <input
            id={`purge-${s.queue}`}
            value={typed}
            onChange={(e) => setTyped(e.target.value)}
            autoComplete="off"
            spellCheck={false}
          />
          {purge.isError && (
            <p className="form-error" role="alert">
              {t("action.failed", { message: failureText(purge.error, t) })}
            </p>
          )}
          <div className="dialog-bar">
            <button type="button" onClick={() => setPurging(false)}>
              {t("page.cancel")}
            </button>
            <button type="submit" className="danger" disabled={typed !== s.queue || purge.isPending}>
              {t("dlq.purge.go")}
            </button>
          </div>
        </form>
      </Modal>
    </li>
  );
}

export function DlqPage() {
  const { t } = useI18n();
  const { api } = useServices();
  const q = useQuery({
    queryKey: dlqKey,
    queryFn: ({ signal }) => unwrap(api.GET("/api/ops/dlq", { signal })),
    refetchInterval: 5_000,
    staleTime: 0,
  });
  return (
    <section className="page" aria-labelledby="dlq-title">
      <h1 id="dlq-title">{t("nav.dlq")}</h1>
      {q.isPending ? (
        <Loading />
      ) : q.isError ? (
        <LoadError error={q.error} retry={() => void q.refetch()} />
      ) : q.data.length === 0 ? (
        <p className="state">{t("dlq.none")}</p>
      ) : (
        <ul className="queues">
          {q.data.map((s) => (
            <QueueCard key={s.queue} s={s} />
          ))}
        </ul>
      )}
    </section>
  );
}
