"""The Python client `tollgate-client` (clients/python, issue 28) against a real `tollgate serve`
on its built-in Stripe sandbox, on SQLite and PostgreSQL: a Checkout purchase makes `watch`
fire with the permission valid; ETags, `has`, grants, Stripe links, typed errors, the offline
answer; its wire field names against the served /openapi.json; retries (with an in-process
transport, as a server rarely answers 429/503 on demand)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

import httpx
import pytest
import requests

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python", "src"))

from tollgate_client import PermissionSet, Tollgate, TollgateError  # noqa: E402

from conftest import TOLLGATE_BIN, start_tollgate, stop_tollgate, wait_for  # noqa: E402


def _public_key(tg) -> str:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    if tg.db == "postgres":
        env.setdefault("TOLLGATE_MASTER_KEY", "5a" * 32)
    args = [TOLLGATE_BIN, "keys", "create", "--kind", "public", "--data-dir", tg.data_dir]
    if tg.database_url:
        args += ["--database-url", tg.database_url]
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("tg_pk_"), r.stdout
    return key


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(request):
    tg = start_tollgate(request.param)
    try:
        price = tg.stripe("POST", "/v1/prices", data={
            "currency": "usd", "unit_amount": "900", "product_data[name]": "Premium"}).json()
        r = tg.http("POST", "/v1/skus", json_body={"identifier": "premium_life", "store": "stripe",
                                                   "product_id": price["product"], "kind": "one_time"})
        assert r.status_code == 201, r.text
        r = tg.http("POST", "/v1/permissions/definitions",
                    json_body={"identifier": "premium", "skus": ["premium_life"]})
        assert r.status_code == 201, r.text
        yield {"tg": tg, "pk": _public_key(tg), "price": price}
    finally:
        stop_tollgate(tg)


def _buy(tg, price: Dict[str, Any], customid: str, customer: str = "") -> None:
    """A Checkout Session for `customid` (or a Stripe customer), paid by the buyer."""
    data = {"mode": "payment", "line_items[0][price]": price["id"], "line_items[0][quantity]": "1",
            "success_url": "https://shop.example/done"}
    if customer:
        data["customer"] = customer
    else:
        data.update({"metadata[customid]": customid, "customer_creation": "always",
                     "customer_email": f"{customid}@example.com"})
    cs = tg.stripe("POST", "/v1/checkout/sessions", data=data).json()
    r = requests.post(f"{tg.sandbox_base}/_sandbox/checkout_sessions/{cs['id']}/complete",
                      json={"payment_method": "pm_card_visa"}, timeout=30)
    assert r.status_code == 200, r.text


def test_watch_fires_with_premium_valid_after_a_checkout_purchase(world):
    tg, pk = world["tg"], world["pk"]
    app = Tollgate(tg.base, pk)
    seen: List[PermissionSet] = []
    unlocked = threading.Event()

    def on_change(s: PermissionSet) -> None:
        seen.append(s)
        if s.has("premium"):
            unlocked.set()

    stop = app.watch("py-buyer", on_change)
    try:
        wait_for(lambda: seen, timeout=10, what="the first set")
        assert not seen[0].has("premium")
        assert seen[0].customid == "py-buyer"
        _buy(tg, world["price"], "py-buyer")
        paid = time.monotonic()
        assert unlocked.wait(20), [s for s in seen]
        print(f"watch fired {1000 * (time.monotonic() - paid):.0f} ms after the buyer paid")
    finally:
        stop()
    last = seen[-1]
    assert last.stale is False and last.etag not in (None, "0")
    p = next(p for p in last.permissions if p.identifier == "premium")
    assert p.is_valid and p.expires_at is None
    assert [s.identifier for s in p.skus] == ["premium_life"]
    assert app.has("py-buyer", "premium") is True
    assert app.has("py-buyer", "gold") is False


def test_etags_grants_links_and_typed_errors(world):
    tg, pk = world["tg"], world["pk"]
    statuses: List[int] = []

    class Counting(httpx.HTTPTransport):
        def handle_request(self, request):
            r = super().handle_request(request)
            statuses.append(r.status_code)
            return r

    app = Tollgate(tg.base, pk, transport=Counting())
    server = Tollgate(tg.base, tg.api_key)
    ends = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=7)
    g = server.grants.create("py-granted", permission="premium", expires_at=ends, reason="support ticket 42")
    assert g.permission == "premium" and g.customid == "py-granted"
    assert g.expires_at == ends and g.revoked_at is None
    first = app.permissions("py-granted")
    again = app.permissions("py-granted")
    assert statuses == [200, 304], statuses
    assert again.permissions == first.permissions and first.has("premium")
    assert first.permissions[0].expires_at == ends

    # A Stripe customer who bought before signing in, linked afterwards.
    cus = tg.stripe("POST", "/v1/customers", data={"email": "early@example.com"}).json()
    _buy(tg, world["price"], "", customer=cus["id"])
    time.sleep(1.5)
    link = server.connect_stripe("py-linked", cus["id"])
    assert (link.customid, link.customer_id, link.moved_from) == ("py-linked", cus["id"], None)
    assert any(p.identifier == "premium" and p.is_valid for p in link.permissions), link

    with pytest.raises(TollgateError) as e:
        app.grants.create("x", permission="premium", reason="no")
    assert (e.value.status, e.value.code) == (403, "forbidden")
    with pytest.raises(TollgateError) as e:
        server.grants.create("x", permission="premium", reason="")
    assert e.value.status == 400 and e.value.details[0].pointer == "/reason"
    with pytest.raises(TollgateError) as e:
        Tollgate(tg.base, "tg_pk_nobody_nothing").permissions("x")
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    with pytest.raises(TollgateError) as e:
        server.consume("py-granted", "premium", 1)
    assert 400 <= e.value.status < 500


def test_offline_answers_the_last_set_flagged_stale(world):
    tg, pk = world["tg"], world["pk"]
    offline = {"on": False}

    class Flaky(httpx.HTTPTransport):
        def handle_request(self, request):
            if offline["on"]:
                raise httpx.ConnectError("offline", request=request)
            return super().handle_request(request)

    app = Tollgate(tg.base, pk, transport=Flaky(), max_retries=1, retry_base=0.01)
    Tollgate(tg.base, tg.api_key).grants.create("py-offline", permission="premium", reason="x")
    assert app.permissions("py-offline").stale is False
    offline["on"] = True
    s = app.permissions("py-offline")
    assert s.stale is True and s.has("premium")
    with pytest.raises(TollgateError) as e:
        app.permissions("never-seen")
    assert (e.value.status, e.value.code) == (0, "network_error")


def _resolve(doc: Dict[str, Any], schema: Dict[str, Any]) -> Dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = doc["components"]["schemas"][name]
    return schema


def _props(doc, schema) -> Dict[str, Any]:
    schema = _resolve(doc, schema)
    props = dict(schema.get("properties") or {})
    for part in schema.get("allOf") or []:
        props.update(_props(doc, part))
    return props


def test_the_client_reads_the_fields_the_document_names(world):
    doc = httpx.get(world["tg"].base + "/openapi.json").json()
    check = doc["paths"]["/v1/permissions"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    answer = _props(doc, check)
    assert {"customid", "permissions"} <= answer.keys(), answer.keys()
    permission = _props(doc, answer["permissions"]["items"])
    assert {"identifier", "is_valid", "entitlement", "expires_at", "skuarray"} <= permission.keys()
    grant_in = _props(doc, doc["paths"]["/v1/subscribers/{customid}/grants"]["post"]["requestBody"]
                      ["content"]["application/json"]["schema"])
    assert {"permission", "expires_at", "reason"} <= grant_in.keys(), grant_in.keys()
    connect_in = _props(doc, doc["paths"]["/v1/connect_stripe"]["post"]["requestBody"]
                        ["content"]["application/json"]["schema"])
    assert {"customid", "customerid", "force", "connection_id"} <= connect_in.keys()
    assert "/v1/permissions/stream" in doc["paths"]


def _envelope(status: int, code: str, **extra) -> Dict[str, Any]:
    return {"type": "error", "code": code, "status": status, "message": code, "details": [], **extra}


def test_retries_honour_retry_after_and_keep_the_idempotency_key():
    seen: List[httpx.Request] = []
    answers = [
        httpx.Response(503, json=_envelope(503, "server_error")),
        httpx.Response(429, json=_envelope(429, "too_many_requests"), headers={"retry-after": "1"}),
        httpx.Response(200, json={"balance": 95, "consumed": 5, "ledger_id": "led_1"}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    tg = Tollgate("https://tollgate.test", "tg_sk_x", transport=httpx.MockTransport(handler), retry_base=0.01)
    started = time.monotonic()
    c = tg.consume("user-7", "ai_credits", 5)
    assert time.monotonic() - started >= 0.95, "waited the Retry-After second"
    assert (c.balance, c.consumed, c.ledger_id) == (95, 5, "led_1")
    keys = {r.headers["idempotency-key"] for r in seen}
    assert len(seen) == 3 and len(keys) == 1
    assert seen[0].url.path == "/v1/permissions/ai_credits/consume"

    too_long = [httpx.Response(429, json=_envelope(429, "too_many_requests"), headers={"retry-after": "120"})]
    tg2 = Tollgate("https://tollgate.test", "tg_sk_x", transport=httpx.MockTransport(lambda r: too_long[0]))
    with pytest.raises(TollgateError) as e:
        tg2.permissions("u")
    assert (e.value.status, e.value.retry_after) == (429, 120.0)

    short = [httpx.Response(402, json=_envelope(402, "insufficient_balance", balance=3))]
    tg3 = Tollgate("https://tollgate.test", "tg_sk_x", transport=httpx.MockTransport(lambda r: short[0]))
    with pytest.raises(TollgateError) as e:
        tg3.consume("u", "ai_credits", 5)
    assert (e.value.code, e.value.balance, e.value.retryable) == ("insufficient_balance", 3, False)


def test_watch_waits_what_a_429_says_then_streams():
    import json as _json
    recorded = _json.loads(open(os.path.join(os.path.dirname(__file__), "..", "..", "clients", "typescript",
                                             "test", "recorded.json")).read())["stream"]
    at: List[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        at.append(time.monotonic())
        if len(at) == 1:
            return httpx.Response(429, json=_envelope(429, "too_many_requests"), headers={"retry-after": "1"})
        assert request.headers["authorization"] == "Bearer tg_pk_x"
        assert request.url.path == "/v1/permissions/stream"
        return httpx.Response(200, content=recorded["body"].encode(), headers={"content-type": "text/event-stream"})

    tg = Tollgate("https://tollgate.test", "tg_pk_x", transport=httpx.MockTransport(handler))
    sets: List[PermissionSet] = []
    errors: List[TollgateError] = []
    stop = tg.watch("user-7", sets.append, on_error=errors.append)
    try:
        wait_for(lambda: len(sets) >= 2, timeout=10, what="two sets")
    finally:
        stop()
    assert errors[0].status == 429
    assert at[1] - at[0] >= 0.95, "waited the Retry-After second"
    assert not sets[0].has("premium") and sets[1].has("premium") and sets[1].etag == "1"
