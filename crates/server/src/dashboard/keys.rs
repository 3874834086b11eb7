//! The dashboard's API keys: the list, create (the key shown once, in the answer itself),
//! revoke. Keys have no API endpoint: these use the functions the CLI uses.

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use tollgate_store::accounts;

use super::common::{Form, Params, message_of, param};
use super::outbound::Label;
use super::session::{Session, see_other};
use super::view::{FieldErrors, Frame, REFUSED, When, render, status_of};
use crate::ApiContext;
use crate::auth::{KeyKind, new_key};
use crate::error::ApiError;

fn notice(params: &[(String, String)]) -> Option<&'static str> {
    match param(params, "done") {
        Some("key_revoked") => Some("API key revoked."),
        _ => None,
    }
}

pub struct KeyRow {
    pub id: String,
    pub kind: &'static str,
    pub name: String,
    pub account: String,
    pub created: When,
    pub revoked: When,
    pub label: Label,
}

/// A key just made, shown this once.
pub struct NewKey {
    pub id: String,
    pub full: String,
}

#[derive(Template)]
#[template(path = "dashboard/keys/list.html")]
struct KeysPage {
    frame: Frame,
    problem: Option<String>,
    shown: Option<NewKey>,
    rows: Vec<KeyRow>,
    account_name: String,
    kind: String,
    name: String,
    errors: FieldErrors,
}

impl KeysPage {
    /// Whether `field` was refused (its input gets `aria-invalid`).
    fn invalid(&self, field: &str) -> bool {
        self.errors.contains_key(field)
    }
}

/// What the create form holds (kept when it is refused).
#[derive(Default)]
struct KeyInput {
    kind: String,
    name: String,
}

#[allow(clippy::too_many_arguments)]
async fn keys_page(
    ctx: &ApiContext,
    s: &Session,
    status: StatusCode,
    notice_text: Option<&'static str>,
    problem: Option<String>,
    shown: Option<NewKey>,
    input: KeyInput,
    errors: FieldErrors,
) -> Response {
    let frame = Frame::new(ctx, s, "API keys", "keys")
        .await
        .notice(notice_text);
    let account_name = frame.account_name.clone();
    let now = ctx.now();
    let (rows, problem) = match accounts::list_api_keys(ctx.store.reader(), None).await {
        Ok(keys) => (
            keys.iter()
                .filter(|k| {
                    k.merchant_account_id.is_none()
                        || k.merchant_account_id.as_deref() == Some(s.merchant_account_id.as_str())
                })
                .rev()
                .map(|k| KeyRow {
                    id: k.id.clone(),
                    kind: if k.kind == "public" {
                        "Public (permission reads, safe in apps)"
                    } else {
                        "Secret (server-side API)"
                    },
                    name: k.display_name.clone().unwrap_or_default(),
                    account: match &k.merchant_account_id {
                        None => "Every account (operator key)".to_string(),
                        Some(_) => account_name.clone(),
                    },
                    created: When::from_ms(k.created_at, now),
                    revoked: k
                        .revoked_at
                        .map(|t| When::from_ms(t, now))
                        .unwrap_or_default(),
                    label: if k.revoked_at.is_some() {
                        Label {
                            text: "Revoked",
                            tone: "bad",
                        }
                    } else {
                        Label {
                            text: "Active",
                            tone: "ok",
                        }
                    },
                })
                .collect(),
            problem,
        ),
        Err(e) => (Vec::new(), Some(message_of(&e.into()))),
    };
    render(
        status,
        &KeysPage {
            frame,
            problem,
            shown,
            rows,
            account_name,
            kind: input.kind,
            name: input.name,
            errors,
        },
    )
}

pub async fn keys(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    keys_page(
        &ctx,
        &s,
        StatusCode::OK,
        notice(&params),
        None,
        None,
        KeyInput::default(),
        FieldErrors::new(),
    )
    .await
}

/// Creates a key with the function `tollgate keys create` uses and shows it in the answer
/// itself, once: it is not stored anywhere it could be shown from again, so this one action
/// answers with a page instead of a redirect.
pub async fn key_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let input = KeyInput {
        kind: param(&form, "kind").unwrap_or("secret").to_string(),
        name: param(&form, "display_name").unwrap_or_default().to_string(),
    };
    let mut errors = FieldErrors::new();
    let kind = match input.kind.as_str() {
        "secret" => Some(KeyKind::Secret),
        "public" => Some(KeyKind::Public),
        _ => {
            errors.insert("kind".into(), "Choose a secret or a public key.".into());
            None
        }
    };
    if input.name.chars().count() > 100 {
        errors.insert(
            "display_name".into(),
            format!(
                "The name has at most 100 characters (this one has {}).",
                input.name.chars().count()
            ),
        );
    }
    let Some(kind) = kind.filter(|_| errors.is_empty()) else {
        return keys_page(&ctx, &s, REFUSED, None, None, None, input, errors).await;
    };
    let name = (!input.name.is_empty()).then_some(input.name.as_str());
    let (row, full) = new_key(kind, Some(&s.merchant_account_id), name, ctx.now());
    if let Err(e) = accounts::insert_api_key(ctx.store.writer(), &row).await {
        let e: ApiError = e.into();
        return keys_page(
            &ctx,
            &s,
            status_of(&e),
            None,
            Some(message_of(&e)),
            None,
            input,
            FieldErrors::new(),
        )
        .await;
    }
    tracing::info!(key = %row.id, operator = %s.username, "API key created in the dashboard");
    keys_page(
        &ctx,
        &s,
        StatusCode::OK,
        None,
        None,
        Some(NewKey { id: row.id, full }),
        KeyInput::default(),
        FieldErrors::new(),
    )
    .await
}

pub async fn key_revoke(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let refused = |status: StatusCode, message: String| {
        let (ctx, s) = (ctx.clone(), s.clone());
        async move {
            keys_page(
                &ctx,
                &s,
                status,
                None,
                Some(message),
                None,
                KeyInput::default(),
                FieldErrors::new(),
            )
            .await
        }
    };
    if param(&form, "confirm") != Some("yes") {
        return refused(REFUSED, "Tick “sure” next to the key to revoke it.".into()).await;
    }
    // Only keys this session's account can see: its own and operator keys.
    let key = match accounts::get_api_key(ctx.store.reader(), &id).await {
        Ok(Some(k))
            if k.merchant_account_id.is_none()
                || k.merchant_account_id.as_deref() == Some(s.merchant_account_id.as_str()) =>
        {
            k
        }
        Ok(_) => return refused(StatusCode::NOT_FOUND, "There is no such API key.".into()).await,
        Err(e) => return refused(StatusCode::INTERNAL_SERVER_ERROR, message_of(&e.into())).await,
    };
    let now = ctx.now();
    match accounts::revoke_api_key(ctx.store.writer(), &id, now).await {
        Ok(true) => {
            // Refused from the next request on, though the key was read into the cache lately.
            crate::auth::forget_revoked(&ctx, key, now);
            tracing::info!(key = %id, operator = %s.username, "API key revoked in the dashboard");
            see_other("/dashboard/keys?done=key_revoked")
        }
        Ok(false) => {
            // Revoked by another process: this server, too, stops taking it now.
            crate::auth::forget_revoked(&ctx, key, now);
            refused(StatusCode::CONFLICT, "This key is already revoked.".into()).await
        }
        Err(e) => refused(StatusCode::INTERNAL_SERVER_ERROR, message_of(&e.into())).await,
    }
}
