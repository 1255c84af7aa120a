#!/usr/bin/env node
// The bucket's CORS rule, in front of a local S3 server that has none
// (s3s-fs): answers the browser's preflight for the page's origin and adds
// Access-Control-Allow-Origin to every answer; every request goes to the
// server as it came, Host header included, so presigned (SigV4) URLs made
// for this address check out there. scripts/test-web points S3_ENDPOINT at
// it, as a real bucket would be configured to allow the web app's origin
// (docs/RUNBOOK.md, attachments).
//   node scripts/s3-cors.mjs --port 18482 --s3 http://127.0.0.1:18483 --origin http://127.0.0.1:18473
import { createServer, request } from "node:http";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    port: { type: "string" },
    host: { type: "string", default: "127.0.0.1" },
    s3: { type: "string" },
    origin: { type: "string" },
  },
});
const s3 = new URL(values.s3);
const cors = {
  "access-control-allow-origin": values.origin,
  "access-control-expose-headers": "ETag",
  vary: "Origin",
};

const server = createServer((req, res) => {
  const fromPage = req.headers.origin === values.origin;
  if (req.method === "OPTIONS" && fromPage) {
    res.writeHead(204, {
      ...cors,
      "access-control-allow-methods": "GET, HEAD, PUT",
      "access-control-allow-headers": req.headers["access-control-request-headers"] ?? "",
      "access-control-max-age": "600",
    });
    return res.end();
  }
  const upstream = request(
    { host: s3.hostname, port: s3.port, method: req.method, path: req.url, headers: req.headers },
    (answer) => {
      const headers = { ...answer.headers, ...(fromPage ? cors : {}) };
      res.writeHead(answer.statusCode ?? 502, headers);
      answer.pipe(res);
    },
  );
  upstream.on("error", (e) => {
    if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
    res.end(`s3 unreachable: ${e.message}\n`);
  });
  req.pipe(upstream);
});
server.listen(Number(values.port), values.host, () => {
  console.log(`CORS for ${values.origin} at http://${values.host}:${values.port} in front of ${s3.origin}`);
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => server.close(() => process.exit(0)));
