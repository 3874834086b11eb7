"""Disputes: the dispute test card opens one; winning_evidence wins it, losing_evidence or close loses it."""

import pytest
import stripe

from conftest import find_events, paid_intent, wait_for


def disputed_payment(client, amount=4000):
    pi = paid_intent(client, amount, pm="pm_card_createDispute")
    ch_id = pi.latest_charge
    wait_for(lambda: client.v1.charges.retrieve(ch_id).disputed, timeout=10, what="charge.disputed")
    disputes = wait_for(lambda: client.v1.disputes.list({"charge": ch_id}).data, timeout=10,
                        what="the dispute")
    assert len(disputes) == 1
    dp = disputes[0]
    assert dp.object == "dispute" and dp.id.startswith(("du_", "dp_"))
    assert dp.charge == ch_id
    assert dp.payment_intent == pi.id
    assert dp.amount == amount and dp.currency == "usd"
    assert dp.status == "needs_response"
    assert dp.reason == "fraudulent"
    assert dp.is_charge_refundable is False
    assert dp.evidence_details.has_evidence is False
    assert dp.evidence_details.submission_count == 0
    assert isinstance(dp.evidence_details.due_by, int)
    assert len(dp.balance_transactions) == 1
    assert dp.balance_transactions[0].amount == -amount
    assert find_events(client, "charge.dispute.created", dp.id)
    return pi, dp


def test_dispute_card_opens_a_dispute(client):
    pi, dp = disputed_payment(client, 3100)
    ch = client.v1.charges.retrieve(pi.latest_charge)
    assert ch.disputed is True and ch.status == "succeeded"
    got = client.v1.disputes.retrieve(dp.id)
    assert got.id == dp.id and got.status == "needs_response"
    listed = client.v1.disputes.list({"limit": 100})
    assert dp.id in [d.id for d in listed.data]
    assert listed.url == "/v1/disputes"
    by_pi = client.v1.disputes.list({"payment_intent": pi.id})
    assert [d.id for d in by_pi.data] == [dp.id]


def test_winning_evidence_wins(client):
    pi, dp = disputed_payment(client, 4000)
    up = client.v1.disputes.update(dp.id, {"evidence": {"uncategorized_text": "winning_evidence"}})
    assert up.evidence.uncategorized_text == "winning_evidence"
    assert up.evidence_details.has_evidence is True
    assert up.evidence_details.submission_count == 1
    assert up.status in ("under_review", "won")
    won = wait_for(lambda: (lambda d: d if d.status == "won" else None)(client.v1.disputes.retrieve(dp.id)),
                   timeout=15, what="dispute won")
    assert len(won.balance_transactions) == 2  # withdrawn, then reinstated
    assert sum(bt.amount for bt in won.balance_transactions) == 0
    assert find_events(client, "charge.dispute.closed", dp.id)


def test_losing_evidence_loses(client):
    pi, dp = disputed_payment(client, 4100)
    client.v1.disputes.update(dp.id, {"evidence": {"uncategorized_text": "losing_evidence"}})
    lost = wait_for(lambda: (lambda d: d if d.status == "lost" else None)(client.v1.disputes.retrieve(dp.id)),
                    timeout=15, what="dispute lost")
    assert len(lost.balance_transactions) == 1
    assert find_events(client, "charge.dispute.closed", dp.id)


def test_close_loses(client):
    pi, dp = disputed_payment(client, 4200)
    closed = client.v1.disputes.close(dp.id)
    assert closed.status == "lost"
    assert client.v1.disputes.retrieve(dp.id).status == "lost"
    assert find_events(client, "charge.dispute.closed", dp.id)


def test_evidence_saved_without_submitting(client):
    pi, dp = disputed_payment(client, 4300)
    up = client.v1.disputes.update(dp.id, {"evidence": {"uncategorized_text": "winning_evidence"},
                                           "submit": False})
    assert up.status == "needs_response"
    assert up.evidence_details.submission_count == 0
    assert up.evidence.uncategorized_text == "winning_evidence"


def test_no_such_dispute(client):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.disputes.retrieve("du_doesnotexist")
    assert ei.value.http_status == 404 and ei.value.code == "resource_missing"
