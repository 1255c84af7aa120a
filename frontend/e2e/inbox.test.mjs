// The inbox against the real backend and the sandbox Telegram: live inbound
// messages, a reply's delivery states, a double click that sends once, and a
// scripted failure that retries, fails with its reason, and is sent again.
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { deflateSync } from "node:zlib";
import {
  env,
  eventually,
  freshChatId,
  launch,
  newPage,
  recordStatuses,
  sandbox,
  screenshot,
  seriousA11yViolations,
  signIn,
  statusesOf,
} from "./helpers.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});
afterEach(async () => {
  await sandbox.clearFaults();
});

const row = (page, name) => page.getByTestId("conversation-row").filter({ hasText: name });
const lastOutbound = (page, text) => page.locator('[data-testid="message"][data-direction="out"]').filter({ hasText: text });

/** Opens the conversation of a new chat whose customer wrote `text`. */
async function openNewChat(page, name, text) {
  const chat = freshChatId();
  await sandbox.inbound(chat, text, name);
  await row(page, name).click();
  await page.getByTestId("thread").getByText(text).waitFor();
  return chat;
}

test("an inbound message appears live in the list and in the open thread", async () => {
  const page = await newPage(browser);
  await signIn(page);
  const suffix = String(Date.now()).slice(-5);
  const ann = `Ann ${suffix}`;
  const boris = `Boris ${suffix}`;

  const annChat = freshChatId();
  await sandbox.inbound(annChat, "Hello, is the mock exam on Friday?", ann);
  await row(page, ann).waitFor();
  assert.equal(await row(page, ann).getByTestId("unread-badge").textContent(), "1");

  // Telegram's dates have whole seconds: a second apart, the order is certain.
  const tick = () => new Promise((r) => setTimeout(r, 1_100));
  await tick();
  const borisChat = freshChatId();
  await sandbox.inbound(borisChat, "Can I move my lesson?", boris);
  await row(page, boris).waitFor();
  // Newest activity first.
  await eventually(
    async () => (await page.getByTestId("conversation-row").first().textContent())?.includes(boris),
    10_000,
    "Boris's conversation at the top",
  );

  // Opening Ann's conversation shows her message and reads it.
  await row(page, ann).click();
  await page.getByTestId("thread").getByText("Hello, is the mock exam on Friday?").waitFor();
  await row(page, ann).getByTestId("unread-badge").waitFor({ state: "detached" });

  // While it is open, her next message arrives in the thread and moves her to the top, without a reload.
  await tick();
  await sandbox.inbound(annChat, "Also, which room?", ann);
  await page.getByTestId("thread").getByText("Also, which room?").waitFor();
  await eventually(
    async () => (await page.getByTestId("conversation-row").first().textContent())?.includes(ann),
    10_000,
    "Ann's conversation back at the top",
  );
  assert.equal(await row(page, ann).getByTestId("unread-badge").count(), 0, "a message read as it came counts as unread");
  assert.equal(await page.locator('[data-testid="message"][data-direction="in"]').count(), 2);
  await screenshot(page, "inbox-thread");
  await page.context().close();
});

test("a reply goes queued, sending, sent, and reaches Telegram once even after a double click", async () => {
  const page = await newPage(browser);
  await signIn(page);
  const name = `Vera ${String(Date.now()).slice(-5)}`;
  const chat = await openNewChat(page, name, "When do results come out?");
  // Each send takes a moment at the sandbox, so `sending` can be seen.
  await sandbox.faults({ latency_ms: 1200 });
  await recordStatuses(page);

  const text = `Results are out on Monday (${Date.now()}).`;
  await page.getByLabel(`Reply to ${name}`).fill(text);
  await page.getByTestId("send").dblclick();
  const reply = lastOutbound(page, text);
  await reply.locator('[data-testid="delivery"][data-status="sent"]').waitFor({ timeout: 30_000 });
  await screenshot(page, "reply-sent");

  assert.equal(await reply.count(), 1, "the thread shows the reply once");
  const id = await reply.getAttribute("data-message-id");
  const seen = await statusesOf(page, id);
  assert.equal(seen[0], "queued", `first status shown: ${seen}`);
  assert.ok(seen.includes("sending"), `sending never shown: ${seen}`);
  assert.equal(seen[seen.length - 1], "sent", `last status shown: ${seen}`);
  assert.ok(seen.indexOf("sending") < seen.indexOf("sent"));

  const sent = (await sandbox.sent(chat)).filter((m) => m.text === text);
  assert.equal(sent.length, 1, `sent ${sent.length} times`);
  assert.equal(sent[0].send_count, 1);
  // The draft is gone once sent.
  assert.equal(await page.getByLabel(`Reply to ${name}`).inputValue(), "");
  await page.context().close();
});

test("a scripted failure shows retrying with its next try, then failed with its reason; sending again delivers once", async () => {
  const page = await newPage(browser);
  await signIn(page);
  const name = `Gleb ${String(Date.now()).slice(-5)}`;
  const chat = await openNewChat(page, name, "Did you get my form?");
  // The next two sends meet a server error; scripts/test-web allows two attempts, 4 s apart.
  await sandbox.faults({ fail_next: 2, mode: "server_error" });
  await recordStatuses(page);

  const text = `Yes, we have it (${Date.now()}).`;
  await page.getByLabel(`Reply to ${name}`).fill(text);
  await page.keyboard.press("Control+Enter");
  const reply = lastOutbound(page, text);

  const retrying = reply.locator('[data-testid="delivery"][data-status="retrying"]');
  await retrying.waitFor({ timeout: 30_000 });
  assert.match(await retrying.textContent(), /Retrying at \d\d:\d\d:\d\d \(in \d+ s\)/);
  assert.match(await retrying.getByTestId("delivery-reason").textContent(), /temporary error/);
  await screenshot(page, "reply-retrying");

  const failed = reply.locator('[data-testid="delivery"][data-status="failed"]');
  await failed.waitFor({ timeout: 30_000 });
  assert.match(await failed.getByTestId("delivery-reason").textContent(), /Gave up after 2 attempts/);
  await screenshot(page, "reply-failed");
  const id = await reply.getAttribute("data-message-id");
  const seen = await statusesOf(page, id);
  assert.ok(seen.indexOf("retrying") >= 0 && seen.indexOf("retrying") < seen.indexOf("failed"), `statuses shown: ${seen}`);
  assert.equal((await sandbox.sent(chat)).filter((m) => m.text === text).length, 0);

  // Telegram is well again: "Send again" delivers it, once.
  await sandbox.clearFaults();
  await failed.getByRole("button", { name: "Send again" }).click();
  await reply.locator('[data-testid="delivery"][data-status="sent"]').waitFor({ timeout: 30_000 });
  const sent = (await sandbox.sent(chat)).filter((m) => m.text === text);
  assert.equal(sent.length, 1);
  await page.context().close();
});

test("the list filters live in the URL, and the shortcuts are listed on ?", async () => {
  const page = await newPage(browser, { locale: "ru-RU" });
  await page.goto(`${env.app}/inbox`);
  // Russian strings for a Russian browser; switchable.
  await page.getByRole("heading", { name: "Вход" }).waitFor();
  await page.getByLabel("Язык").selectOption("en");
  await signIn(page);
  await page.getByRole("link", { name: "Unassigned" }).click();
  await eventually(async () => page.url().includes("view=unassigned"), 5_000, "the view in the URL");
  await page.getByLabel("Unread only").check();
  await eventually(async () => page.url().includes("view=unassigned") && page.url().includes("unread=1"), 5_000, "filters in the URL");
  const before = page.url();
  // A reload keeps the session (the refresh cookie) and the filters (the URL).
  await page.reload();
  await page.locator('[data-testid="link-state"][data-state="live"]').waitFor();
  assert.equal(page.url(), before);
  assert.equal(await page.getByLabel("Unread only").isChecked(), true);
  await page.keyboard.press("?");
  await page.getByRole("dialog", { name: "Keyboard shortcuts" }).waitFor();
  await screenshot(page, "shortcuts");
  await page.keyboard.press("Escape");
  // Switched to Russian while signed in: the whole screen follows.
  await page.getByLabel("Language").selectOption("ru");
  await page.getByRole("link", { name: "Без исполнителя" }).waitFor();
  await page.getByLabel("Только непрочитанные").uncheck();
  await page.getByTestId("sign-out").filter({ hasText: "Выйти" }).waitFor();
  await screenshot(page, "inbox-ru");
  await page.context().close();
});

test("an attachment goes out and comes back: uploaded with progress (one cancelled on its way), sent to Telegram with its bytes, and downloaded from the thread", async () => {
  const page = await newPage(browser);
  await signIn(page);
  const chat = freshChatId();
  const name = `Vera ${String(Date.now()).slice(-5)}`;
  await sandbox.inbound(chat, "Could you send me the timetable?", name);
  await row(page, name).click();
  await page.getByLabel(`Reply to ${name}`).waitFor();

  // A big file over a slow uplink: its progress moves, then it is cancelled.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 256 * 1024 });
  const big = Buffer.alloc(3 * 1024 * 1024, 7);
  await page.getByTestId("file-input").setInputFiles({ name: "recordings.zip", mimeType: "application/zip", buffer: big });
  const slow = page.locator('[data-testid="upload"][data-name="recordings.zip"]');
  await slow.getByTestId("upload-percent").waitFor();
  await eventually(
    async () => {
      const pct = Number((await slow.getByTestId("upload-percent").textContent())?.replace("%", ""));
      return pct > 0 && pct < 100 ? pct : null;
    },
    20_000,
    "the upload's progress between 0 and 100",
  );
  assert.equal(await page.getByTestId("send").isDisabled(), true, "a reply can go while a file is on its way");
  await page.getByRole("button", { name: "Cancel the upload of recordings.zip" }).click();
  await slow.waitFor({ state: "detached" });
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });

  // The file that goes: uploaded, sent with a line of text.
  const body = `Timetable, spring term (${Date.now()})\n`.repeat(2000);
  await page.getByTestId("file-input").setInputFiles({ name: "timetable.txt", mimeType: "text/plain", buffer: Buffer.from(body) });
  const up = page.locator('[data-testid="upload"][data-name="timetable.txt"]');
  await page.locator('[data-testid="upload"][data-name="timetable.txt"][data-state="done"]').waitFor({ timeout: 20_000 });
  await up.getByText("Uploaded").waitFor();
  assert.deepEqual(await seriousA11yViolations(page), []);
  await screenshot(page, "composer-attachment");
  await page.getByLabel(`Reply to ${name}`).fill("Here it is.");
  await page.getByTestId("send").click();
  await page.getByTestId("uploads").waitFor({ state: "detached" });

  // Telegram got it once, with these bytes; the cancelled file went nowhere.
  const { createHash } = await import("node:crypto");
  const sha256 = createHash("sha256").update(body).digest("hex");
  const sent = await eventually(async () => {
    const all = await sandbox.sent(chat);
    return all.length ? all : null;
  }, 30_000, "the reply at the sandbox");
  assert.equal(sent.length, 1, JSON.stringify(sent));
  assert.equal(sent[0].text, "Here it is.");
  assert.deepEqual(
    sent[0].files.map((f) => [f.filename, f.size, f.sha256]),
    [["timetable.txt", Buffer.byteLength(body), sha256]],
  );

  // And back: the thread's message shows it, sent, and it downloads as it was.
  const mine = page.locator("[data-message-id]").filter({ hasText: "Here it is." });
  await mine.locator('[data-testid="delivery"][data-status="sent"]').waitFor({ timeout: 30_000 });
  const download = page.waitForEvent("download");
  await mine.getByRole("button", { name: "Download timetable.txt" }).click();
  const got = await download;
  assert.equal(got.suggestedFilename(), "timetable.txt");
  const { readFile } = await import("node:fs/promises");
  assert.equal(await readFile(await got.path(), "utf8"), body);
  await page.context().close();
});

/** A PNG of w x h pixels in one colour, as base64. */
function solidPng(w, h, [r, g, b]) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const byte of buf) c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const row = Buffer.concat([Buffer.from([0]), Buffer.from(Array.from({ length: w }, () => [r, g, b]).flat())]);
  const raw = Buffer.concat(Array.from({ length: h }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", Buffer.alloc(0)),
  ]).toString("base64");
}

test("a customer's files are listed in the thread, an image previewed, and a file downloads with its name and bytes", async () => {
  const page = await newPage(browser);
  await signIn(page);
  const name = `Oleg ${String(Date.now()).slice(-5)}`;
  const body = `Homework, week 3 (${Date.now()})\n`;
  await sandbox.call("POST", "/sandbox/inbound", {
    chat_id: freshChatId(),
    text: "Here is my homework",
    sender: { id: 1, first_name: name },
    media: [
      { kind: "document", filename: "homework-3.txt", content_type: "text/plain", data_base64: Buffer.from(body).toString("base64") },
      { kind: "photo", filename: "page.png", content_type: "image/png", data_base64: solidPng(160, 100, [90, 140, 200]) },
    ],
  });
  await page.getByTestId("conversation-row").filter({ hasText: name }).click();
  const file = page.getByRole("button", { name: "Download homework-3.txt" });
  await file.waitFor({ timeout: 15_000 });
  const download = page.waitForEvent("download");
  await file.click();
  const got = await download;
  assert.equal(got.suggestedFilename(), "homework-3.txt");
  const { readFile } = await import("node:fs/promises");
  assert.equal(await readFile(await got.path(), "utf8"), body);
  // An image is shown, from its own short-lived link.
  const preview = page.getByRole("img", { name: "page.png" });
  await preview.waitFor();
  await eventually(async () => preview.evaluate((img) => img.complete && img.naturalWidth === 160), 10_000, "the preview loaded");
  await screenshot(page, "thread-attachment");
  await page.context().close();
});

test("assign to me and resolve, by button and by key; a draft waits per conversation; a customer's edit is marked", async () => {
  const page = await newPage(browser);
  await signIn(page);
  const suffix = String(Date.now()).slice(-5);
  const first = `Pavel ${suffix}`;
  const second = `Rita ${suffix}`;
  const chat = freshChatId();
  const { tg_message_id } = await sandbox.inbound(chat, "Is the course online?", first);
  await sandbox.inbound(freshChatId(), "Hi!", second);

  await row(page, first).click();
  await page.getByRole("button", { name: "Assign to me" }).click();
  await page.getByTestId("assignee").filter({ hasText: "Assigned to you" }).waitFor();
  await row(page, first).getByText("Assigned to you").waitFor();

  // A draft stays with its conversation.
  await page.getByLabel(`Reply to ${first}`).fill("Half of it is, the rest");
  await row(page, second).click();
  assert.equal(await page.getByLabel(`Reply to ${second}`).inputValue(), "");
  await row(page, first).click();
  assert.equal(await page.getByLabel(`Reply to ${first}`).inputValue(), "Half of it is, the rest");

  // k and j move through the list (Rita's conversation is the newest, then Pavel's).
  await page.keyboard.press("k");
  await page.getByTestId("thread-title").filter({ hasText: second }).waitFor();
  await page.keyboard.press("j");
  await page.getByTestId("thread-title").filter({ hasText: first }).waitFor();

  // The customer edits their message in Telegram.
  await sandbox.call("POST", "/sandbox/inbound", {
    chat_id: chat,
    text: "Is the whole course online?",
    sender: { id: chat, first_name: first },
    tg_message_id,
    edit: true,
  });
  const edited = page.getByTestId("message").filter({ hasText: "Is the whole course online?" });
  await edited.getByRole("button", { name: "(edited)" }).click();
  await edited.getByTestId("versions").getByText("Is the course online?", { exact: true }).waitFor();

  // "e" resolves: it leaves the list of open conversations.
  await page.getByTestId("thread-title").click();
  await page.keyboard.press("e");
  await page.getByTestId("conversation-status").filter({ hasText: "Resolved" }).waitFor();
  await row(page, first).waitFor({ state: "detached" });
  await page.getByLabel("Status", { exact: true }).selectOption("resolved");
  await row(page, first).waitFor();
  await page.context().close();
});

test("an operator edits a sent reply, then deletes it: Telegram gets each once, and the thread shows how far each got", async () => {
  const page = await newPage(browser);
  await signIn(page);
  const name = `Oleg ${String(Date.now()).slice(-5)}`;
  const chat = await openNewChat(page, name, "Which room is the mock test in?");
  const text = `Room 4 (${Date.now()}).`;
  await page.getByLabel(`Reply to ${name}`).fill(text);
  await page.getByTestId("send").click();
  const reply = lastOutbound(page, text);
  await reply.locator('[data-testid="delivery"][data-status="sent"]').waitFor({ timeout: 30_000 });

  const fixed = text.replace("Room 4", "Room 5");
  await reply.getByRole("button", { name: "Edit", exact: true }).click();
  const box = page.getByLabel("New text of your reply");
  await box.fill(fixed);
  await box.press("Control+Enter");
  const edited = lastOutbound(page, fixed);
  await edited.locator('[data-testid="change"][data-kind="edit"][data-status="sent"]').waitFor({ timeout: 30_000 });
  await edited.getByText("Edited in Telegram").waitFor();
  // The earlier text is one click away.
  await edited.getByRole("button", { name: "(edited)" }).click();
  await edited.getByTestId("versions").getByText(text).waitFor();
  await screenshot(page, "reply-edited");

  await edited.getByRole("button", { name: "Delete", exact: true }).click();
  await edited.getByRole("button", { name: "Delete for everyone" }).click();
  await edited.locator('[data-testid="change"][data-kind="delete"][data-status="sent"]').waitFor({ timeout: 30_000 });
  await edited.getByTestId("deleted").waitFor();
  // No edit or delete is offered on a deleted reply.
  assert.equal(await edited.getByRole("button", { name: "Edit", exact: true }).count(), 0);

  const sent = await sandbox.sent(chat);
  assert.equal(sent.length, 1, `sent ${sent.length} messages`);
  assert.deepEqual(sent[0].edits, [fixed]);
  assert.equal(sent[0].deleted, true);
  assert.equal(sent[0].send_count, 1);
  await page.context().close();
});
