//! The dashboard's transactions pages and actions.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::session::{Session, see_other};
use crate::ApiContext;
use crate::api;
use crate::error::ApiError;
use crate::page::{esc, format_money};


use super::common::*;

// ---- transactions ----------------------------------------------------------------------------

const TX_STATUSES: &[&str] = &tollgate_domain::TransactionStatus::NAMES;

fn valid_date(d: &str) -> bool {
    d.len() == 10
        && d.chars().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
}

pub async fn transactions(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    // The page's filters, kept for the pager links.
    let mut filters: Vec<(&str, String)> = Vec::new();
    for k in ["status", "from", "to", "min", "max", "customid"] {
        if let Some(v) = param(&params, k) {
            filters.push((k, v.to_string()));
        }
    }
    // …and the API query they make.
    let mut q: Vec<(&str, String)> = vec![("limit", "25".into())];
    for (k, v) in &filters {
        match *k {
            "status" => q.push(("status", v.clone())),
            "customid" => q.push(("customid", v.clone())),
            "min" => q.push(("amount_gte", v.clone())),
            "max" => q.push(("amount_lte", v.clone())),
            "from" | "to" => {
                if !valid_date(v) {
                    return fail(&ctx, &s, "transactions", bad("Dates are YYYY-MM-DD.")).await;
                }
                if *k == "from" {
                    q.push(("created_at_gte", format!("{v}T00:00:00Z")));
                } else {
                    q.push(("created_at_lte", format!("{v}T23:59:59.999Z")));
                }
            }
            _ => {}
        }
    }
    if let Some(c) = param(&params, "cursor") {
        q.push(("cursor", c.to_string()));
    }
    let listed = match match api::transactions::ListParams::parse(
        api_uri("/transactions", &q).query().unwrap_or(""),
    ) {
        Ok(p) => api::transactions::list(State(ctx.clone()), super::caller(&s), p).await,
        Err(e) => Err(e),
    } {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "transactions", e).await,
    };
    let rows = item_rows(&listed, |t| {
        format!(
            "<tr><td>{created}</td><td><a href=\"/dashboard/transactions/{id}\">{id_text}</a></td>\
                 <td>{status}</td><td class=\"num\">{amount}</td><td>{who}</td></tr>",
            created = esc(&when(&t["created_at"])),
            id = esc(&seg(&text(&t["id"]))),
            id_text = esc(&text(&t["id"])),
            status = badge(&text(&t["status"])),
            amount = esc(&money(t, "amount")),
            who = esc(&text(if t["customid"].is_null() {
                &t["external_identifier"]
            } else {
                &t["customid"]
            })),
        )
    });
    let get = |k: &str| esc(param(&params, k).unwrap_or_default());
    let body = format!(
        "{notice}<form method=\"get\" action=\"/dashboard/transactions\" class=\"filters\">\
         <label>Status {status}</label>\
         <label>From <input type=\"date\" name=\"from\" value=\"{from}\"></label>\
         <label>To <input type=\"date\" name=\"to\" value=\"{to}\"></label>\
         <label>Min amount <input name=\"min\" inputmode=\"numeric\" placeholder=\"minor units\" value=\"{min}\"></label>\
         <label>Max amount <input name=\"max\" inputmode=\"numeric\" placeholder=\"minor units\" value=\"{max}\"></label>\
         <label>Customer <input name=\"customid\" value=\"{customid}\"></label>\
         <button type=\"submit\">Filter</button></form>{table}{pager}",
        notice = notice(&params),
        status = select("status", TX_STATUSES, param(&params, "status"), "any"),
        from = get("from"),
        to = get("to"),
        min = get("min"),
        max = get("max"),
        customid = get("customid"),
        table = table(
            &[
                "Created (UTC)",
                "Transaction",
                "Status",
                "Amount",
                "Customer / reference"
            ],
            &rows,
            "No transactions match."
        ),
        pager = pager("/dashboard/transactions", &filters, &listed),
    );
    page(
        &ctx,
        &s,
        StatusCode::OK,
        "Transactions",
        "transactions",
        &body,
    )
    .await
}

pub async fn transaction(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let c = || super::caller(&s);
    let st = || State(ctx.clone());
    let t = match api::transactions::get(st(), c(), Path(id.clone())).await {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "transactions", e).await,
    };
    let events = match api::transactions::events(st(), c(), Path(id.clone())).await {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "transactions", e).await,
    };
    let refunds = match api::refunds::list(st(), c(), Path(id.clone())).await {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "transactions", e).await,
    };
    let status = text(&t["status"]);
    let timeline: String = events["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    format!(
                        "<li><time>{}</time> <strong>{}</strong><details><summary>details</summary>{}</details></li>",
                        esc(&when(&e["created_at"])),
                        esc(&text(&e["name"])),
                        json_block(&e["context"])
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let refund_rows: Vec<String> = refunds["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|r| {
                    format!(
                        "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
                        esc(&when(&r["created_at"])),
                        badge(&text(&r["status"])),
                        esc(&money(r, "amount")),
                        esc(&text(&r["payment_service_refund_id"])),
                        esc(&text(&r["reason"])),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let sid = esc(&seg(&id));
    let csrf = csrf_input(&s);
    let mut actions = String::new();
    if status == "authorization_succeeded" {
        actions.push_str(&format!(
            "<form method=\"post\" action=\"/dashboard/transactions/{sid}/capture\" class=\"card stack\">{csrf}\
             <h3>Capture</h3><label>Amount (minor units; empty: all) <input name=\"amount\" inputmode=\"numeric\"></label>\
             {confirm}<button type=\"submit\">Capture</button></form>\
             <form method=\"post\" action=\"/dashboard/transactions/{sid}/void\" class=\"card stack\">{csrf}\
             <h3>Void</h3><p>Releases the authorization; the buyer is not charged.</p>{confirm_void}\
             <button type=\"submit\" class=\"danger\">Void</button></form>",
            confirm = confirm_box("I want to capture this payment"),
            confirm_void = confirm_box("I want to void this authorization"),
        ));
    }
    let refundable =
        t["captured_amount"].as_i64().unwrap_or(0) - t["refunded_amount"].as_i64().unwrap_or(0);
    if refundable > 0 {
        actions.push_str(&format!(
            "<form method=\"post\" action=\"/dashboard/transactions/{sid}/refund\" class=\"card stack\">{csrf}\
             <h3>Refund</h3><p>Up to {left} can be refunded.</p>\
             <label>Amount (minor units; empty: everything left) <input name=\"amount\" inputmode=\"numeric\"></label>\
             <label>Reason (optional) <input name=\"reason\" maxlength=\"200\"></label>\
             {confirm}<button type=\"submit\" class=\"danger\">Refund</button></form>",
            left = esc(&format_money(refundable, t["currency"].as_str().unwrap_or("USD"))),
            confirm = confirm_box("I want to refund this payment"),
        ));
    }
    let body = format!(
        "{notice}<section class=\"card\"><dl>\
         <dt>Status</dt><dd data-testid=\"status\">{status_badge}</dd>\
         <dt>Amount</dt><dd>{amount}</dd>\
         <dt>Captured</dt><dd>{captured}</dd>\
         <dt>Refunded</dt><dd>{refunded}</dd>\
         <dt>Intent</dt><dd>{intent}</dd>\
         <dt>Customer</dt><dd>{customid}</dd>\
         <dt>Reference</dt><dd>{ext}</dd>\
         <dt>Stripe PaymentIntent</dt><dd><code>{pi}</code></dd>\
         <dt>Connection</dt><dd><a href=\"/dashboard/connections/{conn_seg}\"><code>{conn}</code></a></dd>\
         <dt>Error</dt><dd>{err}</dd>\
         <dt>Created</dt><dd>{created}</dd><dt>Updated</dt><dd>{updated}</dd></dl></section>\
         <div class=\"actions\">{actions}</div>\
         <h2>Refunds</h2>{refund_table}\
         <h2>Timeline</h2><ol class=\"timeline\" data-testid=\"timeline\">{timeline}</ol>",
        notice = notice(&params),
        status_badge = badge(&status),
        amount = esc(&money(&t, "amount")),
        captured = esc(&money(&t, "captured_amount")),
        refunded = esc(&money(&t, "refunded_amount")),
        intent = esc(&text(&t["intent"])),
        customid = esc(&text(&t["customid"])),
        ext = esc(&text(&t["external_identifier"])),
        pi = esc(&text(&t["additional_identifiers"]["payment_id"])),
        conn_seg = esc(&seg(&text(&t["payment_service"]["id"]))),
        conn = esc(&text(&t["payment_service"]["id"])),
        err = esc(
            [text(&t["error_code"]), text(&t["raw_response_description"])]
                .join(" ")
                .trim()
        ),
        created = esc(&when(&t["created_at"])),
        updated = esc(&when(&t["updated_at"])),
        refund_table = table(
            &[
                "Created (UTC)",
                "Status",
                "Amount",
                "Stripe refund",
                "Reason"
            ],
            &refund_rows,
            "No refunds."
        ),
    );
    let title = format!("Transaction {id}");
    page(&ctx, &s, StatusCode::OK, &title, "transactions", &body).await
}

/// An optional minor-units amount field.
fn amount_field(form: &[(String, String)], body: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(a) = param(form, "amount") {
        let n = a
            .parse::<i64>()
            .map_err(|_| bad("The amount is a whole number of minor units (1299 for 12.99)."))?;
        body.insert("amount".into(), json!(n));
    }
    Ok(())
}

pub async fn transaction_capture(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let mut body = Map::new();
    if let Err(e) = confirmed(&form).and_then(|_| amount_field(&form, &mut body)) {
        return fail(&ctx, &s, "transactions", e).await;
    }
    let done =
        crate::transactions::capture(&ctx, &super::caller(&s), &id, body.get("amount")).await;
    match done {
        Ok(_) => see_other(&format!(
            "/dashboard/transactions/{}?done=captured",
            seg(&id)
        )),
        Err(e) => fail(&ctx, &s, "transactions", e).await,
    }
}

pub async fn transaction_void(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    if let Err(e) = confirmed(&form) {
        return fail(&ctx, &s, "transactions", e).await;
    }
    let done = crate::transactions::void(&ctx, &super::caller(&s), &id).await;
    match done {
        Ok(_) => see_other(&format!("/dashboard/transactions/{}?done=voided", seg(&id))),
        Err(e) => fail(&ctx, &s, "transactions", e).await,
    }
}

pub async fn transaction_refund(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let mut body = Map::new();
    if let Err(e) = confirmed(&form).and_then(|_| amount_field(&form, &mut body)) {
        return fail(&ctx, &s, "transactions", e).await;
    }
    if let Some(r) = param(&form, "reason") {
        body.insert("reason".into(), json!(r));
    }
    let done = match api::typed::from_object(body) {
        Ok(body) => {
            api::refunds::create(
                State(ctx.clone()),
                super::caller(&s),
                Path(id.clone()),
                HeaderMap::new(),
                api::typed::Body(body),
            )
            .await
        }
        Err(e) => Err(e),
    };
    match done {
        Ok(_) => see_other(&format!(
            "/dashboard/transactions/{}?done=refunded",
            seg(&id)
        )),
        Err(e) => fail(&ctx, &s, "transactions", e).await,
    }
}
