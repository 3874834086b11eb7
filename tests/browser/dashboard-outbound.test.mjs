// The dashboard's outbound webhooks, Stripe events, connections and API keys pages in a real
// browser: a failing endpoint (answering 500) shows its failure streak and its deliveries
// "Retrying"; an endpoint is created (its secret shown once), its secret rotated, a test event
// sent and received at a working endpoint with a signature made with the secret shown, then
// disabled; a refused form keeps its input; Stripe events filtered by connection and status;
// connections and keys with refused forms shown again. checkPage on every page (no sideways
// scroll at 390 px, axe-core clean, screenshots at both widths).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHmac } from 'node:crypto';
import { startServer, api, browser, signedIn, checkPage, eventually, sandboxPost } from './harness.mjs';

const sandbox = (path, form) => sandboxPost(server, path, form);

let server, chrome, context, page, failing, working;

/** A local endpoint: records each request (headers and raw body) and answers `status`. */
async function endpoint(status) {
  const got = [];
  const srv = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      got.push({ headers: req.headers, body });
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(status === 200 ? 'ok' : 'receiver is broken');
    });
  });
  await new Promise((ok) => srv.listen(0, '127.0.0.1', ok));
  return {
    url: `http://127.0.0.1:${srv.address().port}/hooks`,
    got,
    stop: () => new Promise((ok) => srv.close(ok)),
  };
}

/** Whether `signatures` (the webhook-signature header) holds one made with `secret`. */
function signedWith(secret, headers, body) {
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  const expected = createHmac('sha256', key)
    .update(`${headers['webhook-id']}.${headers['webhook-timestamp']}.${body}`)
    .digest('base64');
  return headers['webhook-signature'].split(' ').some((s) => s === `v1,${expected}`);
}

before(async () => {
  server = await startServer(['--allow-private-webhook-targets',
    '--webhook-retry-base-ms', '300', '--webhook-retry-max-ms', '1500']);
  chrome = await browser();
  ({ context, page } = await signedIn(chrome, server));
  failing = await endpoint(500);
  working = await endpoint(200);
});

after(async () => {
  await chrome?.close();
  await failing?.stop();
  await working?.stop();
  await server?.stop();
});

test('a failing endpoint shows its failure streak; its deliveries are "Retrying", not failed', async () => {
  const sub = await api(server, 'POST', '/webhook-subscriptions', { url: failing.url, events: ['transaction.*'] });
  assert.equal(sub.status, 201);
  const sent = await api(server, 'POST', `/webhook-subscriptions/${sub.body.id}/test`);
  assert.equal(sent.status, 202);
  await eventually('three refused attempts', () => failing.got.length >= 3);

  await page.goto(`${server.base}/dashboard/outbound`);
  const row = page.locator(`tr[data-endpoint-id="${sub.body.id}"]`);
  const streak = Number((await row.getByTestId('streak').textContent()).match(/(\d+) failed/)[1]);
  assert.ok(streak >= 3, `streak ${streak}`);
  await row.getByTestId('last-delivery').getByText('Refused (HTTP 500)').waitFor();
  await checkPage(page, 'dashboard-outbound-failing');

  await page.goto(`${server.base}/dashboard/outbound/deliveries?status=failed`);
  const delivery = page.getByRole('row', { name: /webhook\.test/ });
  await delivery.getByText('Retrying', { exact: true }).waitFor();
  await delivery.getByText(/next attempt/).waitFor();
  assert.equal(await page.locator('.pill.tone-bad').count(), 0, 'no red "Failed" while retrying');
  await checkPage(page, 'dashboard-outbound-deliveries-retrying');

  await delivery.getByRole('link', { name: 'webhook.test' }).click();
  await page.getByTestId('status').getByText('Retrying').waitFor();
  await page.getByTestId('next-attempt').waitFor();
  await page.getByText('receiver is broken').first().waitFor();
  await checkPage(page, 'dashboard-outbound-delivery-retrying');

  // The old addresses lead to the new pages.
  await page.goto(`${server.base}/dashboard/deliveries?status=failed`);
  assert.match(page.url(), /\/dashboard\/outbound\/deliveries\?status=failed$/);
  const id = sent.body.id;
  await page.goto(`${server.base}/dashboard/deliveries/${id}`);
  assert.match(page.url(), new RegExp(`/dashboard/outbound/deliveries/${id}$`));

  // Stop it retrying for the tests that follow.
  await page.goto(`${server.base}/dashboard/outbound`);
  await row.getByRole('button', { name: 'Disable' }).click();
  await page.getByText('Endpoint disabled').waitFor();
});

test('a refused endpoint form keeps its input and says what is wrong next to the field', async () => {
  await page.goto(`${server.base}/dashboard/outbound`);
  const form = page.locator('form[action="/dashboard/outbound"]');
  await form.getByLabel(/^URL/).fill('ftp://shop.example/hooks');
  await form.getByLabel('refund.succeeded').check();
  await form.getByLabel(/Description/).fill('orders');
  const [answer] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/dashboard/outbound') && r.request().method() === 'POST'),
    form.getByRole('button', { name: 'Add endpoint' }).click(),
  ]);
  assert.equal(answer.status(), 422);
  const url = form.getByLabel(/^URL/);
  assert.equal(await url.inputValue(), 'ftp://shop.example/hooks');
  assert.equal(await url.getAttribute('aria-invalid'), 'true');
  assert.equal(await url.getAttribute('aria-describedby'), 'url-error');
  assert.ok((await page.locator('#url-error').textContent()).length > 0);
  assert.ok(await form.getByLabel('refund.succeeded').isChecked());
  assert.equal(await form.getByLabel(/Description/).inputValue(), 'orders');
  await checkPage(page, 'dashboard-outbound-refused');

  // No event chosen: refused too, the message next to the events.
  await form.getByLabel(/^URL/).fill(working.url);
  await form.getByLabel('refund.succeeded').uncheck();
  await form.getByRole('button', { name: 'Add endpoint' }).click();
  await page.locator('#events-error').getByText(/Choose the events/).waitFor();
  assert.equal(await form.getByLabel(/^URL/).inputValue(), working.url);
});

test('create an endpoint, rotate its secret, send a test event signed with it, disable it', async () => {
  await page.goto(`${server.base}/dashboard/outbound`);
  const form = page.locator('form[action="/dashboard/outbound"]');
  await form.getByLabel(/^URL/).fill(working.url);
  await form.getByLabel('Every transaction event').check();
  await form.getByLabel('balance.low').check();
  await form.getByRole('button', { name: 'Add endpoint' }).click();
  const first = await page.getByTestId('new-secret').inputValue();
  assert.match(first, /^whsec_/);
  await checkPage(page, 'dashboard-outbound-created');
  const subs = await api(server, 'GET', '/webhook-subscriptions');
  const sub = subs.body.items.find((s) => s.url === working.url);
  assert.deepEqual(sub.events, ['transaction.*', 'balance.low']);
  await page.goto(`${server.base}/dashboard/outbound`);
  assert.ok(!(await page.content()).includes(first), 'the secret is shown once only');

  const row = page.locator(`tr[data-endpoint-id="${sub.id}"]`);
  await row.getByRole('button', { name: 'Rotate secret' }).click();
  const rotated = await page.getByTestId('new-secret').inputValue();
  assert.match(rotated, /^whsec_/);
  assert.notEqual(rotated, first);
  await checkPage(page, 'dashboard-outbound-rotated');

  await page.goto(`${server.base}/dashboard/outbound`);
  await row.getByRole('button', { name: 'Send test event' }).click();
  await page.getByText('Test event sent').waitFor();
  const got = await eventually('the test event', () => working.got[0]);
  const event = JSON.parse(got.body);
  assert.equal(event.name, 'webhook.test');
  assert.equal(event.target.id, sub.id);
  assert.ok(signedWith(rotated, got.headers, got.body), 'signed with the secret shown');
  const deliveryUrl = page.url().replace(/\?.*$/, '');
  await eventually('delivered', async () => {
    await page.goto(deliveryUrl);
    return (await page.getByTestId('status').textContent()).trim() === 'Delivered';
  });
  await page.getByText('Delivered (HTTP 200)').first().waitFor();
  await checkPage(page, 'dashboard-outbound-delivered');

  await page.goto(`${server.base}/dashboard/outbound`);
  await row.getByTestId('last-delivery').getByText('Delivered (HTTP 200)').waitFor();
  await row.getByRole('button', { name: 'Disable' }).click();
  await page.getByText('Endpoint disabled').waitFor();
  await row.getByText('Disabled', { exact: true }).waitFor();
  assert.equal(await row.getByRole('button', { name: 'Send test event' }).count(), 0);
  const after = await api(server, 'GET', `/webhook-subscriptions/${sub.id}`);
  assert.equal(after.body.active, false);
  await checkPage(page, 'dashboard-outbound');

  await page.goto(`${server.base}/dashboard/outbound/deliveries?status=delivered`);
  await page.getByRole('row', { name: /webhook\.test/ }).getByText('Delivered').waitFor();
  await checkPage(page, 'dashboard-outbound-deliveries');
});

test('Stripe events: filtered by connection and status, with human labels', async () => {
  const conns = await api(server, 'GET', '/connections');
  const sandboxConn = conns.body.items.find((c) => c.sandbox);
  const other = await api(server, 'POST', '/connections', {
    type: 'stripe', display_name: 'Second account', secret_key: 'sk_test_secondaccount4242',
  });
  assert.equal(other.status, 201);
  await sandbox('/v1/payment_intents', {
    amount: '2500', currency: 'usd', payment_method: 'pm_card_visa', confirm: 'true',
    return_url: 'https://example.com/r',
  });
  await eventually('an applied or ignored event', async () => {
    const r = await api(server, 'GET', `/webhook-events?connection_id=${sandboxConn.id}`);
    return r.body.items.some((w) => w.status === 'applied' || w.status === 'ignored');
  });
  const listed = await api(server, 'GET', `/webhook-events?connection_id=${sandboxConn.id}`);
  const status = listed.body.items.find((w) => w.status === 'applied' || w.status === 'ignored').status;
  const label = status === 'applied' ? 'Applied' : 'Ignored';

  await page.goto(`${server.base}/dashboard/webhooks`);
  await page.getByLabel('Connection').selectOption(sandboxConn.id);
  await page.getByLabel('Status').selectOption(status);
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/connection=/);
  assert.equal(new URL(page.url()).searchParams.get('connection'), sandboxConn.id);
  const rows = page.locator('tbody tr');
  assert.ok((await rows.count()) > 0);
  for (const text of await rows.locator('td[data-label="Status"]').allTextContents()) {
    assert.match(text, new RegExp(label));
  }
  for (const text of await rows.locator('td[data-label="Connection"]').allTextContents()) {
    assert.equal(text.trim(), sandboxConn.display_name);
  }
  await checkPage(page, 'dashboard-webhooks-filtered');

  // The overview's link: failed events of one connection.
  await page.goto(`${server.base}/dashboard/webhooks?status=failed&connection=${other.body.id}`);
  await page.getByText('No Stripe events here.').waitFor();
  assert.equal(await page.getByLabel('Connection').inputValue(), other.body.id);
  assert.equal(await page.getByLabel('Status').inputValue(), 'failed');

  await page.goto(`${server.base}/dashboard/webhooks?connection=${sandboxConn.id}`);
  await page.locator('tbody tr a').first().click();
  await page.getByTestId('status').waitFor();
  await page.getByRole('button', { name: 'Replay' }).waitFor();
  await checkPage(page, 'dashboard-webhook-event');
});

test('connections and keys: refused forms keep the input, messages next to the fields', async () => {
  await page.goto(`${server.base}/dashboard/connections`);
  await checkPage(page, 'dashboard-connections');
  await page.getByLabel('Name').fill('Live account');
  await page.getByLabel(/Secret key/).fill('not-a-stripe-key');
  await page.getByRole('button', { name: 'Save connection' }).click();
  const key = page.getByLabel(/Secret key/);
  assert.equal(await key.getAttribute('aria-invalid'), 'true');
  await page.locator('#secret_key-error').getByText(/Must start with sk_/).waitFor();
  assert.equal(await page.getByLabel('Name').inputValue(), 'Live account');
  assert.equal(await key.inputValue(), 'not-a-stripe-key');
  await checkPage(page, 'dashboard-connections-refused');

  await key.fill('sk_test_liveaccount4242');
  await page.getByRole('button', { name: 'Save connection' }).click();
  await page.getByText('Connection saved.').waitFor();
  await page.getByTestId('connection-status').getByText('Waiting for the webhook signing secret').waitFor();
  await checkPage(page, 'dashboard-connection');
  await page.getByLabel(/Signing secret/).fill('not-a-secret');
  await page.getByRole('button', { name: 'Save signing secret' }).click();
  await page.locator('#webhook_secret-error').getByText(/whsec_/).waitFor();
  assert.equal(await page.getByLabel(/Signing secret/).getAttribute('aria-invalid'), 'true');
  await checkPage(page, 'dashboard-connection-refused');
  await page.getByLabel(/Signing secret/).fill('whsec_liveaccount123456');
  await page.getByRole('button', { name: 'Save signing secret' }).click();
  await page.getByText('Webhook signing secret saved.').waitFor();
  await page.getByTestId('connection-status').getByText('Active').waitFor();

  await page.goto(`${server.base}/dashboard/connections`);
  await page.getByRole('link', { name: 'Stripe sandbox' }).click();
  await page.getByText('registers its webhook and signing secret itself').waitFor();
  await page.getByRole('link', { name: 'Check key permissions' }).click();
  await page.getByText('Credentials valid: yes').waitFor();
  await checkPage(page, 'dashboard-connection-verified');

  await page.goto(`${server.base}/dashboard/keys`);
  await checkPage(page, 'dashboard-keys');
  const long = 'k'.repeat(101);
  await page.getByLabel('Kind').selectOption('public');
  await page.getByLabel('Name').fill(long);
  await page.getByRole('button', { name: 'Create key' }).click();
  await page.locator('#display_name-error').getByText(/at most 100 characters/).waitFor();
  assert.equal(await page.getByLabel('Name').inputValue(), long);
  assert.equal(await page.getByLabel('Kind').inputValue(), 'public');
  await checkPage(page, 'dashboard-keys-refused');
  await page.getByLabel('Name').fill('mobile app');
  await page.getByRole('button', { name: 'Create key' }).click();
  assert.match(await page.getByTestId('new-key').inputValue(), /^tg_pk_/);
  await checkPage(page, 'dashboard-keys-created');
});
