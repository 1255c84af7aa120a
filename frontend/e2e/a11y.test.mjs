// axe-core on the screens this slice has: sign-in, the inbox with a thread
// open (a reply sent, a note), the shortcuts list, and a session's end.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { env, freshChatId, launch, newPage, sandbox, seriousA11yViolations, signIn } from "./helpers.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test("axe-core finds no serious or critical violation on the sign-in screen", async () => {
  const page = await newPage(browser);
  await page.goto(`${env.app}/inbox`);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  assert.deepEqual(await seriousA11yViolations(page), []);
  await page.context().close();
});

test("axe-core finds no serious or critical violation on the inbox, a thread and the shortcuts list", async () => {
  const page = await newPage(browser);
  await signIn(page);
  const name = `Irina ${String(Date.now()).slice(-5)}`;
  await sandbox.inbound(freshChatId(), "Is there homework?", name);
  await page.getByTestId("conversation-row").filter({ hasText: name }).click();
  await page.getByTestId("thread").getByText("Is there homework?").waitFor();
  await page.getByLabel(`Reply to ${name}`).fill("Yes, pages 10 to 12.");
  await page.getByTestId("send").click();
  await page.locator('[data-testid="delivery"][data-status="sent"]').waitFor({ timeout: 30_000 });
  await page.getByText("Note", { exact: true }).click();
  await page.getByLabel(`Private note about ${name}`).fill("Asked twice this week.");
  await page.getByRole("button", { name: "Add note" }).click();
  await page.locator('[data-testid="message"][data-kind="note"]').waitFor();
  assert.deepEqual(await seriousA11yViolations(page), []);
  await page.keyboard.press("Escape");
  await page.keyboard.press("?");
  await page.getByRole("dialog", { name: "Keyboard shortcuts" }).waitFor();
  assert.deepEqual(await seriousA11yViolations(page), []);
  await page.context().close();
});

test("axe-core finds no serious or critical violation on the screen a session ends in", async () => {
  const page = await newPage(browser);
  await signIn(page);
  await page.getByTestId("sign-out").click();
  await page.locator('[data-testid="ended"]').waitFor();
  assert.deepEqual(await seriousA11yViolations(page), []);
  await page.context().close();
});
