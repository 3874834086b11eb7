//! The order-proof property of entitlements (issue 7): the events of a subscription's life
//! (created, renewals, invoices paid, a failed payment → past_due, deleted) and of a one-time
//! purchase (paid, refunds, a dispute), observed in any order and with any duplicates, give the
//! permissions of the in-order stream; and those permissions mean what the history means.
//!
//! Events of one Stripe request share a `created` second, so ties are exercised too.

use proptest::prelude::*;
use tollgate_domain::entitlements::{
    Catalog, ChargeRec, CheckoutRec, DisputeRec, Grace, InvoiceRec, Ledger, PermissionDef, Policy,
    Record, Sku, SubStatus, SubscriptionRec, code, evaluate,
};

const DAY: i64 = 86_400;
const T0: i64 = 1_800_000_000;

#[derive(Debug, Clone)]
enum SubEnd {
    Renewing,
    CancelAtPeriodEnd,
    PastDue,
    CanceledAfterFailure,
    CanceledByCustomer,
}

#[derive(Debug, Clone)]
struct Life {
    renewals: i64,
    end: SubEnd,
    /// One-time purchase: refunded per-mille steps (cumulative), and a dispute outcome.
    one_time: Option<(Vec<i64>, Option<bool>)>,
    /// Events of one request share a second when true.
    same_second: bool,
}

fn life() -> impl Strategy<Value = Life> {
    (
        0i64..4,
        prop_oneof![
            Just(SubEnd::Renewing),
            Just(SubEnd::CancelAtPeriodEnd),
            Just(SubEnd::PastDue),
            Just(SubEnd::CanceledAfterFailure),
            Just(SubEnd::CanceledByCustomer),
        ],
        proptest::option::of((
            proptest::collection::vec(1i64..700, 0..3),
            proptest::option::of(any::<bool>()),
        )),
        any::<bool>(),
    )
        .prop_map(|(renewals, end, one_time, same_second)| Life {
            renewals,
            end,
            one_time,
            same_second,
        })
}

fn sub(status: SubStatus, start: i64, invoice: &str) -> SubscriptionRec {
    SubscriptionRec {
        id: "sub_1".into(),
        status,
        products: ["prod_monthly".to_string()].into(),
        current_period_start: Some(start),
        current_period_end: Some(start + 30 * DAY),
        cancel_at_period_end: false,
        cancel_at: None,
        ended_at: None,
        trial_end: None,
        cancellation_reason: None,
        latest_invoice: Some(invoice.into()),
        created: T0,
    }
}

fn invoice(id: &str, status: &str, created: i64, pi: &str) -> InvoiceRec {
    InvoiceRec {
        id: id.into(),
        subscription: Some("sub_1".into()),
        status: status.into(),
        total: 999,
        amount_paid: if status == "paid" { 999 } else { 0 },
        products: ["prod_monthly".to_string()].into(),
        payment_intents: [pi.to_string()].into(),
        charge: None,
        next_payment_attempt: (status == "open").then_some(created + 3 * DAY),
        created,
    }
}

/// The events of a life, in order: (created second, object).
fn events(l: &Life) -> Vec<(i64, Record)> {
    let mut out = Vec::new();
    // One request's events: the same second, or a second apart.
    let mut t = T0;
    let step = |out: &mut Vec<(i64, Record)>, t: &mut i64, r: Record| {
        out.push((*t, r));
        if !l.same_second {
            *t += 1;
        }
    };
    step(
        &mut out,
        &mut t,
        Record::Subscription(sub(SubStatus::Incomplete, T0, "in_0")),
    );
    step(
        &mut out,
        &mut t,
        Record::Invoice(invoice("in_0", "paid", T0, "pi_s0")),
    );
    step(
        &mut out,
        &mut t,
        Record::Subscription(sub(SubStatus::Active, T0, "in_0")),
    );
    let mut start = T0;
    for n in 1..=l.renewals {
        start += 30 * DAY;
        t = start;
        let inv = format!("in_{n}");
        step(
            &mut out,
            &mut t,
            Record::Invoice(invoice(&inv, "paid", start, &format!("pi_s{n}"))),
        );
        step(
            &mut out,
            &mut t,
            Record::Subscription(sub(SubStatus::Active, start, &inv)),
        );
    }
    let fail_at = start + 30 * DAY;
    match l.end {
        SubEnd::Renewing => {}
        SubEnd::CancelAtPeriodEnd => {
            t = start + DAY;
            let mut s = sub(SubStatus::Active, start, &format!("in_{}", l.renewals));
            s.cancel_at_period_end = true;
            step(&mut out, &mut t, Record::Subscription(s));
        }
        SubEnd::PastDue | SubEnd::CanceledAfterFailure => {
            t = fail_at;
            step(
                &mut out,
                &mut t,
                Record::Invoice(invoice("in_f", "open", fail_at, "pi_f")),
            );
            step(
                &mut out,
                &mut t,
                Record::Subscription(sub(SubStatus::PastDue, fail_at, "in_f")),
            );
            if matches!(l.end, SubEnd::CanceledAfterFailure) {
                t = fail_at + 7 * DAY;
                let mut s = sub(SubStatus::Canceled, fail_at, "in_f");
                s.cancellation_reason = Some("payment_failed".into());
                s.ended_at = Some(t);
                step(&mut out, &mut t, Record::Subscription(s));
            }
        }
        SubEnd::CanceledByCustomer => {
            t = start + 2 * DAY;
            let mut s = sub(SubStatus::Canceled, start, &format!("in_{}", l.renewals));
            s.cancellation_reason = Some("cancellation_requested".into());
            s.ended_at = Some(t);
            step(&mut out, &mut t, Record::Subscription(s));
        }
    }
    if let Some((refunds, dispute)) = &l.one_time {
        let mut t = T0 + 5 * DAY;
        let cs = |status: &str, payment_status: &str| {
            Record::Checkout(CheckoutRec {
                id: "cs_1".into(),
                mode: "payment".into(),
                status: status.into(),
                payment_status: payment_status.into(),
                products: ["prod_life".to_string()].into(),
                sku: None,
                payment_intent: Some("pi_1".into()),
                invoice: None,
                created: T0 + 5 * DAY,
            })
        };
        let ch = |refunded: i64, disputed: bool| {
            Record::Charge(ChargeRec {
                id: "ch_1".into(),
                payment_intent: Some("pi_1".into()),
                invoice: None,
                status: "succeeded".into(),
                amount: 1000,
                amount_captured: 1000,
                amount_refunded: refunded,
                refunded: refunded >= 1000,
                disputed,
            })
        };
        step(&mut out, &mut t, cs("open", "unpaid"));
        step(&mut out, &mut t, ch(0, false));
        step(&mut out, &mut t, cs("complete", "paid"));
        let mut refunded = 0;
        for r in refunds {
            refunded = (refunded + r).min(1000);
            t += 60;
            step(&mut out, &mut t, ch(refunded, false));
        }
        if let Some(won) = dispute {
            t += 600;
            let dp = |status: &str| {
                Record::Dispute(DisputeRec {
                    id: "dp_1".into(),
                    charge: Some("ch_1".into()),
                    payment_intent: Some("pi_1".into()),
                    status: status.into(),
                })
            };
            step(&mut out, &mut t, dp("needs_response"));
            step(&mut out, &mut t, ch(refunded, true));
            t += DAY;
            step(&mut out, &mut t, dp(if *won { "won" } else { "lost" }));
        }
    }
    out
}

fn catalog() -> Catalog {
    Catalog {
        skus: vec![
            Sku {
                identifier: "web_monthly".into(),
                product_id: "prod_monthly".into(),
                kind: "subscription".into(),
            },
            Sku {
                identifier: "lifetime".into(),
                product_id: "prod_life".into(),
                kind: "one_time".into(),
            },
        ],
        permissions: vec![
            PermissionDef {
                identifier: "premium".into(),
                skus: vec!["web_monthly".into()],
            },
            PermissionDef {
                identifier: "forever".into(),
                skus: vec!["lifetime".into()],
            },
            PermissionDef {
                identifier: "any".into(),
                skus: vec!["web_monthly".into(), "lifetime".into()],
            },
        ],
    }
}

/// Moments worth asking about: inside each period, at the edges, long after.
fn moments(l: &Life) -> Vec<i64> {
    let last = T0 + (l.renewals + 1) * 30 * DAY;
    vec![
        T0 + DAY,
        last - DAY,
        last + 3600,
        last + 2 * DAY,
        last + 10 * DAY,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn any_order_and_duplicates_give_the_in_order_permissions(
        l in life(),
        order in proptest::collection::vec(any::<u32>(), 0..40),
        dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        fixed_grace in any::<bool>(),
    ) {
        let evs = events(&l);
        let in_order: Ledger = evs.iter().cloned().collect();
        let mut shuffled = evs.clone();
        for d in &dups {
            shuffled.push(evs[d.index(evs.len())].clone());
        }
        // A permutation from the random keys (stable for equal keys).
        let mut keyed: Vec<(u32, usize)> = (0..shuffled.len())
            .map(|i| (order.get(i).copied().unwrap_or(i as u32), i))
            .collect();
        keyed.sort();
        let permuted: Ledger = keyed.iter().map(|(_, i)| shuffled[*i].clone()).collect();
        prop_assert_eq!(&permuted, &in_order);

        let policy = Policy {
            grace: if fixed_grace { Grace::Days(3) } else { Grace::WhileRetrying },
            ..Policy::default()
        };
        let cat = catalog();
        for now in moments(&l) {
            prop_assert_eq!(
                evaluate(&permuted, &cat, &policy, now),
                evaluate(&in_order, &cat, &policy, now)
            );
        }
        check_meaning(&l, &in_order, &cat, &policy);
    }
}

/// The in-order result means what the history means.
fn check_meaning(l: &Life, ledger: &Ledger, cat: &Catalog, policy: &Policy) {
    let period_end = T0 + (l.renewals + 1) * 30 * DAY;
    let at = |now: i64, id: &str| {
        evaluate(ledger, cat, policy, now)
            .into_iter()
            .find(|p| p.identifier == id)
    };
    let premium = at(period_end - DAY, "premium").expect("premium is touched");
    match l.end {
        SubEnd::Renewing => {
            assert!(premium.is_valid);
            assert_eq!(premium.entitlement, code::RENEWING);
            assert_eq!(premium.expires, Some(period_end));
            // Webhook lag at renewal: still held an hour after the stored end.
            assert!(at(period_end + 3600, "premium").is_some_and(|p| p.is_valid));
            assert!(at(period_end + 3 * 3600, "premium").is_some_and(|p| !p.is_valid));
        }
        SubEnd::CancelAtPeriodEnd => {
            assert!(premium.is_valid);
            assert_eq!(premium.entitlement, code::CANCELING);
            let after = at(period_end, "premium").expect("premium");
            assert!(!after.is_valid);
            assert_eq!(after.entitlement, code::EXPIRED);
        }
        SubEnd::PastDue => {
            let p = at(period_end + DAY, "premium").expect("premium");
            assert!(p.is_valid, "in grace: {p:?}");
            assert_eq!(p.entitlement, code::GRACE);
            let later = at(period_end + 10 * DAY, "premium").expect("premium");
            match policy.grace {
                Grace::WhileRetrying => assert!(later.is_valid),
                Grace::Days(_) => {
                    assert!(!later.is_valid);
                    assert_eq!(later.entitlement, code::GRACE_OVER);
                }
            }
        }
        SubEnd::CanceledAfterFailure => {
            let p = at(period_end + 10 * DAY, "premium").expect("premium");
            assert!(!p.is_valid);
            assert_eq!(p.entitlement, code::PAYMENT_FAILED);
        }
        SubEnd::CanceledByCustomer => {
            let p = at(period_end - DAY, "premium").expect("premium");
            assert!(!p.is_valid);
            assert_eq!(p.entitlement, code::EXPIRED);
        }
    }
    match &l.one_time {
        None => assert!(at(T0, "forever").is_none()),
        Some((refunds, dispute)) => {
            let total: i64 = refunds.iter().sum::<i64>().min(1000);
            let revoked = total >= 1000 || *dispute == Some(false);
            let p = at(period_end, "forever").expect("forever");
            assert_eq!(p.is_valid, !revoked, "{l:?} {p:?}");
            assert_eq!(
                p.entitlement,
                if revoked {
                    code::REVOKED
                } else {
                    code::LIFETIME
                }
            );
            // The lifetime purchase keeps "any" held whatever the subscription does.
            if !revoked {
                let any = at(period_end + 30 * DAY, "any").expect("any");
                assert!(any.is_valid);
                assert_eq!(any.expires, None);
                assert_eq!(any.entitlement, code::LIFETIME);
            }
        }
    }
}
