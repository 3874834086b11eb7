//! The dashboard's catalogue pages and actions.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, json};

use super::session::{Session, see_other};
use crate::ApiContext;
use crate::api;
use crate::page::esc;


use super::common::*;

pub async fn catalogue(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    let skus = match api::entitlements::sku_list(State(ctx.clone()), super::caller(&s)).await {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "catalogue", e).await,
    };
    let defs = match api::definitions::definition_list(State(ctx.clone()), super::caller(&s)).await
    {
        Ok(j) => serde_json::to_value(&j.0).unwrap_or_default(),
        Err(e) => return fail(&ctx, &s, "catalogue", e).await,
    };
    let csrf = csrf_input(&s);
    let sku_ids: Vec<String> = skus["items"]
        .as_array()
        .map(|a| a.iter().map(|x| text(&x["identifier"])).collect())
        .unwrap_or_default();
    let kinds = |current: &str| -> String {
        ["subscription", "one_time"]
            .iter()
            .map(|k| {
                format!(
                    "<option value=\"{k}\"{}>{k}</option>",
                    if *k == current { " selected" } else { "" }
                )
            })
            .collect()
    };
    let sku_rows: Vec<String> = skus["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|k| {
                    let id = text(&k["identifier"]);
                    format!(
                        "<tr><td><strong>{idt}</strong></td><td colspan=\"2\">\
                         <form method=\"post\" action=\"/dashboard/skus/{ids}\" class=\"inline\">{csrf}\
                         <input name=\"product_id\" value=\"{prod}\" aria-label=\"Product id of {idt}\" required>\
                         <select name=\"kind\" aria-label=\"Kind of {idt}\">{kinds}</select>\
                         <button type=\"submit\">Save</button></form></td></tr>",
                        idt = esc(&id),
                        ids = esc(&seg(&id)),
                        prod = esc(&text(&k["product_id"])),
                        kinds = kinds(&text(&k["kind"])),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let checkboxes = |chosen: &[String]| -> String {
        if sku_ids.is_empty() {
            return "<span class=\"hint\">(create a SKU first)</span>".into();
        }
        sku_ids
            .iter()
            .map(|k| {
                format!(
                    "<label class=\"check\"><input type=\"checkbox\" name=\"skus\" value=\"{v}\"{c}> {v}</label>",
                    v = esc(k),
                    c = if chosen.contains(k) { " checked" } else { "" }
                )
            })
            .collect()
    };
    let def_rows: Vec<String> = defs["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|d| {
                    let id = text(&d["identifier"]);
                    let chosen: Vec<String> = d["skus"]
                        .as_array()
                        .map(|a| a.iter().map(text).collect())
                        .unwrap_or_default();
                    format!(
                        "<tr><td><strong>{idt}</strong></td><td>\
                         <form method=\"post\" action=\"/dashboard/permissions/{ids}\" class=\"inline\">{csrf}\
                         {boxes}<button type=\"submit\">Save</button></form></td></tr>",
                        idt = esc(&id),
                        ids = esc(&seg(&id)),
                        boxes = checkboxes(&chosen),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let body = format!(
        "{notice}<h2>SKUs</h2>{sku_table}\
         <form method=\"post\" action=\"/dashboard/skus\" class=\"card stack\">{csrf}<h3>New SKU</h3>\
         <label>Identifier <input name=\"identifier\" required pattern=\"[A-Za-z0-9._-]{{1,100}}\"></label>\
         <label>Stripe product (<code>prod_…</code>) <input name=\"product_id\" required></label>\
         <label>Kind <select name=\"kind\">{kinds}</select></label>\
         <button type=\"submit\">Create SKU</button></form>\
         <h2>Permissions</h2>{def_table}\
         <form method=\"post\" action=\"/dashboard/permissions\" class=\"card stack\">{csrf}<h3>New permission</h3>\
         <label>Identifier <input name=\"identifier\" required pattern=\"[A-Za-z0-9._-]{{1,100}}\"></label>\
         <fieldset><legend>Granted by holding any of these SKUs</legend>{boxes}</fieldset>\
         <button type=\"submit\">Create permission</button></form>",
        notice = notice(&params),
        sku_table = table(&["SKU", "Product", ""], &sku_rows, "No SKUs yet."),
        def_table = table(&["Permission", "SKUs"], &def_rows, "No permissions yet."),
        kinds = kinds("subscription"),
        boxes = checkboxes(&[]),
    );
    page(&ctx, &s, StatusCode::OK, "Catalogue", "catalogue", &body).await
}

pub async fn sku_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let mut body = Map::new();
    body.insert("store".into(), json!("stripe"));
    for k in ["identifier", "product_id", "kind"] {
        if let Some(v) = param(&form, k) {
            body.insert(k.into(), json!(v));
        }
    }
    let body = match api::typed::from_object(body) {
        Ok(b) => b,
        Err(e) => return fail(&ctx, &s, "catalogue", e).await,
    };
    match api::entitlements::sku_create(
        State(ctx.clone()),
        super::caller(&s),
        api::typed::Body(body),
    )
    .await
    {
        Ok(_) => see_other("/dashboard/catalogue?done=sku_saved"),
        Err(e) => fail(&ctx, &s, "catalogue", e).await,
    }
}

pub async fn sku_update(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let mut body = Map::new();
    for k in ["product_id", "kind"] {
        if let Some(v) = param(&form, k) {
            body.insert(k.into(), json!(v));
        }
    }
    let body = match api::typed::from_object(body) {
        Ok(b) => b,
        Err(e) => return fail(&ctx, &s, "catalogue", e).await,
    };
    match api::entitlements::sku_update(
        State(ctx.clone()),
        super::caller(&s),
        Path(id),
        api::typed::Body(body),
    )
    .await
    {
        Ok(_) => see_other("/dashboard/catalogue?done=sku_saved"),
        Err(e) => fail(&ctx, &s, "catalogue", e).await,
    }
}

pub async fn permission_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let mut body = Map::new();
    if let Some(v) = param(&form, "identifier") {
        body.insert("identifier".into(), json!(v));
    }
    body.insert("skus".into(), json!(all(&form, "skus")));
    let body = match crate::api::typed::from_object(body) {
        Ok(b) => b,
        Err(e) => return fail(&ctx, &s, "catalogue", e).await,
    };
    match api::definitions::definition_create(
        State(ctx.clone()),
        super::caller(&s),
        crate::api::typed::Body(body),
    )
    .await
    {
        Ok(_) => see_other("/dashboard/catalogue?done=permission_saved"),
        Err(e) => fail(&ctx, &s, "catalogue", e).await,
    }
}

pub async fn permission_update(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let mut body = Map::new();
    body.insert("skus".into(), json!(all(&form, "skus")));
    let body = match crate::api::typed::from_object(body) {
        Ok(b) => b,
        Err(e) => return fail(&ctx, &s, "catalogue", e).await,
    };
    match api::definitions::definition_update(
        State(ctx.clone()),
        super::caller(&s),
        Path(id),
        crate::api::typed::Body(body),
    )
    .await
    {
        Ok(_) => see_other("/dashboard/catalogue?done=permission_saved"),
        Err(e) => fail(&ctx, &s, "catalogue", e).await,
    }
}

// ---- API keys --------------------------------------------------------------------------------
