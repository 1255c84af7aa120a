// Sign-in, sign-out, silent refresh, and the clear screens a session ends in.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { api, createOperator, env, launch, newPage, screenshot, signIn } from "./helpers.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test("sign-in and sign-out, with no token left where page scripts can read it", async () => {
  const page = await newPage(browser);
  await page.goto(`${env.app}/inbox`);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await screenshot(page, "sign-in");

  await page.getByLabel("Email").fill(env.adminEmail);
  await page.getByLabel("Password").fill("not-the-password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "The email or password is incorrect." }).waitFor();

  await page.getByLabel("Password").fill(env.adminPassword);
  const login = page.waitForResponse((r) => r.url().endsWith("/api/auth/login") && r.status() === 200);
  await page.getByRole("button", { name: "Sign in" }).click();
  const tokens = await (await login).json();
  await page.locator('[data-testid="link-state"][data-state="live"]').waitFor();
  await page.getByText("Signed in as").waitFor();

  const stored = await page.evaluate(() => JSON.stringify([{ ...localStorage }, { ...sessionStorage }, document.cookie]));
  assert.ok(!stored.includes(tokens.access_token), "the access token is in web storage");
  assert.ok(!stored.includes(tokens.refresh_token), "the refresh token is in web storage");

  await page.getByTestId("sign-out").click();
  await page.locator('[data-testid="ended"][data-reason="signed_out"]').waitFor();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await screenshot(page, "signed-out");
  // The session is over at the API too: its refresh token is spent.
  await assert.rejects(api.call("POST", "/api/auth/refresh", { body: { refresh_token: tokens.refresh_token } }), /401/);
  await page.context().close();
});

test("the access token is renewed silently: the inbox stays live past its lifetime", async () => {
  const page = await newPage(browser);
  const refreshes = [];
  page.on("response", (r) => {
    if (r.url().endsWith("/api/auth/refresh")) refreshes.push(r.status());
  });
  await signIn(page);
  // scripts/test-web runs the API with 20 s access tokens.
  await page.waitForTimeout(26_000);
  assert.ok(refreshes.length >= 1, "no silent refresh happened");
  assert.ok(refreshes.every((s) => s === 200), `a refresh failed: ${refreshes}`);
  assert.equal(await page.getByTestId("link-state").getAttribute("data-state"), "live");
  assert.equal(await page.getByTestId("ended").count(), 0);
  // REST still answers with the renewed token.
  await page.getByRole("link", { name: "Unassigned" }).click();
  await page.locator('[data-testid="conversation-list"], [data-testid="list-empty"]').first().waitFor();
  await page.context().close();
});

test("sessions ended elsewhere end in a clear screen, not a broken page", async () => {
  const op = await createOperator("revoked");
  const page = await newPage(browser);
  await signIn(page, op.email, op.password);
  // The operator signs out of every session from somewhere else.
  const token = await api.login(op.email, op.password);
  await api.call("POST", "/api/auth/logout", { token, body: { all: true } });
  await page.locator('[data-testid="ended"][data-reason="revoked"]').waitFor({ timeout: 30_000 });
  await page.getByRole("heading", { name: "Your session was ended" }).waitFor();
  await screenshot(page, "session-ended");
  await page.context().close();
});

test("a deactivated account (close code 4005) ends in a clear screen", async () => {
  const op = await createOperator("disabled");
  const page = await newPage(browser);
  await signIn(page, op.email, op.password);
  await api.call("DELETE", `/api/users/${op.id}`, { token: op.adminToken });
  await page.locator('[data-testid="ended"][data-reason="disabled"]').waitFor({ timeout: 30_000 });
  await page.getByRole("heading", { name: "Your account has been deactivated" }).waitFor();
  await screenshot(page, "account-deactivated");
  await page.context().close();
});
