// What the browser drivers share: Debian's Chromium, headless, one page.
import { chromium } from 'playwright-core';
import fs from 'node:fs';

// Open a page in the Chromium at `executablePath` with `viewport` and
// `wait` as the default timeout. A missing Chromium ends the run with the
// report saying how to install it (exit status 2).
export async function launchPage(report, executablePath, wait, viewport) {
  if (!fs.existsSync(executablePath)) {
    report.failed = `Chromium not found at ${executablePath}: install Debian's chromium package (apt-get install -y chromium)`;
    console.log(JSON.stringify(report));
    process.exit(2);
  }
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(wait);
  return { browser, context, page };
}
