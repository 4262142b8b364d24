// Browser test of the Wearcast dashboards: starts the real `wearcast up --demo` on free
// ports, drives Debian's headless Chromium through playwright-core, opens every view,
// fails on any console error, page error, failed request or HTTP error response,
// accepts an offer in /operator and sees its work order in /service, completes it,
// checks each view at tablet width, saves screenshots and reports each view's render
// time.
//
//   node tests/browser/dashboards.test.mjs
//   RENDER_BENCH=1 BROWSER_TEST_BIN=target/release/wearcast node tests/browser/dashboards.test.mjs
//
// The second form is the render benchmark that scripts/bench runs: only the render
// times, from 7 loads of each view, against the static /signin page loaded as often in
// the same run, and a failure when a view's median is over RENDER_BUDGET_MS (default
// 1000). The test itself reports the times and never fails on them: a loaded machine
// is not a slow dashboard.
//
// BROWSER_TEST_BIN: the binary (default target/debug/wearcast); CHROMIUM: the browser
// (default /usr/bin/chromium); SCREENSHOTS: where to save them (default
// tests/browser/screenshots, gitignored). Without Chromium or playwright-core the test
// is skipped with a message, except under CI=true, where that is a failure.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const BIN = process.env.BROWSER_TEST_BIN ?? join(root, 'target/debug/wearcast');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOTS ?? join(here, 'screenshots');
const BUDGET_MS = Number(process.env.RENDER_BUDGET_MS ?? 1000);
// RENDER_BENCH=1 (scripts/bench): only the render times, more loads, with a reference.
const BENCH = process.env.RENDER_BENCH === '1';
const RUNS = BENCH ? 7 : 3;
const IN_CI = process.env.CI === 'true';
const DESKTOP = { width: 1280, height: 900 };
const TABLET = { width: 820, height: 1180 };

const started = Date.now();
const log = (...args) => console.log(`[browser ${((Date.now() - started) / 1000).toFixed(1)}s]`, ...args);

function skip(why) {
  if (IN_CI) {
    console.error(`browser test: ${why}; CI=true, so this is a failure`);
    process.exit(1);
  }
  console.log(`SKIP browser test: ${why}`);
  process.exit(0);
}

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (_) {
  skip('playwright-core is not installed (run `npm ci` in tests/browser, or scripts/services)');
}
if (!existsSync(CHROMIUM)) skip(`no Chromium at ${CHROMIUM} (apt-get install chromium, or scripts/services)`);
if (!existsSync(BIN)) {
  console.error(`browser test: no wearcast binary at ${BIN}; run cargo build (or cargo test) first`);
  process.exit(1);
}

// ------------------------------------------------------------------ the platform

/** Starts `wearcast up --demo` on free ports; resolves with its dashboard URL. */
function startPlatform() {
  const dir = mkdtempSync(join(tmpdir(), 'wearcast-browser-'));
  // The demo's simulated customers (src/demo.rs) would race this test for its offers.
  const child = spawn(
    BIN,
    ['up', '--demo', '--http-listen', '127.0.0.1:0', '--mqtt-listen', '127.0.0.1:0', '--data-dir', join(dir, 'data')],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn', WEARCAST_DEMO__ACTORS: 'false' } },
  );
  const stderr = [];
  // Errors and panics are kept apart from the rolling tail, which would lose an early one.
  const alarms = [];
  createInterface({ input: child.stderr }).on('line', (line) => {
    stderr.push(line);
    if (stderr.length > 400) stderr.shift();
    if (/panicked|ERROR/.test(line) && alarms.length < 20) alarms.push(line);
  });
  const url = new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner within 60 s:\n${stderr.join('\n')}`)), 60000);
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^\s*Dashboard:\s*(\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolveUrl(m[1].replace(/\/$/, ''));
      }
    });
    child.on('exit', (code) => reject(new Error(`wearcast exited (${code}):\n${stderr.join('\n')}`)));
  });
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => {
        const t = setTimeout(() => {
          child.kill('SIGKILL');
          r();
        }, 10000);
        child.on('exit', () => {
          clearTimeout(t);
          r();
        });
      });
    }
    rmSync(dir, { recursive: true, force: true });
  };
  // The demo writes one API token per role, customer and technician here.
  const token = (name) => readFileSync(join(dir, 'data', 'tokens', `${name}.token`), 'utf8').trim();
  return { url, stop, token, stderr: () => stderr.join('\n'), alarms: () => alarms };
}

let adminToken = '';

async function api(base, path) {
  const res = await fetch(base + path, { headers: { Authorization: `Bearer ${adminToken}` } });
  if (!res.ok) throw new Error(`GET ${path}: ${res.status}`);
  return res.json();
}

async function eventually(what, timeoutMs, probe) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

// ------------------------------------------------------------------ the test

const platform = startPlatform();
let browser;
const problems = [];
const renderTimes = {};
let reference = null;

/** A page that records every console error, page error, failed request and HTTP error. */
async function watchedPage(context, name) {
  const page = await context.newPage();
  // The one expected error: accepting an offer the planner superseded a moment before
  // (409, which the page explains). Chromium logs it to the console too.
  const raced = (res) => res.status() === 409 && res.request().method() === 'POST' && /\/offers\/[^/]+\/(accept|decline)$/.test(res.url());
  let racedConsole = 0;
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    if (racedConsole > 0 && /status of 409/.test(msg.text())) {
      racedConsole -= 1;
      return;
    }
    problems.push(`${name}: console error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`${name}: page error: ${err.message}`));
  page.on('requestfailed', (req) => {
    // A navigation away aborts the page's polls in flight; that is not a failure.
    if (req.failure()?.errorText === 'net::ERR_ABORTED') return;
    problems.push(`${name}: request failed: ${req.method()} ${req.url()} ${req.failure()?.errorText}`);
  });
  page.on('response', (res) => {
    if (raced(res)) {
      racedConsole += 1;
      log(`${name}: offer superseded before it was accepted (409); trying another`);
      return;
    }
    if (res.status() >= 400) problems.push(`${name}: HTTP ${res.status()} for ${res.request().method()} ${res.url()}`);
  });
  return page;
}

/**
 * Signs `context` in through /signin with `token` (the session cookie is the context's)
 * and checks that `/`, where sign-in returns to, leads on to the role's `view`.
 */
async function signIn(context, base, token, view) {
  const page = await watchedPage(context, '/signin');
  await page.goto(`${base}/signin?next=/`);
  await page.fill('#token', token);
  await Promise.all([page.waitForURL(`${base}${view}`), page.click('#signin-form button[type="submit"]')]);
  const cookies = await context.cookies(base);
  const session = cookies.find((c) => c.name === 'wearcast_session');
  check(session && session.httpOnly && session.sameSite === 'Strict', `the session cookie is not HttpOnly and SameSite=Strict: ${JSON.stringify(session && { ...session, value: '…' })}`);
  await page.close();
}

/** Opens `path` and waits for `ready` (a selector); returns ms from navigation start. */
async function openView(page, base, path, ready) {
  await page.goto(base + path, { waitUntil: 'commit' });
  await page.waitForSelector(ready, { timeout: 15000 });
  return page.evaluate(() => Math.round(performance.now()));
}

async function noHorizontalScroll(page, name) {
  const { scroll, inner } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
  check(scroll <= inner + 1, `${name}: the page is ${scroll}px wide at a ${inner}px tablet width`);
}

try {
  const base = await platform.url;
  log(`wearcast up --demo at ${base}`);
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  const desktop = await browser.newContext({ viewport: DESKTOP, timezoneId: 'Asia/Tokyo', locale: 'en-GB' });
  // Signed in as the demo's admin, from the token file `up --demo` wrote.
  adminToken = platform.token('admin');
  await signIn(desktop, base, adminToken, '/manufacturer');

  // Before signing in, the landing page leads to the three views and to sign-in.
  const anonymous = await browser.newContext({ viewport: DESKTOP, timezoneId: 'Asia/Tokyo', locale: 'en-GB' });
  const landing = await watchedPage(anonymous, '/');
  await landing.goto(`${base}/`);
  for (const href of ['/operator', '/service', '/manufacturer', '/signin']) {
    check(await landing.locator(`main a[href="${href}"]`).count() === 1, `/ has no link to ${href}`);
  }
  await landing.close();
  await anonymous.close();

  // An open offer now (preferably not an urgent visit: it has other stops to pick). The
  // demo's planner supersedes offers as risk rises, so each step asks again.
  const currentOffer = (timeoutMs, customer) =>
    eventually('a proposed offer from the demo', timeoutMs, async () => {
      const offers = (await api(base, '/api/v1/offers?status=proposed')).filter((o) => !customer || o.customer === customer);
      return offers.find((o) => !o.urgent) ?? offers[0];
    });
  let offer = await currentOffer(90000);
  log(`offer ${offer.id} for ${offer.machine} (${offer.customer})`);

  // A customer signed in lands on the operator view, which shows their machines only.
  const plant = await browser.newContext({ viewport: DESKTOP, timezoneId: 'Asia/Tokyo', locale: 'en-GB' });
  await signIn(plant, base, platform.token(`customer-${offer.customer}`), '/operator');
  const own = await watchedPage(plant, '/operator (customer)');
  await openView(own, base, '/operator', '#machines-table table');
  const shown = await own.locator('#machines-table tbody tr').count();
  const theirs = (await api(base, '/api/v1/machines')).filter((m) => m.customer === offer.customer).length;
  check(shown === theirs, `the customer's operator view lists ${shown} machines, they have ${theirs}`);
  await own.close();
  await plant.close();

  // Render times: navigation start to the view's main content, each view loaded RUNS
  // times in a fresh tab; fastest, median and slowest are reported (and judged against
  // the budget only under RENDER_BENCH). A first load warms the browser (a renderer
  // process, the assets' compilation) and is not counted.
  const customerQuery = `?customer=${encodeURIComponent(offer.customer)}`;
  const views = [
    ['operator', `/operator${customerQuery}`, '#machines-table table'],
    ['operator machine page', `/operator${customerQuery}#machine=${encodeURIComponent(offer.machine)}`, '#detail-chart svg .c-hist'],
    ['service', '/service', '#schedule-list .tech, #schedule-list .empty'],
    ['manufacturer', '/manufacturer', '#accounts-table table'],
  ];
  const warm = await watchedPage(desktop, 'warm-up');
  await openView(warm, base, views[0][1], views[0][2]);
  await warm.close();
  for (const [name, path, ready] of views) {
    const runs = [];
    for (let i = 0; i < RUNS; i++) {
      const page = await watchedPage(desktop, name);
      runs.push(await openView(page, base, path, ready));
      await page.close();
    }
    runs.sort((a, b) => a - b);
    renderTimes[name] = { median: runs[Math.floor(runs.length / 2)], min: runs[0], max: runs[runs.length - 1] };
  }

  if (BENCH) {
    // The reference: the static sign-in page from the same server, in the same browser
    // and run, so that the ratios say what each view costs beyond a page load.
    const runs = [];
    for (let i = 0; i < RUNS; i++) {
      const page = await watchedPage(desktop, 'reference');
      runs.push(await openView(page, base, '/signin', '#signin-form'));
      await page.close();
    }
    runs.sort((a, b) => a - b);
    reference = { median: runs[Math.floor(runs.length / 2)], min: runs[0], max: runs[runs.length - 1] };
  } else {
    await workflow({ base, desktop, offer, customerQuery, currentOffer });
  }

  check(problems.length === 0, `the pages reported problems:\n  ${problems.join('\n  ')}`);
  const report = Object.entries(renderTimes)
    .map(([v, t]) => `${v} ${t.min} ms (median ${t.median}, max ${t.max}${reference ? `; ${(t.median / reference.median).toFixed(1)}x the reference` : ''})`)
    .join(', ');
  log(`render times, fastest of ${RUNS} loads, navigation start to content: ${report}`);
  writeFileSync(join(SHOTS, 'render-times.json'), JSON.stringify({ views: renderTimes, reference }, null, 2));
  if (BENCH) {
    // The budget is a benchmark's verdict, not the test's: scripts/bench runs this with
    // RENDER_BENCH=1 on the release build, the test only reports the times.
    log(`reference: the static /signin page, ${reference.min} ms (median ${reference.median}, max ${reference.max})`);
    const slow = Object.entries(renderTimes).filter(([, t]) => t.median > BUDGET_MS);
    check(
      slow.length === 0,
      `views over the ${BUDGET_MS} ms budget (median of ${RUNS} loads): ${slow.map(([v, t]) => `${v} ${t.median} ms`).join(', ')}`,
    );
    log(`every view renders within ${BUDGET_MS} ms (median of ${RUNS} loads)`);
  }
  log(`PASS in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${SHOTS}`);
} catch (err) {
  console.error(`FAIL: ${err.message}`);
  if (problems.length) console.error(`page problems:\n  ${problems.join('\n  ')}`);
  if (platform.alarms().length) console.error(`--- wearcast errors and panics ---\n${platform.alarms().join('\n')}`);
  console.error(`--- last wearcast stderr ---\n${platform.stderr().split('\n').slice(-40).join('\n')}`);
  process.exitCode = 1;
} finally {
  await browser?.close();
  await platform.stop();
}

/** The interactive part of the test: operator, field service, manufacturer, tablet. */
async function workflow({ base, desktop, offer, customerQuery, currentOffer }) {
    // ---- operator: fleet, machine chart, offers
    const op = await watchedPage(desktop, '/operator');
    await openView(op, base, `/operator${customerQuery}`, '#machines-table table');
    await op.waitForSelector('#offers-list [data-accept]');
    await op.screenshot({ path: join(SHOTS, 'operator.png'), fullPage: true });

    await op.close();

    offer = await currentOffer(30000, offer.customer);
    const component = offer.components[0].component;
    const machinePage = await watchedPage(desktop, '/operator#machine');
    await openView(
      machinePage,
      base,
      `/operator?customer=${encodeURIComponent(offer.customer)}#machine=${encodeURIComponent(offer.machine)}`,
      '#detail-chart svg .c-hist',
    );
    await machinePage.click(`[data-component="${component}"]`);
    // The chart itself, not the legend's samples, which carry the same classes.
    const chart = machinePage.locator('#detail-chart svg.chart-svg');
    await machinePage.waitForSelector('#detail-chart svg.chart-svg .c-win-offer');
    const layers = {};
    for (const cls of ['c-hist', 'c-trend', 'c-threshold', 'c-rul', 'c-p50', 'c-win-stop', 'c-win-offer', 'c-now']) {
      layers[cls] = await chart.locator(`.${cls}`).count();
    }
    const health = await api(base, `/api/v1/machines/${encodeURIComponent(offer.machine)}/health-history`);
    const comp = health.components.find((c) => c.component === component);
    log(`chart of ${offer.machine}/${component}: ${JSON.stringify(layers)}; basis ${comp.basis}`);
    for (const cls of ['c-hist', 'c-threshold', 'c-rul', 'c-win-stop', 'c-win-offer']) {
      check(layers[cls] > 0, `the machine chart has no ${cls}`);
    }
    if (comp.trend.length) check(layers['c-trend'] > 0, 'the machine chart does not draw the fitted trend');
    // The browser runs in Tokyo; the axis must be in the site's zone, and say which.
    const siteOf = (await api(base, '/api/v1/machines')).find((m) => m.id === offer.machine).site;
    const zone = (await api(base, '/api/v1/sites')).find((st) => st.id === siteOf).timezone;
    const axisTitle = await chart.locator('.c-axis-title').first().textContent();
    check(axisTitle.includes(`site time, ${zone}`), `the time axis does not name the site's time zone ${zone}: ${axisTitle}`);
    check((await machinePage.locator('#detail-chart .legend li').count()) >= 6, 'the machine chart has no legend');
    await machinePage.locator('#machine-detail').screenshot({ path: join(SHOTS, 'operator-machine.png') });

    // Accept an offer. The demo's clock runs 1800× fast, so the planner may supersede the
    // offer between the page's refresh and the click; the page then says so, and the test
    // takes the next one.
    let result = '';
    let lastAcceptLog = '';
    for (let attempt = 0; attempt < 4 && !result.startsWith('Accepted'); attempt++) {
      const button = machinePage.locator('#offers-list [data-accept]').first();
      await button.waitFor({ timeout: 15000 });
      const id = await button.getAttribute('data-accept');
      await machinePage.evaluate(() => { document.getElementById('offer-result').textContent = ''; });
      await button.click();
      await machinePage.waitForFunction(() => /^Accepted|failed/.test(document.getElementById('offer-result')?.textContent ?? ''), null, { timeout: 15000 });
      result = await machinePage.locator('#offer-result').textContent();
      lastAcceptLog = `accept ${id}: ${result}`;
      log(lastAcceptLog);
    }
    check(result.startsWith('Accepted'), `accepting failed: ${result}`);
    const wo = /work order (\S+)/.exec(result)?.[1];
    check(wo, `no work order named in: ${result}`);
    // The page refreshes after the accept: the accepted offer leaves the list.
    const acceptedId = /accept (\S+):/.exec(lastAcceptLog)?.[1];
    if (acceptedId) await machinePage.waitForSelector(`[data-offer="${acceptedId}"]`, { state: 'detached' });

    // Decline another offer with a reason, after opening the list of stops it could move
    // to (the same 409 race as above is retried).
    let declined = '';
    for (let attempt = 0; attempt < 3 && !/declined/.test(declined); attempt++) {
      const first = machinePage.locator('#offers-list details.offer-more').first();
      if ((await first.count()) === 0) break;
      // Pinned by id: the list re-renders (and reorders) as offers come and go.
      const id = await first.getAttribute('data-more');
      const more = machinePage.locator(`details[data-more="${id}"]`);
      await more.locator('summary').click();
      await machinePage.waitForFunction((oid) => {
        const select = document.getElementById(`pick-${oid}`);
        return select && select.options.length > 0 && !/^Loading/.test(select.options[0].text);
      }, id);
      const stops = await more.locator('select option').count();
      await more.locator('input[name="reason"]').fill('Browser test: our own staff replace it');
      await machinePage.evaluate(() => { document.getElementById('offer-result').textContent = ''; });
      await more.locator('form[data-decline-form] button[type="submit"]').click();
      await machinePage.waitForFunction(() => /declined|failed/.test(document.getElementById('offer-result')?.textContent ?? ''), null, { timeout: 15000 });
      declined = await machinePage.locator('#offer-result').textContent();
      log(`decline ${id} (${stops} other stops listed): ${declined}`);
    }
    if (!declined) log('no second offer for this customer: decline not exercised');
    else check(/declined/.test(declined), `declining failed: ${declined}`);
    await machinePage.close();

    // ---- service, as the booked technician on a tablet: their own visits, this one among
    // them, and no one else's.
    const booked = (await api(base, '/api/v1/work-orders')).find((o) => o.id === wo);
    check(booked?.technician, `work order ${wo} has no technician: ${JSON.stringify(booked)}`);
    const field = await browser.newContext({ viewport: TABLET, timezoneId: 'Asia/Tokyo', locale: 'en-GB', hasTouch: true });
    await signIn(field, base, platform.token(`technician-${booked.technician}`), '/service');
    const own = await watchedPage(field, '/service (technician)');
    await openView(own, base, '/service', '#schedule-list .tech, #schedule-list .empty');
    await own.waitForSelector(`[data-work-order="${wo}"]`, { timeout: 15000 });
    const shownIds = await own.locator('[data-work-order]').evaluateAll((els) => els.map((e) => e.getAttribute('data-work-order')));
    const theirs = new Set((await api(base, '/api/v1/work-orders')).filter((o) => o.technician === booked.technician).map((o) => o.id));
    const foreign = shownIds.filter((id) => !theirs.has(id));
    check(foreign.length === 0, `technician ${booked.technician} is shown others' work orders: ${foreign.join(', ')}`);
    await own.screenshot({ path: join(SHOTS, 'service-technician.png'), fullPage: true });
    await own.close();
    await field.close();

    // ---- service: the work order appears; complete it
    const sv = await watchedPage(desktop, '/service');
    await openView(sv, base, '/service', '#schedule-list .tech, #schedule-list .empty');
    await sv.waitForSelector(`[data-work-order="${wo}"]`, { timeout: 15000 });
    const card = sv.locator(`[data-work-order="${wo}"]`);
    check(/Parts to bring/.test(await card.textContent()), 'the work order does not say which parts to bring');
    await sv.screenshot({ path: join(SHOTS, 'service.png'), fullPage: true });
    await card.locator('summary').click();
    await card.locator('select[name="as_found-0"]').selectOption('worn');
    await card.locator('textarea[name="notes"]').fill('Replaced during the browser test');
    // The visit's planned stop is usually days ahead on the platform clock: completing it
    // now asks the technician to confirm the work was done early.
    const order = (await api(base, '/api/v1/work-orders')).find((o) => o.id === wo);
    const platformNow = Date.parse((await api(base, '/api/v1/info')).now);
    const early = card.locator('input[name="early"]');
    if (Date.parse(order.window_start) > platformNow + 86400000) {
      check((await early.count()) === 1, `work order ${wo} is completed before its stop without saying it was done early`);
    }
    if (await early.count()) {
      log(`completing ${wo} early: its stop begins ${order.window_start}, the platform's now is ${new Date(platformNow).toISOString()}`);
      await early.check();
    }
    await card.locator('button[type="submit"]').click();
    await sv.waitForFunction((id) => (document.getElementById('wo-result')?.textContent ?? '').includes(`${id} completed`), wo, { timeout: 15000 });
    await card.waitFor({ state: 'detached', timeout: 15000 });
    await sv.selectOption('#status-select', 'completed');
    await sv.waitForSelector(`[data-work-order="${wo}"]`);
    await sv.click(`[data-work-order="${wo}"] [data-history]`);
    await sv.waitForSelector('#history-body table, #history-body .empty');
    await sv.waitForFunction(() => /Replaced during the browser test/.test(document.getElementById('history-body')?.textContent ?? ''));
    // The ended lives' dates are in the machine's site's zone, and say so.
    const woSite = (await api(base, '/api/v1/machines')).find((m) => m.id === booked.machine).site;
    const woZone = (await api(base, '/api/v1/sites')).find((st) => st.id === woSite).timezone;
    await sv.waitForFunction(
      (z) => (document.querySelector('#history-body caption')?.textContent ?? '').includes(`site time, ${z}`),
      woZone,
      { timeout: 15000 },
    );
    await sv.screenshot({ path: join(SHOTS, 'service-history.png'), fullPage: true });
    await sv.close();

    // ---- manufacturer
    // A backtest published as `wearcast backtest --publish` does shows under model quality.
    const published = await fetch(`${base}/api/v1/model-quality/backtests`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${adminToken}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({
        train: 'train_FD001.txt', test: 'test_FD001.txt', training_runs: 100, test_units: 100,
        rmse: 14.87, mae: 10.9, cap: 125, level: 0.8, coverage: 0.88, below_p10: 0.05, above_p90: 0.07,
        live_engine_rmse: 21.5, live_engine_coverage: 0.71,
      }),
    });
    const publishedBody = await published.text();
    check(published.status === 201, `publishing a backtest answered ${published.status}: ${publishedBody}`);
    const backtest = JSON.parse(publishedBody);
    const mf = await watchedPage(desktop, '/manufacturer');
    await openView(mf, base, '/manufacturer', '#accounts-table table');
    const btRow = mf.locator(`#backtests-table tr[data-backtest="${backtest.id}"]`);
    await btRow.waitFor({ timeout: 15000 });
    const btText = await btRow.textContent();
    check(/14\.9/.test(btText) && /88%/.test(btText), `the backtest row does not show its RMSE and coverage: ${btText}`);
    await mf.waitForSelector('#kpi-tiles .stats');
    check((await mf.locator('#chart-offers svg .c-bar').count()) === 4, 'no offers chart');
    await mf.waitForSelector('#quality-tiles .stats');
    check((await mf.locator('#chart-calibration svg .c-bar').count()) === 3, 'no model-quality chart');
    check((await mf.locator('#quality-table tbody tr').count()) >= 3, 'no model-quality table by status');
    await mf.screenshot({ path: join(SHOTS, 'manufacturer.png'), fullPage: true });
    // Drill down to one customer: the KPIs are asked for that customer and say so.
    const choices = await mf.locator('#kpi-customer option').evaluateAll((os) => os.map((o) => o.value).filter(Boolean));
    check(choices.length >= 2, `customer drill-down lists ${choices.length} customers`);
    const drilled = mf.waitForRequest((r) => r.url().includes('/api/v1/kpis?') && r.url().includes(`customer=${choices[0]}`));
    await mf.selectOption('#kpi-customer', choices[0]);
    await drilled;
    await mf.waitForFunction((c) => (document.getElementById('kpis-note')?.textContent ?? '').includes(`(${c})`), choices[0]);
    check(new URL(mf.url()).searchParams.get('customer') === choices[0], 'the drill-down is not in the address');
    await mf.close();
    await desktop.close();

    // ---- tablet width: no view scrolls sideways
    const tablet = await browser.newContext({ viewport: TABLET, timezoneId: 'Asia/Tokyo', locale: 'en-GB', hasTouch: true });
    await signIn(tablet, base, adminToken, '/manufacturer');
    for (const [path, ready] of [
      [`/operator?customer=${encodeURIComponent(offer.customer)}#machine=${encodeURIComponent(offer.machine)}`, '#detail-chart svg .c-hist'],
      ['/service?status=all', '#schedule-list .tech'],
      ['/manufacturer', '#accounts-table table'],
    ]) {
      const name = path.split('?')[0];
      const page = await watchedPage(tablet, `${name} (tablet)`);
      await openView(page, base, path, ready);
      await noHorizontalScroll(page, name);
      await page.screenshot({ path: join(SHOTS, `tablet${name.replace('/', '-')}.png`), fullPage: true });
      await page.close();
    }
    await tablet.close();
}
