// The dashboard's customers and catalogue in a real browser: the catalogue shows the Stripe
// product's name and price (read from the sandbox), a refused SKU form keeps its input, a
// metered permission is defined with units per SKU; a subscriber is found by customid prefix
// and by its cus_ id and its permission reads "renewing"; a refunded purchase reads
// "refunded"; a metered permission's balances and ledger are shown, an adjustment of +50 with
// a reason changes the balance the API reports, a refused adjustment ("abc", no reason) keeps
// the form with the messages next to the fields. checkPage on every page (no sideways scroll
// at 390 px, axe-core clean, screenshots at both widths).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, api, browser, signedIn, checkPage, eventually, sandboxPost } from './harness.mjs';

const sandbox = (path, form) => sandboxPost(server, path, form);

let server, chrome, context, page;
let proPrice, packProduct;

async function ok(r, status = 201) {
  assert.equal(r.status, status, JSON.stringify(r.body));
  return r.body;
}

/** Waits until the API shows `customid`'s `permission` with entitlement `code`. */
async function permissionCode(customid, permission, code) {
  await eventually(`${customid}'s ${permission} at ${code}`, async () => {
    const r = await api(server, 'GET', `/v1/subscribers/${customid}`);
    return r.status === 200 && r.body.permissions.some((p) => p.identifier === permission && p.entitlement === code);
  });
}

before(async () => {
  server = await startServer();
  chrome = await browser();
  ({ context, page } = await signedIn(chrome, server));
  const pro = await sandbox('/v1/products', { name: 'Pro monthly' });
  proPrice = await sandbox('/v1/prices', {
    product: pro.id, currency: 'usd', unit_amount: '999', 'recurring[interval]': 'month',
  });
  packProduct = await sandbox('/v1/products', { name: 'Credit pack' });
  await sandbox('/v1/prices', { product: packProduct.id, currency: 'eur', unit_amount: '500' });
  const life = await sandbox('/v1/products', { name: 'Lifetime access' });
  await sandbox('/v1/prices', { product: life.id, currency: 'usd', unit_amount: '4900' });
  await ok(await api(server, 'POST', '/v1/skus', { identifier: 'pro_monthly', store: 'stripe', product_id: pro.id, kind: 'subscription' }));
  await ok(await api(server, 'POST', '/v1/skus', { identifier: 'lifetime', store: 'stripe', product_id: life.id, kind: 'one_time' }));
  await ok(await api(server, 'POST', '/v1/permissions/definitions', { identifier: 'premium', skus: ['pro_monthly', 'lifetime'] }));
});

after(async () => {
  await chrome?.close();
  await server?.stop();
});

test('the catalogue shows product names and prices; a refused SKU form keeps its input; a metered permission is defined with units', async () => {
  await page.goto(`${server.base}/dashboard/catalogue`);
  const row = page.locator('tr[data-sku="pro_monthly"]');
  await row.getByText('Pro monthly').waitFor();
  await row.getByText('$9.99 / month').waitFor();
  await page.locator('tr[data-sku="lifetime"]').getByText('$49.00 once').waitFor();
  await checkPage(page, 'dashboard-catalogue');

  // A SKU without a product: refused, the identifier kept, the message at the product field.
  const form = page.locator('form#new-sku');
  await form.getByLabel('Identifier').fill('credit_pack');
  await form.getByLabel(/Stripe product/).fill('');
  await form.getByLabel('Kind').selectOption('one_time');
  await form.getByRole('button', { name: 'Create SKU' }).click();
  const product = form.getByLabel(/Stripe product/);
  await page.locator('#sku_product_id-error').waitFor();
  assert.equal(await product.getAttribute('aria-invalid'), 'true');
  assert.equal(await product.getAttribute('aria-describedby'), 'sku_product_id-error');
  assert.equal(await form.getByLabel('Identifier').inputValue(), 'credit_pack');
  assert.equal(await form.getByLabel('Kind').inputValue(), 'one_time');
  await checkPage(page, 'dashboard-catalogue-refused');

  await product.fill(packProduct.id);
  await form.getByRole('button', { name: 'Create SKU' }).click();
  await page.getByText('SKU saved.').waitFor();
  await page.locator('tr[data-sku="credit_pack"]').getByText('Credit pack').waitFor();
  await page.locator('tr[data-sku="credit_pack"]').getByText('€5.00 once').waitFor();

  // A metered permission: a chosen SKU without units is refused at its units field, then saved.
  const def = page.locator('form#new-permission');
  await def.getByLabel('Identifier').fill('ai_credits');
  await def.getByLabel('Kind').selectOption('metered');
  await def.getByLabel('credit_pack', { exact: true }).check();
  await def.getByRole('button', { name: 'Create permission' }).click();
  await page.locator('#new-units-credit_pack-error').waitFor();
  assert.equal(await def.getByLabel(/Units of credit_pack/).getAttribute('aria-invalid'), 'true');
  assert.equal(await def.getByLabel('Identifier').inputValue(), 'ai_credits');
  await def.getByLabel(/Units of credit_pack/).fill('500');
  await def.getByRole('button', { name: 'Create permission' }).click();
  await page.getByText('Permission saved.').waitFor();
  const saved = await ok(await api(server, 'GET', '/v1/permissions/definitions/ai_credits'), 200);
  assert.equal(saved.kind, 'metered');
  assert.deepEqual(saved.metering.skus.map((s) => [s.identifier, s.units, s.per]), [['credit_pack', 500, 'purchase']]);
  await page.locator('form[data-permission="ai_credits"]').getByText('credit_pack: 500 units per purchase').waitFor();
});

test('a subscriber is found by customid prefix and by cus_ id, and its permission reads "renewing"', async () => {
  const cus = await sandbox('/v1/customers', {
    email: 'sub@example.com', 'metadata[customid]': 'sub-user-1',
    payment_method: 'pm_card_visa', 'invoice_settings[default_payment_method]': 'pm_card_visa',
  });
  const sub = await sandbox('/v1/subscriptions', { customer: cus.id, 'items[0][price]': proPrice.id });
  assert.equal(sub.status, 'active');
  await permissionCode('sub-user-1', 'premium', 5);
  await ok(await api(server, 'POST', '/v1/subscribers/other-user/grants', { permission: 'premium', reason: 'support' }));

  await page.goto(`${server.base}/dashboard/customers`);
  const filter = page.getByRole('search', { name: 'Customers' });
  await filter.getByLabel(/customid/).fill('sub-');
  await filter.getByRole('button', { name: 'Find' }).click();
  await page.waitForURL(/q=sub-/);
  await page.getByRole('link', { name: 'sub-user-1' }).waitFor();
  assert.equal(await page.getByRole('link', { name: 'other-user' }).count(), 0);
  await page.getByRole('row', { name: /sub-user-1/ }).getByText(cus.id).waitFor();
  await checkPage(page, 'dashboard-customers');

  await filter.getByLabel(/customid/).fill(cus.id);
  await filter.getByRole('button', { name: 'Find' }).click();
  await page.waitForURL(/q=cus_/);
  await page.getByRole('link', { name: 'sub-user-1' }).click();
  await page.waitForURL(/\/dashboard\/customers\/sub-user-1$/);
  assert.equal(await page.getByTestId('state-premium').textContent(), 'renewing');
  await page.locator('tr[data-permission="premium"]').getByText('code 5').waitFor();
  const purchase = page.getByRole('row', { name: new RegExp(sub.id) });
  await purchase.getByText('Subscription').waitFor();
  await purchase.getByText('pro_monthly').waitFor();
  await checkPage(page, 'dashboard-customer-subscriber');
});

test('a refunded purchase reads "refunded"', async () => {
  const cus = await sandbox('/v1/customers', { email: 'life@example.com', 'metadata[customid]': 'life-user' });
  const pi = await sandbox('/v1/payment_intents', {
    amount: '4900', currency: 'usd', customer: cus.id, 'metadata[sku]': 'lifetime',
    payment_method: 'pm_card_visa', confirm: 'true', return_url: 'https://example.com/r',
  });
  await permissionCode('life-user', 'premium', 3);
  await sandbox('/v1/refunds', { payment_intent: pi.id });
  await permissionCode('life-user', 'premium', -8);
  await page.goto(`${server.base}/dashboard/customers/life-user`);
  assert.equal(await page.getByTestId('state-premium').textContent(), 'refunded');
  await page.locator('tr[data-permission="premium"]').getByText('code -8').waitFor();
  await checkPage(page, 'dashboard-customer-refunded');
});

test('a metered permission: balances and ledger shown, a refused adjustment keeps the form, +50 changes the balance', async () => {
  await ok(await api(server, 'POST', '/v1/subscribers/credit-user/grants', { permission: 'ai_credits', units: 200, reason: 'Launch gift' }));
  await ok(await api(server, 'POST', '/v1/permissions/ai_credits/consume', { customid: 'credit-user', units: 20 }), 200);

  await page.goto(`${server.base}/dashboard/customers/credit-user`);
  assert.equal(await page.getByTestId('available-ai_credits').textContent(), '180');
  const balance = page.locator('tr[data-balance="ai_credits"]');
  await balance.locator('td[data-label="Granted"]').getByText('200').waitFor();
  await balance.locator('td[data-label="Consumed"]').getByText('20').waitFor();
  const ledger = page.locator('#ledger');
  await ledger.getByRole('row', { name: /Consumed/ }).getByText('−20').waitFor();
  await ledger.getByRole('row', { name: /Granted/ }).getByText('+200').waitFor();
  await ledger.getByRole('row', { name: /Granted/ }).getByRole('link', { name: 'grant of ai_credits' }).waitFor();
  await checkPage(page, 'dashboard-customer-credits');

  // Refused: "abc" units and no reason; the input is kept, each message next to its field.
  const form = page.locator('form#adjust');
  await form.getByLabel(/^Units/).fill('abc');
  await form.getByLabel(/^Reason/).fill('');
  await form.getByRole('button', { name: 'Adjust' }).click();
  await page.locator('#adjust_units-error').waitFor();
  const units = form.getByLabel(/^Units/);
  assert.equal(await units.inputValue(), 'abc');
  assert.equal(await units.getAttribute('aria-invalid'), 'true');
  assert.equal(await units.getAttribute('aria-describedby'), 'adjust_units-error');
  assert.match(await page.locator('#adjust_units-error').textContent(), /whole number/);
  assert.equal(await form.getByLabel(/^Reason/).getAttribute('aria-describedby'), 'adjust_reason-error');
  await checkPage(page, 'dashboard-customer-adjust-refused');
  let b = await ok(await api(server, 'GET', '/v1/subscribers/credit-user/balances'), 200);
  assert.equal(b.items[0].balance, 180, 'nothing changed');

  await units.fill('+50');
  await form.getByLabel(/^Reason/).fill('Goodwill after the outage');
  // Said back before it is sent.
  assert.equal(await page.locator('#adjust-preview').textContent(), 'Add 50 units to ai_credits (balance 180 → 230).');
  await form.getByRole('button', { name: 'Adjust' }).click();
  await page.getByText('Balance adjusted.').waitFor();
  b = await ok(await api(server, 'GET', '/v1/subscribers/credit-user/balances'), 200);
  assert.equal(b.items[0].balance, 230);
  assert.equal(await page.getByTestId('available-ai_credits').textContent(), '230');
  await ledger.getByRole('row', { name: /Goodwill after the outage/ }).getByText('+50').waitFor();
});
