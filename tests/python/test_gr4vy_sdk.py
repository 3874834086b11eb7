"""The seed orchestrator's official Python SDK (`gr4vy==2.4.27`, unmodified) against Tollgate.

Issue 3, "Compatibility with the seed orchestrator's API"; the wire contract is docs/gr4vy-compat.md.
Every test runs on SQLite and on PostgreSQL (the `tollgate` fixture in conftest.py). The SDK is
built exactly as a user would build it:

    Gr4vy(server_url=base, bearer_auth=key, merchant_account_id="default", timeout_ms=30000)

Buyer approval is driven as Stripe.js would drive it: the PaymentIntent is confirmed at the
mounted sandbox (`{base}/sandbox/stripe/v1/payment_intents/{pi}/confirm`) with the publishable key
and the client secret Tollgate hands out as `payment_service_transaction_id`; then
`transactions.sync` brings Tollgate up to date.

Any answer the SDK's models cannot parse raises `errors.ResponseValidationError` (or a wrong
success code raises `errors.APIError`), so every SDK call below is also a shape check.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Dict, List, Optional

import httpx
import pydantic
import pytest
from gr4vy import Gr4vy, errors, models
from gr4vy.types.basemodel import Unset

from conftest import Tollgate

PM = {"method": "stripe", "redirect_url": "https://example.com/cb", "country": "US", "currency": "USD"}

# What the SDK puts in every create body even when the caller does not pass them.
pytestmark = pytest.mark.filterwarnings("ignore:.*DEPRECATED.*:DeprecationWarning")  # the SDK's own

ALWAYS_SENT = ["store", "is_subsequent_payment", "merchant_initiated", "async_capture",
               "account_funding_transaction", "allow_partial_authorization"]


def sdk(tg: Tollgate, key: Optional[str] = None, **kw) -> Gr4vy:
    return Gr4vy(server_url=tg.base, bearer_auth=tg.api_key if key is None else key,
                 merchant_account_id="default", timeout_ms=30000, **kw)


@pytest.fixture
def g(tollgate: Tollgate) -> Gr4vy:
    return sdk(tollgate)


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:12]


class Recorder:
    """An httpx client (as the SDK builds its own: follow_redirects=True) that keeps every request."""

    def __init__(self) -> None:
        self.requests: List[httpx.Request] = []
        self.responses: List[httpx.Response] = []
        self.client = httpx.Client(follow_redirects=True,
                                   event_hooks={"request": [self.requests.append],
                                                "response": [self._answer]})

    def _answer(self, r: httpx.Response) -> None:
        r.read()
        self.responses.append(r)

    def last_json(self) -> dict:
        return self.responses[-1].json()

    def bodies(self, method: str, path: str) -> List[dict]:
        return [json.loads(r.content) for r in self.requests
                if r.method == method and r.url.path == path and r.content]


def dropped(model, raw, path: str = "") -> List[str]:
    """Keys present (non-null) in the raw answer that the SDK's model silently turned into Unset
    (an OptionalNullable field whose value failed validation: the silent-loss trap of the SDK)."""
    out: List[str] = []
    if not (isinstance(model, pydantic.BaseModel) and isinstance(raw, dict)):
        return out
    for name, f in type(model).model_fields.items():
        key = f.alias or name
        if raw.get(key) is None:
            continue
        val = getattr(model, name)
        if isinstance(val, Unset):
            out.append(f"{path}/{key} = {json.dumps(raw[key])[:120]}")
        elif isinstance(val, pydantic.BaseModel):
            out += dropped(val, raw[key], f"{path}/{key}")
        elif isinstance(val, list) and isinstance(raw[key], list):
            for i, (v, r) in enumerate(zip(val, raw[key])):
                out += dropped(v, r, f"{path}/{key}/{i}")
    return out


# ---- helpers ------------------------------------------------------------------------------


def payment_id(tx: models.Transaction) -> str:
    assert isinstance(tx.additional_identifiers, dict), tx.additional_identifiers
    pi = tx.additional_identifiers.get("payment_id")
    assert isinstance(pi, str) and pi.startswith("pi_"), tx.additional_identifiers
    return pi


def approve(tg: Tollgate, tx: models.Transaction, pm: str = "pm_card_visa", basic: bool = False) -> dict:
    """What Stripe.js does in the buyer's browser: confirm with the publishable key + client secret."""
    pi = payment_id(tx)
    secret = tx.payment_service_transaction_id
    assert isinstance(secret, str) and secret.startswith(pi + "_secret_"), (
        "before approval payment_service_transaction_id should be the PaymentIntent's client secret", secret)
    r = tg.stripe("POST", f"/v1/payment_intents/{pi}/confirm", key=tg.publishable_key, basic=basic,
                  data={"client_secret": secret, "payment_method": pm})
    assert r.status_code == 200, r.text
    return r.json()


def create_redirect(g: Gr4vy, amount: int = 1299, **kw) -> models.Transaction:
    tx = g.transactions.create(amount=amount, currency="USD", payment_method=dict(PM), **kw)
    assert isinstance(tx, models.Transaction)
    assert tx.status == "buyer_approval_pending", tx.status
    return tx


def authorized(g: Gr4vy, tg: Tollgate, amount: int = 1299, basic: bool = False, **kw) -> models.Transaction:
    tx = create_redirect(g, amount, **kw)
    approve(tg, tx, basic=basic)
    tx = g.transactions.sync(transaction_id=tx.id)
    assert isinstance(tx, models.Transaction)
    return tx


def check_common(tx, tg: Tollgate, amount: int) -> None:
    """Fields every transaction must carry, with Tollgate's honest defaults."""
    assert tx.TYPE == "transaction"
    assert tx.merchant_account_id == "default"
    assert tx.amount == amount and tx.currency == "USD"
    assert tx.reconciliation_id and isinstance(tx.reconciliation_id, str)
    assert tx.settled is False and tx.settled_amount == 0
    assert tx.gift_card_redemptions == []
    assert tx.created_at.tzinfo is not None and tx.updated_at.tzinfo is not None
    assert tx.payment_method is not None and tx.payment_method.method == "stripe", tx.payment_method
    assert tx.payment_service is not None and tx.payment_service.display_name, tx.payment_service


def list_all(g: Gr4vy, **filters) -> List[List[models.TransactionSummary]]:
    """Every page, followed with the SDK's own `next()`."""
    pages = []
    page = g.transactions.list(**filters)
    while page is not None:
        assert isinstance(page.result, models.TransactionSummaries)
        pages.append(list(page.result.items))
        assert len(pages) < 200, "paging does not end"
        page = page.next()
    return pages


# ---- redirect flow, partial capture, refunds -----------------------------------------------


def test_redirect_flow_partial_capture_and_refunds(g: Gr4vy, tollgate: Tollgate, uid: str):
    tx = g.transactions.create(
        amount=1299, currency="USD", country="US", intent="authorize",
        external_identifier=f"order-{uid}", metadata={"k": "v"}, payment_method=dict(PM),
        idempotency_key=f"create-{uid}")
    check_common(tx, tollgate, 1299)
    assert tx.status == "buyer_approval_pending" and tx.intent == "authorize"
    assert tx.intent_outcome == "pending"
    assert tx.country == "US" and tx.external_identifier == f"order-{uid}"
    assert tx.metadata == {"k": "v"}
    assert (tx.authorized_amount, tx.captured_amount, tx.refunded_amount) == (0, 0, 0)
    url = tx.payment_method.approval_url
    assert isinstance(url, str) and url.startswith(f"{tollgate.base}/pay/{tx.id}"), url
    pi = payment_id(tx)

    # The same Idempotency-Key and body: the same transaction, still a 201 the SDK accepts.
    again = g.transactions.create(
        amount=1299, currency="USD", country="US", intent="authorize",
        external_identifier=f"order-{uid}", metadata={"k": "v"}, payment_method=dict(PM),
        idempotency_key=f"create-{uid}")
    assert again.id == tx.id

    got = g.transactions.get(transaction_id=tx.id)
    assert got.id == tx.id and got.status == "buyer_approval_pending"

    approve(tollgate, tx)
    tx = g.transactions.sync(transaction_id=tx.id)
    check_common(tx, tollgate, 1299)
    assert tx.status == "authorization_succeeded", (tx.status, tx.error_code)
    assert tx.intent_outcome == "succeeded"
    assert tx.authorized_amount == 1299 and tx.captured_amount == 0
    assert tx.authorized_at is not None
    assert tx.payment_service_transaction_id == pi  # after approval: the PaymentIntent id

    cap = g.transactions.capture(transaction_id=tx.id, amount=1000)
    assert isinstance(cap, models.Transaction), type(cap)
    assert cap.status == "capture_succeeded", (cap.status, cap.error_code)
    assert cap.captured_amount == 1000 and cap.captured_at is not None

    r1 = g.transactions.refunds.create(transaction_id=tx.id, amount=300, reason="damaged")
    assert isinstance(r1, models.Refund)
    assert r1.TYPE == "refund" and r1.transaction_id == tx.id
    assert r1.amount == 300 and r1.currency == "USD" and r1.status == "succeeded", r1.status
    assert r1.reason == "damaged" and r1.target_type == "payment-method"
    assert r1.payment_service_refund_id and r1.payment_service_refund_id.startswith("re_")
    # A full refund (no amount): what is left.
    r2 = g.transactions.refunds.create(transaction_id=tx.id, idempotency_key=f"rf-{uid}")
    assert r2.amount == 700 and r2.status == "succeeded", (r2.amount, r2.status)

    refunds = g.transactions.refunds.list(transaction_id=tx.id)
    assert isinstance(refunds, models.Refunds)
    assert {r.id for r in refunds.items} == {r1.id, r2.id}
    one = g.transactions.refunds.get(transaction_id=tx.id, refund_id=r1.id)
    assert (one.id, one.amount, one.transaction_id) == (r1.id, 300, tx.id)
    assert g.refunds.get(refund_id=r2.id).amount == 700

    final = g.transactions.get(transaction_id=tx.id)
    assert final.status == "capture_succeeded"  # refunds do not change the status
    assert (final.captured_amount, final.refunded_amount) == (1000, 1000)

    # Nothing left to refund: a typed 400 with details.
    with pytest.raises(errors.Error400) as e:
        g.transactions.refunds.create(transaction_id=tx.id, amount=1)
    assert e.value.status_code == 400 and e.value.data.code == "bad_request"
    assert any(d.pointer == "/amount" for d in (e.value.data.details or [])), e.value.data


def test_full_capture_after_basic_auth_approval(g: Gr4vy, tollgate: Tollgate):
    tx = authorized(g, tollgate, 2500, basic=True)
    assert tx.status == "authorization_succeeded"
    cap = g.transactions.capture(transaction_id=tx.id)
    assert cap.status == "capture_succeeded"
    assert (cap.authorized_amount, cap.captured_amount) == (2500, 2500)
    assert g.transactions.get(transaction_id=tx.id).captured_amount == 2500


def test_intent_capture(g: Gr4vy, tollgate: Tollgate):
    tx = authorized(g, tollgate, 4200, intent="capture")
    assert tx.intent == "capture"
    assert tx.status == "capture_succeeded", (tx.status, tx.error_code)
    assert tx.captured_amount == 4200


# ---- void, cancel -------------------------------------------------------------------------


def test_void(g: Gr4vy, tollgate: Tollgate):
    tx = authorized(g, tollgate, 800)
    assert tx.status == "authorization_succeeded"
    v = g.transactions.void(transaction_id=tx.id)
    assert isinstance(v, models.Transaction), type(v)
    assert v.status == "authorization_voided", (v.status, v.error_code)
    assert v.voided_at is not None and v.captured_amount == 0
    assert g.transactions.get(transaction_id=tx.id).status == "authorization_voided"
    pi = tollgate.stripe("GET", f"/v1/payment_intents/{payment_id(tx)}").json()
    assert pi["status"] == "canceled", pi["status"]


def test_cancel_returns_the_wrapper(g: Gr4vy, tollgate: Tollgate):
    tx = create_redirect(g, 500)
    c = g.transactions.cancel(transaction_id=tx.id)
    assert isinstance(c, models.TransactionCancel), type(c)
    assert c.status == "succeeded", c
    assert isinstance(c.transaction, models.Transaction)
    assert c.transaction.id == tx.id
    assert c.transaction.status == "authorization_failed", c.transaction.status
    assert c.transaction.error_code == "canceled" and c.code == "canceled", (c.code, c.transaction.error_code)
    assert c.transaction.intent_outcome == "failed"
    assert g.transactions.get(transaction_id=tx.id).status == "authorization_failed"
    pi = tollgate.stripe("GET", f"/v1/payment_intents/{payment_id(tx)}").json()
    assert pi["status"] == "canceled", pi["status"]


# ---- direct flow ---------------------------------------------------------------------------


def test_direct_flow(g: Gr4vy, tollgate: Tollgate):
    tx = g.transactions.create(amount=700, currency="USD", integration_client="web")
    check_common(tx, tollgate, 700)
    assert tx.status == "buyer_approval_pending"
    assert tx.session_token, "the direct flow hands out a session token"
    assert tx.payment_method.approval_url is None
    # What the front end asks with the session token (not an SDK call).
    s = tollgate.http("POST", f"/transactions/{tx.id}/session", key=None, params={"token": tx.session_token})
    assert s.status_code == 200, s.text
    data = s.json()["session_data"]
    assert data["clientSecret"] == tx.payment_service_transaction_id
    assert data["publishableKey"] == tollgate.publishable_key
    approve(tollgate, tx)
    tx = g.transactions.sync(transaction_id=tx.id)
    assert tx.status == "authorization_succeeded" and tx.authorized_amount == 700
    assert g.transactions.capture(transaction_id=tx.id).status == "capture_succeeded"


# ---- list: cursor paging, status filter ----------------------------------------------------


def test_list_paging_and_status_filter(g: Gr4vy, tollgate: Tollgate, uid: str):
    made: List[models.Transaction] = []
    # 2 pending, 2 authorized, 1 captured (intent capture), 1 canceled; all tagged with `uid`.
    for i in range(6):
        kw = {"buyer_external_identifier": uid, "external_identifier": f"{uid}-{i}"}
        if i == 4:
            kw["intent"] = "capture"
        tx = create_redirect(g, 100 + i, **kw)
        if i in (2, 3, 4):
            approve(tollgate, tx)
            tx = g.transactions.sync(transaction_id=tx.id)
        elif i == 5:
            tx = g.transactions.cancel(transaction_id=tx.id).transaction
        made.append(tx)
    statuses = [t.status for t in made]
    assert statuses == ["buyer_approval_pending"] * 2 + ["authorization_succeeded"] * 2 + [
        "capture_succeeded", "authorization_failed"], statuses
    newest_first = [t.id for t in reversed(made)]

    pages = list_all(g, limit=2, buyer_external_identifier=uid)
    assert [len(p) for p in pages] == [2, 2, 2], [len(p) for p in pages]
    seen = [t.id for p in pages for t in p]
    assert seen == newest_first, "every transaction once, newest first"
    first = g.transactions.list(limit=2, buyer_external_identifier=uid)
    assert first.result.limit == 2 and first.result.next_cursor
    for p in pages:
        for t in p:
            assert isinstance(t, models.TransactionSummary)
            assert t.merchant_account_id == "default" and t.currency == "USD"

    wanted = ["capture_succeeded", "authorization_succeeded"]
    pages = list_all(g, limit=2, status=wanted, buyer_external_identifier=uid)
    got = [t.id for p in pages for t in p]
    expect = [t.id for t in reversed(made) if t.status in wanted]
    assert got == expect, (got, expect)
    assert all(len(p) <= 2 for p in pages)

    # The status filter alone, over everything this server holds.
    everything = [t for p in list_all(g, limit=2, status=wanted) for t in p]
    assert all(t.status in wanted for t in everything), {t.status for t in everything}
    assert set(expect) <= {t.id for t in everything}
    assert len({t.id for t in everything}) == len(everything), "no duplicates across pages"

    # One status.
    one = [t.id for p in list_all(g, limit=2, status=["authorization_failed"], buyer_external_identifier=uid)
           for t in p]
    assert one == [made[5].id]


# ---- typed errors from our envelope --------------------------------------------------------


def test_not_found_is_error404(g: Gr4vy, tollgate: Tollgate):
    with pytest.raises(errors.Error404) as e:
        g.transactions.get(transaction_id="00000000-0000-0000-0000-000000000000")
    assert e.value.status_code == 404
    assert e.value.data.code == "not_found" and e.value.data.TYPE == "error"
    assert e.value.data.status == 404 and e.value.data.message
    tx = create_redirect(g, 300)
    with pytest.raises(errors.Error404) as e:
        g.transactions.refunds.get(transaction_id=tx.id, refund_id="00000000-0000-0000-0000-000000000000")
    assert e.value.data.code == "not_found"
    with pytest.raises(errors.Error404):
        g.refunds.get(refund_id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(errors.Error404):
        g.transactions.sync(transaction_id="00000000-0000-0000-0000-000000000000")


def test_negative_amount_is_error400_with_details(g: Gr4vy, tollgate: Tollgate):
    with pytest.raises(errors.Error400) as e:
        g.transactions.create(amount=-1, currency="USD", payment_method=dict(PM))
    err = e.value
    assert err.status_code == 400 and err.data.code == "bad_request" and err.data.TYPE == "error"
    assert err.data.message
    details = err.data.details or []
    assert details, err.data
    d = details[0]
    assert (d.location, d.pointer) == ("body", "/amount"), d
    assert isinstance(d.type, str) and d.type and d.message


def test_bad_key_is_error401(tollgate: Tollgate):
    bad = sdk(tollgate, key="tg_sk_nosuchkey_" + "x" * 43)
    with pytest.raises(errors.Error401) as e:
        bad.transactions.list(limit=2)
    assert e.value.status_code == 401
    assert e.value.data.code == "unauthorized" and e.value.data.TYPE == "error"
    with pytest.raises(errors.Error401):
        bad.transactions.create(amount=100, currency="USD", payment_method=dict(PM))
    # A right-looking key with a wrong secret.
    kid = tollgate.api_key.split("_")[2]
    with pytest.raises(errors.Error401):
        sdk(tollgate, key=f"tg_sk_{kid}_wrongsecret").transactions.get(
            transaction_id="00000000-0000-0000-0000-000000000000")


# ---- the merchant account header, the fields the SDK always sends --------------------------


def test_merchant_account_header(g: Gr4vy, tollgate: Tollgate, uid: str):
    rec = Recorder()
    gr = sdk(tollgate, client=rec.client)
    tx = create_redirect(gr, 900)
    sent = rec.requests[-1]
    assert sent.headers.get("x-gr4vy-merchant-account-id") == "default"
    assert tx.merchant_account_id == "default"

    # Another merchant account (operator key): the header scopes reads to it.
    other = f"m-{uid}"
    r = tollgate.http("POST", "/merchant-accounts", json_body={"id": other})
    assert r.status_code in (200, 201), r.text
    with pytest.raises(errors.Error404):
        g.transactions.get(transaction_id=tx.id, merchant_account_id=other)
    listed = g.transactions.list(limit=2, merchant_account_id=other)
    assert listed.result.items == []
    assert g.transactions.get(transaction_id=tx.id, merchant_account_id="default").id == tx.id

    # An account that does not exist: refused with a typed error, not silently the default.
    with pytest.raises((errors.Error403, errors.Error404)):
        g.transactions.get(transaction_id=tx.id, merchant_account_id=f"nope-{uid}")


def test_fields_the_sdk_sends_are_accepted(tollgate: Tollgate, uid: str):
    rec = Recorder()
    gr = sdk(tollgate, client=rec.client)
    gr.transactions.create(amount=100, currency="USD", payment_method=dict(PM))
    gr.transactions.create(amount=100, currency="USD", integration_client="web")
    for body in rec.bodies("POST", "/transactions"):
        missing = [k for k in ALWAYS_SENT if k not in body]
        assert not missing, f"the SDK did not send {missing}: {body}"

    # Many optional fields of the SDK's TransactionCreate at once (raw card data aside).
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=30)).replace(microsecond=0)
    tx = gr.transactions.create(
        amount=1500, currency="USD", country="US", payment_method=dict(PM), intent="authorize",
        external_identifier=f"x-{uid}", buyer_external_identifier=f"cust-{uid}", metadata={"a": "b"},
        store=False, is_subsequent_payment=False, merchant_initiated=False, async_capture=False,
        account_funding_transaction=False, allow_partial_authorization=False, payment_source="ecommerce",
        description="two mugs", statement_descriptor={"name": "TOLLGATE"},
        cart_items=[{"name": "mug", "quantity": 2, "unit_amount": 750}],
        previous_scheme_transaction_id=None, anti_fraud_fingerprint=f"fp-{uid}",
        tax_amount=0, merchant_tax_id="T-1", purchase_order_number="PO-1",
        customer_reference_number="C-1", amount_includes_tax=True, supplier_order_number="S-1",
        duty_amount=0, shipping_amount=0, is_amount_estimated=False, integration_client="redirect",
        approval_expires_at=expires)
    body = rec.bodies("POST", "/transactions")[-1]
    for k in ["cart_items", "statement_descriptor", "integration_client", "approval_expires_at",
              "payment_source", "anti_fraud_fingerprint", "description", *ALWAYS_SENT]:
        assert k in body, (k, body)
    assert tx.status == "buyer_approval_pending" and tx.amount == 1500
    assert tx.external_identifier == f"x-{uid}"
    assert tx.buyer is not None and tx.buyer.external_identifier == f"cust-{uid}", tx.buyer
    assert tx.approval_expires_at is not None
    assert abs((tx.approval_expires_at - expires).total_seconds()) < 1, (tx.approval_expires_at, expires)
    assert tx.payment_method.approval_url


def test_no_response_field_is_silently_dropped(tollgate: Tollgate, uid: str):
    """The SDK turns an optional nested object that fails validation into Unset without an error;
    check every answer field by field against the parsed model."""
    rec = Recorder()
    gr = sdk(tollgate, client=rec.client)
    problems: Dict[str, List[str]] = {}

    def call(name: str, fn):
        out = fn()
        model = out.result if isinstance(out, models.ListTransactionsResponse) else out
        found = dropped(model, rec.last_json())
        if found:
            problems[name] = found
        return out

    tx = call("create", lambda: gr.transactions.create(
        amount=1000, currency="USD", country="US", payment_method=dict(PM), metadata={"k": "v"},
        external_identifier=f"e-{uid}", buyer_external_identifier=f"c-{uid}"))
    call("get", lambda: gr.transactions.get(transaction_id=tx.id))
    approve(tollgate, tx)
    call("sync", lambda: gr.transactions.sync(transaction_id=tx.id))
    call("capture", lambda: gr.transactions.capture(transaction_id=tx.id, amount=600))
    r = call("refunds.create", lambda: gr.transactions.refunds.create(transaction_id=tx.id, amount=100, reason="r"))
    call("refunds.list", lambda: gr.transactions.refunds.list(transaction_id=tx.id))
    call("refunds.get", lambda: gr.transactions.refunds.get(transaction_id=tx.id, refund_id=r.id))
    call("list", lambda: gr.transactions.list(limit=2, buyer_external_identifier=f"c-{uid}"))
    d = call("create direct", lambda: gr.transactions.create(amount=300, currency="USD", integration_client="web"))
    call("cancel", lambda: gr.transactions.cancel(transaction_id=d.id))
    v = gr.transactions.create(amount=300, currency="USD", payment_method=dict(PM))
    approve(tollgate, v)
    gr.transactions.sync(transaction_id=v.id)
    call("void", lambda: gr.transactions.void(transaction_id=v.id))
    assert not problems, problems
