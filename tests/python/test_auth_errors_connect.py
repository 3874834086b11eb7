"""Keys (secret, restricted, bad), Stripe's error shapes, Stripe-Version / Request-Id, and
Stripe-Account isolation of connected accounts."""

import base64

import pytest
import requests
import stripe


# ---- errors -------------------------------------------------------------------------------


def test_unknown_parameter(client):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.customers.create({"email": "a@example.com", "favourite_colour": "blue"})
    e = ei.value
    assert e.http_status == 400
    assert e.code == "parameter_unknown"
    assert e.param == "favourite_colour"
    assert e.user_message == "Received unknown parameter: favourite_colour"
    assert e.json_body["error"]["type"] == "invalid_request_error"


def test_unknown_nested_parameter(client):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.customers.create({"address": {"line1": "1 Main St", "planet": "Mars"}})
    assert ei.value.code == "parameter_unknown"
    assert ei.value.param == "address[planet]"
    assert ei.value.user_message == "Received unknown parameter: address[planet]"


def test_unknown_parameter_on_payment_intent(client):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.payment_intents.create({"amount": 100, "currency": "usd", "colour": "red"})
    assert ei.value.code == "parameter_unknown" and ei.value.param == "colour"


def test_missing_required_parameter(client):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.payment_intents.create({"currency": "usd"})
    e = ei.value
    assert e.http_status == 400
    assert e.code == "parameter_missing"
    assert e.param == "amount"
    assert e.user_message == "Missing required param: amount."


def test_invalid_integer(client):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.payment_intents.create({"amount": "ten", "currency": "usd"})
    assert ei.value.code == "parameter_invalid_integer" and ei.value.param == "amount"


def test_not_found(client):
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.customers.retrieve("cus_doesnotexist")
    e = ei.value
    assert e.http_status == 404
    assert e.code == "resource_missing"
    assert e.user_message == "No such customer: 'cus_doesnotexist'"
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.payment_intents.retrieve("pi_doesnotexist")
    assert ei.value.http_status == 404 and ei.value.code == "resource_missing"
    assert ei.value.user_message == "No such payment_intent: 'pi_doesnotexist'"
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.charges.retrieve("ch_doesnotexist")
    assert ei.value.user_message == "No such charge: 'ch_doesnotexist'"


def test_unknown_path(sandbox):
    r = sandbox.http("GET", "/v1/definitely_not_a_resource")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith("Unrecognized request URL (GET: /v1/definitely_not_a_resource)")


# ---- keys -----------------------------------------------------------------------------------


def test_bad_key(sandbox):
    bad = sandbox.client("sk_bogus_0000000000")
    with pytest.raises(stripe.AuthenticationError) as ei:
        bad.v1.customers.list()
    assert ei.value.http_status == 401
    assert ei.value.json_body["error"]["type"] == "invalid_request_error"
    assert ei.value.user_message.startswith("Invalid API Key provided")


def test_no_key(sandbox):
    r = sandbox.http("GET", "/v1/customers", key=None)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.headers.get("Request-Id", "").startswith("req_")


def test_basic_auth(sandbox):
    r = requests.get(sandbox.base + "/v1/customers", params={"limit": 1},
                     auth=(sandbox.secret_key, ""), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "list"


def test_any_well_formed_test_key_is_the_same_account(sandbox, uid):
    other = sandbox.client("sk_test_" + "x" * 24)
    c = other.v1.customers.create({"email": f"{uid}@example.com"})
    assert sandbox.client().v1.customers.retrieve(c.id).id == c.id


def test_publishable_key_cannot_list_customers(sandbox):
    pk = sandbox.client(sandbox.publishable_key)
    with pytest.raises((stripe.AuthenticationError, stripe.PermissionError)):
        pk.v1.customers.list()


def test_restricted_key_read_but_not_write(sandbox):
    r = sandbox.control("POST", "/_sandbox/restricted_keys", {"permissions": {"payment_intents": "read"}})
    assert r.status_code == 200, r.text
    rk = r.json()["key"]
    assert rk.startswith("rk_test_")
    limited = sandbox.client(rk)
    listed = limited.v1.payment_intents.list({"limit": 3})
    assert listed.object == "list"
    with pytest.raises(stripe.PermissionError) as ei:
        limited.v1.payment_intents.create({"amount": 1000, "currency": "usd"})
    e = ei.value
    assert e.http_status == 403
    assert e.json_body["error"]["type"] == "invalid_request_error"
    assert "does not have the required permissions" in e.user_message
    # no permission at all on customers
    with pytest.raises(stripe.PermissionError):
        limited.v1.customers.list()


def test_restricted_key_write(sandbox, uid):
    r = sandbox.control("POST", "/_sandbox/restricted_keys",
                        {"permissions": {"customers": "write", "payment_intents": "none"}})
    rk = r.json()["key"]
    c = sandbox.client(rk).v1.customers.create({"email": f"{uid}@example.com"})
    assert c.id.startswith("cus_")
    with pytest.raises(stripe.PermissionError):
        sandbox.client(rk).v1.payment_intents.list()


def test_restricted_key_for_the_customer_portal(sandbox, uid):
    r = sandbox.control("POST", "/_sandbox/restricted_keys",
                        {"permissions": {"billing_portal": "write", "customers": "write"}})
    assert r.status_code == 200, r.text
    limited = sandbox.client(r.json()["key"])
    customer = limited.v1.customers.create({"email": f"{uid}@example.com"})
    session = limited.v1.billing_portal.sessions.create({"customer": customer.id})
    assert session.object == "billing_portal.session"
    reader = sandbox.control("POST", "/_sandbox/restricted_keys", {"permissions": {"billing_portal": "read"}})
    with pytest.raises(stripe.PermissionError):
        sandbox.client(reader.json()["key"]).v1.billing_portal.sessions.create({"customer": customer.id})


# ---- protocol headers ---------------------------------------------------------------------


def test_stripe_version_echoed_and_request_id(sandbox, client):
    r = sandbox.http("GET", "/v1/customers", params={"limit": 1}, headers={"Stripe-Version": "2024-06-20"})
    assert r.status_code == 200
    assert r.headers.get("Stripe-Version") == "2024-06-20"
    assert r.headers.get("Request-Id", "").startswith("req_")
    assert r.headers.get("Content-Type", "").startswith("application/json")
    lst = client.v1.customers.list({"limit": 1})
    assert lst.last_response.headers.get("Stripe-Version") == stripe.api_version
    assert lst.last_response.request_id.startswith("req_")


def test_form_encoding_indexed_and_bracket_arrays(sandbox):
    # Stripe takes arrays both as a[]=x and a[0]=x
    r = sandbox.http("POST", "/v1/payment_intents",
                     data=[("amount", "1000"), ("currency", "usd"), ("payment_method_types[]", "card"),
                           ("metadata[k]", "v")])
    assert r.status_code == 200, r.text
    assert r.json()["payment_method_types"] == ["card"]
    assert r.json()["metadata"] == {"k": "v"}
    r = sandbox.http("POST", "/v1/payment_intents",
                     data=[("amount", "1000"), ("currency", "usd"), ("payment_method_types[0]", "card")])
    assert r.status_code == 200, r.text
    assert r.json()["payment_method_types"] == ["card"]


# ---- Stripe-Account -----------------------------------------------------------------------


@pytest.fixture
def connected(client, uid):
    acct = client.v1.accounts.create({
        "type": "custom", "country": "US", "email": f"{uid}@example.com",
        "capabilities": {"card_payments": {"requested": True}, "transfers": {"requested": True}},
    })
    assert acct.object == "account" and acct.id.startswith("acct_")
    assert acct.type == "custom"
    return acct


def test_stripe_account_isolation(client, sandbox, connected, uid):
    email = f"{uid}@example.com"
    theirs = client.v1.customers.create({"email": email}, {"stripe_account": connected.id})
    ours = client.v1.customers.create({"email": email})

    # not visible on the platform, and the platform's not visible on the connected account
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.customers.retrieve(theirs.id)
    assert ei.value.http_status == 404 and ei.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as ei:
        client.v1.customers.retrieve(ours.id, options={"stripe_account": connected.id})
    assert ei.value.code == "resource_missing"

    assert client.v1.customers.retrieve(theirs.id, options={"stripe_account": connected.id}).id == theirs.id
    assert [c.id for c in client.v1.customers.list({"email": email}).data] == [ours.id]
    assert [c.id for c in client.v1.customers.list({"email": email},
                                                   {"stripe_account": connected.id}).data] == [theirs.id]

    # a payment on the connected account, its events carry `account`
    cx = sandbox.client(stripe_account=connected.id)
    pi = cx.v1.payment_intents.create({"amount": 1000, "currency": "usd", "payment_method_types": ["card"],
                                       "payment_method": "pm_card_visa", "confirm": True})
    assert pi.status == "succeeded"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.retrieve(pi.id)
    evs = cx.v1.events.list({"type": "payment_intent.succeeded", "limit": 20}).data
    ev = next(e for e in evs if e.data.object.id == pi.id)
    assert ev.to_dict().get("account") == connected.id
    platform_evs = client.v1.events.list({"type": "payment_intent.succeeded", "limit": 100}).data
    assert pi.id not in [e.data.object.id for e in platform_evs]


def test_retrieve_connected_account(client, connected):
    got = client.v1.accounts.retrieve(connected.id)
    assert got.id == connected.id and got.type == "custom"
    listed = client.v1.accounts.list({"limit": 100})
    assert connected.id in [a.id for a in listed.data]


def test_unknown_connected_account(client):
    # Stripe: 403 "The provided key 'sk_test_***' does not have access to account 'acct_…' (or that
    # account does not exist). Application access may have been revoked."
    with pytest.raises(stripe.PermissionError) as ei:
        client.v1.customers.list(options={"stripe_account": "acct_doesnotexist00"})
    assert ei.value.http_status == 403
    assert "does not have access to account 'acct_doesnotexist00'" in ei.value.user_message


def test_failed_request_has_no_side_effects(client, sandbox, uid):
    # Stripe requests are atomic: a request refused with 400 creates nothing and emits no event
    r = sandbox.http("POST", "/v1/prices", data={"currency": "usd", "unit_amount": "100",
                                                 "product_data[name]": "atomic " + uid,
                                                 "recurring[interval]": "fortnight"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "recurring[interval]"
    req_id = r.headers["Request-Id"]
    names = [p.name for p in client.v1.products.list({"limit": 100}).auto_paging_iter()]
    assert "atomic " + uid not in names
    recent = client.v1.events.list({"limit": 100}).data
    assert [e.type for e in recent if e.request and e.request.id == req_id] == []
