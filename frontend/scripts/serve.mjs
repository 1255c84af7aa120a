#!/usr/bin/env node
// Serves the built app (dist/) the way a static host does: files as they are,
// index.html for every other path (the app's routes), and /config.js telling
// the app where the API is.
//   node scripts/serve.mjs --port 4173 --api http://127.0.0.1:8080
import { createServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { dirname, extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: process.env.PORT ?? "4173" },
    host: { type: "string", default: "127.0.0.1" },
    api: { type: "string", default: process.env.FASTPREP_API_URL ?? "" },
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
const configJs = `window.FASTPREP_CONFIG = ${JSON.stringify({ apiBase: values.api })};\n`;

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
server.listen(Number(values.port), values.host, () => {
  console.log(`serving ${root} at http://${values.host}:${values.port} (API: ${values.api || "same origin"})`);
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => server.close(() => process.exit(0)));
