import { describe, expect, it } from "vitest";
import { LineSplitter, isStopped, readReplay, replayFraction, type ReplayLine, type ReplayProgress } from "./replay";

const progress = (over: Partial<ReplayProgress> = {}): ReplayProgress => ({
  queue: "tg-delivery.dlq",
  depth_at_start: 4,
  examined: 0,
  replayed: 0,
  filtered_out: 0,
  over_replay_cap: 0,
  unknown_source: 0,
  arrived_during: 0,
  by_queue: {},
  done: false,
  dry_run: false,
  remaining: 0,
  ...over,
});

function streamOf(chunks: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(c) {
      for (const ch of chunks) c.enqueue(enc.encode(ch));
      c.close();
    },
  });
}

describe("the replay's JSON lines", () => {
  it("splits chunks into whole lines, whatever the cuts", () => {
    const s = new LineSplitter();
    expect(s.push('{"a":1}\n{"b"')).toEqual(['{"a":1}']);
    expect(s.push(":2}\n\n")).toEqual(['{"b":2}']);
    expect(s.push('{"c":3}')).toEqual([]);
    expect(s.end()).toEqual(['{"c":3}']);
  });

  it("hands each progress line over as it arrives, the summary last", async () => {
    const lines: ReplayLine[] = [];
    const a = JSON.stringify(progress({ examined: 2, replayed: 2 }));
    const b = JSON.stringify(progress({ examined: 4, replayed: 4, done: true }));
    // A multi-byte character cut between chunks still decodes.
    const withCyrillic = JSON.stringify(progress({ queue: "очередь", examined: 3 }));
    const bytes = `${a}\n${withCyrillic}\n${b}\n`;
    const cut = bytes.indexOf("оч") + 1;
    await readReplay(streamOf([bytes.slice(0, cut), bytes.slice(cut)]), (l) => lines.push(l));
    expect(lines.map((l) => ("examined" in l ? l.examined : -1))).toEqual([2, 3, 4]);
    expect((lines[1] as ReplayProgress).queue).toBe("очередь");
    expect(lines[2]?.done).toBe(true);
  });

  it("recognises a replay that stopped with an error", async () => {
    const lines: ReplayLine[] = [];
    await readReplay(streamOf(['{"done":false,"error":{"code":"broker_unavailable","message":"gone"}}']), (l) => lines.push(l));
    expect(lines).toHaveLength(1);
    expect(isStopped(lines[0]!)).toBe(true);
    expect(isStopped(progress())).toBe(false);
  });

  it("measures progress against the depth at the start", () => {
    expect(replayFraction(progress({ examined: 1 }))).toBe(0.25);
    expect(replayFraction(progress({ examined: 9 }))).toBe(1);
    expect(replayFraction(progress({ depth_at_start: 0 }))).toBe(0);
    expect(replayFraction(progress({ done: true, examined: 0 }))).toBe(1);
  });
});
