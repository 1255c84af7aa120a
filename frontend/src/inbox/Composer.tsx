//! The composer: a reply (sent to Telegram) or a private note, with its draft
//! kept per conversation and one `client_msg_id` per message, so a double
//! click or a retry after a network error never sends twice. A reply may
//! carry files, uploaded straight to storage as they are picked, each with
//! its progress and a way to cancel it (`uploads.ts`).

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
import {
  MAX_FILES,
  UploadCancelled,
  contentTypeOf,
  patch,
  percent,
  putFile,
  readyIds,
  settled,
  type PendingFile,
} from "./uploads";

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
  const [files, setFiles] = useState<PendingFile[]>([]);
  const uploads = useRef(new Map<string, AbortController>());
  const fileInput = useRef<HTMLInputElement>(null);
  // Files belong to this conversation's reply: leaving it cancels them.
  useEffect(
    () => () => {
      for (const ctl of uploads.current.values()) ctl.abort();
      uploads.current.clear();
      setFiles([]);
    },
    [id],
  );

  function addFiles(list: FileList) {
    const room = Math.max(0, MAX_FILES - files.length);
    for (const file of Array.from(list).slice(0, room)) {
      const key = newId();
      const ctl = new AbortController();
      uploads.current.set(key, ctl);
      const entry: PendingFile = { key, name: file.name, size: file.size, state: "starting", loaded: 0, id: null, error: null };
      setFiles((fs) => [...fs, entry]);
      void (async () => {
        try {
          const target = await unwrap(
            api.POST("/api/attachments", {
              body: { filename: file.name, content_type: contentTypeOf(file), size_bytes: file.size },
              signal: ctl.signal,
            }),
          );
          if (ctl.signal.aborted) return;
          setFiles((fs) => patch(fs, key, { state: "uploading", id: target.id }));
          await putFile(target, file, (loaded) => setFiles((fs) => patch(fs, key, { loaded })), ctl.signal);
          setFiles((fs) => patch(fs, key, { state: "done", loaded: file.size }));
        } catch (e) {
          if (ctl.signal.aborted || e instanceof UploadCancelled) return;
          const message = e instanceof ApiFailure && e.isNetwork ? t("upload.offline") : e instanceof Error ? e.message : String(e);
          setFiles((fs) => patch(fs, key, { state: "failed", error: message }));
        } finally {
          uploads.current.delete(key);
        }
      })();
    }
  }

  /** Cancels a file on its way, or takes a finished or failed one off the reply. */
  function removeFile(key: string) {
    uploads.current.get(key)?.abort();
    uploads.current.delete(key);
    setFiles((fs) => fs.filter((f) => f.key !== key));
  }

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
    const attach = current.mode === "reply" ? readyIds(files) : [];
    if (!settled(files) && current.mode === "reply") return;
    if (!current.text.trim() && attach.length === 0) return;
    const d = forSend(current, newId);
    setDraft(d);
    saveDraft(owner, id, d);
    inFlight.current = true;
    setBusy(true);
    setError(null);
    try {
      const body = { text: d.text, client_msg_id: d.clientMsgId, ...(attach.length ? { attachment_ids: attach } : {}) };
      const params = { path: { id } };
      const m: Message =
        d.mode === "note"
          ? await unwrap(api.POST("/api/conversations/{id}/notes", { params, body }))
          : await unwrap(api.POST("/api/conversations/{id}/messages", { params, body }));
      // The socket may have brought it already, with a later status: that copy wins.
      qc.setQueryData<Thread>(keys.thread(id), (t) => (t ? upsertMessage(t, m, true) : t));
      if (attach.length) setFiles((fs) => fs.filter((f) => !f.id || !attach.includes(f.id)));
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
      {!note && (
        <div className="composer-files">
          <input
            ref={fileInput}
            type="file"
            multiple
            hidden
            data-testid="file-input"
            onChange={(e) => {
              if (e.target.files) addFiles(e.target.files);
              e.target.value = "";
            }}
          />
          <button type="button" className="small" onClick={() => fileInput.current?.click()} disabled={files.length >= MAX_FILES}>
            {t("composer.attach")}
          </button>
          {files.length > 0 && (
            <ul className="uploads" data-testid="uploads" aria-label={t("composer.files")}>
              {files.map((f) => {
                const going = f.state === "starting" || f.state === "uploading";
                return (
                  <li key={f.key} className={`upload upload-${f.state}`} data-testid="upload" data-state={f.state} data-name={f.name}>
                    <span className="upload-name">{f.name}</span>
                    {f.state === "failed" ? (
                      <span className="form-error" role="alert">
                        {t("upload.failed", { message: f.error ?? "" })}
                      </span>
                    ) : (
                      <>
                        <progress max={100} value={percent(f)} aria-label={t("upload.progress", { name: f.name })} />
                        <span className="muted small" data-testid="upload-percent">
                          {f.state === "done" ? t("upload.done") : `${percent(f)}%`}
                        </span>
                      </>
                    )}
                    <button
                      type="button"
                      className="small"
                      onClick={() => removeFile(f.key)}
                      aria-label={going ? t("upload.cancel", { name: f.name }) : t("upload.remove", { name: f.name })}
                    >
                      {going ? t("upload.cancel.short") : t("upload.remove.short")}
                    </button>
                  </li>
                );
              })}
            </ul>
          )}
        </div>
      )}
      <div className="composer-bar">
        <span className="muted small">{t("composer.count", { count: draft.text.length, max: MAX })}</span>
        {error && (
          <span id="composer-error" className="form-error" role="alert">
            {error}
          </span>
        )}
        <button
          type="submit"
          className="primary"
          disabled={
            busy ||
            (note ? !draft.text.trim() : !settled(files) || (!draft.text.trim() && readyIds(files).length === 0))
          }
          data-testid="send"
        >
          {busy ? t("composer.sending") : note ? t("composer.save_note") : t("composer.send")}
        </button>
      </div>
    </form>
  );
}
