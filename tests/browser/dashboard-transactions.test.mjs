// The dashboard's transactions, search and login in a real browser (issue 25): a refunded
// payment shows "Refunded" and its net amount; a refund typed as "5.00" EUR is shown back
// ("Refund €5.00 of €89.00 captured.") and refunds 500 cents; a bad amount ("5.001", "abc")
// keeps the form with the message next to the field; the search box finds each kind of id;
// a failed login keeps the username; the hosted payment page and the dashboard show the
// merchant account's display name. Every page is checked at 390 and 1280 px (no sideways
// scroll, no serious axe-core violation, screenshots in artifacts/browser).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { startServer, startMerchant, createTransaction, api, browser, fillCard, signedIn, checkPage, eventually } from './harness.mjs';

let server, merchant, chrome, context, page;

/** SQL on the server's SQLite database (python3's sqlite3). */
function sql(statement, params = []) {
  const script = 'import sqlite3,sys,json\n'
    + 'c=sqlite3.connect(sys.argv[1],timeout=30)\n'
    + 'r=c.execute(sys.argv[2],json.loads(sys.argv[3])).fetchall()\n'
    + 'c.commit()\nprint(json.dumps(r))';
  const r = spawnSync('python3', ['-c', script, join(server.dataDir, 'tollgate.db'), statement, JSON.stringify(params)],
    { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`sql: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** The sandbox's Stripe API with its secret key. */
async function stripe(method, path, form) {
  const r = await fetch(`${server.base}/sandbox/stripe${path}`, {
    method,
    headers: { authorization: `Bearer ${server.sk}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: form ? new URLSearchParams(form).toString() : undefined,
  });
  const body = await r.json();
  if (!r.ok) throw new Error(`sandbox ${path}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

/** A payment made on the hosted page with a Visa card (in its own tab). */
async function paid(extra = {}) {
  const tx = await createTransaction(server, merchant, extra);
  const buyer = await context.newPage();
  await buyer.goto(tx.payment_method.approval_url);
  await fillCard(buyer, '4242 4242 4242 4242');
  await Promise.all([buyer.waitForURL(/\/return\?/), buyer.getByRole('button', { name: /Pay/ }).click()]);
  await buyer.close();
  await eventually('the capture', async () => (await api(server, 'GET', `/transactions/${tx.id}`)).body.status === 'capture_succeeded');
  return (await api(server, 'GET', `/transactions/${tx.id}`)).body;
}

/** Types `q` in the search box of the page shown and submits it. */
async function search(q) {
  await page.getByRole('searchbox', { name: 'Search' }).fill(q);
  await Promise.all([
    page.waitForEvent('framenavigated', (f) => f === page.mainFrame()),
    page.getByRole('searchbox', { name: 'Search' }).press('Enter'),
  ]);
  await page.waitForLoadState('load');
}

before(async () => {
  server = await startServer();
  merchant = await startMerchant();
  chrome = await browser();
  // The merchant account's display name, shown to buyers and operators instead of its id.
  sql("UPDATE merchant_accounts SET display_name = 'Acme Coffee' WHERE id = 'default'");
  ({ context, page } = await signedIn(chrome, server));
});

after(async () => {
  await chrome?.close();
  await merchant?.stop();
  await server?.stop();
});

test('the hosted payment page and the dashboard show the display name, not the id', async () => {
  const tx = await createTransaction(server, merchant, { amount: 1500, currency: 'EUR' });
  const buyer = await context.newPage();
  await buyer.goto(tx.payment_method.approval_url);
  await buyer.getByRole('heading', { name: 'Pay Acme Coffee' }).waitFor();
  await buyer.close();
  await page.goto(`${server.base}/dashboard/transactions`);
  assert.equal(await page.getByTestId('account-name').textContent(), 'Acme Coffee');
});

test('a refunded payment shows "Refunded" and its net amount in the list', async () => {
  const full = await paid({ amount: 8900, currency: 'EUR', external_identifier: 'order-refunded', customid: 'anna' });
  const r = await api(server, 'POST', `/transactions/${full.id}/refunds`, {});
  assert.equal(r.status, 201);
  const part = await paid({ amount: 8900, currency: 'EUR', external_identifier: 'order-part' });
  assert.equal((await api(server, 'POST', `/transactions/${part.id}/refunds`, { amount: 900 })).status, 201);
  await page.goto(`${server.base}/dashboard/transactions`);
  const row = page.locator(`tr[data-id="${full.id}"]`);
  assert.equal(await row.getByTestId('tx-status').textContent(), 'Refunded');
  assert.equal(await row.getByTestId('tx-net').textContent(), '€0.00');
  await row.getByText('of €89.00 paid').waitFor();
  await row.getByText('Visa •••• 4242').waitFor();
  const partRow = page.locator(`tr[data-id="${part.id}"]`);
  assert.equal(await partRow.getByTestId('tx-status').textContent(), 'Partially refunded');
  assert.equal(await partRow.getByTestId('tx-net').textContent(), '€80.00');
  // Never a green "paid" badge for money given back.
  assert.ok(!(await row.locator('.tone-ok').count()));
  await checkPage(page, 'dashboard-transactions-list');
  // The overview's links: a status group, dates and a currency.
  const today = new Date().toISOString().slice(0, 10);
  await page.goto(`${server.base}/dashboard/transactions?status=refunded&from=${today}&to=${today}&currency=EUR`);
  await page.locator(`tr[data-id="${full.id}"]`).waitFor();
  await page.locator(`tr[data-id="${part.id}"]`).waitFor();
  assert.equal(await page.getByRole('combobox', { name: 'Status' }).inputValue(), 'refunded');
  await page.goto(`${server.base}/dashboard/transactions/${full.id}`);
  assert.equal(await page.getByTestId('status').textContent(), 'Refunded');
  await checkPage(page, 'dashboard-transaction-refunded-detail');
});

test('a decimal refund of "5.00" EUR is shown back, then refunds 500', async () => {
  const tx = await paid({ amount: 8900, currency: 'EUR', external_identifier: 'order-decimal' });
  await page.goto(`${server.base}/dashboard/transactions/${tx.id}`);
  assert.equal(await page.getByTestId('status').textContent(), 'Paid');
  await checkPage(page, 'dashboard-transaction-detail');
  await page.getByLabel(/Amount to refund/).fill('5.00');
  await page.getByRole('button', { name: 'Review the refund' }).click();
  assert.equal(await page.getByTestId('confirm-sentence').textContent(), 'Refund €5.00 of €89.00 captured.');
  assert.equal((await api(server, 'GET', `/transactions/${tx.id}`)).body.refunded_amount, 0, 'nothing before confirming');
  await checkPage(page, 'dashboard-transaction-confirm-refund');
  await page.getByRole('button', { name: 'Refund €5.00' }).click();
  await page.getByText('Refund requested.').waitFor();
  const after = (await api(server, 'GET', `/transactions/${tx.id}`)).body;
  assert.equal(after.refunded_amount, 500);
  assert.equal(await page.getByTestId('status').textContent(), 'Partially refunded');
  assert.equal(await page.getByTestId('net').textContent(), '€84.00');
});

test('a bad amount keeps the form and shows the message next to the field', async () => {
  const tx = await paid({ amount: 8900, currency: 'EUR', external_identifier: 'order-bad' });
  await page.goto(`${server.base}/dashboard/transactions/${tx.id}`);
  for (const [typed, message] of [
    ['5.001', 'EUR has 2 decimal places at most, such as 12.99.'],
    ['abc', 'Type the amount as a number, such as 12.99.'],
  ]) {
    await page.getByLabel(/Amount to refund/).fill(typed);
    await page.getByLabel(/Reason/).fill('damaged in transit');
    await page.getByRole('button', { name: 'Review the refund' }).click();
    const field = page.getByLabel(/Amount to refund/);
    assert.equal(await field.inputValue(), typed, 'the typed value is kept');
    assert.equal(await field.getAttribute('aria-invalid'), 'true');
    assert.equal(await field.getAttribute('aria-describedby'), 'refund_amount-error');
    assert.equal(await page.locator('#refund_amount-error').textContent(), message);
    assert.equal(await page.getByLabel(/Reason/).inputValue(), 'damaged in transit');
    assert.ok(!(await page.getByText('Not done').count()));
    await checkPage(page, `dashboard-transaction-refused-${typed === 'abc' ? 'text' : 'decimals'}`);
  }
  assert.equal((await api(server, 'GET', `/transactions/${tx.id}`)).body.refunded_amount, 0);
  // The list's amount filter is refused in place too.
  await page.goto(`${server.base}/dashboard/transactions?currency=EUR&min=1.234`);
  assert.equal(await page.locator('#min-error').textContent(), 'EUR has 2 decimal places at most, such as 12.99.');
  await checkPage(page, 'dashboard-transactions-refused-filter');
});

test('search finds each kind of id', async () => {
  const tx = await paid({ amount: 4200, currency: 'USD', external_identifier: 'order-find-me', customid: 'searcher-1' });
  const pi = tx.additional_identifiers.payment_id;
  const ch = (await stripe('GET', `/v1/payment_intents/${pi}`)).latest_charge;
  const refund = (await api(server, 'POST', `/transactions/${tx.id}/refunds`, { amount: 100 })).body;
  const re = refund.payment_service_refund_id;
  assert.match(re, /^re_/);
  // Two customers linked to Stripe customers.
  const cus = [];
  for (const customid of ['searcher-1', 'searcher-2']) {
    const c = await stripe('POST', '/v1/customers', { email: `${customid}@example.com` });
    const r = await api(server, 'POST', '/v1/connect_stripe', { customid, customerid: c.id });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    cus.push(c.id);
  }
  const evt = await eventually('a Stripe event received', async () => {
    const r = await api(server, 'GET', '/webhook-events?limit=100');
    return r.body.items.find((e) => e.stripe_event_id.startsWith('evt_'));
  });
  await page.goto(`${server.base}/dashboard/transactions`);
  const txPath = `/dashboard/transactions/${tx.id}`;
  for (const q of [tx.id, 'order-find-me', pi, ch, re]) {
    await search(q);
    assert.equal(new URL(page.url()).pathname, txPath, `${q} finds the transaction`);
  }
  await search(cus[1]);
  assert.equal(new URL(page.url()).pathname, '/dashboard/customers/searcher-2');
  await search('searcher-1');
  assert.equal(new URL(page.url()).pathname, '/dashboard/customers/searcher-1');
  await search(evt.stripe_event_id);
  assert.equal(new URL(page.url()).pathname, `/dashboard/webhooks/${evt.id}`);
  // Several matches: a page grouped by kind.
  await search('searcher');
  assert.equal(await page.getByTestId('search-customer').count(), 2);
  await page.getByRole('heading', { name: 'Customers' }).waitFor();
  await checkPage(page, 'dashboard-search-results');
  await search('nothing-like-this');
  await page.getByTestId('search-none').waitFor();
  await checkPage(page, 'dashboard-search-none');
});

test('a failed login keeps the username and says why next to the form', async () => {
  const other = await chrome.newContext({ viewport: { width: 1280, height: 800 } });
  const login = await other.newPage();
  await login.goto(`${server.base}/dashboard/login`);
  await login.getByLabel('Username').fill('operator');
  await login.getByLabel('Password').fill('not the password');
  await login.getByRole('button', { name: 'Log in' }).click();
  await login.getByTestId('login-error').getByText('Wrong username or password.').waitFor();
  assert.equal(await login.getByLabel('Username').inputValue(), 'operator');
  assert.equal(await login.getByLabel('Password').inputValue(), '');
  assert.equal(await login.getByLabel('Username').getAttribute('aria-describedby'), 'login-error');
  await checkPage(login, 'dashboard-login-failed');
  await other.close();
});
