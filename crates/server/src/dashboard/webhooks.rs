//! The dashboard's Stripe events received (the inbox): the list filtered by status and
//! connection, one event with its payload, replay. (Outbound deliveries are in `outbound.rs`.)

use std::collections::HashMap;

use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::common::{Params, message_of, param, query_string, seg};
use super::outbound::{Label, problem};
use super::session::{Session, see_other};
use super::view::{Frame, When, render, status_of};
use crate::ApiContext;
use crate::api;
use crate::api::webhook_events::WebhookEventOut;

/// An inbox status as people read it.
pub fn event_label(status: &str) -> Label {
    match status {
        "applied" => Label {
            text: "Applied",
            tone: "ok",
        },
        "ignored" => Label {
            text: "Ignored",
            tone: "off",
        },
        "failed" => Label {
            text: "Waiting to retry",
            tone: "wait",
        },
        "dead" => Label {
            text: "Failed — dead-lettered",
            tone: "bad",
        },
        _ => Label {
            text: "Received, not applied yet",
            tone: "wait",
        },
    }
}

/// The statuses of the filter: the API's value and its label.
const STATUS_FILTER: &[(&str, &str)] = &[
    ("received", "Received, not applied yet"),
    ("applied", "Applied"),
    ("ignored", "Ignored"),
    ("failed", "Waiting to retry"),
    ("dead", "Failed — dead-lettered"),
];

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

pub struct EventRow {
    pub id: String,
    pub event_type: String,
    pub stripe_event_id: String,
    pub connection: String,
    pub label: Label,
    pub next: When,
    pub attempts: i64,
    pub note: String,
    pub received: When,
}

impl EventRow {
    pub fn seg(&self) -> String {
        seg(&self.id)
    }
}

#[derive(Template)]
#[template(path = "dashboard/webhooks/list.html")]
struct ListPage {
    frame: Frame,
    problem: Option<String>,
    statuses: Vec<Choice>,
    connections: Vec<Choice>,
    rows: Vec<EventRow>,
    newer: Option<String>,
    older: Option<String>,
}

/// Connection id → display name.
async fn connection_names(ctx: &ApiContext, s: &Session) -> Vec<(String, String)> {
    api::connections::list(State(ctx.clone()), super::caller(s))
        .await
        .map(|j| {
            j.0.items
                .into_iter()
                .map(|c| (c.id, c.display_name))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn webhooks(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    let frame = Frame::new(&ctx, &s, "Stripe events received", "webhooks").await;
    let frame = frame.notice(notice(&params));
    // `connection` (what the overview links with) or the API's own `connection_id`.
    let connection = param(&params, "connection")
        .or_else(|| param(&params, "connection_id"))
        .map(str::to_string);
    let mut filters: Vec<(&str, String)> = Vec::new();
    for (k, v) in [
        ("status", param(&params, "status")),
        ("connection", connection.as_deref()),
        ("type", param(&params, "type")),
        ("stripe_event_id", param(&params, "stripe_event_id")),
    ] {
        if let Some(v) = v {
            filters.push((k, v.to_string()));
        }
    }
    let mut q: Vec<(&str, String)> = filters
        .iter()
        .map(|(k, v)| {
            (
                if *k == "connection" {
                    "connection_id"
                } else {
                    *k
                },
                v.clone(),
            )
        })
        .collect();
    q.push(("limit", "25".into()));
    if let Some(c) = param(&params, "cursor") {
        q.push(("cursor", c.to_string()));
    }
    let uri = format!("/webhook-events?{}", query_string(&q))
        .parse()
        .unwrap_or_else(|_| axum::http::Uri::from_static("/webhook-events"));
    let names = connection_names(&ctx, &s).await;
    let by_id: HashMap<&str, &str> = names
        .iter()
        .map(|(id, name)| (id.as_str(), name.as_str()))
        .collect();
    let now = ctx.now();
    let mut code = StatusCode::OK;
    let (rows, problem, newer, older) =
        match api::webhook_events::list(State(ctx.clone()), super::caller(&s), uri).await {
            Ok(page) => {
                let page = page.0;
                let link = |c: &Option<String>| {
                    c.as_ref().map(|c| {
                        let mut pairs = filters.clone();
                        pairs.push(("cursor", c.clone()));
                        format!("/dashboard/webhooks?{}", query_string(&pairs))
                    })
                };
                let (newer, older) = (link(&page.previous_cursor), link(&page.next_cursor));
                let rows = page
                    .items
                    .iter()
                    .map(|w| row(w, &by_id, now))
                    .collect::<Vec<_>>();
                (rows, None, newer, older)
            }
            Err(e) => {
                code = status_of(&e);
                (Vec::new(), Some(message_of(&e)), None, None)
            }
        };
    let status = param(&params, "status");
    render(
        code,
        &ListPage {
            frame,
            problem,
            statuses: STATUS_FILTER
                .iter()
                .map(|(v, l)| Choice {
                    value: v.to_string(),
                    label: l.to_string(),
                    selected: status == Some(*v),
                })
                .collect(),
            connections: names
                .iter()
                .map(|(id, name)| Choice {
                    value: id.clone(),
                    label: name.clone(),
                    selected: connection.as_deref() == Some(id.as_str()),
                })
                .collect(),
            rows,
            newer,
            older,
        },
    )
}

fn row(w: &WebhookEventOut, names: &HashMap<&str, &str>, now: i64) -> EventRow {
    EventRow {
        id: w.id.clone(),
        event_type: w.event_type.clone(),
        stripe_event_id: w.stripe_event_id.clone(),
        connection: names
            .get(w.connection_id.as_str())
            .map(|n| n.to_string())
            .unwrap_or_else(|| w.connection_id.clone()),
        label: event_label(&w.status),
        next: When::opt_rfc3339(w.next_attempt_at.as_deref(), now),
        attempts: w.attempts,
        note: w.note.clone().unwrap_or_default(),
        received: When::from_rfc3339(&w.received_at, now),
    }
}

fn notice(params: &[(String, String)]) -> Option<&'static str> {
    match param(params, "done") {
        Some("replayed") => Some("The event was queued to be applied again."),
        _ => None,
    }
}

#[derive(Template)]
#[template(path = "dashboard/webhooks/event.html")]
struct EventPage {
    frame: Frame,
    row: EventRow,
    connection_seg: String,
    api_version: String,
    source: &'static str,
    stripe_created: When,
    applied: When,
    payload: String,
}

pub async fn webhook(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Response {
    let w = match api::webhook_events::get(State(ctx.clone()), super::caller(&s), Path(id)).await {
        Ok(j) => j.0,
        Err(e) => {
            return problem(
                &ctx,
                &s,
                "webhooks",
                e,
                "/dashboard/webhooks",
                "All Stripe events",
            )
            .await;
        }
    };
    let names = connection_names(&ctx, &s).await;
    let by_id: HashMap<&str, &str> = names
        .iter()
        .map(|(id, name)| (id.as_str(), name.as_str()))
        .collect();
    let now = ctx.now();
    let frame = Frame::new(
        &ctx,
        &s,
        &format!("Stripe event {}", w.event_type),
        "webhooks",
    )
    .await
    .notice(notice(&params));
    let payload = w
        .payload
        .as_ref()
        .and_then(|p| serde_json::to_string_pretty(p).ok())
        .unwrap_or_default();
    render(
        StatusCode::OK,
        &EventPage {
            frame,
            row: row(&w, &by_id, now),
            connection_seg: seg(&w.connection_id),
            api_version: w.api_version.clone().unwrap_or_default(),
            source: if w.source == "sync" {
                "Read from Stripe by a sync"
            } else {
                "Sent by Stripe"
            },
            stripe_created: When::opt_rfc3339(w.stripe_created_at.as_deref(), now),
            applied: When::opt_rfc3339(w.applied_at.as_deref(), now),
            payload,
        },
    )
}

pub async fn webhook_replay(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match api::webhook_events::replay(
        State(ctx.clone()),
        super::caller(&s),
        Path(id.clone()),
        api::typed::Body(api::webhook_events::NoFields {}),
    )
    .await
    {
        Ok(_) => see_other(&format!("/dashboard/webhooks/{}?done=replayed", seg(&id))),
        Err(e) => {
            problem(
                &ctx,
                &s,
                "webhooks",
                e,
                "/dashboard/webhooks",
                "All Stripe events",
            )
            .await
        }
    }
}
