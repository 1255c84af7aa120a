#!/usr/bin/env node
// Prints the gzip size of the JavaScript and CSS that the built index.html
// loads before the first render (its entry script, the chunks that entry
// imports statically, and its stylesheets), and fails over the budget.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const BUDGET_JS_KIB = 200;
const dist = join(dirname(fileURLToPath(import.meta.url)), "../dist");
const manifest = JSON.parse(readFileSync(join(dist, ".vite/manifest.json"), "utf8"));
const entry = Object.values(manifest).find((c) => c.isEntry);
if (!entry) throw new Error("no entry chunk in dist/.vite/manifest.json");

const js = new Set();
const css = new Set();
const walk = (chunk) => {
  if (js.has(chunk.file)) return;
  js.add(chunk.file);
  for (const f of chunk.css ?? []) css.add(f);
  for (const key of chunk.imports ?? []) walk(manifest[key]);
};
walk(entry);

const gz = (file) => gzipSync(readFileSync(join(dist, file)), { level: 9 }).length;
const kib = (n) => (n / 1024).toFixed(1);
let jsTotal = 0;
for (const f of js) {
  const n = gz(f);
  jsTotal += n;
  console.log(`  ${f}  ${kib(n)} KiB gzip`);
}
let cssTotal = 0;
for (const f of css) {
  const n = gz(f);
  cssTotal += n;
  console.log(`  ${f}  ${kib(n)} KiB gzip`);
}
console.log(`initial JavaScript: ${kib(jsTotal)} KiB gzip (budget ${BUDGET_JS_KIB} KiB); CSS: ${kib(cssTotal)} KiB gzip`);
if (jsTotal > BUDGET_JS_KIB * 1024) {
  console.error(`over budget by ${kib(jsTotal - BUDGET_JS_KIB * 1024)} KiB`);
  process.exit(1);
}
