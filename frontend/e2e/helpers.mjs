// What the end-to-end specs share: the browser (Debian's chromium through
// playwright-core), signing in, the sandbox Telegram's control routes, REST
// calls for set-up, and screenshots into docs/screenshots/.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these specs through scripts/test-web`);
  return v;
};

export const env = {
  app: need("E2E_APP_URL"),
  api: need("E2E_API_URL"),
  sandbox: need("E2E_SANDBOX_URL"),
  sandboxToken: need("SANDBOX_TOKEN"),
  adminEmail: need("ADMIN_EMAIL"),
  adminPassword: need("ADMIN_PASSWORD"),
  screenshots: process.env.E2E_SCREENSHOTS ?? "e2e/.out",
  chromium: process.env.CHROMIUM ?? "/usr/bin/chromium",
};

export async function launch() {
  return chromium.launch({
    executablePath: env.chromium,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
}

/** A fresh browser context (its own storage), 1280 px wide, in `locale`. */
export async function newPage(browser, { locale = "en-GB" } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));
  return page;
}

export async function signIn(page, email = env.adminEmail, password = env.adminPassword, path = "/inbox") {
  await page.goto(env.app + path);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("sign-out").waitFor();
  await page.locator('[data-testid="link-state"][data-state="live"]').waitFor();
}

export async function screenshot(page, name) {
  mkdirSync(env.screenshots, { recursive: true });
  await page.screenshot({ path: join(env.screenshots, `${name}.png`) });
}

async function call(base, method, path, { token, body } = {}) {
  const res = await fetch(base + path, {
    method,
    headers: {
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return data;
}

export const api = {
  call: (method, path, opts) => call(env.api, method, path, opts),
  login: async (email = env.adminEmail, password = env.adminPassword) =>
    (await call(env.api, "POST", "/api/auth/login", { body: { email, password } })).access_token,
};

export const sandbox = {
  call: (method, path, body) => call(env.sandbox, method, path, { token: env.sandboxToken, body }),
  /** A customer writes to the account. */
  inbound: (chatId, text, firstName) =>
    sandbox.call("POST", "/sandbox/inbound", { chat_id: chatId, text, sender: { id: chatId, first_name: firstName } }),
  /** What the account sent to `chatId`. */
  sent: async (chatId) => (await sandbox.call("GET", `/sandbox/sent?chat_id=${chatId}`)).messages,
  faults: (plan) => sandbox.call("POST", "/sandbox/faults", plan),
  clearFaults: () => sandbox.call("DELETE", "/sandbox/faults"),
};

/** A chat id no earlier run of the suite used. */
export function freshChatId() {
  return 7_000_000_000 + Math.floor(Math.random() * 1_000_000_000);
}

/** Polls `fn` until it returns a truthy value or `ms` pass. */
export async function eventually(fn, ms = 15_000, what = "condition") {
  const until = Date.now() + ms;
  let last;
  while (Date.now() < until) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

/** An account with the seeded `operator` role, made by the admin over REST. */
export async function createOperator(label) {
  const token = await api.login();
  const roles = await api.call("GET", "/api/roles", { token });
  const operator = (Array.isArray(roles) ? roles : roles.items).find((r) => r.name === "operator");
  const email = `${label}-${Date.now()}@web-e2e.local`;
  const password = "operator-password-123";
  const user = await api.call("POST", "/api/users", {
    token,
    body: { email, display_name: `Operator ${label}`, password, role_ids: [operator.id] },
  });
  return { id: user.id, email, password, adminToken: token };
}

/** Records every delivery status the page shows for outbound messages, in order, per message. */
export async function recordStatuses(page) {
  await page.evaluate(() => {
    window.__statuses = {};
    const note = (el) => {
      const li = el.closest("[data-message-id]");
      if (!li) return;
      const id = li.getAttribute("data-message-id");
      const list = (window.__statuses[id] ??= []);
      const s = el.getAttribute("data-status");
      if (list[list.length - 1] !== s) list.push(s);
    };
    document.querySelectorAll('[data-testid="delivery"]').forEach(note);
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.type === "attributes") note(r.target);
        for (const n of r.addedNodes) {
          if (n.nodeType !== 1) continue;
          if (n.matches('[data-testid="delivery"]')) note(n);
          n.querySelectorAll?.('[data-testid="delivery"]').forEach(note);
        }
      }
    }).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"] });
  });
}

export async function statusesOf(page, messageId) {
  return page.evaluate((id) => window.__statuses?.[id] ?? [], messageId);
}

/**
 * A TCP proxy in front of the API that a spec can cut (every open
 * connection dropped, new ones refused) and restore: the network failing
 * between the browser and the API.
 */
export async function cutProxy(target = new URL(env.api)) {
  const { createServer, connect } = await import("node:net");
  const open = new Set();
  let cut = false;
  const server = createServer((client) => {
    if (cut) return client.destroy();
    const upstream = connect(Number(target.port), target.hostname);
    open.add(client);
    open.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream).pipe(client);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      cut = true;
      for (const s of open) s.destroy();
      open.clear();
    },
    restore() {
      cut = false;
    },
    close: () => new Promise((r) => server.close(r)),
  };
}

/** Points the page's app at `apiBase` instead of the served config. */
export async function useApiBase(page, apiBase) {
  await page.route("**/config.js", (route) =>
    route.fulfill({ contentType: "text/javascript", body: `window.FASTPREP_CONFIG = ${JSON.stringify({ apiBase })};` }),
  );
}

/**
 * Runs axe-core on the page as it is and returns the serious and critical
 * violations (WCAG 2.x A and AA rules), each as "rule: target".
 */
export async function seriousA11yViolations(page) {
  const { createRequire } = await import("node:module");
  const path = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
  await page.addScriptTag({ path });
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }),
  );
  if (result.passes.length === 0) throw new Error("axe-core checked nothing");
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .flatMap((v) => v.nodes.map((n) => `${v.id} (${v.impact}): ${n.target.join(" ")}`));
}
