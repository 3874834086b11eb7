// Stripe's customer portal from Tollgate in headless Chromium: a subscriber with an active
// subscription opens the portal from `POST /v1/subscribers/{customid}/portal-session` (the
// sandbox's hosted portal), cancels at the period end, and the permission stream (opened before,
// never reopened) pushes the permission as "cancelled, access until the period end"
// (entitlement 4, still valid); the portal's return link leads back to the app. axe-core finds
// no serious or critical violation on the portal pages. Screenshots: artifacts/browser/portal-*.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { execSync } from 'node:child_process';
import { startServer, startMerchant, browser, shot } from './harness.mjs';

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const CUSTOMID = 'portal-buyer';
let server, merchant, chrome, stripeBase;

async function api(method, path, body, key = server.key) {
  const r = await fetch(server.base + path, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: r.status, body: await r.json() };
}

async function stripe(method, path, params = {}) {
  const r = await fetch(stripeBase + path, {
    method,
    headers: { authorization: `Bearer ${server.sk}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: method === 'GET' ? undefined : new URLSearchParams(params).toString(),
  });
  const json = await r.json();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

/** The permission stream, read from node: every `permissions` event's data, as it arrives. */
function openStream(pk) {
  const events = [];
  const controller = new AbortController();
  const done = (async () => {
    const r = await fetch(`${server.base}/v1/permissions/stream?customid=${CUSTOMID}`, {
      headers: { authorization: `Bearer ${pk}`, accept: 'text/event-stream' },
      signal: controller.signal,
    });
    assert.equal(r.status, 200);
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of r.body) {
        buf += decoder.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
          if (/^event: ?permissions$/m.test(block) && data) events.push(JSON.parse(data));
        }
      }
    } catch (e) {
      if (e.name !== 'AbortError') throw e;
    }
  })();
  return { events, close: () => { controller.abort(); return done.catch(() => {}); } };
}

async function waitUntil(what, fn, ms = 20000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function axeClean(page, name) {
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const result = await axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help }));
  });
  const serious = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(serious, [], `${name}: ${JSON.stringify(serious, null, 2)}`);
}

const premium = (ev) => ev.permissions?.find((p) => p.identifier === 'premium');

before(async () => {
  server = await startServer();
  stripeBase = `${server.base}/sandbox/stripe`;
  merchant = await startMerchant();
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  await merchant?.stop();
  await server?.stop();
});

test('cancel at period end in the portal turns the permission to "cancelled, access until" without a reload', async () => {
  const product = await stripe('POST', '/v1/products', { name: 'Streaming' });
  const price = await stripe('POST', '/v1/prices', {
    product: product.id, currency: 'usd', unit_amount: '1200', 'recurring[interval]': 'month',
  });
  assert.equal((await api('POST', '/v1/skus', { identifier: 'streaming_monthly', store: 'stripe', product_id: product.id, kind: 'subscription' })).status, 201);
  assert.equal((await api('POST', '/v1/permissions/definitions', { identifier: 'premium', skus: ['streaming_monthly'] })).status, 201);
  const pk = execSync(`${server.bin} keys create --kind public --data-dir ${server.dataDir}`).toString().trim().split('\n').pop();
  assert.match(pk, /^tg_pk_/);

  const cus = await stripe('POST', '/v1/customers', {
    email: 'portal-buyer@example.com', 'metadata[customid]': CUSTOMID,
    payment_method: 'pm_card_visa', 'invoice_settings[default_payment_method]': 'pm_card_visa',
  });
  const sub = await stripe('POST', '/v1/subscriptions', { customer: cus.id, 'items[0][price]': price.id });
  assert.equal(sub.status, 'active');
  const periodEnd = sub.items.data[0].current_period_end;

  // The app's view: renewing (5), through the stream opened now and kept open.
  const stream = openStream(pk);
  try {
    await waitUntil('the renewing permission on the stream', () => {
      const last = stream.events.at(-1);
      return last && premium(last)?.entitlement === 5;
    });
    const seenBefore = stream.events.length;

    const session = await api('POST', `/v1/subscribers/${CUSTOMID}/portal-session`, { return_url: merchant.url });
    assert.equal(session.status, 200, JSON.stringify(session.body));
    assert.equal(session.body.customerid, cus.id);

    const context = await chrome.newContext({ viewport: { width: 390, height: 800 } });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(session.body.url);
    await page.getByRole('heading', { name: 'Manage your subscriptions' }).waitFor();
    await page.getByText('Streaming · $12.00 / month').waitFor();
    await axeClean(page, 'portal home');
    await shot(page, 'portal-home');

    await page.getByRole('link', { name: 'Cancel subscription' }).click();
    await page.getByRole('heading', { name: 'Cancel your subscription' }).waitFor();
    await page.getByLabel('Why are you canceling? (optional)').selectOption('too_expensive');
    await axeClean(page, 'portal cancel');
    await shot(page, 'portal-cancel');
    await page.getByRole('button', { name: 'Cancel subscription' }).click();
    await page.getByText('Your subscription will be canceled at the end of the billing period.').waitFor();
    await page.getByText(/Cancels on/).waitFor();
    await shot(page, 'portal-canceled');

    // Pushed on the same stream: still valid, cancelled, access until the period end.
    const ev = await waitUntil('entitlement 4 on the stream', () =>
      stream.events.slice(seenBefore).find((e) => premium(e)?.entitlement === 4));
    const p = premium(ev);
    assert.equal(p.is_valid, true);
    assert.equal(p.expires_date, periodEnd);
    const check = await api('GET', `/v1/permissions?customid=${CUSTOMID}`, undefined, pk);
    assert.equal(premium(check.body).entitlement, 4);
    const stripeSub = await stripe('GET', `/v1/subscriptions/${sub.id}`);
    assert.equal(stripeSub.cancel_at_period_end, true);
    assert.equal(stripeSub.cancellation_details.reason, 'cancellation_requested');
    assert.equal(stripeSub.cancellation_details.feedback, 'too_expensive');

    // Back to the app.
    await page.getByRole('link', { name: /Return to localhost/ }).click();
    await page.getByText('Thanks!').waitFor();
    assert.ok(merchant.landed.some((u) => u.pathname === '/return'), 'landed on the return URL');
    assert.deepEqual(errors, []);
    await context.close();
  } finally {
    await stream.close();
  }
});
