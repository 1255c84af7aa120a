// Rights changed by an administrator reach an open screen without a reload.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { api, createOperator, freshChatId, launch, newPage, sandbox, screenshot, signIn } from "./helpers.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

async function roleId(token, name) {
  const roles = await api.call("GET", "/api/roles", { token });
  return (Array.isArray(roles) ? roles : roles.items).find((r) => r.name === name).id;
}

test("an administrator revokes a right in one browser; the other user's screen changes without a reload", async () => {
  const op = await createOperator("rights");
  const viewer = await roleId(op.adminToken, "viewer");
  const operator = await roleId(op.adminToken, "operator");
  const page = await newPage(browser);
  await signIn(page, op.email, op.password);
  const name = `Lena ${String(Date.now()).slice(-5)}`;
  await sandbox.inbound(freshChatId(), "May I ask about fees?", name);
  await page.getByTestId("conversation-row").filter({ hasText: name }).click();
  await page.getByLabel(`Reply to ${name}`).waitFor();
  await page.getByRole("button", { name: "Assign to me" }).waitFor();
  await page.evaluate(() => (window.__sameDocument = true));

  // In another context: the administrator makes the operator a viewer.
  await api.call("PUT", `/api/users/${op.id}/roles`, { token: op.adminToken, body: { role_ids: [viewer] } });
  await page.getByText("You may read this conversation but not reply.").waitFor({ timeout: 20_000 });
  assert.equal(await page.getByRole("button", { name: "Assign to me" }).count(), 0);
  await screenshot(page, "rights-revoked");

  // And back: the controls return, still without a reload, on a renewed token.
  await api.call("PUT", `/api/users/${op.id}/roles`, { token: op.adminToken, body: { role_ids: [operator] } });
  await page.getByLabel(`Reply to ${name}`).waitFor({ timeout: 20_000 });
  await page.getByRole("button", { name: "Assign to me" }).waitFor();
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page was reloaded");
  assert.equal(await page.getByTestId("ended").count(), 0);
  await page.context().close();
});

test("a user left with no right to read the inbox is told so, and it comes back when the right does", async () => {
  const op = await createOperator("noread");
  const operator = await roleId(op.adminToken, "operator");
  const page = await newPage(browser);
  await signIn(page, op.email, op.password);
  await api.call("PUT", `/api/users/${op.id}/roles`, { token: op.adminToken, body: { role_ids: [] } });
  await page.getByTestId("inbox-forbidden").waitFor({ timeout: 20_000 });
  await page.getByRole("heading", { name: "You may not read the inbox" }).waitFor();
  await screenshot(page, "inbox-forbidden");
  await api.call("PUT", `/api/users/${op.id}/roles`, { token: op.adminToken, body: { role_ids: [operator] } });
  await page.locator('[data-testid="conversation-list"], [data-testid="list-empty"]').first().waitFor({ timeout: 20_000 });
  await page.context().close();
});
