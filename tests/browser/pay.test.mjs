// The hosted payment page in a real browser (issue 4): pay, decline then retry, 3-D Secure
// approved and failed, authorize-only, expiry. Each test saves a screenshot in artifacts/browser.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, startMerchant, createTransaction, api, browser, fillCard, shot } from './harness.mjs';

let server, merchant, chrome;

before(async () => {
  server = await startServer();
  merchant = await startMerchant();
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  await merchant?.stop();
  await server?.stop();
});

async function open(tx, viewport = { width: 1024, height: 800 }) {
  const context = await chrome.newContext({ viewport });
  const page = await context.newPage();
  await page.goto(tx.payment_method.approval_url);
  return page;
}

function landedFor(tx) {
  return merchant.landed.find((u) => u.searchParams.get('transaction_id') === tx.id);
}

test('pay with 4242 and land on redirect_url with capture_succeeded', async () => {
  const tx = await createTransaction(server, merchant);
  const page = await open(tx, { width: 375, height: 740 });
  await assert.doesNotReject(page.getByText('$12.99').first().waitFor());
  await fillCard(page, '4242 4242 4242 4242');
  await shot(page, 'pay-4242-phone-filled');
  await Promise.all([page.waitForURL(/\/return\?/), page.getByRole('button', { name: /Pay/ }).click()]);
  await shot(page, 'pay-4242-landed');
  const landed = landedFor(tx);
  assert.equal(landed.searchParams.get('transaction_status'), 'capture_succeeded');
  const got = await api(server, 'GET', `/transactions/${tx.id}`);
  assert.equal(got.body.status, 'capture_succeeded');
  assert.equal(got.body.captured_amount, 1299);
  // The link is spent: opening it again shows the plain error page.
  const again = await page.goto(tx.payment_method.approval_url);
  assert.equal(again.status(), 404);
  await page.getByText('Payment link not valid').waitFor();
});

test('an authorize-intent payment lands with authorization_succeeded', async () => {
  const tx = await createTransaction(server, merchant, { intent: 'authorize' });
  const page = await open(tx);
  await fillCard(page, '4242424242424242');
  await Promise.all([page.waitForURL(/\/return\?/), page.getByRole('button', { name: /Pay/ }).click()]);
  await shot(page, 'authorize-landed');
  assert.equal(landedFor(tx).searchParams.get('transaction_status'), 'authorization_succeeded');
});

test('a declined card shows Stripe\'s message, then another card succeeds on the same page', async () => {
  const tx = await createTransaction(server, merchant);
  const page = await open(tx);
  await fillCard(page, '4000000000000002');
  await page.getByRole('button', { name: /Pay/ }).click();
  await page.getByText('Your card was declined.').waitFor();
  await shot(page, 'decline-message');
  const mid = await api(server, 'POST', `/transactions/${tx.id}/sync`);
  assert.equal(mid.body.status, 'buyer_approval_pending');
  assert.equal(mid.body.raw_response_code, 'generic_decline');
  await fillCard(page, '4242424242424242');
  await Promise.all([page.waitForURL(/\/return\?/), page.getByRole('button', { name: /Pay/ }).click()]);
  await shot(page, 'decline-then-success');
  assert.equal(landedFor(tx).searchParams.get('transaction_status'), 'capture_succeeded');
});

test('3-D Secure approved', async () => {
  const tx = await createTransaction(server, merchant);
  const page = await open(tx);
  await fillCard(page, '4000002500003155');
  await Promise.all([page.waitForURL(/_sandbox\/authenticate/), page.getByRole('button', { name: /Pay/ }).click()]);
  await shot(page, '3ds-challenge');
  await Promise.all([page.waitForURL(/\/return\?/), page.getByRole('button', { name: 'Complete' }).click()]);
  await shot(page, '3ds-approved-landed');
  assert.equal(landedFor(tx).searchParams.get('transaction_status'), 'capture_succeeded');
});

test('3-D Secure failed: back on the page with a message, still buyer_approval_pending', async () => {
  const tx = await createTransaction(server, merchant);
  const page = await open(tx);
  await fillCard(page, '4000002500003155');
  await Promise.all([page.waitForURL(/_sandbox\/authenticate/), page.getByRole('button', { name: /Pay/ }).click()]);
  await Promise.all([page.waitForURL(/\/pay\/[^/]+\?/), page.getByRole('button', { name: 'Fail' }).click()]);
  await page.getByText(/unable to authenticate your payment method/).waitFor();
  await shot(page, '3ds-failed-back-on-page');
  const got = await api(server, 'GET', `/transactions/${tx.id}`);
  assert.equal(got.body.status, 'buyer_approval_pending');
  assert.equal(landedFor(tx), undefined);
});

test('an expired approval shows the expired page; the transaction is authorization_failed', async () => {
  const expires = new Date(Date.now() + 1500).toISOString();
  const tx = await createTransaction(server, merchant, { approval_expires_at: expires });
  await new Promise((r) => setTimeout(r, 2500));
  const context = await chrome.newContext();
  const page = await context.newPage();
  const resp = await page.goto(tx.payment_method.approval_url);
  await page.getByText('Payment link expired').or(page.getByText('Payment link not valid')).waitFor();
  await shot(page, 'expired');
  assert.ok([404, 410].includes(resp.status()));
  const got = await api(server, 'GET', `/transactions/${tx.id}`);
  assert.equal(got.body.status, 'authorization_failed');
  assert.equal(got.body.error_code, 'incomplete_buyer_approval');
});

test('a wrong token shows a plain error page that reveals nothing', async () => {
  const tx = await createTransaction(server, merchant);
  const context = await chrome.newContext();
  const page = await context.newPage();
  const resp = await page.goto(`${server.base}/pay/${tx.id}?token=wrong`);
  assert.equal(resp.status(), 404);
  const html = await page.content();
  assert.ok(!html.includes('12.99') && !html.includes(tx.id.slice(0, 8)));
  assert.equal(resp.headers()['referrer-policy'], 'no-referrer');
  await shot(page, 'wrong-token');
});
