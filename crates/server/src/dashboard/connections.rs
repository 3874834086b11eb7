//! The dashboard's Stripe connections: the list, add one (a refused form comes back with the
//! input kept and the message next to the field), one connection's setup steps (webhook URL,
//! events, signing secret, key permissions).

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, json};

use super::common::{Form, Params, field_errors, message_of, param, seg};
use super::outbound::{Label, problem};
use super::session::{Session, see_other};
use super::view::{FieldErrors, Frame, REFUSED, render, status_of};
use crate::ApiContext;
use crate::api;
use crate::api::connections::{ConnectionOut, ConnectionStatus};

/// The Stripe events a connection's webhook endpoint should send (SPEC §4).
pub const WEBHOOK_EVENTS: &[&str] = &[
    "charge.expired",
    "charge.refund.updated",
    "charge.refunded",
    "charge.failed",
    "charge.succeeded",
    "payment_intent.succeeded",
    "payment_intent.amount_capturable_updated",
    "payment_intent.payment_failed",
    "payment_intent.partially_funded",
    "payment_intent.canceled",
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.updated",
    "charge.dispute.created",
    "charge.dispute.closed",
    "credit_note.created",
];

fn status_label(s: ConnectionStatus) -> Label {
    match s {
        ConnectionStatus::Active => Label {
            text: "Active",
            tone: "ok",
        },
        ConnectionStatus::AwaitingWebhookSecret => Label {
            text: "Waiting for the webhook signing secret",
            tone: "wait",
        },
    }
}

fn notice(params: &[(String, String)]) -> Option<&'static str> {
    Some(match param(params, "done")? {
        "connection_created" => {
            "Connection saved. Its secret key is stored encrypted and shown masked from now on."
        }
        "webhook_secret_saved" => "Webhook signing secret saved.",
        _ => return None,
    })
}

pub struct ConnectionRow {
    pub id: String,
    pub name: String,
    pub sandbox: bool,
    pub label: Label,
    pub secret_key: String,
    pub default: bool,
}

impl ConnectionRow {
    pub fn seg(&self) -> String {
        seg(&self.id)
    }
}

/// What the add form holds (kept when it is refused).
#[derive(Default)]
pub struct ConnectionInput {
    pub display_name: String,
    pub secret_key: String,
    pub publishable_key: String,
    pub stripe_account: String,
    pub api_version: String,
    pub default: bool,
}

#[derive(Template)]
#[template(path = "dashboard/connections/list.html")]
struct ListPage {
    frame: Frame,
    problem: Option<String>,
    rows: Vec<ConnectionRow>,
    input: ConnectionInput,
    errors: FieldErrors,
}

impl ListPage {
    /// Whether `field` was refused (its input gets `aria-invalid`).
    fn invalid(&self, field: &str) -> bool {
        self.errors.contains_key(field)
    }
}

async fn list_page(
    ctx: &ApiContext,
    s: &Session,
    status: StatusCode,
    notice_text: Option<&'static str>,
    problem: Option<String>,
    input: ConnectionInput,
    errors: FieldErrors,
) -> Response {
    let frame = Frame::new(ctx, s, "Connections", "connections")
        .await
        .notice(notice_text);
    let (rows, problem) = match api::connections::list(State(ctx.clone()), super::caller(s)).await {
        Ok(j) => (
            j.0.items
                .into_iter()
                .map(|c| ConnectionRow {
                    label: status_label(c.status),
                    id: c.id,
                    name: c.display_name,
                    sandbox: c.sandbox,
                    secret_key: c.secret_key,
                    default: c.default,
                })
                .collect(),
            problem,
        ),
        Err(e) => (Vec::new(), Some(message_of(&e))),
    };
    render(
        status,
        &ListPage {
            frame,
            problem,
            rows,
            input,
            errors,
        },
    )
}

pub async fn connections(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    list_page(
        &ctx,
        &s,
        StatusCode::OK,
        notice(&params),
        None,
        ConnectionInput::default(),
        FieldErrors::new(),
    )
    .await
}

pub async fn connection_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let text = |k: &str| param(&form, k).unwrap_or_default().to_string();
    let input = ConnectionInput {
        display_name: text("display_name"),
        secret_key: text("secret_key"),
        publishable_key: text("publishable_key"),
        stripe_account: text("stripe_account"),
        api_version: text("api_version"),
        default: param(&form, "default") == Some("true"),
    };
    if input.secret_key.is_empty() {
        let mut errors = FieldErrors::new();
        errors.insert(
            "secret_key".into(),
            "Paste the Stripe secret key (sk_… or a restricted rk_… key).".into(),
        );
        return list_page(&ctx, &s, REFUSED, None, None, input, errors).await;
    }
    let mut body = Map::new();
    body.insert("type".into(), json!("stripe"));
    for (k, v) in [
        ("display_name", &input.display_name),
        ("secret_key", &input.secret_key),
        ("publishable_key", &input.publishable_key),
        ("stripe_account", &input.stripe_account),
        ("api_version", &input.api_version),
    ] {
        if !v.is_empty() {
            body.insert(k.into(), json!(v));
        }
    }
    if input.default {
        body.insert("default".into(), json!(true));
    }
    let created = match api::typed::from_object(body) {
        Ok(b) => {
            api::connections::create(State(ctx.clone()), super::caller(&s), api::typed::Body(b))
                .await
        }
        Err(e) => Err(e),
    };
    match created {
        Ok((_, j)) => see_other(&format!(
            "/dashboard/connections/{}?done=connection_created",
            seg(&j.0.id)
        )),
        Err(e) => {
            let (errors, problem) = field_errors(&e);
            list_page(&ctx, &s, status_of(&e), None, problem, input, errors).await
        }
    }
}

pub struct ReadRow {
    pub resource: String,
    pub read: Option<bool>,
    pub note: String,
}

pub struct VerifyView {
    pub credentials_valid: bool,
    pub payments_ready: bool,
    pub reads: Vec<ReadRow>,
}

#[derive(Template)]
#[template(path = "dashboard/connections/detail.html")]
struct DetailPage {
    frame: Frame,
    c: ConnectionOut,
    label: Label,
    sid: String,
    events: &'static [&'static str],
    event_csv: String,
    awaiting: bool,
    verify: Option<VerifyView>,
    verify_problem: Option<String>,
    secret_input: String,
    errors: FieldErrors,
}

impl DetailPage {
    /// Whether `field` was refused (its input gets `aria-invalid`).
    fn invalid(&self, field: &str) -> bool {
        self.errors.contains_key(field)
    }
}

async fn detail_page(
    ctx: &ApiContext,
    s: &Session,
    id: &str,
    status: StatusCode,
    params: &[(String, String)],
    secret_input: String,
    errors: FieldErrors,
) -> Response {
    let c = match api::connections::get(State(ctx.clone()), super::caller(s), Path(id.to_string()))
        .await
    {
        Ok(j) => j.0,
        Err(e) => {
            return problem(
                ctx,
                s,
                "connections",
                e,
                "/dashboard/connections",
                "All connections",
            )
            .await;
        }
    };
    let (verify, verify_problem) = if param(params, "verify").is_some() {
        match api::connections::verify(
            State(ctx.clone()),
            super::caller(s),
            Path(id.to_string()),
            api::typed::Body(Default::default()),
        )
        .await
        {
            Ok(j) => (
                Some(VerifyView {
                    credentials_valid: j.0.credentials_valid,
                    payments_ready: j.0.payments_ready,
                    reads: j
                        .0
                        .read
                        .iter()
                        .map(|r| ReadRow {
                            resource: r.resource.to_string(),
                            read: r.read,
                            note: r.note.clone().unwrap_or_default(),
                        })
                        .collect(),
                }),
                None,
            ),
            Err(e) => (None, Some(message_of(&e))),
        }
    } else {
        (None, None)
    };
    let frame = Frame::new(
        ctx,
        s,
        &format!("Connection {}", c.display_name),
        "connections",
    )
    .await
    .notice(notice(params));
    render(
        status,
        &DetailPage {
            frame,
            label: status_label(c.status),
            awaiting: c.status == ConnectionStatus::AwaitingWebhookSecret,
            sid: seg(&c.id),
            c,
            events: WEBHOOK_EVENTS,
            event_csv: WEBHOOK_EVENTS.join(","),
            verify,
            verify_problem,
            secret_input,
            errors,
        },
    )
}

pub async fn connection(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    detail_page(
        &ctx,
        &s,
        &id,
        StatusCode::OK,
        &params,
        String::new(),
        FieldErrors::new(),
    )
    .await
}

pub async fn connection_webhook_secret(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let secret = param(&form, "webhook_secret")
        .unwrap_or_default()
        .to_string();
    if secret.is_empty() {
        let mut errors = FieldErrors::new();
        errors.insert(
            "webhook_secret".into(),
            "Paste the signing secret Stripe shows for this endpoint (whsec_…).".into(),
        );
        return detail_page(&ctx, &s, &id, REFUSED, &[], secret, errors).await;
    }
    let mut body = Map::new();
    body.insert("webhook_secret".into(), json!(secret));
    let updated = match api::typed::from_object(body) {
        Ok(b) => {
            api::connections::update(
                State(ctx.clone()),
                super::caller(&s),
                Path(id.clone()),
                api::typed::Body(b),
            )
            .await
        }
        Err(e) => Err(e),
    };
    match updated {
        Ok(_) => see_other(&format!(
            "/dashboard/connections/{}?done=webhook_secret_saved",
            seg(&id)
        )),
        Err(e) => {
            let (mut errors, problem_text) = field_errors(&e);
            if let Some(p) = problem_text {
                if matches!(e, crate::error::ApiError::NotFound(_)) {
                    return problem(
                        &ctx,
                        &s,
                        "connections",
                        e,
                        "/dashboard/connections",
                        "All connections",
                    )
                    .await;
                }
                errors.insert("webhook_secret".into(), p);
            }
            detail_page(&ctx, &s, &id, status_of(&e), &[], secret, errors).await
        }
    }
}
