"""Stripe-Signature headers made by Stripe's official Python library are accepted by Tollgate's
webhook endpoint (issue 5), and its own verifier agrees with Tollgate on what is forged.

`stripe.WebhookSignature` is the library's signing code: `_compute_signature` is what
`stripe.Webhook.construct_event` checks against, so a header built from it is byte for byte
what the library considers valid (the test checks that too, with the public verifier).
Runs on SQLite and PostgreSQL (the `tollgate` fixture).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import stripe

from conftest import Sandbox, Tollgate, start_tollgate, stop_tollgate, wait_for

SECRET = "whsec_" + "pythonlibrarysecret0123456789"


def official_header(payload: str, secret: str, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    sig = stripe.WebhookSignature._compute_signature(f"{t}.{payload}", secret)
    header = f"t={t},{stripe.WebhookSignature.EXPECTED_SCHEME}={sig}"
    # The library's own verifier accepts what it made.
    stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=300)
    return header


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hooked(request, sandbox: Sandbox):
    """A server whose Stripe is the standalone sandbox, with a connection whose webhook secret
    we know: (server, connection id)."""
    tg = start_tollgate(request.param, "--stripe-api-base", sandbox.base)
    r = tg.http("POST", "/connections", json_body={"secret_key": sandbox.secret_key,
                                                   "publishable_key": sandbox.publishable_key,
                                                   "webhook_secret": SECRET})
    assert r.status_code == 201, r.text
    yield tg, r.json()["id"]
    stop_tollgate(tg)


def authorized_intent(tg: Tollgate, sandbox: Sandbox, conn: str) -> tuple[dict, dict]:
    tx = tg.http("POST", "/transactions", json_body={
        "amount": 1234, "currency": "USD", "intent": "authorize", "payment_service_id": conn,
        "payment_method": {"method": "card", "redirect_url": "https://example.com/cb"}})
    assert tx.status_code == 201, tx.text
    tx = tx.json()
    pi = tx["additional_identifiers"]["payment_id"]
    r = sandbox.http("POST", f"/v1/payment_intents/{pi}/confirm", key=sandbox.publishable_key,
                       data={"client_secret": tx["payment_service_transaction_id"], "payment_method": "pm_card_visa"})
    assert r.status_code == 200, r.text
    return tx, r.json()


def test_official_library_signatures_are_accepted(hooked, sandbox: Sandbox):
    tg, conn = hooked
    tx, pi = authorized_intent(tg, sandbox, conn)
    evt_id = "evt_pylib_" + uuid.uuid4().hex[:16]
    event = {"id": evt_id, "object": "event", "api_version": "2026-10-28.endive",
             "created": int(time.time()), "type": "payment_intent.amount_capturable_updated",
             "data": {"object": pi}, "livemode": False, "pending_webhooks": 1,
             "request": {"id": None, "idempotency_key": None}}
    payload = json.dumps(event, indent=2)
    url = f"/webhooks/stripe/{conn}"

    # Forged: signed by the library with another secret; its own verifier refuses it too.
    forged = official_header(payload, "whsec_someoneelse")
    try:
        stripe.WebhookSignature.verify_header(payload, forged, SECRET, tolerance=300)
        raise AssertionError("the library accepted a forged header")
    except stripe.SignatureVerificationError:
        pass
    r = tg.http("POST", url, key=None, data=payload.encode(),
                headers={"Stripe-Signature": forged, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error"

    # Stale (the library's verifier would refuse it as well): refused.
    t_old = int(time.time()) - 3600
    stale = f"t={t_old},v1=" + stripe.WebhookSignature._compute_signature(f"{t_old}.{payload}", SECRET)
    r = tg.http("POST", url, key=None, data=payload.encode(),
                headers={"Stripe-Signature": stale, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text

    # Genuine: stored and applied.
    r = tg.http("POST", url, key=None, data=payload.encode(),
                headers={"Stripe-Signature": official_header(payload, SECRET), "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["received"] is True and r.json()["duplicate"] is False

    def applied():
        rows = tg.http("GET", f"/webhook-events?stripe_event_id={evt_id}").json()["items"]
        return rows[0] if rows and rows[0]["status"] != "received" else None

    row = wait_for(applied, timeout=15, what="the event to be applied")
    assert row["status"] == "applied", row
    got = tg.http("GET", f"/transactions/{tx['id']}").json()
    assert got["status"] == "authorization_succeeded", got
    assert got["authorized_amount"] == 1234
