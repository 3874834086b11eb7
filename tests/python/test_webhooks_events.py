"""Webhook endpoints and signed deliveries (verified with the library's Webhook.construct_event),
delayed and retried deliveries, and the events API."""

import json
import re
import time
import uuid

import pytest
import stripe

from conftest import check, paid_intent, wait_for

SIG_RX = re.compile(r"^t=(\d+),v1=([0-9a-f]{64})(,v\d=[0-9a-f]+)*$")


@pytest.fixture
def make_endpoint(client):
    made = []

    def make(url, events, **extra):
        ep = client.v1.webhook_endpoints.create({"url": url, "enabled_events": events, **extra})
        made.append(ep.id)
        return ep

    yield make
    for ep_id in made:
        try:
            client.v1.webhook_endpoints.delete(ep_id)
        except stripe.InvalidRequestError:
            pass


def verified(receiver, secret, pred, n=1, timeout=15.0):
    """Wait until `n` deliveries match pred(event dict); verify each with the library."""
    def matching():
        got = [(d, ev) for d, ev in receiver.events() if pred(ev)]
        return got if len(got) >= n else None
    got = wait_for(matching, timeout=timeout, what=f"{n} matching webhook deliveries")
    out = []
    for d, ev in got:
        sig = d.headers.get("Stripe-Signature")
        assert sig and SIG_RX.match(sig), sig
        event = stripe.Webhook.construct_event(d.body.decode("utf-8"), sig, secret)
        assert event.id == ev["id"]
        assert d.headers.get("Content-Type", "").startswith("application/json")
        check(ev, f"webhook payload {ev.get('type')}")
        out.append((d, ev, int(SIG_RX.match(sig).group(1))))
    return out


def about(pi_id):
    return lambda ev: (ev["data"]["object"].get("id") == pi_id
                       or ev["data"]["object"].get("payment_intent") == pi_id)


def test_endpoint_crud(client, make_endpoint, receiver):
    ep = make_endpoint(receiver.url, ["payment_intent.succeeded", "charge.succeeded"],
                       description="shop", metadata={"k": "v"})
    assert ep.object == "webhook_endpoint" and ep.id.startswith("we_")
    assert ep.secret.startswith("whsec_")
    assert ep.status == "enabled" and ep.url == receiver.url
    assert sorted(ep.enabled_events) == ["charge.succeeded", "payment_intent.succeeded"]
    assert ep.description == "shop" and ep.metadata.to_dict() == {"k": "v"}

    got = client.v1.webhook_endpoints.retrieve(ep.id)
    assert "secret" not in got.to_dict()  # only the create call shows the secret
    assert got.url == ep.url

    up = client.v1.webhook_endpoints.update(ep.id, {"enabled_events": ["charge.refunded"], "disabled": True})
    assert up.enabled_events == ["charge.refunded"] and up.status == "disabled"
    assert ep.id in [e.id for e in client.v1.webhook_endpoints.list({"limit": 100}).data]

    gone = client.v1.webhook_endpoints.delete(ep.id)
    assert gone.to_dict() == {"id": ep.id, "object": "webhook_endpoint", "deleted": True}
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.webhook_endpoints.retrieve(ep.id)
    assert ei.value.code == "resource_missing"


def test_endpoint_with_pinned_api_version(make_endpoint, receiver):
    ep = make_endpoint(receiver.url, ["*"], api_version="2024-06-20")
    assert ep.api_version == "2024-06-20"


def test_endpoint_rejects_unknown_event_type(client, receiver):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.webhook_endpoints.create({"url": receiver.url, "enabled_events": ["payment_intent.exploded"]})
    assert ei.value.http_status == 400


def test_signed_deliveries(client, make_endpoint, receiver):
    ep = make_endpoint(receiver.url, ["payment_intent.succeeded", "charge.succeeded"])
    pi = paid_intent(client, 2100)
    got = verified(receiver, ep.secret, about(pi.id), n=2)
    types = sorted(ev["type"] for _, ev, _ in got)
    assert types == ["charge.succeeded", "payment_intent.succeeded"]
    now = time.time()
    for d, ev, t in got:
        assert abs(now - t) < 60
        assert ev["object"] == "event" and ev["livemode"] is False
        assert isinstance(ev["api_version"], str)
        # the delivered event is the stored one
        stored = client.v1.events.retrieve(ev["id"])
        assert stored.type == ev["type"] and stored.data.object.id == ev["data"]["object"]["id"]
    # only the enabled types reach the endpoint
    time.sleep(0.5)
    assert {ev["type"] for _, ev in receiver.events()} <= {"payment_intent.succeeded", "charge.succeeded"}
    # a wrong secret does not verify
    d, ev, _ = got[0]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(d.body.decode(), d.headers["Stripe-Signature"], "whsec_wrong")


def test_delayed_delivery_is_signed_at_send_time(client, make_endpoint, receiver, chaos):
    ep = make_endpoint(receiver.url, ["payment_intent.succeeded"])
    chaos(delay_ms=1500)
    t0 = time.time()
    pi = paid_intent(client, 2200)
    got = verified(receiver, ep.secret, about(pi.id), n=1, timeout=20)
    d, ev, t = got[0]
    assert d.at - t0 >= 1.4, "the delivery was not delayed"
    assert t >= ev["created"] + 1, "the signature's t= must be the send time, not the event's creation"


def test_duplicate_chaos_delivers_the_same_event_twice(client, make_endpoint, receiver, chaos):
    ep = make_endpoint(receiver.url, ["payment_intent.succeeded"])
    chaos(duplicate=1.0)
    pi = paid_intent(client, 2250)
    got = verified(receiver, ep.secret, about(pi.id), n=2, timeout=20)
    assert got[0][1]["id"] == got[1][1]["id"]
    assert got[0][1] == got[1][1]


def test_failed_delivery_is_retried(client, make_endpoint, receiver):
    receiver.script = [500]
    ep = make_endpoint(receiver.url, ["payment_intent.succeeded"])
    pi = paid_intent(client, 2300)
    got = verified(receiver, ep.secret, about(pi.id), n=2, timeout=60)
    (d1, ev1, t1), (d2, ev2, t2) = got[0], got[1]
    assert ev1["id"] == ev2["id"]
    assert d1.answered == 500 and d2.answered == 200
    assert t2 >= t1
    assert d2.at > d1.at


def test_each_endpoint_has_its_own_secret(client, make_endpoint, receiver):
    from conftest import Receiver
    other = Receiver()
    try:
        a = make_endpoint(receiver.url, ["payment_intent.succeeded"])
        b = make_endpoint(other.url, ["payment_intent.succeeded"])
        assert a.secret != b.secret
        pi = paid_intent(client, 2400)
        verified(receiver, a.secret, about(pi.id))
        verified(other, b.secret, about(pi.id))
    finally:
        other.close()


# ---- events API ---------------------------------------------------------------------------


def test_events_list_filters_and_retrieve(client, sandbox):
    pi = paid_intent(client, 2500)
    one = client.v1.events.list({"type": "payment_intent.succeeded", "limit": 5})
    assert one.url == "/v1/events"
    assert one.data and all(e.type == "payment_intent.succeeded" for e in one.data)
    assert one.data[0].data.object.id == pi.id  # newest first

    both = client.v1.events.list({"types": ["payment_intent.succeeded", "charge.succeeded"], "limit": 10})
    assert {e.type for e in both.data} <= {"payment_intent.succeeded", "charge.succeeded"}
    assert {e.type for e in both.data} == {"payment_intent.succeeded", "charge.succeeded"}
    raw = sandbox.http("GET", "/v1/events", params=[("types[]", "charge.succeeded"), ("limit", "3")])
    assert raw.status_code == 200 and {e["type"] for e in raw.json()["data"]} == {"charge.succeeded"}

    wild = client.v1.events.list({"type": "payment_intent.*", "limit": 20})
    assert wild.data and all(e.type.startswith("payment_intent.") for e in wild.data)

    ev = client.v1.events.retrieve(one.data[0].id)
    assert ev.id == one.data[0].id and ev.type == "payment_intent.succeeded"
    assert ev.data.object.status == "succeeded"
    recent = client.v1.events.list({"created": {"gte": ev.created}, "limit": 100})
    assert ev.id in [e.id for e in recent.data]

    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.events.retrieve("evt_doesnotexist")
    assert ei.value.http_status == 404 and ei.value.code == "resource_missing"


def test_event_request_carries_idempotency_key(client, uid):
    k = "evt-test-" + uuid.uuid4().hex
    c = client.v1.customers.create({"email": f"{uid}@example.com"}, {"idempotency_key": k})
    evs = client.v1.events.list({"type": "customer.created", "limit": 10}).data
    ev = next(e for e in evs if e.data.object.id == c.id)
    assert ev.request.idempotency_key == k
    assert ev.request.id == c.last_response.request_id
