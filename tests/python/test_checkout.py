"""Checkout Sessions (issue 6) with Stripe's official library: payment mode completed through
the control API and the hosted page, line items, customers, declines, delayed payment methods
(async success and failure, their events in order), expiry, and Stripe's errors for bad input."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

import pytest
import requests
import stripe

from conftest import check, wait_for


# ---- helpers ---------------------------------------------------------------------------------


def price(client, amount: int = 1500, name: str = "T-shirt", **extra):
    params: Dict[str, Any] = {"currency": "usd", "unit_amount": amount, "product_data": {"name": name}}
    params.update(extra)
    return client.v1.prices.create(params)


def session(client, **extra):
    params: Dict[str, Any] = {
        "mode": "payment",
        "success_url": "https://shop.example/done?cs={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://shop.example/cart",
    }
    if "line_items" not in extra:
        params["line_items"] = [{"price": price(client).id, "quantity": 2}]
    params.update(extra)
    return client.v1.checkout.sessions.create(params)


def complete(sandbox, cs_id: str, **body) -> requests.Response:
    return sandbox.control("POST", f"/_sandbox/checkout_sessions/{cs_id}/complete", body)


def completed(sandbox, cs_id: str, **body) -> Dict[str, Any]:
    r = complete(sandbox, cs_id, **body)
    assert r.status_code == 200, r.text
    return check(r.json(), "control: completed session")


def events_about(client, ids: List[str], limit: int = 100) -> List[Any]:
    """Events about any of `ids` (the object itself, or its payment_intent), oldest first."""
    evs = client.v1.events.list({"limit": limit}).data
    out = []
    for e in evs:
        o = e.data.object.to_dict()
        if o.get("id") in ids or o.get("payment_intent") in ids:
            out.append(e)
    return list(reversed(out))


@pytest.fixture
def endpoint(client, receiver):
    ep = client.v1.webhook_endpoints.create({
        "url": receiver.url,
        "enabled_events": ["checkout.session.completed", "checkout.session.async_payment_succeeded",
                           "checkout.session.async_payment_failed", "checkout.session.expired",
                           "payment_intent.processing", "payment_intent.succeeded",
                           "payment_intent.payment_failed", "charge.pending", "charge.succeeded",
                           "charge.failed"],
    })
    yield ep
    client.v1.webhook_endpoints.delete(ep.id)


def delivered(receiver, ids, until_type: str, timeout: float = 15.0) -> List[str]:
    """Types of the deliveries about `ids`, in arrival order, once `until_type` arrived."""
    def got():
        evs = [ev for _, ev in receiver.events()
               if ev["data"]["object"].get("id") in ids or ev["data"]["object"].get("payment_intent") in ids]
        return evs if any(ev["type"] == until_type for ev in evs) else None
    evs = wait_for(got, timeout=timeout, what=f"a {until_type} delivery")
    for ev in evs:
        check(ev, f"webhook {ev['type']}")
    return [ev["type"] for ev in evs]


# ---- payment mode ----------------------------------------------------------------------------


def test_payment_mode_session_completed_through_the_control_api(client, sandbox, uid):
    shirt = price(client, 1500, "T-shirt")
    cs = session(
        client,
        line_items=[
            {"price": shirt.id, "quantity": 2},
            {"price_data": {"currency": "usd", "unit_amount": 499, "product_data": {"name": "Gift wrap"}},
             "quantity": 1},
        ],
        client_reference_id=f"cart-{uid}",
        metadata={"order": uid},
        customer_creation="always",
        customer_email=f"{uid}@example.com",
        payment_intent_data={"metadata": {"order": uid}},
    )
    assert cs.object == "checkout.session" and cs.id.startswith("cs_test_")
    assert cs.mode == "payment" and cs.status == "open" and cs.payment_status == "unpaid"
    assert cs.amount_subtotal == 3499 and cs.amount_total == 3499 and cs.currency == "usd"
    assert cs.url == f"{sandbox.base}/_sandbox/checkout/{cs.id}"
    assert cs.payment_intent is None and cs.customer is None
    assert cs.client_reference_id == f"cart-{uid}" and cs.metadata.to_dict() == {"order": uid}
    assert cs.customer_creation == "always" and cs.customer_email == f"{uid}@example.com"
    assert cs.success_url == "https://shop.example/done?cs={CHECKOUT_SESSION_ID}"
    assert cs.expires_at - cs.created == 24 * 3600

    items = client.v1.checkout.sessions.line_items.list(cs.id)
    assert items.object == "list" and items.url == f"/v1/checkout/sessions/{cs.id}/line_items"
    assert [i.object for i in items.data] == ["item", "item"]
    first, second = items.data
    assert first.price.id == shirt.id and first.quantity == 2 and first.description == "T-shirt"
    assert first.amount_subtotal == 3000 and first.amount_total == 3000 and first.currency == "usd"
    assert second.description == "Gift wrap" and second.amount_total == 499
    assert second.price.unit_amount == 499 and second.price.type == "one_time"
    assert second.price.active is False  # inline prices are archived, as on Stripe

    done = completed(sandbox, cs.id, payment_method="pm_card_visa", name="Ada Buyer")
    assert done["status"] == "complete" and done["payment_status"] == "paid"
    assert done["url"] is None

    got = client.v1.checkout.sessions.retrieve(cs.id)
    assert got.status == "complete" and got.payment_status == "paid"
    assert got.customer and got.customer.startswith("cus_")
    assert got.customer_details.email == f"{uid}@example.com"
    assert got.customer_details.name == "Ada Buyer"
    pi = client.v1.payment_intents.retrieve(got.payment_intent)
    assert pi.status == "succeeded" and pi.amount == 3499 and pi.amount_received == 3499
    assert pi.customer == got.customer and pi.metadata.to_dict() == {"order": uid}
    cus = client.v1.customers.retrieve(got.customer)
    assert cus.email == f"{uid}@example.com"

    types = [e.type for e in events_about(client, [cs.id, pi.id, got.customer])]
    assert types.index("customer.created") < types.index("payment_intent.created") \
        < types.index("charge.succeeded") < types.index("payment_intent.succeeded") \
        < types.index("checkout.session.completed")
    ev = next(e for e in events_about(client, [cs.id]) if e.type == "checkout.session.completed")
    assert ev.data.object.payment_status == "paid" and ev.data.object.payment_intent == pi.id

    # Completing twice is refused and changes nothing.
    again = complete(sandbox, cs.id, payment_method="pm_card_visa")
    assert again.status_code == 400 and "no longer open" in again.json()["error"]["message"]


def test_guest_checkout_makes_no_customer(client, sandbox, uid):
    cs = session(client)
    assert cs.customer_creation == "if_required"
    done = completed(sandbox, cs.id, email=f"guest-{uid}@example.com")
    assert done["customer"] is None
    assert done["customer_details"]["email"] == f"guest-{uid}@example.com"
    pi = client.v1.payment_intents.retrieve(done["payment_intent"])
    assert pi.customer is None and pi.status == "succeeded" and pi.amount == 3000


def test_existing_customer_and_manual_capture(client, sandbox, uid):
    cus = client.v1.customers.create({"email": f"known-{uid}@example.com", "name": "Known"})
    cs = session(client, customer=cus.id, payment_intent_data={"capture_method": "manual"})
    assert cs.customer == cus.id and cs.customer_email is None
    done = completed(sandbox, cs.id)
    assert done["customer"] == cus.id and done["customer_details"]["email"] == f"known-{uid}@example.com"
    # Funds only authorized: complete, but not paid until captured.
    assert done["status"] == "complete" and done["payment_status"] == "unpaid"
    pi = client.v1.payment_intents.retrieve(done["payment_intent"])
    assert pi.status == "requires_capture" and pi.capture_method == "manual" and pi.customer == cus.id


def test_update_metadata(client):
    cs = session(client, metadata={"a": "1", "b": "2"})
    up = client.v1.checkout.sessions.update(cs.id, {"metadata": {"b": "", "c": "3"}})
    assert up.metadata.to_dict() == {"a": "1", "c": "3"}
    assert client.v1.checkout.sessions.retrieve(cs.id).metadata.to_dict() == {"a": "1", "c": "3"}
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.checkout.sessions.update(cs.id, {"success_url": "https://x.example"})
    assert ei.value.code == "parameter_unknown"


def test_line_items_pages_and_expand(client):
    prices = [price(client, 100 * (i + 1), f"Item {i}") for i in range(5)]
    cs = session(client, line_items=[{"price": p.id, "quantity": 1} for p in prices])
    assert cs.amount_total == 1500
    page1 = client.v1.checkout.sessions.line_items.list(cs.id, {"limit": 2})
    assert [i.price.id for i in page1.data] == [prices[0].id, prices[1].id] and page1.has_more
    page2 = client.v1.checkout.sessions.line_items.list(cs.id, {"limit": 2, "starting_after": page1.data[1].id})
    assert [i.price.id for i in page2.data] == [prices[2].id, prices[3].id] and page2.has_more
    page3 = client.v1.checkout.sessions.line_items.list(cs.id, {"limit": 2, "starting_after": page2.data[1].id})
    assert [i.price.id for i in page3.data] == [prices[4].id] and not page3.has_more
    back = client.v1.checkout.sessions.line_items.list(cs.id, {"limit": 10, "ending_before": page3.data[0].id})
    assert len(back.data) == 4

    full = client.v1.checkout.sessions.retrieve(cs.id, {"expand": ["line_items"]})
    assert [i.price.id for i in full.line_items.data] == [p.id for p in prices]
    with_product = client.v1.checkout.sessions.line_items.list(cs.id, {"expand": ["data.price.product"]})
    assert with_product.data[0].price.product.name == "Item 0"


def test_decline_then_another_card(client, sandbox):
    cs = session(client)
    r = complete(sandbox, cs.id, payment_method="pm_card_chargeDeclined")
    assert r.status_code == 402, r.text
    err = check(r.json(), "control: decline")["error"]
    assert err["type"] == "card_error" and err["code"] == "card_declined"
    assert err["message"] == "Your card was declined."
    mid = client.v1.checkout.sessions.retrieve(cs.id)
    assert mid.status == "open" and mid.payment_status == "unpaid" and mid.payment_intent
    assert client.v1.payment_intents.retrieve(mid.payment_intent).status == "requires_payment_method"

    done = completed(sandbox, cs.id, payment_method="pm_card_mastercard")
    assert done["payment_intent"] == mid.payment_intent  # the same intent, confirmed again
    assert client.v1.payment_intents.retrieve(mid.payment_intent).status == "succeeded"


def test_three_d_secure_then_complete(client, sandbox):
    cs = session(client)
    r = complete(sandbox, cs.id, payment_method="pm_card_threeDSecure2Required")
    assert r.status_code == 402 and r.json()["error"]["code"] == "authentication_required"
    pi_id = client.v1.checkout.sessions.retrieve(cs.id).payment_intent
    assert client.v1.payment_intents.retrieve(pi_id).status == "requires_action"
    # Still waiting: completing without answering the challenge is refused.
    assert complete(sandbox, cs.id).status_code == 400
    a = sandbox.control("POST", f"/_sandbox/payment_intents/{pi_id}/authenticate", {"outcome": "approve"})
    assert a.status_code == 200, a.text
    # A payment method given now does not charge again: the authenticated payment finishes it.
    done = completed(sandbox, cs.id, payment_method="pm_card_visa")
    assert done["status"] == "complete" and done["payment_status"] == "paid"
    assert done["payment_intent"] == pi_id
    assert client.v1.payment_intents.list({"limit": 5}).data[0].id == pi_id


def test_list_filters(client, sandbox, uid):
    cus = client.v1.customers.create({"email": f"lister-{uid}@example.com"})
    a = session(client, customer=cus.id)
    b = session(client, customer=cus.id)
    done = completed(sandbox, a.id)
    by_customer = client.v1.checkout.sessions.list({"customer": cus.id})
    assert [s.id for s in by_customer.data] == [b.id, a.id]  # newest first
    assert by_customer.url == "/v1/checkout/sessions"
    by_pi = client.v1.checkout.sessions.list({"payment_intent": done["payment_intent"]})
    assert [s.id for s in by_pi.data] == [a.id]
    open_ = client.v1.checkout.sessions.list({"customer": cus.id, "status": "open"})
    assert [s.id for s in open_.data] == [b.id]
    by_email = client.v1.checkout.sessions.list({"customer_details": {"email": f"lister-{uid}@example.com"}})
    assert [s.id for s in by_email.data] == [a.id]


# ---- subscription mode -----------------------------------------------------------------------


def monthly(client, amount: int = 900, name: str = "Pro plan"):
    return price(client, amount, name, recurring={"interval": "month"})


def test_subscription_mode_session_completed(client, sandbox, uid):
    plan = monthly(client, 900)
    seats = monthly(client, 300, "Extra seat")
    cs = client.v1.checkout.sessions.create({
        "mode": "subscription",
        "line_items": [{"price": plan.id, "quantity": 1}, {"price": seats.id, "quantity": 3}],
        "success_url": "https://shop.example/welcome?cs={CHECKOUT_SESSION_ID}",
        "customer_email": f"sub-{uid}@example.com",
        "subscription_data": {"metadata": {"plan": "pro", "uid": uid}},
        "client_reference_id": f"user-{uid}",
    })
    assert cs.mode == "subscription" and cs.amount_total == 1800 and cs.amount_subtotal == 1800
    assert cs.customer_creation is None and cs.invoice_creation is None
    assert cs.payment_method_collection == "always"
    items = client.v1.checkout.sessions.line_items.list(cs.id)
    assert [(i.price.id, i.quantity, i.amount_total) for i in items.data] == [
        (plan.id, 1, 900), (seats.id, 3, 900)]
    assert items.data[0].price.recurring.interval == "month"

    done = completed(sandbox, cs.id, payment_method="pm_card_visa")
    assert done["status"] == "complete" and done["payment_status"] == "paid"
    assert done["subscription"].startswith("sub_") and done["invoice"].startswith("in_")
    assert done["customer"].startswith("cus_") and done["payment_intent"] is None

    sub = client.v1.subscriptions.retrieve(done["subscription"])
    assert sub.status == "active" and sub.customer == done["customer"]
    assert sub.metadata.to_dict() == {"plan": "pro", "uid": uid}
    assert sorted((i.price.id, i.quantity) for i in sub["items"].data) == sorted([(plan.id, 1), (seats.id, 3)])
    inv = client.v1.invoices.retrieve(done["invoice"])
    assert inv.status == "paid" and inv.amount_paid == 1800 and inv.customer == done["customer"]
    cus = client.v1.customers.retrieve(done["customer"])
    assert cus.email == f"sub-{uid}@example.com"

    t = [e.type for e in events_about(client, [cs.id, sub.id, inv.id, done["customer"]])]
    # The session completes after everything the billing side did for it.
    last = t.index("checkout.session.completed")
    assert t.index("customer.created") < t.index("customer.subscription.created") < last
    assert t.index("invoice.paid") < last
    found = client.v1.checkout.sessions.list({"subscription": sub.id})
    assert [s.id for s in found.data] == [cs.id]


def test_subscription_mode_with_a_trial_and_inline_price(client, sandbox):
    cs = client.v1.checkout.sessions.create({
        "mode": "subscription",
        "line_items": [{"price_data": {"currency": "eur", "unit_amount": 1200,
                                       "product_data": {"name": "Team plan"},
                                       "recurring": {"interval": "year"}},
                        "quantity": 1}],
        "subscription_data": {"trial_period_days": 14},
        "success_url": "https://shop.example/welcome",
    })
    assert cs.amount_subtotal == 1200 and cs.amount_total == 0 and cs.currency == "eur"
    done = completed(sandbox, cs.id)
    assert done["status"] == "complete" and done["payment_status"] == "no_payment_required"
    sub = client.v1.subscriptions.retrieve(done["subscription"])
    assert sub.status == "trialing" and sub.trial_end - sub.trial_start == 14 * 86400
    assert sub["items"].data[0].price.recurring.interval == "year"


def test_subscription_mode_decline_leaves_the_session_open(client, sandbox, uid):
    cus = client.v1.customers.create({"email": f"sub-decline-{uid}@example.com"})
    cs = client.v1.checkout.sessions.create({
        "mode": "subscription", "customer": cus.id,
        "line_items": [{"price": monthly(client).id, "quantity": 1}],
        "success_url": "https://shop.example/welcome",
    })
    r = complete(sandbox, cs.id, payment_method="pm_card_chargeDeclined")
    assert r.status_code == 402, r.text
    assert check(r.json(), "control: decline")["error"]["code"] == "card_declined"
    got = client.v1.checkout.sessions.retrieve(cs.id)
    assert got.status == "open" and got.subscription is None
    assert client.v1.subscriptions.list({"customer": cus.id}).data == []
    done = completed(sandbox, cs.id, payment_method="pm_card_visa")
    assert done["customer"] == cus.id
    assert client.v1.subscriptions.retrieve(done["subscription"]).status == "active"


# ---- delayed payment methods ------------------------------------------------------------------


def test_async_payment_succeeds(client, sandbox, endpoint, receiver):
    cs = session(client)
    done = completed(sandbox, cs.id, outcome="async_success")
    assert done["status"] == "complete" and done["payment_status"] == "unpaid"
    pi_id = done["payment_intent"]
    pi = client.v1.payment_intents.retrieve(pi_id)
    assert pi.status == "processing" and pi.payment_method_types == ["us_bank_account"]
    # Deliveries may arrive in any order (as from Stripe); all of them arrive, signed and shaped.
    types = delivered(receiver, [cs.id, pi_id], "checkout.session.async_payment_succeeded")
    assert {"charge.pending", "payment_intent.processing", "checkout.session.completed",
            "charge.succeeded", "payment_intent.succeeded"} <= set(types)
    assert "checkout.session.async_payment_failed" not in types
    got = client.v1.checkout.sessions.retrieve(cs.id)
    assert got.status == "complete" and got.payment_status == "paid"
    assert client.v1.payment_intents.retrieve(pi_id).status == "succeeded"
    # The events API keeps the order they happened in.
    t = [e.type for e in events_about(client, [cs.id, pi_id])]
    assert t.index("payment_intent.created") < t.index("charge.pending") < t.index("payment_intent.processing") \
        < t.index("checkout.session.completed") < t.index("charge.succeeded") \
        < t.index("payment_intent.succeeded") < t.index("checkout.session.async_payment_succeeded")
    completed_ev = next(e for e in events_about(client, [cs.id]) if e.type == "checkout.session.completed")
    assert completed_ev.data.object.payment_status == "unpaid"
    succeeded_ev = next(e for e in events_about(client, [cs.id]) if e.type == "checkout.session.async_payment_succeeded")
    assert succeeded_ev.data.object.payment_status == "paid"


def test_async_payment_fails(client, sandbox, endpoint, receiver):
    cs = session(client)
    done = completed(sandbox, cs.id, outcome="async_failure", payment_method="us_bank_account")
    assert done["payment_status"] == "unpaid"
    pi_id = done["payment_intent"]
    types = delivered(receiver, [cs.id, pi_id], "checkout.session.async_payment_failed")
    assert {"checkout.session.completed", "charge.failed", "payment_intent.payment_failed"} <= set(types)
    assert "checkout.session.async_payment_succeeded" not in types
    t = [e.type for e in events_about(client, [cs.id, pi_id])]
    assert t.index("payment_intent.processing") < t.index("checkout.session.completed") \
        < t.index("charge.failed") < t.index("payment_intent.payment_failed") \
        < t.index("checkout.session.async_payment_failed")
    got = client.v1.checkout.sessions.retrieve(cs.id)
    assert got.status == "complete" and got.payment_status == "unpaid"
    pi = client.v1.payment_intents.retrieve(pi_id, {"expand": ["latest_charge"]})
    assert pi.status == "requires_payment_method" and pi.last_payment_error.code == "insufficient_funds"
    assert pi.latest_charge.status == "failed"


def test_async_payment_after_a_declined_card_reuses_the_intent(client, sandbox):
    cs = session(client)
    assert complete(sandbox, cs.id, payment_method="pm_card_chargeDeclined").status_code == 402
    pi_id = client.v1.checkout.sessions.retrieve(cs.id).payment_intent
    done = completed(sandbox, cs.id, outcome="async_success")
    assert done["payment_intent"] == pi_id
    pi = client.v1.payment_intents.retrieve(pi_id)
    assert pi.status == "processing" and pi.payment_method_types == ["us_bank_account"]
    wait_for(lambda: client.v1.checkout.sessions.retrieve(cs.id).payment_status == "paid",
             what="the async payment to succeed")


def test_async_outcome_is_refused_when_the_session_excludes_the_method(client, sandbox):
    cs = session(client, payment_method_types=["card"])
    r = complete(sandbox, cs.id, outcome="async_success")
    assert r.status_code == 400 and "us_bank_account" in r.json()["error"]["message"]
    assert client.v1.checkout.sessions.retrieve(cs.id).status == "open"
    bad = complete(sandbox, cs.id, outcome="sometime")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "outcome"


# ---- expiry ----------------------------------------------------------------------------------


def test_expire(client, sandbox, endpoint, receiver):
    cs = session(client)
    declined = complete(sandbox, cs.id, payment_method="pm_card_chargeDeclined")
    assert declined.status_code == 402
    pi_id = client.v1.checkout.sessions.retrieve(cs.id).payment_intent

    gone = client.v1.checkout.sessions.expire(cs.id)
    assert gone.status == "expired" and gone.url is None and gone.payment_status == "unpaid"
    assert "checkout.session.expired" in delivered(receiver, [cs.id], "checkout.session.expired")
    # The intent of the declined attempt is canceled with it.
    assert client.v1.payment_intents.retrieve(pi_id).status == "canceled"
    assert cs.id in [s.id for s in client.v1.checkout.sessions.list({"status": "expired", "limit": 100}).data]

    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.checkout.sessions.expire(cs.id)
    assert ei.value.user_message == (
        'Only Checkout Sessions with a status in ["open"] can be expired. '
        "This Checkout Session has a status of `expired`.")
    r = complete(sandbox, cs.id)
    assert r.status_code == 400 and "expired" in r.json()["error"]["message"]
    page = requests.get(cs.url, timeout=10)
    assert page.status_code == 410 and "expired" in page.text


def test_expires_at_bounds(client):
    import time
    now = int(time.time())
    ok = session(client, expires_at=now + 3600)
    assert ok.expires_at == now + 3600
    for bad, words in ((now + 60, "at least 30 minutes"), (now + 25 * 3600, "less than 24 hours")):
        with pytest.raises(stripe.InvalidRequestError) as ei:
            session(client, expires_at=bad)
        assert words in ei.value.user_message and ei.value.param == "expires_at"


def test_expiry_at_expires_at_after_a_restart(tmp_path):
    """expires_at passing while the sandbox was down: the session expires when next touched."""
    import json
    import signal
    import time
    from conftest import start_sandbox

    state = tmp_path / "sandbox-state.json"
    a = start_sandbox("--state-file", str(state))
    try:
        ca = a.client()
        listed = session(ca)
        paid_later = session(ca)
        opened = session(ca)
        sk = a.secret_key
    finally:
        a.stop(signal.SIGTERM)
    data = json.loads(state.read_text())
    past = int(time.time()) - 5
    for acct in data["accounts"].values():
        for obj in acct.get("collections", {}).get("checkout.session", {}).get("objects", {}).values():
            obj["expires_at"] = past
    state.write_text(json.dumps(data))

    b = start_sandbox("--state-file", str(state))
    try:
        cb = b.client(sk)
        expired = cb.v1.checkout.sessions.list({"status": "expired", "limit": 10})
        assert {listed.id, paid_later.id, opened.id} <= {s.id for s in expired.data}
        got = cb.v1.checkout.sessions.retrieve(listed.id)
        assert got.status == "expired" and got.url is None
        evs = [e for e in cb.v1.events.list({"type": "checkout.session.expired", "limit": 10}).data
               if e.data.object.id == listed.id]
        assert len(evs) == 1  # expired once, however often it is read
        r = complete(b, paid_later.id)
        assert r.status_code == 400 and "expired" in r.json()["error"]["message"]
        assert requests.get(opened.url.replace(a.base, b.base), timeout=10).status_code == 410
    finally:
        b.stop()


# ---- the hosted page over plain HTTP -----------------------------------------------------------


def test_hosted_page_decline_then_pay(client, sandbox, uid):
    cs = session(client, line_items=[{"price": price(client, 1999, "<b>Mug & \"co\"</b>").id, "quantity": 1}])
    page = requests.get(cs.url, timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "&lt;b&gt;Mug &amp; &quot;co&quot;&lt;/b&gt;" in page.text and "<b>Mug" not in page.text
    assert "$19.99" in page.text and page.headers["cache-control"] == "no-store"
    assert not re.search(r"<(script|link|img)\b", page.text)  # self-contained, no external assets

    card = {"email": f"{uid}@example.com", "exp": "12 / 34", "cvc": "123", "name": "Page Buyer"}
    r = requests.post(cs.url, data={**card, "cardnumber": "4000 0000 0000 0002"}, allow_redirects=False, timeout=10)
    assert r.status_code == 402 and "Your card was declined." in r.text
    assert f'value="{uid}@example.com"' in r.text  # the email is kept, the card is not
    card_input = re.search(r'<input id="cardnumber"[^>]*>', r.text).group(0)
    assert "value=" not in card_input
    bad = requests.post(cs.url, data={**card, "cardnumber": "4242 4242 4242 4241"}, allow_redirects=False, timeout=10)
    assert bad.status_code == 402 and "Your card number is incorrect." in bad.text

    ok = requests.post(cs.url, data={**card, "cardnumber": "4242 4242 4242 4242"}, allow_redirects=False, timeout=10)
    assert ok.status_code == 303, ok.text[:500]
    assert ok.headers["location"] == f"https://shop.example/done?cs={cs.id}"
    got = client.v1.checkout.sessions.retrieve(cs.id)
    assert got.status == "complete" and got.payment_status == "paid"
    assert got.customer_details.email == f"{uid}@example.com" and got.customer_details.name == "Page Buyer"
    again = requests.get(cs.url, timeout=10)
    assert again.status_code == 200 and "already been paid" in again.text


# ---- bad input -------------------------------------------------------------------------------


def test_stripe_errors_for_bad_input(client, sandbox):
    one_time = price(client)
    monthly = price(client, 900, "Plan", recurring={"interval": "month"})

    with pytest.raises(stripe.InvalidRequestError) as ei:
        session(client, line_items=[{"price": "price_doesnotexist", "quantity": 1}])
    e = ei.value
    assert e.http_status == 404 and e.code == "resource_missing" and e.param == "line_items[0][price]"
    assert e.user_message == "No such price: 'price_doesnotexist'"

    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.checkout.sessions.create({"mode": "payment", "success_url": "https://x.example/ok"})
    assert ei.value.code == "parameter_missing" and ei.value.param == "line_items"

    with pytest.raises(stripe.InvalidRequestError) as ei:
        session(client, mode="subscription", line_items=[{"price": one_time.id, "quantity": 1}])
    assert ei.value.user_message == (
        "You must provide at least one recurring price in `subscription` mode when using prices.")

    with pytest.raises(stripe.InvalidRequestError) as ei:
        session(client, line_items=[{"price": monthly.id, "quantity": 1}])
    assert ei.value.user_message.startswith("You specified `payment` mode but passed a recurring price.")
    assert ei.value.param == "line_items[0]"

    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.checkout.sessions.create({"line_items": [{"price": one_time.id, "quantity": 1}]})
    assert ei.value.code == "parameter_missing" and ei.value.param == "mode"

    with pytest.raises(stripe.InvalidRequestError) as ei:
        session(client, line_items=[{"price": one_time.id}])
    assert ei.value.param == "line_items[0][quantity]"

    with pytest.raises(stripe.InvalidRequestError) as ei:
        session(client, line_items=[{"quantity": 1}])
    assert "either price or price_data" in ei.value.user_message

    cus = client.v1.customers.create({"email": "both@example.com"})
    with pytest.raises(stripe.InvalidRequestError) as ei:
        session(client, customer=cus.id, customer_email="both@example.com")
    assert "customer, customer_email" in ei.value.user_message

    with pytest.raises(stripe.InvalidRequestError) as ei:
        session(client, bogus_param="x")
    assert ei.value.code == "parameter_unknown" and ei.value.param == "bogus_param"

    with pytest.raises(stripe.InvalidRequestError) as ei:
        session(client, success_url="not a url")
    assert ei.value.param == "success_url"

    with pytest.raises(stripe.InvalidRequestError) as ei:
        session(client, payment_intent_data={"capture_method": "later"})
    assert ei.value.param == "payment_intent_data[capture_method]"

    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert ei.value.http_status == 404 and ei.value.code == "resource_missing"

    # A refused create leaves nothing behind (no inline product or price).
    before = sandbox.control("GET", "/_sandbox/state").json()["accounts"][sandbox.account].get("price", 0)
    with pytest.raises(stripe.InvalidRequestError):
        session(client, line_items=[
            {"price_data": {"currency": "usd", "unit_amount": 100, "product_data": {"name": "x"}}, "quantity": 1},
            {"price": "price_missing", "quantity": 1}])
    after = sandbox.control("GET", "/_sandbox/state").json()["accounts"][sandbox.account].get("price", 0)
    assert after == before

    missing = requests.get(f"{sandbox.base}/_sandbox/checkout/cs_test_nope", timeout=10)
    assert missing.status_code == 404 and "does not exist" in missing.text
    r = complete(sandbox, "cs_test_nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "resource_missing"
    r = sandbox.control("POST", f"/_sandbox/checkout_sessions/{session(client).id}/complete", {"colour": "red"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "colour"
