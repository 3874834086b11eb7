"""Stripe Billing Meters in the sandbox, driven with the official `stripe` library: meters (create,
list by status, rename, deactivate, reactivate), meter events (a repeated identifier is refused),
event summaries, and a metered price on a subscription whose renewal invoice on a test clock
bills the period's summed usage in arrears. Every response is shape-checked by the harness; the
meter types are checked against Stripe's current example objects (`fixtures3-full-2026-08-21.json`),
which the shared subset the checker reads does not hold."""

from __future__ import annotations

import json
import time

import pytest
import stripe

import shapes
from test_billing import DAY, HOUR, advance, clock_customer, make_clock, sub_invoices

with open(shapes._OPENAPI / "fixtures3-full-2026-08-21.json", encoding="utf-8") as _f:
    _FULL = json.load(_f)["resources"]
for _t in ("billing.meter", "billing.meter_event", "billing.meter_event_summary"):
    shapes.FIXTURES.setdefault(_t, _FULL[_t])
shapes.LIB.setdefault("billing.meter", stripe.billing.Meter)
shapes.LIB.setdefault("billing.meter_event", stripe.billing.MeterEvent)
shapes.LIB.setdefault("billing.meter_event_summary", stripe.billing.MeterEventSummary)


def meter(client: stripe.StripeClient, uid: str, formula: str = "sum", **extra):
    params = {"display_name": f"API calls {uid}", "event_name": f"api_calls_{uid}_{formula}",
              "default_aggregation": {"formula": formula}}
    params.update(extra)
    return client.v1.billing.meters.create(params)


def send(client: stripe.StripeClient, m, customer: str, value: int, **extra):
    params = {"event_name": m.event_name,
              "payload": {"stripe_customer_id": customer, "value": str(value)}}
    params.update(extra)
    return client.v1.billing.meter_events.create(params)


def total(client: stripe.StripeClient, m, customer: str, start: int, end: int, **extra):
    params = {"customer": customer, "start_time": start, "end_time": end}
    params.update(extra)
    return client.v1.billing.meters.event_summaries.list(m.id, params).data


def test_meter_create_list_rename_deactivate_reactivate(client, uid):
    m = meter(client, uid)
    assert m.object == "billing.meter" and m.id.startswith("mtr_")
    assert m.status == "active" and m.default_aggregation.formula == "sum"
    assert m.customer_mapping.event_payload_key == "stripe_customer_id"
    assert m.customer_mapping.type == "by_id"
    assert m.value_settings.event_payload_key == "value"
    assert m.status_transitions.deactivated_at is None
    assert client.v1.billing.meters.retrieve(m.id).event_name == m.event_name

    renamed = client.v1.billing.meters.update(m.id, {"display_name": "Renamed"})
    assert renamed.display_name == "Renamed"
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing.meters.update(m.id, {"event_name": "other"})
    assert e.value.error.param == "event_name"

    # A second active meter cannot take the same event name.
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing.meters.create({"display_name": "Twin", "event_name": m.event_name,
                                         "default_aggregation": {"formula": "sum"}})
    assert e.value.error.param == "event_name"

    off = client.v1.billing.meters.deactivate(m.id)
    assert off.status == "inactive" and off.status_transitions.deactivated_at is not None
    inactive = client.v1.billing.meters.list({"status": "inactive", "limit": 100}).data
    active = client.v1.billing.meters.list({"status": "active", "limit": 100}).data
    assert m.id in [x.id for x in inactive] and m.id not in [x.id for x in active]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meters.deactivate(m.id)
    on = client.v1.billing.meters.reactivate(m.id)
    assert on.status == "active" and on.status_transitions.deactivated_at is None
    # Events: created, updated, deactivated, reactivated (with the old attributes).
    for kind in ("created", "updated", "deactivated", "reactivated"):
        evs = client.v1.events.list({"type": f"billing.meter.{kind}", "limit": 100}).data
        mine = [e for e in evs if e.data.object["id"] == m.id]
        assert len(mine) == 1, kind
    deact = [e for e in client.v1.events.list({"type": "billing.meter.deactivated"}).data
             if e.data.object["id"] == m.id][0]
    assert deact.data.previous_attributes["status"] == "active"

    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing.meters.create({"display_name": "x", "event_name": f"e_{uid}",
                                         "default_aggregation": {"formula": "max"}})
    assert e.value.error.param == "default_aggregation[formula]"
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing.meters.retrieve("mtr_missing")
    assert e.value.http_status == 404


def test_meter_events_sum_count_last_and_identifier_refused_once_used(client, uid):
    cus = client.v1.customers.create({"email": f"{uid}@example.com"})
    other = client.v1.customers.create({"email": f"other-{uid}@example.com"})
    m_sum, m_count, m_last = (meter(client, uid, f) for f in ("sum", "count", "last"))
    start = (int(time.time()) // HOUR) * HOUR - HOUR
    end = start + 2 * HOUR
    t = start + 60
    for n, v in enumerate((5, 7, 3)):
        for m in (m_sum, m_count, m_last):
            ev = send(client, m, cus.id, v, timestamp=t + n, identifier=f"{m.id}-{n}")
            assert ev.object == "billing.meter_event" and ev.identifier == f"{m.id}-{n}"
            assert ev.payload["value"] == str(v) and ev.timestamp == t + n
    send(client, m_sum, other.id, 100, timestamp=t)

    # The same identifier again is refused; the summary still counts it once.
    with pytest.raises(stripe.InvalidRequestError) as e:
        send(client, m_sum, cus.id, 5, timestamp=t, identifier=f"{m_sum.id}-0")
    assert e.value.http_status == 400 and e.value.error.param == "identifier"
    # Without an identifier one is generated.
    gen = send(client, m_sum, other.id, 1, timestamp=t)
    assert gen.identifier

    (s,) = total(client, m_sum, cus.id, start, end)
    assert s.object == "billing.meter_event_summary" and s.meter == m_sum.id
    assert s.aggregated_value == 15 and s.start_time == start and s.end_time == end
    assert total(client, m_count, cus.id, start, end)[0].aggregated_value == 3
    assert total(client, m_last, cus.id, start, end)[0].aggregated_value == 3
    assert total(client, m_sum, other.id, start, end)[0].aggregated_value == 101
    # Outside the range: nothing.
    assert total(client, m_sum, cus.id, end, end + HOUR)[0].aggregated_value == 0

    hours = total(client, m_sum, cus.id, start, end, value_grouping_window="hour")
    assert [(h.start_time, h.aggregated_value) for h in hours] == [(start, 15), (start + HOUR, 0)]

    with pytest.raises(stripe.InvalidRequestError) as e:
        total(client, m_sum, cus.id, start + 1, end)
    assert e.value.error.param == "start_time"
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.billing.meter_events.create({"event_name": m_sum.event_name,
                                               "payload": {"value": "1"}})
    assert e.value.error.param == "payload[stripe_customer_id]"
    with pytest.raises(stripe.InvalidRequestError) as e:
        send(client, m_sum, cus.id, 1, timestamp=start - 40 * DAY)
    assert e.value.error.param == "timestamp"

    # A deactivated meter takes no more events (they count for nothing).
    client.v1.billing.meters.deactivate(m_sum.id)
    send(client, m_sum, cus.id, 50, timestamp=t)
    assert total(client, m_sum, cus.id, start, end)[0].aggregated_value == 15


def test_metered_price_subscription_renewal_bills_summed_usage_in_arrears(client, uid):
    t0 = (int(time.time()) // HOUR) * HOUR + 10 * DAY
    clock = make_clock(client, t0, "meters")
    m = meter(client, uid)
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.prices.create({"currency": "usd", "unit_amount": 3,
                                 "recurring": {"interval": "month", "usage_type": "metered"},
                                 "product_data": {"name": f"Calls {uid}"}})
    assert e.value.error.param == "recurring[meter]"
    price = client.v1.prices.create({
        "currency": "usd", "unit_amount": 3, "product_data": {"name": f"Calls {uid}"},
        "recurring": {"interval": "month", "usage_type": "metered", "meter": m.id}})
    assert price.recurring.meter == m.id and price.recurring.usage_type == "metered"
    cus = clock_customer(client, clock.id, uid)
    sub = client.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}]})
    assert sub.status == "active"
    item = sub["items"]["data"][0]
    assert item.plan.meter == m.id and item.plan.usage_type == "metered"
    start, end = item.current_period_start, item.current_period_end
    first = client.v1.invoices.retrieve(sub.latest_invoice)
    assert first.billing_reason == "subscription_create" and first.amount_due == 0

    # Usage during the first period (timestamps default to the clock's time).
    send(client, m, cus.id, 120)
    send(client, m, cus.id, 80, identifier=f"late-{uid}")
    advance(client, clock.id, t0 + 5 * DAY)
    send(client, m, cus.id, 100)
    (s,) = total(client, m, cus.id, start, end)
    assert s.aggregated_value == 300

    advance(client, clock.id, end + HOUR)
    invs = sub_invoices(client, sub.id)
    renewal = invs[0]
    assert renewal.billing_reason == "subscription_cycle"
    assert renewal.status == "paid" and renewal.amount_paid == 900
    (line,) = client.v1.invoices.line_items.list(renewal.id).data
    assert line.amount == 900 and line.quantity == 300
    assert line.period.start == start and line.period.end == end

    # Usage after the renewal lands on the next invoice, not this one.
    send(client, m, cus.id, 250)
    sub = client.v1.subscriptions.retrieve(sub.id)
    start2, end2 = sub["items"]["data"][0].current_period_start, sub["items"]["data"][0].current_period_end
    advance(client, clock.id, end2 + HOUR)
    latest = sub_invoices(client, sub.id)[0]
    assert latest.amount_paid == 750
    (line2,) = client.v1.invoices.line_items.list(latest.id).data
    assert line2.quantity == 250 and line2.period.start == start2 and line2.period.end == end2
