#!/usr/bin/env node
// Fails when src/api/schema.d.ts is not what openapi-typescript makes of
// ../docs/openapi.json today (run `npm run gen:api-types` to bring it up to date).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const committed = join(root, "src/api/schema.d.ts");
const dir = mkdtempSync(join(tmpdir(), "api-types-"));
const fresh = join(dir, "schema.d.ts");
try {
  execFileSync(
    process.execPath,
    [join(root, "node_modules/openapi-typescript/bin/cli.js"), join(root, "../docs/openapi.json"), "-o", fresh],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const want = readFileSync(fresh, "utf8");
  let have = "";
  try {
    have = readFileSync(committed, "utf8");
  } catch {
    // Missing counts as stale.
  }
  if (want !== have) {
    console.error("src/api/schema.d.ts is stale: docs/openapi.json changed. Run `npm run gen:api-types` and commit the result.");
    process.exit(1);
  }
  console.log("src/api/schema.d.ts matches docs/openapi.json");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
