// Records a real server's answers for the unit tests (test/recorded.json): a fresh
// `tollgate serve` on the sandbox (or BASE_URL with TOLLGATE_KEY and TOLLGATE_PK), a permission
// `premium`, a grant, the check before and after (200 with its ETag, 304), errors (401, 400,
// 403), a grant and a Stripe link answered, and the first bytes of a permission stream.
import { writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTollgate, api, catalogue } from '../test/server.mjs';

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const tg = await startTollgate();
const recorded = {};
const KEEP = ['content-type', 'etag', 'retry-after'];

async function record(name, method, path, { key = tg.pk, headers = {}, body } = {}) {
  const r = await fetch(tg.base + path, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  const kept = {};
  for (const h of KEEP) if (r.headers.get(h)) kept[h] = r.headers.get(h);
  recorded[name] = { method, path, status: r.status, headers: kept, body: text };
  return { status: r.status, text, etag: r.headers.get('etag') };
}

/** The stream's bytes until `events` events came (heartbeats included as sent). */
async function recordStream(name, path, events, during) {
  const ac = new AbortController();
  const r = await fetch(tg.base + path, { headers: { authorization: `Bearer ${tg.pk}` }, signal: ac.signal });
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  let seen = 0;
  let triggered = false;
  while (seen < events) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    seen = (text.match(/\nevent: permissions\n|^event: permissions\n/g) || []).length;
    if (seen >= 1 && !triggered) { triggered = true; await during(); }
  }
  ac.abort();
  const kept = {};
  for (const h of ['content-type']) kept[h] = r.headers.get(h);
  recorded[name] = { method: 'GET', path, status: r.status, headers: kept, body: text };
}

try {
  await catalogue(tg);
  await record('check_empty', 'GET', '/v1/permissions?customid=user-7');
  await recordStream('stream', '/v1/permissions/stream?customid=user-7&heartbeat=1', 2, async () => {
    await new Promise((r) => setTimeout(r, 1200)); // a heartbeat
    await record('grant_created', 'POST', '/v1/subscribers/user-7/grants', {
      key: tg.key,
      headers: { 'idempotency-key': 'record-grant-1' },
      body: { permission: 'premium', expires_at: '2999-01-01T00:00:00Z', reason: 'support ticket 42' },
    });
  });
  const granted = await record('check_granted', 'GET', '/v1/permissions?customid=user-7');
  await record('check_not_modified', 'GET', '/v1/permissions?customid=user-7', { headers: { 'if-none-match': granted.etag } });
  await record('unauthorized', 'GET', '/v1/permissions?customid=user-7', { key: 'tg_pk_unknown_key' });
  await record('bad_customid', 'GET', '/v1/permissions?customid=');
  await record('public_key_writes', 'POST', '/v1/subscribers/user-7/grants', {
    body: { permission: 'premium', reason: 'x' }, headers: { 'idempotency-key': 'record-grant-2' },
  });
  await record('grant_bad_permission', 'POST', '/v1/subscribers/user-7/grants', {
    key: tg.key, headers: { 'idempotency-key': 'record-grant-3' }, body: { permission: 'nope', reason: 'x' },
  });
  await record('connect_no_customer', 'POST', '/v1/connect_stripe', {
    key: tg.key, headers: { 'idempotency-key': 'record-connect-1' }, body: { customid: 'user-7', customerid: 'cus_doesnotexist' },
  });
  await record('consume_unknown', 'POST', '/v1/permissions/ai_credits/consume', {
    key: tg.key, headers: { 'idempotency-key': 'record-consume-1' }, body: { customid: 'user-7', units: 5 },
  });
  writeFileSync(join(pkg, 'test', 'recorded.json'), JSON.stringify(recorded, null, 2) + '\n');
  console.log(`recorded ${Object.keys(recorded).length} answers`);
} finally {
  await tg.stop();
}
