// Unit tests against a recorded server: test/recorded.json holds a real `tollgate serve`'s
// answers (`npm run record` records them again), replayed by a fake fetch. Failures the real
// server rarely gives on demand (429 with Retry-After, 503, a dropped connection) are added
// to the recorded ones here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Tollgate, TollgateError } from '../dist/index.js';

const recorded = JSON.parse(readFileSync(new URL('./recorded.json', import.meta.url), 'utf8'));

function response(name, extraHeaders = {}) {
  const r = recorded[name];
  assert.ok(r, `recorded answer ${name}`);
  const body = r.status === 304 ? null : r.body;
  return new Response(body, { status: r.status, headers: { ...r.headers, ...extraHeaders } });
}

/** A fetch that answers from `script` (functions or recorded names), in order, and records the
 * requests. */
function fakeFetch(script) {
  const calls = [];
  const f = async (url, init = {}) => {
    calls.push({ url: String(url), method: init.method ?? 'GET', headers: { ...init.headers }, body: init.body });
    const next = script.shift();
    if (next === undefined) throw new Error(`unexpected request ${url}`);
    if (typeof next === 'function') return next(url, init);
    return response(next);
  };
  f.calls = calls;
  return f;
}

const client = (fetch, extra = {}) =>
  new Tollgate({ baseUrl: 'https://tollgate.test/', apiKey: 'tg_pk_test_key', fetch, retryBaseMs: 5, ...extra });

test('permissions: the recorded answer, mapped; the ETag read again answers 304 from the cache', async () => {
  const fetch = fakeFetch(['check_granted', 'check_not_modified']);
  const tg = client(fetch);
  const set = await tg.permissions('user-7');
  assert.equal(fetch.calls[0].url, 'https://tollgate.test/v1/permissions?customid=user-7');
  assert.equal(fetch.calls[0].headers.authorization, 'Bearer tg_pk_test_key');
  assert.equal(set.customid, 'user-7');
  assert.equal(set.stale, false);
  assert.equal(set.etag, recorded.check_granted.headers.etag.replaceAll('"', ''));
  const p = set.permissions[0];
  assert.equal(p.identifier, 'premium');
  assert.equal(p.isValid, true);
  assert.equal(typeof p.entitlement, 'number');
  assert.ok(p.expiresAt instanceof Date);
  assert.equal(p.expiresAt.toISOString(), '2999-01-01T00:00:00.000Z');
  assert.deepEqual(p.skus, []);
  const again = await tg.permissions('user-7');
  assert.equal(fetch.calls[1].headers['if-none-match'], recorded.check_granted.headers.etag);
  assert.deepEqual(again.permissions, set.permissions);
  assert.equal(again.stale, false);
});

test('has', async () => {
  const tg = client(fakeFetch(['check_granted', 'check_empty']));
  assert.equal(await tg.has('user-7', 'premium'), true);
  assert.equal(await tg.has('user-8', 'premium'), false);
});

test('errors are typed and not retried when retrying cannot help', async () => {
  const fetch = fakeFetch(['unauthorized']);
  await assert.rejects(client(fetch).permissions('user-7'), (e) => {
    assert.ok(e instanceof TollgateError);
    assert.equal(e.status, 401);
    assert.equal(e.code, 'unauthorized');
    assert.equal(e.retryable, false);
    return true;
  });
  assert.equal(fetch.calls.length, 1);
  await assert.rejects(client(fakeFetch(['bad_customid'])).permissions(''), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.details[0].pointer, '/customid');
    assert.equal(e.details[0].location, 'query');
    return true;
  });
  await assert.rejects(
    client(fakeFetch(['public_key_writes'])).grants.create('user-7', { permission: 'premium', reason: 'x' }),
    (e) => e.status === 403 && e.code === 'forbidden',
  );
  await assert.rejects(
    client(fakeFetch(['grant_bad_permission'])).grants.create('user-7', { permission: 'nope', reason: 'x' }),
    (e) => e.status === 400 && e.details.length >= 1,
  );
});

test('429 and 5xx are retried with backoff, honouring Retry-After', async () => {
  const fetch = fakeFetch([
    () => new Response('{"type":"error","code":"server_error","status":503,"message":"down","details":[]}', { status: 503 }),
    () => new Response('{"type":"error","code":"too_many_requests","status":429,"message":"slow down","details":[]}',
      { status: 429, headers: { 'retry-after': '1' } }),
    'check_granted',
  ]);
  const started = Date.now();
  const set = await client(fetch).permissions('user-7');
  const took = Date.now() - started;
  assert.equal(fetch.calls.length, 3);
  assert.ok(took >= 950, `waited the Retry-After second (${took} ms)`);
  assert.equal(set.permissions[0].isValid, true);
});

test('a Retry-After longer than allowed is not waited for; retries end', async () => {
  const busy = () => new Response('{"type":"error","code":"too_many_requests","status":429,"message":"later","details":[]}',
    { status: 429, headers: { 'retry-after': '120' } });
  const fetch = fakeFetch([busy]);
  await assert.rejects(client(fetch).permissions('user-7'), (e) => e.status === 429 && e.retryAfter === 120);
  assert.equal(fetch.calls.length, 1);
  const down = () => new Response('', { status: 502 });
  const f2 = fakeFetch([down, down, down]);
  await assert.rejects(client(f2, { maxRetries: 2 }).permissions('user-7'), (e) => e.status === 502 && e.code === 'server_error');
  assert.equal(f2.calls.length, 3);
});

test('writes carry one Idempotency-Key across retries', async () => {
  const fetch = fakeFetch([
    () => Promise.reject(new TypeError('connection reset')),
    'grant_created',
  ]);
  const tg = client(fetch, { apiKey: 'tg_sk_test_key' });
  const g = await tg.grants.create('user-7', { permission: 'premium', expiresAt: new Date('2999-01-01T00:00:00Z'), reason: 'support ticket 42' });
  assert.equal(fetch.calls.length, 2);
  const key = fetch.calls[0].headers['idempotency-key'];
  assert.ok(key && key.length >= 16);
  assert.equal(fetch.calls[1].headers['idempotency-key'], key);
  assert.deepEqual(JSON.parse(fetch.calls[0].body), { permission: 'premium', expires_at: '2999-01-01T00:00:00Z', reason: 'support ticket 42' });
  assert.equal(g.permission, 'premium');
  assert.equal(g.reason, 'support ticket 42');
  assert.equal(g.expiresAt.toISOString(), '2999-01-01T00:00:00.000Z');
  assert.equal(g.revokedAt, null);
  const mine = fakeFetch(['grant_created']);
  await client(mine).grants.create('user-7', { permission: 'premium', reason: 'r' }, { idempotencyKey: 'my-key' });
  assert.equal(mine.calls[0].headers['idempotency-key'], 'my-key');
});

test('offline: the last answer, stale, and never valid past its expiresAt', async () => {
  const wire = JSON.parse(recorded.check_granted.body);
  const soon = new Date(Date.now() + 2000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  wire.permissions[0].expires_at = soon;
  const net = () => Promise.reject(new TypeError('fetch failed'));
  const fetch = fakeFetch([
    () => new Response(JSON.stringify(wire), { status: 200, headers: { etag: '"7"', 'content-type': 'application/json' } }),
    net, net, net, net, net, net,
  ]);
  const tg = client(fetch, { maxRetries: 1 });
  assert.equal((await tg.permissions('user-7')).permissions[0].isValid, true);
  const stale = await tg.permissions('user-7');
  assert.equal(stale.stale, true);
  assert.equal(stale.permissions[0].isValid, true);
  await new Promise((r) => setTimeout(r, 2100));
  const lapsed = await tg.permissions('user-7');
  assert.equal(lapsed.stale, true);
  assert.equal(lapsed.permissions[0].isValid, false, 'past its expiresAt, even offline');
  await assert.rejects(tg.permissions('someone-else'), (e) => e.code === 'network_error' && e.status === 0);
});

/** A streamed body that sends `text` in small pieces, then stays open until aborted. */
function streamed(text, signal) {
  const bytes = new TextEncoder().encode(text);
  return new ReadableStream({
    async start(c) {
      for (let i = 0; i < bytes.length; i += 37) {
        c.enqueue(bytes.slice(i, i + 37));
        await new Promise((r) => setTimeout(r, 1));
      }
      signal?.addEventListener('abort', () => c.error(new DOMException('aborted', 'AbortError')));
    },
  });
}

test('watch: the recorded stream, each set delivered once; unsubscribing closes it', async () => {
  const rec = recorded.stream;
  assert.match(rec.body, /: heartbeat/, 'the recording has a heartbeat');
  let signal;
  const fetch = fakeFetch([(url, init) => {
    signal = init.signal;
    return new Response(streamed(rec.body, init.signal), { status: 200, headers: rec.headers });
  }]);
  const tg = client(fetch);
  const sets = [];
  const stop = tg.watch('user-7', (s) => sets.push(s));
  for (let i = 0; i < 200 && sets.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(sets.length, 2);
  assert.match(fetch.calls[0].url, /\/v1\/permissions\/stream\?customid=user-7&heartbeat=15$/);
  assert.equal(fetch.calls[0].headers.accept, 'text/event-stream');
  assert.equal(fetch.calls[0].headers.authorization, 'Bearer tg_pk_test_key');
  assert.deepEqual(sets[0].permissions, []);
  assert.equal(sets[1].permissions[0].identifier, 'premium');
  assert.equal(sets[1].permissions[0].isValid, true);
  assert.equal(sets[1].etag, '1');
  stop();
  assert.equal(signal.aborted, true);
  // The stream's answer is cached: a read after it sends its version.
  const later = fakeFetch(['check_not_modified']);
  const tg2 = client((url, init) => (String(url).includes('/stream')
    ? new Response(streamed(rec.body, init.signal), { status: 200, headers: rec.headers })
    : later(url, init)));
  const s2 = [];
  const stop2 = tg2.watch('user-7', (s) => s2.push(s));
  for (let i = 0; i < 200 && s2.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  stop2();
  const again = await tg2.permissions('user-7');
  assert.equal(later.calls[0].headers['if-none-match'], '"1"');
  assert.equal(again.permissions[0].isValid, true);
});

test('watch: a dropped stream reconnects with Last-Event-ID', async () => {
  const rec = recorded.stream;
  const first = rec.body.split('\n\n')[0] + '\n\n'; // the first event only, then the connection drops
  let n = 0;
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ ...init.headers });
    n += 1;
    if (n === 1) {
      const bytes = new TextEncoder().encode(first);
      return new Response(new ReadableStream({ start(c) { c.enqueue(bytes); setTimeout(() => c.error(new TypeError('network lost')), 5); } }),
        { status: 200, headers: rec.headers });
    }
    return new Response(streamed(rec.body, init.signal), { status: 200, headers: rec.headers });
  };
  const errors = [];
  const tg = client(fetch);
  const sets = [];
  const stop = tg.watch('user-7', (s) => sets.push(s), { onError: (e) => errors.push(e) });
  for (let i = 0; i < 300 && sets.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  stop();
  assert.equal(errors[0]?.code, 'network_error');
  assert.equal(calls[0]['last-event-id'], undefined);
  assert.equal(calls[1]['last-event-id'], '0', 'resumes from the last event');
  assert.equal(sets.length, 2, 'the first set is not delivered twice');
  assert.equal(sets[1].permissions[0].isValid, true);
});

test('watch falls back to polling with ETags when the server cannot stream', async () => {
  const fetch = fakeFetch([
    () => new Response('{"type":"error","code":"not_found","status":404,"message":"no route","details":[]}', { status: 404 }),
    'check_empty', 'check_granted', 'check_not_modified', 'check_not_modified',
  ]);
  const tg = client(fetch, { pollIntervalMs: 20 });
  const sets = [];
  const stop = tg.watch('user-7', (s) => sets.push(s));
  for (let i = 0; i < 200 && fetch.calls.length < 5; i++) await new Promise((r) => setTimeout(r, 10));
  stop();
  assert.equal(sets.length, 2, 'locked, then unlocked; the 304s deliver nothing');
  assert.equal(sets[1].permissions[0].isValid, true);
  assert.equal(fetch.calls[3].headers['if-none-match'], recorded.check_granted.headers.etag);
});

test('consume and connectStripe send the documented bodies', async () => {
  const fetch = fakeFetch([
    () => new Response('{"balance":95,"consumed":5,"ledger_id":"led_1"}', { status: 200 }),
    () => new Response('{"type":"error","code":"insufficient_balance","status":402,"message":"Not enough.","details":[],"balance":3}', { status: 402 }),
    'connect_no_customer',
  ]);
  const tg = client(fetch, { apiKey: 'tg_sk_x' });
  const c = await tg.consume('user-7', 'ai_credits', 5, { idempotencyKey: 'k1' });
  assert.deepEqual(c, { balance: 95, consumed: 5, ledgerId: 'led_1' });
  assert.equal(fetch.calls[0].url, 'https://tollgate.test/v1/permissions/ai_credits/consume');
  assert.deepEqual(JSON.parse(fetch.calls[0].body), { customid: 'user-7', units: 5 });
  assert.equal(fetch.calls[0].headers['idempotency-key'], 'k1');
  await assert.rejects(tg.consume('user-7', 'ai_credits', 5), (e) => e.code === 'insufficient_balance' && e.balance === 3 && e.status === 402);
  await assert.rejects(tg.connectStripe('user-7', 'cus_doesnotexist', { force: true }), (e) => e instanceof TollgateError && e.status >= 400);
  assert.deepEqual(JSON.parse(fetch.calls[2].body), { customid: 'user-7', customerid: 'cus_doesnotexist', force: true });
});

test('watch waits what a 429 says before opening the stream again', async () => {
  const rec = recorded.stream;
  const at = [];
  const fetch = async (url, init) => {
    at.push(Date.now());
    if (at.length === 1) {
      return new Response('{"type":"error","code":"too_many_requests","status":429,"message":"later","details":[]}',
        { status: 429, headers: { 'retry-after': '1' } });
    }
    return new Response(streamed(rec.body, init.signal), { status: 200, headers: rec.headers });
  };
  const errors = [];
  const sets = [];
  const stop = client(fetch).watch('user-7', (s) => sets.push(s), { onError: (e) => errors.push(e) });
  for (let i = 0; i < 300 && sets.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
  stop();
  assert.equal(errors[0]?.status, 429);
  assert.ok(at[1] - at[0] >= 950, `waited the Retry-After second (${at[1] - at[0]} ms)`);
  assert.equal(sets.length >= 1, true);
});
