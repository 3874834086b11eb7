"""Refunds: full, partial, several partial, over-refund rejected, by charge and by payment intent."""

import pytest
import stripe

from conftest import find_events, paid_intent


def test_full_refund_by_charge(client):
    pi = paid_intent(client, 2000)
    re = client.v1.refunds.create({"charge": pi.latest_charge})
    assert re.object == "refund" and re.id.startswith("re_")
    assert re.amount == 2000 and re.currency == "usd"
    assert re.status == "succeeded"
    assert re.charge == pi.latest_charge
    assert re.payment_intent == pi.id
    assert re.reason is None
    ch = client.v1.charges.retrieve(pi.latest_charge)
    assert ch.amount_refunded == 2000 and ch.refunded is True
    assert client.v1.refunds.retrieve(re.id).to_dict() == re.to_dict()
    assert find_events(client, "charge.refunded", ch.id)
    assert find_events(client, "refund.created", re.id)
    # nothing left: another refund is refused
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.refunds.create({"charge": pi.latest_charge})
    assert ei.value.http_status == 400
    assert ei.value.code == "charge_already_refunded"
    assert ei.value.user_message == f"Charge {pi.latest_charge} has already been refunded."


def test_several_partial_refunds_by_intent_and_charge(client):
    pi = paid_intent(client, 3000)
    r1 = client.v1.refunds.create({"payment_intent": pi.id, "amount": 1000,
                                   "reason": "requested_by_customer", "metadata": {"n": "1"}})
    assert r1.amount == 1000 and r1.charge == pi.latest_charge and r1.payment_intent == pi.id
    assert r1.reason == "requested_by_customer" and r1.metadata.to_dict() == {"n": "1"}
    ch = client.v1.charges.retrieve(pi.latest_charge)
    assert ch.amount_refunded == 1000 and ch.refunded is False

    r2 = client.v1.refunds.create({"charge": pi.latest_charge, "amount": 500})
    ch = client.v1.charges.retrieve(pi.latest_charge)
    assert ch.amount_refunded == 1500 and ch.refunded is False

    r3 = client.v1.refunds.create({"payment_intent": pi.id})  # the rest
    assert r3.amount == 1500
    ch = client.v1.charges.retrieve(pi.latest_charge)
    assert ch.amount_refunded == 3000 and ch.refunded is True

    by_charge = client.v1.refunds.list({"charge": pi.latest_charge})
    assert [r.id for r in by_charge.data] == [r3.id, r2.id, r1.id]
    assert by_charge.has_more is False and by_charge.url == "/v1/refunds"
    by_pi = client.v1.refunds.list({"payment_intent": pi.id, "limit": 2})
    assert [r.id for r in by_pi.data] == [r3.id, r2.id] and by_pi.has_more is True
    # the intent keeps amount_received; refunds do not change it
    assert client.v1.payment_intents.retrieve(pi.id).amount_received == 3000


def test_over_refund_rejected(client):
    pi = paid_intent(client, 1000)
    client.v1.refunds.create({"charge": pi.latest_charge, "amount": 600})
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.refunds.create({"charge": pi.latest_charge, "amount": 500})
    assert ei.value.http_status == 400
    assert ei.value.json_body["error"]["type"] == "invalid_request_error"
    assert ei.value.json_body["error"]["param"] == "amount"
    # Stripe: "Refund amount ($5.00) is greater than unrefunded amount on charge ($4.00)"
    assert "is greater than unrefunded amount on charge" in ei.value.user_message
    ch = client.v1.charges.retrieve(pi.latest_charge)
    assert ch.amount_refunded == 600 and ch.refunded is False
    assert len(client.v1.refunds.list({"charge": pi.latest_charge}).data) == 1


def test_refund_larger_than_charge_rejected(client):
    pi = paid_intent(client, 800)
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.refunds.create({"payment_intent": pi.id, "amount": 801})
    assert ei.value.http_status == 400
    assert ei.value.json_body["error"]["type"] == "invalid_request_error"
    assert client.v1.charges.retrieve(pi.latest_charge).amount_refunded == 0


def test_refund_needs_a_charge_or_intent(client):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.refunds.create({"amount": 100})
    assert ei.value.http_status == 400


def test_refund_of_partially_captured_intent(client):
    pi = client.v1.payment_intents.create({"amount": 5000, "currency": "usd", "payment_method_types": ["card"],
                                           "capture_method": "manual", "payment_method": "pm_card_visa",
                                           "confirm": True})
    client.v1.payment_intents.capture(pi.id, {"amount_to_capture": 2000})
    # only what was captured can be refunded
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.create({"payment_intent": pi.id, "amount": 2001})
    re = client.v1.refunds.create({"payment_intent": pi.id})
    assert re.amount == 2000


def test_charge_refunds_expandable(client):
    pi = paid_intent(client, 900)
    re = client.v1.refunds.create({"charge": pi.latest_charge, "amount": 100})
    ch = client.v1.charges.retrieve(pi.latest_charge, {"expand": ["refunds"]})
    assert ch.refunds.object == "list"
    assert [r.id for r in ch.refunds.data] == [re.id]
