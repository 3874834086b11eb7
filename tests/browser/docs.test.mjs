// The API reference page (/docs) in a real browser, at a desktop and a phone width: it renders
// every operation of /openapi.json under its strict Content-Security-Policy, each with a curl
// example naming its path, nothing scrolls sideways at 390 px, and axe-core finds no serious or
// critical accessibility violation. Screenshots: artifacts/browser/docs-*.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { startServer, browser, artifacts } from './harness.mjs';

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

let server, chrome, doc;

before(async () => {
  server = await startServer();
  chrome = await browser();
  const r = await fetch(`${server.base}/openapi.json`);
  assert.equal(r.status, 200);
  doc = await r.json();
});

after(async () => {
  await chrome?.close();
  await server?.stop();
});

/** Every documented operation as "METHOD path". */
function documented() {
  const out = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const m of METHODS) if (item[m]) out.push([m.toUpperCase(), path, item[m]]);
  }
  return out;
}

/** The path as the curl example writes it: `{id}` is the shell variable `$ID`. */
const curlPath = (path) => path.replace(/\{([^}]+)\}/g, (_, n) => `$${n.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`);

for (const [name, width, height] of [['desktop', 1280, 800], ['phone', 390, 844]]) {
  test(`/docs at ${width}x${height} (${name})`, async () => {
    const context = await chrome.newContext({ viewport: { width, height } });
    const page = await context.newPage();
    const problems = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      // A failed load is reported below with its URL; the browser asks for /favicon.ico itself.
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
        problems.push(`console: ${m.text()}`);
      }
    });
    page.on('response', (r) => {
      if (r.status() >= 400 && new URL(r.url()).pathname !== '/favicon.ico') {
        problems.push(`${r.status()} ${r.url()}`);
      }
    });
    await page.goto(`${server.base}/docs`);
    await page.waitForSelector('[data-op]');

    // Every operation, once, with its curl example.
    const rendered = await page.$$eval('[data-op]', (secs) => secs.map((s) => ({
      op: s.getAttribute('data-op'),
      curl: s.querySelector('pre.curl-text')?.textContent ?? '',
      copy: !!s.querySelector('button.copy'),
    })));
    const ops = documented();
    assert.equal(rendered.length, ops.length, 'one section per operation');
    const byOp = new Map(rendered.map((r) => [r.op, r]));
    for (const [method, path, op] of ops) {
      const r = byOp.get(`${method} ${path}`);
      assert.ok(r, `${method} ${path} is rendered`);
      assert.ok(r.copy, `${method} ${path}: a copy button`);
      const url = `${doc.servers[0].url}${curlPath(path)}`;
      assert.ok(r.curl.startsWith('curl'), `${method} ${path}: ${r.curl}`);
      assert.ok(r.curl.includes(`"${url}`), `${method} ${path}: the URL ${url} in ${r.curl}`);
      if (method !== 'GET') assert.ok(r.curl.includes(`-X ${method}`), `${method} ${path}: -X`);
      const secured = (op.security ?? doc.security).some((req) => Object.keys(req).length > 0);
      assert.equal(r.curl.includes('Authorization: Bearer $TOLLGATE_KEY'), secured,
        `${method} ${path}: the API key header when, and only when, it needs one`);
      const keyed = (op.parameters ?? []).some((p) => p.$ref === '#/components/parameters/IdempotencyKey');
      assert.equal(r.curl.includes('Idempotency-Key:'), keyed, `${method} ${path}: Idempotency-Key`);
      const data = /-d '((?:[^']|'\\'')*)'$/.exec(r.curl)?.[1];
      if (data !== undefined && r.curl.includes('Content-Type: application/json')) {
        assert.doesNotThrow(() => JSON.parse(data.replaceAll("'\\''", "'")), `${method} ${path}: -d is JSON`);
      }
    }

    // A body example the server accepts goes with -d, as JSON.
    const create = byOp.get('POST /merchant-accounts');
    const body = /-d '([^']*)'/.exec(create.curl)?.[1];
    assert.ok(body, create.curl);
    assert.equal(typeof JSON.parse(body), 'object');
    assert.ok(create.curl.includes('Content-Type: application/json'));
    if (name === 'desktop') {
      // The server accepts it.
      const made = await fetch(`${server.base}/merchant-accounts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${server.key}`, 'content-type': 'application/json' },
        body,
      });
      assert.equal(made.status, 201, await made.text());
    }

    // The copy button copies the command (clipboard allowed for this origin).
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.base });
    const section = page.locator('[data-op="POST /merchant-accounts"]');
    await section.locator('button.copy').click();
    await page.waitForFunction(
      () => document.querySelector('[data-op="POST /merchant-accounts"] button.copy')?.textContent === 'Copied',
    );
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    assert.equal(copied, create.curl);

    // Nothing wider than the window: long paths and code wrap or scroll in their own box.
    const { scrollWidth, innerWidth } = await page.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
    }));
    assert.ok(scrollWidth <= innerWidth, `scrollWidth ${scrollWidth} > innerWidth ${innerWidth}`);

    // Accessibility: axe-core, evaluated through the driver (the page's CSP admits only its own
    // script), on the whole page.
    await page.evaluate(AXE);
    const violations = await page.evaluate(async () => {
      // eslint-disable-next-line no-undef
      const result = await axe.run(document, { resultTypes: ['violations'] });
      return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
    });
    const serious = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(serious, [], JSON.stringify(serious, null, 2));

    assert.deepEqual(problems, []);
    // The first screen (the whole page is hundreds of operations long).
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(artifacts, `docs-${name}.png`) });
    await page.evaluate(() => document.querySelector('[data-op="POST /merchant-accounts"]').scrollIntoView());
    await page.screenshot({ path: join(artifacts, `docs-${name}-operation.png`) });
    await context.close();
  });
}
