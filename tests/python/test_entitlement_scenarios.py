"""Entitlement scenarios (SPEC §5) end to end on the built-in sandbox (issue 7).

Every purchase is made in the sandbox mounted by `tollgate serve` (Checkout Sessions completed
through the sandbox's buyer control route, subscriptions, refunds, credit notes, disputes, test
clocks) with Stripe's official Python library; the sandbox delivers its real signed webhooks to
Tollgate's `/webhooks/stripe/{connection_id}`, Tollgate stores them in its inbox and evaluates.
Nothing here crafts an event. After every step the test asks `GET /v1/permissions?customid=…`
with a public (`tg_pk_`) key, as an app would.

How a step is asserted: `World.expect` waits until the answer shows what the step should give
(deliveries and the inbox are asynchronous), then waits until the sandbox has no delivery left
for the events of this test and Tollgate's inbox has nothing left to apply (`settle`), and
asserts the answer again: what the step gives must be the settled state, not a passing one.

Each test runs twice, on SQLite and on PostgreSQL, each time on a fresh server of its own (its
own data directory and, on PostgreSQL, its own database: the `server` fixture); the customid
and the permission (`premium_<uid>`) are unique too.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any, Dict, List, Optional

import pytest
import requests
import stripe

from conftest import (TOLLGATE_BIN, CheckingHTTPClient, Tollgate, check, start_tollgate,
                      stop_tollgate, wait_for)

DAY = 86400
HOUR = 3600

# Entitlement codes of SPEC §5.3.
RENEWING, CANCELING, GRACE, LIFETIME = 5, 4, 1, 3
NEVER_EXPIRES = 253402300799  # expires_date of a permission held with no end
PAYMENT_FAILED, EXPIRED, REVOKED = -2, -5, -8


# ---- fixtures --------------------------------------------------------------------------------


def _cli_env(tg: Tollgate) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    if tg.db == "postgres":
        env.setdefault("TOLLGATE_MASTER_KEY", "5a" * 32)
    return env


def public_key(tg: Tollgate) -> str:
    """A public SDK key of the default merchant account, made with `tollgate keys create`."""
    args = [TOLLGATE_BIN, "keys", "create", "--kind", "public", "--data-dir", tg.data_dir]
    if tg.database_url:
        args += ["--database-url", tg.database_url]
    r = subprocess.run(args, capture_output=True, text=True, env=_cli_env(tg), timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("tg_pk_"), r.stdout
    return key


@pytest.fixture(params=["sqlite", "postgres"])
def server(request) -> Tollgate:
    """A fresh `tollgate serve` (built-in sandbox) for one test: its own data directory and, on
    PostgreSQL, its own database, so that no test sees another's objects, events or inbox."""
    tg = start_tollgate(request.param)
    yield tg
    stop_tollgate(tg)


@pytest.fixture
def pk(server) -> str:
    return public_key(server)


def stripe_client(base: str, key: str) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": base, "connect": base, "files": base},
                               http_client=CheckingHTTPClient(), max_network_retries=0)


class World:
    """One test's view: the server, its sandbox through Stripe's library, a customid, a
    permission of its own, and the checks of `GET /v1/permissions`."""

    def __init__(self, tg: Tollgate, pk: str, uid: str, sandbox_base: Optional[str] = None,
                 sandbox_key: Optional[str] = None):
        self.tg = tg
        self.pk = pk
        self.uid = uid
        self.sandbox_base = sandbox_base or tg.sandbox_base
        self.stripe = stripe_client(self.sandbox_base, sandbox_key or tg.sandbox_secret_key)
        self.perm = f"premium_{uid}"
        self.customid = f"user-{uid}"
        self.skus: List[str] = []
        # Events of this test are the ones created from here on (wall clock, as Stripe stamps them).
        self.since = int(time.time()) - 1

    # -- the catalogue --

    def sku(self, name: str, kind: str, amount: int = 1000, interval: Optional[str] = "month",
            price=None):
        """A price of a new product in the sandbox (unless `price` is given), its SKU in
        Tollgate, and the SKU added to this test's permission. Returns the price."""
        if price is None:
            params: Dict[str, Any] = {"currency": "usd", "unit_amount": amount,
                                      "product_data": {"name": f"{name} {self.uid}"}}
            if kind == "subscription":
                params["recurring"] = {"interval": interval}
            price = self.stripe.v1.prices.create(params)
        ident = f"{name}_{self.uid}"
        r = self.tg.http("POST", "/v1/skus", json_body={"identifier": ident, "store": "stripe",
                                                        "product_id": price.product, "kind": kind})
        assert r.status_code == 201, r.text
        self.skus.append(ident)
        if len(self.skus) == 1:
            r = self.tg.http("POST", "/v1/permissions/definitions",
                             json_body={"identifier": self.perm, "skus": self.skus})
            assert r.status_code == 201, r.text
        else:
            r = self.tg.http("PATCH", f"/v1/permissions/definitions/{self.perm}",
                             json_body={"skus": self.skus})
            assert r.status_code == 200, r.text
        return price

    # -- Stripe-side helpers --

    def control(self, path: str, body: Optional[dict] = None) -> requests.Response:
        return requests.post(self.sandbox_base + path, json=body or {}, timeout=30)

    def complete(self, cs_id: str, **body) -> Dict[str, Any]:
        """The buyer pays the Checkout Session (the sandbox's buyer action)."""
        r = self.control(f"/_sandbox/checkout_sessions/{cs_id}/complete", body)
        assert r.status_code == 200, r.text
        return check(r.json(), "control: completed session")

    def checkout(self, price, mode: str, customer: Optional[str] = None, *, meta: bool = True,
                 **complete_body) -> Dict[str, Any]:
        params: Dict[str, Any] = {"mode": mode, "line_items": [{"price": price.id, "quantity": 1}],
                                  "success_url": "https://shop.example/done?cs={CHECKOUT_SESSION_ID}"}
        if meta:
            params["metadata"] = {"customid": self.customid}
        if customer:
            params["customer"] = customer
        elif mode == "payment":
            params["customer_creation"] = "always"
            params["customer_email"] = f"{self.uid}@example.com"
        else:
            params["customer_email"] = f"{self.uid}@example.com"
        cs = self.stripe.v1.checkout.sessions.create(params)
        if "outcome" not in complete_body:
            complete_body.setdefault("payment_method", "pm_card_visa")
        return self.complete(cs.id, **complete_body)

    def clock(self, frozen: int):
        c = self.stripe.v1.test_helpers.test_clocks.create({"frozen_time": frozen, "name": self.uid})
        assert c.status == "ready"
        return c

    def clock_customer(self, clock_id: str, pm: Optional[str] = None):
        params: Dict[str, Any] = {"email": f"{self.uid}@example.com", "test_clock": clock_id}
        if pm:
            params["payment_method"] = pm
            params["invoice_settings"] = {"default_payment_method": pm}
        return self.stripe.v1.customers.create(params)

    def subscribe_on_clock(self, name: str, amount: int) -> tuple:
        """A monthly SKU of `amount`, bought through Checkout by a new customer on a new test
        clock started at `start_time()`. Returns (t0, clock, completed session, subscription,
        period end)."""
        monthly = self.sku(name, "subscription", amount)
        t0 = start_time()
        clock = self.clock(t0)
        cus = self.clock_customer(clock.id)
        done = self.checkout(monthly, "subscription", cus.id)
        sub = self.stripe.v1.subscriptions.retrieve(done["subscription"])
        _, end = period(sub)
        return t0, clock, done, sub, end

    def advance(self, clock_id: str, to: int):
        c = self.stripe.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": to})
        assert c.status == "advancing"
        wait_for(lambda: self.stripe.v1.test_helpers.test_clocks.retrieve(clock_id).status == "ready",
                 timeout=30, what="the test clock to be ready")

    # -- Tollgate-side checks --

    def answer(self, customid: Optional[str] = None) -> Dict[str, Any]:
        """`GET /v1/permissions` with the public key (waits out a 429, as an app should)."""
        cid = customid or self.customid
        for _ in range(50):
            r = requests.get(self.tg.base + "/v1/permissions", params={"customid": cid},
                             headers={"Authorization": f"Bearer {self.pk}"}, timeout=30)
            if r.status_code == 429:
                time.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["customid"] == cid
            return body
        raise AssertionError("permission reads kept answering 429")

    def permission(self, customid: Optional[str] = None) -> Optional[Dict[str, Any]]:
        ps = [p for p in self.answer(customid)["permissions"] if p["identifier"] == self.perm]
        assert len(ps) <= 1, ps
        return ps[0] if ps else None

    def settle(self, timeout: float = 30.0) -> None:
        """Waits until every event of this test reached Tollgate (no pending webhook in the
        sandbox) and Tollgate's inbox has nothing left to apply."""
        def done():
            evs = self.stripe.v1.events.list({"limit": 100, "created": {"gte": self.since}})
            if any(e.pending_webhooks for e in evs.data):
                return False
            for status in ("received", "failed"):
                r = self.tg.http("GET", "/webhook-events", params={"status": status, "limit": 1})
                assert r.status_code == 200, r.text
                if r.json()["items"]:
                    return False
            return True
        wait_for(done, timeout=timeout, interval=0.1, what="deliveries and the inbox to settle")

    def read_model(self, customid: Optional[str] = None) -> Any:
        """The customer's permissions as the database holds them (`GET /v1/subscribers/…` reads
        the read model, never the permission cache), for failure messages."""
        cid = customid or self.customid
        r = self.tg.http("GET", f"/v1/subscribers/{cid}")
        return r.json().get("permissions") if r.status_code == 200 else {"status": r.status_code}

    def inbox_trouble(self) -> List[Dict[str, Any]]:
        """Inbox rows not applied (for failure messages)."""
        r = self.tg.http("GET", "/webhook-events", params={"status": ["received", "failed", "dead"],
                                                          "limit": 20})
        return r.json().get("items", []) if r.status_code == 200 else [{"error": r.text}]

    def expect(self, what: str, customid: Optional[str] = None, timeout: float = 30.0,
               **fields) -> Optional[Dict[str, Any]]:
        """Waits for this test's permission to show `fields` (`absent=True`: not in the answer),
        then settles and asserts it again. Returns the permission."""
        def matches():
            p = self.permission(customid)
            if fields.get("absent"):
                return p is None
            if p is None:
                return False
            return all(p.get(k) == v for k, v in fields.items())

        try:
            wait_for(matches, timeout=timeout, interval=0.15, what=what)
        except AssertionError as e:
            raise AssertionError(f"{what}: wanted {fields}, the answer is {self.answer(customid)}; "
                                 f"the read model: {self.read_model(customid)}; "
                                 f"inbox trouble: {self.inbox_trouble()}") from e
        self.settle()
        p = self.permission(customid)
        assert matches(), f"{what}: after settling, wanted {fields}, got {p}"
        if p is not None:
            check_shape(p)
        return p


def check_shape(p: Dict[str, Any]) -> None:
    """The SPEC §5.4 shape of one permission."""
    assert set(p) == {"identifier", "is_valid", "entitlement", "expires_date", "expires_at", "skuarray"}, p
    assert isinstance(p["is_valid"], bool) and isinstance(p["entitlement"], int)
    # expires_date is never null (Glassfy's SDK needs a number): with no expiry it is
    # 253402300799 for a held permission, 0 for one not held, and expires_at is null.
    assert isinstance(p["expires_date"], int), p
    if p["expires_at"] is None:
        assert p["expires_date"] == (NEVER_EXPIRES if p["is_valid"] else 0), p
    else:
        assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(p["expires_date"])) == p["expires_at"]
    for s in p["skuarray"]:
        assert s["store"] == 4 and s["productid"].startswith("prod_")


@pytest.fixture
def world(server, pk, uid) -> World:
    return World(server, pk, uid)


def start_time() -> int:
    # A whole hour some days ahead of the real time: clock time far from wall time on purpose,
    # so a test that used the wrong "now" would show it.
    return (int(time.time()) // HOUR) * HOUR + 10 * DAY


def period(sub) -> tuple:
    item = sub["items"]["data"][0]
    return item["current_period_start"], item["current_period_end"]


# ---- subscriptions on a test clock -----------------------------------------------------------


def test_monthly_checkout_renews_then_card_fails_grace_then_canceled(world: World):
    w = world
    monthly = w.sku("monthly", "subscription", 1500)
    t0 = start_time()
    clock = w.clock(t0)
    cus = w.clock_customer(clock.id)
    w.expect("nothing before the purchase", absent=True)

    done = w.checkout(monthly, "subscription", cus.id)
    assert done["payment_status"] == "paid" and done["customer"] == cus.id
    sub = w.stripe.v1.subscriptions.retrieve(done["subscription"])
    start, end = period(sub)
    assert sub.status == "active" and start == t0 and end > t0 + 27 * DAY
    p = w.expect("premium after checkout", is_valid=True, entitlement=RENEWING, expires_date=end)
    assert [s["identifier"] for s in p["skuarray"]] == [f"monthly_{w.uid}"]

    # The clock passes the period end: the renewal is paid, the permission runs to the new end.
    w.advance(clock.id, end + HOUR)
    sub = w.stripe.v1.subscriptions.retrieve(sub.id)
    start2, end2 = period(sub)
    assert sub.status == "active" and start2 == end and end2 > end
    w.expect("renewed", is_valid=True, entitlement=RENEWING, expires_date=end2)

    # The card fails at the next renewal: past_due, still held while Stripe retries.
    bad = w.stripe.v1.payment_methods.attach("pm_card_chargeCustomerFail", {"customer": cus.id})
    w.stripe.v1.subscriptions.update(sub.id, {"default_payment_method": bad.id})
    w.advance(clock.id, end2 + HOUR)
    sub = w.stripe.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "past_due"
    _, end3 = period(sub)
    failing = w.stripe.v1.invoices.retrieve(sub.latest_invoice)
    assert failing.status == "open" and failing.next_payment_attempt
    w.expect("past_due inside the grace", is_valid=True, entitlement=GRACE,
             expires_date=max(failing.next_payment_attempt, end3))

    # A retry fails too: still in the grace.
    w.advance(clock.id, end2 + 3 * DAY + HOUR)
    assert w.stripe.v1.subscriptions.retrieve(sub.id).status == "past_due"
    w.expect("still in the grace after a failed retry", is_valid=True, entitlement=GRACE)

    # The last retry fails: Stripe cancels the subscription, the permission is revoked.
    w.advance(clock.id, end2 + 16 * DAY)
    sub = w.stripe.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "canceled" and sub.cancellation_details.reason == "payment_failed"
    w.expect("canceled after failed payments", is_valid=False, entitlement=PAYMENT_FAILED)


def test_cancel_at_period_end_valid_until_then_expired(world: World):
    w = world
    t0, clock, _, sub, end = w.subscribe_on_clock("monthly", 1200)
    w.expect("premium after checkout", is_valid=True, entitlement=RENEWING, expires_date=end)

    w.advance(clock.id, t0 + 5 * DAY)
    w.stripe.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True})
    w.expect("canceling: valid until the period end", is_valid=True, entitlement=CANCELING,
             expires_date=end)

    w.advance(clock.id, end - HOUR)
    w.expect("an hour before the end: still valid", is_valid=True, entitlement=CANCELING,
             expires_date=end)

    w.advance(clock.id, end + HOUR)
    sub = w.stripe.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "canceled"
    assert sub.cancellation_details.reason == "cancellation_requested"
    w.expect("period over: expired", is_valid=False, entitlement=EXPIRED)


def test_two_overlapping_subscriptions_hold_to_the_latest_expiry(world: World):
    w = world
    monthly = w.sku("monthly", "subscription", 1000)
    pro = w.sku("pro", "subscription", 2500)
    t0 = start_time()
    clock = w.clock(t0)
    cus = w.clock_customer(clock.id, pm="pm_card_visa")
    first = w.checkout(monthly, "subscription", cus.id)
    sub_a = w.stripe.v1.subscriptions.retrieve(first["subscription"])
    _, end_a = period(sub_a)
    w.expect("the first subscription", is_valid=True, entitlement=RENEWING, expires_date=end_a)

    # Ten days later a second subscription (to another SKU of the same permission) starts.
    w.advance(clock.id, t0 + 10 * DAY)
    sub_b = w.stripe.v1.subscriptions.create({"customer": cus.id, "items": [{"price": pro.id}],
                                              "metadata": {"customid": w.customid}})
    assert sub_b.status == "active"
    _, end_b = period(sub_b)
    assert end_b > end_a
    p = w.expect("the later expiry of the two", is_valid=True, entitlement=RENEWING,
                 expires_date=end_b)
    assert sorted(s["identifier"] for s in p["skuarray"]) == sorted(w.skus)

    # The later one is canceled now: the first one still holds, to its own end.
    w.stripe.v1.subscriptions.cancel(sub_b.id)
    w.expect("back to the first one's expiry", is_valid=True, entitlement=RENEWING,
             expires_date=end_a)


# ---- one-time purchases ----------------------------------------------------------------------


def test_one_time_checkout_is_lifetime(world: World):
    w = world
    life = w.sku("lifetime", "one_time", 9900, interval=None)
    w.expect("nothing before", absent=True)
    done = w.checkout(life, "payment")
    assert done["payment_status"] == "paid" and done["customer"].startswith("cus_")
    p = w.expect("lifetime", is_valid=True, entitlement=LIFETIME, expires_date=NEVER_EXPIRES)
    assert p["expires_at"] is None and [s["identifier"] for s in p["skuarray"]] == [f"lifetime_{w.uid}"]
    # Tollgate read the session's line items escaping the id (`cs%5Ftest…`); Stripe (and the
    # sandbox) decode path segments.
    r = w.tg.stripe("GET", f"/v1/checkout/sessions/{done['id'].replace('_', '%5F')}/line_items")
    assert r.status_code == 200 and r.json()["data"][0]["price"]["id"] == life.id, r.text


def test_unpaid_async_checkout_that_fails_is_never_granted(world: World):
    w = world
    life = w.sku("lifetime", "one_time", 4900, interval=None)
    cs = w.stripe.v1.checkout.sessions.create({
        "mode": "payment", "line_items": [{"price": life.id, "quantity": 1}],
        "payment_method_types": ["card", "us_bank_account"],
        "success_url": "https://shop.example/done", "customer_creation": "always",
        "customer_email": f"{w.uid}@example.com", "metadata": {"customid": w.customid}})
    done = w.complete(cs.id, outcome="async_failure", payment_method="us_bank_account")
    assert done["status"] == "complete" and done["payment_status"] == "unpaid"
    # Sample the answer until the failure has been delivered and applied: never granted.
    seen = []

    def failed_and_applied():
        seen.append(w.permission())
        evs = w.stripe.v1.events.list({"type": "checkout.session.async_payment_failed", "limit": 20})
        if not any(e.data.object.id == cs.id and not e.pending_webhooks for e in evs.data):
            return False
        r = w.tg.http("GET", "/webhook-events", params={"type": "checkout.session.async_payment_failed",
                                                         "limit": 100})
        return any(i["status"] in ("applied", "ignored") for i in r.json()["items"]
                   if i["stripe_event_id"] in {e.id for e in evs.data if e.data.object.id == cs.id})

    wait_for(failed_and_applied, timeout=30, interval=0.15, what="the async failure applied")
    w.settle()
    seen.append(w.permission())
    assert all(p is None or not p["is_valid"] for p in seen), seen
    assert w.stripe.v1.checkout.sessions.retrieve(cs.id).payment_status == "unpaid"


def test_partial_refund_keeps_full_refund_revokes(world: World):
    w = world
    life = w.sku("lifetime", "one_time", 6000, interval=None)
    done = w.checkout(life, "payment")
    w.expect("lifetime", is_valid=True, entitlement=LIFETIME)
    w.stripe.v1.refunds.create({"payment_intent": done["payment_intent"], "amount": 1000})
    w.expect("a partial refund keeps it (default policy)", is_valid=True, entitlement=LIFETIME)
    w.stripe.v1.refunds.create({"payment_intent": done["payment_intent"]})
    ch = w.stripe.v1.charges.retrieve(w.stripe.v1.payment_intents.retrieve(done["payment_intent"]).latest_charge)
    assert ch.refunded and ch.amount_refunded == 6000
    w.expect("the rest refunded: revoked", is_valid=False, entitlement=REVOKED)


def test_full_refund_at_once_revokes(world: World):
    w = world
    life = w.sku("lifetime", "one_time", 3000, interval=None)
    done = w.checkout(life, "payment")
    w.expect("lifetime", is_valid=True, entitlement=LIFETIME)
    w.stripe.v1.refunds.create({"payment_intent": done["payment_intent"]})
    w.expect("fully refunded: revoked", is_valid=False, entitlement=REVOKED)


@pytest.mark.parametrize("evidence, held", [("losing_evidence", False), ("winning_evidence", True)])
def test_dispute_lost_revokes_won_keeps(world: World, evidence: str, held: bool):
    w = world
    life = w.sku("lifetime", "one_time", 7000, interval=None)
    # The dispute card: the charge succeeds, then the buyer's bank opens a dispute.
    done = w.checkout(life, "payment", payment_method="pm_card_createDispute")
    pi = w.stripe.v1.payment_intents.retrieve(done["payment_intent"])
    disputes = wait_for(lambda: w.stripe.v1.disputes.list({"charge": pi.latest_charge}).data,
                        timeout=15, what="the dispute")
    w.settle()
    opened = w.permission()
    assert opened is not None
    w.stripe.v1.disputes.update(disputes[0].id, {"evidence": {"uncategorized_text": evidence}})
    wait_for(lambda: w.stripe.v1.disputes.retrieve(disputes[0].id).status in ("won", "lost"),
             timeout=15, what="the dispute closed")
    assert w.stripe.v1.disputes.retrieve(disputes[0].id).status == ("won" if held else "lost")
    if held:
        w.expect("a won dispute keeps it", is_valid=True, entitlement=LIFETIME)
    else:
        w.expect("a lost dispute revokes it", is_valid=False, entitlement=REVOKED)


def test_credit_note_for_the_whole_invoice_revokes(world: World):
    w = world
    _, _, done, _, end = w.subscribe_on_clock("monthly", 2000)
    w.expect("premium", is_valid=True, entitlement=RENEWING, expires_date=end)
    inv = w.stripe.v1.invoices.retrieve(done["invoice"])
    assert inv.status == "paid" and inv.amount_paid == 2000
    cn = w.stripe.v1.credit_notes.create({"invoice": inv.id, "amount": 2000, "refund_amount": 2000})
    assert cn.total == 2000
    w.expect("credited in full: revoked", is_valid=False, entitlement=REVOKED)


# ---- linking ---------------------------------------------------------------------------------


def test_purchase_before_the_link_counts_right_after_connect_stripe(world: World):
    w = world
    monthly = w.sku("monthly", "subscription", 1100)
    t0 = start_time()
    clock = w.clock(t0)
    cus = w.clock_customer(clock.id, pm="pm_card_visa")
    # Bought with no customid anywhere: Tollgate stores it, nobody holds it yet.
    sub = w.stripe.v1.subscriptions.create({"customer": cus.id, "items": [{"price": monthly.id}]})
    assert sub.status == "active"
    _, end = period(sub)
    w.settle()
    assert w.permission() is None
    r = w.tg.http("POST", "/v1/connect_stripe", json_body={"customid": w.customid, "customerid": cus.id})
    assert r.status_code == 200, r.text
    linked = [p for p in r.json()["permissions"] if p["identifier"] == w.perm]
    assert linked and linked[0]["is_valid"] and linked[0]["expires_date"] == end, r.json()
    # Counted at once: no waiting for any webhook.
    p = w.permission()
    assert p is not None and p["is_valid"] and p["entitlement"] == RENEWING and p["expires_date"] == end
    w.expect("after the link", is_valid=True, entitlement=RENEWING, expires_date=end)
    # The renewal after the link keeps it going.
    w.advance(clock.id, end + HOUR)
    _, end2 = period(w.stripe.v1.subscriptions.retrieve(sub.id))
    w.expect("renewed after the link", is_valid=True, entitlement=RENEWING, expires_date=end2)


# ---- late webhooks at renewal ------------------------------------------------------------------

# Every event a renewal sends, except the test clock's own (`test_helpers.test_clock.*`), which
# moves the customer's "now" in Tollgate.
RENEWAL_EVENTS = ["customer.subscription.*", "invoice.*", "invoice_payment.*", "charge.*",
                  "payment_intent.*", "customer.*"]


@pytest.fixture
def hold(server):
    """Holds back the sandbox's deliveries of the named event types (its `hold` chaos switch)
    until called again without them; released at the end of the test."""
    def set_(types: List[str]) -> Dict[str, Any]:
        r = requests.post(server.sandbox_base + "/_sandbox/chaos", json={"hold": types}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()
    yield set_
    set_([])


class Sampler:
    """Reads the permission every ~0.2 s in a thread, recording every answer."""

    def __init__(self, w: World):
        import threading
        self.w = w
        self.samples: List[tuple] = []
        self.stop_ = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop_.is_set():
            try:
                p = self.w.permission()
            except Exception as e:  # noqa: BLE001 - recorded, asserted by the test
                self.samples.append((time.time(), "error", repr(e)))
            else:
                self.samples.append((time.time(), p and p["is_valid"], p and p["entitlement"]))
            time.sleep(0.2)

    def stop(self) -> List[tuple]:
        self.stop_.set()
        self.thread.join(10)
        return self.samples


def clock_ready_applied(w: World, clock_id: str, frozen: int) -> None:
    """Waits until Tollgate applied the `test_helpers.test_clock.ready` event of `clock_id` at
    `frozen` (so Tollgate evaluates the customer at that time)."""
    def applied():
        evs = w.stripe.v1.events.list({"type": "test_helpers.test_clock.ready", "limit": 100})
        ids = [e.id for e in evs.data
               if e.data.object.id == clock_id and e.data.object.frozen_time == frozen]
        if not ids:
            return False
        r = w.tg.http("GET", "/webhook-events", params={"stripe_event_id": ids[0]})
        assert r.status_code == 200, r.text
        return any(i["status"] == "applied" for i in r.json()["items"])
    wait_for(applied, timeout=30, interval=0.1, what="the clock's ready event applied")


@pytest.mark.parametrize("late_by", [HOUR, 3 * HOUR])
def test_renewal_webhook_late_past_period_end_never_flickers(world: World, hold, late_by: int):
    """The renewal's webhooks are held back while the clock passes the period end: by 1 h
    (inside the 2 h renewal leeway: the stored period still counts) and by 3 h (past the
    leeway: Tollgate re-reads the subscription from Stripe before it would expire it)."""
    w = world
    _, clock, _, sub, end = w.subscribe_on_clock("monthly", 1500)
    sub_id = sub.id
    w.expect("premium after checkout", is_valid=True, entitlement=RENEWING, expires_date=end)

    sampler = Sampler(w)
    try:
        held = hold(RENEWAL_EVENTS)
        assert held["held"] == 0
        w.advance(clock.id, end + late_by)
        sub = w.stripe.v1.subscriptions.retrieve(sub_id)
        _, end2 = period(sub)
        assert sub.status == "active" and end2 > end
        # The renewal happened in Stripe, its webhooks have not reached Tollgate.
        clock_ready_applied(w, clock.id, end + late_by)
        time.sleep(1.0)  # a few more samples in this state
        p = w.permission()
        assert p is not None and p["is_valid"] and p["entitlement"] == RENEWING, p
        if late_by < 2 * HOUR:
            # Inside the leeway nothing is re-read: the stored period still holds.
            assert p["expires_date"] == end, p
        else:
            # Past the leeway the subscription was re-read: the new period is known already.
            assert p["expires_date"] == end2, p
        still = hold([])
        assert still["held"] == 0
        w.expect("renewed once the webhooks arrive", is_valid=True, entitlement=RENEWING,
                 expires_date=end2)
    finally:
        samples = sampler.stop()
    assert samples and all(s[1] is True and s[2] == RENEWING for s in samples), \
        [s for s in samples if s[1] is not True or s[2] != RENEWING][:5]


# ---- webhook API versions --------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def version_pair(request):
    """A standalone sandbox and two servers reading it, each through a connection whose webhook
    endpoint is registered in the sandbox: one pinned to API version 2022-11-15, one current.
    Yields [(server, public key), …], old version first."""
    from conftest import start_sandbox
    sb = start_sandbox()
    servers: List[Tollgate] = []
    try:
        out = []
        for version in ("2022-11-15", None):
            tg = start_tollgate(request.param, "--stripe-api-base", sb.base)
            servers.append(tg)
            r = tg.http("POST", "/connections", json_body={"secret_key": sb.secret_key,
                                                           "publishable_key": sb.publishable_key})
            assert r.status_code == 201, r.text
            conn = r.json()
            params: Dict[str, Any] = {"url": tg.base + f"/webhooks/stripe/{conn['id']}",
                                      "enabled_events": ["*"]}
            if version:
                params["api_version"] = version
            ep = stripe_client(sb.base, sb.secret_key).v1.webhook_endpoints.create(params)
            assert ep.api_version == version
            r = tg.http("PATCH", f"/connections/{conn['id']}", json_body={"webhook_secret": ep.secret})
            assert r.status_code == 200, r.text
            out.append((tg, public_key(tg)))
        yield sb, out
    finally:
        for tg in servers:
            stop_tollgate(tg)
        sb.stop()


def test_old_and_current_webhook_versions_give_identical_permissions(version_pair, uid):
    sb, servers = version_pair
    old, new = (World(tg, key, uid, sandbox_base=sb.base, sandbox_key=sb.secret_key)
                for tg, key in servers)
    both = (old, new)
    s = old.stripe
    monthly = old.sku("monthly", "subscription", 1500)
    new.sku("monthly", "subscription", price=monthly)
    life = old.sku("lifetime", "one_time", 5000, interval=None)
    new.sku("lifetime", "one_time", price=life)

    def step(what: str, **fields):
        answers = []
        for w in both:
            w.expect(f"{what} (webhooks of {'2022-11-15' if w is old else 'the current version'})",
                     **fields)
            answers.append(w.answer())
        assert answers[0] == answers[1], f"{what}: the two versions disagree: {answers}"

    t0 = start_time()
    clock = old.clock(t0)
    cus = old.clock_customer(clock.id)
    step("nothing yet", absent=True)
    done = old.checkout(monthly, "subscription", cus.id)
    sub_id = done["subscription"]
    _, end = period(s.v1.subscriptions.retrieve(sub_id))
    step("subscribed", is_valid=True, entitlement=RENEWING, expires_date=end)

    old.advance(clock.id, end + HOUR)
    _, end2 = period(s.v1.subscriptions.retrieve(sub_id))
    step("renewed", is_valid=True, entitlement=RENEWING, expires_date=end2)

    # A one-time purchase of the same customer: lifetime wins; a partial refund keeps it.
    bought = old.checkout(life, "payment", cus.id)
    step("lifetime", is_valid=True, entitlement=LIFETIME, expires_date=NEVER_EXPIRES)
    s.v1.refunds.create({"payment_intent": bought["payment_intent"], "amount": 1000})
    step("partially refunded", is_valid=True, entitlement=LIFETIME)
    s.v1.refunds.create({"payment_intent": bought["payment_intent"]})
    step("refunded: the subscription holds again", is_valid=True, entitlement=RENEWING,
         expires_date=end2)

    # The renewal invoice is credited in full: revoked, in both shapes (2022-11-15 has
    # `credit_note.refund` and `invoice.subscription`, the current one `refunds[]` and `parent`).
    inv = s.v1.invoices.retrieve(s.v1.subscriptions.retrieve(sub_id).latest_invoice)
    s.v1.credit_notes.create({"invoice": inv.id, "amount": inv.amount_paid,
                              "refund_amount": inv.amount_paid})
    step("credited in full", is_valid=False, entitlement=REVOKED)
