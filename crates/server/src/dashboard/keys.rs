//! The dashboard's keys pages and actions.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use tollgate_store::accounts;

use super::session::{Session, see_other};
use crate::ApiContext;
use crate::auth::{KeyKind, new_key};
use crate::error::ApiError;
use crate::page::esc;


use super::common::*;

async fn keys_page(
    ctx: &ApiContext,
    s: &Session,
    params: &[(String, String)],
    created: Option<(String, String)>,
) -> Response {
    let keys = match accounts::list_api_keys(ctx.store.reader(), None).await {
        Ok(k) => k,
        Err(e) => return fail(ctx, s, "keys", e.into()).await,
    };
    let csrf = csrf_input(s);
    let rows: Vec<String> = keys
        .iter()
        .filter(|k| {
            k.merchant_account_id.is_none()
                || k.merchant_account_id.as_deref() == Some(s.merchant_account_id.as_str())
        })
        .rev()
        .map(|k| {
            let action = if k.revoked_at.is_some() {
                String::new()
            } else {
                format!(
                    "<form method=\"post\" action=\"/dashboard/keys/{}/revoke\" class=\"inline\">{csrf}{}\
                     <button type=\"submit\" class=\"danger\">Revoke</button></form>",
                    esc(&seg(&k.id)),
                    confirm_box("sure")
                )
            };
            format!(
                "<tr data-key-id=\"{id}\"><td><code>{id}</code></td><td>{kind}</td><td>{name}</td><td>{acct}</td>\
                 <td>{created}</td><td>{status}</td><td>{action}</td></tr>",
                id = esc(&k.id),
                kind = esc(&k.kind),
                name = esc(k.display_name.as_deref().unwrap_or_default()),
                acct = esc(k.merchant_account_id.as_deref().unwrap_or("all accounts")),
                created = esc(&when(&json!(crate::clock::rfc3339(k.created_at)))),
                status = if k.revoked_at.is_some() { badge("revoked") } else { badge("active") },
            )
        })
        .collect();
    let shown = match created {
        Some((id, full)) => format!(
            "<section class=\"card shown-once\" role=\"status\"><h2>New key {}</h2>\
             <p><strong>Copy it now: it is shown only this once</strong> (only its hash is stored).</p>\
             <div class=\"copy-row\"><input id=\"new-key\" data-testid=\"new-key\" readonly value=\"{}\">\
             <button type=\"button\" data-copy=\"#new-key\">Copy</button></div></section>",
            esc(&id),
            esc(&full)
        ),
        None => String::new(),
    };
    let body = format!(
        "{notice}{shown}{table}\
         <form method=\"post\" action=\"/dashboard/keys\" class=\"card stack\">{csrf}<h3>New API key</h3>\
         <label>Kind <select name=\"kind\"><option value=\"secret\">secret (server-side API)</option>\
         <option value=\"public\">public (permission reads, safe in apps)</option></select></label>\
         <label>Name <input name=\"display_name\" maxlength=\"100\"></label>\
         <p class=\"hint\">The key is bound to the merchant account <code>{acct}</code>.</p>\
         <button type=\"submit\">Create key</button></form>",
        notice = notice(params),
        table = table(
            &[
                "Id",
                "Kind",
                "Name",
                "Account",
                "Created (UTC)",
                "Status",
                ""
            ],
            &rows,
            "No API keys."
        ),
        acct = esc(&s.merchant_account_id),
    );
    page(ctx, s, StatusCode::OK, "API keys", "keys", &body).await
}

pub async fn keys(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    keys_page(&ctx, &s, &params, None).await
}

/// Creates a key with the function `tollgate keys create` uses and shows it in the answer
/// itself, once: it is not stored anywhere it could be shown from again, so this one action
/// answers with a page instead of a redirect.
pub async fn key_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let kind = match param(&form, "kind") {
        Some("secret") | None => KeyKind::Secret,
        Some("public") => KeyKind::Public,
        Some(_) => return fail(&ctx, &s, "keys", bad("The kind is secret or public.")).await,
    };
    let name = param(&form, "display_name");
    if name.is_some_and(|n| n.chars().count() > 100) {
        return fail(
            &ctx,
            &s,
            "keys",
            bad("The name has at most 100 characters."),
        )
        .await;
    }
    let (row, full) = new_key(kind, Some(&s.merchant_account_id), name, ctx.now());
    if let Err(e) = accounts::insert_api_key(ctx.store.writer(), &row).await {
        return fail(&ctx, &s, "keys", e.into()).await;
    }
    tracing::info!(key = %row.id, operator = %s.username, "API key created in the dashboard");
    keys_page(&ctx, &s, &[], Some((row.id, full))).await
}

pub async fn key_revoke(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    if let Err(e) = confirmed(&form) {
        return fail(&ctx, &s, "keys", e).await;
    }
    // Only keys this session's account can see: its own and operator keys.
    let visible = match accounts::get_api_key(ctx.store.reader(), &id).await {
        Ok(Some(k)) => {
            k.merchant_account_id.is_none()
                || k.merchant_account_id.as_deref() == Some(s.merchant_account_id.as_str())
        }
        Ok(None) => false,
        Err(e) => return fail(&ctx, &s, "keys", e.into()).await,
    };
    if !visible {
        return fail(&ctx, &s, "keys", ApiError::not_found("API key")).await;
    }
    match accounts::revoke_api_key(ctx.store.writer(), &id, ctx.now()).await {
        Ok(true) => {
            tracing::info!(key = %id, operator = %s.username, "API key revoked in the dashboard");
            see_other("/dashboard/keys?done=key_revoked")
        }
        Ok(false) => fail(&ctx, &s, "keys", bad("This key is already revoked.")).await,
        Err(e) => fail(&ctx, &s, "keys", e.into()).await,
    }
}
