"""Stripe's customer portal with Stripe's official library: configurations (create, retrieve with
the includable products, update, list, their events), sessions (default configuration, flow_data
for subscription_cancel and payment_method_update, errors), and the hosted portal page's actions
(switch price, update the card, cancel at period end, renew, cancel now from a flow), each
checked through the objects and events Stripe would produce. Every object is shape-checked
against Stripe's example objects of 2026-08-21 (the full fixture file)."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List

import pytest
import requests
import stripe

import shapes
from conftest import check

# The portal's example objects are in the full fixture file only: the shape checker learns them
# here (with the library's classes), as it knows the others from the subset.
with open(shapes.SHARED / "stripe-openapi" / "fixtures3-full-2026-08-21.json", encoding="utf-8") as _f:
    _FULL = json.load(_f)["resources"]
for _t, _cls in {
    "billing_portal.configuration": stripe.billing_portal.Configuration,
    "billing_portal.session": stripe.billing_portal.Session,
}.items():
    shapes.FIXTURES.setdefault(_t, _FULL[_t])
    shapes.LIB.setdefault(_t, _cls)
shapes.CONDITIONAL_FIELDS.setdefault(
    "billing_portal.configuration.features.subscription_update.products",
    "includable: only with expand[]=features.subscription_update.products",
)


# ---- helpers ---------------------------------------------------------------------------------


def catalog(client, uid: str):
    product = client.v1.products.create({"name": f"Streaming {uid}"})
    basic = client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 1000,
                                     "recurring": {"interval": "month"}, "nickname": "Basic"})
    pro = client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 2500,
                                   "recurring": {"interval": "month"}, "nickname": "Pro"})
    return product, basic, pro


def subscriber(client, price_id: str):
    cus = client.v1.customers.create({"email": "buyer@example.com", "payment_method": "pm_card_visa",
                                      "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price_id}]})
    assert sub.status == "active", sub
    return cus, sub


def full_config(client, product, prices: List[str], **extra):
    params: Dict[str, Any] = {
        "business_profile": {"headline": "Streaming", "privacy_policy_url": "https://shop.example/privacy"},
        "default_return_url": "https://shop.example/account",
        "features": {
            "invoice_history": {"enabled": True},
            "payment_method_update": {"enabled": True},
            "subscription_cancel": {"enabled": True, "mode": "at_period_end",
                                    "cancellation_reason": {"enabled": True,
                                                            "options": ["too_expensive", "unused"]}},
            "subscription_update": {"enabled": True, "default_allowed_updates": ["price"],
                                    "proration_behavior": "none",
                                    "products": [{"product": product.id, "prices": prices}]},
        },
        "metadata": {"team": "billing"},
    }
    params.update(extra)
    return client.v1.billing_portal.configurations.create(params)


def events_of(client, type_: str, object_id: str) -> List[Any]:
    evs = client.v1.events.list({"type": type_, "limit": 100}).data
    return [e for e in evs if e.data.object.to_dict().get("id") == object_id]


def page(url: str) -> requests.Response:
    r = requests.get(url, timeout=10)
    assert r.headers.get("content-type", "").startswith("text/html"), r.headers
    assert "default-src 'none'" in r.headers.get("content-security-policy", "")
    return r


def post(url: str, data: Dict[str, str]) -> requests.Response:
    return requests.post(url, data=data, allow_redirects=False, timeout=10)


# ---- configurations --------------------------------------------------------------------------


def test_configuration_lifecycle(client, uid):
    product, basic, pro = catalog(client, uid)
    cfg = full_config(client, product, [basic.id, pro.id])
    assert cfg.object == "billing_portal.configuration"
    assert cfg.id.startswith("bpc_")
    assert cfg.active is True and cfg.is_default is False and cfg.livemode is False
    assert cfg.default_return_url == "https://shop.example/account"
    assert cfg.business_profile.headline == "Streaming"
    assert cfg.features.subscription_cancel.mode == "at_period_end"
    assert cfg.features.subscription_cancel.cancellation_reason.options == ["too_expensive", "unused"]
    assert cfg.features.subscription_update.default_allowed_updates == ["price"]
    # products are includable, as on Stripe.
    assert "products" not in cfg.features.subscription_update.to_dict()
    got = client.v1.billing_portal.configurations.retrieve(
        cfg.id, {"expand": ["features.subscription_update.products"]})
    products = got.features.subscription_update.products
    assert [p.product for p in products] == [product.id]
    assert products[0].prices == [basic.id, pro.id]
    assert len(events_of(client, "billing_portal.configuration.created", cfg.id)) == 1

    upd = client.v1.billing_portal.configurations.update(
        cfg.id, {"business_profile": {"headline": "Streaming+"}, "name": "Main"})
    assert upd.business_profile.headline == "Streaming+" and upd.name == "Main"
    ev = events_of(client, "billing_portal.configuration.updated", cfg.id)
    assert len(ev) == 1
    prev = ev[0].data.previous_attributes.to_dict()
    assert prev["business_profile"]["headline"] == "Streaming"
    assert prev["name"] is None
    listed = client.v1.billing_portal.configurations.list({"is_default": False, "limit": 100})
    assert cfg.id in [c.id for c in listed.data]

    # Stripe's errors for bad input.
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing_portal.configurations.create({"business_profile": {"headline": "x"}})
    assert e.value.param == "features"
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing_portal.configurations.create({"features": {"subscription_cancel": {"mode": "later"}}})
    assert e.value.param == "features[subscription_cancel][mode]"
    other = client.v1.products.create({"name": "Other"})
    with pytest.raises(stripe.InvalidRequestError) as e:
        full_config(client, other, [basic.id])
    assert e.value.param == "features[subscription_update][products][0][prices][0]"
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing_portal.configurations.retrieve("bpc_nope")
    assert e.value.code == "resource_missing"


# ---- sessions --------------------------------------------------------------------------------


def test_session_with_the_default_configuration(client, uid):
    _, basic, _ = catalog(client, uid)
    cus, _ = subscriber(client, basic.id)
    s = client.v1.billing_portal.sessions.create({"customer": cus.id,
                                                  "return_url": "https://shop.example/account"})
    assert s.object == "billing_portal.session" and s.id.startswith("bps_")
    assert s.customer == cus.id and s.flow is None and s.livemode is False
    assert s.return_url == "https://shop.example/account"
    default = client.v1.billing_portal.configurations.retrieve(s.configuration)
    assert default.is_default is True and default.active is True
    # One default configuration, reused by the next session.
    s2 = client.v1.billing_portal.sessions.create({"customer": cus.id})
    assert s2.configuration == s.configuration
    assert s2.return_url is None
    assert len(events_of(client, "billing_portal.session.created", s.id)) == 1
    ev = events_of(client, "billing_portal.session.created", s.id)[0]
    check(ev.data.object.to_dict(), "event payload: billing_portal.session")
    html = page(s.url).text
    assert "Manage your subscriptions" in html
    assert "Return to shop.example" in html and "https://shop.example/account" in html
    assert "$10.00 / month" in html

    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing_portal.sessions.create({"return_url": "https://shop.example"})
    assert e.value.param == "customer"
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing_portal.sessions.create({"customer": "cus_nope"})
    assert e.value.code == "resource_missing" and e.value.param == "customer"
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing_portal.sessions.create({"customer": cus.id, "return_url": "shop.example"})
    assert e.value.param == "return_url"
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing_portal.sessions.create({"customer": cus.id, "configuration": "bpc_nope"})
    assert e.value.param == "configuration"


def test_portal_actions_produce_stripes_objects_and_events(client, uid):
    product, basic, pro = catalog(client, uid)
    cus, sub = subscriber(client, basic.id)
    cfg = full_config(client, product, [basic.id, pro.id])
    s = client.v1.billing_portal.sessions.create({"customer": cus.id, "configuration": cfg.id})
    assert s.return_url == "https://shop.example/account"  # the configuration's default
    base = s.url
    home = page(base).text
    assert f"{base}/subscriptions/{sub.id}/cancel" in home
    assert f"{base}/subscriptions/{sub.id}/update" in home

    # Switch to Pro (among the configuration's prices).
    upd_page = page(f"{base}/subscriptions/{sub.id}/update").text
    assert pro.id in upd_page and "Pro" in upd_page
    r = post(f"{base}/subscriptions/{sub.id}/update", {"price": "price_not_offered"})
    assert r.status_code == 200 and "Choose one of the plans shown." in r.text
    r = post(f"{base}/subscriptions/{sub.id}/update", {"price": pro.id})
    assert r.status_code == 303 and r.headers["location"] == f"{base}?done=updated"
    now = client.v1.subscriptions.retrieve(sub.id)
    assert now["items"].data[0].price.id == pro.id
    updated = events_of(client, "customer.subscription.updated", sub.id)
    assert any(e.data.previous_attributes.to_dict().get("items") for e in updated)

    # Update the card: attached, the customer's default.
    r = post(f"{base}/payment_method", {"cardnumber": "5555 5555 5555 4444", "exp": "12/34", "cvc": "123",
                                        "name": "Jo Buyer"})
    assert r.status_code == 303, r.text
    cus_now = client.v1.customers.retrieve(cus.id)
    pm = client.v1.payment_methods.retrieve(cus_now.invoice_settings.default_payment_method)
    assert pm.card.last4 == "4444" and pm.customer == cus.id and pm.billing_details.name == "Jo Buyer"
    assert len(events_of(client, "payment_method.attached", pm.id)) == 1
    cu = events_of(client, "customer.updated", cus.id)
    assert any("invoice_settings" in e.data.previous_attributes.to_dict() for e in cu)
    r = post(f"{base}/payment_method", {"cardnumber": "4242", "exp": "1", "cvc": "1"})
    assert r.status_code == 400 and "expiration date is incomplete" in r.text

    # Cancel at period end, with a reason.
    confirm = page(f"{base}/subscriptions/{sub.id}/cancel").text
    assert "Cancel your subscription" in confirm and "too_expensive" in confirm
    r = post(f"{base}/subscriptions/{sub.id}/cancel", {"reason": "too_expensive"})
    assert r.status_code == 303 and r.headers["location"] == f"{base}?done=scheduled"
    now = client.v1.subscriptions.retrieve(sub.id)
    assert now.status == "active" and now.cancel_at_period_end is True
    assert now.cancellation_details.reason == "cancellation_requested"
    assert now.cancellation_details.feedback == "too_expensive"
    assert now.cancel_at == now["items"].data[0].current_period_end
    assert "Cancels on" in page(f"{base}?done=scheduled").text

    # Renew: the cancellation is undone.
    r = post(f"{base}/subscriptions/{sub.id}/renew", {})
    assert r.status_code == 303
    now = client.v1.subscriptions.retrieve(sub.id)
    assert now.cancel_at_period_end is False and now.cancel_at is None
    assert now.cancellation_details.reason is None
    last = events_of(client, "customer.subscription.updated", sub.id)[0]
    assert last.data.previous_attributes.to_dict()["cancel_at_period_end"] is True

    # Another customer's session cannot touch this subscription.
    other, _ = subscriber(client, basic.id)
    s_other = client.v1.billing_portal.sessions.create({"customer": other.id, "configuration": cfg.id})
    r = post(f"{s_other.url}/subscriptions/{sub.id}/cancel", {})
    assert r.status_code in (400, 404)
    assert client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is False
    assert requests.get(base.rsplit("/", 1)[0] + "/test_nothing", timeout=10).status_code == 404


def test_flow_data_subscription_cancel_opens_on_the_confirmation(client, uid):
    product, basic, pro = catalog(client, uid)
    cus, sub = subscriber(client, basic.id)
    now_cfg = full_config(client, product, [basic.id, pro.id])
    now_cfg = client.v1.billing_portal.configurations.update(
        now_cfg.id, {"features": {"subscription_cancel": {"mode": "immediately"}}})
    s = client.v1.billing_portal.sessions.create({
        "customer": cus.id, "configuration": now_cfg.id,
        "flow_data": {"type": "subscription_cancel",
                      "subscription_cancel": {"subscription": sub.id},
                      "after_completion": {"type": "redirect",
                                           "redirect": {"return_url": "https://shop.example/bye"}}},
    })
    assert s.flow.type == "subscription_cancel"
    assert s.flow.subscription_cancel.subscription == sub.id
    assert s.flow.after_completion.type == "redirect"
    assert s.flow.after_completion.redirect.return_url == "https://shop.example/bye"
    assert s.flow.subscription_update is None and s.flow.after_completion.hosted_confirmation is None
    html = page(s.url).text
    assert "Cancel your subscription" in html and "canceled now" in html
    r = post(f"{s.url}/subscriptions/{sub.id}/cancel", {"reason": "unused"})
    assert r.status_code == 303 and r.headers["location"] == "https://shop.example/bye"
    ended = client.v1.subscriptions.retrieve(sub.id)
    assert ended.status == "canceled"
    assert ended.cancellation_details.reason == "cancellation_requested"
    assert ended.cancellation_details.feedback == "unused"
    assert len(events_of(client, "customer.subscription.deleted", sub.id)) == 1

    # A flow on a subscription that cannot be canceled, or of another customer, is refused.
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing_portal.sessions.create({
            "customer": cus.id, "configuration": now_cfg.id,
            "flow_data": {"type": "subscription_cancel", "subscription_cancel": {"subscription": sub.id}}})
    assert e.value.param == "flow_data[subscription_cancel][subscription]"
    other, other_sub = subscriber(client, basic.id)
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing_portal.sessions.create({
            "customer": cus.id,
            "flow_data": {"type": "subscription_cancel", "subscription_cancel": {"subscription": other_sub.id}}})
    assert e.value.param == "flow_data[subscription_cancel][subscription]"
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing_portal.sessions.create({"customer": cus.id, "flow_data": {"type": "subscription_cancel"}})
    assert e.value.param == "flow_data[subscription_cancel]"


def test_flow_data_payment_method_update_with_hosted_confirmation(client, uid):
    _, basic, _ = catalog(client, uid)
    cus, sub = subscriber(client, basic.id)
    s = client.v1.billing_portal.sessions.create({
        "customer": cus.id,
        "flow_data": {"type": "payment_method_update",
                      "after_completion": {"type": "hosted_confirmation",
                                           "hosted_confirmation": {"custom_message": "All set, thanks!"}}},
    })
    assert s.flow.type == "payment_method_update"
    assert s.flow.after_completion.hosted_confirmation.custom_message == "All set, thanks!"
    assert s.flow.subscription_cancel is None
    html = page(s.url).text
    assert "Update your payment method" in html and 'name="cardnumber"' in html
    r = post(f"{s.url}/payment_method", {"cardnumber": "4000 0566 5566 5556", "exp": "0930", "cvc": "321"})
    assert r.status_code == 200 and "All set, thanks!" in r.text
    cus_now = client.v1.customers.retrieve(cus.id)
    pm = client.v1.payment_methods.retrieve(cus_now.invoice_settings.default_payment_method)
    assert pm.card.last4 == "5556" and pm.card.exp_month == 9 and pm.card.exp_year == 2030
    assert re.search(r"bps_[A-Za-z0-9]+", s.id)


def test_flow_data_subscription_update_confirm_proposes_the_price(client, uid):
    product, basic, pro = catalog(client, uid)
    cus, sub = subscriber(client, basic.id)
    item = sub["items"].data[0].id
    s = client.v1.billing_portal.sessions.create({
        "customer": cus.id,
        "flow_data": {"type": "subscription_update_confirm",
                      "subscription_update_confirm": {"subscription": sub.id,
                                                      "items": [{"id": item, "price": pro.id}]}},
    })
    assert s.flow.type == "subscription_update_confirm"
    confirm = s.flow.subscription_update_confirm
    assert confirm.subscription == sub.id and confirm["items"][0].price == pro.id
    html = page(s.url).text
    assert "Update your subscription" in html
    assert re.search(rf'value="{pro.id}" checked', html), html
    r = post(f"{s.url}/subscriptions/{sub.id}/update", {"price": pro.id})
    assert r.status_code == 303
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == pro.id
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing_portal.sessions.create({
            "customer": cus.id,
            "flow_data": {"type": "subscription_update_confirm",
                          "subscription_update_confirm": {"subscription": sub.id,
                                                          "items": [{"id": item, "price": "price_nope"}]}}})
    assert e.value.param == "flow_data[subscription_update_confirm][items][0][price]"
