//! The open conversation: its header and actions, the thread, the composer.

import { useEffect, useLayoutEffect, useRef, useState } from "react";
import { useQueryClient } from "@tanstack/react-query";
import { useI18n } from "../i18n";
import { useCan, useServices } from "../app/services";
import { unwrap } from "../api/client";
import { ApiFailure } from "../api/failure";
import type { Conversation, ConversationStatus } from "../api/types";
import { appendOlder, type Thread } from "./live";
import { fetchMessages, keys, useConversation, useThread } from "./queries";
import { markedRead, applyFrame } from "./sync";
import { displayName } from "./names";
import { MessageItem } from "./MessageItem";
import { Composer } from "./Composer";
import { PANE_ACTION, type PaneAction } from "../ui/Shortcuts";
import { STATUSES } from "./filters";

function failureMessage(e: unknown): string {
  return e instanceof ApiFailure ? e.message : String(e);
}

function Actions({ c, meId }: { c: Conversation; meId: string | null }) {
  const { t } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const canAssign = useCan("inbox.assign");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  async function patch(body: { assignee_id?: string | null; status?: ConversationStatus; snoozed_until?: string }) {
    setBusy(true);
    setError(null);
    try {
      const next = await unwrap(api.PATCH("/api/conversations/{id}", { params: { path: { id: c.id } }, body }));
      qc.setQueryData(keys.conversation(c.id), next);
      // The same change as the socket's frame, so every list agrees at once.
      applyFrame(
        qc,
        {
          id: 0,
          type: "conversation.updated",
          data: {
            conversation_id: c.id,
            changed: { assignee_id: next.assignee_id, status: next.status, snoozed_until: next.snoozed_until },
          },
        },
        { meId, openId: c.id, visible: true, onReadNeeded: () => {} },
      );
    } catch (e) {
      setError(t("action.failed", { message: failureMessage(e) }));
    } finally {
      setBusy(false);
    }
  }

  const latest = useRef({ c, meId, patch, canAssign, busy });
  latest.current = { c, meId, patch, canAssign, busy };
  useEffect(() => {
    const on = (e: Event) => {
      const { c, meId, patch, canAssign, busy } = latest.current;
      if (!canAssign || busy) return;
      const a = (e as CustomEvent<PaneAction>).detail;
      if (a === "assign" && meId && c.assignee_id !== meId) void patch({ assignee_id: meId });
      if (a === "resolve" && c.status !== "resolved") void patch({ status: "resolved" });
    };
    window.addEventListener(PANE_ACTION, on);
    return () => window.removeEventListener(PANE_ACTION, on);
  }, []);

  if (!canAssign) return null;
  return (
    <div className="actions">
      {c.assignee_id === meId ? (
        <button type="button" disabled={busy} onClick={() => void patch({ assignee_id: null })}>
          {t("action.unassign")}
        </button>
      ) : (
        <button type="button" disabled={busy || !meId} onClick={() => void patch({ assignee_id: meId })} aria-keyshortcuts="a">
          {t("action.assign_me")}
        </button>
      )}
      <label className="visually-hidden" htmlFor="conversation-status">
        {t("action.status")}
      </label>
      <select
        id="conversation-status"
        value={c.status}
        disabled={busy}
        onChange={(e) => {
          const status = e.target.value as ConversationStatus;
          if (status === "snoozed") void patch({ snoozed_until: new Date(Date.now() + 3_600_000).toISOString() });
          else void patch({ status });
        }}
      >
        {STATUSES.map((s) => (
          <option key={s} value={s}>
            {s === "snoozed" && c.status !== "snoozed" ? t("action.snooze") : t(`status.${s}`)}
          </option>
        ))}
      </select>
      {error && (
        <p className="form-error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

function Messages({ id, thread }: { id: string; thread: Thread }) {
  const { t } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const box = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const [older, setOlder] = useState<"idle" | "loading" | string>("idle");

  // Follow new messages while the reader is at the bottom.
  useLayoutEffect(() => {
    const el = box.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [thread.items.length]);

  async function loadOlder() {
    if (!thread.nextCursor) return;
    setOlder("loading");
    try {
      const page = await fetchMessages(api, id, thread.nextCursor);
      qc.setQueryData<Thread>(keys.thread(id), (t) => (t ? appendOlder(t, page.items, page.next_cursor) : t));
      setOlder("idle");
    } catch (e) {
      setOlder(failureMessage(e));
    }
  }

  return (
    <div
      ref={box}
      className="thread-scroll"
      tabIndex={0}
      aria-label={t("thread.label")}
      onScroll={(e) => {
        const el = e.currentTarget;
        stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
      }}
    >
      {thread.nextCursor && (
        <div className="older">
          <button type="button" onClick={() => void loadOlder()} disabled={older === "loading"}>
            {older === "loading" ? t("thread.older.loading") : t("thread.older")}
          </button>
          {older !== "idle" && older !== "loading" && <span className="form-error">{older}</span>}
        </div>
      )}
      {thread.items.length === 0 ? (
        <p className="state">{t("thread.empty")}</p>
      ) : (
        <ol className="messages" data-testid="thread">
          {thread.items.map((m) => (
            <MessageItem key={m.id} m={m} />
          ))}
        </ol>
      )}
    </div>
  );
}

export function ConversationPane({ id, meId }: { id: string | undefined; meId: string | null }) {
  const { t } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const conversation = useConversation(id);
  const thread = useThread(id);
  const heading = useRef<HTMLHeadingElement>(null);
  const c = conversation.data;

  // Opening a conversation reads it.
  const unread = c?.unread_count ?? 0;
  useEffect(() => {
    if (!id || unread === 0 || document.visibilityState !== "visible") return;
    void unwrap(api.POST("/api/conversations/{id}/read", { params: { path: { id } } })).then(
      () => markedRead(qc, id),
      () => {},
    );
  }, [id, unread, api, qc]);

  if (!id) {
    return (
      <section className="thread-pane empty" id="thread" aria-label={t("thread.label")}>
        <p className="state">{t("thread.none")}</p>
      </section>
    );
  }
  const failure = conversation.error ?? thread.error;
  if (failure) {
    const gone = failure instanceof ApiFailure && failure.status === 404;
    return (
      <section className="thread-pane" id="thread" aria-label={t("thread.label")}>
        <div className="state error" role="alert">
          <p>{gone ? t("thread.not_found") : t("thread.error", { message: failureMessage(failure) })}</p>
          {!gone && (
            <button type="button" onClick={() => void Promise.all([conversation.refetch(), thread.refetch()])}>
              {t("list.retry")}
            </button>
          )}
        </div>
      </section>
    );
  }
  if (!c || !thread.data) {
    return (
      <section className="thread-pane" id="thread" aria-label={t("thread.label")}>
        <p className="state" role="status">
          {t("thread.loading")}
        </p>
      </section>
    );
  }
  const name = displayName(c);
  return (
    <section className="thread-pane" id="thread" aria-labelledby="thread-title" tabIndex={-1}>
      <header className="thread-head">
        <div>
          <h1 id="thread-title" ref={heading} data-testid="thread-title">
            {name}
          </h1>
          <p className="thread-sub">
            {c.contact_username && <span>@{c.contact_username} · </span>}
            <span className={`chip status-${c.status}`} data-testid="conversation-status">
              {t(`status.${c.status}`)}
            </span>{" "}
            ·{" "}
            <span data-testid="assignee">
              {c.assignee_id === null
                ? t("thread.assignee.none")
                : c.assignee_id === meId
                  ? t("thread.assignee.me")
                  : t("thread.assignee.other")}
            </span>
          </p>
        </div>
        <Actions c={c} meId={meId} />
      </header>
      <Messages id={id} thread={thread.data} />
      <Composer conversation={c} meId={meId} />
    </section>
  );
}
