"""The standalone process: state survives a restart with --state-file; --strict-keys."""

import signal
import uuid

import pytest
import stripe

from conftest import paid_intent, start_sandbox


def test_state_survives_restart(tmp_path):
    state = str(tmp_path / "sandbox-state.json")
    a = start_sandbox("--state-file", state)
    try:
        ca = a.client()
        uid = uuid.uuid4().hex[:10]
        cus = ca.v1.customers.create({"email": f"{uid}@example.com", "metadata": {"keep": "me"}})
        prod = ca.v1.products.create({"name": "Kept " + uid})
        price = ca.v1.prices.create({"product": prod.id, "unit_amount": 700, "currency": "usd",
                                     "recurring": {"interval": "month"}})
        pi = paid_intent(ca, 1900, customer=cus.id)
        re = ca.v1.refunds.create({"payment_intent": pi.id, "amount": 400})
        before = {
            "customer": ca.v1.customers.retrieve(cus.id).to_dict(),
            "product": ca.v1.products.retrieve(prod.id).to_dict(),
            "price": ca.v1.prices.retrieve(price.id).to_dict(),
            "payment_intent": ca.v1.payment_intents.retrieve(pi.id).to_dict(),
            "charge": ca.v1.charges.retrieve(pi.latest_charge).to_dict(),
            "refund": ca.v1.refunds.retrieve(re.id).to_dict(),
        }
        n_events = len(ca.v1.events.list({"limit": 100}).data)
        account, sk = a.account, a.secret_key
    finally:
        rc = a.stop(signal.SIGTERM)
    assert rc is not None

    b = start_sandbox("--state-file", state)
    try:
        assert b.account == account, "the account must survive the restart"
        cb = b.client(sk)
        after = {
            "customer": cb.v1.customers.retrieve(cus.id).to_dict(),
            "product": cb.v1.products.retrieve(prod.id).to_dict(),
            "price": cb.v1.prices.retrieve(price.id).to_dict(),
            "payment_intent": cb.v1.payment_intents.retrieve(pi.id).to_dict(),
            "charge": cb.v1.charges.retrieve(pi.latest_charge).to_dict(),
            "refund": cb.v1.refunds.retrieve(re.id).to_dict(),
        }
        assert after == before
        assert [c.id for c in cb.v1.customers.list({"email": f"{uid}@example.com"}).data] == [cus.id]
        assert len(cb.v1.events.list({"limit": 100}).data) == n_events
        # the state goes on: refund the rest, new ids are new
        re2 = cb.v1.refunds.create({"payment_intent": pi.id})
        assert re2.amount == 1500 and re2.id != re.id
        cus2 = cb.v1.customers.create({"email": f"{uid}@example.com"})
        assert cus2.id != cus.id
    finally:
        b.stop()


def test_idempotency_key_survives_restart(tmp_path):
    state = str(tmp_path / "sandbox-state.json")
    k = "restart-" + uuid.uuid4().hex
    a = start_sandbox("--state-file", state)
    try:
        first = a.client().v1.customers.create({"email": "restart@example.com"}, {"idempotency_key": k})
    finally:
        a.stop()
    b = start_sandbox("--state-file", state)
    try:
        again = b.client(a.secret_key).v1.customers.create({"email": "restart@example.com"},
                                                           {"idempotency_key": k})
        assert again.id == first.id
        assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    finally:
        b.stop()


def test_strict_keys():
    s = start_sandbox("--strict-keys")
    try:
        assert s.client().v1.customers.list({"limit": 1}).object == "list"
        with pytest.raises(stripe.AuthenticationError) as ei:
            s.client("sk_test_" + "y" * 24).v1.customers.list({"limit": 1})
        assert ei.value.http_status == 401
    finally:
        s.stop()



def test_clock_advance_finishes_after_a_restart(tmp_path):
    """An advance whose task was lost to a restart is finished by the next read of the clock."""
    import time as _time

    state = str(tmp_path / "billing-state.json")
    a = start_sandbox("--state-file", state)
    c = a.client()
    t0 = (int(_time.time()) // 3600) * 3600 + 86400
    clock = c.v1.test_helpers.test_clocks.create({"frozen_time": t0})
    price = c.v1.prices.create({"currency": "usd", "unit_amount": 500, "recurring": {"interval": "day"},
                                "product_data": {"name": "daily"}})
    cus = c.v1.customers.create({"test_clock": clock.id, "payment_method": "pm_card_visa",
                                 "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    sub = c.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}]})
    assert c.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": t0 + 86400 + 60}).status == "advancing"
    a.stop()  # right away: the advance may not have run yet
    b = start_sandbox("--state-file", state)
    try:
        c = b.client()
        _time.sleep(2.2)
        got = c.v1.test_helpers.test_clocks.retrieve(clock.id)
        assert got.status == "ready" and got.frozen_time == t0 + 86400 + 60
        invs = c.v1.invoices.list({"subscription": sub.id}).data
        assert len(invs) == 2 and invs[0].billing_reason == "subscription_cycle" and invs[0].status == "paid"
    finally:
        b.stop()
