// End to end against a real `tollgate serve` on its built-in Stripe sandbox: a buyer pays on
// Checkout and `watch` fires with `premium` valid; grants, Stripe links, typed errors, ETags and
// the polling fallback on the real server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Tollgate, TollgateError } from '../dist/index.js';
import { startTollgate, catalogue, checkoutSession, pay, stripe } from './server.mjs';

let tg, price;

before(async () => {
  tg = await startTollgate();
  price = await catalogue(tg);
});

after(async () => {
  await tg?.stop();
});

const premium = (set) => set.permissions.some((p) => p.identifier === 'premium' && p.isValid);

/** Resolves with the first set `pred` accepts (or rejects after `ms`). */
function until(watchFn, pred, ms = 20000) {
  let stop;
  const sets = [];
  const p = new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`not within ${ms} ms; sets seen: ${JSON.stringify(sets)}`)), ms);
    stop = watchFn((set) => {
      sets.push(set);
      if (pred(set)) { clearTimeout(t); resolve(set); }
    });
  });
  return { p, stop: () => stop(), sets };
}

test('a Checkout purchase unlocks: watch fires with premium valid, over the stream', async () => {
  const app = new Tollgate({ baseUrl: tg.base, apiKey: tg.pk });
  let streamed = 0;
  const counting = new Tollgate({
    baseUrl: tg.base, apiKey: tg.pk,
    fetch: (url, init) => { if (String(url).includes('/stream')) streamed++; return fetch(url, init); },
  });
  const before = until((cb) => counting.watch('buyer-1', cb), (s) => !premium(s));
  const locked = await before.p;
  assert.equal(locked.customid, 'buyer-1');
  assert.equal(locked.stale, false);
  const unlocked = until((cb) => counting.watch('buyer-1', cb), premium);
  const session = await checkoutSession(tg, price, 'buyer-1');
  await pay(tg, session);
  const paidAt = Date.now();
  const set = await unlocked.p;
  const took = Date.now() - paidAt;
  console.log(`watch fired ${took} ms after the buyer paid (webhook delivery included)`);
  before.stop();
  unlocked.stop();
  assert.ok(streamed >= 1, 'the watch streamed');
  const p = set.permissions.find((x) => x.identifier === 'premium');
  assert.equal(p.isValid, true);
  assert.equal(p.expiresAt, null, 'bought once: no end');
  assert.ok(p.skus.length >= 1 && p.skus[0].identifier === 'premium_life', JSON.stringify(p.skus));
  assert.ok(set.etag && set.etag !== '0');
  assert.equal(await app.has('buyer-1', 'premium'), true);
  assert.equal(await app.has('buyer-1', 'gold'), false);
});

test('the polling fallback fires too, reading with ETags (304s)', async () => {
  const statuses = [];
  const app = new Tollgate({
    baseUrl: tg.base, apiKey: tg.pk, pollIntervalMs: 150,
    fetch: async (url, init) => { const r = await fetch(url, init); statuses.push(r.status); return r; },
  });
  const server = new Tollgate({ baseUrl: tg.base, apiKey: tg.key });
  const w = until((cb) => app.watch('poller-1', cb, { transport: 'poll' }), premium);
  await new Promise((r) => setTimeout(r, 600));
  await server.grants.create('poller-1', { permission: 'premium', reason: 'poll test' });
  const set = await w.p;
  w.stop();
  assert.ok(premium(set));
  assert.ok(statuses.includes(304), `unchanged reads are 304s: ${statuses}`);
  // Delivered only when the answer changed: locked, then unlocked.
  assert.equal(w.sets.length, 2, JSON.stringify(w.sets));
});

test('grants.create and connectStripe on a secret key; typed errors', async () => {
  const server = new Tollgate({ baseUrl: tg.base, apiKey: tg.key });
  const app = new Tollgate({ baseUrl: tg.base, apiKey: tg.pk });
  const ends = new Date(Date.now() + 7 * 86400_000);
  const g = await server.grants.create('granted-1', { permission: 'premium', expiresAt: ends, reason: 'support ticket 42' });
  assert.match(g.id, /.+/);
  assert.equal(g.permission, 'premium');
  assert.equal(g.customid, 'granted-1');
  assert.ok(g.startsAt instanceof Date);
  assert.equal(Math.floor(g.expiresAt.getTime() / 1000), Math.floor(ends.getTime() / 1000));
  assert.equal(g.revokedAt, null);
  const set = await app.permissions('granted-1');
  assert.equal(set.permissions[0].isValid, true);
  assert.equal(Math.floor(set.permissions[0].expiresAt.getTime() / 1000), Math.floor(ends.getTime() / 1000));

  // A Stripe customer who bought before signing in, linked afterwards.
  const cus = await stripe(tg, 'POST', '/v1/customers', { email: 'early@example.com' });
  const session = await stripe(tg, 'POST', '/v1/checkout/sessions', {
    mode: 'payment', customer: cus.id,
    'line_items[0][price]': price.id, 'line_items[0][quantity]': '1',
    success_url: 'https://shop.example/done',
  });
  await pay(tg, session);
  await new Promise((r) => setTimeout(r, 1500));
  const link = await server.connectStripe('linked-1', cus.id);
  assert.equal(link.customid, 'linked-1');
  assert.equal(link.customerId, cus.id);
  assert.equal(link.movedFrom, null);
  assert.ok(link.permissions.some((p) => p.identifier === 'premium' && p.isValid), JSON.stringify(link));

  // Errors: a public key cannot write; a bad field is named; an unknown key is 401.
  await assert.rejects(app.grants.create('x', { permission: 'premium', reason: 'no' }), (e) => {
    assert.ok(e instanceof TollgateError);
    assert.equal(e.status, 403);
    assert.equal(e.code, 'forbidden');
    return true;
  });
  await assert.rejects(server.grants.create('x', { permission: 'premium', reason: '' }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.details[0].pointer, '/reason');
    return true;
  });
  await assert.rejects(server.connectStripe('x', 'not-a-customer'), (e) => e.status === 400 && e.details[0].pointer === '/customerid');
  const stranger = new Tollgate({ baseUrl: tg.base, apiKey: 'tg_pk_nobody_nothing' });
  await assert.rejects(stranger.permissions('x'), (e) => e instanceof TollgateError && e.status === 401 && e.code === 'unauthorized');
  // consume: an unmetered (or unknown) permission is refused with a typed error.
  await assert.rejects(server.consume('granted-1', 'premium', 1), (e) => e instanceof TollgateError && e.status >= 400 && e.status < 500);
});

test('offline: the last answer, flagged stale', async () => {
  let offline = false;
  const app = new Tollgate({
    baseUrl: tg.base, apiKey: tg.pk, maxRetries: 1, retryBaseMs: 10,
    fetch: (url, init) => (offline ? Promise.reject(new TypeError('fetch failed')) : fetch(url, init)),
  });
  const fresh = await app.permissions('buyer-1');
  assert.equal(fresh.stale, false);
  offline = true;
  const stale = await app.permissions('buyer-1');
  assert.equal(stale.stale, true);
  assert.ok(premium(stale));
  await assert.rejects(app.permissions('never-seen'), (e) => e.status === 0 && e.code === 'network_error');
});
