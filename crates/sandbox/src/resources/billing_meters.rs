//! Stripe Billing Meters: meters (`/v1/billing/meters`, deactivate and reactivate), meter events
//! (`/v1/billing/meter_events`) and event summaries (`/v1/billing/meters/{id}/event_summaries`),
//! which metered prices (`recurring[meter]`, `usage_type=metered`) bill at renewal.
//!
//! A meter event names an `event_name`; it counts for the meter that was active with that name
//! when the event came in (an event no active meter takes is kept but counts for nothing, as
//! Stripe reports such events asynchronously rather than refusing them). Each event carries an
//! `identifier` (generated when not given) that may not be used again for 24 hours: a repeat is
//! refused with a 400 naming `identifier`. A request repeated with the same `Idempotency-Key`
//! gets the first response back, as on every endpoint.
//!
//! Meters emit `billing.meter.created`, `.updated`, `.deactivated` and `.reactivated`.
//!
//! Stored: meters in `billing.meter`; events in the sandbox-only `_meter_event` (keyed by
//! identifier: meter, customer, value, timestamp, created).

use serde_json::{Value, json};

use super::{fetch, no_params, page_array};
use crate::Ctx;
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::random_string;

pub const METER: &str = "billing.meter";
const EVENT: &str = "billing.meter_event";
const SUMMARY: &str = "billing.meter_event_summary";
const STORED_EVENT: &str = "_meter_event";
/// How long an identifier stays taken.
const IDENTIFIER_TTL: i64 = 24 * 3600;
/// Stripe's limit on `event_name` and `identifier`.
const MAX_LEN: usize = 100;
/// Event timestamps: at most 35 days old, at most 5 minutes ahead.
const MAX_AGE: i64 = 35 * 86_400;
const MAX_AHEAD: i64 = 300;

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn meter_of(ctx: &mut Ctx, id: &str) -> Result<Value> {
    fetch(ctx, METER, id, "id")
}

fn bounded(p: &mut Params, key: &str, required: bool) -> Result<Option<String>> {
    let v = if required {
        Some(p.req_str(key)?)
    } else {
        p.opt_str(key)?
    };
    if let Some(v) = &v
        && v.chars().count() > MAX_LEN
    {
        return Err(StripeError::invalid(format!(
            "Invalid {key}: must be at most {MAX_LEN} characters"
        ))
        .code("parameter_invalid_string")
        .param(key));
    }
    Ok(v)
}

/// A whole number as an integer, anything else as a float (`aggregated_value`).
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

// ---- meters ----------------------------------------------------------------------------------

pub fn create(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let display_name = bounded(&mut p, "display_name", true)?.unwrap_or_default();
    let event_name = bounded(&mut p, "event_name", true)?.unwrap_or_default();
    let mut agg = p
        .sub("default_aggregation")?
        .ok_or_else(|| StripeError::missing_param("default_aggregation"))?;
    let formula = agg
        .enum_str("formula", &["sum", "count", "last"])?
        .ok_or_else(|| StripeError::missing_param("default_aggregation[formula]"))?;
    agg.finish()?;
    let (customer_key, mapping_type) = match p.sub("customer_mapping")? {
        Some(mut m) => {
            let key = m
                .req_str("event_payload_key")
                .map_err(|_| StripeError::missing_param("customer_mapping[event_payload_key]"))?;
            let t = m
                .enum_str("type", &["by_id"])?
                .ok_or_else(|| StripeError::missing_param("customer_mapping[type]"))?;
            m.finish()?;
            (key, t)
        }
        None => ("stripe_customer_id".to_string(), "by_id".to_string()),
    };
    let value_key = match p.sub("value_settings")? {
        Some(mut v) => {
            let key = v
                .req_str("event_payload_key")
                .map_err(|_| StripeError::missing_param("value_settings[event_payload_key]"))?;
            v.finish()?;
            key
        }
        None => "value".to_string(),
    };
    let window = p.enum_str("event_time_window", &["day", "hour"])?;
    p.finish()?;
    let taken = ctx.acct().collection(METER).is_some_and(|c| {
        c.objects
            .values()
            .any(|m| m["event_name"] == event_name && m["status"] == "active")
    });
    if taken {
        return Err(StripeError::invalid(format!(
            "An active meter with the event_name '{event_name}' already exists."
        ))
        .code("resource_already_exists")
        .param("event_name"));
    }
    let now = ctx.now;
    let obj = json!({
        "id": format!("mtr_test_{}", random_string(32)), "object": METER, "created": now,
        "customer_mapping": {"event_payload_key": customer_key, "type": mapping_type},
        "default_aggregation": {"formula": formula}, "display_name": display_name,
        "event_name": event_name, "event_time_window": window, "livemode": false,
        "status": "active", "status_transitions": {"deactivated_at": null}, "updated": now,
        "value_settings": {"event_payload_key": value_key},
    });
    ctx.put(METER, obj.clone());
    ctx.emit("billing.meter.created", &obj, None);
    Ok(obj)
}

pub fn retrieve(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    meter_of(ctx, &ids[0])
}

/// Only `display_name` can change (as on Stripe).
pub fn update(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let before = meter_of(ctx, &ids[0])?;
    let mut obj = before.clone();
    if let Some(n) = bounded(&mut p, "display_name", false)? {
        obj["display_name"] = json!(n);
        obj["updated"] = json!(ctx.now);
    }
    p.finish()?;
    ctx.put(METER, obj.clone());
    if before != obj {
        ctx.emit(
            "billing.meter.updated",
            &obj,
            Some(super::previous(&before, &obj)),
        );
    }
    Ok(obj)
}

pub fn list(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let status = p.enum_str("status", &["active", "inactive"])?;
    super::list(ctx, p, METER, "/v1/billing/meters", |m| {
        status.as_deref().is_none_or(|st| m["status"] == st)
    })
}

fn set_status(ctx: &mut Ctx, p: Params, id: &str, active: bool) -> Result<Value> {
    no_params(p)?;
    let before = meter_of(ctx, id)?;
    let mut obj = before.clone();
    let (want, from) = if active {
        ("active", "inactive")
    } else {
        ("inactive", "active")
    };
    if obj["status"] != from {
        return Err(StripeError::invalid(format!(
            "This meter is already {want}."
        )));
    }
    if active {
        let name = obj["event_name"].clone();
        let clash = ctx.acct().collection(METER).is_some_and(|c| {
            c.objects
                .values()
                .any(|m| m["event_name"] == name && m["status"] == "active")
        });
        if clash {
            return Err(StripeError::invalid(format!(
                "An active meter with the event_name '{}' already exists.",
                s(&name)
            ))
            .code("resource_already_exists"));
        }
    }
    obj["status"] = json!(want);
    obj["status_transitions"]["deactivated_at"] = if active { json!(null) } else { json!(ctx.now) };
    obj["updated"] = json!(ctx.now);
    ctx.put(METER, obj.clone());
    let kind = if active {
        "billing.meter.reactivated"
    } else {
        "billing.meter.deactivated"
    };
    ctx.emit(kind, &obj, Some(super::previous(&before, &obj)));
    Ok(obj)
}

pub fn deactivate(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    set_status(ctx, p, &ids[0], false)
}

pub fn reactivate(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    set_status(ctx, p, &ids[0], true)
}

// ---- meter events ----------------------------------------------------------------------------

pub fn create_event(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let event_name = bounded(&mut p, "event_name", true)?.unwrap_or_default();
    let identifier = bounded(&mut p, "identifier", false)?;
    let timestamp = p.int("timestamp")?;
    let payload = match p.take("payload") {
        Some(Value::Object(m)) if !m.is_empty() => m,
        Some(Value::Object(_)) | None => return Err(StripeError::missing_param("payload")),
        Some(_) => {
            return Err(StripeError::invalid("Invalid hash")
                .code("parameter_invalid_hash")
                .param("payload"));
        }
    };
    p.finish()?;
    let meter = ctx.acct().collection(METER).and_then(|c| {
        c.ids
            .iter()
            .filter_map(|id| c.objects.get(id))
            .find(|m| m["event_name"] == event_name.as_str() && m["status"] == "active")
            .cloned()
    });
    let customer_key = meter
        .as_ref()
        .map(|m| s(&m["customer_mapping"]["event_payload_key"]))
        .unwrap_or_else(|| "stripe_customer_id".into());
    let value_key = meter
        .as_ref()
        .map(|m| s(&m["value_settings"]["event_payload_key"]))
        .unwrap_or_else(|| "value".into());
    let customer = payload
        .get(&customer_key)
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .ok_or_else(|| StripeError::missing_param(&format!("payload[{customer_key}]")))?;
    let counts = meter
        .as_ref()
        .is_some_and(|m| m["default_aggregation"]["formula"] == "count");
    let value = match payload.get(&value_key).and_then(Value::as_str) {
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| {
                StripeError::invalid_value(
                    &format!("payload[{value_key}]"),
                    format!("Invalid payload[{value_key}]: must be a number, got '{v}'."),
                )
            })?,
        None if counts => 1.0,
        None => return Err(StripeError::missing_param(&format!("payload[{value_key}]"))),
    };
    let now = super::test_clocks::now_for(ctx, &customer);
    let ts = timestamp.unwrap_or(now);
    if ts < now - MAX_AGE || ts > now + MAX_AHEAD {
        return Err(StripeError::invalid(
            "Invalid timestamp: must be within the past 35 calendar days or up to 5 minutes in the future.",
        )
        .code("timestamp_out_of_range")
        .param("timestamp"));
    }
    let identifier = identifier.unwrap_or_else(|| format!("mev_{}", random_string(24)));
    if let Some(prev) = ctx.get(STORED_EVENT, &identifier)
        && ctx.now - prev["created"].as_i64().unwrap_or(0) < IDENTIFIER_TTL
    {
        return Err(StripeError::invalid(format!(
            "An event already exists with identifier {identifier}."
        ))
        .code("resource_already_exists")
        .param("identifier"));
    }
    let stored = json!({
        "id": identifier, "meter": meter.as_ref().map(|m| m["id"].clone()),
        "customer": customer, "value": value, "timestamp": ts, "created": ctx.now,
    });
    ctx.put(STORED_EVENT, stored);
    Ok(json!({
        "object": EVENT, "created": ctx.now, "event_name": event_name,
        "identifier": identifier, "livemode": false, "payload": payload, "timestamp": ts,
    }))
}

/// The meter's aggregate of `customer`'s events timestamped in `[start, end)`.
pub fn usage(ctx: &mut Ctx, meter: &str, customer: &str, start: i64, end: i64) -> f64 {
    let formula = ctx
        .get(METER, meter)
        .map(|m| s(&m["default_aggregation"]["formula"]))
        .unwrap_or_default();
    let Some(c) = ctx.acct().collection(STORED_EVENT) else {
        return 0.0;
    };
    let events: Vec<&Value> = c
        .ids
        .iter()
        .filter_map(|id| c.objects.get(id))
        .filter(|e| e["meter"] == meter && e["customer"] == customer)
        .filter(|e| {
            e["timestamp"]
                .as_i64()
                .is_some_and(|t| t >= start && t < end)
        })
        .collect();
    match formula.as_str() {
        "count" => events.len() as f64,
        "last" => events
            .iter()
            .max_by_key(|e| e["timestamp"].as_i64().unwrap_or(0))
            .and_then(|e| e["value"].as_f64())
            .unwrap_or(0.0),
        _ => events.iter().filter_map(|e| e["value"].as_f64()).sum(),
    }
}

fn time_param(p: &mut Params, key: &str, step: i64) -> Result<i64> {
    let t = p.int(key)?.ok_or_else(|| StripeError::missing_param(key))?;
    if t.rem_euclid(step) != 0 {
        let unit = match step {
            86_400 => "day",
            3600 => "hour",
            _ => "minute",
        };
        return Err(StripeError::invalid(format!(
            "Invalid {key}: must be aligned with {unit} boundaries."
        ))
        .param(key));
    }
    Ok(t)
}

pub fn event_summaries(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let meter = meter_of(ctx, &ids[0])?;
    let customer = p.req_str("customer")?;
    let window = p.enum_str("value_grouping_window", &["day", "hour"])?;
    let step = match window.as_deref() {
        Some("day") => 86_400,
        Some("hour") => 3600,
        _ => 60,
    };
    let start = time_param(&mut p, "start_time", step)?;
    let end = time_param(&mut p, "end_time", step)?;
    if end <= start {
        return Err(
            StripeError::invalid("Invalid end_time: must be after start_time.").param("end_time"),
        );
    }
    let meter_id = s(&meter["id"]);
    let windows: Vec<(i64, i64)> = match window {
        None => vec![(start, end)],
        Some(_) => {
            if (end - start) / step > 10_000 {
                return Err(StripeError::invalid(
                    "Invalid end_time: the range holds too many windows for value_grouping_window.",
                )
                .param("end_time"));
            }
            (0..(end - start) / step)
                .map(|i| (start + i * step, start + (i + 1) * step))
                .collect()
        }
    };
    let data: Vec<Value> = windows
        .into_iter()
        .map(|(a, b)| {
            let v = usage(ctx, &meter_id, &customer, a, b);
            json!({
                "id": format!("mtrusg_test_{}", random_string(32)), "object": SUMMARY,
                "aggregated_value": number(v), "end_time": b, "livemode": false,
                "meter": meter_id, "start_time": a,
            })
        })
        .collect();
    let url = format!("/v1/billing/meters/{meter_id}/event_summaries");
    page_array(p, &data, &url, SUMMARY)
}
