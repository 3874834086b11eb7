"""Black-box robustness: random form bodies, paths and headers never crash the sandbox; every
answer is JSON, a Stripe object or a Stripe-shaped error, never a 5xx (no fault was asked for).
Bounded and seeded, so a failure replays."""

import random
import string

import requests

import shapes

PATHS = ["/v1/customers", "/v1/customers/{cus}", "/v1/payment_intents", "/v1/payment_intents/{pi}",
         "/v1/payment_intents/{pi}/confirm", "/v1/payment_intents/{pi}/capture",
         "/v1/payment_intents/{pi}/cancel", "/v1/refunds", "/v1/charges", "/v1/products", "/v1/prices",
         "/v1/events", "/v1/webhook_endpoints", "/v1/disputes", "/v1/payment_methods",
         "/v1/test_helpers/customers/{cus}/fund_cash_balance", "/v1/accounts", "/v1/%ff%fe", "/v1/",
         "/v1/customers/" + "a" * 300]
KEYS = ["amount", "currency", "metadata[k]", "metadata[]", "expand[]", "expand[0]", "limit",
        "starting_after", "created[gte]", "payment_method", "confirm", "capture_method",
        "payment_method_types[]", "payment_method_data[card][number]", "items[0][price]",
        "recurring[interval]", "a[b][c][d][e][f]", "[", "]]", "a[", "email", "amount_to_capture",
        "cancellation_reason", "enabled_events[]", "url", "types[]", "type", "x" * 200]
VALUES = ["", "0", "-1", "1", "99999999999999999999999", "1e3", "usd", "true", "null", "[]", "{}",
          "pm_card_visa", "pm_card_chargeDeclined", "cus_", "pi_", "é€😀", "\x00", "a" * 5000,
          "%zz", "automatic", "manual", "2147483648", "requested_by_customer", "http://127.0.0.1:1/x"]


def rand_body(rng):
    parts = []
    for _ in range(rng.randint(0, 8)):
        parts.append((rng.choice(KEYS), rng.choice(VALUES)))
    if rng.random() < 0.1:
        return "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 200)))
    return parts


def test_random_requests_never_crash(sandbox, client):
    rng = random.Random(20261123)
    cus = client.v1.customers.create({}).id
    pi = client.v1.payment_intents.create({"amount": 500, "currency": "usd",
                                          "payment_method_types": ["card"]}).id
    for i in range(400):
        path = rng.choice(PATHS).format(cus=cus, pi=pi)
        method = rng.choice(["GET", "POST", "POST", "DELETE", "PUT", "PATCH"])
        headers = {}
        if rng.random() < 0.7:
            headers["Authorization"] = "Bearer " + rng.choice([sandbox.secret_key, "sk_test_x", "Bearer",
                                                               "rk_test_nope", sandbox.publishable_key, ""])
        if rng.random() < 0.2:
            headers["Stripe-Account"] = rng.choice(["acct_nope", "", "acct_" + "z" * 100])
        if rng.random() < 0.2:
            headers["Idempotency-Key"] = rng.choice(["k", "k" * 300, "é"])
        if rng.random() < 0.1:
            headers["Stripe-Version"] = rng.choice(["garbage", "2020-08-27", ""])
        if rng.random() < 0.1:
            headers["Content-Type"] = rng.choice(["application/json", "text/plain", "multipart/form-data"])
        body = rand_body(rng)
        try:
            r = requests.request(method, sandbox.base + path, headers={k: v.encode("utf-8").decode("latin-1")
                                                                       for k, v in headers.items()},
                                 data=body if method != "GET" else None,
                                 params=body if method == "GET" and isinstance(body, list) else None,
                                 timeout=15)
        except requests.RequestException as e:
            raise AssertionError(f"request {i} ({method} {path} {body!r:.200}) got no answer: {e}")
        assert r.status_code < 500, f"request {i}: {method} {path} {headers} {body!r:.300} -> {r.status_code} {r.text[:300]}"
        data = r.json()
        if r.status_code >= 400:
            # the error envelope itself (objects embedded in it are checked by the other tests)
            errs = [e for e in shapes.problems(data) if "→" not in e and not e.startswith("error.payment_intent.")]
            assert not errs, f"request {i}: {method} {path} {body!r:.200}: {errs}"
        assert r.headers.get("Request-Id", "").startswith("req_")
    assert sandbox.alive()
    assert client.v1.customers.retrieve(cus).id == cus
