// The web app's budgets, measured in headless Chromium against the real
// backend that scripts/test-web starts (run through `scripts/bench web`):
//  1. the inbox's first render with 5,000 conversations: a cold page load
//     (session restored from the cookie) to the list's first rows painted,
//     and the list mounted again once all 5,000 are loaded;
//  2. a delivery status arriving on the socket to the screen showing it,
//     over a few hundred changes (replies sent in the open conversation go
//     queued -> sending -> sent).
// Figures are printed, not asserted. The initial JavaScript's size is
// printed by `npm run size` before this runs.
import { api, env, eventually, freshChatId, launch, newPage, sandbox, signIn } from "../e2e/helpers.mjs";
import { execFileSync } from "node:child_process";

const CONVERSATIONS = Number(process.env.BENCH_CONVERSATIONS ?? 5000);
const REPLIES = Number(process.env.BENCH_REPLIES ?? 200);
const LOADS = Number(process.env.BENCH_LOADS ?? 5);

const ms = (n) => `${n.toFixed(1)} ms`;
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
const log = (s) => console.log(`[bench web] ${s}`);

function seed() {
  // Straight into the bench's own database: 5,000 open conversations, newest first.
  execFileSync("psql", [
    process.env.DATABASE_URL,
    "-qc",
    `INSERT INTO conversations (id, tg_chat_id, title, last_message_at)
     SELECT gen_random_uuid(), 8100000000 + g, 'Bench student ' || g, now() - g * interval '1 minute'
     FROM generate_series(1, ${CONVERSATIONS}) g`,
  ]);
}

/** Records, from the document's start, when the first conversation row is on screen. */
const FIRST_ROW = () => {
  window.__firstRow = null;
  const seen = () => {
    if (window.__firstRow !== null) return;
    if (document.querySelector('[data-testid="conversation-row"]')) {
      // The frame after the one that put it in the DOM: painted.
      requestAnimationFrame(() => setTimeout(() => (window.__firstRow ??= performance.now())));
    } else requestAnimationFrame(seen);
  };
  requestAnimationFrame(seen);
};

async function coldLoads(browser) {
  const page = await newPage(browser);
  await signIn(page);
  await page.addInitScript(FIRST_ROW);
  const times = [];
  for (let i = 0; i < LOADS + 1; i++) {
    await page.goto(`${env.app}/inbox`);
    const t = await (await page.waitForFunction(() => window.__firstRow, null, { timeout: 30_000 })).jsonValue();
    if (i > 0) times.push(t); // the first load warms the HTTP cache, as an operator's browser is
  }
  return { page, times };
}

/** Scrolls the list until every conversation is loaded; the number loaded. */
async function loadAll(page) {
  const list = page.getByTestId("conversation-list");
  await list.waitFor();
  const rowHeight = await page.getByTestId("conversation-row").first().evaluate((el) => el.getBoundingClientRect().height);
  const loaded = () => list.evaluate((el, h) => Math.round(el.scrollHeight / h), rowHeight);
  await eventually(
    async () => {
      await list.evaluate((el) => el.scrollTo(0, el.scrollHeight));
      return (await loaded()) >= CONVERSATIONS;
    },
    180_000,
    `${CONVERSATIONS} conversations loaded by scrolling`,
  );
  return { loaded: await loaded(), rowHeight };
}

/** Leaves the inbox and comes back: the list mounts with everything loaded, from the cache. */
async function remount(page) {
  const times = [];
  for (let i = 0; i < LOADS; i++) {
    await page.getByTestId("nav-admin").click();
    await page.getByTestId("conversation-list").waitFor({ state: "detached" });
    times.push(
      await page.evaluate(
        () =>
          new Promise((resolve) => {
            const t0 = performance.now();
            document.querySelector('[data-testid="nav-inbox"]').click();
            const check = () =>
              document.querySelector('[data-testid="conversation-row"]')
                ? requestAnimationFrame(() => setTimeout(() => resolve(performance.now() - t0)))
                : requestAnimationFrame(check);
            check();
          }),
      ),
    );
  }
  return times;
}

/** Every `message.status` frame's arrival and every status shown, timed in the page. */
const STATUS_PROBE = () => {
  window.__frames = [];
  window.__shown = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (ev) => {
        const t = performance.now();
        try {
          const f = JSON.parse(ev.data);
          if (f.type === "message.status") window.__frames.push({ id: f.data.message_id ?? f.data.id, status: f.data.status, t });
        } catch {
          /* not JSON: not ours */
        }
      });
    }
  };
  const note = (el) => {
    const li = el.closest("[data-message-id]");
    if (li) window.__shown.push({ id: li.getAttribute("data-message-id"), status: el.getAttribute("data-status"), t: performance.now() });
  };
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === "attributes") note(r.target);
      for (const n of r.addedNodes) {
        if (n.nodeType !== 1) continue;
        if (n.matches('[data-testid="delivery"]')) note(n);
        n.querySelectorAll?.('[data-testid="delivery"]').forEach(note);
      }
    }
  }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"] });
};

const ORDER = ["queued", "sending", "retrying", "sent", "failed"];

async function statusLatency(browser) {
  const page = await newPage(browser);
  await page.addInitScript(STATUS_PROBE);
  await signIn(page);
  const chat = freshChatId();
  await sandbox.inbound(chat, "Bench: replies follow", "Bench Reader");
  const row = page.getByTestId("conversation-row").filter({ hasText: "Bench Reader" });
  await row.waitFor({ timeout: 30_000 });
  await row.click();
  await page.locator("[data-message-id]").first().waitFor();
  const id = await row.getAttribute("data-conversation-id");
  const token = await api.login();
  for (let i = 0; i < REPLIES; i++) {
    await api.call("POST", `/api/conversations/${id}/messages`, {
      token,
      body: { text: `Reply ${i + 1}`, client_msg_id: crypto.randomUUID() },
    });
    await new Promise((r) => setTimeout(r, 25));
  }
  await eventually(async () => (await sandbox.sent(chat)).length >= REPLIES, 120_000, "every reply sent");
  await page.waitForTimeout(1_000);
  const { frames, shown } = await page.evaluate(() => ({ frames: window.__frames, shown: window.__shown }));
  await page.context().close();
  // Each frame: until the screen shows that status, or a later one (two
  // frames landing in one render show only the second).
  const latencies = [];
  let missed = 0;
  for (const f of frames) {
    const rank = ORDER.indexOf(f.status);
    const hit = shown.find((s) => s.id === f.id && s.t >= f.t && ORDER.indexOf(s.status) >= rank);
    if (hit) latencies.push(hit.t - f.t);
    else missed += 1;
  }
  return { latencies: latencies.sort((a, b) => a - b), frames: frames.length, missed };
}

const browser = await launch();
try {
  log(`seeding ${CONVERSATIONS} conversations`);
  seed();

  const { page, times: cold } = await coldLoads(browser);
  const coldSorted = [...cold].sort((a, b) => a - b);
  log(
    `inbox cold load to first rows painted (${CONVERSATIONS} conversations, session from the cookie), ${LOADS} loads: ` +
      `median ${ms(pct(coldSorted, 50))}, max ${ms(coldSorted.at(-1))} (budget 1 s)`,
  );

  const { loaded } = await loadAll(page);
  const mounts = (await remount(page)).sort((a, b) => a - b);
  log(
    `inbox list mounted with all ${loaded} conversations loaded, ${LOADS} times: ` +
      `median ${ms(pct(mounts, 50))}, max ${ms(mounts.at(-1))} (budget 1 s)`,
  );
  await page.context().close();

  const s = await statusLatency(browser);
  log(
    `status on the socket to the screen, ${s.latencies.length} of ${s.frames} message.status frames ` +
      `(${REPLIES} replies; ${s.missed} never shown): p50 ${ms(pct(s.latencies, 50))}, ` +
      `p99 ${ms(pct(s.latencies, 99))}, max ${ms(s.latencies.at(-1))} (budget p99 100 ms)`,
  );
} finally {
  await browser.close();
}
