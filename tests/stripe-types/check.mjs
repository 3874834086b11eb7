// Checks the Stripe sandbox's billing objects against the TypeScript type definitions of Stripe's
// official Node library (the `stripe` package pinned in package.json).
//
// It starts `$TOLLGATE_BIN sandbox` on a free port, creates each object through the sandbox's
// HTTP API (form-encoded, as Stripe's libraries send it), writes every JSON answer into a
// TypeScript file as `const x: Stripe.<Type> = <json>;` and runs `tsc --noEmit --strict` on it.
// Object literals get excess-property checks, so a field the library does not declare fails as
// surely as a field of the wrong type. Exits non-zero with the compiler's messages on a mismatch.
//
//   npm ci && TOLLGATE_BIN=/path/to/tollgate node check.mjs
//
// Set KEEP_TS=1 to keep the generated file (out/objects.mts) for inspection.

import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const bin = process.env.TOLLGATE_BIN || path.resolve(here, '../../target/debug/tollgate');
const KEY = 'sk_test_123';

function fail(msg) {
  console.error(msg);
  process.exitCode = 1;
}

// ---- the sandbox --------------------------------------------------------------------------

function startSandbox() {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['sandbox', '--listen', '127.0.0.1:0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`the sandbox did not print its address in 30 s\n${out}${err}`));
    }, 30_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${bin}: ${e.message}`));
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the sandbox exited (${code}) before listening\n${out}${err}`));
    });
    child.stderr.on('data', (d) => (err += d));
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/sandbox listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve({ child, base: m[1] });
      }
    });
  });
}

// Stripe's form encoding: nested objects as a[b][c]=v, arrays as a[0][b]=v.
function encode(params, prefix = '', out = new URLSearchParams()) {
  for (const [k, v] of Object.entries(params)) {
    const key = prefix ? `${prefix}[${k}]` : k;
    if (v === undefined || v === null) continue;
    if (Array.isArray(v)) {
      v.forEach((item, i) => {
        if (item !== null && typeof item === 'object') encode(item, `${key}[${i}]`, out);
        else out.append(`${key}[${i}]`, String(item));
      });
    } else if (typeof v === 'object') {
      encode(v, key, out);
    } else {
      out.append(key, String(v));
    }
  }
  return out;
}

let idem = 0;
function client(base) {
  async function call(method, p, params = {}) {
    const headers = { Authorization: `Bearer ${KEY}` };
    let url = `${base}${p}`;
    let body;
    if (method === 'GET') {
      const q = encode(params).toString();
      if (q) url += `?${q}`;
    } else {
      headers['Content-Type'] = 'application/x-www-form-urlencoded';
      headers['Idempotency-Key'] = `stripe-types-${process.pid}-${++idem}`;
      body = encode(params).toString();
    }
    const r = await fetch(url, { method, headers, body });
    const text = await r.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      throw new Error(`${method} ${p} -> ${r.status}: not JSON: ${text.slice(0, 300)}`);
    }
    if (!r.ok) throw new Error(`${method} ${p} -> ${r.status}: ${text.slice(0, 500)}`);
    return json;
  }
  return {
    get: (p, params) => call('GET', p, params),
    post: (p, params) => call('POST', p, params),
  };
}

// ---- the objects ----------------------------------------------------------------------------

async function collect(api) {
  const uid = `${Date.now().toString(36)}${process.pid}`;
  const checks = []; // [label, TypeScript type, JSON value]
  const add = (label, type, value) => checks.push([label, type, value]);

  // Catalog and a paying customer.
  const product = await api.post('/v1/products', { name: `Streaming ${uid}` });
  const price = (amount, nickname) =>
    api.post('/v1/prices', {
      product: product.id,
      currency: 'usd',
      unit_amount: amount,
      nickname,
      recurring: { interval: 'month' },
    });
  const basic = await price(1000, 'Basic');
  const pro = await price(2500, 'Pro');
  const customer = await api.post('/v1/customers', {
    email: 'buyer@example.com',
    payment_method: 'pm_card_visa',
    invoice_settings: { default_payment_method: 'pm_card_visa' },
  });

  // Entitlements: features, product features.
  const featA = await api.post('/v1/entitlements/features', {
    name: 'Reports',
    lookup_key: `reports-${uid}`,
    metadata: { tier: 'pro' },
  });
  const featB = await api.post('/v1/entitlements/features', {
    name: 'API access',
    lookup_key: `api-${uid}`,
  });
  add('entitlements.feature (create)', 'Stripe.Entitlements.Feature', featA);
  add('entitlements.feature (retrieve)', 'Stripe.Entitlements.Feature',
    await api.get(`/v1/entitlements/features/${featB.id}`));
  add('entitlements.feature (update)', 'Stripe.Entitlements.Feature',
    await api.post(`/v1/entitlements/features/${featB.id}`, { name: 'API', metadata: { a: 'b' } }));
  add('entitlements.feature (list)', 'Stripe.ApiList<Stripe.Entitlements.Feature>',
    await api.get('/v1/entitlements/features', { limit: 3 }));

  const pfA = await api.post(`/v1/products/${product.id}/features`, { entitlement_feature: featA.id });
  await api.post(`/v1/products/${product.id}/features`, { entitlement_feature: featB.id });
  add('product_feature (create)', 'Stripe.ProductFeature', pfA);
  add('product_feature (retrieve)', 'Stripe.ProductFeature',
    await api.get(`/v1/products/${product.id}/features/${pfA.id}`));
  add('product_feature (list)', 'Stripe.ApiList<Stripe.ProductFeature>',
    await api.get(`/v1/products/${product.id}/features`));

  // A subscription entitles the customer.
  const sub = await api.post('/v1/subscriptions', {
    customer: customer.id,
    items: [{ price: basic.id }],
  });
  const ents = await api.get('/v1/entitlements/active_entitlements', { customer: customer.id });
  add('entitlements.active_entitlement (list)', 'Stripe.ApiList<Stripe.Entitlements.ActiveEntitlement>', ents);
  if (ents.data?.length) {
    add('entitlements.active_entitlement (retrieve)', 'Stripe.Entitlements.ActiveEntitlement',
      await api.get(`/v1/entitlements/active_entitlements/${ents.data[0].id}`));
  } else {
    fail('the subscription gave the customer no active entitlement');
  }
  add('entitlements.active_entitlement (list, expand[]=data.feature)',
    'Stripe.ApiList<Stripe.Entitlements.ActiveEntitlement>',
    await api.get('/v1/entitlements/active_entitlements', {
      customer: customer.id,
      expand: ['data.feature'],
    }));
  const summaryEvents = await api.get('/v1/events', {
    type: 'entitlements.active_entitlement_summary.updated',
    limit: 100,
  });
  const summaryEvent = (summaryEvents.data || []).find((e) => e.data?.object?.customer === customer.id);
  if (summaryEvent) {
    add('entitlements.active_entitlement_summary (event data.object)',
      'Stripe.Entitlements.ActiveEntitlementSummary', summaryEvent.data.object);
    add('event entitlements.active_entitlement_summary.updated',
      'Stripe.EntitlementsActiveEntitlementSummaryUpdatedEvent', summaryEvent);
  } else {
    fail('no entitlements.active_entitlement_summary.updated event for the customer');
  }

  // Customer portal: configurations and sessions.
  const cfg = await api.post('/v1/billing_portal/configurations', {
    business_profile: { headline: 'Streaming', privacy_policy_url: 'https://shop.example/privacy' },
    default_return_url: 'https://shop.example/account',
    features: {
      customer_update: { enabled: true, allowed_updates: ['email', 'address'] },
      invoice_history: { enabled: true },
      payment_method_update: { enabled: true },
      subscription_cancel: {
        enabled: true,
        mode: 'at_period_end',
        cancellation_reason: { enabled: true, options: ['too_expensive', 'unused'] },
      },
      subscription_update: {
        enabled: true,
        default_allowed_updates: ['price'],
        proration_behavior: 'none',
        products: [{ product: product.id, prices: [basic.id, pro.id] }],
      },
    },
    metadata: { team: 'billing' },
  });
  add('billing_portal.configuration (create)', 'Stripe.BillingPortal.Configuration', cfg);
  add('billing_portal.configuration (retrieve, expand products)', 'Stripe.BillingPortal.Configuration',
    await api.get(`/v1/billing_portal/configurations/${cfg.id}`, {
      expand: ['features.subscription_update.products'],
    }));
  add('billing_portal.configuration (update)', 'Stripe.BillingPortal.Configuration',
    await api.post(`/v1/billing_portal/configurations/${cfg.id}`, {
      name: 'Main',
      business_profile: { headline: 'Streaming+' },
    }));
  add('billing_portal.configuration (list)', 'Stripe.ApiList<Stripe.BillingPortal.Configuration>',
    await api.get('/v1/billing_portal/configurations', { limit: 3 }));

  add('billing_portal.session (default configuration)', 'Stripe.BillingPortal.Session',
    await api.post('/v1/billing_portal/sessions', {
      customer: customer.id,
      return_url: 'https://shop.example/account',
    }));
  add('billing_portal.session (flow subscription_cancel)', 'Stripe.BillingPortal.Session',
    await api.post('/v1/billing_portal/sessions', {
      customer: customer.id,
      configuration: cfg.id,
      flow_data: {
        type: 'subscription_cancel',
        subscription_cancel: { subscription: sub.id },
        after_completion: { type: 'redirect', redirect: { return_url: 'https://shop.example/bye' } },
      },
    }));
  add('billing_portal.session (flow payment_method_update)', 'Stripe.BillingPortal.Session',
    await api.post('/v1/billing_portal/sessions', {
      customer: customer.id,
      flow_data: {
        type: 'payment_method_update',
        after_completion: {
          type: 'hosted_confirmation',
          hosted_confirmation: { custom_message: 'All set, thanks!' },
        },
      },
    }));
  const item = sub.items?.data?.[0]?.id;
  add('billing_portal.session (flow subscription_update_confirm)', 'Stripe.BillingPortal.Session',
    await api.post('/v1/billing_portal/sessions', {
      customer: customer.id,
      flow_data: {
        type: 'subscription_update_confirm',
        subscription_update_confirm: { subscription: sub.id, items: [{ id: item, price: pro.id }] },
      },
    }));

  // Billing meters: meter, meter event, event summaries.
  const meter = await api.post('/v1/billing/meters', {
    display_name: `API calls ${uid}`,
    event_name: `api_calls_${uid}`,
    default_aggregation: { formula: 'sum' },
  });
  add('billing.meter (create)', 'Stripe.Billing.Meter', meter);
  add('billing.meter (retrieve)', 'Stripe.Billing.Meter', await api.get(`/v1/billing/meters/${meter.id}`));
  add('billing.meter (update)', 'Stripe.Billing.Meter',
    await api.post(`/v1/billing/meters/${meter.id}`, { display_name: 'Renamed' }));
  add('billing.meter (list)', 'Stripe.ApiList<Stripe.Billing.Meter>',
    await api.get('/v1/billing/meters', { limit: 3 }));
  const now = Math.floor(Date.now() / 1000);
  const ev = await api.post('/v1/billing/meter_events', {
    event_name: meter.event_name,
    payload: { stripe_customer_id: customer.id, value: '7' },
    timestamp: now - 30,
  });
  add('billing.meter_event (create)', 'Stripe.Billing.MeterEvent', ev);
  const start = Math.floor((now - 3600) / 60) * 60;
  const end = Math.ceil((now + 60) / 60) * 60;
  const sums = await api.get(`/v1/billing/meters/${meter.id}/event_summaries`, {
    customer: customer.id,
    start_time: start,
    end_time: end,
  });
  add('billing.meter_event_summary (list)', 'Stripe.ApiList<Stripe.Billing.MeterEventSummary>', sums);
  if (!sums.data?.length) fail('the meter event summaries list is empty');
  add('billing.meter_event_summary (list, value_grouping_window=hour)',
    'Stripe.ApiList<Stripe.Billing.MeterEventSummary>',
    await api.get(`/v1/billing/meters/${meter.id}/event_summaries`, {
      customer: customer.id,
      start_time: Math.floor(start / 3600) * 3600,
      end_time: Math.ceil(end / 3600) * 3600,
      value_grouping_window: 'hour',
    }));
  add('billing.meter (deactivate)', 'Stripe.Billing.Meter',
    await api.post(`/v1/billing/meters/${meter.id}/deactivate`));

  // The events these objects produced, typed as the library's event classes.
  const eventTypes = {
    'billing_portal.configuration.created': 'Stripe.BillingPortalConfigurationCreatedEvent',
    'billing_portal.configuration.updated': 'Stripe.BillingPortalConfigurationUpdatedEvent',
    'billing_portal.session.created': 'Stripe.BillingPortalSessionCreatedEvent',
    'billing.meter.created': 'Stripe.BillingMeterCreatedEvent',
    'billing.meter.updated': 'Stripe.BillingMeterUpdatedEvent',
    'billing.meter.deactivated': 'Stripe.BillingMeterDeactivatedEvent',
  };
  for (const [type, ts] of Object.entries(eventTypes)) {
    const list = await api.get('/v1/events', { type, limit: 1 });
    if (list.data?.length) add(`event ${type}`, ts, list.data[0]);
    else console.log(`note: the sandbox sent no ${type} event (not checked)`);
  }
  return checks;
}

// ---- the type check -------------------------------------------------------------------------

// `deep`: every field optional at every depth, so that a missing field (which the compiler reports
// once for the whole object, without looking inside it) does not hide wrong types or unknown
// fields deeper down. Used only to list everything after the strict pass failed.
function writeTs(checks, file, deep = false) {
  const lines = [
    '// Generated by check.mjs: the Stripe sandbox\'s answers, typed by Stripe\'s Node library.',
    "import Stripe from 'stripe';",
    '',
  ];
  if (deep) {
    lines.push(
      'type DeepPartial<T> = T extends string | number | boolean | bigint | null | undefined ? T',
      '  : T extends readonly (infer U)[] ? DeepPartial<U>[]',
      '  : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;',
      '',
    );
  }
  checks.forEach(([label, type, value], i) => {
    lines.push(`// ${label}`);
    const t = deep ? `DeepPartial<${type}>` : type;
    lines.push(`export const v${i}: ${t} = ${JSON.stringify(value, null, 2)};`);
    lines.push('');
  });
  writeFileSync(file, lines.join('\n'));
}

function tsc(file) {
  const bin = require.resolve('typescript/bin/tsc');
  const args = [
    bin, '--noEmit', '--strict', '--skipLibCheck',
    '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext',
    '--pretty', 'false', file,
  ];
  const r = spawnSync(process.execPath, args, { cwd: here, encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout || ''}${r.stderr || ''}`.trim() };
}

async function main() {
  let sandbox;
  let checks;
  try {
    sandbox = await startSandbox();
    checks = await collect(client(sandbox.base));
  } finally {
    sandbox?.child.kill();
  }
  const outDir = path.join(here, 'out');
  mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, 'objects.mts');
  writeTs(checks, file);

  const r = tsc(file);
  if (r.status !== 0) {
    console.error(`${r.output}\n`);
    const deepFile = path.join(outDir, 'objects-deep.mts');
    writeTs(checks, deepFile, true);
    const d = tsc(deepFile);
    if (d.status !== 0) {
      console.error('Wrong types and unknown fields, missing fields aside ' +
        `(${path.relative(process.cwd(), deepFile)}):\n${d.output}\n`);
    }
    fail(`stripe-types: the sandbox's objects do not match the stripe package's types ` +
      `(${checks.length} answers checked; generated file: ${path.relative(process.cwd(), file)})`);
    return;
  }
  if (!process.env.KEEP_TS) rmSync(outDir, { recursive: true, force: true });
  console.log(`stripe-types: ${checks.length} sandbox answers match the stripe package's types`);
  for (const [label, type] of checks) console.log(`  ok  ${label}: ${type}`);
}

main().catch((e) => {
  fail(`stripe-types: ${e.stack || e}`);
});
