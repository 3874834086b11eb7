// The dashboard in a real browser (issue 9): log in; add a connection and read its webhook URL;
// a sandbox payment in the list and its timeline, refunded from the detail page; a
// dead-lettered webhook replayed; a SKU and a permission created; a customer found with the
// permission a sandbox purchase granted; an API key created and revoked. The operator is made
// with the real CLI (`tollgate operator create`). Each test saves a screenshot in
// artifacts/browser.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, startMerchant, createTransaction, api, browser, fillCard, shot, eventually, sandboxPost } from './harness.mjs';

const sandbox = (path, form) => sandboxPost(server, path, form);

const USER = 'admin';
const PASSWORD = 'browser test password';

let server, merchant, chrome, context, page;

/** Runs the CLI against the server's data directory; returns its stdout. */
function cli(args, input) {
  const env = { ...process.env };
  delete env.DATABASE_URL;
  const r = spawnSync(server.bin, [...args, '--data-dir', server.dataDir], { input, env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tollgate ${args.join(' ')}: ${r.status} ${r.stderr}`);
  return r.stdout;
}

/** SQL on the server's SQLite database (Node 20 has no SQLite module; python3 does). */
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

/** A transaction paid on the hosted page (in its own tab). */
async function paidTransaction(extra = {}) {
  const tx = await createTransaction(server, merchant, extra);
  const buyer = await context.newPage();
  await buyer.goto(tx.payment_method.approval_url);
  await fillCard(buyer, '4242 4242 4242 4242');
  await Promise.all([buyer.waitForURL(/\/return\?/), buyer.getByRole('button', { name: /Pay/ }).click()]);
  await buyer.close();
  return tx;
}

before(async () => {
  // Failing webhook events die after two quick attempts (the dead-letter test).
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-dashboard-'));
  const config = join(dir, 'tollgate.toml');
  writeFileSync(config, 'inbox_max_attempts = 2\ninbox_retry_base_ms = 100\n');
  server = await startServer(['--config', config]);
  merchant = await startMerchant();
  chrome = await browser();
  const out = cli(['operator', 'create', USER], `${PASSWORD}\n`);
  assert.match(out, /operator admin: created/);
  context = await chrome.newContext({ viewport: { width: 1100, height: 900 } });
  page = await context.newPage();
});

after(async () => {
  await chrome?.close();
  await merchant?.stop();
  await server?.stop();
});

test('log in (a dashboard page first sends to the login form)', async () => {
  await page.goto(`${server.base}/dashboard/catalogue`);
  assert.match(page.url(), /\/dashboard\/login\?next=%2Fdashboard%2Fcatalogue/);
  await page.getByLabel('Username').fill(USER);
  await page.getByLabel('Password').fill('wrong password');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByText('Wrong username or password.').waitFor();
  await page.getByLabel('Username').fill(USER);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForURL(/\/dashboard\/catalogue$/);
  await page.getByRole('heading', { name: 'Catalogue' }).waitFor();
  await page.getByTestId('sandbox-banner').waitFor();
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'tg_session');
  assert.ok(session.httpOnly);
  assert.equal(session.sameSite, 'Strict');
  assert.equal(session.path, '/dashboard');
  await shot(page, 'dashboard-login');
});

test('add a connection and read the webhook URL; check the sandbox key', async () => {
  await page.goto(`${server.base}/dashboard/connections`);
  await page.getByLabel('Name').fill('Browser test');
  await page.getByLabel(/Secret key/).fill('sk_test_browserconnection4242');
  await page.getByRole('button', { name: 'Save connection' }).click();
  await page.getByText('Connection saved.').waitFor();
  const url = await page.getByTestId('webhook-url').inputValue();
  const id = /\/dashboard\/connections\/([^?]+)/.exec(page.url())[1];
  assert.equal(url, `${server.base}/webhooks/stripe/${id}`);
  assert.equal(await page.getByTestId('secret-key').textContent(), 'sk_test_…4242');
  assert.ok(!(await page.content()).includes('sk_test_browserconnection4242'));
  await page.getByTestId('connection-status').getByText('Waiting for the webhook signing secret').waitFor();
  await page.getByText('payment_intent.succeeded').first().waitFor();
  await page.getByLabel(/Signing secret/).fill('whsec_browsertest123456');
  await page.getByRole('button', { name: 'Save signing secret' }).click();
  await page.getByText('Webhook signing secret saved.').waitFor();
  const got = await api(server, 'GET', `/connections/${id}`);
  assert.equal(got.body.status, 'active');
  await shot(page, 'dashboard-connection');
  // The key-permission check, on the sandbox's connection (which answers offline).
  await page.goto(`${server.base}/dashboard/connections`);
  await page.getByRole('link', { name: 'Stripe sandbox' }).click();
  await page.getByRole('link', { name: 'Check key permissions' }).click();
  await page.getByTestId('verification').waitFor();
  await page.getByText('Credentials valid: yes').waitFor();
  await shot(page, 'dashboard-connection-verify');
});

test('a sandbox payment is listed with its timeline and refunded from the detail page', async () => {
  const tx = await paidTransaction();
  await page.setViewportSize({ width: 375, height: 800 });
  await page.goto(`${server.base}/dashboard/transactions?status=capture_succeeded`);
  await page.getByRole('link', { name: tx.id }).click();
  await page.getByTestId('status').getByText('Paid').waitFor();
  const timeline = page.getByTestId('timeline');
  await timeline.getByText('Created').first().waitFor();
  assert.ok((await timeline.locator('li').count()) >= 2);
  await shot(page, 'dashboard-transaction-phone');
  await page.getByRole('button', { name: 'Review the refund' }).click();
  await page.getByTestId('confirm-sentence').getByText('Refund $12.99 of $12.99 captured.').waitFor();
  await page.getByRole('button', { name: 'Refund $12.99' }).click();
  await page.getByText('Refund requested.').waitFor();
  await eventually('the refund', async () => {
    const got = await api(server, 'GET', `/transactions/${tx.id}`);
    return got.body.refunded_amount === 1299;
  });
  await page.reload();
  await page.getByTestId('status').getByText('Refunded', { exact: true }).waitFor();
  assert.ok(!(await page.getByRole('button', { name: 'Refund' }).count()));
  await shot(page, 'dashboard-transaction-refunded');
  await page.setViewportSize({ width: 1100, height: 900 });
});

test('a dead-lettered webhook is shown and replayed', async () => {
  const tx = await paidTransaction({ intent: 'authorize' });
  await eventually('the authorization', async () => {
    const got = await api(server, 'GET', `/transactions/${tx.id}`);
    return got.body.status === 'authorization_succeeded';
  });
  // Break the stored state so that applying the next event fails (as a bug would).
  const [[good]] = sql('SELECT state FROM transactions WHERE id = ?', [tx.id]);
  sql("UPDATE transactions SET state = 'broken' WHERE id = ?", [tx.id]);
  await sandbox(`/v1/payment_intents/${tx.additional_identifiers.payment_id}/capture`, {});
  const dead = await eventually('a dead event', async () => {
    const r = await api(server, 'GET', '/webhook-events?status=dead');
    return r.body.items[0];
  });
  await page.goto(`${server.base}/dashboard/webhooks?status=dead`);
  await page.getByRole('link', { name: dead.event_type }).first().click();
  await page.getByTestId('status').getByText('Failed — dead-lettered').waitFor();
  await page.getByText(dead.stripe_event_id).first().waitFor();
  await shot(page, 'dashboard-webhook-dead');
  sql('UPDATE transactions SET state = ? WHERE id = ?', [good, tx.id]);
  const url = page.url();
  await page.getByRole('button', { name: 'Replay' }).click();
  await page.getByText('The event was queued to be applied again.').waitFor();
  await eventually('the replayed event to apply', async () => {
    await page.goto(url);
    return (await page.getByTestId('status').textContent()) === 'Applied';
  });
  await shot(page, 'dashboard-webhook-replayed');
});

test('create a SKU and a permission; a sandbox purchase grants it to the customer', async () => {
  await page.goto(`${server.base}/dashboard/catalogue`);
  await page.getByLabel('Identifier').first().fill('lifetime');
  await page.getByLabel(/Stripe product/).fill('prod_browser');
  await page.locator('form[action="/dashboard/skus"] select[name=kind]').selectOption('one_time');
  await page.getByRole('button', { name: 'Create SKU' }).click();
  await page.getByText('SKU saved.').waitFor();
  const form = page.locator('form[action="/dashboard/permissions"]');
  await form.getByLabel('Identifier').fill('premium');
  await form.getByLabel('lifetime', { exact: true }).check();
  await form.getByRole('button', { name: 'Create permission' }).click();
  await page.getByText('Permission saved.').waitFor();
  await shot(page, 'dashboard-catalogue');
  const skus = await api(server, 'GET', '/v1/permissions/definitions/premium');
  assert.deepEqual(skus.body.skus, ['lifetime']);

  const customer = await sandbox('/v1/customers', { email: 'buyer@example.com', 'metadata[customid]': 'user-42' });
  await sandbox('/v1/payment_intents', {
    amount: '4900', currency: 'usd', customer: customer.id, 'metadata[sku]': 'lifetime',
    payment_method: 'pm_card_visa', confirm: 'true', return_url: 'https://example.com/r',
  });
  await eventually('the permission', async () => {
    const r = await api(server, 'GET', '/v1/subscribers/user-42');
    return r.status === 200 && r.body.permissions.some((p) => p.identifier === 'premium' && p.is_valid);
  });
  await page.goto(`${server.base}/dashboard/customers`);
  await page.getByLabel(/Stripe customer/).fill(customer.id);
  await page.getByRole('button', { name: 'Find' }).click();
  await page.getByRole('link', { name: 'user-42' }).click();
  await page.waitForURL(/\/dashboard\/customers\/user-42$/);
  assert.equal(await page.getByTestId('state-premium').textContent(), 'lifetime');
  await page.getByText(customer.id).first().waitFor();
  await shot(page, 'dashboard-customer');
});

test('create an API key (shown once) and revoke it', async () => {
  await page.goto(`${server.base}/dashboard/keys`);
  await page.getByLabel('Name').fill('from the browser');
  await page.getByRole('button', { name: 'Create key' }).click();
  const key = await page.getByTestId('new-key').inputValue();
  assert.match(key, /^tg_sk_/);
  await shot(page, 'dashboard-key-created');
  const ok = await fetch(`${server.base}/transactions`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal(ok.status, 200);
  await page.goto(`${server.base}/dashboard/keys`);
  assert.ok(!(await page.content()).includes(key), 'shown once only');
  const id = key.slice('tg_sk_'.length).split('_')[0];
  const row = page.locator(`tr[data-key-id="${id}"]`);
  await row.getByLabel('sure').check();
  await row.getByRole('button', { name: 'Revoke' }).click();
  await page.getByText('API key revoked.').waitFor();
  const refused = await fetch(`${server.base}/transactions`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal(refused.status, 401);
  await shot(page, 'dashboard-key-revoked');
});
