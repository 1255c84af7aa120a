//! One message of the thread: the customer's, a reply (with its live delivery
//! status) or a private note, with its files.

import { memo, useEffect, useState } from "react";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useI18n } from "../i18n";
import { useCan, useServices } from "../app/services";
import { unwrap } from "../api/client";
import { ApiFailure } from "../api/failure";
import type { Message, MessageFile } from "../api/types";
import { changeView, changeable, deliveryView } from "./delivery";
import { applyChangeAnswer, upsertMessage, type Thread } from "./live";
import { keys } from "./queries";

function useNow(active: boolean): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) return;
    const h = setInterval(() => setNow(Date.now()), 1_000);
    return () => clearInterval(h);
  }, [active]);
  return now;
}

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** A paper clip, drawn (an emoji needs a font the machine may lack). */
function Clip() {
  return (
    <svg className="clip" viewBox="0 0 16 16" width="14" height="14" aria-hidden="true" focusable="false">
      <path
        d="M10.5 4.5 5.3 9.7a1.4 1.4 0 0 0 2 2l5.6-5.6a2.8 2.8 0 0 0-4-4L3.3 7.7a4.2 4.2 0 0 0 6 6l4.2-4.2"
        fill="none"
        stroke="currentColor"
        strokeWidth="1.4"
        strokeLinecap="round"
      />
    </svg>
  );
}

/** An image file shown small, from a short-lived link fetched when it is rendered. */
function Preview({ f }: { f: MessageFile }) {
  const { api } = useServices();
  const link = useQuery({
    queryKey: ["attachment-url", f.id],
    queryFn: () => unwrap(api.GET("/api/attachments/{id}/url", { params: { path: { id: f.id } } })),
    // Links live 300 s: fetched again before they lapse.
    staleTime: 240_000,
    gcTime: 240_000,
  });
  if (!link.data) return null;
  return <img className="preview" src={link.data.url} alt={f.filename} loading="lazy" data-testid="attachment-preview" />;
}

function Files({ files }: { files: MessageFile[] }) {
  const { t } = useI18n();
  const { api } = useServices();
  const [error, setError] = useState<string | null>(null);
  async function download(f: MessageFile) {
    setError(null);
    try {
      // A short-lived link, made on demand after the permission check.
      const link = await unwrap(api.GET("/api/attachments/{id}/url", { params: { path: { id: f.id } } }));
      window.location.assign(link.url);
    } catch (e) {
      setError(t("thread.download.failed", { message: e instanceof ApiFailure ? e.message : String(e) }));
    }
  }
  return (
    <>
      <ul className="files">
        {files.map((f) => (
          <li key={f.id}>
            {f.content_type.startsWith("image/") && <Preview f={f} />}
            <button type="button" className="file" onClick={() => void download(f)} aria-label={t("thread.download", { name: f.filename })}>
              <Clip /> {f.filename} <span className="muted">({size(f.size_bytes)})</span>
            </button>
          </li>
        ))}
      </ul>
      {error && (
        <p className="form-error" role="alert">
          {error}
        </p>
      )}
    </>
  );
}

function Delivery({ m }: { m: Message }) {
  const { t, time } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const canReply = useCan("inbox.reply");
  const now = useNow(m.status === "retrying");
  const view = deliveryView(m, t, time, now);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  async function retry() {
    setBusy(true);
    setError(null);
    try {
      const next = await unwrap(
        api.POST("/api/conversations/{id}/messages/{message_id}/retry", {
          params: { path: { id: m.conversation_id, message_id: m.id } },
        }),
      );
      qc.setQueryData<Thread>(keys.thread(m.conversation_id), (t) => (t ? upsertMessage(t, next) : t));
    } catch (e) {
      setError(t("delivery.retry.failed", { message: e instanceof ApiFailure ? e.message : String(e) }));
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className={`delivery delivery-${view.kind}`} data-testid="delivery" data-status={m.status}>
      <span className="delivery-label">
        <span className="dot" aria-hidden="true" /> {view.label}
      </span>
      {(view.kind === "retrying" || view.kind === "failed") && view.reason && (
        <span className="delivery-reason" data-testid="delivery-reason">
          {t("delivery.reason", { reason: view.reason })}
        </span>
      )}
      {view.kind === "failed" && canReply && (
        <button type="button" className="small" onClick={() => void retry()} disabled={busy}>
          {t("delivery.retry")}
        </button>
      )}
      {error && (
        <span className="form-error" role="alert">
          {error}
        </span>
      )}
    </div>
  );
}

/** How far an operator's edit or deletion of the reply got in Telegram. */
function ChangeLine({ m }: { m: Message }) {
  const { t, time } = useI18n();
  const now = useNow(m.change_status === "retrying");
  const view = changeView(m, t, time, now);
  if (!view) return null;
  return (
    <div className={`delivery delivery-${view.kind}`} data-testid="change" data-kind={m.change_kind} data-status={m.change_status}>
      <span className="delivery-label">
        <span className="dot" aria-hidden="true" /> {view.label}
      </span>
      {(view.kind === "retrying" || view.kind === "failed") && view.reason && (
        <span className="delivery-reason">{t("delivery.reason", { reason: view.reason })}</span>
      )}
    </div>
  );
}

/**
 * Edit and delete of a sent reply, for those who may reply: the edit in
 * place (Ctrl+Enter saves, Escape cancels), the deletion after a question.
 * The answer replaces the message in the thread; the socket's
 * `message.updated` frames then show how far Telegram got.
 */
function ChangeActions({ m, editing, setEditing }: { m: Message; editing: boolean; setEditing: (on: boolean) => void }) {
  const { t } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const canReply = useCan("inbox.reply");
  const now = Date.now();
  const [text, setText] = useState(m.text);
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  if (!canReply) return null;
  const canEdit = changeable(m, "edit", now);
  const canDelete = changeable(m, "delete", now);
  if (!canEdit && !canDelete) return null;
  const path = { params: { path: { id: m.conversation_id, message_id: m.id } } };

  async function run(call: () => Promise<Message>, failed: "message.edit.failed" | "message.delete.failed") {
    setBusy(true);
    setError(null);
    try {
      const next = await call();
      qc.setQueryData<Thread>(keys.thread(m.conversation_id), (th) => (th ? applyChangeAnswer(th, next) : th));
      setEditing(false);
      setConfirming(false);
    } catch (e) {
      setError(t(failed, { message: e instanceof ApiFailure ? e.message : String(e) }));
    } finally {
      setBusy(false);
    }
  }
  const save = () =>
    void run(() => unwrap(api.PATCH("/api/conversations/{id}/messages/{message_id}", { ...path, body: { text } })), "message.edit.failed");
  const remove = () =>
    void run(() => unwrap(api.DELETE("/api/conversations/{id}/messages/{message_id}", path)), "message.delete.failed");

  if (editing) {
    return (
      <form
        className="msg-edit"
        onSubmit={(e) => {
          e.preventDefault();
          save();
        }}
      >
        <label className="visually-hidden" htmlFor={`edit-${m.id}`}>
          {t("message.edit.label")}
        </label>
        <textarea
          id={`edit-${m.id}`}
          value={text}
          autoFocus
          rows={3}
          onChange={(e) => setText(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Escape") setEditing(false);
            if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
              e.preventDefault();
              save();
            }
          }}
        />
        <div className="msg-actions">
          <button type="submit" className="small" disabled={busy || !text.trim()}>
            {t("message.edit.save")}
          </button>
          <button type="button" className="small" onClick={() => setEditing(false)} disabled={busy}>
            {t("message.edit.cancel")}
          </button>
        </div>
        {error && (
          <p className="form-error" role="alert">
            {error}
          </p>
        )}
      </form>
    );
  }
  return (
    <div className="msg-actions">
      {confirming ? (
        <>
          <span>{t("message.delete.confirm")}</span>
          <button type="button" className="small danger" onClick={remove} disabled={busy}>
            {t("message.delete.yes")}
          </button>
          <button type="button" className="small" onClick={() => setConfirming(false)} disabled={busy}>
            {t("message.edit.cancel")}
          </button>
        </>
      ) : (
        <>
          {canEdit && (
            <button
              type="button"
              className="linkish"
              onClick={() => {
                setText(m.text);
                setEditing(true);
              }}
            >
              {t("message.edit")}
            </button>
          )}
          {canDelete && (
            <button type="button" className="linkish" onClick={() => setConfirming(true)}>
              {t("message.delete")}
            </button>
          )}
        </>
      )}
      {error && (
        <span className="form-error" role="alert">
          {error}
        </span>
      )}
    </div>
  );
}

/** "(edited)", which opens the earlier texts. */
function Edited({ m }: { m: Message }) {
  const { t, dateTime } = useI18n();
  const { api } = useServices();
  const [open, setOpen] = useState(false);
  const versions = useQuery({
    queryKey: ["versions", m.id, m.edited_at],
    queryFn: () =>
      unwrap(
        api.GET("/api/conversations/{id}/messages/{message_id}/versions", {
          params: { path: { id: m.conversation_id, message_id: m.id } },
        }),
      ),
    enabled: open,
  });
  return (
    <>
      <button type="button" className="linkish" aria-expanded={open} onClick={() => setOpen(!open)}>
        ({t("thread.edited")})
      </button>
      {open && (
        <div className="versions" data-testid="versions">
          {versions.isPending && <span className="muted">{t("thread.loading")}</span>}
          {versions.isError && <span className="form-error">{t("thread.history.failed")}</span>}
          {versions.data && (
            <ol aria-label={t("thread.history")}>
              {versions.data.previous.map((v) => (
                <li key={v.replaced_at}>
                  <del>{v.text}</del> <span className="muted">{t("thread.replaced_at", { time: dateTime(v.replaced_at) })}</span>
                </li>
              ))}
            </ol>
          )}
        </div>
      )}
    </>
  );
}

/**
 * One message of the thread. Memoised: a frame changes one message (a new
 * object) and leaves the others as they were, so only that one renders again,
 * however long the thread.
 */
export const MessageItem = memo(function MessageItem({ m }: { m: Message }) {
  const { t, dateTime } = useI18n();
  const [editing, setEditing] = useState(false);
  const note = m.kind === "note";
  const out = m.direction === "out";
  const who = out || note ? (m.author_name ?? "") : t("thread.customer");
  return (
    <li
      className={`msg ${note ? "msg-note" : out ? "msg-out" : "msg-in"}${m.deleted_at ? " msg-deleted" : ""}`}
      data-testid="message"
      data-message-id={m.id}
      data-direction={m.direction}
      data-kind={m.kind}
    >
      <div className="msg-meta">
        {note && <span className="note-tag">{t("thread.note")}</span>}
        {m.deleted_at && (
          <span className="note-tag" data-testid="deleted">
            {t(out ? "thread.deleted.out" : "thread.deleted.in")}
          </span>
        )}
        <span className="msg-author">{who}</span>
        <time dateTime={m.created_at}>{dateTime(m.created_at)}</time>
        {m.edited_at && <Edited m={m} />}
      </div>
      {m.text && !editing && <p className="msg-text">{m.text}</p>}
      {m.attachments.length > 0 && <Files files={m.attachments} />}
      {out && !note && <Delivery m={m} />}
      {out && !note && <ChangeLine m={m} />}
      {out && !note && <ChangeActions m={m} editing={editing} setEditing={setEditing} />}
    </li>
  );
});
