//! Events (`GET /v1/events`, `GET /v1/events/{id}`) and webhook endpoints
//! (`/v1/webhook_endpoints`). Events themselves are made by [`crate::webhooks::emit`].
//!
//! An endpoint's `secret` and `connect` flag are not part of Stripe's `webhook_endpoint` object
//! (the secret is shown once, on create), so they live beside it in a private collection
//! ([`PRIVATE`]) keyed by the same id, never rendered by the API.

use serde_json::{Map, Value, json};

use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{merge_metadata, new_id, random_string};
use crate::{Ctx, empty_map};

/// Collection of `{id, secret, connect}` records, one per endpoint.
pub const PRIVATE: &str = "_webhook_endpoint_private";
/// Stripe keeps events for 30 days.
const EVENT_RETENTION_SECS: i64 = 30 * 24 * 3600;

// ---------------------------------------------------------------------------------------------
// Events

/// `GET /v1/events`: Stripe's list parameters plus `type` (with `*` wildcards), `types[]` and
/// `delivery_success`, over the last 30 days.
pub fn list(ctx: &mut Ctx, mut p: Params, _ids: &[String]) -> Result<Value> {
    let single = p.opt_str("type")?;
    let many = p.str_list("types")?;
    if single.is_some() && many.is_some() {
        return Err(StripeError::invalid(
            "You may only specify one of these parameters: type, types.",
        ));
    }
    if let Some(t) = &many
        && t.len() > 20
    {
        return Err(
            StripeError::invalid("Invalid types: must contain at most 20 event types")
                .code("parameter_invalid_array")
                .param("types"),
        );
    }
    let patterns: Vec<String> = match (single, many) {
        (Some(t), _) => vec![t],
        (None, Some(ts)) => ts,
        (None, None) => Vec::new(),
    };
    let delivery_success = p.bool("delivery_success")?;
    let oldest = ctx.now - EVENT_RETENTION_SECS;
    let mut page = super::list(ctx, p, "event", "/v1/events", move |ev| {
        let kind = ev["type"].as_str().unwrap_or_default();
        let pending = ev["pending_webhooks"].as_i64().unwrap_or(0);
        ev["created"].as_i64().unwrap_or(0) >= oldest
            && (patterns.is_empty() || patterns.iter().any(|pat| glob(pat, kind)))
            && match delivery_success {
                None => true,
                // Stripe: `true` = every webhook delivered; `false` = pending or failed ones.
                Some(true) => pending == 0,
                Some(false) => pending > 0,
            }
    })?;
    if let Some(items) = page["data"].as_array_mut() {
        items.iter_mut().for_each(crate::webhooks::inflate);
    }
    Ok(page)
}

/// `GET /v1/events/{id}`.
pub fn retrieve(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    super::no_params(p)?;
    let id = first(ids);
    let mut ev = super::fetch(ctx, "event", id, "id")?;
    crate::webhooks::inflate(&mut ev);
    // Past the retention window an event is gone, as on Stripe.
    if ev["created"].as_i64().unwrap_or(0) < ctx.now - EVENT_RETENTION_SECS {
        return Err(StripeError::missing("event", id, "id"));
    }
    Ok(ev)
}

/// `*` matches any run of characters (`charge.*`, `*.succeeded`, `*`).
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    // Middle pieces in order, greedily leftmost, between the fixed prefix and suffix.
    let mut rest = &text[first.len()..text.len() - last.len()];
    for piece in &parts[1..parts.len() - 1] {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    true
}

fn first(ids: &[String]) -> &str {
    ids.first().map(String::as_str).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Webhook endpoints

fn new_secret() -> String {
    format!("whsec_{}", random_string(32))
}

/// `http(s)://host…`, no whitespace, a sane length.
fn check_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host = rest
        .map(|r| r.split(['/', '?', '#']).next().unwrap_or_default())
        .unwrap_or_default();
    let host_name = host.rsplit('@').next().unwrap_or_default();
    let ok = rest.is_some()
        && !host_name.is_empty()
        && !host_name.starts_with(':')
        && url.len() <= 2048
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(StripeError::invalid(format!(
            "Invalid URL: {url}. URLs must begin with http:// or https:// and name a host."
        ))
        .code("url_invalid")
        .param("url"))
    }
}

/// `YYYY-MM-DD` or `YYYY-MM-DD.name` (e.g. `2026-10-28.endive`).
fn valid_api_version(v: &str) -> bool {
    let (date, name) = match v.split_once('.') {
        Some((d, n)) => (d, Some(n)),
        None => (v, None),
    };
    let b = date.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let date_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && digits(0..4)
        && digits(5..7)
        && digits(8..10)
        && (1..=12).contains(&date[5..7].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&date[8..10].parse::<u32>().unwrap_or(0));
    let name_ok = name.is_none_or(|n| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    });
    date_ok && name_ok
}

/// `enabled_events[]`: each `*` or a known type; required and non-empty. Duplicates dropped.
fn enabled_events(p: &mut Params, required: bool) -> Result<Option<Vec<String>>> {
    let Some(list) = p.str_list("enabled_events")? else {
        return if required {
            Err(StripeError::missing_param("enabled_events"))
        } else {
            Ok(None)
        };
    };
    if list.is_empty() {
        return Err(StripeError::missing_param("enabled_events"));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, ev) in list.into_iter().enumerate() {
        if ev != "*" && EVENT_TYPES.binary_search(&ev.as_str()).is_err() {
            let param = format!("enabled_events[{i}]");
            return Err(StripeError::invalid(format!(
                "Invalid {param}: must be one of *, {}",
                EVENT_TYPES.join(", ")
            ))
            .code("parameter_invalid_string")
            .param(&param));
        }
        if !out.contains(&ev) {
            out.push(ev);
        }
    }
    Ok(Some(out))
}

/// The public object, in Stripe's field order (`id`, `object`, then alphabetical).
fn endpoint_object(
    ctx: &Ctx,
    url: &str,
    events: Vec<String>,
    api_version: Option<String>,
    description: Option<String>,
    metadata: Value,
) -> Value {
    json!({
        "id": new_id("we"),
        "object": "webhook_endpoint",
        "api_version": api_version,
        "application": null,
        "created": ctx.now,
        "description": description,
        "enabled_events": events,
        "livemode": false,
        "metadata": metadata,
        "status": "enabled",
        "url": url,
    })
}

fn store_endpoint(ctx: &mut Ctx, endpoint: Value, secret: &str, connect: bool) {
    let id = endpoint["id"].as_str().unwrap_or_default().to_string();
    ctx.put("webhook_endpoint", endpoint);
    ctx.put(
        PRIVATE,
        json!({"id": id, "secret": secret, "connect": connect}),
    );
}

/// `POST /v1/webhook_endpoints`. The only response that shows `secret`.
pub fn create_endpoint(ctx: &mut Ctx, mut p: Params, _ids: &[String]) -> Result<Value> {
    let url = p.req_str("url")?;
    check_url(&url)?;
    let events = enabled_events(&mut p, true)?.unwrap_or_default();
    let api_version = p.opt_str("api_version")?;
    if let Some(v) = &api_version
        && !valid_api_version(v)
    {
        return Err(StripeError::invalid(format!("Invalid api_version: {v}"))
            .code("parameter_invalid_string")
            .param("api_version"));
    }
    let description = p.opt_str("description")?;
    let metadata_update = p.metadata("metadata")?;
    let connect = p.bool("connect")?.unwrap_or(false);
    p.finish()?;
    let mut metadata = empty_map();
    merge_metadata(&mut metadata, metadata_update);
    let endpoint = endpoint_object(ctx, &url, events, api_version, description, metadata);
    let secret = new_secret();
    store_endpoint(ctx, endpoint.clone(), &secret, connect);
    Ok(with_secret(endpoint, &secret))
}

/// Inserts `secret` where Stripe puts it (after `metadata`, before `status`).
fn with_secret(endpoint: Value, secret: &str) -> Value {
    let Value::Object(m) = endpoint else {
        return endpoint;
    };
    let mut out = Map::new();
    for (k, v) in m {
        let after = k == "metadata";
        out.insert(k, v);
        if after {
            out.insert("secret".into(), json!(secret));
        }
    }
    Value::Object(out)
}

/// `GET /v1/webhook_endpoints`.
pub fn list_endpoints(ctx: &mut Ctx, p: Params, _ids: &[String]) -> Result<Value> {
    super::list(ctx, p, "webhook_endpoint", "/v1/webhook_endpoints", |_| {
        true
    })
}

/// `GET /v1/webhook_endpoints/{id}`.
pub fn retrieve_endpoint(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    super::no_params(p)?;
    super::fetch(ctx, "webhook_endpoint", first(ids), "id")
}

/// `POST /v1/webhook_endpoints/{id}`: `url`, `enabled_events`, `description`, `metadata`,
/// `disabled` (Stripe does not let `api_version` or `connect` change after creation).
pub fn update_endpoint(ctx: &mut Ctx, mut p: Params, ids: &[String]) -> Result<Value> {
    let id = first(ids);
    let mut endpoint = super::fetch(ctx, "webhook_endpoint", id, "id")?;
    let url = p.opt_str("url")?;
    if let Some(u) = &url {
        check_url(u)?;
    }
    let events = enabled_events(&mut p, false)?;
    // `description=` (empty) unsets it.
    let description = p.str("description")?;
    let metadata_update = p.metadata("metadata")?;
    let disabled = p.bool("disabled")?;
    p.finish()?;
    if let Some(u) = url {
        endpoint["url"] = json!(u);
    }
    if let Some(e) = events {
        endpoint["enabled_events"] = json!(e);
    }
    if let Some(d) = description {
        endpoint["description"] = if d.is_empty() { Value::Null } else { json!(d) };
    }
    merge_metadata(&mut endpoint["metadata"], metadata_update);
    if let Some(d) = disabled {
        endpoint["status"] = json!(if d { "disabled" } else { "enabled" });
    }
    ctx.put("webhook_endpoint", endpoint.clone());
    Ok(endpoint)
}

/// `DELETE /v1/webhook_endpoints/{id}`: gone for good (later retrieves are 404, as on Stripe;
/// pending deliveries to it stop because the worker looks the endpoint up at send time).
pub fn delete_endpoint(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    super::no_params(p)?;
    let id = first(ids).to_string();
    super::fetch(ctx, "webhook_endpoint", &id, "id")?;
    let acct = ctx.acct();
    for kind in ["webhook_endpoint", PRIVATE] {
        if let Some(c) = acct.collections.get_mut(kind) {
            c.objects.remove(&id);
            c.ids.retain(|x| *x != id);
        }
    }
    Ok(json!({"id": id, "object": "webhook_endpoint", "deleted": true}))
}

/// For embedders registering their own receiver at every start: the endpoint with this `url`
/// gets a fresh secret (and is re-enabled), or one enabled for `*` is created. → (id, secret)
pub fn upsert_endpoint(ctx: &mut Ctx, url: &str, api_version: Option<&str>) -> (String, String) {
    let secret = new_secret();
    let existing = ctx.acct().collection("webhook_endpoint").and_then(|c| {
        c.ids
            .iter()
            .filter_map(|id| c.objects.get(id))
            .find(|e| e["url"] == url)
            .cloned()
    });
    match existing {
        Some(mut endpoint) => {
            let id = endpoint["id"].as_str().unwrap_or_default().to_string();
            let connect = ctx
                .get(PRIVATE, &id)
                .and_then(|p| p["connect"].as_bool())
                .unwrap_or(false);
            endpoint["status"] = json!("enabled");
            if let Some(v) = api_version {
                endpoint["api_version"] = json!(v);
            }
            store_endpoint(ctx, endpoint, &secret, connect);
            (id, secret)
        }
        None => {
            let endpoint = endpoint_object(
                ctx,
                url,
                vec!["*".to_string()],
                api_version.map(str::to_string),
                None,
                empty_map(),
            );
            let id = endpoint["id"].as_str().unwrap_or_default().to_string();
            store_endpoint(ctx, endpoint, &secret, false);
            (id, secret)
        }
    }
}

/// Event types a webhook endpoint may subscribe to (API 2026-10-28.endive), generated once from
/// `../shared/stripe-openapi/webhook-event-types-2026-10-28.endive.json` (sorted, for binary search).
pub const EVENT_TYPES: &[&str] = &[
    "account.application.authorized",
    "account.application.deauthorized",
    "account.external_account.created",
    "account.external_account.deleted",
    "account.external_account.updated",
    "account.updated",
    "application_fee.created",
    "application_fee.refund.updated",
    "application_fee.refunded",
    "apps.install.created",
    "apps.install.deleted",
    "apps.install.updated",
    "balance.available",
    "balance_settings.updated",
    "billing.alert.triggered",
    "billing.credit_balance_transaction.created",
    "billing.credit_grant.created",
    "billing.credit_grant.updated",
    "billing.meter.created",
    "billing.meter.deactivated",
    "billing.meter.reactivated",
    "billing.meter.updated",
    "billing_portal.configuration.created",
    "billing_portal.configuration.updated",
    "billing_portal.session.created",
    "capability.updated",
    "cash_balance.funds_available",
    "charge.captured",
    "charge.dispute.closed",
    "charge.dispute.created",
    "charge.dispute.funds_reinstated",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.updated",
    "charge.expired",
    "charge.failed",
    "charge.pending",
    "charge.refund.updated",
    "charge.refunded",
    "charge.succeeded",
    "charge.updated",
    "checkout.session.async_payment_failed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.completed",
    "checkout.session.expired",
    "climate.order.canceled",
    "climate.order.created",
    "climate.order.delayed",
    "climate.order.delivered",
    "climate.order.product_substituted",
    "climate.product.created",
    "climate.product.pricing_updated",
    "coupon.created",
    "coupon.deleted",
    "coupon.updated",
    "credit_note.created",
    "credit_note.updated",
    "credit_note.voided",
    "customer.created",
    "customer.deleted",
    "customer.discount.created",
    "customer.discount.deleted",
    "customer.discount.updated",
    "customer.source.created",
    "customer.source.deleted",
    "customer.source.expiring",
    "customer.source.updated",
    "customer.subscription.created",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.pending_update_applied",
    "customer.subscription.pending_update_expired",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
    "customer.subscription.updated",
    "customer.tax_id.created",
    "customer.tax_id.deleted",
    "customer.tax_id.updated",
    "customer.updated",
    "customer_cash_balance_transaction.created",
    "entitlements.active_entitlement_summary.updated",
    "file.created",
    "financial_connections.account.account_numbers_updated",
    "financial_connections.account.created",
    "financial_connections.account.deactivated",
    "financial_connections.account.disconnected",
    "financial_connections.account.expected_deactivation_date_updated",
    "financial_connections.account.reactivated",
    "financial_connections.account.refreshed_balance",
    "financial_connections.account.refreshed_ownership",
    "financial_connections.account.refreshed_transactions",
    "financial_connections.account.supported_payment_method_types_updated",
    "financial_connections.account.upcoming_account_number_expiry",
    "financial_connections.account.upcoming_deactivation",
    "financial_connections.authorization.expected_deactivation_date_updated",
    "financial_connections.authorization.upcoming_deactivation",
    "identity.verification_session.canceled",
    "identity.verification_session.created",
    "identity.verification_session.processing",
    "identity.verification_session.redacted",
    "identity.verification_session.requires_input",
    "identity.verification_session.verified",
    "invoice.created",
    "invoice.deleted",
    "invoice.finalization_failed",
    "invoice.finalized",
    "invoice.marked_uncollectible",
    "invoice.overdue",
    "invoice.overpaid",
    "invoice.paid",
    "invoice.payment_action_required",
    "invoice.payment_attempt_required",
    "invoice.payment_failed",
    "invoice.payment_succeeded",
    "invoice.sent",
    "invoice.upcoming",
    "invoice.updated",
    "invoice.voided",
    "invoice.will_be_due",
    "invoice_payment.paid",
    "invoiceitem.created",
    "invoiceitem.deleted",
    "issuing_authorization.created",
    "issuing_authorization.request",
    "issuing_authorization.updated",
    "issuing_card.created",
    "issuing_card.updated",
    "issuing_cardholder.created",
    "issuing_cardholder.updated",
    "issuing_dispute.closed",
    "issuing_dispute.created",
    "issuing_dispute.funds_reinstated",
    "issuing_dispute.funds_rescinded",
    "issuing_dispute.submitted",
    "issuing_dispute.updated",
    "issuing_personalization_design.activated",
    "issuing_personalization_design.deactivated",
    "issuing_personalization_design.rejected",
    "issuing_personalization_design.updated",
    "issuing_token.created",
    "issuing_token.updated",
    "issuing_transaction.created",
    "issuing_transaction.purchase_details_receipt_updated",
    "issuing_transaction.updated",
    "mandate.updated",
    "payment_intent.amount_capturable_updated",
    "payment_intent.canceled",
    "payment_intent.created",
    "payment_intent.partially_funded",
    "payment_intent.payment_failed",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.succeeded",
    "payment_link.created",
    "payment_link.updated",
    "payment_method.attached",
    "payment_method.automatically_updated",
    "payment_method.detached",
    "payment_method.updated",
    "payout.canceled",
    "payout.created",
    "payout.failed",
    "payout.paid",
    "payout.reconciliation_completed",
    "payout.updated",
    "person.created",
    "person.deleted",
    "person.updated",
    "plan.created",
    "plan.deleted",
    "plan.updated",
    "price.created",
    "price.deleted",
    "price.updated",
    "product.created",
    "product.deleted",
    "product.updated",
    "promotion_code.created",
    "promotion_code.updated",
    "quote.accepted",
    "quote.canceled",
    "quote.created",
    "quote.finalized",
    "radar.early_fraud_warning.created",
    "radar.early_fraud_warning.updated",
    "refund.created",
    "refund.failed",
    "refund.updated",
    "reporting.report_run.failed",
    "reporting.report_run.succeeded",
    "reporting.report_type.updated",
    "reserve.hold.created",
    "reserve.hold.updated",
    "reserve.plan.created",
    "reserve.plan.disabled",
    "reserve.plan.expired",
    "reserve.plan.updated",
    "reserve.release.created",
    "review.closed",
    "review.opened",
    "setup_intent.canceled",
    "setup_intent.created",
    "setup_intent.requires_action",
    "setup_intent.setup_failed",
    "setup_intent.succeeded",
    "sigma.scheduled_query_run.created",
    "source.canceled",
    "source.chargeable",
    "source.failed",
    "source.mandate_notification",
    "source.refund_attributes_required",
    "source.transaction.created",
    "source.transaction.updated",
    "subscription_schedule.aborted",
    "subscription_schedule.canceled",
    "subscription_schedule.completed",
    "subscription_schedule.created",
    "subscription_schedule.expiring",
    "subscription_schedule.released",
    "subscription_schedule.updated",
    "tax.settings.updated",
    "tax_rate.created",
    "tax_rate.updated",
    "terminal.reader.action_failed",
    "terminal.reader.action_succeeded",
    "terminal.reader.action_updated",
    "test_helpers.test_clock.advancing",
    "test_helpers.test_clock.created",
    "test_helpers.test_clock.deleted",
    "test_helpers.test_clock.internal_failure",
    "test_helpers.test_clock.ready",
    "three_d_secure.authentication.canceled",
    "three_d_secure.authentication.challenge_started",
    "three_d_secure.authentication.errored",
    "three_d_secure.authentication.failed",
    "three_d_secure.authentication.requires_challenge",
    "three_d_secure.authentication.requires_submission",
    "three_d_secure.authentication.succeeded",
    "topup.canceled",
    "topup.created",
    "topup.failed",
    "topup.reversed",
    "topup.succeeded",
    "transfer.created",
    "transfer.reversed",
    "transfer.updated",
    "treasury.credit_reversal.created",
    "treasury.credit_reversal.posted",
    "treasury.debit_reversal.completed",
    "treasury.debit_reversal.created",
    "treasury.debit_reversal.initial_credit_granted",
    "treasury.financial_account.closed",
    "treasury.financial_account.created",
    "treasury.financial_account.features_status_updated",
    "treasury.inbound_transfer.canceled",
    "treasury.inbound_transfer.created",
    "treasury.inbound_transfer.failed",
    "treasury.inbound_transfer.succeeded",
    "treasury.outbound_payment.canceled",
    "treasury.outbound_payment.created",
    "treasury.outbound_payment.expected_arrival_date_updated",
    "treasury.outbound_payment.failed",
    "treasury.outbound_payment.posted",
    "treasury.outbound_payment.returned",
    "treasury.outbound_payment.tracking_details_updated",
    "treasury.outbound_transfer.canceled",
    "treasury.outbound_transfer.created",
    "treasury.outbound_transfer.expected_arrival_date_updated",
    "treasury.outbound_transfer.failed",
    "treasury.outbound_transfer.posted",
    "treasury.outbound_transfer.returned",
    "treasury.outbound_transfer.tracking_details_updated",
    "treasury.received_credit.created",
    "treasury.received_credit.failed",
    "treasury.received_credit.succeeded",
    "treasury.received_debit.created",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("charge.*", "charge.succeeded"));
        assert!(glob("charge.*", "charge.dispute.created"));
        assert!(!glob("charge.*", "payment_intent.succeeded"));
        assert!(glob("*", "anything"));
        assert!(glob("*.succeeded", "charge.succeeded"));
        assert!(glob("charge.succeeded", "charge.succeeded"));
        assert!(!glob("charge.*.created", "charge.created"));
        assert!(glob("charge.*.created", "charge.dispute.created"));
    }

    #[test]
    fn api_versions() {
        assert!(valid_api_version("2026-10-28.endive"));
        assert!(valid_api_version("2023-08-16"));
        assert!(!valid_api_version("2023-13-16"));
        assert!(!valid_api_version("2023-08-16."));
        assert!(!valid_api_version("yesterday"));
        assert!(!valid_api_version("2023-08-1é"));
    }

    #[test]
    fn urls() {
        assert!(check_url("https://example.com/hook").is_ok());
        assert!(check_url("http://127.0.0.1:8080/x?y=1").is_ok());
        assert!(check_url("ftp://example.com").is_err());
        assert!(check_url("https://").is_err());
        assert!(check_url("https:// x").is_err());
    }

    #[test]
    fn event_types_sorted() {
        assert!(EVENT_TYPES.windows(2).all(|w| w[0] < w[1]));
        assert!(EVENT_TYPES.binary_search(&"charge.succeeded").is_ok());
    }
}
