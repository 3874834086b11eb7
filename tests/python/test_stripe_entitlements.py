"""Stripe's Entitlements API in the sandbox, driven with the official `stripe` library: features,
the features of products, customers' active entitlements from their subscriptions, and the
`entitlements.active_entitlement_summary.updated` event. Every response is shape-checked by the
harness; the four entitlement object types are checked against Stripe's current example objects
(`fixtures3-full-2026-08-21.json`), which the shared subset the checker reads does not hold."""

from __future__ import annotations

import json

import pytest
import stripe

import shapes
from conftest import wait_for

SUMMARY_EVENT = "entitlements.active_entitlement_summary.updated"

# The checker's references gain the entitlement types: Stripe's example objects and the
# library's classes (the 2023 schema predates them).
with open(shapes._OPENAPI / "fixtures3-full-2026-08-21.json", encoding="utf-8") as _f:
    _FULL = json.load(_f)["resources"]
for _t in ("entitlements.feature", "product_feature", "entitlements.active_entitlement",
           "entitlements.active_entitlement_summary"):
    shapes.FIXTURES.setdefault(_t, _FULL[_t])
shapes.LIB.setdefault("entitlements.feature", stripe.entitlements.Feature)
shapes.LIB.setdefault("product_feature", stripe.ProductFeature)
shapes.LIB.setdefault("entitlements.active_entitlement", stripe.entitlements.ActiveEntitlement)
shapes.LIB.setdefault("entitlements.active_entitlement_summary",
                      stripe.entitlements.ActiveEntitlementSummary)


def feature(client: stripe.StripeClient, uid: str, key: str, **extra):
    params = {"name": f"Feature {key}", "lookup_key": f"{key}-{uid}"}
    params.update(extra)
    return client.v1.entitlements.features.create(params)


def product_with_price(client: stripe.StripeClient, uid: str, recurring: bool = True):
    prod = client.v1.products.create({"name": f"Plan {uid}"})
    params = {"currency": "usd", "unit_amount": 900, "product": prod.id}
    if recurring:
        params["recurring"] = {"interval": "month"}
    return prod, client.v1.prices.create(params)


def paying_customer(client: stripe.StripeClient, uid: str):
    return client.v1.customers.create({
        "email": f"{uid}@example.com", "payment_method": "pm_card_visa",
        "invoice_settings": {"default_payment_method": "pm_card_visa"},
    })


def active_keys(client: stripe.StripeClient, customer: str) -> list:
    page = client.v1.entitlements.active_entitlements.list({"customer": customer, "limit": 100})
    return sorted(e.lookup_key for e in page.data)


def summaries(client: stripe.StripeClient, customer: str) -> list:
    """The customer's summary events, newest first (their objects as plain dicts)."""
    evs = client.v1.events.list({"type": SUMMARY_EVENT, "limit": 100})
    out = []
    for e in evs.data:
        o = e.data.object.to_dict()
        if o.get("customer") == customer:
            out.append(e)
    return out


def summary_keys(event) -> list:
    o = event.data.object.to_dict()
    return sorted(x["lookup_key"] for x in o["entitlements"]["data"])


def test_features_create_list_update_archive(client, uid):
    f = feature(client, uid, "export", metadata={"tier": "pro"})
    assert f.object == "entitlements.feature" and f.id.startswith("feat_")
    assert f.active is True and f.livemode is False
    assert f.lookup_key == f"export-{uid}" and f.metadata.to_dict() == {"tier": "pro"}

    # lookup_key is unique
    with pytest.raises(stripe.InvalidRequestError) as e:
        feature(client, uid, "export")
    assert e.value.param == "lookup_key"
    # name and lookup_key are required
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.entitlements.features.create({"name": "No key"})
    assert e.value.param == "lookup_key"

    got = client.v1.entitlements.features.retrieve(f.id)
    assert got.to_dict() == f.to_dict()
    listed = client.v1.entitlements.features.list({"lookup_key": f"export-{uid}"})
    assert [x.id for x in listed.data] == [f.id]

    upd = client.v1.entitlements.features.update(
        f.id, {"name": "CSV export", "metadata": {"tier": "", "seats": "5"}})
    assert upd.name == "CSV export" and upd.metadata.to_dict() == {"seats": "5"}
    assert upd.lookup_key == f"export-{uid}"

    archived = client.v1.entitlements.features.update(f.id, {"active": False})
    assert archived.active is False
    ids = lambda params: [x.id for x in client.v1.entitlements.features.list(params).auto_paging_iter()]
    assert f.id in ids({"archived": True})
    assert f.id not in ids({"archived": False})
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.entitlements.features.retrieve("feat_test_nope")
    assert e.value.http_status == 404


def test_product_features_attach_list_retrieve_delete(client, uid):
    prod, _ = product_with_price(client, uid)
    a = feature(client, uid, "a")
    b = feature(client, uid, "b")
    pa = client.v1.products.features.create(prod.id, {"entitlement_feature": a.id})
    assert pa.object == "product_feature" and pa.entitlement_feature.id == a.id
    assert pa.entitlement_feature.lookup_key == a.lookup_key
    pb = client.v1.products.features.create(prod.id, {"entitlement_feature": b.id})
    # attaching the same feature twice is refused
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.products.features.create(prod.id, {"entitlement_feature": a.id})
    assert e.value.param == "entitlement_feature"
    # an unknown feature is a 404 naming it
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.products.features.create(prod.id, {"entitlement_feature": "feat_test_nope"})
    assert e.value.http_status == 404 and e.value.param == "entitlement_feature"

    listed = client.v1.products.features.list(prod.id)
    assert [x.id for x in listed.data] == [pb.id, pa.id]
    assert client.v1.products.features.retrieve(prod.id, pa.id).to_dict() == pa.to_dict()

    gone = client.v1.products.features.delete(prod.id, pa.id)
    assert gone.deleted is True and gone.id == pa.id
    assert [x.id for x in client.v1.products.features.list(prod.id).data] == [pb.id]
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.products.features.retrieve(prod.id, pa.id)
    assert e.value.http_status == 404

    # an archived feature cannot be attached
    client.v1.entitlements.features.update(a.id, {"active": False})
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.products.features.create(prod.id, {"entitlement_feature": a.id})
    assert e.value.param == "entitlement_feature"


def test_subscription_entitles_until_cancelled(sandbox, client, uid):
    prod, price = product_with_price(client, uid)
    a = feature(client, uid, "reports")
    b = feature(client, uid, "api")
    client.v1.products.features.create(prod.id, {"entitlement_feature": a.id})
    client.v1.products.features.create(prod.id, {"entitlement_feature": b.id})
    cus = paying_customer(client, uid)
    assert active_keys(client, cus.id) == []
    assert summaries(client, cus.id) == []

    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}]})
    assert sub.status == "active"
    assert active_keys(client, cus.id) == sorted([a.lookup_key, b.lookup_key])
    ents = client.v1.entitlements.active_entitlements.list({"customer": cus.id}).data
    one = client.v1.entitlements.active_entitlements.retrieve(ents[0].id)
    assert one.to_dict() == ents[0].to_dict() and one.feature in (a.id, b.id)
    # `feature` expands (raw call: the checker takes the fixture's string for the only shape,
    # while the library types it as an id or a Feature)
    expanded = sandbox.http("GET", "/v1/entitlements/active_entitlements", shape=False,
                            params={"customer": cus.id, "expand[]": "data.feature"}).json()
    assert {e["feature"]["id"] for e in expanded["data"]} == {a.id, b.id}
    for e in expanded["data"]:
        assert shapes.problems(e["feature"]) == []

    evs = summaries(client, cus.id)
    assert len(evs) == 1
    o = evs[0].data.object
    assert o.object == "entitlements.active_entitlement_summary" and o.customer == cus.id
    assert summary_keys(evs[0]) == sorted([a.lookup_key, b.lookup_key])
    assert o.entitlements.has_more is False

    # an update that leaves the set as it is announces nothing
    client.v1.subscriptions.update(sub.id, {"metadata": {"x": "1"}})
    assert len(summaries(client, cus.id)) == 1

    client.v1.subscriptions.cancel(sub.id)
    assert active_keys(client, cus.id) == []
    evs = summaries(client, cus.id)
    assert len(evs) == 2 and summary_keys(evs[0]) == []
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.entitlements.active_entitlements.retrieve(ents[0].id)
    assert e.value.http_status == 404
    # `customer` is required
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.entitlements.active_entitlements.list({})
    assert e.value.param == "customer"


def test_trial_entitles_and_features_follow_the_product(client, uid):
    prod, price = product_with_price(client, uid)
    a = feature(client, uid, "sso")
    cus = client.v1.customers.create({"email": f"{uid}@example.com"})
    sub = client.v1.subscriptions.create({
        "customer": cus.id, "items": [{"price": price.id}], "trial_period_days": 7,
    })
    assert sub.status == "trialing"
    # subscribed before the product had any feature: nothing yet, no event
    assert active_keys(client, cus.id) == [] and summaries(client, cus.id) == []

    pf = client.v1.products.features.create(prod.id, {"entitlement_feature": a.id})
    assert active_keys(client, cus.id) == [a.lookup_key]
    assert [summary_keys(e) for e in summaries(client, cus.id)] == [[a.lookup_key]]

    # archiving the feature takes it away; restoring gives it back (a new entitlement)
    first = client.v1.entitlements.active_entitlements.list({"customer": cus.id}).data[0].id
    client.v1.entitlements.features.update(a.id, {"active": False})
    assert active_keys(client, cus.id) == []
    client.v1.entitlements.features.update(a.id, {"active": True})
    again = client.v1.entitlements.active_entitlements.list({"customer": cus.id}).data
    assert [e.lookup_key for e in again] == [a.lookup_key] and again[0].id != first

    client.v1.products.features.delete(prod.id, pf.id)
    assert active_keys(client, cus.id) == []
    assert [summary_keys(e) for e in summaries(client, cus.id)] == [
        [], [a.lookup_key], [], [a.lookup_key]]


def test_one_time_purchase_entitles_to_nothing(client, uid):
    prod, price = product_with_price(client, uid, recurring=False)
    a = feature(client, uid, "lifetime")
    client.v1.products.features.create(prod.id, {"entitlement_feature": a.id})
    cus = paying_customer(client, uid)
    client.v1.invoice_items.create({"customer": cus.id, "price": price.id})
    inv = client.v1.invoices.create({"customer": cus.id, "pending_invoice_items_behavior": "include"})
    paid = client.v1.invoices.pay(inv.id)
    assert paid.status == "paid"
    assert active_keys(client, cus.id) == []
    assert summaries(client, cus.id) == []


def test_summary_lists_ten_with_has_more(client, uid):
    prod, price = product_with_price(client, uid)
    feats = [feature(client, uid, f"f{i:02}") for i in range(12)]
    for f in feats:
        client.v1.products.features.create(prod.id, {"entitlement_feature": f.id})
    cus = paying_customer(client, uid)
    client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}]})
    evs = summaries(client, cus.id)
    assert len(evs) == 1
    ents = evs[0].data.object.entitlements
    assert len(ents.data) == 10 and ents.has_more is True
    assert len(active_keys(client, cus.id)) == 12
    page = client.v1.entitlements.active_entitlements.list({"customer": cus.id, "limit": 5})
    assert len(page.data) == 5 and page.has_more is True
    everything = list(client.v1.entitlements.active_entitlements.list(
        {"customer": cus.id, "limit": 5}).auto_paging_iter())
    assert len({e.id for e in everything}) == 12


def test_summary_event_is_delivered(sandbox, client, receiver, uid):
    endpoint = client.v1.webhook_endpoints.create(
        {"url": receiver.url, "enabled_events": [SUMMARY_EVENT]})
    try:
        prod, price = product_with_price(client, uid)
        a = feature(client, uid, "webhook")
        client.v1.products.features.create(prod.id, {"entitlement_feature": a.id})
        cus = paying_customer(client, uid)
        client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}]})

        def delivered():
            for _, d in receiver.events():
                if d.get("type") == SUMMARY_EVENT and d["data"]["object"]["customer"] == cus.id:
                    return d
            return None

        ev = wait_for(delivered, what="the summary event delivered")
        shapes_errors = shapes.problems(ev)
        assert shapes_errors == []
        assert [e["lookup_key"] for e in ev["data"]["object"]["entitlements"]["data"]] == [
            a.lookup_key]
    finally:
        client.v1.webhook_endpoints.delete(endpoint.id)
