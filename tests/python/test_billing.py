"""Billing in the sandbox: subscriptions on test clocks (renewals, dunning, trials, cancellation),
invoices, invoice payments and credit notes, driven with the official `stripe` library. Every
response is shape-checked by the harness (conftest.CheckingHTTPClient)."""

from __future__ import annotations

import time

import pytest
import requests
import stripe

from conftest import find_events, wait_for

MONTH_GUESS = 31 * 86400
DAY = 86400
HOUR = 3600


def _start_time() -> int:
    # A whole hour a little in the future: clock times far from the real one on purpose.
    return (int(time.time()) // HOUR) * HOUR + 10 * DAY


def make_clock(client: stripe.StripeClient, frozen: int, name: str = "billing test"):
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": frozen, "name": name})
    assert clock.status == "ready" and clock.frozen_time == frozen
    return clock


def advance(client: stripe.StripeClient, clock_id: str, to: int):
    c = client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": to})
    assert c.status == "advancing"
    assert c.status_details.advancing.target_frozen_time == to
    done = wait_for(lambda: (lambda x: x if x.status == "ready" else None)(
        client.v1.test_helpers.test_clocks.retrieve(clock_id)), timeout=20, what="clock ready")
    assert done.frozen_time == to
    return done


def monthly_price(client: stripe.StripeClient, amount: int = 1000, uid: str = "", **recurring):
    rec = {"interval": "month"}
    rec.update(recurring)
    return client.v1.prices.create({"currency": "usd", "unit_amount": amount, "recurring": rec,
                                    "product_data": {"name": f"Plan {uid}"}})


def clock_customer(client: stripe.StripeClient, clock_id: str, uid: str, pm: str | None = "pm_card_visa"):
    params = {"email": f"{uid}@example.com", "test_clock": clock_id}
    if pm:
        params["payment_method"] = pm
        params["invoice_settings"] = {"default_payment_method": pm}
    cus = client.v1.customers.create(params)
    assert cus.test_clock == clock_id
    if pm:
        assert cus.invoice_settings.default_payment_method.startswith("pm_")
    return cus


def sub_invoices(client: stripe.StripeClient, sub_id: str):
    return client.v1.invoices.list({"subscription": sub_id, "limit": 100}).data


def period(sub):
    item = sub["items"]["data"][0]
    return item["current_period_start"], item["current_period_end"]


def test_monthly_subscription_renews_twice_then_card_fails_retries_and_cancels(client, uid):
    t0 = _start_time()
    clock = make_clock(client, t0)
    price = monthly_price(client, 1500, uid)
    cus = clock_customer(client, clock.id, uid)

    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}],
                                          "metadata": {"uid": uid}})
    assert sub.status == "active"
    assert sub.test_clock == clock.id
    assert sub.created == t0 and sub.start_date == t0
    start, end = period(sub)
    assert start == t0 and end > t0 + 27 * DAY
    first = client.v1.invoices.retrieve(sub.latest_invoice)
    assert first.status == "paid" and first.billing_reason == "subscription_create"
    assert first.amount_paid == 1500 and first.parent.subscription_details.subscription == sub.id
    assert first.created == t0

    # Two renewals, each paid with the default card.
    for n in (1, 2):
        advance(client, clock.id, end + HOUR)
        sub = client.v1.subscriptions.retrieve(sub.id)
        assert sub.status == "active"
        new_start, new_end = period(sub)
        assert new_start == end and new_end > end
        invs = sub_invoices(client, sub.id)
        assert len(invs) == 1 + n
        latest = invs[0]
        assert latest.id == sub.latest_invoice
        assert latest.billing_reason == "subscription_cycle"
        assert latest.status == "paid" and latest.amount_paid == 1500
        assert latest.created == end
        assert latest.lines.data[0].period.start == end
        assert latest.lines.data[0].period.end == new_end
        pays = client.v1.invoice_payments.list({"invoice": latest.id}).data
        assert len(pays) == 1 and pays[0].status == "paid" and pays[0].amount_paid == 1500
        pi = client.v1.payment_intents.retrieve(pays[0].payment.payment_intent)
        assert pi.status == "succeeded" and pi.customer == cus.id and pi.created == end
        assert find_events(client, "charge.succeeded", pi.id), "charge event of the renewal"
        assert find_events(client, "payment_intent.succeeded", pi.id)
        assert find_events(client, "invoice.paid", latest.id)
        assert find_events(client, "invoice_payment.paid", pays[0].id)
        end = new_end

    # The card starts failing: past_due, retried 3, 5 and 7 days later, then canceled.
    bad = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", {"customer": cus.id})
    sub = client.v1.subscriptions.update(sub.id, {"default_payment_method": bad.id})
    assert sub.default_payment_method == bad.id
    advance(client, clock.id, end + HOUR)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "past_due"
    failing = client.v1.invoices.retrieve(sub.latest_invoice)
    assert failing.status == "open" and failing.attempt_count == 1 and failing.attempted
    assert failing.next_payment_attempt == end + 3 * DAY
    assert find_events(client, "invoice.payment_failed", failing.id)

    advance(client, clock.id, end + 3 * DAY + HOUR)
    failing = client.v1.invoices.retrieve(failing.id)
    assert failing.attempt_count == 2 and failing.next_payment_attempt == end + 8 * DAY
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"

    advance(client, clock.id, end + 16 * DAY)
    failing = client.v1.invoices.retrieve(failing.id)
    assert failing.attempt_count == 4 and failing.next_payment_attempt is None
    assert failing.status == "open"
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "canceled"
    assert sub.cancellation_details.reason == "payment_failed"
    assert sub.ended_at == end + 15 * DAY
    assert len(find_events(client, "invoice.payment_failed", failing.id)) == 4
    assert find_events(client, "customer.subscription.deleted", sub.id)
    # Ended subscriptions leave the default list but stay listable.
    assert sub.id not in [s.id for s in client.v1.subscriptions.list({"customer": cus.id}).data]
    assert sub.id in [s.id for s in client.v1.subscriptions.list({"customer": cus.id, "status": "canceled"}).data]
    # The clock keeps nothing to do.
    advance(client, clock.id, end + 20 * DAY)
    assert len(sub_invoices(client, sub.id)) == 4


def test_unpaid_after_retries_when_configured(client, sandbox, uid):
    r = sandbox.control("POST", "/_sandbox/billing_settings", {"retry_days": [1], "after_retries": "unpaid"})
    assert r.status_code == 200, r.text
    assert r.json() == {"retry_days": [1], "after_retries": "unpaid"}
    try:
        t0 = _start_time()
        clock = make_clock(client, t0)
        price = monthly_price(client, 900, uid)
        cus = clock_customer(client, clock.id, uid, pm="pm_card_chargeCustomerFail")
        sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}]})
        # allow_incomplete: the first payment fails, the subscription is incomplete, not an error.
        assert sub.status == "incomplete"
        inv = client.v1.invoices.retrieve(sub.latest_invoice)
        assert inv.status == "open" and inv.attempt_count == 1
        # The customer pays with a working card.
        good = client.v1.payment_methods.attach("pm_card_visa", {"customer": cus.id})
        paid = client.v1.invoices.pay(inv.id, {"payment_method": good.id})
        assert paid.status == "paid"
        assert client.v1.subscriptions.retrieve(sub.id).status == "active"
        _, end = period(sub)
        advance(client, clock.id, end + 2 * DAY)
        sub = client.v1.subscriptions.retrieve(sub.id)
        assert sub.status == "unpaid"
        last = client.v1.invoices.retrieve(sub.latest_invoice)
        assert last.attempt_count == 2 and last.next_payment_attempt is None
    finally:
        sandbox.control("POST", "/_sandbox/billing_settings", {"retry_days": [3, 5, 7], "after_retries": "cancel"})


def test_subscription_canceled_at_period_end(client, uid):
    t0 = _start_time()
    clock = make_clock(client, t0)
    price = monthly_price(client, 700, uid)
    cus = clock_customer(client, clock.id, uid)
    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id, "quantity": 2}]})
    assert sub.status == "active"
    assert client.v1.invoices.retrieve(sub.latest_invoice).amount_paid == 1400
    _, end = period(sub)
    upd = client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True})
    assert upd.status == "active" and upd.cancel_at_period_end is True
    assert upd.cancel_at == end and upd.canceled_at == t0
    ev = find_events(client, "customer.subscription.updated", sub.id)[0]
    assert ev.data.previous_attributes["cancel_at_period_end"] is False
    advance(client, clock.id, end - DAY)
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    advance(client, clock.id, end + HOUR)
    done = client.v1.subscriptions.retrieve(sub.id)
    assert done.status == "canceled" and done.ended_at == end
    assert done.cancellation_details.reason == "cancellation_requested"
    assert len(sub_invoices(client, sub.id)) == 1, "no renewal invoice"
    assert find_events(client, "customer.subscription.deleted", sub.id)


def test_cancel_now_and_update_quantity(client, uid):
    t0 = _start_time()
    clock = make_clock(client, t0)
    price = monthly_price(client, 1000, uid)
    price2 = monthly_price(client, 3000, uid)
    cus = clock_customer(client, clock.id, uid)
    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}]})
    item = sub["items"]["data"][0]
    # Halfway through, switch to the dearer price and invoice the proration now.
    _, end = period(sub)
    mid = t0 + (end - t0) // 2
    advance(client, clock.id, mid)
    up = client.v1.subscriptions.update(sub.id, {"items": [{"id": item.id, "price": price2.id}],
                                                 "proration_behavior": "always_invoice"})
    assert up["items"]["data"][0].price.id == price2.id
    inv = client.v1.invoices.retrieve(up.latest_invoice)
    assert inv.billing_reason == "subscription_update" and inv.status == "paid"
    amounts = sorted(line.amount for line in inv.lines.data)
    assert len(amounts) == 2 and amounts[0] < 0 < amounts[1]
    assert 900 <= inv.amount_paid <= 1100  # (3000 - 1000) × about half the period
    assert client.v1.invoice_items.list({"invoice": inv.id}).data
    lines = client.v1.invoices.line_items.list(inv.id, {"limit": 1})
    assert len(lines.data) == 1 and lines.has_more
    # Quantity change without proration.
    up = client.v1.subscriptions.update(sub.id, {"items": [{"id": item.id, "quantity": 3}],
                                                 "proration_behavior": "none"})
    assert up["items"]["data"][0].quantity == 3
    items = client.v1.subscription_items.list({"subscription": sub.id})
    assert items.data[0].quantity == 3
    canceled = client.v1.subscriptions.cancel(sub.id)
    assert canceled.status == "canceled" and canceled.ended_at == mid
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.cancel(sub.id)


def test_trial_ends_into_active(client, uid):
    t0 = _start_time()
    clock = make_clock(client, t0)
    price = monthly_price(client, 1200, uid)
    cus = clock_customer(client, clock.id, uid)
    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}],
                                          "trial_period_days": 7})
    assert sub.status == "trialing"
    assert sub.trial_start == t0 and sub.trial_end == t0 + 7 * DAY
    assert period(sub) == (t0, t0 + 7 * DAY)
    zero = client.v1.invoices.retrieve(sub.latest_invoice)
    assert zero.amount_due == 0 and zero.status == "paid"
    assert not client.v1.invoice_payments.list({"invoice": zero.id}).data
    advance(client, clock.id, t0 + 5 * DAY)
    assert find_events(client, "customer.subscription.trial_will_end", sub.id)
    advance(client, clock.id, t0 + 8 * DAY)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "active"
    assert period(sub)[0] == t0 + 7 * DAY
    inv = client.v1.invoices.retrieve(sub.latest_invoice)
    assert inv.billing_reason == "subscription_cycle" and inv.status == "paid" and inv.amount_paid == 1200
    ev = [e for e in find_events(client, "customer.subscription.updated", sub.id)
          if e.data.object["status"] == "active"]
    assert ev and ev[0].data.previous_attributes["status"] == "trialing"


def test_trial_without_payment_method_pauses(client, uid):
    t0 = _start_time()
    clock = make_clock(client, t0)
    price = monthly_price(client, 1200, uid)
    cus = clock_customer(client, clock.id, uid, pm=None)
    sub = client.v1.subscriptions.create({
        "customer": cus.id, "items": [{"price": price.id}], "trial_period_days": 3,
        "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}}})
    assert sub.status == "trialing"
    advance(client, clock.id, t0 + 4 * DAY)
    assert client.v1.subscriptions.retrieve(sub.id).status == "paused"
    assert find_events(client, "customer.subscription.paused", sub.id)
    # A card arrives; resuming starts a paid period now.
    client.v1.customers.update(cus.id, {"payment_method": "pm_card_visa",
                                        "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    resumed = client.v1.subscriptions.resume(sub.id)
    assert resumed.status == "active" and period(resumed)[0] == t0 + 4 * DAY
    inv = client.v1.invoices.retrieve(resumed.latest_invoice)
    assert inv.status == "paid" and inv.amount_paid == 1200
    assert find_events(client, "customer.subscription.resumed", sub.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.resume(sub.id)


def test_default_incomplete_then_paid_and_incomplete_expired(client, uid):
    t0 = _start_time()
    clock = make_clock(client, t0)
    price = monthly_price(client, 2500, uid)
    cus = clock_customer(client, clock.id, uid, pm=None)
    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}],
                                          "payment_behavior": "default_incomplete",
                                          "expand": ["latest_invoice.confirmation_secret",
                                                     "latest_invoice.payments"]})
    assert sub.status == "incomplete"
    secret = sub.latest_invoice.confirmation_secret
    assert secret.type == "payment_intent" and "_secret_" in secret.client_secret
    assert sub.latest_invoice.payments.data[0].status == "open"
    inv = client.v1.invoices.retrieve(sub.latest_invoice.id)
    assert inv.status == "open" and inv.attempt_count == 0
    pay = client.v1.invoice_payments.list({"invoice": inv.id}).data[0]
    assert pay.status == "open" and pay.amount_requested == 2500 and pay.amount_paid is None
    pi = client.v1.payment_intents.confirm(pay.payment.payment_intent, {"payment_method": "pm_card_visa"})
    assert pi.status == "succeeded"
    assert client.v1.invoices.retrieve(inv.id).status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    assert client.v1.invoice_payments.retrieve(pay.id).status == "paid"

    # Another one never paid: incomplete_expired after 23 hours, its invoice voided.
    sub2 = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}],
                                           "payment_behavior": "default_incomplete"})
    advance(client, clock.id, t0 + 24 * HOUR)
    sub2 = client.v1.subscriptions.retrieve(sub2.id)
    assert sub2.status == "incomplete_expired"
    assert client.v1.invoices.retrieve(sub2.latest_invoice).status == "void"


def test_error_if_incomplete_creates_nothing(client, uid):
    price = monthly_price(client, 1000, uid)
    cus = client.v1.customers.create({"email": f"{uid}@example.com", "payment_method": "pm_card_chargeDeclined",
                                      "invoice_settings": {"default_payment_method": "pm_card_chargeDeclined"}})
    with pytest.raises(stripe.CardError) as e:
        client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}],
                                        "payment_behavior": "error_if_incomplete"})
    assert e.value.code == "card_declined"
    assert client.v1.subscriptions.list({"customer": cus.id, "status": "all"}).data == []
    # Without any payment method, a paid subscription is refused.
    bare = client.v1.customers.create({"email": f"{uid}@example.com"})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.create({"customer": bare.id, "items": [{"price": price.id}]})
    one_time = client.v1.prices.create({"currency": "usd", "unit_amount": 100, "product_data": {"name": "x"}})
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": one_time.id}]})
    assert e.value.param == "items[0][price]"


def test_credit_note_refunds_an_invoice(client, uid):
    price = monthly_price(client, 2000, uid)
    cus = client.v1.customers.create({"email": f"{uid}@example.com", "payment_method": "pm_card_visa",
                                      "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}]})
    inv = client.v1.invoices.retrieve(sub.latest_invoice)
    assert inv.status == "paid"
    pi_id = client.v1.invoice_payments.list({"invoice": inv.id}).data[0].payment.payment_intent
    charge_id = client.v1.payment_intents.retrieve(pi_id).latest_charge

    cn = client.v1.credit_notes.create({"invoice": inv.id, "amount": 500, "refund_amount": 500,
                                        "reason": "product_unsatisfactory", "memo": "sorry"})
    assert cn.status == "issued" and cn.type == "post_payment" and cn.amount == 500
    assert len(cn.refunds) == 1 and cn.refunds[0].amount_refunded == 500
    refund = client.v1.refunds.retrieve(cn.refunds[0].refund)
    assert refund.amount == 500 and refund.charge == charge_id and refund.status == "succeeded"
    assert client.v1.charges.retrieve(charge_id).amount_refunded == 500
    assert client.v1.invoices.retrieve(inv.id).post_payment_credit_notes_amount == 500
    assert find_events(client, "credit_note.created", cn.id)
    assert find_events(client, "charge.refunded", charge_id)

    # By lines, the rest: refunded in full.
    line = inv.lines.data[0]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.credit_notes.create({"invoice": inv.id, "amount": 1501, "refund_amount": 1501})
    cn2 = client.v1.credit_notes.create({
        "invoice": inv.id, "refund_amount": 1500,
        "lines": [{"type": "invoice_line_item", "invoice_line_item": line.id, "amount": 1500}]})
    assert cn2.amount == 1500 and cn2.lines.data[0].invoice_line_item == line.id
    assert client.v1.charges.retrieve(charge_id).refunded is True
    assert {c.id for c in client.v1.credit_notes.list({"invoice": inv.id}).data} == {cn.id, cn2.id}
    assert client.v1.credit_notes.line_items.list(cn2.id).data[0].amount == 1500
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.credit_notes.void_credit_note(cn.id)
    upd = client.v1.credit_notes.update(cn.id, {"metadata": {"k": "v"}})
    assert upd.metadata["k"] == "v"


def test_clock_advanced_too_far_is_refused(client, uid):
    t0 = _start_time()
    clock = make_clock(client, t0)
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": t0})
    assert e.value.http_status == 400 and e.value.param == "frozen_time"
    # No subscriptions: at most two years.
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": t0 + 735 * DAY})
    assert e.value.http_status == 400
    weekly = client.v1.prices.create({"currency": "usd", "unit_amount": 500, "recurring": {"interval": "week"},
                                      "product_data": {"name": f"Weekly {uid}"}})
    cus = clock_customer(client, clock.id, uid)
    client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": weekly.id}]})
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": t0 + 14 * DAY + 1})
    err = e.value
    assert err.http_status == 400 and err.param == "frozen_time"
    assert err.error.type == "invalid_request_error"
    assert "two intervals" in err.user_message
    assert client.v1.test_helpers.test_clocks.retrieve(clock.id).status == "ready"
    advance(client, clock.id, t0 + 14 * DAY)
    # Clock objects: list, delete (its customers go with it).
    assert clock.id in [c.id for c in client.v1.test_helpers.test_clocks.list({"limit": 100}).data]
    gone = client.v1.test_helpers.test_clocks.delete(clock.id)
    assert gone.deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.test_helpers.test_clocks.retrieve(clock.id)
    kinds = [e.type for e in client.v1.events.list({"type": "test_helpers.test_clock.*", "limit": 100}).data
             if e.data.object["id"] == clock.id]
    assert {"test_helpers.test_clock.created", "test_helpers.test_clock.advancing",
            "test_helpers.test_clock.ready", "test_helpers.test_clock.deleted"} <= set(kinds)


def test_only_clock_customers_move(client, uid):
    t0 = _start_time()
    clock = make_clock(client, t0)
    price = monthly_price(client, 1000, uid)
    on_clock = clock_customer(client, clock.id, uid)
    plain = client.v1.customers.create({"email": f"{uid}@example.com", "payment_method": "pm_card_visa",
                                        "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    s1 = client.v1.subscriptions.create({"customer": on_clock.id, "items": [{"price": price.id}]})
    s2 = client.v1.subscriptions.create({"customer": plain.id, "items": [{"price": price.id}]})
    assert s2.test_clock is None and abs(s2.created - time.time()) < 60
    advance(client, clock.id, period(s1)[1] + HOUR)
    assert len(sub_invoices(client, s1.id)) == 2
    assert len(sub_invoices(client, s2.id)) == 1
    assert client.v1.subscriptions.list({"test_clock": clock.id}).data[0].id == s1.id


def test_manual_invoice_lifecycle(client, sandbox, uid):
    cus = client.v1.customers.create({"email": f"{uid}@example.com", "payment_method": "pm_card_visa",
                                      "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    inv = client.v1.invoices.create({"customer": cus.id, "auto_advance": False, "metadata": {"uid": uid}})
    assert inv.status == "draft" and inv.billing_reason == "manual" and inv.total == 0
    client.v1.invoice_items.create({"customer": cus.id, "invoice": inv.id, "amount": 1234, "currency": "usd",
                                    "description": "Consulting"})
    inv = client.v1.invoices.retrieve(inv.id)
    assert inv.total == 1234 and inv.lines.data[0].description == "Consulting"
    inv = client.v1.invoices.finalize_invoice(inv.id)
    assert inv.status == "open" and inv.number
    page = requests.get(inv.hosted_invoice_url, timeout=10)
    assert page.status_code == 200 and inv.number in page.text and "Consulting" in page.text
    assert "$12.34" in page.text
    inv = client.v1.invoices.pay(inv.id)
    assert inv.status == "paid" and inv.amount_paid == 1234 and inv.status_transitions.paid_at
    assert [i.id for i in client.v1.invoices.list({"customer": cus.id, "status": "paid"}).data] == [inv.id]

    other = client.v1.invoices.create({"customer": cus.id})
    client.v1.invoice_items.create({"customer": cus.id, "invoice": other.id, "amount": 999, "currency": "usd"})
    client.v1.invoices.finalize_invoice(other.id)
    voided = client.v1.invoices.void_invoice(other.id)
    assert voided.status == "void"
    assert client.v1.invoice_payments.list({"invoice": other.id}).data[0].status == "canceled"
    third = client.v1.invoices.create({"customer": cus.id})
    client.v1.invoice_items.create({"customer": cus.id, "invoice": third.id, "amount": 555, "currency": "usd"})
    client.v1.invoices.finalize_invoice(third.id)
    unc = client.v1.invoices.mark_uncollectible(third.id)
    assert unc.status == "uncollectible"
    assert find_events(client, "invoice.marked_uncollectible", third.id)
    assert find_events(client, "invoice.voided", other.id)
    draft = client.v1.invoices.create({"customer": cus.id})
    assert client.v1.invoices.delete(draft.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.delete(inv.id)


def test_created_event_has_final_status_and_pause_collection_voids(client, uid):
    t0 = _start_time()
    clock = make_clock(client, t0)
    price = monthly_price(client, 800, uid)
    cus = clock_customer(client, clock.id, uid)
    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}]})
    created = find_events(client, "customer.subscription.created", sub.id)
    assert len(created) == 1 and created[0].data.object["status"] == "active"
    assert not find_events(client, "customer.subscription.updated", sub.id)
    sub = client.v1.subscriptions.update(sub.id, {"pause_collection": {"behavior": "void"}})
    assert sub.pause_collection.behavior == "void"
    _, end = period(sub)
    advance(client, clock.id, end + HOUR)
    inv = client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    assert inv.billing_reason == "subscription_cycle" and inv.status == "void"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    resumed = client.v1.subscriptions.update(sub.id, {"pause_collection": ""})
    assert resumed.pause_collection is None
    # Deleting the customer ends the subscription.
    client.v1.customers.delete(cus.id)
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"
