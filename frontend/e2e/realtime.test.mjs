// The socket cut and restored: the offline banner shows, the client resumes
// from its position, and what happened meanwhile appears once, nothing missed.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { cutProxy, eventually, freshChatId, launch, newPage, sandbox, screenshot, signIn, useApiBase } from "./helpers.mjs";

let browser;
let proxy;
before(async () => {
  browser = await launch();
  proxy = await cutProxy();
});
after(async () => {
  await browser?.close();
  await proxy?.close();
});

test("the socket cut and restored: a banner meanwhile, then nothing missed and nothing shown twice", async () => {
  const page = await newPage(browser);
  await useApiBase(page, proxy.url);
  const sentFrames = [];
  page.on("websocket", (ws) => ws.on("framesent", (f) => sentFrames.push(String(f.payload))));
  await signIn(page);

  const suffix = String(Date.now()).slice(-5);
  const name = `Dina ${suffix}`;
  const chat = freshChatId();
  await sandbox.inbound(chat, "First question", name);
  const row = page.getByTestId("conversation-row").filter({ hasText: name });
  await row.click();
  await page.getByTestId("thread").getByText("First question").waitFor();

  proxy.cut();
  await page.getByTestId("offline-banner").waitFor({ timeout: 15_000 });
  assert.equal(await page.getByTestId("link-state").getAttribute("data-state"), "offline");
  // Meanwhile the customer writes twice, and someone new writes too.
  await sandbox.inbound(chat, "Second question", name);
  await sandbox.inbound(chat, "Third question", name);
  const other = `Egor ${suffix}`;
  await sandbox.inbound(freshChatId(), "Hello there", other);
  await screenshot(page, "offline-banner");
  await new Promise((r) => setTimeout(r, 1_500));

  proxy.restore();
  await page.locator('[data-testid="link-state"][data-state="live"]').waitFor({ timeout: 45_000 });
  await page.getByTestId("offline-banner").waitFor({ state: "detached" });
  const thread = page.getByTestId("thread");
  await thread.getByText("Third question").waitFor({ timeout: 15_000 });
  await page.getByTestId("conversation-row").filter({ hasText: other }).waitFor({ timeout: 15_000 });

  for (const text of ["First question", "Second question", "Third question"]) {
    assert.equal(await thread.getByText(text, { exact: true }).count(), 1, `"${text}" shown ${await thread.getByText(text, { exact: true }).count()} times`);
  }
  const order = await thread.locator('[data-testid="message"][data-direction="in"] .msg-text').allTextContents();
  assert.deepEqual(order, ["First question", "Second question", "Third question"]);
  assert.equal(await page.getByTestId("conversation-row").filter({ hasText: name }).count(), 1);
  await eventually(async () => sentFrames.some((f) => f.includes('"type":"resume"')), 5_000, "a resume frame");
  await page.context().close();
});
