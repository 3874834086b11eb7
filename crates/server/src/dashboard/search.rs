//! The search box on every page (`GET /dashboard/search?q=`): a transaction by our id, its
//! `external_identifier`, or its Stripe PaymentIntent (`pi_…`, or the client secret), charge
//! (`ch_…`, `py_…`) or refund (`re_…`); a customer by a customid prefix or `cus_…`; a Stripe
//! event received by `evt_…`. One match goes straight to it; several are listed by kind; none
//! says so.

use askama::Template;
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use tollgate_store::search as store;

use super::common::{Params, param, seg};
use super::session::{Session, see_other};
use super::transactions::transaction_label;
use super::view::{Frame, When, render};
use crate::ApiContext;
use crate::api;
use crate::page::format_money;

/// Longest search text read.
const MAX_QUERY: usize = 200;

pub struct TxResult {
    pub href: String,
    pub id: String,
    pub status: super::transactions::StatusLabel,
    pub amount: String,
    pub who: Option<String>,
    pub created: When,
    /// What matched, in words.
    pub matched: &'static str,
}

pub struct CustomerResult {
    pub href: String,
    pub customid: String,
}

pub struct EventResult {
    pub href: String,
    pub stripe_event_id: String,
    pub event_type: String,
    pub status: String,
    pub received: When,
}

#[derive(Template)]
#[template(path = "dashboard/search/results.html")]
struct ResultsPage {
    frame: Frame,
    query: String,
    transactions: Vec<TxResult>,
    customers: Vec<CustomerResult>,
    /// More customers start with the text than are listed.
    more_customers: bool,
    events: Vec<EventResult>,
    problem: Option<&'static str>,
}

impl ResultsPage {
    fn count(&self) -> usize {
        self.transactions.len() + self.customers.len() + self.events.len()
    }
}

fn matched_words(m: &str) -> &'static str {
    match m {
        "id" => "Transaction id",
        "external_identifier" => "Your reference",
        "payment_intent" => "Stripe PaymentIntent",
        "charge" => "Stripe charge",
        _ => "Stripe refund",
    }
}

/// A PaymentIntent's client secret (`pi_…_secret_…`) names its PaymentIntent.
fn payment_intent_of(q: &str) -> &str {
    match q.find("_secret_") {
        Some(at) if q.starts_with("pi_") => &q[..at],
        _ => q,
    }
}

pub async fn search(
    State(ctx): State<ApiContext>,
    Extension(s): Extension<Session>,
    Query(params): Params,
) -> Response {
    let raw = param(&params, "q").unwrap_or_default();
    let q: String = raw.chars().take(MAX_QUERY).collect();
    let frame = Frame::new(&ctx, &s, "Search", "").await.query(&q);
    let mut page = ResultsPage {
        frame,
        query: q.clone(),
        transactions: Vec::new(),
        customers: Vec::new(),
        more_customers: false,
        events: Vec::new(),
        problem: None,
    };
    if q.is_empty() {
        page.problem = Some(
            "Type a transaction id, your reference, a Stripe id (pi_, ch_, re_, cus_, evt_) or the start of a customer id.",
        );
        return render(StatusCode::OK, &page);
    }
    let merchant = s.merchant_account_id.as_str();
    let found = async {
        let hits = store::transactions(&ctx.store, merchant, payment_intent_of(&q)).await?;
        let mut customers = if q.starts_with("cus_") {
            store::customers_by_stripe_id(&ctx.store, merchant, &q).await?
        } else {
            Vec::new()
        };
        let by_prefix = store::customers_by_prefix(&ctx.store, merchant, &q).await?;
        for c in by_prefix {
            if !customers.contains(&c) {
                customers.push(c);
            }
        }
        let events = if q.starts_with("evt_") {
            store::events_by_stripe_id(&ctx.store, merchant, &q).await?
        } else {
            Vec::new()
        };
        Ok::<_, tollgate_store::StoreError>((hits, customers, events))
    }
    .await;
    let (hits, mut customers, events) = match found {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "dashboard search");
            page.problem = Some("The search could not be run. Please try again.");
            return render(StatusCode::SERVICE_UNAVAILABLE, &page);
        }
    };
    let now = ctx.now();
    for h in hits {
        let got = api::transactions::get(
            State(ctx.clone()),
            super::caller(&s),
            axum::extract::Path(h.id.clone()),
        )
        .await;
        if let Ok(t) = got {
            let t = t.0;
            page.transactions.push(TxResult {
                href: format!("/dashboard/transactions/{}", seg(&t.id)),
                status: transaction_label(&t),
                amount: format_money(t.amount, &t.currency),
                who: t.customid.clone().or_else(|| t.external_identifier.clone()),
                created: When::from_rfc3339(&t.created_at, now),
                matched: matched_words(h.matched),
                id: t.id,
            });
        }
    }
    page.more_customers = customers.len() > store::LIMIT as usize;
    customers.truncate(store::LIMIT as usize);
    page.customers = customers
        .into_iter()
        .map(|c| CustomerResult {
            href: format!("/dashboard/customers/{}", seg(&c)),
            customid: c,
        })
        .collect();
    page.events = events
        .into_iter()
        .map(|e| EventResult {
            href: format!("/dashboard/webhooks/{}", seg(&e.id)),
            stripe_event_id: e.stripe_event_id,
            event_type: e.event_type,
            status: e.status.replace('_', " "),
            received: When::from_ms(e.received_at, now),
        })
        .collect();
    if page.count() == 1 && !page.more_customers {
        let only = page
            .transactions
            .first()
            .map(|t| t.href.clone())
            .or_else(|| page.customers.first().map(|c| c.href.clone()))
            .or_else(|| page.events.first().map(|e| e.href.clone()));
        if let Some(href) = only {
            return see_other(&href);
        }
    }
    render(StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    use super::payment_intent_of;

    #[test]
    fn client_secrets_name_their_payment_intent() {
        assert_eq!(payment_intent_of("pi_123_secret_abc"), "pi_123");
        assert_eq!(payment_intent_of("pi_123"), "pi_123");
        assert_eq!(payment_intent_of("order_secret_1"), "order_secret_1");
    }
}
