"""Idempotency-Key replay and mismatch, replayed 500s, and the per-request fault header."""

import time
import uuid

import pytest
import stripe


def key():
    return "test-" + uuid.uuid4().hex


def test_replay_same_key_same_body(client, uid):
    k = key()
    params = {"email": f"{uid}@example.com", "metadata": {"n": "1"}}
    first = client.v1.customers.create(params, {"idempotency_key": k})
    again = client.v1.customers.create(params, {"idempotency_key": k})
    assert again.id == first.id
    assert again.to_dict() == first.to_dict()
    assert first.last_response.headers.get("Idempotent-Replayed") != "true"
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.idempotency_key == k
    assert again.last_response.idempotency_key == k
    # only one customer exists
    assert [c.id for c in client.v1.customers.list({"email": f"{uid}@example.com"}).data] == [first.id]


def test_replay_raw_http(sandbox, uid):
    k = key()
    body = {"email": f"{uid}@example.com"}
    r1 = sandbox.http("POST", "/v1/customers", data=body, headers={"Idempotency-Key": k})
    r2 = sandbox.http("POST", "/v1/customers", data=body, headers={"Idempotency-Key": k})
    assert r1.status_code == 200 and r2.status_code == 200
    assert r2.json() == r1.json()
    assert r2.headers.get("Idempotent-Replayed") == "true"
    assert r1.headers.get("Request-Id", "").startswith("req_")
    assert r2.headers.get("Request-Id", "").startswith("req_")
    assert r1.headers.get("Idempotency-Key") == k


def test_mismatch_same_key_other_body(client, uid):
    k = key()
    client.v1.customers.create({"email": f"{uid}@example.com"}, {"idempotency_key": k})
    with pytest.raises(stripe.IdempotencyError) as ei:
        client.v1.customers.create({"email": f"other-{uid}@example.com"}, {"idempotency_key": k})
    assert ei.value.http_status == 400
    err = ei.value.json_body["error"]
    assert err["type"] == "idempotency_error"
    assert "Keys for idempotent requests can only be used with the same parameters they were first used with" \
        in err["message"]
    assert client.v1.customers.list({"email": f"other-{uid}@example.com"}).data == []


def test_mismatch_same_key_other_endpoint(client, uid):
    k = key()
    client.v1.customers.create({"email": f"{uid}@example.com"}, {"idempotency_key": k})
    with pytest.raises(stripe.IdempotencyError) as ei:
        client.v1.products.create({"name": "p " + uid}, {"idempotency_key": k})
    assert ei.value.json_body["error"]["type"] == "idempotency_error"


def test_replayed_500(client, uid):
    k = key()
    email = f"{uid}@example.com"
    with pytest.raises(stripe.APIError) as ei:
        client.v1.customers.create({"email": email}, {"idempotency_key": k, "headers": {"Sandbox-Fault": "500"}})
    assert ei.value.http_status == 500
    assert ei.value.json_body["error"]["type"] == "api_error"
    assert ei.value.headers.get("Stripe-Should-Retry") != "true"
    # the same key without the fault: Stripe replays the stored 500
    with pytest.raises(stripe.APIError) as ei2:
        client.v1.customers.create({"email": email}, {"idempotency_key": k})
    assert ei2.value.http_status == 500
    assert ei2.value.json_body == ei.value.json_body
    assert ei2.value.headers.get("Idempotent-Replayed") == "true"
    assert client.v1.customers.list({"email": email}).data == []
    # a fresh key executes
    c = client.v1.customers.create({"email": email}, {"idempotency_key": key()})
    assert c.email == email


def test_500_with_should_retry_is_not_stored(client, uid):
    k = key()
    email = f"{uid}@example.com"
    with pytest.raises(stripe.APIError) as ei:
        client.v1.customers.create({"email": email}, {"idempotency_key": k,
                                                      "headers": {"Sandbox-Fault": "500-retry"}})
    assert ei.value.http_status == 500
    assert ei.value.headers.get("Stripe-Should-Retry") == "true"
    c = client.v1.customers.create({"email": email}, {"idempotency_key": k})
    assert c.email == email
    assert c.last_response.headers.get("Idempotent-Replayed") != "true"
    assert [x.id for x in client.v1.customers.list({"email": email}).data] == [c.id]


def test_rate_limit_429(client):
    with pytest.raises(stripe.RateLimitError) as ei:
        client.v1.customers.list({"limit": 1}, {"headers": {"Sandbox-Fault": "429"}})
    assert ei.value.http_status == 429
    assert ei.value.headers.get("Retry-After") == "1"
    assert ei.value.json_body["error"]["code"] == "rate_limit"


def test_dropped_connection_executes_nothing(client, uid):
    email = f"{uid}@example.com"
    with pytest.raises(stripe.APIConnectionError):
        client.v1.customers.create({"email": email}, {"headers": {"Sandbox-Fault": "drop"}})
    assert client.v1.customers.list({"email": email}).data == []


def test_latency_fault(client, uid):
    t0 = time.time()
    c = client.v1.customers.create({"email": f"{uid}@example.com"}, {"headers": {"Sandbox-Fault": "latency=400"}})
    assert time.time() - t0 >= 0.4
    assert c.email == f"{uid}@example.com"


def test_rate_based_fault_and_library_retries(sandbox, uid):
    """With every request failing as a retryable 500, the library retries, then gives up."""
    client = sandbox.client(max_network_retries=1)
    r = sandbox.control("POST", "/_sandbox/faults", {"kind": "500-retry", "rate": 1.0})
    assert r.status_code == 200, r.text
    try:
        with pytest.raises(stripe.APIError) as ei:
            client.v1.customers.create({"email": f"{uid}@example.com"})
        assert ei.value.http_status == 500
    finally:
        assert sandbox.control("POST", "/_sandbox/faults", {"rate": 0}).status_code == 200
    c = client.v1.customers.create({"email": f"{uid}@example.com"})
    assert [x.id for x in client.v1.customers.list({"email": f"{uid}@example.com"}).data] == [c.id]
