"""Declines: each test card raises stripe.CardError with Stripe's code and decline_code; the intent
goes back to requires_payment_method with last_payment_error, and a retry with a good card works."""

import pytest
import stripe

from conftest import find_events

# (payment method / card number, code, decline_code, message) as Stripe's testing docs and API give them
DECLINES = [
    ("pm_card_chargeDeclined", "4000000000000002", "card_declined", "generic_decline",
     "Your card was declined."),
    ("pm_card_chargeDeclinedInsufficientFunds", "4000000000009995", "card_declined", "insufficient_funds",
     "Your card has insufficient funds."),
    ("pm_card_chargeDeclinedExpiredCard", "4000000000000069", "expired_card", "expired_card",
     "Your card has expired."),
    ("pm_card_chargeDeclinedIncorrectCvc", "4000000000000127", "incorrect_cvc", "incorrect_cvc",
     "Your card's security code is incorrect."),
]


def raw_card(number):
    return {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}


def check_card_error(e: stripe.CardError, pi_id, code, decline_code, message):
    assert e.http_status == 402
    err = e.json_body["error"]
    assert err["type"] == "card_error"
    assert e.code == code and err["code"] == code
    assert err["decline_code"] == decline_code
    assert err["message"] == message
    assert err["doc_url"].endswith("/error-codes/" + code.replace("_", "-"))
    assert err["charge"].startswith("ch_")
    if code == "incorrect_cvc":
        assert err["param"] == "cvc"
    # the intent (as it is now) and the payment method come with the error
    epi = err["payment_intent"]
    assert epi["object"] == "payment_intent"
    if pi_id:
        assert epi["id"] == pi_id
    assert epi["status"] == "requires_payment_method"
    assert epi["last_payment_error"]["code"] == code
    assert epi["last_payment_error"]["decline_code"] == decline_code
    assert epi["latest_charge"] == err["charge"]
    assert err["payment_method"]["object"] == "payment_method"
    assert e.headers.get("request-id", "").startswith("req_")
    return err


def check_failed_charge(client, charge_id, code, decline_code, message):
    ch = client.v1.charges.retrieve(charge_id)
    assert ch.status == "failed"
    assert ch.paid is False and ch.captured is False
    assert ch.failure_code == code
    assert ch.failure_message == message
    assert ch.outcome.type == "issuer_declined"
    assert ch.outcome.network_status == "declined_by_network"
    assert ch.outcome.reason == decline_code
    assert ch.amount_captured == 0


@pytest.mark.parametrize("pm,number,code,decline_code,message", DECLINES, ids=[d[0] for d in DECLINES])
def test_decline_then_retry_with_another_card(client, pm, number, code, decline_code, message):
    pi = client.v1.payment_intents.create({"amount": 2000, "currency": "usd",
                                           "payment_method_types": ["card"]})
    with pytest.raises(stripe.CardError) as ei:
        client.v1.payment_intents.confirm(pi.id, {"payment_method": pm})
    err = check_card_error(ei.value, pi.id, code, decline_code, message)

    after = client.v1.payment_intents.retrieve(pi.id)
    assert after.status == "requires_payment_method"
    assert after.amount_received == 0
    lpe = after.last_payment_error
    assert lpe.type == "card_error" and lpe.code == code and lpe.decline_code == decline_code
    assert lpe.message == message
    assert lpe.payment_method.id == err["payment_method"]["id"]
    assert after.latest_charge == err["charge"]
    check_failed_charge(client, err["charge"], code, decline_code, message)
    assert find_events(client, "payment_intent.payment_failed", pi.id)
    assert find_events(client, "charge.failed", err["charge"])

    ok = client.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    assert ok.status == "succeeded"
    assert ok.amount_received == 2000
    assert ok.last_payment_error is None
    assert ok.latest_charge != err["charge"]
    # both attempts are charges of this intent, newest first
    charges = client.v1.charges.list({"payment_intent": pi.id})
    assert [c.id for c in charges.data] == [ok.latest_charge, err["charge"]]


@pytest.mark.parametrize("pm,number,code,decline_code,message", DECLINES, ids=[d[1] for d in DECLINES])
def test_decline_with_raw_card_number(client, pm, number, code, decline_code, message):
    with pytest.raises(stripe.CardError) as ei:
        client.v1.payment_intents.create({"amount": 1500, "currency": "usd",
                                          "payment_method_types": ["card"],
                                          "payment_method_data": raw_card(number), "confirm": True})
    err = check_card_error(ei.value, None, code, decline_code, message)
    assert err["payment_method"]["card"]["last4"] == number[-4:]
    pi_id = err["payment_intent"]["id"]
    pi = client.v1.payment_intents.retrieve(pi_id)
    assert pi.status == "requires_payment_method" and pi.last_payment_error.code == code
    ok = client.v1.payment_intents.confirm(pi_id, {"payment_method_data": raw_card("4242424242424242")})
    assert ok.status == "succeeded"


def test_raw_card_number_succeeds(client):
    pi = client.v1.payment_intents.create({"amount": 1500, "currency": "usd", "payment_method_types": ["card"],
                                           "payment_method_data": raw_card("4242424242424242"),
                                           "confirm": True})
    assert pi.status == "succeeded"
    pm = client.v1.payment_methods.retrieve(pi.payment_method)
    assert pm.card.last4 == "4242" and pm.card.exp_month == 12 and pm.card.exp_year == 2034


@pytest.mark.parametrize("pm_source", ["pm_card_chargeCustomerFail", "raw:4000000000000341"])
def test_card_attaches_then_fails_on_charge(client, uid, pm_source):
    cus = client.v1.customers.create({"email": f"{uid}@example.com"})
    if pm_source.startswith("raw:"):
        src = client.v1.payment_methods.create(raw_card(pm_source[4:])).id
    else:
        src = pm_source
    pm = client.v1.payment_methods.attach(src, {"customer": cus.id})
    assert pm.customer == cus.id
    assert pm.id.startswith("pm_") and pm.id != "pm_card_chargeCustomerFail"
    assert pm.card.last4 == "0341"
    listed = client.v1.payment_methods.list({"customer": cus.id, "type": "card"})
    assert [p.id for p in listed.data] == [pm.id]

    with pytest.raises(stripe.CardError) as ei:
        client.v1.payment_intents.create({"amount": 2200, "currency": "usd", "customer": cus.id,
                                          "payment_method_types": ["card"],
                                          "payment_method": pm.id, "confirm": True})
    err = check_card_error(ei.value, None, "card_declined", "generic_decline", "Your card was declined.")
    assert err["payment_method"]["id"] == pm.id
    assert err["payment_intent"]["customer"] == cus.id
