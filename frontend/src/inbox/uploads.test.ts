import { afterEach, describe, expect, it, vi } from "vitest";
import { UploadCancelled, contentTypeOf, patch, percent, putFile, readyIds, settled, type PendingFile } from "./uploads";

const file = (over: Partial<PendingFile>): PendingFile => ({
  key: "k",
  name: "a.pdf",
  size: 1000,
  state: "uploading",
  loaded: 0,
  id: null,
  error: null,
  ...over,
});

describe("files of a reply", () => {
  it("show whole percents, 100 only once done", () => {
    expect(percent(file({ loaded: 0 }))).toBe(0);
    expect(percent(file({ loaded: 505 }))).toBe(50);
    expect(percent(file({ loaded: 1000 }))).toBe(99);
    expect(percent(file({ loaded: 1000, state: "done" }))).toBe(100);
    expect(percent(file({ size: 0, loaded: 0 }))).toBe(0);
  });

  it("send the finished ones, in order, and wait while any is on its way", () => {
    const files = [
      file({ key: "1", state: "done", id: "a" }),
      file({ key: "2", state: "failed" }),
      file({ key: "3", state: "done", id: "c" }),
    ];
    expect(readyIds(files)).toEqual(["a", "c"]);
    expect(settled(files)).toBe(true);
    expect(settled([...files, file({ key: "4", state: "starting" })])).toBe(false);
    expect(patch(files, "2", { state: "done", id: "b" }).map((f) => f.id)).toEqual(["a", "b", "c"]);
  });

  it("declare the browser's media type, or a plain binary", () => {
    expect(contentTypeOf({ type: "image/png" })).toBe("image/png");
    expect(contentTypeOf({ type: "" })).toBe("application/octet-stream");
  });
});

class FakeXhr {
  static last: FakeXhr | null = null;
  method = "";
  url = "";
  headers: Record<string, string> = {};
  status = 0;
  body: unknown = null;
  upload: { onprogress: ((e: { loaded: number }) => void) | null } = { onprogress: null };
  onload: (() => void) | null = null;
  onerror: (() => void) | null = null;
  onabort: (() => void) | null = null;
  constructor() {
    FakeXhr.last = this;
  }
  open(method: string, url: string) {
    this.method = method;
    this.url = url;
  }
  setRequestHeader(name: string, value: string) {
    this.headers[name] = value;
  }
  send(body: unknown) {
    this.body = body;
  }
  abort() {
    this.onabort?.();
  }
}

describe("putFile", () => {
  afterEach(() => vi.unstubAllGlobals());
  const target = {
    id: "f1",
    method: "PUT",
    upload_url: "https://bucket.example/f1?sig=x",
    headers: { "Content-Type": "application/pdf", "Content-Length": "3" },
    expires_in: 600,
  };

  it("sends the presigned request with its headers (but Content-Length, the browser's), reporting progress", async () => {
    vi.stubGlobal("XMLHttpRequest", FakeXhr);
    const seen: number[] = [];
    const done = putFile(target, new Blob(["abc"]), (n) => seen.push(n), new AbortController().signal);
    const xhr = FakeXhr.last!;
    expect([xhr.method, xhr.url]).toEqual(["PUT", target.upload_url]);
    expect(xhr.headers).toEqual({ "Content-Type": "application/pdf" });
    xhr.upload.onprogress?.({ loaded: 1 });
    xhr.upload.onprogress?.({ loaded: 3 });
    xhr.status = 200;
    xhr.onload?.();
    await done;
    expect(seen).toEqual([1, 3]);
  });

  it("is cancelled by its signal, and fails on a refusal", async () => {
    vi.stubGlobal("XMLHttpRequest", FakeXhr);
    const ctl = new AbortController();
    const cancelled = putFile(target, new Blob(["abc"]), () => {}, ctl.signal);
    ctl.abort();
    await expect(cancelled).rejects.toBeInstanceOf(UploadCancelled);
    const refused = putFile(target, new Blob(["abc"]), () => {}, new AbortController().signal);
    FakeXhr.last!.status = 403;
    FakeXhr.last!.onload?.();
    await expect(refused).rejects.toThrow("storage answered 403");
  });
});
