//! Test clocks (`/v1/test_helpers/test_clocks`) and billing time.
//!
//! A customer created with `test_clock` lives at the clock's `frozen_time`: its subscriptions,
//! invoices, payments and charges are stamped with it. Advancing is asynchronous, as on Stripe:
//! the call answers `advancing`, and a task shortly after walks the clock forward through every
//! billing moment due up to the target (renewals, trial ends, payment retries, expiries), each at
//! its own time, then sets the clock `ready`.

use std::time::Duration;

use serde_json::{Value, json};

use super::{fetch, no_params, subscriptions};
use crate::Ctx;
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::new_id;

pub const KIND: &str = "test_helpers.test_clock";
/// Hidden: the advance in progress of a clock (`{id, target, started_ms}`).
const ADVANCING: &str = "_test_clock_advance";
/// An advance still pending this long after it was asked for (its task was lost, e.g. to a
/// restart: tasks are not kept in the state file) is finished by the next read of the clock.
const STALE_ADVANCE_MS: u64 = 2_000;
/// Stripe deletes a test clock 30 days after its creation.
const LIFETIME_SECS: i64 = 30 * 86_400;
/// How long an advance stays `advancing` before the sandbox works through it.
const ADVANCE_DELAY: Duration = Duration::from_millis(150);
/// Without subscriptions a clock may move at most two years per advance (Stripe's rule).
const NO_SUBSCRIPTION_LIMIT_MONTHS: i64 = 24;
/// The latest time the sandbox accepts (9999-12-31), far from any arithmetic overflow.
const MAX_TIME: i64 = 253_402_300_799;
/// Guard against a billing loop that would not converge.
const MAX_STEPS: usize = 10_000;

// ---- calendar arithmetic (UTC, proleptic Gregorian) -------------------------------------------

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    days_from_civil(
        if m == 12 { y + 1 } else { y },
        if m == 12 { 1 } else { m + 1 },
        1,
    ) - days_from_civil(y, m, 1)
}

/// `ts` plus `months` calendar months, the day clamped to the target month's length.
pub fn add_months(ts: i64, months: i64) -> i64 {
    let ts = ts.clamp(0, MAX_TIME);
    let secs = ts.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(ts.div_euclid(86_400));
    let total = (y * 12 + (m - 1)).saturating_add(months.clamp(-120_000, 120_000));
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * 86_400 + secs
}

/// `anchor` plus `n` billing intervals (`day`/`week`/`month`/`year` × `count`).
pub fn add_interval(anchor: i64, interval: &str, count: i64, n: i64) -> i64 {
    let k = count.saturating_mul(n);
    match interval {
        "day" => anchor.saturating_add(k.saturating_mul(86_400)),
        "week" => anchor.saturating_add(k.saturating_mul(7 * 86_400)),
        "year" => add_months(anchor, k.saturating_mul(12)),
        _ => add_months(anchor, k),
    }
}

/// The first period boundary after `after` on the cycle anchored at `anchor`.
pub fn next_boundary(anchor: i64, interval: &str, count: i64, after: i64) -> i64 {
    let approx = match interval {
        "day" => 86_400,
        "week" => 7 * 86_400,
        "year" => 365 * 86_400,
        _ => 28 * 86_400,
    } * count.max(1);
    // Start a little before the estimate (months vary in length), then step forward.
    let mut n = ((after - anchor) / approx - 2).max(1);
    loop {
        let t = add_interval(anchor, interval, count, n);
        if t > after || n > 100_000 {
            return t;
        }
        n += 1;
    }
}

// ---- the clock a customer lives on ------------------------------------------------------------

/// The clock of a customer, if it was created with one.
pub fn clock_of(ctx: &mut Ctx, customer: &str) -> Option<String> {
    ctx.get("customer", customer)?["test_clock"]
        .as_str()
        .map(str::to_string)
}

/// "Now" for a customer: its clock's frozen time, or the real time.
pub fn now_for(ctx: &mut Ctx, customer: &str) -> i64 {
    match clock_of(ctx, customer).and_then(|c| ctx.get(KIND, &c)) {
        Some(clock) => clock["frozen_time"].as_i64().unwrap_or(ctx.now),
        None => ctx.now,
    }
}

/// Runs `f` with `ctx.now` set to `t` (objects it makes are stamped with `t`).
pub fn at<T>(ctx: &mut Ctx, t: i64, f: impl FnOnce(&mut Ctx) -> T) -> T {
    let old = ctx.now;
    ctx.now = t;
    let out = f(ctx);
    ctx.now = old;
    out
}

/// Runs `f` at the customer's time.
pub fn for_customer<T>(ctx: &mut Ctx, customer: &str, f: impl FnOnce(&mut Ctx) -> T) -> T {
    let t = now_for(ctx, customer);
    at(ctx, t, f)
}

// ---- the API -------------------------------------------------------------------------------

fn time_param(p: &mut Params, key: &str) -> Result<i64> {
    let t = p.req_int(key)?;
    if !(0..=MAX_TIME).contains(&t) {
        return Err(StripeError::invalid(format!(
            "Invalid timestamp: must be an integer Unix timestamp between 0 and {MAX_TIME}."
        ))
        .code("parameter_invalid_integer")
        .param(key));
    }
    Ok(t)
}

pub fn create(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    let frozen = time_param(&mut p, "frozen_time")?;
    let name = p.opt_str("name")?;
    p.finish()?;
    let clock = json!({
        "id": new_id("clock"), "object": KIND, "created": ctx.now,
        "deletes_after": ctx.now + LIFETIME_SECS, "frozen_time": frozen, "livemode": false,
        "name": name, "status": "ready", "status_details": {},
    });
    ctx.put(KIND, clock.clone());
    ctx.emit("test_helpers.test_clock.created", &clock, None);
    Ok(clock)
}

fn get(ctx: &mut Ctx, id: &str) -> Result<Value> {
    let c = fetch(ctx, KIND, id, "test_clock")?;
    if c["deleted"] == true {
        return Err(StripeError::missing(KIND, id, "test_clock"));
    }
    if c["status"] == "advancing"
        && let Some(adv) = ctx.get(ADVANCING, id)
        && adv["started_ms"].as_u64().unwrap_or(0) + STALE_ADVANCE_MS < crate::state::now_ms()
        && let Some(target) = adv["target"].as_i64()
    {
        run_advance(ctx, id, target);
        return fetch(ctx, KIND, id, "test_clock");
    }
    Ok(c)
}

pub fn retrieve(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    get(ctx, &ids[0])
}

pub fn list(ctx: &mut Ctx, p: Params, _: &[String]) -> Result<Value> {
    super::list(ctx, p, KIND, "/v1/test_helpers/test_clocks", |_| true)
}

/// Deleting a clock deletes its customers (and so ends their subscriptions), as on Stripe.
pub fn delete(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    let before = get(ctx, &ids[0])?;
    let customers: Vec<String> = customers_on(ctx, &ids[0]);
    for cus in customers {
        subscriptions::end_all_for_customer(ctx, &cus);
        if let Some(c) = ctx.get("customer", &cus) {
            let tomb = json!({"id": cus, "object": "customer", "deleted": true});
            ctx.put("customer", tomb);
            ctx.emit("customer.deleted", &c, None);
        }
    }
    let tomb = json!({"id": ids[0], "object": KIND, "deleted": true});
    ctx.put(KIND, tomb.clone());
    ctx.emit("test_helpers.test_clock.deleted", &before, None);
    Ok(tomb)
}

/// Ids of the (live) customers on a clock.
pub fn customers_on(ctx: &mut Ctx, clock: &str) -> Vec<String> {
    ctx.acct()
        .collection("customer")
        .map(|c| {
            c.ids
                .iter()
                .filter_map(|id| c.objects.get(id))
                .filter(|o| o["test_clock"] == clock && o["deleted"] != true)
                .filter_map(|o| o["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn advance(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let target = time_param(&mut p, "frozen_time")?;
    p.finish()?;
    let before = get(ctx, &ids[0])?;
    let frozen = before["frozen_time"].as_i64().unwrap_or(0);
    if before["status"] == "advancing" {
        return Err(StripeError::invalid(
            "The test clock is currently advancing. Wait until its status is `ready` before advancing it again.",
        )
        .code("test_clock_advancing"));
    }
    if target <= frozen {
        return Err(StripeError::invalid(format!(
            "The frozen_time ({target}) must be after the test clock's current frozen time ({frozen})."
        ))
        .param("frozen_time"));
    }
    let limit = match subscriptions::shortest_interval(ctx, &ids[0]) {
        Some((interval, count)) => add_interval(frozen, &interval, count, 2),
        None => add_months(frozen, NO_SUBSCRIPTION_LIMIT_MONTHS),
    };
    if target > limit {
        let rule = if subscriptions::shortest_interval(ctx, &ids[0]).is_some() {
            "Cannot advance the test clock more than two intervals in the future from the shortest subscription in this test clock."
        } else {
            "Cannot advance the test clock more than two years in the future when it has no subscriptions."
        };
        return Err(StripeError::invalid(format!(
            "{rule} The frozen_time must be at most {limit}."
        ))
        .param("frozen_time"));
    }
    let mut clock = before.clone();
    clock["status"] = json!("advancing");
    clock["status_details"] = json!({"advancing": {"target_frozen_time": target}});
    ctx.put(KIND, clock.clone());
    ctx.emit("test_helpers.test_clock.advancing", &clock, None);
    ctx.put(
        ADVANCING,
        json!({"id": ids[0], "target": target, "started_ms": crate::state::now_ms()}),
    );
    let id = ids[0].clone();
    ctx.later(ADVANCE_DELAY, move |ctx| run_advance(ctx, &id, target));
    Ok(clock)
}

/// Works through every billing moment of the clock's customers up to `target`, in time order.
fn run_advance(ctx: &mut Ctx, id: &str, target: i64) {
    // Only the advance asked for last (a stale task finds the clock already ready).
    if ctx.get(KIND, id).is_none_or(|c| c["status"] != "advancing") {
        return;
    }
    // Automatic work: its events carry no request.
    let (request_id, idempotency_key) = (ctx.request_id.take(), ctx.idempotency_key.take());
    advance_steps(ctx, id, target);
    ctx.request_id = request_id;
    ctx.idempotency_key = idempotency_key;
}

fn advance_steps(ctx: &mut Ctx, id: &str, target: i64) {
    for _ in 0..MAX_STEPS {
        let Some(clock) = ctx.get(KIND, id) else {
            return;
        };
        if clock["deleted"] == true {
            return;
        }
        let customers = customers_on(ctx, id);
        let Some(t) = subscriptions::next_due(ctx, &customers, target) else {
            break;
        };
        let frozen = clock["frozen_time"].as_i64().unwrap_or(t);
        let t = t.max(frozen);
        let mut c = clock;
        c["frozen_time"] = json!(t);
        ctx.put(KIND, c);
        at(ctx, t, |ctx| subscriptions::run_due(ctx, &customers, t));
    }
    let Some(mut clock) = ctx.get(KIND, id) else {
        return;
    };
    if clock["deleted"] == true {
        return;
    }
    clock["frozen_time"] = json!(target);
    clock["status"] = json!("ready");
    clock["status_details"] = json!({});
    ctx.put(KIND, clock.clone());
    ctx.emit("test_helpers.test_clock.ready", &clock, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        // 2024-01-31 00:00:00 UTC
        let jan31 = 1_706_659_200;
        let feb29 = add_months(jan31, 1);
        assert_eq!(civil_from_days(feb29 / 86_400), (2024, 2, 29));
        assert_eq!(
            civil_from_days(add_months(jan31, 2) / 86_400),
            (2024, 3, 31)
        );
        assert_eq!(
            civil_from_days(add_months(jan31, 13) / 86_400),
            (2025, 2, 28)
        );
        assert_eq!(add_interval(jan31, "day", 3, 2), jan31 + 6 * 86_400);
        assert_eq!(next_boundary(jan31, "month", 1, jan31), feb29);
        assert_eq!(
            civil_from_days(next_boundary(jan31, "month", 1, feb29) / 86_400),
            (2024, 3, 31)
        );
        for z in [-1000, 0, 19_000, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        // No overflow on extremes.
        let _ = add_months(i64::MAX, i64::MAX);
        let _ = add_interval(i64::MAX, "week", i64::MAX, i64::MAX);
        let _ = next_boundary(0, "day", 1, MAX_TIME);
    }
}
