// The dashboard in a real headless Chromium, driven by playwright-core.
//
// Run by tests/dashboard.rs, which starts the real hookbox and a receiver,
// makes two failed deliveries, turns the receiver to 200 and passes what the
// page should show in environment variables. Every wait polls with a
// deadline; nothing sleeps for a fixed time. Prints one "ok" line per step,
// so a failure shows how far it got.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`missing environment variable ${name}`);
  return value;
};

const BASE = env('HOOKBOX_URL');
const ADMIN = env('HOOKBOX_ADMIN_TOKEN');
const READ = env('HOOKBOX_READ_TOKEN');
const RETRY_ID = env('HOOKBOX_RETRY_DELIVERY');
const OTHER_ID = env('HOOKBOX_OTHER_DELIVERY');
const WEBHOOK_URL = env('HOOKBOX_WEBHOOK_URL');
const RECEIVER_URL = env('HOOKBOX_TESTER_URL');
const SHOTS = env('HOOKBOX_SCREENSHOTS');
const CHROMIUM = process.env.HOOKBOX_CHROMIUM || '/usr/bin/chromium';
const WAIT = 20_000;

mkdirSync(SHOTS, { recursive: true });

const step = (text) => console.log(`ok - ${text}`);

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// Polls `probe` until it returns a truthy value, or fails after `ms`.
async function until(what, probe, ms = WAIT) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // Chromium must not reach for the network: CI runs in a namespace with
  // only loopback.
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-dev-shm-usage',
  ],
});

const problems = [];
let page;

// A new page in its own context (its own sessionStorage), which records
// console errors and uncaught exceptions. A 404 of an optional endpoint is
// logged by Chromium as "Failed to load resource" and is expected.
async function newPage(options) {
  const context = await browser.newContext(options);
  const p = await context.newPage();
  p.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${m.text()}`);
    }
  });
  p.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  return p;
}

async function signIn(p, token, expectScope) {
  await p.locator('#signin').waitFor({ state: 'visible', timeout: WAIT });
  await p.fill('#token', token);
  await p.click('#signin-button');
  await p.locator('#app').waitFor({ state: 'visible', timeout: WAIT });
  await until(`the scope badge to say ${expectScope}`, async () => (await p.textContent('#scope')) === expectScope);
}

const delivery = (p, id) => p.locator(`details.delivery[data-id="${id}"]`);

async function expand(p, id) {
  const d = delivery(p, id);
  await d.waitFor({ state: 'visible', timeout: WAIT });
  if (!(await d.evaluate((e) => e.open))) await d.locator('summary').click();
  await until(`the attempt log of ${id}`, async () => (await delivery(p, id).locator('.attempt').count()) > 0);
}

async function noHorizontalScroll(p, where) {
  const { scroll, inner } = await p.evaluate(() => ({
    scroll: document.scrollingElement.scrollWidth,
    inner: window.innerWidth,
  }));
  check(scroll <= inner, `${where}: the page scrolls sideways (scrollWidth ${scroll} > innerWidth ${inner})`);
}

async function runTester(p, { badSignature }) {
  await p.selectOption('#tester-event', 'item.sold');
  await p.fill('#tester-url', RECEIVER_URL);
  await p.fill('#tester-secret', '');
  if (badSignature) await p.check('#tester-bad-signature');
  await p.click('#tester-submit');
  await p.locator('#tester-report .report').waitFor({ state: 'visible', timeout: WAIT });
}

try {
  // ---- laptop, admin token
  page = await newPage({ viewport: { width: 1280, height: 800 } });
  const response = await page.goto(BASE + '/');
  check(response && response.status() === 200, `GET / answered ${response && response.status()}`);
  const csp = response.headers()['content-security-policy'] || '';
  check(csp.includes("default-src 'self'"), `GET / has no strict Content-Security-Policy: ${csp}`);
  step('the page loads with a Content-Security-Policy');

  await signIn(page, ADMIN, 'Admin');
  step('signed in with the admin token');

  const webhook = page.locator('.webhook', { has: page.locator('.url', { hasText: WEBHOOK_URL }) });
  await webhook.waitFor({ state: 'visible', timeout: WAIT });
  check((await webhook.locator('.badge').first().textContent()) === 'Enabled', 'the webhook is not shown as Enabled');
  step('the webhook is listed, enabled');

  // Stats and alerts are optional: data or "not available", never an error.
  await until('the overview to render', async () => (await page.textContent('#kpi-rate')) !== '–');
  const rate = await page.textContent('#kpi-rate');
  check(/not available|%/.test(rate), `the success-rate tile shows ${JSON.stringify(rate)}`);
  for (const id of ['#chart', '#alerts']) {
    const s = await page.getAttribute(id, 'data-state');
    check(s === 'na' || s === 'data', `${id} is in state ${s}`);
  }
  step(`stats and alerts render (success rate tile: ${JSON.stringify(rate)}, chart: ${await page.getAttribute('#chart', 'data-state')}, alerts: ${await page.getAttribute('#alerts', 'data-state')})`);

  await until(`delivery ${RETRY_ID} shown as failed`, async () => (await delivery(page, RETRY_ID).getAttribute('data-status')) === 'failed');
  await expand(page, RETRY_ID);
  const first = delivery(page, RETRY_ID).locator('.attempt[data-number="1"]');
  check((await first.textContent()).includes('HTTP 500'), `attempt 1 does not show HTTP 500: ${await first.textContent()}`);
  step('the failed delivery shows its attempt log (attempt 1: HTTP 500)');

  // Reloading keeps the session (sessionStorage).
  await page.reload();
  await until('the session to survive a reload', async () => (await page.textContent('#scope')) === 'Admin');
  await expand(page, RETRY_ID);
  step('a reload keeps the session');

  await delivery(page, RETRY_ID).locator('button.retry').click();
  await until('attempt 2 to appear with HTTP 200', async () => {
    const second = delivery(page, RETRY_ID).locator('.attempt[data-number="2"]');
    return (await second.count()) === 1 && (await second.textContent()).includes('HTTP 200');
  });
  await until('the retried delivery to show succeeded', async () => (await delivery(page, RETRY_ID).getAttribute('data-status')) === 'succeeded');
  step('Retry adds attempt 2 (HTTP 200) and the delivery shows succeeded');

  await runTester(page, { badSignature: true });
  const pass = page.locator('#tester-report .check[data-name="responded_2xx"]');
  check((await pass.getAttribute('class')).includes('pass'), 'the tester does not show responded_2xx as passed');
  const fail = page.locator('#tester-report .check[data-name="bad_signature"]');
  check((await fail.getAttribute('class')).includes('fail'), 'the tester does not show bad_signature as failed');
  check((await fail.locator('.check-detail').textContent()).length > 0, 'the bad_signature check has no detail');
  step('the tester reports responded_2xx passed and bad_signature failed, with details');

  await expand(page, OTHER_ID);
  await page.screenshot({ path: join(SHOTS, 'desktop-admin.png'), fullPage: true });
  step(`screenshot ${join(SHOTS, 'desktop-admin.png')}`);
  await noHorizontalScroll(page, 'laptop');

  // ---- sign out, then the read token
  await page.click('#signout');
  await page.locator('#signin').waitFor({ state: 'visible', timeout: WAIT });
  const kept = await page.evaluate(() => sessionStorage.length);
  check(kept === 0, `sign-out left ${kept} items in sessionStorage`);
  step('sign-out clears the session');

  await signIn(page, READ, 'Read-only');
  step('signed in with the read token');
  await until(`delivery ${OTHER_ID} shown as failed`, async () => (await delivery(page, OTHER_ID).getAttribute('data-status')) === 'failed');
  await expand(page, OTHER_ID);
  check((await page.locator('button.retry').count()) === 0, 'a read token is offered Retry');
  check(await page.locator('#tester-form').isHidden(), 'a read token is offered the tester form');
  check(await page.locator('#tester-readonly').isVisible(), 'the read-only note is not shown');
  step('a read token sees the failed delivery and its attempt log, with no Retry and no tester form');
  await page.screenshot({ path: join(SHOTS, 'desktop-read.png'), fullPage: true });
  step(`screenshot ${join(SHOTS, 'desktop-read.png')}`);
  await page.context().close();

  // ---- phone, admin token
  page = await newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  await page.goto(BASE + '/');
  await noHorizontalScroll(page, 'phone, sign-in');
  await page.screenshot({ path: join(SHOTS, 'phone-signin.png') });
  await signIn(page, ADMIN, 'Admin');
  await expand(page, OTHER_ID);
  await runTester(page, { badSignature: true });
  await noHorizontalScroll(page, 'phone, signed in');
  step('the phone viewport (390 px) does not scroll sideways');
  await page.screenshot({ path: join(SHOTS, 'phone-admin.png'), fullPage: true });
  step(`screenshot ${join(SHOTS, 'phone-admin.png')}`);

  check(problems.length === 0, `the page logged errors:\n${problems.join('\n')}`);
  step('no console errors or uncaught exceptions');
  await browser.close();
  console.log('dashboard e2e: all steps passed');
} catch (e) {
  console.error(`not ok - ${e.stack || e}`);
  if (problems.length) console.error(`page problems:\n${problems.join('\n')}`);
  if (page) {
    try {
      await page.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true });
      console.error(`failure screenshot: ${join(SHOTS, 'failure.png')}`);
      const text = await page.evaluate(() => document.body.innerText);
      console.error(`--- page text ---\n${text.slice(0, 4000)}`);
    } catch (_) { /* the page may be gone */ }
  }
  await browser.close().catch(() => {});
  process.exit(1);
}
