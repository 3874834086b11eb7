//! The dashboard's customers pages and actions.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use tollgate_store::{connections as store_conn, entitlements as es};

use super::session::{Session, see_other};
use crate::ApiContext;
use crate::api;
use crate::error::ApiError;
use crate::page::esc;


use super::common::*;

pub async fn customers(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    let merchant = s.merchant_account_id.clone();
    let mut found = String::new();
    if let Some(q) = param(&params, "q") {
        if q.starts_with("cus_") {
            // A Stripe customer: find its link on any connection of this account.
            let conns = match store_conn::list(ctx.store.reader(), Some(&merchant)).await {
                Ok(c) => c,
                Err(e) => return fail(&ctx, &s, "customers", e.into()).await,
            };
            for c in conns {
                match es::get_link(ctx.store.reader(), &c.id, q, "").await {
                    Ok(Some(link)) => {
                        return see_other(&format!("/dashboard/customers/{}", seg(&link.customid)));
                    }
                    Ok(None) => {}
                    Err(e) => return fail(&ctx, &s, "customers", e.into()).await,
                }
            }
            found = format!(
                "<p class=\"empty\">No customer is linked to the Stripe customer <code>{}</code>.</p>",
                esc(q)
            );
        } else {
            return see_other(&format!("/dashboard/customers/{}", seg(q)));
        }
    }
    let ids = match es::customids(ctx.store.reader(), &merchant).await {
        Ok(ids) => ids,
        Err(e) => return fail(&ctx, &s, "customers", e.into()).await,
    };
    let list: String = ids
        .iter()
        .take(200)
        .map(|c| {
            format!(
                "<li><a href=\"/dashboard/customers/{}\">{}</a></li>",
                esc(&seg(c)),
                esc(c)
            )
        })
        .collect();
    let body = format!(
        "<form method=\"get\" action=\"/dashboard/customers\" class=\"filters\" role=\"search\">\
         <label>customid or Stripe customer (<code>cus_…</code>) <input name=\"q\" value=\"{q}\" required></label>\
         <button type=\"submit\">Find</button></form>{found}\
         <h2>Known customers</h2>{list}",
        q = esc(param(&params, "q").unwrap_or_default()),
        list = if list.is_empty() {
            "<p class=\"empty\">No customers yet.</p>".to_string()
        } else {
            format!("<ul class=\"customers\">{list}</ul>")
        },
    );
    page(&ctx, &s, StatusCode::OK, "Customers", "customers", &body).await
}

pub async fn customer(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(customid): Path<String>,
) -> Response {
    let sub = match api::entitlements::subscriber(
        State(ctx.clone()),
        super::caller(&s),
        Path(customid.clone()),
    )
    .await
    {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(ApiError::NotFound(_)) => {
            let body = format!(
                "<p class=\"empty\">Nothing is known about the customer <code>{}</code> yet: no linked Stripe customer, purchase or permission.</p>",
                esc(&customid)
            );
            return page(
                &ctx,
                &s,
                StatusCode::NOT_FOUND,
                "Customer",
                "customers",
                &body,
            )
            .await;
        }
        Err(e) => return fail(&ctx, &s, "customers", e).await,
    };
    let rows = |key: &str, f: &dyn Fn(&Value) -> String| -> Vec<String> {
        sub[key]
            .as_array()
            .map(|items| items.iter().map(f).collect())
            .unwrap_or_default()
    };
    let yes = |v: &Value| {
        if v.as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    let linked = rows("stripe_customers", &|c| {
        format!(
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&text(&c["id"])),
            esc(&text(&c["connection_id"])),
            esc(&text(&c["linked_by"])),
            esc(&when(&c["linked_at"]))
        )
    });
    let perms = rows("permissions", &|p| {
        let skus: Vec<String> = p["skuarray"]
            .as_array()
            .map(|a| a.iter().map(|x| text(&x["identifier"])).collect())
            .unwrap_or_default();
        format!(
            "<tr><td><strong>{}</strong></td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text(&p["identifier"])),
            yes(&p["is_valid"]),
            esc(&text(&p["entitlement"])),
            esc(&when(&p["expires_at"])),
            esc(&skus.join(", "))
        )
    });
    let purchases = rows("purchases", &|p| {
        format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text(&p["id"])),
            esc(&text(&p["object"])),
            esc(&text(&p["sku"])),
            yes(&p["is_valid"]),
            esc(&text(&p["entitlement"])),
            esc(&when(&p["expires_at"])),
            yes(&p["istrial"])
        )
    });
    let path = format!("/dashboard/customers/{}", seg(&customid));
    let csrf = csrf_input(&s);
    let grants = rows("grants", &|g| {
        let action = if g["revoked_at"].is_null() {
            format!(
                "<form method=\"post\" action=\"{}/grants/{}/revoke\">{csrf}\
                 <label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> sure</label> \
                 <button type=\"submit\">Revoke</button></form>",
                esc(&path),
                esc(&seg(&text(&g["id"])))
            )
        } else {
            format!(
                "revoked {} by {}",
                esc(&when(&g["revoked_at"])),
                esc(&text(&g["revoked_by"]))
            )
        };
        format!(
            "<tr><td><strong>{}</strong></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text(&g["permission"])),
            esc(&when(&g["starts_at"])),
            esc(&when(&g["expires_at"])),
            esc(&text(&g["reason"])),
            esc(&text(&g["created_by"])),
            action
        )
    });
    let grant_form = format!(
        "<form method=\"post\" action=\"{p}/grants\" class=\"filters\">{csrf}\
         <label>Permission <input name=\"permission\" required></label>\
         <label>Until (UTC, empty: no end) <input type=\"datetime-local\" name=\"expires_at\"></label>\
         <label>Reason <input name=\"reason\" required maxlength=\"500\"></label>\
         <button type=\"submit\">Grant</button></form>",
        p = esc(&path)
    );
    let body = format!(
        "<p><a href=\"/dashboard/transactions?customid={cq}\">Transactions of this customer</a></p>\
         <h2>Permissions</h2>{perms}\
         <p class=\"hint\">Entitlement codes: 3 lifetime, 5 renewing, 4 canceling, 2 granted by hand, 1 grace, 0 incomplete, \
         -1 grace over, -2 payment failed, -5 expired, -8 revoked, -9 never, -10 paused.</p>\
         <h2>Grants</h2>{grants}<h3>Grant a permission</h3>{grant_form}\
         <h2>Linked Stripe customers</h2>{linked}<h2>Purchase history</h2>{purchases}\
         <p class=\"hint\">Evaluated at {at}.</p>",
        grants = table(
            &[
                "Permission",
                "From (UTC)",
                "Until (UTC)",
                "Reason",
                "Given by",
                ""
            ],
            &grants,
            "No grants."
        ),
        cq = esc(&form_urlencoded::byte_serialize(customid.as_bytes()).collect::<String>()),
        perms = table(
            &[
                "Permission",
                "Valid",
                "Entitlement",
                "Expires (UTC)",
                "SKUs"
            ],
            &perms,
            "No permissions."
        ),
        linked = table(
            &[
                "Stripe customer",
                "Connection",
                "Linked by",
                "Linked at (UTC)"
            ],
            &linked,
            "No linked Stripe customers."
        ),
        purchases = table(
            &[
                "Stripe object",
                "Kind",
                "SKU",
                "Valid",
                "Entitlement",
                "Expires (UTC)",
                "Trial"
            ],
            &purchases,
            "No purchases."
        ),
        at = esc(&when(&sub["evaluated_at"])),
    );
    let title = format!("Customer {customid}");
    page(&ctx, &s, StatusCode::OK, &title, "customers", &body).await
}

/// The dashboard's grant: given by the operator of the session.
pub async fn grant_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(customid): Path<String>,
    axum::Form(form): Form,
) -> Response {
    // `datetime-local` sends `2026-12-31T00:00`: UTC, seconds added.
    let expires_at = param(&form, "expires_at").map(|t| match t.len() {
        16 => format!("{t}:00Z"),
        _ => t.to_string(),
    });
    let body = api::entitlements::GrantCreate {
        permission: param(&form, "permission").unwrap_or_default().to_string(),
        expires_at,
        reason: param(&form, "reason").unwrap_or_default().to_string(),
    };
    let created_by = format!("operator:{}", s.username);
    match api::entitlements::grant(&ctx, &s.merchant_account_id, &customid, body, created_by).await
    {
        Ok(g) => {
            tracing::info!(grant = %g.id, operator = %s.username, "permission granted in the dashboard");
            see_other(&format!("/dashboard/customers/{}", seg(&customid)))
        }
        Err(e) => fail(&ctx, &s, "customers", e).await,
    }
}

pub async fn grant_revoke(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path((customid, id)): Path<(String, String)>,
    axum::Form(form): Form,
) -> Response {
    if let Err(e) = confirmed(&form) {
        return fail(&ctx, &s, "customers", e).await;
    }
    let by = format!("operator:{}", s.username);
    match api::entitlements::revoke(&ctx, &s.merchant_account_id, &customid, &id, &by).await {
        Ok(_) => {
            tracing::info!(grant = %id, operator = %s.username, "grant revoked in the dashboard");
            see_other(&format!("/dashboard/customers/{}", seg(&customid)))
        }
        Err(e) => fail(&ctx, &s, "customers", e).await,
    }
}

// ---- catalogue -------------------------------------------------------------------------------
