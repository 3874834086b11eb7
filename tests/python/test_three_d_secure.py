"""3-D Secure: requires_action with next_action.redirect_to_url, then the buyer approves or fails."""

import pytest
import requests
import stripe

from conftest import find_events
from test_declines import raw_card

RETURN_URL = "https://shop.example.com/return"

# Stripe's 3DS test cards: "always authenticate" and "authenticate unless set up" (4000002500003155)
THREE_DS = [
    ("pm_card_authenticationRequired", None),
    ("pm_card_authenticationRequiredOnSetup", None),
    (None, "4000002500003155"),
    (None, "4000002760003184"),
]


def start_3ds(client, pm=None, number=None, amount=2500, **extra):
    params = {"amount": amount, "currency": "usd", "payment_method_types": ["card"],
              "confirm": True, "return_url": RETURN_URL}
    if pm:
        params["payment_method"] = pm
    else:
        params["payment_method_data"] = raw_card(number)
    params.update(extra)
    pi = client.v1.payment_intents.create(params)
    assert pi.status == "requires_action", pi
    assert pi.next_action.type == "redirect_to_url"
    url = pi.next_action.redirect_to_url.url
    assert isinstance(url, str) and url.startswith("http")
    assert pi.next_action.redirect_to_url.return_url == RETURN_URL
    assert pi.amount_received == 0 and pi.amount_capturable == 0
    assert pi.last_payment_error is None
    return pi


def authenticate(sandbox, pi_id, outcome):
    r = sandbox.control("POST", f"/_sandbox/payment_intents/{pi_id}/authenticate", {"outcome": outcome})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("pm,number", THREE_DS, ids=[p or n for p, n in THREE_DS])
def test_3ds_approved(client, sandbox, pm, number):
    pi = start_3ds(client, pm, number)
    assert find_events(client, "payment_intent.requires_action", pi.id)
    authenticate(sandbox, pi.id, "approve")
    done = client.v1.payment_intents.retrieve(pi.id)
    assert done.status == "succeeded"
    assert done.amount_received == 2500
    assert done.next_action is None
    ch = client.v1.charges.retrieve(done.latest_charge)
    assert ch.status == "succeeded" and ch.paid is True
    assert find_events(client, "payment_intent.succeeded", pi.id)


def test_3ds_failed_then_retry(client, sandbox):
    pi = start_3ds(client, "pm_card_authenticationRequired", amount=2700)
    authenticate(sandbox, pi.id, "fail")
    failed = client.v1.payment_intents.retrieve(pi.id)
    assert failed.status == "requires_payment_method"
    assert failed.next_action is None
    assert failed.last_payment_error is not None
    assert failed.last_payment_error.code == "payment_intent_authentication_failure"
    assert failed.amount_received == 0
    assert find_events(client, "payment_intent.payment_failed", pi.id)
    ok = client.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    assert ok.status == "succeeded" and ok.last_payment_error is None


def test_3ds_manual_capture_lands_in_requires_capture(client, sandbox):
    pi = start_3ds(client, "pm_card_authenticationRequired", amount=3300, capture_method="manual")
    authenticate(sandbox, pi.id, "approve")
    got = client.v1.payment_intents.retrieve(pi.id)
    assert got.status == "requires_capture" and got.amount_capturable == 3300


def test_3ds_page_is_html(client):
    pi = start_3ds(client, "pm_card_authenticationRequired")
    r = requests.get(pi.next_action.redirect_to_url.url, timeout=10, allow_redirects=True)
    assert r.status_code == 200
    assert r.headers.get("content-type", "").startswith("text/html")
    assert "<html" in r.text.lower()


def test_3ds_cancel_while_requires_action(client):
    pi = start_3ds(client, "pm_card_authenticationRequired")
    c = client.v1.payment_intents.cancel(pi.id)
    assert c.status == "canceled" and c.next_action is None


def test_plain_card_needs_no_action(client):
    pi = client.v1.payment_intents.create({"amount": 1000, "currency": "usd", "payment_method_types": ["card"],
                                           "payment_method": "pm_card_visa", "confirm": True,
                                           "return_url": RETURN_URL})
    assert pi.status == "succeeded" and pi.next_action is None
