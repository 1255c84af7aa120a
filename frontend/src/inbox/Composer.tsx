//! The composer: a reply (sent to Telegram) or a private note, with its draft
//! kept per conversation and one `client_msg_id` per message, so a double
//! click or a retry after a network error never sends twice.

import { useEffect, useRef, useState, type FormEvent } from "react";
import { useQueryClient } from "@tanstack/react-query";
import { useI18n } from "../i18n";
import { useCan, useServices } from "../app/services";
import { unwrap } from "../api/client";
import { ApiFailure } from "../api/failure";
import type { Conversation, Message } from "../api/types";
import { EMPTY_DRAFT, forSend, loadDraft, saveDraft, withMode, withText, type Draft, type Mode } from "./drafts";
import { upsertMessage, type Thread } from "./live";
import { keys } from "./queries";
import { displayName } from "./names";
import { newId } from "../ui/ids";

const MAX = 4096;

export function Composer({ conversation, meId }: { conversation: Conversation; meId: string | null }) {
  const { t } = useI18n();
  const { api } = useServices();
  const qc = useQueryClient();
  const canReply = useCan("inbox.reply");
  const id = conversation.id;
  const owner = meId ?? "anonymous";
  const [draft, setDraftState] = useState<Draft>(() => loadDraft(owner, id));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  // Set synchronously: a second click in the same tick sees it.
  const inFlight = useRef(false);

  const draftRef = useRef(draft);
  const setDraft = (d: Draft) => {
    draftRef.current = d;
    setDraftState(d);
  };
  // Saved after a pause in typing, and when leaving the conversation.
  useEffect(() => {
    const h = setTimeout(() => saveDraft(owner, id, draft), 300);
    return () => clearTimeout(h);
  }, [owner, id, draft]);
  useEffect(() => () => saveDraft(owner, id, draftRef.current), [owner, id]);

  if (!canReply) {
    return <p className="composer readonly">{t("composer.readonly")}</p>;
  }

  async function send(e?: FormEvent) {
    e?.preventDefault();
    if (inFlight.current) return;
    const current = draftRef.current;
    if (!current.text.trim()) return;
    const d = forSend(current, newId);
    setDraft(d);
    saveDraft(owner, id, d);
    inFlight.current = true;
    setBusy(true);
    setError(null);
    try {
      const body = { text: d.text, client_msg_id: d.clientMsgId };
      const params = { path: { id } };
      const m: Message =
        d.mode === "note"
          ? await unwrap(api.POST("/api/conversations/{id}/notes", { params, body }))
          : await unwrap(api.POST("/api/conversations/{id}/messages", { params, body }));
      // The socket may have brought it already, with a later status: that copy wins.
      qc.setQueryData<Thread>(keys.thread(id), (t) => (t ? upsertMessage(t, m, true) : t));
      const now = draftRef.current;
      if (now.clientMsgId === d.clientMsgId) {
        const empty = { ...EMPTY_DRAFT, mode: now.mode };
        setDraft(empty);
        saveDraft(owner, id, empty);
      }
    } catch (err) {
      setError(
        err instanceof ApiFailure && err.isNetwork
          ? t("composer.offline")
          : t("composer.failed", { message: err instanceof ApiFailure ? err.message : String(err) }),
      );
    } finally {
      inFlight.current = false;
      setBusy(false);
    }
  }

  const name = displayName(conversation);
  const note = draft.mode === "note";
  return (
    <form className={`composer${note ? " composer-note" : ""}`} onSubmit={(e) => void send(e)} aria-label={t("composer.mode")}>
      <fieldset className="modes">
        <legend className="visually-hidden">{t("composer.mode")}</legend>
        {(["reply", "note"] as Mode[]).map((mode) => (
          <label key={mode} className={draft.mode === mode ? "mode active" : "mode"}>
            <input type="radio" name="mode" value={mode} checked={draft.mode === mode} onChange={() => setDraft(withMode(draft, mode))} />
            {t(`composer.mode.${mode}`)}
          </label>
        ))}
      </fieldset>
      <label htmlFor="composer" className="visually-hidden">
        {note ? t("composer.note_label", { name }) : t("composer.label", { name })}
      </label>
      <textarea
        id="composer"
        value={draft.text}
        maxLength={MAX}
        rows={3}
        placeholder={note ? t("composer.note_placeholder") : t("composer.placeholder")}
        onChange={(e) => setDraft(withText(draftRef.current, e.target.value))}
        onKeyDown={(e) => {
          if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) void send();
        }}
        aria-keyshortcuts="Control+Enter"
        aria-describedby={error ? "composer-error" : undefined}
      />
      <div className="composer-bar">
        <span className="muted small">{t("composer.count", { count: draft.text.length, max: MAX })}</span>
        {error && (
          <span id="composer-error" className="form-error" role="alert">
            {error}
          </span>
        )}
        <button type="submit" className="primary" disabled={busy || !draft.text.trim()} data-testid="send">
          {busy ? t("composer.sending") : note ? t("composer.save_note") : t("composer.send")}
        </button>
      </div>
    </form>
  );
}
