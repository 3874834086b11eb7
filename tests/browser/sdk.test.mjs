// The TypeScript client (@tollgate/client, clients/typescript) in headless Chromium: a plain
// HTML page loads the built package as an ES module, watches a customer, and shows the unlock
// when the buyer pays on the sandbox's hosted Checkout page in another tab; no reload.
// The page and the package are served from one origin that passes /v1/ on to Tollgate (as an
// app's reverse proxy would: Tollgate sends no CORS headers).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request as httpRequest } from 'node:http';
import { readFileSync, existsSync } from 'node:fs';
import { execSync } from 'node:child_process';
import { join } from 'node:path';
import { repo, startServer, browser, fillCard, shot } from './harness.mjs';

const sdkDir = join(repo, 'clients', 'typescript');
const sdk = join(sdkDir, 'dist', 'index.js');
let server, chrome, app, stripeBase;

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>My app</title></head>
<body>
<h1>My app</h1>
<p id="status" role="status">Loading…</p>
<script type="module">
  import { Tollgate } from '/sdk/index.js';
  const q = new URLSearchParams(location.search);
  window.loadedAt = Date.now();
  const tg = new Tollgate({ baseUrl: location.origin, apiKey: q.get('pk') });
  tg.watch(q.get('customid'), (set) => {
    const premium = set.permissions.find((p) => p.identifier === 'premium');
    document.getElementById('status').textContent =
      premium && premium.isValid ? 'Premium unlocked' : 'Locked';
    window.sets = (window.sets || 0) + 1;
  });
</script>
</body></html>`;

/** The app's origin: the page, the package, and /v1/ passed on to Tollgate (streamed). */
function startApp(tollgate) {
  const target = new URL(tollgate);
  const srv = createServer((req, res) => {
    if (req.url.startsWith('/v1/')) {
      const up = httpRequest({ host: target.hostname, port: target.port, path: req.url, method: req.method,
        headers: { ...req.headers, host: target.host } }, (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      });
      req.pipe(up);
      res.on('close', () => up.destroy());
      return;
    }
    if (req.url === '/sdk/index.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      return res.end(readFileSync(sdk));
    }
    if (req.url.startsWith('/app')) {
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end(PAGE);
    }
    res.writeHead(404).end();
  });
  return new Promise((ok) => srv.listen(0, '127.0.0.1', () => ok({
    url: `http://127.0.0.1:${srv.address().port}`,
    stop: () => new Promise((done) => { srv.closeAllConnections(); srv.close(done); }),
  })));
}

async function api(method, path, body) {
  const r = await fetch(server.base + path, {
    method,
    headers: { authorization: `Bearer ${server.key}`, 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: r.status, body: await r.json() };
}

async function stripe(method, path, params = {}) {
  const r = await fetch(stripeBase + path, {
    method,
    headers: { authorization: `Bearer ${server.sk}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(params).toString(),
  });
  const json = await r.json();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

before(async () => {
  if (!existsSync(sdk)) {
    execSync('npm ci --no-audit --no-fund && npm run build', { cwd: sdkDir, stdio: 'inherit' });
  }
  server = await startServer();
  stripeBase = `${server.base}/sandbox/stripe`;
  app = await startApp(server.base);
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  await app?.stop();
  await server?.stop();
});

test('a plain page with the package unlocks when the buyer pays on Checkout, without a reload', async () => {
  const price = await stripe('POST', '/v1/prices', { currency: 'usd', unit_amount: '900', 'product_data[name]': 'Premium' });
  assert.equal((await api('POST', '/v1/skus', { identifier: 'premium_life', store: 'stripe', product_id: price.product, kind: 'one_time' })).status, 201);
  assert.equal((await api('POST', '/v1/permissions/definitions', { identifier: 'premium', skus: ['premium_life'] })).status, 201);
  const pk = execSync(`${server.bin} keys create --kind public --data-dir ${server.dataDir}`).toString().trim().split('\n').pop();
  assert.match(pk, /^tg_pk_/);

  const context = await chrome.newContext({ viewport: { width: 1024, height: 700 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${app.url}/app?pk=${encodeURIComponent(pk)}&customid=web-buyer`);
  await page.getByText('Locked').waitFor();
  const loadedAt = await page.evaluate(() => window.loadedAt);
  await shot(page, 'sdk-locked');

  const cs = await stripe('POST', '/v1/checkout/sessions', {
    mode: 'payment', 'line_items[0][price]': price.id, 'line_items[0][quantity]': '1',
    'metadata[customid]': 'web-buyer', customer_creation: 'always',
    success_url: `${app.url}/app?pk=${encodeURIComponent(pk)}&customid=web-buyer`,
  });
  const checkout = await context.newPage();
  await checkout.goto(cs.url);
  await checkout.getByLabel('Email').fill('web-buyer@example.com');
  await fillCard(checkout, '4242 4242 4242 4242');
  await checkout.getByLabel('Name on card').fill('Web Buyer');
  await checkout.getByRole('button', { name: /Pay/ }).click();
  const paidAt = Date.now();
  await page.getByText('Premium unlocked').waitFor({ timeout: 20000 });
  console.log(`the page unlocked ${Date.now() - paidAt} ms after the Pay click`);
  await shot(page, 'sdk-unlocked');
  assert.equal(await page.evaluate(() => window.loadedAt), loadedAt, 'no reload');
  assert.deepEqual(errors, []);
  await context.close();
});
