// Drives the parts of issue 10 the other drivers leave out, in headless
// Chromium, and reports what the pages showed as one JSON object on stdout.
// Started by tests/tests/issue10_gaps.rs (which owns the gateway and makes
// the assertions).
//
// - `controlUiDebugUrl`: OpenClaw's Control UI debug page, whose Health
//   block shows the `health` method's answer (the JSON of each
//   `pre.code-block` is reported in `controlUiBlocks`);
// - `consoleUrl`: Pincer's console (`/console#token=...`): the readiness
//   badge and its detail, then, with `channel`, the channel's Stop and
//   Start buttons (the state cell after each, and the last-activity cell),
//   with `dismissSender`, the Dismiss button of that sender's pairing
//   request, and the plugin rows as shown (`pluginRows`);
// - `pages`: `[{name, url, methods}]`, Control UI pages opened in turn:
//   each waits until every method in `methods` has been answered since the
//   page was opened, then a screenshot; `pageMethods[name]` lists what the
//   page called (tests/tests/control_ui_pages.rs).

import { launchPage } from './launch.mjs';
import fs from 'node:fs';
import path from 'node:path';

const opts = JSON.parse(process.argv[2] ?? '{}');
const executablePath = opts.chromium ?? '/usr/bin/chromium';
const wait = opts.waitMs ?? 60000;
const artifacts = opts.artifacts ?? 'artifacts';
fs.mkdirSync(artifacts, { recursive: true });

const report = {
  steps: [],
  screenshots: [],
  consoleErrors: [],
  pageErrors: [],
  httpErrors: [],
  failed: null,
};

const { browser, page } = await launchPage(report, executablePath, wait, {
  width: 1400,
  height: 1000,
});
page.on('console', (m) => {
  if (m.type() === 'error') report.consoleErrors.push(m.text().slice(0, 500));
});
page.on('pageerror', (e) => report.pageErrors.push(String(e).slice(0, 500)));
// The Control UI's runtime settings fetches: status, method and whether
// they carried the token.
report.uiConfig = [];
page.on('response', (r) => {
  if (r.status() >= 400) report.httpErrors.push(`${r.status()} ${r.request().method()} ${r.url()}`);
  if (r.url().includes('control-ui-config.json')) {
    report.uiConfig.push({
      status: r.status(),
      method: r.request().method(),
      bearer: /^Bearer /.test(r.request().headers()['authorization'] ?? ''),
    });
  }
});
// Every request the pages send over the WebSocket and its answer.
report.calls = [];
const pending = {};
page.on('websocket', (ws) => {
  ws.on('framesent', (f) => {
    try {
      const v = JSON.parse(f.payload);
      if (v && v.type === 'req') pending[v.id] = { method: v.method, t: Date.now() };
    } catch {}
  });
  ws.on('framereceived', (f) => {
    try {
      const v = JSON.parse(f.payload);
      if (!v || v.type !== 'res' || !pending[v.id]) return;
      const { method, t } = pending[v.id];
      delete pending[v.id];
      report.calls.push({ method, ok: v.ok === true, ms: Date.now() - t, ...(v.ok ? {} : { error: v.error }) });
    } catch {}
  });
});

async function shot(name) {
  const file = path.join(artifacts, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
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

// The JSON of every code block on the page that parses.
async function codeBlocks() {
  const texts = await page.locator('pre.code-block').allInnerTexts();
  return texts.flatMap((t) => {
    try {
      return [JSON.parse(t)];
    } catch {
      return [];
    }
  });
}

report.steps.push({ name: 'browser-up', t: Date.now() });
try {
  if (opts.controlUiDebugUrl) {
    await page.goto(opts.controlUiDebugUrl);
    // The Health block: the `health` answer (`ok` beside `ready`).
    await until(
      async () => (await codeBlocks()).some((b) => typeof b.ok === 'boolean' && b.ready),
      'the Health block of the debug page',
    );
    report.controlUiBlocks = await codeBlocks();
    report.steps.push({ name: 'control-ui-health', t: Date.now() });
    await shot('control-ui-debug');
  }

  if (opts.pages) {
    report.pageMethods = {};
    for (const p of opts.pages) {
      const from = report.calls.length;
      await page.goto(p.url);
      const answered = () => new Set(report.calls.slice(from).map((c) => c.method));
      await until(
        async () => p.methods.every((m) => answered().has(m)),
        `${p.name}: answers to ${p.methods.join(', ')}`,
      );
      report.pageMethods[p.name] = [...answered()].sort();
      report.steps.push({ name: `page-${p.name}`, t: Date.now() });
      await shot(`page-${p.name}`);
    }
  }

  if (opts.consoleUrl) {
    await page.goto(opts.consoleUrl);
    await page.locator('#app').waitFor({ state: 'visible' });
    const badge = page.locator('#ready');
    await until(async () => /ready/.test((await badge.textContent()) ?? '') && !/unknown/.test((await badge.textContent()) ?? ''), 'the readiness badge');
    await until(async () => (await page.locator('#readiness-detail dt').count()) > 0, 'the readiness detail');
    report.consoleReadiness = await badge.textContent();
    report.consoleReadinessClass = await badge.getAttribute('class');
    report.steps.push({ name: 'console-readiness', t: Date.now() });

    if (opts.channel) {
      const ch = opts.channel;
      const row = page.locator(`#channel-rows tr[data-channel="${ch}"]`).first();
      const state = row.locator('td[data-state]').first();
      await until(async () => (await state.getAttribute('data-state')) === 'running', `${ch} running`);
      // Last activity: a <time> once the channel has had a message.
      const activity = row.locator('td').nth(1);
      const datetime = (await activity.locator('time').count()) > 0 ? await activity.locator('time').first().getAttribute('datetime') : null;
      report.lastActivity = {
        datetime,
        ms: datetime ? Date.parse(datetime) : null,
        text: await activity.innerText(),
      };
      await page.getByRole('button', { name: `Stop ${ch}`, exact: true }).click();
      await until(async () => (await state.getAttribute('data-state')) !== 'running', `${ch} stopped`);
      report.stateAfterStop = await state.getAttribute('data-state');
      await shot('channel-stopped');
      await page.getByRole('button', { name: `Start ${ch}`, exact: true }).click();
      await until(async () => (await state.getAttribute('data-state')) === 'running', `${ch} started again`);
      report.stateAfterStart = await state.getAttribute('data-state');
      report.steps.push({ name: 'stopped-and-started', t: Date.now() });
    }

    if (opts.dismissSender) {
      const req = page.locator(`#pairing-rows tr[data-sender="${opts.dismissSender}"]`).first();
      await page.getByRole('button', { name: 'Refresh pairing requests' }).click();
      await req.waitFor({ state: 'visible' });
      report.dismissedCode = await req.getAttribute('data-code');
      await req.getByRole('button', { name: /^Dismiss / }).click();
      await req.waitFor({ state: 'detached' });
      report.pairingError = await page.locator('#pairing-error').textContent();
      report.steps.push({ name: 'pairing-dismissed', t: Date.now() });
    }

    // The channel rows as the page shows them.
    report.channelRows = await page.locator('#channel-rows tr').evaluateAll((rows) =>
      rows.map((tr) => ({
        name: tr.dataset.channel,
        state: tr.querySelector('td[data-state]')?.dataset.state ?? null,
        cells: [...tr.children].map((c) => c.innerText.trim()),
      })),
    );
    // The plugin rows as the page shows them.
    await until(async () => (await page.locator('#plugin-rows tr').count()) > 0, 'the plugin rows');
    report.pluginRows = await page.locator('#plugin-rows tr').evaluateAll((rows) =>
      rows.map((tr) => ({
        name: tr.dataset.plugin,
        state: tr.dataset.state,
        cells: [...tr.children].map((c) => c.innerText.trim()),
        loadedAt: tr.querySelector('time')?.getAttribute('datetime') ?? null,
      })),
    );
    await shot('console');
  }
} catch (e) {
  report.failed = String(e && e.stack ? e.stack : e).slice(0, 2000);
  try {
    await shot('failure');
    report.failureText = (await page.locator('body').innerText()).slice(0, 4000);
  } catch {}
}

await browser.close();
report.pendingMethods = Object.values(pending).map((p) => p.method);
console.log(JSON.stringify(report));
process.exit(report.failed ? 1 : 0);
