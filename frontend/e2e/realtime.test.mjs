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
  const received = [];
  page.on("websocket", (ws) => {
    ws.on("framesent", (f) => sentFrames.push(String(f.payload)));
    ws.on("framereceived", (f) => received.push(String(f.payload)));
  });
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
  // Replayed by the server after the resume, not reloaded.
  assert.ok(!received.some((f) => f.includes('"type":"resync"')), "the server answered resync");
  await page.context().close();
});

test("a cut longer than the server's replay buffer ends in resync: the screen is loaded again, nothing doubled", async () => {
  const page = await newPage(browser);
  await useApiBase(page, proxy.url);
  const received = [];
  page.on("websocket", (ws) => ws.on("framereceived", (f) => received.push(String(f.payload))));
  await signIn(page);

  const name = `Fedor ${String(Date.now()).slice(-5)}`;
  const chat = freshChatId();
  await sandbox.inbound(chat, "Message 0", name);
  await page.getByTestId("conversation-row").filter({ hasText: name }).click();
  await page.getByTestId("thread").getByText("Message 0", { exact: true }).waitFor();

  proxy.cut();
  await page.getByTestId("offline-banner").waitFor({ timeout: 15_000 });
  // More events than the API keeps for replay (scripts/test-web: REALTIME_REPLAY_EVENTS=40).
  for (let i = 1; i <= 45; i++) await sandbox.inbound(chat, `Message ${i}`, name);
  await new Promise((r) => setTimeout(r, 3_000));
  proxy.restore();

  await page.locator('[data-testid="link-state"][data-state="live"]').waitFor({ timeout: 45_000 });
  const thread = page.getByTestId("thread");
  await thread.getByText("Message 45", { exact: true }).waitFor({ timeout: 20_000 });
  await eventually(async () => received.some((f) => f.includes('"type":"resync"')), 5_000, "a resync frame");
  const texts = await thread.locator('[data-testid="message"][data-direction="in"] .msg-text').allTextContents();
  assert.equal(new Set(texts).size, texts.length, "a message is shown twice");
  // The newest page of the thread, in order, ending with the last message.
  const numbers = texts.map((t) => Number(t.replace("Message ", "")));
  assert.deepEqual(numbers, [...numbers].sort((a, b) => a - b));
  assert.equal(numbers[numbers.length - 1], 45);
  assert.ok(numbers.length >= 45, `only ${numbers.length} messages shown`);
  await page.context().close();
});
