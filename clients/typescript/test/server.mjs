// A real `tollgate serve` with its built-in Stripe sandbox, for the end-to-end tests and for
// `npm run check-types` / `npm run record`: a free port, a fresh data directory, SQLite.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, '..', '..', '..');
export const bin = process.env.TOLLGATE_BIN || join(repo, 'target', 'debug', 'tollgate');

export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
    s.on('error', fail);
  });
}

async function waitFor(url, ms = 30000) {
  const until = Date.now() + ms;
  for (;;) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch { /* not up yet */ }
    if (Date.now() > until) throw new Error(`${url} did not come up`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts `tollgate serve` with the sandbox; returns {base, key (secret), pk (public),
 * sandboxKey, stop}. */
export async function startTollgate() {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`cargo build -p tollgate\` (or set TOLLGATE_BIN)`);
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'tollgate-client-'));
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' };
  delete env.DATABASE_URL;
  const proc = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir,
    '--sandbox', 'true', '--expiry-interval-ms', '300'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`${base}/readyz`);
  for (let i = 0; i < 200 && !existsSync(join(dataDir, 'first-secret-key')); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const key = readFileSync(join(dataDir, 'first-secret-key'), 'utf8').trim();
  const sandboxKey = /sandbox secret key: (\S+)/.exec(out)?.[1];
  const pk = execFileSync(bin, ['keys', 'create', '--kind', 'public', '--data-dir', dataDir], { env })
    .toString().trim().split('\n').pop();
  if (!pk?.startsWith('tg_pk_')) throw new Error(`no public key: ${pk}`);
  return {
    base, key, pk, sandboxKey, dataDir,
    stripeBase: `${base}/sandbox/stripe`,
    stop: () => new Promise((ok) => {
      proc.on('exit', () => { rmSync(dataDir, { recursive: true, force: true }); ok(); });
      proc.kill('SIGTERM');
    }),
  };
}

/** A call to the Tollgate API with the secret key. */
export async function api(tg, method, path, body) {
  const r = await fetch(tg.base + path, {
    method,
    headers: { authorization: `Bearer ${tg.key}`, 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null, headers: r.headers };
}

/** A Stripe API call to the sandbox (form-encoded, as Stripe's libraries send it). */
export async function stripe(tg, method, path, params = {}) {
  const body = new URLSearchParams(params).toString();
  const r = await fetch(tg.stripeBase + path, {
    method,
    headers: { authorization: `Bearer ${tg.sandboxKey}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: method === 'GET' ? undefined : body,
  });
  const json = await r.json();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

/** A product sold once, its SKU and the permission `premium` it gives; returns the price. */
export async function catalogue(tg, permission = 'premium') {
  const price = await stripe(tg, 'POST', '/v1/prices', {
    currency: 'usd', unit_amount: '900', 'product_data[name]': 'Premium',
  });
  const sku = await api(tg, 'POST', '/v1/skus', {
    identifier: `${permission}_life`, store: 'stripe', product_id: price.product, kind: 'one_time',
  });
  if (sku.status !== 201) throw new Error(`sku: ${JSON.stringify(sku.body)}`);
  const def = await api(tg, 'POST', '/v1/permissions/definitions', {
    identifier: permission, skus: [`${permission}_life`],
  });
  if (def.status !== 201) throw new Error(`definition: ${JSON.stringify(def.body)}`);
  return price;
}

/** A Checkout Session for `customid` (its metadata links the buyer), and its URL. */
export async function checkoutSession(tg, price, customid, successUrl = 'https://shop.example/done') {
  return stripe(tg, 'POST', '/v1/checkout/sessions', {
    mode: 'payment',
    'line_items[0][price]': price.id,
    'line_items[0][quantity]': '1',
    'metadata[customid]': customid,
    customer_creation: 'always',
    customer_email: `${customid}@example.com`,
    success_url: successUrl,
  });
}

/** The buyer pays the session (the sandbox's buyer action, as a browser's Pay button does). */
export async function pay(tg, session) {
  const r = await fetch(`${tg.stripeBase}/_sandbox/checkout_sessions/${session.id}/complete`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ payment_method: 'pm_card_visa' }),
  });
  if (!r.ok) throw new Error(`complete: ${r.status} ${await r.text()}`);
  return r.json();
}
