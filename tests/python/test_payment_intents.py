"""Payment intents: create / retrieve / update / confirm / capture (full and partial) / cancel / list."""

import stripe
import pytest

from conftest import find_events, paid_intent


def card_intent(client, amount=2000, **extra):
    params = {"amount": amount, "currency": "usd", "payment_method_types": ["card"]}
    params.update(extra)
    return client.v1.payment_intents.create(params)


def test_create_retrieve_update(client, uid):
    pi = card_intent(client, 2000, description="order " + uid, metadata={"order": uid})
    assert pi.object == "payment_intent"
    assert pi.id.startswith("pi_")
    assert pi.status == "requires_payment_method"
    assert pi.amount == 2000 and pi.currency == "usd"
    assert pi.amount_capturable == 0 and pi.amount_received == 0
    assert pi.confirmation_method == "automatic"
    assert pi.latest_charge is None and pi.last_payment_error is None and pi.next_action is None
    assert pi.livemode is False
    assert pi.payment_method_types == ["card"]
    assert pi.client_secret.startswith(pi.id + "_secret_")
    assert pi.metadata.to_dict() == {"order": uid}

    got = client.v1.payment_intents.retrieve(pi.id)
    assert got.to_dict() == pi.to_dict()

    up = client.v1.payment_intents.update(pi.id, {"amount": 2500, "metadata": {"step": "2"},
                                                  "description": "changed"})
    assert up.amount == 2500
    assert up.description == "changed"
    assert up.metadata.to_dict() == {"order": uid, "step": "2"}
    assert up.status == "requires_payment_method"


def test_default_capture_method_is_automatic_async(client):
    # Since API version 2024-04-10 a new intent's default capture_method is `automatic_async`.
    pi = card_intent(client, 1000)
    assert pi.capture_method == "automatic_async"


def test_automatic_payment_methods_default(client):
    # Since 2023-08-16, an intent created without payment_method_types has automatic payment methods.
    pi = client.v1.payment_intents.create({"amount": 1500, "currency": "usd"})
    assert pi.automatic_payment_methods is not None and pi.automatic_payment_methods.enabled is True
    assert "card" in pi.payment_method_types


def test_confirm_succeeds_and_creates_a_charge(client):
    pi = card_intent(client, 3100)
    done = client.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    assert done.status == "succeeded"
    assert done.amount_received == 3100
    assert done.amount_capturable == 0
    assert done.last_payment_error is None and done.next_action is None
    # the test alias becomes a real PaymentMethod
    assert isinstance(done.payment_method, str) and done.payment_method.startswith("pm_")
    assert done.payment_method != "pm_card_visa"
    assert isinstance(done.latest_charge, str) and done.latest_charge.startswith("ch_")

    ch = client.v1.charges.retrieve(done.latest_charge)
    assert ch.status == "succeeded" and ch.paid is True and ch.captured is True
    assert ch.amount == 3100 and ch.amount_captured == 3100 and ch.amount_refunded == 0
    assert ch.refunded is False and ch.disputed is False
    assert ch.payment_intent == pi.id
    assert ch.payment_method == done.payment_method
    assert ch.payment_method_details.type == "card"
    assert ch.payment_method_details.card.last4 == "4242"
    assert ch.payment_method_details.card.brand == "visa"
    assert ch.outcome.type == "authorized"
    assert ch.outcome.network_status == "approved_by_network"
    assert ch.failure_code is None

    pm = client.v1.payment_methods.retrieve(done.payment_method)
    assert pm.type == "card" and pm.card.last4 == "4242" and pm.card.brand == "visa"

    assert find_events(client, "payment_intent.succeeded", pi.id)
    assert find_events(client, "charge.succeeded", ch.id)
    assert find_events(client, "payment_intent.created", pi.id)


def test_create_with_confirm_true(client):
    pi = paid_intent(client, 1234)
    assert pi.amount_received == 1234
    assert pi.latest_charge.startswith("ch_")


def test_expand_latest_charge(client, sandbox):
    pi = paid_intent(client, 1800)
    got = client.v1.payment_intents.retrieve(pi.id, {"expand": ["latest_charge"]})
    assert isinstance(got.latest_charge, stripe.Charge)
    assert got.latest_charge.id == pi.latest_charge
    assert got.latest_charge.amount == 1800
    # Stripe's documented form `expand[]=` works too
    r = sandbox.http("GET", f"/v1/payment_intents/{pi.id}", params=[("expand[]", "latest_charge")])
    assert r.status_code == 200, r.text
    assert r.json()["latest_charge"]["object"] == "charge"
    # and a confirm can expand its answer
    pi2 = card_intent(client, 900)
    done = client.v1.payment_intents.confirm(pi2.id, {"payment_method": "pm_card_visa",
                                                      "expand": ["latest_charge"]})
    assert done.latest_charge.object == "charge" and done.latest_charge.amount == 900


def test_nested_expand(client):
    pi = paid_intent(client, 1900)
    got = client.v1.payment_intents.retrieve(pi.id, {"expand": ["latest_charge.balance_transaction",
                                                                "payment_method"]})
    bt = got.latest_charge.balance_transaction
    assert bt.object == "balance_transaction" and bt.amount == 1900 and bt.source == pi.latest_charge
    assert bt.net == bt.amount - bt.fee
    assert got.payment_method.object == "payment_method"


def test_manual_capture_partial_releases_the_rest(client):
    pi = card_intent(client, 5000, capture_method="manual")
    assert pi.capture_method == "manual"
    auth = client.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    assert auth.status == "requires_capture"
    assert auth.amount_capturable == 5000
    assert auth.amount_received == 0
    ch = client.v1.charges.retrieve(auth.latest_charge)
    assert ch.captured is False and ch.paid is True and ch.status == "succeeded"
    assert ch.amount_captured == 0
    assert find_events(client, "payment_intent.amount_capturable_updated", pi.id)

    done = client.v1.payment_intents.capture(pi.id, {"amount_to_capture": 3000})
    assert done.status == "succeeded"
    assert done.amount_received == 3000
    assert done.amount_capturable == 0
    ch = client.v1.charges.retrieve(done.latest_charge)
    assert ch.captured is True and ch.amount_captured == 3000 and ch.amount == 5000
    assert find_events(client, "charge.captured", ch.id)

    # one capture per intent: the rest was released
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.payment_intents.capture(pi.id, {"amount_to_capture": 1000})
    assert ei.value.http_status == 400
    assert ei.value.code == "payment_intent_unexpected_state"
    assert ei.value.json_body["error"]["type"] == "invalid_request_error"
    assert client.v1.payment_intents.retrieve(pi.id).amount_received == 3000


def test_manual_capture_full(client):
    pi = card_intent(client, 4200, capture_method="manual", payment_method="pm_card_visa", confirm=True)
    assert pi.status == "requires_capture"
    done = client.v1.payment_intents.capture(pi.id)
    assert done.status == "succeeded" and done.amount_received == 4200 and done.amount_capturable == 0


def test_capture_more_than_capturable_is_refused(client):
    pi = card_intent(client, 1000, capture_method="manual", payment_method="pm_card_visa", confirm=True)
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.payment_intents.capture(pi.id, {"amount_to_capture": 1500})
    assert ei.value.http_status == 400
    assert client.v1.payment_intents.retrieve(pi.id).status == "requires_capture"


def test_capture_of_automatic_intent_is_refused(client):
    pi = paid_intent(client, 1000)
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.payment_intents.capture(pi.id)
    assert ei.value.code == "payment_intent_unexpected_state"


def test_cancel_with_reason(client):
    pi = card_intent(client, 700)
    c = client.v1.payment_intents.cancel(pi.id, {"cancellation_reason": "requested_by_customer"})
    assert c.status == "canceled"
    assert c.cancellation_reason == "requested_by_customer"
    assert isinstance(c.canceled_at, int) and c.canceled_at >= pi.created
    assert find_events(client, "payment_intent.canceled", pi.id)
    # a canceled intent can no longer be confirmed
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    assert ei.value.code == "payment_intent_unexpected_state"


def test_cancel_authorized_intent_releases_it(client):
    pi = card_intent(client, 2600, capture_method="manual", payment_method="pm_card_visa", confirm=True)
    c = client.v1.payment_intents.cancel(pi.id, {"cancellation_reason": "abandoned"})
    assert c.status == "canceled" and c.cancellation_reason == "abandoned"
    assert c.amount_capturable == 0 and c.amount_received == 0


def test_cancel_succeeded_intent_is_refused(client):
    pi = paid_intent(client, 500)
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.payment_intents.cancel(pi.id)
    assert ei.value.code == "payment_intent_unexpected_state"
    assert ei.value.http_status == 400


def test_list_payment_intents_by_customer(client, uid):
    cus = client.v1.customers.create({"email": f"{uid}@example.com"})
    a = paid_intent(client, 1100, customer=cus.id)
    b = card_intent(client, 1200, customer=cus.id)
    got = client.v1.payment_intents.list({"customer": cus.id})
    assert [p.id for p in got.data] == [b.id, a.id]  # newest first
    assert got.has_more is False
    assert got.url == "/v1/payment_intents"


def test_charges_list_by_payment_intent(client):
    pi = paid_intent(client, 1300)
    got = client.v1.charges.list({"payment_intent": pi.id})
    assert [c.id for c in got.data] == [pi.latest_charge]
