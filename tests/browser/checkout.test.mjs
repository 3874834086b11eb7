// The sandbox's hosted Checkout page (issue 6) in a real browser: pay with 4242 and land on
// success_url; a declined card shows Stripe's message and another card then pays; 3-D Secure on
// the way. The sandbox is the one `tollgate serve` mounts at /sandbox/stripe. Screenshots go to
// artifacts/browser.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, startMerchant, browser, fillCard, shot } from './harness.mjs';

let server, merchant, chrome, stripeBase;

before(async () => {
  server = await startServer();
  merchant = await startMerchant();
  chrome = await browser();
  stripeBase = `${server.base}/sandbox/stripe`;
});

after(async () => {
  await chrome?.close();
  await merchant?.stop();
  await server?.stop();
});

/** A Stripe API call to the sandbox (form-encoded, as Stripe's libraries send it). */
async function stripe(method, path, params = {}) {
  const body = new URLSearchParams(params).toString();
  const r = await fetch(stripeBase + path + (method === 'GET' && body ? `?${body}` : ''), {
    method,
    headers: { authorization: `Bearer ${server.sk}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: method === 'GET' ? undefined : body,
  });
  const json = await r.json();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

async function newSession(extra = {}) {
  const price = await stripe('POST', '/v1/prices', {
    currency: 'usd', unit_amount: '2450', 'product_data[name]': 'Sandbox hoodie',
  });
  return stripe('POST', '/v1/checkout/sessions', {
    mode: 'payment',
    'line_items[0][price]': price.id,
    'line_items[0][quantity]': '1',
    success_url: `${merchant.url}?session_id={CHECKOUT_SESSION_ID}`,
    cancel_url: `${merchant.url}?cancelled=1`,
    ...extra,
  });
}

async function open(cs, viewport = { width: 1024, height: 800 }) {
  const context = await chrome.newContext({ viewport });
  const page = await context.newPage();
  const resp = await page.goto(cs.url);
  assert.equal(resp.status(), 200);
  return page;
}

function landedFor(cs) {
  return merchant.landed.find((u) => u.searchParams.get('session_id') === cs.id);
}

test('pay with 4242 on a phone and land on success_url; the session is complete', async () => {
  const cs = await newSession();
  assert.ok(cs.url.startsWith(`${stripeBase}/_sandbox/checkout/cs_test_`), cs.url);
  const page = await open(cs, { width: 375, height: 740 });
  await page.getByText('Sandbox hoodie').waitFor();
  await page.getByText('$24.50').first().waitFor();
  // Nothing overflows the phone's width.
  const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(scrollWidth <= 375, `page is ${scrollWidth}px wide`);
  await page.getByLabel('Email').fill('buyer@example.com');
  await fillCard(page, '4242 4242 4242 4242');
  await page.getByLabel('Name on card').fill('Browser Buyer');
  await shot(page, 'checkout-4242-phone-filled');
  await Promise.all([
    page.waitForURL(/\/return\?session_id=/),
    page.getByRole('button', { name: 'Pay $24.50' }).click(),
  ]);
  await shot(page, 'checkout-4242-landed');
  assert.equal(new URL(page.url()).searchParams.get('session_id'), cs.id);
  assert.ok(landedFor(cs), 'the merchant saw the success_url request');
  const got = await stripe('GET', `/v1/checkout/sessions/${cs.id}`);
  assert.equal(got.status, 'complete');
  assert.equal(got.payment_status, 'paid');
  assert.equal(got.customer_details.email, 'buyer@example.com');
  assert.equal(got.customer_details.name, 'Browser Buyer');
  const pi = await stripe('GET', `/v1/payment_intents/${got.payment_intent}`);
  assert.equal(pi.status, 'succeeded');
  assert.equal(pi.amount, 2450);
  // The link is spent: the page now says so.
  await page.goto(cs.url);
  await page.getByText('already been paid').waitFor();
});

test('a declined card shows the message and keeps the buyer on the page; another card pays', async () => {
  const cs = await newSession();
  const page = await open(cs);
  await page.getByLabel('Email').fill('decline@example.com');
  await fillCard(page, '4000 0000 0000 0002');
  await page.getByRole('button', { name: /Pay/ }).click();
  await page.getByRole('alert').getByText('Your card was declined.').waitFor();
  await shot(page, 'checkout-decline-message');
  assert.ok(page.url().startsWith(cs.url), page.url());
  assert.equal(await page.getByLabel('Email').inputValue(), 'decline@example.com');
  assert.equal(await page.getByLabel('Card number').inputValue(), '');
  const mid = await stripe('GET', `/v1/checkout/sessions/${cs.id}`);
  assert.equal(mid.status, 'open');
  assert.equal(landedFor(cs), undefined);

  await fillCard(page, '4242424242424242');
  await Promise.all([
    page.waitForURL(/\/return\?session_id=/),
    page.getByRole('button', { name: /Pay/ }).click(),
  ]);
  await shot(page, 'checkout-decline-then-paid');
  const got = await stripe('GET', `/v1/checkout/sessions/${cs.id}`);
  assert.equal(got.status, 'complete');
  assert.equal(got.payment_status, 'paid');
  assert.equal(got.payment_intent, mid.payment_intent);
});

test('3-D Secure: the authentication page, then success_url', async () => {
  const cs = await newSession();
  const page = await open(cs);
  await page.getByLabel('Email').fill('3ds@example.com');
  await fillCard(page, '4000 0025 0000 3155');
  await Promise.all([
    page.waitForURL(/_sandbox\/authenticate\//),
    page.getByRole('button', { name: /Pay/ }).click(),
  ]);
  await shot(page, 'checkout-3ds-challenge');
  await Promise.all([
    page.waitForURL(/\/return\?session_id=/),
    page.getByRole('button', { name: 'Complete' }).click(),
  ]);
  const got = await stripe('GET', `/v1/checkout/sessions/${cs.id}`);
  assert.equal(got.status, 'complete');
  assert.equal(got.payment_status, 'paid');
});

test('the back link goes to cancel_url; an expired session shows the expired page', async () => {
  const cs = await newSession();
  const page = await open(cs);
  await Promise.all([page.waitForURL(/cancelled=1/), page.getByRole('link', { name: /Back/ }).click()]);
  await stripe('POST', `/v1/checkout/sessions/${cs.id}/expire`);
  const resp = await page.goto(cs.url);
  assert.equal(resp.status(), 410);
  await page.getByText('This checkout session has expired.').waitFor();
  await shot(page, 'checkout-expired');
});

test('3-D Secure failed: back on the page with the message, then 4242 pays', async () => {
  const cs = await newSession();
  const page = await open(cs);
  await page.getByLabel('Email').fill('3ds-fail@example.com');
  await fillCard(page, '4000 0025 0000 3155');
  await Promise.all([
    page.waitForURL(/_sandbox\/authenticate\//),
    page.getByRole('button', { name: /Pay/ }).click(),
  ]);
  await Promise.all([
    page.waitForURL(/\/_sandbox\/checkout\/[^/]+\/return/),
    page.getByRole('button', { name: 'Fail' }).click(),
  ]);
  await page.getByRole('alert').getByText(/unable to authenticate your payment method/).waitFor();
  await shot(page, 'checkout-3ds-failed');
  assert.equal(await page.getByLabel('Email').inputValue(), '3ds-fail@example.com');
  assert.equal((await stripe('GET', `/v1/checkout/sessions/${cs.id}`)).status, 'open');
  await fillCard(page, '4242 4242 4242 4242');
  await Promise.all([
    page.waitForURL(/\/return\?session_id=/),
    page.getByRole('button', { name: /Pay/ }).click(),
  ]);
  const got = await stripe('GET', `/v1/checkout/sessions/${cs.id}`);
  assert.equal(got.status, 'complete');
  assert.equal(got.payment_status, 'paid');
});

test('subscription mode: subscribe with 4242; the subscription is active', async () => {
  const plan = await stripe('POST', '/v1/prices', {
    currency: 'usd', unit_amount: '1200', 'recurring[interval]': 'month', 'product_data[name]': 'Sandbox Pro',
  });
  const cs = await stripe('POST', '/v1/checkout/sessions', {
    mode: 'subscription',
    'line_items[0][price]': plan.id,
    'line_items[0][quantity]': '1',
    success_url: `${merchant.url}?session_id={CHECKOUT_SESSION_ID}`,
  });
  const page = await open(cs, { width: 390, height: 844 });
  await page.getByText('$12.00 / month').waitFor();
  await page.getByLabel('Email').fill('subscriber@example.com');
  await fillCard(page, '4242 4242 4242 4242');
  await shot(page, 'checkout-subscription-filled');
  await Promise.all([
    page.waitForURL(/\/return\?session_id=/),
    page.getByRole('button', { name: 'Subscribe' }).click(),
  ]);
  const got = await stripe('GET', `/v1/checkout/sessions/${cs.id}`);
  assert.equal(got.status, 'complete');
  assert.equal(got.payment_status, 'paid');
  const sub = await stripe('GET', `/v1/subscriptions/${got.subscription}`);
  assert.equal(sub.status, 'active');
  assert.equal(sub.customer, got.customer);
  const cus = await stripe('GET', `/v1/customers/${got.customer}`);
  assert.equal(cus.email, 'subscriber@example.com');
});
