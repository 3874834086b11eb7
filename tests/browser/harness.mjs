// Shared pieces of the browser tests: a real `tollgate serve` (built binary) on a free port
// with a fresh data directory, a merchant "return" server, and Debian's Chromium driven by
// playwright-core.
import { spawn, spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, '..', '..');
export const artifacts = join(repo, 'artifacts', 'browser');
mkdirSync(artifacts, { recursive: true });

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
    s.on('error', fail);
  });
}

async function waitFor(url, ms = 30000) {
  const until = Date.now() + ms;
  for (;;) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch { /* not up yet */ }
    if (Date.now() > until) throw new Error(`${url} did not come up`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts `tollgate serve` with the built-in sandbox; returns {base, key, pk, stop}. */
export async function startServer(extraArgs = []) {
  const bin = process.env.TOLLGATE_BIN || join(repo, 'target', 'debug', 'tollgate');
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'tollgate-browser-'));
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' };
  delete env.DATABASE_URL; // the SQLite default in the fresh data directory
  const proc = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir,
    '--expiry-interval-ms', '300', ...extraArgs], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`${base}/readyz`);
  for (let i = 0; i < 100 && !existsSync(join(dataDir, 'first-secret-key')); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const key = readFileSync(join(dataDir, 'first-secret-key'), 'utf8').trim();
  const pk = /sandbox publishable key: (\S+)/.exec(out)?.[1];
  const sk = /sandbox secret key: (\S+)/.exec(out)?.[1];
  return {
    base, key, pk, sk, dataDir, bin,
    stop: () => new Promise((ok) => { proc.on('exit', ok); proc.kill('SIGTERM'); }),
  };
}

/** The merchant's site: records where buyers land. */
export async function startMerchant() {
  const landed = [];
  const server = createServer((req, res) => {
    landed.push(new URL(req.url, 'http://localhost'));
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>Merchant</title><h1>Thanks!</h1>');
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  return {
    url: `http://localhost:${port}/return`,
    landed,
    stop: () => new Promise((ok) => server.close(ok)),
  };
}

export async function api(server, method, path, body) {
  const r = await fetch(server.base + path, {
    method,
    headers: { authorization: `Bearer ${server.key}`, 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: r.status, body: await r.json() };
}

export async function createTransaction(server, merchant, extra = {}) {
  const r = await api(server, 'POST', '/transactions', {
    amount: 1299, currency: 'USD', intent: 'capture',
    payment_method: { method: 'stripe', redirect_url: merchant.url },
    ...extra,
  });
  if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

export async function browser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-quic'],
  });
}

/** Fills the Payment Element (the sandbox stand-in's card form). */
export async function fillCard(page, number, { expiry = '12 / 34', cvc = '123' } = {}) {
  await page.getByLabel('Card number').fill(number);
  await page.getByLabel('Expiration (MM / YY)').fill(expiry);
  await page.getByLabel('Security code').fill(cvc);
}

export async function shot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
}

// ---- the dashboard: an operator, a signed-in page, and the checks every page passes ----------

/** Runs the CLI against the server's data directory; returns its stdout. */
export function cli(server, args, input) {
  const env = { ...process.env };
  delete env.DATABASE_URL;
  const r = spawnSync(server.bin, [...args, '--data-dir', server.dataDir], { input, env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tollgate ${args.join(' ')}: ${r.status} ${r.stderr}`);
  return r.stdout;
}

/** Creates an operator with the real CLI and signs a new browser context in; returns {context, page}. */
export async function signedIn(chrome, server, { user = 'operator', password = 'dashboard test password' } = {}) {
  cli(server, ['operator', 'create', user], `${password}\n`);
  const context = await chrome.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(`${server.base}/dashboard/login`);
  await page.getByLabel('Username').fill(user);
  await page.getByLabel('Password').fill(password);
  await Promise.all([page.waitForURL(/\/dashboard\/(?!login)/), page.getByRole('button', { name: 'Log in' }).click()]);
  return { context, page };
}

const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/** Serious or critical axe-core violations of the page as it is now ([] when none). */
export async function axeViolations(page) {
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const result = await axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  return violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

/** How far the page scrolls sideways (0 when nothing is wider than the window). */
export async function sidewaysOverflow(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}

/**
 * The checks every dashboard page passes, at 1280×800 and at 390×844: no sideways scrolling,
 * no serious or critical axe-core violation; a full-page screenshot at each width
 * (artifacts/browser/<name>-1280.png, <name>-390.png). Leaves the page at 1280×800.
 */
export async function checkPage(page, name) {
  for (const [width, height] of [[390, 844], [1280, 800]]) {
    await page.setViewportSize({ width, height });
    await page.waitForTimeout(50);
    const over = await sidewaysOverflow(page);
    assert.ok(over <= 0, `${name} at ${width} px scrolls sideways by ${over} px`);
    const serious = await axeViolations(page);
    assert.deepEqual(serious, [], `${name} at ${width} px: ${JSON.stringify(serious, null, 2)}`);
    await page.screenshot({ path: join(artifacts, `${name}-${width}.png`), fullPage: true });
  }
}

/** Polls `fn` every 200 ms until it returns something truthy (returned), failing after `ms`. */
export async function eventually(what, fn, ms = 20000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A form POST to the server's Stripe sandbox with its secret key; the answer's JSON. */
export async function sandboxPost(server, path, form) {
  const r = await fetch(`${server.base}/sandbox/stripe${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${server.sk}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
  });
  const body = await r.json();
  if (!r.ok) throw new Error(`sandbox ${path}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}
