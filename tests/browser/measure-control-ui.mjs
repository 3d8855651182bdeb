// Measures OpenClaw's Control UI against a gateway, in headless Chromium:
//   - connectMs: from starting to open the page to the `connect` answer;
//   - firstScreenMs: from starting to open the page to its first screen
//     with data: the connection is up and every request the page sent on
//     start-up is answered (no request for 300 ms after), plus the next
//     painted frame;
//   - rpcs: the requests the page made until then, and rpcsSettled: all it
//     made within `settleMs` after;
//   - enterToTokenMs (with `send`): from pressing Enter in the composer to
//     the first streamed token (a `chat` delta) on the page.
// Prints one JSON object per run, then a summary line. Used by
// tests/browser/measure-control-ui.sh, which starts the gateways.
//
//   node measure-control-ui.mjs '{"url":"http://127.0.0.1:P/?gatewayUrl=...#token=T","runs":5,"send":true}'

import { chromium } from 'playwright-core';

const opts = JSON.parse(process.argv[2] ?? '{}');
const runs = opts.runs ?? 5;
const settleMs = opts.settleMs ?? 3000;
const browser = await chromium.launch({
  executablePath: opts.chromium ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});

const results = [];
for (let i = 0; i < runs; i++) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const reqs = [];
  let connectAt = null;
  let lastAnswerAt = null;
  let firstDeltaAt = null;
  const pending = {};
  page.on('websocket', (ws) => {
    ws.on('framesent', (f) => {
      try {
        const v = JSON.parse(f.payload);
        if (v.type === 'req') {
          reqs.push({ method: v.method, at: performance.now() });
          pending[v.id] = v.method;
        }
      } catch {}
    });
    ws.on('framereceived', (f) => {
      try {
        const v = JSON.parse(f.payload);
        if (v.type === 'res' && pending[v.id] === 'connect' && v.ok && connectAt === null) connectAt = performance.now();
        if (v.type === 'res' && pending[v.id] !== undefined) {
          // `agent` answers twice; the first (accepted) answer counts.
          delete pending[v.id];
          lastAnswerAt = performance.now();
        }
        if (v.type === 'event' && v.event === 'chat' && v.payload?.state === 'delta' && firstDeltaAt === null) firstDeltaAt = performance.now();
      } catch {}
    });
  });
  const t0 = performance.now();
  await page.goto(opts.url);
  const composer = page.locator('textarea[dir][aria-autocomplete="list"]').first();
  // Start-up is over when nothing is pending and nothing new was sent for
  // 300 ms.
  for (;;) {
    await new Promise((r) => setTimeout(r, 20));
    const last = Math.max(lastAnswerAt ?? 0, reqs.length ? reqs[reqs.length - 1].at : 0);
    if (connectAt !== null && Object.keys(pending).length === 0 && performance.now() - last >= 300) break;
    if (performance.now() - t0 > 120000) throw new Error('start-up never settled');
  }
  const frameStart = performance.now();
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
  const shownAt = lastAnswerAt + (performance.now() - frameStart);
  const rpcs = reqs.filter((r) => r.at <= shownAt).length;
  await new Promise((r) => setTimeout(r, settleMs));
  const run = {
    run: i + 1,
    connectMs: +(connectAt - t0).toFixed(1),
    firstScreenMs: +(shownAt - t0).toFixed(1),
    rpcs,
    rpcsSettled: reqs.length,
    methods: [...new Set(reqs.map((r) => r.method))].length,
  };
  if (opts.send) {
    await composer.waitFor({ state: 'visible', timeout: 60000 });
    const enabled = async () => (await composer.isEnabled()) && (await composer.isEditable());
    const deadline = Date.now() + 30000;
    while (!(await enabled()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await composer.fill(`measure ${i} ${'word '.repeat(20)}`);
    firstDeltaAt = null;
    const tEnter = performance.now();
    await composer.press('Enter');
    while (firstDeltaAt === null && performance.now() - tEnter < 30000) await new Promise((r) => setTimeout(r, 1));
    run.enterToTokenMs = firstDeltaAt === null ? null : +(firstDeltaAt - tEnter).toFixed(1);
  }
  results.push(run);
  console.log(JSON.stringify(run));
  await context.close();
}
await browser.close();
const median = (xs) => {
  const s = xs.filter((x) => x != null).sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : null;
};
console.log(
  JSON.stringify({
    summary: true,
    runs,
    connectMsMedian: median(results.map((r) => r.connectMs)),
    firstScreenMsMedian: median(results.map((r) => r.firstScreenMs)),
    rpcsMedian: median(results.map((r) => r.rpcs)),
    rpcsSettledMedian: median(results.map((r) => r.rpcsSettled)),
    enterToTokenMsMedian: median(results.map((r) => r.enterToTokenMs)),
  }),
);
