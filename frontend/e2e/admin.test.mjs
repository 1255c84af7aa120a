// The admin screens against the real backend: an administrator creates a user,
// changes their roles, resets their password, deactivates and reactivates
// them, and changes a role's permissions from the screens, and the audit log
// lists the changes; renames a user, renames and deletes a role; a page whose right is revoked while it is open says so; axe-core on
// each admin screen.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { api, createOperator, eventually, launch, newPage, screenshot, seriousA11yViolations, signIn } from "./helpers.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test("an administrator creates a user, changes their roles, resets their password, deactivates and reactivates them, changes a role's permissions, and the audit log lists it", async () => {
  const page = await newPage(browser);
  await signIn(page);
  const stamp = String(Date.now()).slice(-7);
  const email = `created-${stamp}@web-e2e.local`;

  await page.getByTestId("nav-admin").click();
  await page.getByRole("heading", { name: "Users" }).waitFor();
  await page.getByTestId("users").waitFor();
  assert.deepEqual(await seriousA11yViolations(page), []);
  await page.getByRole("button", { name: "New user" }).click();
  const dialog = page.getByTestId("new-user-dialog");
  await dialog.getByLabel("Email").fill(email);
  await dialog.getByLabel("Name").fill(`Created ${stamp}`);
  await dialog.getByLabel("Password", { exact: true }).fill("created-user-password-1");
  await dialog.getByLabel("operator").check();
  assert.deepEqual(await seriousA11yViolations(page), []);
  await dialog.getByRole("button", { name: "Create the user" }).click();
  const row = page.locator(`[data-testid="user-row"][data-email="${email}"]`);
  await row.waitFor();
  assert.match(await row.innerText(), /operator/);
  await screenshot(page, "admin-users");
  // The new account signs in with the password given.
  await api.login(email, "created-user-password-1");

  // Its roles changed, its password reset, deactivated and back.
  const shown = `Created ${stamp}`;
  await row.getByRole("button", { name: `Roles of ${shown}` }).click();
  const rolesDialog = page.getByTestId("roles-dialog");
  await rolesDialog.getByLabel("operator").uncheck();
  await rolesDialog.getByLabel("viewer").check();
  await rolesDialog.getByRole("button", { name: "Save the roles" }).click();
  await page.getByRole("status").getByText(`The roles of ${shown} were saved.`).waitFor();
  await eventually(async () => (await row.innerText()).includes("viewer") && !(await row.innerText()).includes("operator"), 10_000, "the row's new roles");

  await row.getByRole("button", { name: `Reset password of ${shown}` }).click();
  const resetDialog = page.getByTestId("reset-dialog");
  await resetDialog.getByLabel("New password").fill("reset-user-password-2");
  assert.deepEqual(await seriousA11yViolations(page), []);
  await resetDialog.getByRole("button", { name: "Set the password" }).click();
  await page.getByRole("status").getByText(`The password of ${shown} was reset.`).waitFor();
  await api.login(email, "reset-user-password-2");
  await assert.rejects(api.login(email, "created-user-password-1"), /401/);

  await row.getByRole("button", { name: `Deactivate ${shown}` }).click();
  await page.getByTestId("toggle-dialog").getByRole("button", { name: "Deactivate" }).click();
  await page.getByRole("status").getByText(`${shown} was deactivated.`).waitFor();
  await row.getByText("Deactivated").waitFor();
  await assert.rejects(api.login(email, "reset-user-password-2"));
  await row.getByRole("button", { name: `Reactivate ${shown}` }).click();
  await page.getByTestId("toggle-dialog").getByRole("button", { name: "Reactivate" }).click();
  await row.getByText("Active", { exact: true }).waitFor();
  await api.login(email, "reset-user-password-2");

  // A new role, then a box of the matrix ticked.
  await page.getByRole("link", { name: "Roles and permissions" }).click();
  await page.getByTestId("matrix").waitFor();
  const role = `auditors-${stamp}`;
  await page.getByLabel("Name").fill(role);
  await page.getByLabel("Description").fill("Reads the audit log");
  await page.getByRole("button", { name: "Create the role" }).click();
  await page.locator(`[data-testid="role-col"][data-role="${role}"]`).waitFor();
  const box = page.getByLabel(`${role}: audit.read`);
  assert.equal(await box.isChecked(), false);
  await box.check();
  await page.getByTestId("roles-note").getByText(`The permissions of ${role} were saved.`).waitFor();
  assert.equal(await box.isChecked(), true);
  const token = await api.login();
  const saved = (await api.call("GET", "/api/roles", { token })).find((r) => r.name === role);
  assert.deepEqual(saved.permissions, ["audit.read"]);
  await page.getByRole("heading", { name: "Roles and permissions" }).scrollIntoViewIfNeeded();
  await screenshot(page, "admin-roles");
  assert.deepEqual(await seriousA11yViolations(page), []);

  // The audit log, filtered to roles, lists the change; unfiltered, the new user.
  await page.getByRole("link", { name: "Audit log" }).click();
  await page.getByTestId("audit").waitFor();
  await page.getByLabel("Target type").selectOption("role");
  await page.getByRole("button", { name: "Apply" }).click();
  await page.waitForURL(/target_type=role/);
  const changed = page.locator('[data-testid="audit-row"][data-action="role.permissions_changed"]').filter({ hasText: saved.id });
  await changed.first().waitFor();
  assert.equal(await page.locator('[data-testid="audit-row"][data-action="user.created"]').count(), 0);
  await screenshot(page, "admin-audit");
  assert.deepEqual(await seriousA11yViolations(page), []);
  await page.getByRole("button", { name: "Clear filters" }).click();
  const user = (await api.call("GET", "/api/users", { token })).find((u) => u.email === email);
  await page.locator('[data-testid="audit-row"][data-action="user.created"]').filter({ hasText: user.id }).first().waitFor();

  // In Russian, the same screen.
  await page.getByLabel("Language").selectOption("ru");
  await page.getByRole("heading", { name: "Журнал аудита" }).waitFor();
  await page.getByRole("link", { name: "Роли и права" }).waitFor();
  await page.getByTestId("nav-ops").getByText("Эксплуатация").waitFor();
  await screenshot(page, "admin-audit-ru");
  await page.context().close();
});

test("an administrator renames a user, and renames and deletes a role", async () => {
  const op = await createOperator("renamed");
  const token = op.adminToken;
  const stamp = String(Date.now()).slice(-7);
  const role = await api.call("POST", "/api/roles", {
    token,
    body: { name: `drafts-${stamp}`, description: "to rename", permissions: ["audit.read"] },
  });
  await api.call("PUT", `/api/users/${op.id}/roles`, {
    token,
    body: { role_ids: [...(await api.call("GET", `/api/users/${op.id}`, { token })).roles.map((r) => r.id), role.id] },
  });
  const page = await newPage(browser);
  await signIn(page);
  await page.getByTestId("nav-admin").click();
  const row = page.locator(`[data-testid="user-row"][data-email="${op.email}"]`);
  await row.waitFor();

  // The user's name.
  await row.getByRole("button", { name: "Rename Operator renamed" }).click();
  const nameDialog = page.getByTestId("name-dialog");
  await nameDialog.getByLabel("Name").fill(`Renamed ${stamp}`);
  assert.deepEqual(await seriousA11yViolations(page), []);
  await nameDialog.getByRole("button", { name: "Save the name" }).click();
  await page.getByRole("status").getByText(`Operator renamed is now called Renamed ${stamp}.`).waitFor();
  await row.getByRole("cell", { name: `Renamed ${stamp}`, exact: true }).waitFor();
  assert.equal((await api.call("GET", `/api/users/${op.id}`, { token })).display_name, `Renamed ${stamp}`);

  // The role renamed from its column: the user's row follows.
  await page.getByRole("link", { name: "Roles and permissions" }).click();
  await page.getByTestId("matrix").waitFor();
  await page.getByRole("button", { name: `Rename drafts-${stamp}` }).click();
  const roleDialog = page.getByTestId("role-dialog");
  await roleDialog.getByLabel("Name").fill(`readers-${stamp}`);
  await roleDialog.getByLabel("Description").fill("Read the audit log");
  assert.deepEqual(await seriousA11yViolations(page), []);
  await roleDialog.getByRole("button", { name: "Save the role" }).click();
  await page.getByTestId("roles-note").getByText(`The role readers-${stamp} was saved.`).waitFor();
  await page.locator(`[data-testid="role-col"][data-role="readers-${stamp}"]`).waitFor();
  const renamed = (await api.call("GET", "/api/roles", { token })).find((r) => r.id === role.id);
  assert.deepEqual([renamed.name, renamed.description], [`readers-${stamp}`, "Read the audit log"]);
  // Built-in roles keep their names: no rename or delete offered.
  assert.equal(await page.getByRole("button", { name: "Rename admin" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: "Delete admin" }).count(), 0);

  // Deleted after its confirmation: the column goes, and the user loses it.
  await page.getByRole("button", { name: `Delete readers-${stamp}` }).click();
  const deleteDialog = page.getByTestId("delete-role-dialog");
  await deleteDialog.getByText(`The role readers-${stamp} is deleted. Its users (1) lose the permissions it gave them.`).waitFor();
  await deleteDialog.getByRole("button", { name: "Delete the role" }).click();
  await page.getByTestId("roles-note").getByText(`The role readers-${stamp} was deleted.`).waitFor();
  await eventually(async () => (await page.locator(`[data-testid="role-col"][data-role="readers-${stamp}"]`).count()) === 0, 10_000, "the column gone");
  assert.equal((await api.call("GET", "/api/roles", { token })).some((r) => r.id === role.id), false);
  const user = await api.call("GET", `/api/users/${op.id}`, { token });
  assert.deepEqual(user.roles.map((r) => r.name), ["operator"]);
  await page.getByRole("link", { name: "Users" }).click();
  await eventually(async () => !(await row.innerText()).includes("readers-"), 10_000, "the user's row without the role");
  await page.context().close();
});

test("a page whose right is revoked while it is open says so, and the menu drops it", async () => {
  const op = await createOperator("auditreader");
  const token = op.adminToken;
  const roles = await api.call("GET", "/api/roles", { token });
  const operator = roles.find((r) => r.name === "operator");
  const reader = await api.call("POST", "/api/roles", {
    token,
    body: { name: `reader-${String(Date.now()).slice(-7)}`, description: "audit", permissions: ["audit.read"] },
  });
  await api.call("PUT", `/api/users/${op.id}/roles`, { token, body: { role_ids: [operator.id, reader.id] } });
  const page = await newPage(browser);
  await signIn(page, op.email, op.password);
  await page.getByTestId("nav-admin").click();
  await page.getByTestId("audit").or(page.getByText("No entries match these filters.")).waitFor();
  // Users and roles are not in the menu of someone who may only read the log.
  assert.equal(await page.getByRole("link", { name: "Users" }).count(), 0);
  await page.evaluate(() => (window.__sameDocument = true));

  await api.call("PUT", `/api/users/${op.id}/roles`, { token, body: { role_ids: [operator.id] } });
  await page.getByTestId("page-forbidden").waitFor({ timeout: 20_000 });
  await page.getByRole("heading", { name: "You may not see this page" }).waitFor();
  assert.equal(await page.getByTestId("nav-admin").count(), 0);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page was reloaded");
  await screenshot(page, "admin-forbidden");
  assert.deepEqual(await seriousA11yViolations(page), []);
  await page.context().close();
});
