// Sign-in, sign-out, silent refresh, and the clear screens a session ends in.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { api, createOperator, env, launch, newPage, screenshot, signIn } from "./helpers.mjs";

/** The refresh cookie as the browser holds it (page scripts cannot see it). */
async function refreshCookie(page) {
  return (await page.context().cookies(`${env.api}/api/auth/refresh`)).find((c) => c.name === "fastprep_refresh");
}

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

  assert.equal(tokens.refresh_token, null, "the refresh token was handed to the page");
  const stored = await page.evaluate(() => JSON.stringify([{ ...localStorage }, { ...sessionStorage }, document.cookie]));
  assert.ok(!stored.includes(tokens.access_token), "the access token is in web storage");
  assert.ok(!stored.includes("fastprep_refresh"), "the refresh cookie is readable by the page");
  // The refresh token is in an httpOnly, Secure, SameSite=Strict cookie, scoped to the auth routes.
  const cookie = await refreshCookie(page);
  assert.ok(cookie, "no refresh cookie");
  assert.deepEqual(
    { httpOnly: cookie.httpOnly, secure: cookie.secure, sameSite: cookie.sameSite, path: cookie.path },
    { httpOnly: true, secure: true, sameSite: "Strict", path: "/api/auth" },
  );

  const logout = page.waitForResponse((r) => r.url().endsWith("/api/auth/logout"));
  await page.getByTestId("sign-out").click();
  await page.locator('[data-testid="ended"][data-reason="signed_out"]').waitFor();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  assert.equal((await logout).status(), 204);
  await screenshot(page, "signed-out");
  // The cookie is removed, and the session is over at the API too: its refresh token is spent.
  assert.equal(await refreshCookie(page), undefined, "the refresh cookie outlived the sign-out");
  await assert.rejects(api.call("POST", "/api/auth/refresh", { body: { refresh_token: cookie.value } }), /401/);
  await page.context().close();
});

test("a reload keeps the session through the cookie; after sign-out a reload asks to sign in", async () => {
  const page = await newPage(browser);
  await signIn(page);
  await page.getByRole("link", { name: "Unassigned" }).click();
  await page.waitForURL(/view=unassigned/);
  const url = page.url();

  const restored = page.waitForResponse((r) => r.url().endsWith("/api/auth/refresh"));
  await page.reload();
  assert.equal((await restored).status(), 200);
  await page.getByTestId("sign-out").waitFor();
  await page.locator('[data-testid="link-state"][data-state="live"]').waitFor();
  assert.equal(page.url(), url, "the reload left the page it was on");
  assert.equal(await page.getByRole("heading", { name: "Sign in" }).count(), 0);
  await page.getByText("Signed in as").waitFor();

  const logout = page.waitForResponse((r) => r.url().endsWith("/api/auth/logout"));
  await page.getByTestId("sign-out").click();
  assert.equal((await logout).status(), 204);
  await page.reload();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  // A plain sign-in screen: a reload with no session is not an ended one.
  assert.equal(await page.getByTestId("ended").count(), 0);
  await page.context().close();
});

test("the access token is renewed silently, in two tabs at once: the inbox stays live past its lifetime", async () => {
  const page = await newPage(browser);
  const refreshes = [];
  const watch = (p) =>
    p.on("response", (r) => {
      if (r.url().endsWith("/api/auth/refresh")) refreshes.push(r.status());
    });
  // Signed in from the sign-in screen (the page load before it found no session: a 401).
  await signIn(page);
  watch(page);
  // A second tab of the same browser takes the session from the cookie; the
  // two renew on their own timers, one rotation at a time.
  const second = await page.context().newPage();
  watch(second);
  await second.goto(`${env.app}/inbox`);
  await second.locator('[data-testid="link-state"][data-state="live"]').waitFor();
  // scripts/test-web runs the API with 20 s access tokens.
  await page.waitForTimeout(26_000);
  assert.ok(refreshes.length >= 3, `too few refreshes: ${refreshes}`);
  assert.ok(refreshes.every((s) => s === 200), `a refresh failed: ${refreshes}`);
  for (const p of [page, second]) {
    assert.equal(await p.getByTestId("link-state").getAttribute("data-state"), "live");
    assert.equal(await p.getByTestId("ended").count(), 0);
  }
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
