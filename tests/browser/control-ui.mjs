// Drives OpenClaw's real Control UI in headless Chromium against a Pincer
// gateway and reports what happened as one JSON object on stdout.
//
// Started by tests/tests/control_ui.rs (which owns the gateway and makes the
// assertions); can be run by hand too:
//
//   node control-ui.mjs '{"url":"http://127.0.0.1:18789/?gatewayUrl=...#token=T",
//                        "artifacts":"/tmp/shots","message":"hello pincer"}'
//
// Every WebSocket frame the page sends or receives is recorded through
// Playwright's frame events: each request's method, and whether its answer
// was ok. Steps: open the page and wait for the connection; screenshot;
// type a message and press Enter; wait for the echo reply on the page;
// screenshot; send a long message and press the stop button once it streams;
// open the sessions list, channels and plugins pages. A step that fails
// is reported with its error (and a screenshot) and ends the run.

import { launchPage } from './launch.mjs';
import fs from 'node:fs';
import path from 'node:path';

const opts = JSON.parse(process.argv[2] ?? '{}');
const executablePath = opts.chromium ?? '/usr/bin/chromium';
const wait = opts.waitMs ?? 60000;
const artifacts = opts.artifacts ?? 'artifacts';
fs.mkdirSync(artifacts, { recursive: true });

const report = {
  calls: [], // {method, ok, error?} in answer order
  pending: {}, // id -> method, while unanswered
  events: {}, // event name -> count
  chatEvents: [], // {state, runId}
  steps: [],
  screenshots: [],
  consoleErrors: [],
  httpErrors: [],
  pageErrors: [], // uncaught exceptions in the page (an answer it could not read)
  frames: [], // raw frames, with `dumpFrames` (debugging)
  pageText: {},
  failed: null,
};

function step(name, data = {}) {
  report.steps.push({ name, ...data });
}

const { browser, page } = await launchPage(report, executablePath, wait, {
  width: 1400,
  height: 900,
});

page.on('console', (m) => {
  if (m.type() === 'error') report.consoleErrors.push(m.text().slice(0, 500));
});
page.on('response', (r) => {
  if (r.status() >= 400) report.httpErrors.push(`${r.status()} ${r.request().method()} ${r.url()}`);
});
page.on('pageerror', (e) => report.pageErrors.push(String(e).slice(0, 500)));

page.on('websocket', (ws) => {
  ws.on('framesent', (f) => {
    let v;
    try {
      v = JSON.parse(f.payload);
    } catch {
      return;
    }
    if (v && v.type === 'req') report.pending[v.id] = v.method;
    if (opts.dumpFrames) report.frames.push(`> ${f.payload.slice(0, 1500)}`);
  });
  ws.on('framereceived', (f) => {
    let v;
    try {
      v = JSON.parse(f.payload);
    } catch {
      return;
    }
    if (!v) return;
    if (opts.dumpFrames) report.frames.push(f.payload.slice(0, 1500));
    if (v.type === 'res') {
      const method = report.pending[v.id];
      if (method === undefined) return;
      // `agent` answers twice; keep the method pending only for that.
      if (!(v.ok && v.payload && v.payload.status === 'accepted')) delete report.pending[v.id];
      const c = { method, ok: v.ok === true };
      if (!v.ok) c.error = v.error;
      report.calls.push(c);
    } else if (v.type === 'event') {
      report.events[v.event] = (report.events[v.event] ?? 0) + 1;
      if (v.event === 'chat' && v.payload) {
        report.chatEvents.push({ state: v.payload.state, runId: v.payload.runId });
      }
    }
  });
});

async function shot(name) {
  const file = path.join(artifacts, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  report.screenshots.push(file);
}

async function until(pred, what, ms = wait) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const calledOk = (m) => report.calls.some((c) => c.method === m && c.ok);
// The chat composer (OpenClaw's other textareas lack `dir`).
const composer = () => page.locator('textarea[dir][aria-autocomplete="list"]').first();

try {
  await page.goto(opts.url);
  await until(() => calledOk('connect'), 'the connect handshake');
  step('connected');
  // Composer enabled (a model is connected and selected).
  await composer().waitFor({ state: 'visible' });
  await until(async () => (await composer().isEnabled()) && (await composer().isEditable()), 'an enabled composer');
  await until(() => calledOk('chat.startup') || calledOk('chat.history'), 'the chat history');
  step('composer-ready');
  await shot('chat-before');
  report.pageText.before = (await page.locator('body').innerText()).slice(0, 4000);

  if (opts.explore) throw new Error('explore mode: stopping after start-up');

  const message = opts.message ?? 'hello from the control ui';
  await composer().fill(message);
  await composer().press('Enter');
  step('sent', { message });
  const finalsBefore = 0;
  await until(
    () => report.chatEvents.filter((e) => e.state === 'final').length > finalsBefore,
    'the final chat event',
  );
  // The echo provider answers with the message itself: it must appear twice
  // on the page (the user's bubble and the assistant's).
  await until(
    async () => (await page.getByText(message, { exact: false }).count()) >= 2,
    'the echo reply on the page',
  );
  step('reply-shown');
  await shot('chat-after');
  report.pageText.after = (await page.locator('body').innerText()).slice(0, 6000);

  if (opts.longMessage) {
    // A long run, stopped from the page once it streams.
    const from = report.chatEvents.length;
    const since = () => report.chatEvents.slice(from);
    await until(async () => await composer().isEditable(), 'the composer after the reply');
    await composer().fill(opts.longMessage);
    await composer().press('Enter');
    await until(() => since().some((e) => e.state === 'delta'), 'the long run streaming');
    await shot('chat-streaming');
    // The composer's "Stop generating" button.
    const stop = page.locator('button.chat-send-btn--stop').first();
    await stop.waitFor({ state: 'visible' });
    await stop.click();
    step('stop-clicked');
    await until(() => since().some((e) => e.state === 'aborted'), 'the aborted chat event');
    step('aborted');
    await until(async () => await composer().isEditable(), 'the composer after the abort');
    await shot('chat-aborted');
  }

  // Other pages, opened by their URL (the app reconnects with the same
  // gateway URL and token).
  const u = new URL(opts.url);
  const open = async (route) => {
    const n = report.calls.length;
    await page.goto(`${u.origin}${route}${u.search}${u.hash}`);
    await until(
      () => report.calls.slice(n).some((c) => c.method === 'connect' && c.ok),
      `the connection on ${route}`,
    );
  };
  const pageShows = async (texts, what) => {
    for (const t of texts) {
      await until(async () => (await page.getByText(t, { exact: false }).count()) > 0, `${what} showing ${t}`);
    }
  };

  // History: a fresh page load shows the exchange from the gateway's
  // transcript (chat.startup), not from the page's memory.
  await open('/chat');
  await until(
    async () => (await page.getByText(message, { exact: false }).count()) >= 2,
    'the exchange in the reloaded chat history',
  );
  step('history-shown');
  await shot('history');

  // The sessions list: the session, idle now.
  await open('/sessions');
  await pageShows([opts.sessionKey ?? 'agent:main:main', 'Idle'], 'the sessions list');
  step('sessions-shown');
  await shot('sessions');
  report.pageText.sessions = (await page.locator('body').innerText()).slice(0, 4000);

  await open('/settings/channels');
  await pageShows(opts.channels ?? [], 'the channels page');
  step('channels-shown');
  await shot('channels');
  report.pageText.channels = (await page.locator('body').innerText()).slice(0, 4000);
  // Each channel's card (the detail dialog opened from its row): its text
  // is reported for the test to check the state it shows.
  report.channelCards = {};
  for (const name of opts.channelCards ?? []) {
    const row = page.locator('.channels-item', { hasText: name }).first();
    const opener = row.locator('.channels-item__detail');
    await ((await opener.count()) > 0 ? opener.first() : row).click();
    const dialog = page.locator('.channels-detail').first();
    await dialog.waitFor({ state: 'visible' });
    // Status rows (`Running` is a row label, or an account's badge).
    await until(async () => /Running/.test(await dialog.innerText()), `the ${name} card's status`);
    report.channelCards[name] = await dialog.innerText();
    await shot(`channel-${name}`);
    await page.locator('.channels-detail__close').first().click();
    await dialog.waitFor({ state: 'detached' });
  }
  step('channel-cards-shown');

  // The plugins page opens on the (empty) catalog; the installed plugins
  // are under settings.
  await open('/plugins');
  await until(() => calledOk('plugins.catalog.browse'), 'the plugin catalog');
  await shot('plugins-catalog');
  await open('/settings/plugins');
  await pageShows(opts.plugins ?? [], 'the installed plugins page');
  step('plugins-shown');
  await shot('plugins');
  report.pageText.plugins = (await page.locator('body').innerText()).slice(0, 4000);
  // Requests the last page sent may still be on their way back: wait for
  // every answer (a request never answered fails here, by name).
  await until(
    () => Object.keys(report.pending).length === 0,
    `answers to ${JSON.stringify(Object.values(report.pending))}`,
  );
} catch (e) {
  report.failed = String(e && e.stack ? e.stack : e);
  try {
    await shot('failure');
    report.pageText.failure = (await page.locator('body').innerText()).slice(0, 6000);
  } catch {}
}

await browser.close();
report.pendingMethods = Object.values(report.pending);
delete report.pending;
console.log(JSON.stringify(report));
process.exit(report.failed ? 1 : 0);
