//! The DLQ replay's answer: JSON lines (`application/x-ndjson`), one
//! `ReplayProgress` per batch, the last with `done: true`, or `done: false`
//! and an `error` when the replay stopped.

import type { components } from "../api/schema";

export type ReplayProgress = components["schemas"]["ReplayProgress"];
export interface ReplayStopped {
  done: false;
  error: { code: string; message: string };
}
export type ReplayLine = ReplayProgress | ReplayStopped;

export function isStopped(line: ReplayLine): line is ReplayStopped {
  return "error" in line && line.error !== undefined && line.error !== null;
}

/**
 * Splits chunks of text into whole lines: `push` returns the lines a chunk
 * completed and keeps the unfinished rest; `end` returns what is left.
 */
export class LineSplitter {
  private rest = "";
  push(chunk: string): string[] {
    this.rest += chunk;
    const parts = this.rest.split("\n");
    this.rest = parts.pop() ?? "";
    return parts.filter((l) => l.trim() !== "");
  }
  end(): string[] {
    const last = this.rest.trim();
    this.rest = "";
    return last ? [last] : [];
  }
}

/** Reads the stream, calling `onLine` for each line as it arrives. */
export async function readReplay(body: ReadableStream<Uint8Array>, onLine: (line: ReplayLine) => void): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const split = new LineSplitter();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    for (const l of split.push(decoder.decode(value, { stream: true }))) onLine(JSON.parse(l) as ReplayLine);
  }
  for (const l of split.push(decoder.decode())) onLine(JSON.parse(l) as ReplayLine);
  for (const l of split.end()) onLine(JSON.parse(l) as ReplayLine);
}

/** How far a replay went, 0 to 1 (of the messages in the DLQ when it began). */
export function replayFraction(p: ReplayProgress): number {
  if (p.done) return 1;
  if (p.depth_at_start <= 0) return 0;
  return Math.min(1, p.examined / p.depth_at_start);
}
