// Past the first page: a thread loads older messages on demand, and the
// conversation list loads its next page when its end comes into view,
// keeping only the rows in view in the page.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { api, eventually, freshChatId, launch, newPage, sandbox, signIn } from "./helpers.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test("a long thread loads its older messages on demand", async () => {
  const page = await newPage(browser);
  await signIn(page);
  const name = `Yana ${String(Date.now()).slice(-5)}`;
  const chat = freshChatId();
  for (let i = 1; i <= 60; i++) await sandbox.inbound(chat, `Line ${i}`, name);
  // All 60 stored before the thread opens, so its first page is the newest 50
  // (opened earlier, the first lines would be in it and the rest come live).
  const token = await api.login();
  await eventually(
    async () => {
      const list = await api.call("GET", `/api/conversations?q=${encodeURIComponent(name)}`, { token });
      const conv = list.items[0];
      if (!conv) return false;
      const page1 = await api.call("GET", `/api/conversations/${conv.id}/messages?limit=100`, { token });
      return page1.items.length === 60;
    },
    30_000,
    "the 60 messages stored",
  );
  await page.getByTestId("conversation-row").filter({ hasText: name }).click();
  const thread = page.getByTestId("thread");
  await thread.getByText("Line 60", { exact: true }).waitFor({ timeout: 20_000 });
  // The API's pages hold 50 messages: the first ten wait behind the button.
  assert.equal(await thread.getByText("Line 1", { exact: true }).count(), 0);
  await page.getByRole("button", { name: "Load older messages" }).click();
  await thread.getByText("Line 1", { exact: true }).waitFor();
  const texts = await thread.locator('[data-testid="message"] .msg-text').allTextContents();
  assert.deepEqual(texts, Array.from({ length: 60 }, (_, i) => `Line ${i + 1}`));
  await page.context().close();
});

test("the list loads its next page at the end and keeps only the rows in view in the page", async () => {
  const suffix = String(Date.now()).slice(-5);
  // The oldest of these is the one the first page (50 rows) leaves out.
  await sandbox.inbound(freshChatId(), "first of many", `Zoya ${suffix}`);
  await new Promise((r) => setTimeout(r, 1_100));
  for (let i = 0; i < 60; i++) await sandbox.inbound(freshChatId(), "hello", `Many ${suffix} ${i}`);
  const page = await newPage(browser);
  await signIn(page);
  const list = page.getByTestId("conversation-list");
  await page.getByTestId("conversation-row").filter({ hasText: `Many ${suffix} 59` }).waitFor({ timeout: 20_000 });
  const inPage = await page.getByTestId("conversation-row").count();
  assert.ok(inPage < 30, `${inPage} rows in the page: the list is not virtualized`);
  const zoya = page.getByTestId("conversation-row").filter({ hasText: `Zoya ${suffix}` });
  for (let i = 0; i < 20 && (await zoya.count()) === 0; i++) {
    await list.evaluate((el) => el.scrollTo(0, el.scrollHeight));
    await page.waitForTimeout(300);
  }
  await zoya.waitFor();
  await page.context().close();
});
