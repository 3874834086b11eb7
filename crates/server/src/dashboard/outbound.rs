//! The dashboard's outbound webhooks: the endpoints (webhook subscriptions) with their last
//! delivery and failure streak; create, disable or enable, rotate the signing secret (shown
//! once), send a test event; the delivery log with its status filter, one delivery, resend.
//! Everything goes through the webhook-subscriptions API's own functions.

use std::collections::HashMap;

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, json};
use tollgate_store::outbox;

use super::common::{Form, Params, field_errors, message_of, param, query_string, seg};
use super::session::{Session, see_other};
use super::view::{FieldErrors, Frame, REFUSED, When, render, status_of};
use crate::ApiContext;
use crate::api;
use crate::api::webhooks_out::{
    DeliveryListQuery, KnownParams, NoBody, SubscriptionListQuery, SubscriptionUpdate,
    WebhookDeliveryOut, WebhookSubscriptionOut,
};
use crate::error::ApiError;

/// The fixed texts of this area's `?done=…` notices (fixed, so a link cannot put words on the
/// page).
fn notice(params: &[(String, String)]) -> Option<&'static str> {
    Some(match param(params, "done")? {
        "disabled" => "Endpoint disabled: it gets no new events until it is enabled again.",
        "enabled" => "Endpoint enabled.",
        "test_sent" => "Test event sent: it is delivered through the outbox like any event.",
        "resent" => "The delivery was queued to be sent again.",
        _ => return None,
    })
}

/// A status as people read it, with the colour that says what it means.
pub struct Label {
    pub text: &'static str,
    /// `ok` (green), `wait` (amber), `bad` (red), `off` (grey).
    pub tone: &'static str,
}

/// A delivery's status: still retrying is not a failure yet.
pub fn delivery_label(status: &str, attempts: i64) -> Label {
    match status {
        "delivered" => Label {
            text: "Delivered",
            tone: "ok",
        },
        "failed" => Label {
            text: "Retrying",
            tone: "wait",
        },
        "dead" => Label {
            text: "Failed",
            tone: "bad",
        },
        _ if attempts > 0 => Label {
            text: "Sending again",
            tone: "wait",
        },
        _ => Label {
            text: "Queued",
            tone: "wait",
        },
    }
}

/// The delivery statuses of the filter: the API's value and its label.
const DELIVERY_FILTER: &[(&str, &str)] = &[
    ("pending", "Queued"),
    ("failed", "Retrying"),
    ("delivered", "Delivered"),
    ("dead", "Failed"),
];

// ---- the endpoints ----------------------------------------------------------------------------

pub struct EventChoice {
    pub value: String,
    pub label: String,
    pub checked: bool,
}

pub struct EventGroup {
    pub all: EventChoice,
    pub events: Vec<EventChoice>,
}

pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub description: String,
    pub events: String,
    pub active: bool,
    pub last_when: When,
    pub last_outcome: String,
    pub last_ok: bool,
    pub streak: i64,
    pub rotating_until: When,
    pub secret_hint: String,
}

impl EndpointRow {
    pub fn seg(&self) -> String {
        seg(&self.id)
    }
}

pub struct ShownSecret {
    pub heading: String,
    pub secret: String,
    pub note: &'static str,
}

#[derive(Template)]
#[template(path = "dashboard/outbound/endpoints.html")]
struct EndpointsPage {
    frame: Frame,
    shown: Option<ShownSecret>,
    problem: Option<String>,
    rows: Vec<EndpointRow>,
    every: EventChoice,
    groups: Vec<EventGroup>,
    url: String,
    description: String,
    errors: FieldErrors,
}

impl EndpointsPage {
    /// Whether `field` was refused (its input gets `aria-invalid`).
    fn invalid(&self, field: &str) -> bool {
        self.errors.contains_key(field)
    }
}

/// What the create form holds (kept when it is refused).
#[derive(Default)]
struct CreateInput {
    url: String,
    events: Vec<String>,
    description: String,
}

fn event_choices(chosen: &[String]) -> (EventChoice, Vec<EventGroup>) {
    let choice = |value: String, label: String| EventChoice {
        checked: chosen.contains(&value),
        value,
        label,
    };
    let every = choice("*".into(), "Every event".into());
    let groups = outbox::EVENT_GROUPS
        .iter()
        .map(|g| EventGroup {
            all: choice(format!("{g}.*"), format!("Every {g} event")),
            events: outbox::EVENT_NAMES
                .iter()
                .filter(|n| n.strip_prefix(g).is_some_and(|r| r.starts_with('.')))
                .map(|n| choice(n.to_string(), n.to_string()))
                .collect(),
        })
        .collect();
    (every, groups)
}

fn events_words(events: &[String]) -> String {
    if events.iter().any(|e| e == "*") {
        return "Every event".into();
    }
    events
        .iter()
        .map(|e| match e.strip_suffix(".*") {
            Some(g) => format!("every {g} event"),
            None => e.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn endpoint_rows(ctx: &ApiContext, s: &Session) -> Result<Vec<EndpointRow>, ApiError> {
    let listed = api::webhooks_out::list_subscriptions(
        State(ctx.clone()),
        super::caller(s),
        KnownParams(SubscriptionListQuery {
            cursor: None,
            limit: Some("100".into()),
        }),
    )
    .await?
    .0;
    let now = ctx.now();
    let mut rows = Vec::with_capacity(listed.items.len());
    for sub in listed.items {
        let health =
            outbox::endpoint_health(ctx.store.reader(), &s.merchant_account_id, &sub.id).await?;
        let (last_when, last_outcome, last_ok) = match &health.last_attempt {
            Some(a) => {
                let ok = a.status_code.is_some_and(|c| (200..300).contains(&c));
                let outcome = match (a.status_code, &a.error) {
                    (Some(c), _) if ok => format!("Delivered (HTTP {c})"),
                    (Some(c), _) => format!("Refused (HTTP {c})"),
                    (None, Some(e)) => format!("No answer: {e}"),
                    (None, None) => "No answer".into(),
                };
                (When::from_ms(a.attempted_at, now), outcome, ok)
            }
            None => (When::default(), "Nothing sent yet".into(), false),
        };
        rows.push(endpoint_row(
            sub,
            health.failure_streak,
            last_when,
            last_outcome,
            last_ok,
            now,
        ));
    }
    Ok(rows)
}

fn endpoint_row(
    sub: WebhookSubscriptionOut,
    streak: i64,
    last_when: When,
    last_outcome: String,
    last_ok: bool,
    now: i64,
) -> EndpointRow {
    EndpointRow {
        events: events_words(&sub.events),
        description: sub.description.unwrap_or_default(),
        active: sub.active,
        last_when,
        last_outcome,
        last_ok,
        streak,
        rotating_until: When::opt_rfc3339(sub.previous_secret_expires_at.as_deref(), now),
        secret_hint: sub.secret_hint,
        url: sub.url,
        id: sub.id,
    }
}

#[allow(clippy::too_many_arguments)]
async fn endpoints_page(
    ctx: &ApiContext,
    s: &Session,
    status: StatusCode,
    notice_text: Option<&'static str>,
    shown: Option<ShownSecret>,
    problem: Option<String>,
    input: CreateInput,
    errors: FieldErrors,
) -> Response {
    let frame = Frame::new(ctx, s, "Outbound webhooks", "outbound")
        .await
        .notice(notice_text);
    let (rows, problem) = match endpoint_rows(ctx, s).await {
        Ok(rows) => (rows, problem),
        Err(e) => (Vec::new(), Some(message_of(&e))),
    };
    let (every, groups) = event_choices(&input.events);
    render(
        status,
        &EndpointsPage {
            frame,
            shown,
            problem,
            rows,
            every,
            groups,
            url: input.url,
            description: input.description,
            errors,
        },
    )
}

pub async fn endpoints(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    endpoints_page(
        &ctx,
        &s,
        StatusCode::OK,
        notice(&params),
        None,
        None,
        CreateInput::default(),
        FieldErrors::new(),
    )
    .await
}

/// Creates an endpoint and answers with the page showing its signing secret, once (it is not
/// stored anywhere it could be shown from again).
pub async fn endpoint_create(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    axum::Form(form): Form,
) -> Response {
    let input = CreateInput {
        url: param(&form, "url").unwrap_or_default().to_string(),
        events: form
            .iter()
            .filter(|(k, v)| k == "events" && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_string())
            .collect(),
        description: param(&form, "description").unwrap_or_default().to_string(),
    };
    let mut errors = FieldErrors::new();
    if input.url.is_empty() {
        errors.insert(
            "url".into(),
            "Enter the URL Tollgate should send events to.".into(),
        );
    }
    if input.events.is_empty() {
        errors.insert(
            "events".into(),
            "Choose the events to send (or “Every event”).".into(),
        );
    }
    if !errors.is_empty() {
        return endpoints_page(&ctx, &s, REFUSED, None, None, None, input, errors).await;
    }
    let mut body = Map::new();
    body.insert("url".into(), json!(input.url));
    body.insert("events".into(), json!(input.events));
    if !input.description.is_empty() {
        body.insert("description".into(), json!(input.description));
    }
    let made = match api::typed::from_object(body) {
        Ok(b) => api::webhooks_out::subscribe(&ctx, &super::caller(&s), b).await,
        Err(e) => Err(e),
    };
    match made {
        Ok(sub) => {
            tracing::info!(subscription = %sub.id, operator = %s.username, "webhook endpoint created in the dashboard");
            let shown = sub.secret.clone().map(|secret| ShownSecret {
                heading: format!("Endpoint {} created", sub.url),
                secret,
                note: "Tollgate signs every delivery with it (Standard Webhooks): your endpoint verifies the signature with it.",
            });
            endpoints_page(
                &ctx,
                &s,
                StatusCode::OK,
                None,
                shown,
                None,
                CreateInput::default(),
                FieldErrors::new(),
            )
            .await
        }
        Err(e) => {
            let (errors, problem) = field_errors(&e);
            endpoints_page(&ctx, &s, status_of(&e), None, None, problem, input, errors).await
        }
    }
}

/// An action's failure: the endpoints page again, with the message.
async fn action_failed(ctx: &ApiContext, s: &Session, e: ApiError) -> Response {
    let status = status_of(&e);
    endpoints_page(
        ctx,
        s,
        status,
        None,
        None,
        Some(message_of(&e)),
        CreateInput::default(),
        FieldErrors::new(),
    )
    .await
}

pub async fn endpoint_active(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    axum::Form(form): Form,
) -> Response {
    let active = match param(&form, "active") {
        Some("true") => true,
        Some("false") => false,
        _ => {
            let e = ApiError::bad_request("Choose to enable or to disable the endpoint.");
            return action_failed(&ctx, &s, e).await;
        }
    };
    let update = SubscriptionUpdate {
        active: Some(active),
        ..Default::default()
    };
    match api::webhooks_out::update_subscription(
        State(ctx.clone()),
        super::caller(&s),
        Path(id),
        api::typed::Body(update),
    )
    .await
    {
        Ok(_) => see_other(if active {
            "/dashboard/outbound?done=enabled"
        } else {
            "/dashboard/outbound?done=disabled"
        }),
        Err(e) => action_failed(&ctx, &s, e).await,
    }
}

pub async fn endpoint_rotate(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match api::webhooks_out::rotate(&ctx, &super::caller(&s), &id).await {
        Ok(sub) => {
            tracing::info!(subscription = %sub.id, operator = %s.username, "webhook secret rotated in the dashboard");
            let shown = sub.secret.clone().map(|secret| ShownSecret {
                heading: format!("New signing secret for {}", sub.url),
                secret,
                note: "For the next 24 hours every delivery carries signatures with both the previous and this secret, so your endpoint can switch without losing an event.",
            });
            endpoints_page(
                &ctx,
                &s,
                StatusCode::OK,
                None,
                shown,
                None,
                CreateInput::default(),
                FieldErrors::new(),
            )
            .await
        }
        Err(e) => action_failed(&ctx, &s, e).await,
    }
}

pub async fn endpoint_test(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match api::webhooks_out::send_test(
        State(ctx.clone()),
        super::caller(&s),
        Path(id),
        api::typed::Body(NoBody {}),
    )
    .await
    {
        Ok((_, d)) => see_other(&format!(
            "/dashboard/outbound/deliveries/{}?done=test_sent",
            seg(&d.0.id)
        )),
        Err(e) => action_failed(&ctx, &s, e).await,
    }
}

// ---- deliveries -------------------------------------------------------------------------------

pub struct DeliveryRow {
    pub id: String,
    pub event_name: String,
    pub endpoint: String,
    pub label: Label,
    pub attempts: i64,
    pub created: When,
    pub next: When,
    pub last: String,
}

impl DeliveryRow {
    pub fn seg(&self) -> String {
        seg(&self.id)
    }
}

pub struct FilterOption {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

pub struct EndpointOption {
    pub id: String,
    pub url: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "dashboard/outbound/deliveries.html")]
struct DeliveriesPage {
    frame: Frame,
    problem: Option<String>,
    statuses: Vec<FilterOption>,
    endpoints: Vec<EndpointOption>,
    rows: Vec<DeliveryRow>,
    newer: Option<String>,
    older: Option<String>,
}

fn last_words(d: &WebhookDeliveryOut) -> String {
    match (d.last_status_code, &d.last_error) {
        (_, Some(e)) if d.status != "delivered" => e.clone(),
        (Some(c), _) => format!("HTTP {c}"),
        _ => String::new(),
    }
}

pub async fn deliveries(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    let frame = Frame::new(&ctx, &s, "Outbound deliveries", "outbound")
        .await
        .notice(notice(&params));
    let status = param(&params, "status").map(str::to_string);
    let endpoint = param(&params, "subscription_id").map(str::to_string);
    let mut filters: Vec<(&str, String)> = Vec::new();
    if let Some(v) = &status {
        filters.push(("status", v.clone()));
    }
    if let Some(v) = &endpoint {
        filters.push(("subscription_id", v.clone()));
    }
    let caller = super::caller(&s);
    let subs = api::webhooks_out::list_subscriptions(
        State(ctx.clone()),
        caller.clone(),
        KnownParams(SubscriptionListQuery {
            cursor: None,
            limit: Some("100".into()),
        }),
    )
    .await
    .map(|j| j.0.items)
    .unwrap_or_default();
    let urls: HashMap<String, String> =
        subs.iter().map(|s| (s.id.clone(), s.url.clone())).collect();
    let listed = api::webhooks_out::list_deliveries(
        State(ctx.clone()),
        caller,
        KnownParams(DeliveryListQuery {
            cursor: param(&params, "cursor").map(str::to_string),
            limit: Some("25".into()),
            status: status.iter().cloned().collect(),
            subscription_id: endpoint.clone(),
            event_name: Vec::new(),
            event_id: None,
        }),
    )
    .await;
    let now = ctx.now();
    let mut code = StatusCode::OK;
    let (rows, problem, newer, older) = match listed {
        Ok(page) => {
            let page = page.0;
            let link = |c: &Option<String>| {
                c.as_ref().map(|c| {
                    let mut pairs = filters.clone();
                    pairs.push(("cursor", c.clone()));
                    format!("/dashboard/outbound/deliveries?{}", query_string(&pairs))
                })
            };
            let (newer, older) = (link(&page.previous_cursor), link(&page.next_cursor));
            let rows = page
                .items
                .iter()
                .map(|d| DeliveryRow {
                    id: d.id.clone(),
                    event_name: d.event_name.clone(),
                    endpoint: urls
                        .get(&d.subscription_id)
                        .cloned()
                        .unwrap_or_else(|| "(deleted endpoint)".into()),
                    label: delivery_label(&d.status, d.attempts),
                    attempts: d.attempts,
                    created: When::from_rfc3339(&d.created_at, now),
                    next: When::opt_rfc3339(d.next_attempt_at.as_deref(), now),
                    last: last_words(d),
                })
                .collect();
            (rows, None, newer, older)
        }
        Err(e) => {
            code = status_of(&e);
            (Vec::new(), Some(message_of(&e)), None, None)
        }
    };
    render(
        code,
        &DeliveriesPage {
            frame,
            problem,
            statuses: DELIVERY_FILTER
                .iter()
                .map(|(value, label)| FilterOption {
                    value,
                    label,
                    selected: status.as_deref() == Some(*value),
                })
                .collect(),
            endpoints: subs
                .iter()
                .map(|sub| EndpointOption {
                    id: sub.id.clone(),
                    url: sub.url.clone(),
                    selected: endpoint.as_deref() == Some(sub.id.as_str()),
                })
                .collect(),
            rows,
            newer,
            older,
        },
    )
}

pub struct AttemptRow {
    pub attempt: i64,
    pub at: When,
    pub outcome: String,
    pub ok: bool,
    pub latency_ms: i64,
    pub response: String,
}

#[derive(Template)]
#[template(path = "dashboard/outbound/delivery.html")]
struct DeliveryPage {
    frame: Frame,
    id: String,
    event_name: String,
    event_id: String,
    endpoint: String,
    endpoint_seg: String,
    label: Label,
    attempts: i64,
    next: When,
    delivered: When,
    created: When,
    last_error: String,
    log: Vec<AttemptRow>,
    payload: String,
}

impl DeliveryPage {
    fn seg(&self) -> String {
        seg(&self.id)
    }
}

#[derive(Template)]
#[template(path = "dashboard/outbound/problem.html")]
pub(super) struct ProblemPage {
    pub frame: Frame,
    pub message: String,
    pub back: &'static str,
    pub back_label: &'static str,
}

/// A page saying what went wrong, with a link back.
pub(super) async fn problem(
    ctx: &ApiContext,
    s: &Session,
    active: &str,
    e: ApiError,
    back: &'static str,
    back_label: &'static str,
) -> Response {
    let title = if matches!(e, ApiError::NotFound(_)) {
        "Not found"
    } else {
        "Not done"
    };
    let frame = Frame::new(ctx, s, title, active).await;
    render(
        status_of(&e),
        &ProblemPage {
            frame,
            message: message_of(&e),
            back,
            back_label,
        },
    )
}

pub async fn delivery(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let d = match api::webhooks_out::get_delivery(
        State(ctx.clone()),
        super::caller(&s),
        Path(id.clone()),
    )
    .await
    {
        Ok(j) => j.0,
        Err(e) => {
            return problem(
                &ctx,
                &s,
                "outbound",
                e,
                "/dashboard/outbound/deliveries",
                "All deliveries",
            )
            .await;
        }
    };
    let endpoint = api::webhooks_out::get_subscription(
        State(ctx.clone()),
        super::caller(&s),
        Path(d.subscription_id.clone()),
    )
    .await
    .map(|j| j.0.url)
    .unwrap_or_else(|_| "(deleted endpoint)".into());
    let now = ctx.now();
    let frame = Frame::new(
        &ctx,
        &s,
        &format!("Delivery of {}", d.event_name),
        "outbound",
    )
    .await
    .notice(notice(&params));
    let log = d
        .attempt_log
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let ok = a.status_code.is_some_and(|c| (200..300).contains(&c));
            AttemptRow {
                attempt: a.attempt,
                at: When::from_rfc3339(&a.attempted_at, now),
                outcome: match (a.status_code, &a.error) {
                    (Some(c), _) if ok => format!("Delivered (HTTP {c})"),
                    (Some(c), Some(e)) if *e != format!("HTTP {c}") => format!("HTTP {c}: {e}"),
                    (Some(c), _) => format!("HTTP {c}"),
                    (None, Some(e)) => format!("No answer: {e}"),
                    (None, None) => "No answer".into(),
                },
                ok,
                latency_ms: a.latency_ms,
                response: a.response_excerpt.clone().unwrap_or_default(),
            }
        })
        .collect();
    let payload = d
        .event
        .as_ref()
        .and_then(|e| serde_json::to_string_pretty(e).ok())
        .unwrap_or_default();
    render(
        StatusCode::OK,
        &DeliveryPage {
            frame,
            label: delivery_label(&d.status, d.attempts),
            last_error: if d.status == "delivered" {
                String::new()
            } else {
                d.last_error.clone().unwrap_or_default()
            },
            next: When::opt_rfc3339(d.next_attempt_at.as_deref(), now),
            delivered: When::opt_rfc3339(d.delivered_at.as_deref(), now),
            created: When::from_rfc3339(&d.created_at, now),
            attempts: d.attempts,
            endpoint,
            endpoint_seg: seg(&d.subscription_id),
            event_name: d.event_name,
            event_id: d.event_id,
            id: d.id,
            log,
            payload,
        },
    )
}

pub async fn delivery_resend(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match api::webhooks_out::resend(
        State(ctx.clone()),
        super::caller(&s),
        Path(id.clone()),
        api::typed::Body(NoBody {}),
    )
    .await
    {
        Ok(_) => see_other(&format!(
            "/dashboard/outbound/deliveries/{}?done=resent",
            seg(&id)
        )),
        Err(e) => {
            problem(
                &ctx,
                &s,
                "outbound",
                e,
                "/dashboard/outbound/deliveries",
                "All deliveries",
            )
            .await
        }
    }
}

// ---- the old addresses ------------------------------------------------------------------------

pub async fn old_deliveries(uri: axum::http::Uri) -> Response {
    let to = match uri.query() {
        Some(q) if !q.is_empty() => format!("/dashboard/outbound/deliveries?{q}"),
        _ => "/dashboard/outbound/deliveries".to_string(),
    };
    moved(&to)
}

/// 301 to the page's new address.
fn moved(to: &str) -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, to.to_string())],
    )
        .into_response()
}

pub async fn old_delivery(Path(id): Path<String>) -> Response {
    moved(&format!("/dashboard/outbound/deliveries/{}", seg(&id)))
}
