// Drives Pincer's own operator console (/console) in headless Chromium and
// reports what happened as one JSON object on stdout.
//
// Started by tests/tests/console.rs (which owns the gateway and makes the
// assertions); can be run by hand too:
//
//   node console.mjs '{"base":"http://127.0.0.1:18789","token":"T","wrongToken":"x",
//                      "artifacts":"/tmp/shots","channel":"echo","pairingSender":"s",
//                      "uploadFile":"/path/clock.wasm","uploadName":"clock2"}'
//
// Steps: open /console#token=WRONG and read the login error; log in with
// the form (keyboard only: type, Enter); read the readiness badge; press a
// channel's Restart button and wait for `channel.restarted` in the live
// feed and a higher restart count in its row; approve a pending pairing
// request; upload a plugin file and wait until the plugins table lists it
// as loaded; open a webhook endpoint's deliveries and replay a failed one. A step that fails is reported with its error (and a
// screenshot) and ends the run.

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
  cspViolations: [],
  pageErrors: [],
  httpErrors: [],
  loginError: null,
  urlAfterLogin: null,
  readiness: null,
  restartsBefore: null,
  restartsAfter: null,
  restartEvent: null,
  approvedCode: null,
  uploadStatus: null,
  uploadedRow: null,
  feed: [],
  failed: null,
};

function step(name, data = {}) {
  report.steps.push({ name, ...data });
}

const { browser, page } = await launchPage(report, executablePath, wait, {
  width: 1400,
  height: 1000,
});

page.on('console', (m) => {
  if (m.type() !== 'error') return;
  const text = m.text().slice(0, 500);
  // A blocked inline script or foreign resource shows up here.
  if (/Content Security Policy/i.test(text)) report.cspViolations.push(text);
  else report.consoleErrors.push(text);
});
page.on('response', (r) => {
  if (r.status() >= 400) report.httpErrors.push(`${r.status()} ${r.request().method()} ${r.url()}`);
});
page.on('pageerror', (e) => report.pageErrors.push(String(e).slice(0, 500)));

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

const restartsOf = async (channel) =>
  Number(await page.locator(`#channel-rows tr[data-channel="${channel}"] td[data-restarts]`).first().getAttribute('data-restarts'));

try {
  if (!opts.wrongToken) {
    // Straight in with the token in the fragment.
    await page.goto(`${opts.base}/console#token=${encodeURIComponent(opts.token)}`);
    await page.locator('#app').waitFor({ state: 'visible' });
    report.urlAfterLogin = page.url();
    step('logged-in');
  } else {
    // 1. A wrong token in the fragment: a clear error, the login form.
    await page.goto(`${opts.base}/console#token=${encodeURIComponent(opts.wrongToken)}`);
    const loginError = page.locator('#login-error');
    await until(async () => ((await loginError.textContent()) ?? '').length > 0, 'the login error');
    report.loginError = await loginError.textContent();
    await page.getByLabel('Gateway token').waitFor({ state: 'visible' });
    step('wrong-token-refused');
    await shot('login-error');

    // 2. Log in with the form, by keyboard.
    await page.getByLabel('Gateway token').focus();
    await page.keyboard.type(opts.token);
    await page.keyboard.press('Enter');
    await page.locator('#app').waitFor({ state: 'visible' });
    await until(async () => (await page.locator('#conn').textContent()) === 'connected', 'the connected badge');
    report.urlAfterLogin = page.url();
    step('logged-in');
  }

  // A channel that gave up: marked, explained, and brought back by its
  // Restart button.
  if (opts.gaveUpChannel) {
    const ch = opts.gaveUpChannel;
    const state = page.locator(`#channel-rows tr[data-channel="${ch}"] td[data-state]`).first();
    await until(async () => (await state.getAttribute('data-state')) === 'gave-up', `${ch} shown as gave-up`);
    report.gaveUpText = await state.innerText();
    await shot('gave-up');
    await page.getByRole('button', { name: `Restart ${ch}`, exact: true }).click();
    await until(async () => (await state.getAttribute('data-state')) === 'running', `${ch} running again`);
    step('gave-up-restarted');
  }

  // 3. Readiness as /readyz reports it.
  await until(async () => /ready/.test((await page.locator('#ready').textContent()) ?? ''), 'the readiness badge');
  await until(async () => (await page.locator('#readiness-detail dt').count()) > 0, 'the readiness detail');
  report.readiness = await page.locator('#ready').textContent();
  step('readiness', { readiness: report.readiness });

  // 4. Restart a channel from its row.
  if (opts.channel) {
    const ch = opts.channel;
    const row = page.locator(`#channel-rows tr[data-channel="${ch}"]`).first();
    await row.waitFor({ state: 'visible' });
    report.restartsBefore = await restartsOf(ch);
    await page.getByRole('button', { name: `Restart ${ch}`, exact: true }).click();
    const restartItem = page.locator(`#feed li[data-event="channel.restarted"][data-channel="${ch}"]`).first();
    await restartItem.waitFor({ state: 'attached' });
    report.restartEvent = await restartItem.textContent();
    await until(async () => (await restartsOf(ch)) > report.restartsBefore, `a higher restart count for ${ch}`);
    report.restartsAfter = await restartsOf(ch);
    step('restarted', { before: report.restartsBefore, after: report.restartsAfter });
    await shot('channel-restarted');
  }

  // 5. Approve the pending pairing request of the expected sender.
  if (opts.pairingSender) {
    const req = page.locator(`#pairing-rows tr[data-sender="${opts.pairingSender}"]`).first();
    await page.getByRole('button', { name: 'Refresh pairing requests' }).click();
    await req.waitFor({ state: 'visible' });
    report.approvedCode = await req.getAttribute('data-code');
    await shot('pairing-pending');
    await req.getByRole('button', { name: /^Approve / }).click();
    await req.waitFor({ state: 'detached' });
    step('pairing-approved', { code: report.approvedCode });
  }

  // 6. Upload a plugin file; it must show up loaded.
  if (opts.uploadFile) {
    await page.getByLabel('Plugin file (.wasm)').setInputFiles(opts.uploadFile);
    await page.getByLabel('Plugin name').fill(opts.uploadName);
    await page.getByRole('button', { name: 'Upload', exact: true }).click();
    const status = page.locator('#upload-status');
    await until(
      async () => ['loaded', 'failed', 'refused'].includes(await status.getAttribute('data-outcome')),
      'the upload result',
    );
    report.uploadOutcome = await status.getAttribute('data-outcome');
    report.uploadStatus = await status.textContent();
    const prow = page.locator(`#plugin-rows tr[data-plugin="${opts.uploadName}"]`).first();
    await prow.waitFor({ state: 'visible' });
    report.uploadedRow = {
      state: await prow.getAttribute('data-state'),
      text: await prow.innerText(),
    };
    step('uploaded', report.uploadedRow);
  }
  // 7. Webhooks: the endpoint, its failed delivery with its attempts,
  // and a replay pressed in the page.
  if (opts.webhookUrl) {
    await page.getByRole('button', { name: 'Refresh webhooks' }).click();
    await page.getByRole('button', { name: `Show deliveries of ${opts.webhookUrl}` }).click();
    const failed = page.locator('#delivery-rows tr[data-status="failed"]').first();
    await failed.waitFor({ state: 'visible' });
    report.replayedDelivery = Number(await failed.getAttribute('data-delivery'));
    report.attemptsShown = await failed.locator('ul.attempts li').count();
    report.deliveryText = await failed.innerText();
    // Read before the click: the page may redraw the row with the replay's
    // attempt before the click returns.
    const attemptsBefore = Number(await failed.getAttribute('data-attempts'));
    await failed.getByRole('button', { name: `Replay delivery ${report.replayedDelivery}` }).click();
    // The page follows the open list: the replay's attempt shows up.
    const replayedRow = page.locator(`#delivery-rows tr[data-delivery="${report.replayedDelivery}"]`);
    await until(
      async () =>
        Number(await replayedRow.getAttribute('data-attempts')) > attemptsBefore ||
        (await page.locator('#webhooks-error').textContent()) !== '',
      'another attempt of the replayed delivery',
    );
    report.attemptsAfterReplay = Number(await replayedRow.getAttribute('data-attempts'));
    report.webhooksError = await page.locator('#webhooks-error').textContent();
    step('replayed', { delivery: report.replayedDelivery });
    await shot('webhooks');
  }
  await shot('console');
} catch (e) {
  report.failed = String(e && e.stack ? e.stack : e).slice(0, 2000);
  try {
    await shot('failure');
  } catch {}
}

try {
  report.feed = await page.locator('#feed li').evaluateAll((items) =>
    items.map((li) => ({ event: li.dataset.event, channel: li.dataset.channel, plugin: li.dataset.plugin, text: li.textContent })),
  );
} catch {}
await browser.close();
console.log(JSON.stringify(report));
process.exit(report.failed ? 1 : 0);
