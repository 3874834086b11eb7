"""Customers with metadata, products and prices, and list paging both ways."""

import time

import pytest
import stripe


def test_customer_metadata_lifecycle(client, uid):
    c = client.v1.customers.create({"email": f"{uid}@example.com", "name": "Jenny Rosen",
                                    "metadata": {"a": "1", "b": "2"}})
    assert c.object == "customer" and c.id.startswith("cus_")
    assert c.email == f"{uid}@example.com" and c.name == "Jenny Rosen"
    assert c.metadata.to_dict() == {"a": "1", "b": "2"}
    assert c.livemode is False and c.balance == 0 and c.delinquent is False

    got = client.v1.customers.retrieve(c.id)
    assert got.to_dict() == c.to_dict()

    # update merges metadata
    up = client.v1.customers.update(c.id, {"metadata": {"b": "3", "c": "4"}, "description": "vip"})
    assert up.metadata.to_dict() == {"a": "1", "b": "3", "c": "4"}
    assert up.description == "vip"
    # an empty string unsets a key
    up = client.v1.customers.update(c.id, {"metadata": {"a": ""}})
    assert up.metadata.to_dict() == {"b": "3", "c": "4"}
    assert client.v1.customers.retrieve(c.id).metadata.to_dict() == {"b": "3", "c": "4"}

    events = client.v1.events.list({"type": "customer.updated", "limit": 10}).data
    ev = next(e for e in events if e.data.object.id == c.id)
    assert "metadata" in ev.data.previous_attributes

    d = client.v1.customers.delete(c.id)
    assert d.to_dict() == {"id": c.id, "object": "customer", "deleted": True}
    again = client.v1.customers.retrieve(c.id)
    assert again.to_dict().get("deleted") is True and again.id == c.id
    # deleted customers leave the list
    assert c.id not in [x.id for x in client.v1.customers.list({"email": f"{uid}@example.com"}).data]


def test_metadata_value_too_long_is_refused(client):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.customers.create({"metadata": {"k": "x" * 501}})
    assert ei.value.http_status == 400


def test_product_and_prices(client, uid):
    prod = client.v1.products.create({"name": "T-shirt " + uid, "description": "gray", "metadata": {"u": uid}})
    assert prod.object == "product" and prod.id.startswith("prod_")
    assert prod.active is True and prod.name == "T-shirt " + uid and prod.default_price is None
    assert prod.type == "service"

    one = client.v1.prices.create({"product": prod.id, "unit_amount": 1500, "currency": "usd",
                                   "lookup_key": "tee-" + uid})
    assert one.object == "price" and one.id.startswith("price_")
    assert one.type == "one_time" and one.recurring is None
    assert one.unit_amount == 1500 and str(one.unit_amount_decimal) == "1500"
    assert one.billing_scheme == "per_unit" and one.tax_behavior == "unspecified"
    assert one.product == prod.id and one.lookup_key == "tee-" + uid

    monthly = client.v1.prices.create({"product": prod.id, "unit_amount": 900, "currency": "usd",
                                       "recurring": {"interval": "month"}})
    assert monthly.type == "recurring"
    assert monthly.recurring.interval == "month"
    assert monthly.recurring.interval_count == 1
    assert monthly.recurring.usage_type == "licensed"

    listed = client.v1.prices.list({"product": prod.id})
    assert [p.id for p in listed.data] == [monthly.id, one.id]
    rec = client.v1.prices.list({"product": prod.id, "type": "recurring"})
    assert [p.id for p in rec.data] == [monthly.id]
    by_key = client.v1.prices.list({"lookup_keys": ["tee-" + uid]})
    assert [p.id for p in by_key.data] == [one.id]

    exp = client.v1.prices.retrieve(one.id, {"expand": ["product"]})
    assert exp.product.id == prod.id and exp.product.object == "product"

    up = client.v1.products.update(prod.id, {"default_price": one.id, "active": True})
    assert up.default_price == one.id
    archived = client.v1.prices.update(monthly.id, {"active": False})
    assert archived.active is False


def test_product_with_default_price_data(client, uid):
    prod = client.v1.products.create({"name": "Pro " + uid,
                                      "default_price_data": {"currency": "usd", "unit_amount": 4900,
                                                             "recurring": {"interval": "year"}}})
    assert isinstance(prod.default_price, str) and prod.default_price.startswith("price_")
    pr = client.v1.prices.retrieve(prod.default_price)
    assert pr.product == prod.id and pr.unit_amount == 4900 and pr.recurring.interval == "year"


def test_recurring_price_needs_valid_interval(client, uid):
    prod = client.v1.products.create({"name": "x " + uid})
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.prices.create({"product": prod.id, "unit_amount": 100, "currency": "usd",
                                 "recurring": {"interval": "fortnight"}})
    assert ei.value.http_status == 400
    assert ei.value.json_body["error"]["param"] == "recurring[interval]"


def test_lists_paged_both_ways(client, uid):
    email = f"{uid}@example.com"
    made = [client.v1.customers.create({"email": email, "metadata": {"i": str(i)}}) for i in range(7)]
    newest_first = [c.id for c in reversed(made)]

    p1 = client.v1.customers.list({"email": email, "limit": 3})
    assert p1.object == "list" and p1.url == "/v1/customers"
    assert [c.id for c in p1.data] == newest_first[0:3] and p1.has_more is True
    p2 = client.v1.customers.list({"email": email, "limit": 3, "starting_after": p1.data[-1].id})
    assert [c.id for c in p2.data] == newest_first[3:6] and p2.has_more is True
    p3 = client.v1.customers.list({"email": email, "limit": 3, "starting_after": p2.data[-1].id})
    assert [c.id for c in p3.data] == newest_first[6:7] and p3.has_more is False

    # back again with ending_before: the objects just before (newer than) the cursor, newest first
    b2 = client.v1.customers.list({"email": email, "limit": 3, "ending_before": p3.data[0].id})
    assert [c.id for c in b2.data] == newest_first[3:6] and b2.has_more is True
    b1 = client.v1.customers.list({"email": email, "limit": 3, "ending_before": b2.data[0].id})
    assert [c.id for c in b1.data] == newest_first[0:3] and b1.has_more is False
    b0 = client.v1.customers.list({"email": email, "limit": 3, "ending_before": newest_first[1]})
    assert [c.id for c in b0.data] == newest_first[0:1] and b0.has_more is False

    # the library's own paging, both directions
    forward = [c.id for c in client.v1.customers.list({"email": email, "limit": 3}).auto_paging_iter()]
    assert forward == newest_first
    backward = [c.id for c in client.v1.customers.list(
        {"email": email, "limit": 2, "ending_before": newest_first[6]}).auto_paging_iter()]
    assert backward == list(reversed(newest_first[:6]))

    # created filters
    first_created = min(c.created for c in made)
    last_created = max(c.created for c in made)
    gte = client.v1.customers.list({"email": email, "limit": 100, "created": {"gte": first_created}})
    assert [c.id for c in gte.data] == newest_first
    gt = client.v1.customers.list({"email": email, "created": {"gt": last_created}})
    assert gt.data == [] and gt.has_more is False
    lt = client.v1.customers.list({"email": email, "created": {"lt": first_created}})
    assert lt.data == []
    exact = client.v1.customers.list({"email": email, "limit": 100, "created": last_created})
    assert set(c.id for c in exact.data) == {c.id for c in made if c.created == last_created}


def test_list_limit_bounds(client):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.customers.list({"limit": 101})
    assert ei.value.http_status == 400 and ei.value.json_body["error"]["param"] == "limit"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.list({"limit": 0})

