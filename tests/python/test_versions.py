"""Events in the endpoint's API version: one endpoint pinned to 2022-11-15, one current, receive
the same billing lifecycle, each in its own shapes. Current payloads are checked against Stripe's
current fixtures, old ones against the 2023 schema subset (shapes.problems(..., api_version))."""

from __future__ import annotations

import json

import shapes
from conftest import Receiver, wait_for
from test_billing import DAY, HOUR, _start_time, advance, clock_customer, make_clock, monthly_price, period

OLD = "2022-11-15"


def _mine(ev: dict, ids: set) -> bool:
    o = ev["data"]["object"]
    keys = ("id", "customer", "invoice", "subscription", "payment_intent")
    if any(isinstance(o.get(k), str) and o.get(k) in ids for k in keys):
        return True
    parent = o.get("parent") or {}
    sd = parent.get("subscription_details") or {}
    return sd.get("subscription") in ids


def test_old_and_current_endpoints_receive_the_same_lifecycle_in_their_shapes(client, sandbox, uid):
    old_rx, cur_rx = Receiver(), Receiver()
    endpoints = []
    try:
        for rx, version in ((old_rx, OLD), (cur_rx, None)):
            params = {"url": rx.url, "enabled_events": ["*"]}
            if version:
                params["api_version"] = version
            endpoints.append(client.v1.webhook_endpoints.create(params))
        assert endpoints[0].api_version == OLD

        t0 = _start_time()
        clock = make_clock(client, t0)
        price = monthly_price(client, 2100, uid)
        cus = clock_customer(client, clock.id, uid)
        sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}]})
        assert sub.status == "active"
        first_invoice = sub.latest_invoice
        _, end = period(sub)
        # A quantity change mid-period: proration items, picked up by the renewal invoice.
        advance(client, clock.id, t0 + 10 * DAY)
        client.v1.subscriptions.update(sub.id, {"items": [{"id": sub["items"]["data"][0].id, "quantity": 2}]})
        advance(client, clock.id, end + HOUR)
        sub = client.v1.subscriptions.retrieve(sub.id)
        renewal = client.v1.invoices.retrieve(sub.latest_invoice)
        assert renewal.status == "paid"
        cn = client.v1.credit_notes.create({"invoice": renewal.id, "amount": 600, "refund_amount": 600})
        client.v1.subscriptions.update(sub.id, {"metadata": {"phase": "late"}})
        client.v1.subscriptions.cancel(sub.id)

        ids = {cus.id, sub.id, first_invoice, renewal.id, cn.id}
        wanted = {"customer.subscription.created", "customer.subscription.updated",
                  "customer.subscription.deleted", "invoice.created", "invoice.finalized",
                  "invoice.paid", "invoice.payment_succeeded", "invoice_payment.paid",
                  "payment_intent.succeeded", "charge.succeeded", "credit_note.created",
                  "charge.refunded", "invoiceitem.created"}

        def collected(rx):
            evs = {}
            for _, ev in rx.events():
                if _mine(ev, ids) or ev["type"].startswith(("payment_intent.", "charge.", "invoice_payment.")):
                    evs[ev["id"]] = ev
            return evs

        def both_done():
            o, c = collected(old_rx), collected(cur_rx)
            types = {e["type"] for e in o.values()}
            done = wanted <= types and any(e["type"] == "customer.subscription.deleted" for e in o.values())
            # Our own payments' charges too (a charge of another test's may have filled `wanted`).
            ours = {e["data"]["object"]["id"] for e in o.values()
                    if e["type"] == "payment_intent.succeeded" and e["data"]["object"]["customer"] == cus.id}
            charged = {e["data"]["object"]["payment_intent"] for e in o.values() if e["type"] == "charge.succeeded"}
            # And the payment of every paid invoice (events of different types arrive in any order).
            billed = {e["data"]["object"].get("payment_intent") for e in o.values()
                      if e["type"] == "invoice.paid" and _mine(e, ids)} - {None}
            done = done and bool(ours) and ours <= charged and billed <= ours
            # The events of our own objects that are read below: deliveries come in any order,
            # and another test's events may have filled `wanted` before ours arrived.
            got = {(e["type"], e["data"]["object"]["id"]) for e in o.values()}
            needed = {("customer.subscription.created", sub.id), ("customer.subscription.deleted", sub.id),
                      ("invoice.paid", first_invoice), ("invoice.paid", renewal.id),
                      ("credit_note.created", cn.id)}
            items = [e for e in o.values() if e["type"] == "invoiceitem.created"
                     and e["data"]["object"].get("subscription") == sub.id]
            done = done and needed <= got and len(items) >= 2
            return (o, c) if done and set(o) == set(c) else None

        old_evs, cur_evs = wait_for(both_done, timeout=20, what="both endpoints to receive the lifecycle")
        # Payment-intent/charge events of other tests may interleave: keep those of our invoices.
        pis = {e["data"]["object"]["id"] for e in cur_evs.values()
               if e["type"] == "payment_intent.succeeded" and e["data"]["object"]["customer"] == cus.id}
        ids |= pis
        old_evs = {k: v for k, v in old_evs.items() if _mine(v, ids)}
        cur_evs = {k: v for k, v in cur_evs.items() if _mine(v, ids)}
        assert set(old_evs) == set(cur_evs) and len(old_evs) >= 20

        problems = []
        for ev in old_evs.values():
            assert ev["api_version"] == OLD
            problems += [f"old {ev['type']}: {p}" for p in shapes.problems(ev, api_version=OLD)]
        for ev in cur_evs.values():
            assert ev["api_version"] != OLD
            problems += [f"current {ev['type']}: {p}" for p in shapes.problems(ev)]
        assert not problems, "\n".join(problems[:60])
        # The two checks tell the shapes apart (each rendering fails the other version's check).
        for type_ in ("customer.subscription.created", "invoice.paid", "credit_note.created"):
            o_ev = [e for e in old_evs.values() if e["type"] == type_][0]
            c_ev = cur_evs[o_ev["id"]]
            assert shapes.problems(c_ev, api_version=OLD), type_
            assert shapes.problems(o_ev), type_

        def one(evs, type_, oid):
            got = [e for e in evs.values() if e["type"] == type_ and e["data"]["object"]["id"] == oid]
            assert got, f"{type_} for {oid}"
            return got[0]

        # Subscription periods: on the subscription before basil, on the items now.
        o = one(old_evs, "customer.subscription.created", sub.id)["data"]["object"]
        c = one(cur_evs, "customer.subscription.created", sub.id)["data"]["object"]
        assert o["current_period_start"] == t0 and o["current_period_end"] == end
        assert "current_period_start" not in o["items"]["data"][0]
        assert "current_period_start" not in c
        assert c["items"]["data"][0]["current_period_end"] == end
        renewed = [e for e in old_evs.values() if e["type"] == "customer.subscription.updated"
                   and "current_period_start" in e["data"].get("previous_attributes", {})]
        assert renewed and renewed[0]["data"]["previous_attributes"]["current_period_start"] == t0
        renewed_cur = [e for e in cur_evs.values() if e["id"] == renewed[0]["id"]][0]
        assert "items" in renewed_cur["data"]["previous_attributes"]
        assert "current_period_start" not in renewed_cur["data"]["previous_attributes"]

        # Invoices: subscription / paid / charge / payment_intent vs parent and invoice payments.
        o = one(old_evs, "invoice.paid", renewal.id)["data"]["object"]
        c = one(cur_evs, "invoice.paid", renewal.id)["data"]["object"]
        assert o["subscription"] == sub.id and o["paid"] is True
        assert o["charge"].startswith("ch_") and o["payment_intent"].startswith("pi_")
        assert "parent" not in o
        for k in ("subscription", "paid", "charge", "payment_intent"):
            assert k not in c, k
        assert c["parent"]["subscription_details"]["subscription"] == sub.id
        # Lines priced by `price` vs `pricing.price_details`.
        assert o["lines"]["data"][0]["price"]["id"] == price.id
        assert o["lines"]["data"][0]["type"] == "subscription"
        assert "pricing" not in o["lines"]["data"][0]
        assert c["lines"]["data"][0]["pricing"]["price_details"]["price"] == price.id
        assert "price" not in c["lines"]["data"][0]
        pi_id = o["payment_intent"]
        assert pi_id in pis

        # Proration items: `price` / `subscription` vs `pricing` / `parent`, and the renewal
        # invoice carries them as invoice-item lines.
        items_old = [e for e in old_evs.values() if e["type"] == "invoiceitem.created"]
        assert len(items_old) == 2
        for e in items_old:
            ii = e["data"]["object"]
            assert ii["price"]["id"] == price.id and ii["subscription"] == sub.id
            assert ii["proration"] is True and "pricing" not in ii and "parent" not in ii
            ci = cur_evs[e["id"]]["data"]["object"]
            assert ci["parent"]["subscription_details"]["subscription"] == sub.id and "price" not in ci
        kinds = sorted(line["type"] for line in o["lines"]["data"])
        assert kinds == ["invoiceitem", "invoiceitem", "subscription"]

        # Charges and intents: `invoice` before basil; `charges` on the intent before 2022-11-15
        # is absent here (2022-11-15 is the first version without it).
        o = one(old_evs, "payment_intent.succeeded", pi_id)["data"]["object"]
        c = one(cur_evs, "payment_intent.succeeded", pi_id)["data"]["object"]
        assert o["invoice"] == renewal.id and "invoice" not in c
        assert "charges" not in o
        ch_id = o["latest_charge"]
        o = one(old_evs, "charge.succeeded", ch_id)["data"]["object"]
        c = one(cur_evs, "charge.succeeded", ch_id)["data"]["object"]
        assert o["invoice"] == renewal.id and "invoice" not in c

        # Credit notes: `refund` vs `refunds[]`.
        o = one(old_evs, "credit_note.created", cn.id)["data"]["object"]
        c = one(cur_evs, "credit_note.created", cn.id)["data"]["object"]
        assert o["refund"].startswith("re_") and "refunds" not in o
        assert c["refunds"][0]["refund"] == o["refund"] and "refund" not in c

        # The stored event (GET /v1/events) is the account's rendering: current.
        stored = client.v1.events.retrieve(next(iter(cur_evs)))
        assert stored.api_version == cur_evs[stored.id]["api_version"]
        assert json.loads(json.dumps(stored.to_dict()["data"]["object"])) == cur_evs[stored.id]["data"]["object"]
    finally:
        for ep in endpoints:
            client.v1.webhook_endpoints.delete(ep.id)
        old_rx.close()
        cur_rx.close()


def test_versions_before_2022_11_15_embed_charges_and_refunds(client, uid):
    rx = Receiver()
    ep = client.v1.webhook_endpoints.create({"url": rx.url, "api_version": "2020-08-27",
                                             "enabled_events": ["payment_intent.succeeded", "charge.refunded",
                                                                "invoice.paid"]})
    try:
        price = monthly_price(client, 1300, uid)
        cus = client.v1.customers.create({"email": f"{uid}@example.com", "payment_method": "pm_card_visa",
                                          "invoice_settings": {"default_payment_method": "pm_card_visa"}})
        sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}]})
        inv = client.v1.invoices.retrieve(sub.latest_invoice)
        client.v1.credit_notes.create({"invoice": inv.id, "amount": 300, "refund_amount": 300})

        def got():
            evs = [ev for _, ev in rx.events()]
            pis = [e for e in evs if e["type"] == "payment_intent.succeeded"
                   and e["data"]["object"]["customer"] == cus.id]
            refs = [e for e in evs if e["type"] == "charge.refunded" and e["data"]["object"]["customer"] == cus.id]
            invs = [e for e in evs if e["type"] == "invoice.paid" and e["data"]["object"]["id"] == inv.id]
            return (pis[0], refs[0], invs[0]) if pis and refs and invs else None

        pi_ev, ref_ev, inv_ev = wait_for(got, timeout=15, what="old-version deliveries")
        for ev in (pi_ev, ref_ev, inv_ev):
            assert ev["api_version"] == "2020-08-27"
            assert shapes.problems(ev, api_version="2020-08-27") == []
        pi = pi_ev["data"]["object"]
        assert pi["charges"]["object"] == "list"
        assert pi["charges"]["data"][0]["id"] == pi["latest_charge"]
        assert pi["charges"]["data"][0]["invoice"] == inv.id
        ch = ref_ev["data"]["object"]
        assert ch["refunds"]["object"] == "list" and ch["refunds"]["data"][0]["amount"] == 300
        assert inv_ev["data"]["object"]["subscription"] == sub.id
        # The current rendering is untouched.
        cur = client.v1.payment_intents.retrieve(pi["id"])
        assert "charges" not in cur.to_dict() and "invoice" not in cur.to_dict()
    finally:
        client.v1.webhook_endpoints.delete(ep.id)
        rx.close()

