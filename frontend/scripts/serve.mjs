#!/usr/bin/env node
// Serves the built app (dist/) the way a static host does: files as they are,
// index.html for every other path (the app's routes), and /config.js telling
// the app where the API is.
//   node scripts/serve.mjs --port 4173 --api http://127.0.0.1:8080
// With --proxy, /api/* (the WebSocket included) is passed to the API at that
// address instead, so the app and the API share one origin (scripts/dev):
//   node scripts/serve.mjs --port 4173 --proxy http://127.0.0.1:8080
import { createServer, request as httpRequest } from "node:http";
import { connect } from "node:net";
import { readFile, stat } from "node:fs/promises";
import { dirname, extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: process.env.PORT ?? "4173" },
    host: { type: "string", default: "127.0.0.1" },
    api: { type: "string", default: process.env.FASTPREP_API_URL ?? "" },
    proxy: { type: "string", default: "" },
    dir: { type: "string", default: join(dirname(fileURLToPath(import.meta.url)), "../dist") },
  },
});
const root = normalize(values.dir);
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
};
const proxy = values.proxy ? new URL(values.proxy) : null;
const configJs = `window.FASTPREP_CONFIG = ${JSON.stringify({ apiBase: proxy ? "" : values.api })};\n`;

/** Passes a request for /api/* to the API as it is, and its answer back. */
function forward(req, res) {
  const upstream = httpRequest(
    { host: proxy.hostname, port: proxy.port || 80, method: req.method, path: req.url, headers: req.headers },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.rawHeaders);
      answer.pipe(res);
    },
  );
  upstream.on("error", () => {
    if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
    res.end("the API cannot be reached\n");
  });
  req.pipe(upstream);
}

/** A WebSocket upgrade for /api/ws: the raw connection spliced to the API's. */
function tunnel(req, socket, head) {
  const upstream = connect(Number(proxy.port || 80), proxy.hostname, () => {
    const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
    upstream.write(lines.join("\r\n") + "\r\n\r\n");
    if (head.length) upstream.write(head);
    socket.pipe(upstream).pipe(socket);
  });
  const drop = () => {
    socket.destroy();
    upstream.destroy();
  };
  upstream.on("error", drop).on("close", drop);
  socket.on("error", drop).on("close", drop);
}

const isApi = (url) => /^\/api(\/|$|\?)/.test(url ?? "");

async function file(path) {
  const full = normalize(join(root, path));
  if (full !== root && !full.startsWith(root + sep)) return null;
  try {
    if (!(await stat(full)).isFile()) return null;
    return { body: await readFile(full), type: TYPES[extname(full)] ?? "application/octet-stream", full };
  } catch {
    return null;
  }
}

const server = createServer(async (req, res) => {
  if (proxy && isApi(req.url)) return forward(req, res);
  const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
  const headers = { "x-content-type-options": "nosniff", "referrer-policy": "no-referrer" };
  if (path === "/config.js") {
    res.writeHead(200, { ...headers, "content-type": TYPES[".js"], "cache-control": "no-store" });
    return res.end(configJs);
  }
  let found = await file(path);
  if (!found && !path.startsWith("/assets/")) found = await file("/index.html");
  if (!found) {
    res.writeHead(404, { ...headers, "content-type": "text/plain" });
    return res.end("not found\n");
  }
  const immutable = path.startsWith("/assets/");
  res.writeHead(200, {
    ...headers,
    "content-type": found.type,
    "cache-control": immutable ? "public, max-age=31536000, immutable" : "no-cache",
  });
  res.end(req.method === "HEAD" ? undefined : found.body);
});
server.on("upgrade", (req, socket, head) => {
  if (proxy && isApi(req.url)) return tunnel(req, socket, head);
  socket.destroy();
});
server.listen(Number(values.port), values.host, () => {
  const api = proxy ? `${proxy.origin}, proxied at /api` : values.api || "same origin";
  console.log(`serving ${root} at http://${values.host}:${values.port} (API: ${api})`);
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => server.close(() => process.exit(0)));
