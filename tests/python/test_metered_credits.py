"""Metered permissions end to end on the built-in sandbox: the permission check shows amounts.

A monthly subscription whose SKU grants 1,000 units per paid period and a one-time pack of 500,
both bought through Checkout in the sandbox mounted by `tollgate serve`, with Stripe's official
Python library; the sandbox delivers its real signed webhooks and Tollgate evaluates them.
Nothing here crafts an event. The app's view is `GET /v1/permissions?customid=…` with a public
key: a metered permission shows `balance` (units available), `granted`, `consumed` and
`resets_at`, and is valid while units are available.

Runs on SQLite and on PostgreSQL, each on a fresh server (the `server` fixture).
"""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from conftest import wait_for

# The harness of the entitlement scenarios (fixtures and the test's view of the world).
from test_entitlement_scenarios import (DAY, HOUR, World, period, pk, server,  # noqa: F401
                                        start_time)


@pytest.fixture
def world(server, pk, uid) -> World:  # noqa: F811
    return World(server, pk, uid)


class Metered:
    """A metered permission `credits_<uid>`: a monthly SKU granting 1,000 units per paid period
    and a pack SKU granting 500 units per purchase."""

    def __init__(self, w: World):
        self.w = w
        self.perm = f"credits_{w.uid}"
        self.monthly = self.price("monthly", 1500, recurring=True)
        self.pack = self.price("pack", 900, recurring=False)
        r = w.tg.http("POST", "/v1/permissions/definitions", json_body={
            "identifier": self.perm, "kind": "metered",
            "skus": [{"identifier": f"monthly_{w.uid}", "units": 1000, "per": "period"},
                     {"identifier": f"pack_{w.uid}", "units": 500, "per": "purchase"}]})
        assert r.status_code == 201, r.text

    def price(self, name: str, amount: int, recurring: bool):
        params: Dict[str, Any] = {"currency": "usd", "unit_amount": amount,
                                  "product_data": {"name": f"{name} {self.w.uid}"}}
        if recurring:
            params["recurring"] = {"interval": "month"}
        price = self.w.stripe.v1.prices.create(params)
        r = self.w.tg.http("POST", "/v1/skus", json_body={
            "identifier": f"{name}_{self.w.uid}", "store": "stripe", "product_id": price.product,
            "kind": "subscription" if recurring else "one_time"})
        assert r.status_code == 201, r.text
        return price

    def consume(self, units: int) -> Dict[str, Any]:
        r = self.w.tg.http("POST", f"/v1/permissions/{self.perm}/consume",
                           json_body={"customid": self.w.customid, "units": units})
        assert r.status_code == 200, r.text
        return r.json()

    def shown(self) -> Dict[str, Any]:
        ps = [p for p in self.w.answer()["permissions"] if p["identifier"] == self.perm]
        assert len(ps) == 1, ps
        return ps[0]

    def expect(self, what: str, **fields) -> Dict[str, Any]:
        """Waits until the check shows `fields` for the metered permission, then waits until
        deliveries and the inbox settled and asserts them again (as `World.expect` does)."""

        def matches():
            ps = [p for p in self.w.answer()["permissions"] if p["identifier"] == self.perm]
            return len(ps) == 1 and all(ps[0].get(k) == v for k, v in fields.items())

        try:
            wait_for(matches, timeout=30, interval=0.15, what=what)
        except AssertionError as e:
            raise AssertionError(f"{what}: wanted {fields}, the answer is {self.w.answer()}; "
                                 f"the ledger: {self.ledger()}") from e
        self.w.settle()
        p = self.shown()
        assert all(p.get(k) == v for k, v in fields.items()), f"{what}: after settling {p}"
        # The Glassfy fields are all there, the amounts after them.
        assert list(p) == ["identifier", "is_valid", "entitlement", "expires_date", "expires_at",
                           "skuarray", "balance", "granted", "consumed", "resets_at"], p
        return p

    def ledger(self) -> List[Dict[str, Any]]:
        r = self.w.tg.http("GET", f"/v1/subscribers/{self.w.customid}/ledger",
                           params={"limit": 100})
        assert r.status_code == 200, r.text
        return list(reversed(r.json()["items"]))


def test_period_units_reset_at_renewal_a_pack_adds_and_its_refund_claws_back(world: World):
    w = world
    m = Metered(w)
    t0 = start_time()
    clock = w.clock(t0)
    cus = w.clock_customer(clock.id)
    done = w.checkout(m.monthly, "subscription", cus.id)
    sub = w.stripe.v1.subscriptions.retrieve(done["subscription"])
    _, end = period(sub)
    m.expect("the first paid period grants 1000 units", is_valid=True, balance=1000,
             granted=1000, consumed=0, resets_at=end)

    # Consumed units show in the very next check.
    assert m.consume(300)["balance"] == 700
    p = m.shown()
    assert (p["balance"], p["granted"], p["consumed"], p["is_valid"]) == (700, 1000, 300, True), p

    # The test clock passes the renewal: the new period's 1000 units replace what was left.
    w.advance(clock.id, end + HOUR)
    sub = w.stripe.v1.subscriptions.retrieve(done["subscription"])
    _, end2 = period(sub)
    assert end2 > end
    m.expect("the renewal resets the balance to 1000", is_valid=True, balance=1000,
             granted=1000, consumed=0, resets_at=end2)

    # A pack bought through Checkout adds 500 that never end (resets_at stays the period's).
    pack = w.checkout(m.pack, "payment", cus.id)
    m.expect("the pack adds 500", is_valid=True, balance=1500, granted=1500, resets_at=end2)

    # 1100 consumed: the period's units go first (they end first), then 100 of the pack's.
    assert m.consume(1100)["balance"] == 400
    # The pack's payment refunded: its 400 unused units are taken back, the 100 consumed are
    # the claw-back's shortfall; nothing is left.
    w.stripe.v1.refunds.create({"payment_intent": pack["payment_intent"]})
    m.expect("the refund claws back what is left of the pack", is_valid=False, balance=0,
             granted=1000, consumed=1000, resets_at=end2)
    rows = m.ledger()
    kinds = [(r["kind"], r["units"]) for r in rows]
    assert kinds == [("grant", 1000), ("consume", -300), ("expiry", -700), ("grant", 1000),
                     ("grant", 500), ("consume", -1100), ("clawback", -400)], rows
    assert rows[-1]["shortfall"] == 100, rows[-1]
    assert sum(r["units"] for r in rows) == 0
