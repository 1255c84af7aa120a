// The ops screens against the real backend: a reply that fails for good (a
// chat the sandbox says blocked the account) lands in tg-delivery.dlq, and
// is replayed from the DLQ screen with its progress shown until the queue is
// empty; the Telegram screen with the sandbox; axe-core on each ops screen.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  createOperator,
  env,
  eventually,
  freshChatId,
  launch,
  newPage,
  sandbox,
  screenshot,
  seriousA11yViolations,
  signIn,
} from "./helpers.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await sandbox.clearFaults().catch(() => {});
  await browser?.close();
});

test("a reply to a blocked chat dead-letters; the DLQ screen replays it with progress, and the queue empties", async () => {
  const page = await newPage(browser);
  await signIn(page);
  const chat = freshChatId();
  const name = `Boris ${String(Date.now()).slice(-5)}`;
  await sandbox.inbound(chat, "Can you send the timetable?", name);
  await sandbox.faults({ blocked_chats: [chat] });
  await page.getByTestId("conversation-row").filter({ hasText: name }).click();
  await page.getByLabel(`Reply to ${name}`).fill("Here is the timetable for Monday.");
  await page.getByTestId("send").click();
  await page.locator('[data-testid="delivery"][data-status="failed"]').waitFor({ timeout: 30_000 });

  // The cause is gone; on-call replays from the screen.
  await sandbox.clearFaults();
  await page.getByTestId("nav-ops").click();
  await page.getByRole("link", { name: "Dead-letter queues" }).click();
  const queue = page.locator('[data-testid="dlq-queue"][data-queue="tg-delivery.dlq"]');
  await queue.waitFor();
  await eventually(async () => Number(await queue.getAttribute("data-depth")) >= 1, 20_000, "the letter in tg-delivery.dlq");
  await queue.getByRole("button", { name: "Peek" }).click();
  const peek = queue.getByTestId("dlq-peek");
  await peek.getByText("user_blocked").first().waitFor();
  await screenshot(page, "ops-dlq");
  assert.deepEqual(await seriousA11yViolations(page), []);

  // A dry run first: it counts, and sends nothing.
  await queue.getByLabel("Dry run").check();
  await queue.getByRole("button", { name: "Replay" }).click();
  await queue.getByText(/Dry run: [1-9]\d* would be replayed; nothing was sent\./).waitFor({ timeout: 30_000 });
  await eventually(async () => Number(await queue.getAttribute("data-depth")) >= 1, 20_000, "the letter still in the queue");
  assert.deepEqual(await sandbox.sent(chat), []);
  await queue.getByLabel("Dry run").uncheck();

  // Every state the progress element goes through, in order.
  await page.evaluate(() => {
    window.__replay = [];
    new MutationObserver(() => {
      const el = document.querySelector('[data-testid="replay-progress"]');
      const s = el?.getAttribute("data-state");
      if (s && window.__replay[window.__replay.length - 1] !== s) window.__replay.push(s);
    }).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"] });
  });
  await queue.getByRole("button", { name: "Replay" }).click();
  const progress = queue.getByTestId("replay-progress");
  await progress.and(page.locator('[data-state="done"]')).waitFor({ timeout: 30_000 });
  assert.match(await progress.innerText(), /Replay finished: [1-9]\d* replayed, 0 left in the queue\./);
  assert.deepEqual(await page.evaluate(() => window.__replay), ["running", "done"]);
  assert.equal(await progress.locator("progress").getAttribute("value"), "100");
  await eventually(async () => (await queue.getAttribute("data-depth")) === "0", 20_000, "an empty tg-delivery.dlq");
  await screenshot(page, "ops-dlq-replayed");

  // The reply reached the customer, once.
  const sent = await eventually(async () => {
    const msgs = await sandbox.sent(chat);
    return msgs.length > 0 && msgs;
  }, 20_000, "the replayed reply at the sandbox");
  assert.equal(sent.length, 1);
  assert.equal(sent[0].text, "Here is the timetable for Monday.");
  await page.context().close();
});

test("purging a DLQ asks for its name typed, then empties it and sends nothing", async () => {
  const page = await newPage(browser);
  await signIn(page);
  const chat = freshChatId();
  const name = `Vera ${String(Date.now()).slice(-5)}`;
  await sandbox.inbound(chat, "Is the course still on?", name);
  await sandbox.faults({ blocked_chats: [chat] });
  await page.getByTestId("conversation-row").filter({ hasText: name }).click();
  await page.getByLabel(`Reply to ${name}`).fill("Yes, it is.");
  await page.getByTestId("send").click();
  await page.locator('[data-testid="delivery"][data-status="failed"]').waitFor({ timeout: 30_000 });
  await sandbox.clearFaults();

  await page.getByTestId("nav-ops").click();
  await page.getByRole("link", { name: "Dead-letter queues" }).click();
  const queue = page.locator('[data-testid="dlq-queue"][data-queue="tg-delivery.dlq"]');
  await eventually(async () => Number(await queue.getAttribute("data-depth")) >= 1, 20_000, "the letter in tg-delivery.dlq");
  await queue.getByRole("button", { name: "Purge" }).click();
  const dialog = page.getByTestId("purge-confirm");
  const go = dialog.getByRole("button", { name: "Purge for good" });
  assert.equal(await go.isDisabled(), true);
  await dialog.getByLabel("Type tg-delivery.dlq to confirm").fill("tg-delivery");
  assert.equal(await go.isDisabled(), true);
  await dialog.getByLabel("Type tg-delivery.dlq to confirm").fill("tg-delivery.dlq");
  assert.deepEqual(await seriousA11yViolations(page), []);
  await go.click();
  await queue.getByText(/Messages purged from tg-delivery\.dlq: [1-9]/).waitFor();
  await eventually(async () => (await queue.getAttribute("data-depth")) === "0", 20_000, "an empty tg-delivery.dlq");
  await new Promise((r) => setTimeout(r, 1_000));
  assert.deepEqual(await sandbox.sent(chat), []);
  await page.context().close();
});

test("the Telegram screen shows the sandbox's session and says the login is not available; the ops links show when set", async () => {
  const page = await newPage(browser);
  // This deployment's config.js names the broker's UI and Grafana.
  await page.route("**/config.js", (route) =>
    route.fulfill({
      contentType: "text/javascript",
      body: `window.FASTPREP_CONFIG = ${JSON.stringify({ apiBase: env.api, brokerUiUrl: "http://127.0.0.1:15672/", grafanaUrl: "https://grafana.example/d/fastprep" })};`,
    }),
  );
  await signIn(page);
  await page.getByTestId("nav-ops").click();
  await page.getByRole("link", { name: "Telegram account" }).click();
  await page.locator('[data-testid="tg-session"][data-state="authorized"]').waitFor();
  assert.equal(await page.getByRole("link", { name: "Broker UI (RabbitMQ)" }).getAttribute("href"), "http://127.0.0.1:15672/");
  assert.equal(await page.getByRole("link", { name: "Grafana dashboards" }).getAttribute("href"), "https://grafana.example/d/fastprep");
  await page.getByTestId("tg-session").getByText("Authorized").waitFor();
  await page.locator('[data-testid="tg-step"][data-step="none"]').waitFor();
  assert.deepEqual(await seriousA11yViolations(page), []);
  await page.getByRole("button", { name: "Log in again" }).click();
  await page.getByLabel("The account's phone number, international form").fill("+44 7700 900123");
  await page.getByRole("button", { name: "Send the code" }).click();
  const error = page.getByTestId("tg-error");
  await error.waitFor();
  assert.match(await error.innerText(), /not available: the adapter runs the sandbox Telegram/);
  await screenshot(page, "ops-telegram");
  assert.deepEqual(await seriousA11yViolations(page), []);
  await page.context().close();
});

/** Runs SQL on the suite's own database (scripts/test-web exports DATABASE_URL). */
async function sql(query) {
  const { execFileSync } = await import("node:child_process");
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error("DATABASE_URL is not set: run these specs through scripts/test-web");
  return execFileSync("psql", [url, "-qtAc", query], { encoding: "utf8" }).trim();
}

test("the outbox screen shows its rows by status, and retries failed rows after a confirmation", async () => {
  // A relay that failed for good, staged: an authorization event already
  // published (its consumer takes it twice without harm) marked failed. A new
  // account makes sure there is one.
  await createOperator("outbox");
  await eventually(
    async () => (await sql("SELECT count(*) FROM outbox WHERE status = 'done' AND event_type LIKE 'authz.%'")) !== "0",
    20_000,
    "a published authorization event",
  );
  const id = await sql(
    "UPDATE outbox SET status = 'failed', last_error = 'broker unreachable (staged by the spec)' " +
      "WHERE id = (SELECT max(id) FROM outbox WHERE status = 'done' AND event_type LIKE 'authz.%') RETURNING id",
  );
  assert.match(id, /^\d+$/);
  const page = await newPage(browser);
  await signIn(page);
  await page.getByTestId("nav-ops").click();
  await page.getByRole("link", { name: "Outbox" }).click();
  await page.getByTestId("outbox-counts").waitFor();
  // The served config.js sets no ops links: none is shown.
  assert.equal(await page.getByTestId("link-broker").count(), 0);
  assert.equal(await page.getByTestId("link-grafana").count(), 0);
  const failed = page.getByTestId("outbox-failed");
  await failed.getByText("broker unreachable (staged by the spec)").waitFor();
  assert.equal(await page.getByTestId("outbox-failed-count").innerText(), "1");
  await screenshot(page, "ops-outbox");
  assert.deepEqual(await seriousA11yViolations(page), []);

  await page.getByRole("button", { name: "Retry failed rows" }).click();
  const dialog = page.getByTestId("outbox-confirm");
  await dialog.getByText("Failed rows to put back to pending: 1. The relay publishes them again.").waitFor();
  assert.deepEqual(await seriousA11yViolations(page), []);
  await dialog.getByRole("button", { name: "Retry them" }).click();
  await page.getByRole("status").getByText("Rows put back to pending: 1.").waitFor();
  await page.getByTestId("outbox-no-failed").waitFor({ timeout: 20_000 });
  await eventually(async () => (await sql(`SELECT status FROM outbox WHERE id = ${id}`)) === "done", 20_000, "the row published again");
  await page.context().close();
});
