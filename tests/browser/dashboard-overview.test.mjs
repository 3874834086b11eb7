// The dashboard's overview in a real browser, with realistic data: payments in several states
// (captured, partly refunded, authorized only, waiting for the buyer, cancelled, one in JPY), a
// subscription and a failing outbound endpoint. The figures on the page equal what the API
// lists for the same day and currency; a figure's link opens the list behind it; the range and
// currency switch; refused dates are shown next to their fields. checkPage on each state.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { startServer, startMerchant, createTransaction, api, browser, signedIn, checkPage, eventually } from './harness.mjs';

let server, merchant, chrome, context, page, failing;

/** The sandbox's Stripe API: with the secret key, or with `auth` (the publishable key). */
async function stripe(path, form, auth = `Bearer ${server.sk}`) {
  const r = await fetch(`${server.base}/sandbox/stripe${path}`, {
    method: 'POST',
    headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
  });
  const body = await r.json();
  if (!r.ok) throw new Error(`sandbox ${path}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

async function ok(r, status = 200) {
  assert.equal(r.status, status, JSON.stringify(r.body));
  return r.body;
}

/** A transaction the buyer approved with a Visa card (as Stripe.js confirms it), synced. */
async function approved(extra) {
  const tx = await createTransaction(server, merchant, extra);
  const pi = tx.additional_identifiers.payment_id;
  await stripe(`/v1/payment_intents/${pi}/confirm`, {
    client_secret: tx.payment_service_transaction_id, payment_method: 'pm_card_visa',
  }, `Basic ${Buffer.from(`${server.pk}:`).toString('base64')}`);
  return ok(await api(server, 'POST', `/transactions/${tx.id}/sync`));
}

/** An endpoint that always answers 500. */
async function brokenEndpoint() {
  const srv = createServer((req, res) => {
    req.resume();
    req.on('end', () => { res.writeHead(500); res.end('broken'); });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${srv.address().port}/hooks`, stop: () => new Promise((r) => srv.close(r)) };
}

/** The transactions of `currency` created today (UTC), from the API. */
async function apiToday(currency) {
  const day = new Date().toISOString().slice(0, 10);
  const r = await ok(await api(server, 'GET',
    `/transactions?limit=100&currency=${currency}&created_at_gte=${day}T00:00:00Z`));
  return r.items;
}

const APPROVED = ['authorization_succeeded', 'authorization_void_pending', 'authorization_voided',
  'capture_pending', 'capture_succeeded'];
const DECLINED = ['authorization_declined', 'authorization_failed'];

async function figure(id) {
  return Number(await page.getByTestId(id).first().getAttribute('data-value'));
}

function money(minor, currency) {
  return new Intl.NumberFormat('en-US', { style: 'currency', currency }).format(
    currency === 'JPY' ? minor : minor / 100);
}

before(async () => {
  server = await startServer(['--allow-private-webhook-targets',
    '--webhook-retry-base-ms', '300', '--webhook-retry-max-ms', '1500']);
  merchant = await startMerchant();
  chrome = await browser();
  ({ context, page } = await signedIn(chrome, server));
  failing = await brokenEndpoint();

  await ok(await api(server, 'POST', '/webhook-subscriptions', { url: failing.url, events: ['transaction.*'] }), 201);
  const big = await approved({ amount: 8900 });
  assert.equal(big.status, 'capture_succeeded');
  const refund = await api(server, 'POST', `/transactions/${big.id}/refunds`, { amount: 500 });
  assert.ok(refund.status < 300, JSON.stringify(refund.body));
  await approved({ amount: 1299 });
  const auth = await approved({ amount: 2000, intent: 'authorize' });
  assert.equal(auth.status, 'authorization_succeeded');
  await createTransaction(server, merchant, { amount: 700 });
  const cancelled = await createTransaction(server, merchant, { amount: 450 });
  await ok(await api(server, 'POST', `/transactions/${cancelled.id}/cancel`));
  const jpy = await approved({ amount: 1500, currency: 'JPY' });
  assert.equal(jpy.status, 'capture_succeeded');

  const product = await stripe('/v1/products', { name: 'Pro monthly' });
  const price = await stripe('/v1/prices', {
    product: product.id, currency: 'usd', unit_amount: '1200', 'recurring[interval]': 'year',
  });
  const customer = await stripe('/v1/customers', {
    email: 'sub@example.com', 'metadata[customid]': 'sub-user-1',
    payment_method: 'pm_card_visa', 'invoice_settings[default_payment_method]': 'pm_card_visa',
  });
  const sub = await stripe('/v1/subscriptions', { customer: customer.id, 'items[0][price]': price.id });
  assert.equal(sub.status, 'active');
});

after(async () => {
  await chrome?.close();
  await failing?.stop();
  await merchant?.stop();
  await server?.stop();
});

test('the overview shows what the API reports for today, in USD', async () => {
  await page.goto(`${server.base}/dashboard`);
  await page.waitForURL(/\/dashboard\/overview$/);
  await page.locator('#ov-range').selectOption('today');
  await Promise.all([page.waitForURL(/range=today/), page.getByRole('button', { name: 'Show' }).click()]);

  const items = await apiToday('USD');
  const captured = items.reduce((s, t) => s + t.captured_amount, 0);
  const refunded = items.reduce((s, t) => s + t.refunded_amount, 0);
  const approvedN = items.filter((t) => APPROVED.includes(t.status)).length;
  const declinedN = items.filter((t) => DECLINED.includes(t.status)).length;
  assert.equal(captured - refunded, 8900 + 1299 - 500);
  assert.equal(await figure('volume-net'), captured - refunded);
  assert.equal((await page.getByTestId('volume-net').locator('.figure-value').textContent()).trim(),
    money(captured - refunded, 'USD'));
  assert.equal(await figure('refunds'), refunded);
  assert.equal(await figure('approved'), approvedN);
  assert.equal(await figure('success-rate'), Math.floor((approvedN * 1000) / (approvedN + declinedN)));
  assert.equal(await figure('disputes'), 0);

  // The subscription arrives through Stripe's webhook; the failing endpoint's deliveries retry.
  await eventually('the subscriber', async () => {
    await page.reload();
    return (await figure('subscribers-active')) === 1;
  });
  assert.equal(await figure('mrr-USD'), 100, '$12.00 a year is $1.00 a month');
  await eventually('a failing delivery', async () => {
    await page.reload();
    return (await figure('deliveries-retrying')) + (await figure('deliveries-dead')) > 0;
  });
  const deliveries = (await ok(await api(server, 'GET', '/webhook-deliveries?limit=100'))).items;
  assert.ok(deliveries.some((d) => d.status === 'failed' || d.status === 'dead'));
  assert.ok(await figure('webhooks-received') >= 1, 'the sandbox connection received events');
  await checkPage(page, 'dashboard-overview');
});

test('a figure links to the list behind it', async () => {
  await page.goto(`${server.base}/dashboard/overview?range=today&currency=USD`);
  const href = await page.getByTestId('volume-net').getAttribute('href');
  const day = new Date().toISOString().slice(0, 10);
  assert.equal(href, `/dashboard/transactions?from=${day}&to=${day}&currency=USD&status=captured`);
  await Promise.all([page.waitForURL(/\/dashboard\/transactions\?/), page.getByTestId('volume-net').click()]);
  assert.equal(new URL(page.url()).searchParams.get('currency'), 'USD');
  await page.goto(`${server.base}/dashboard/overview?range=today`);
  await Promise.all([page.waitForURL(/\/dashboard\/outbound\/deliveries\?status=failed/),
    page.getByTestId('deliveries-retrying').click()]);
});

test('switching range and currency; refused dates are shown next to their fields', async () => {
  await page.goto(`${server.base}/dashboard/overview`);
  assert.equal(await page.locator('#ov-range').inputValue(), '7d');
  await page.locator('#ov-currency').selectOption('JPY');
  await Promise.all([page.waitForURL(/currency=JPY/), page.getByRole('button', { name: 'Show' }).click()]);
  const jpy = await apiToday('JPY');
  assert.equal(await figure('volume-net'), jpy.reduce((s, t) => s + t.captured_amount - t.refunded_amount, 0));
  assert.equal((await page.getByTestId('volume-net').locator('.figure-value').textContent()).trim(), '¥1,500');

  await page.locator('#ov-range').selectOption('30d');
  await Promise.all([page.waitForURL(/range=30d/), page.getByRole('button', { name: 'Show' }).click()]);
  assert.match(await page.getByTestId('overview-range').textContent(), / to /);
  assert.equal(await figure('volume-net'), 1500);

  await page.locator('#ov-range').selectOption('custom');
  await page.locator('#ov-from').fill('2026-02-01');
  await page.locator('#ov-to').fill('2026-01-01');
  await page.getByRole('button', { name: 'Show' }).click();
  await page.locator('#to-error').waitFor();
  assert.equal(await page.locator('#ov-to').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.locator('#ov-to').getAttribute('aria-describedby'), 'to-error');
  assert.equal(await page.locator('#ov-from').inputValue(), '2026-02-01');
  await checkPage(page, 'dashboard-overview-refused');

  await page.locator('#ov-from').fill('2020-01-01');
  await page.locator('#ov-to').fill('2020-01-31');
  await Promise.all([page.waitForURL(/from=2020-01-01/), page.getByRole('button', { name: 'Show' }).click()]);
  assert.equal(await page.getByTestId('overview-range').textContent(), '2020-01-01 to 2020-01-31 (UTC)');
  assert.equal(await figure('volume-net'), 0);
  await checkPage(page, 'dashboard-overview-empty');
});
