//! Files attached in the composer: each is announced to the API
//! (`POST /api/attachments`), then sent straight to storage with the
//! presigned `PUT` it answers, with progress, and can be cancelled at any
//! point. A reply then names the finished ones by id.

import type { components } from "../api/schema";

export type UploadTarget = components["schemas"]["Upload"];

export type UploadState = "starting" | "uploading" | "done" | "failed";

export interface PendingFile {
  /** This browser's key for the file (the API's id comes later). */
  key: string;
  name: string;
  size: number;
  state: UploadState;
  /** Bytes sent so far. */
  loaded: number;
  /** The attachment's id once the API knows it. */
  id: string | null;
  error: string | null;
}

/** At most this many files go with one reply (the API's limit). */
export const MAX_FILES = 10;

/** Whole percent sent, 0 to 100 (a file of 0 bytes counts as done when done). */
export function percent(f: Pick<PendingFile, "loaded" | "size" | "state">): number {
  if (f.state === "done") return 100;
  if (f.size <= 0) return 0;
  return Math.min(99, Math.floor((f.loaded / f.size) * 100));
}

/** The ids a reply carries: the finished files, in the order they were added. */
export function readyIds(files: readonly PendingFile[]): string[] {
  return files.flatMap((f) => (f.state === "done" && f.id ? [f.id] : []));
}

/** Whether a reply can go: nothing still on its way. */
export function settled(files: readonly PendingFile[]): boolean {
  return files.every((f) => f.state === "done" || f.state === "failed");
}

/** `files` with the one keyed `key` changed by `change`. */
export function patch(files: readonly PendingFile[], key: string, change: Partial<PendingFile>): PendingFile[] {
  return files.map((f) => (f.key === key ? { ...f, ...change } : f));
}

/** The media type to declare: the browser's guess, or a plain binary. */
export function contentTypeOf(file: { type: string }): string {
  return file.type || "application/octet-stream";
}

export class UploadCancelled extends Error {
  constructor() {
    super("cancelled");
  }
}

/**
 * Sends `file` to storage with the presigned request `target`, reporting
 * progress; rejects with `UploadCancelled` when `signal` aborts. XHR, since
 * `fetch` reports no upload progress.
 */
export function putFile(
  target: UploadTarget,
  file: Blob,
  onProgress: (loaded: number) => void,
  signal: AbortSignal,
): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new UploadCancelled());
    const xhr = new XMLHttpRequest();
    xhr.open(target.method || "PUT", target.upload_url);
    for (const [name, value] of Object.entries(target.headers)) {
      // The browser sets Content-Length itself (and refuses it from scripts).
      if (name.toLowerCase() !== "content-length") xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () =>
      xhr.status >= 200 && xhr.status < 300 ? resolve() : reject(new Error(`storage answered ${xhr.status}`));
    xhr.onerror = () => reject(new Error("storage unreachable"));
    xhr.onabort = () => reject(new UploadCancelled());
    signal.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(file);
  });
}
