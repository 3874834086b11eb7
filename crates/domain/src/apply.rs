//! What a Stripe observation (a webhook event's object, or a re-read) means for one
//! transaction, applied so that **any order and any number of copies** of the observations of
//! one Stripe history give the same final state (SPEC §3.5, issue 5).
//!
//! How that property is obtained, piece by piece:
//!
//! - **Status**: only moves the transition table allows ([`allowed`]); an observation implying a
//!   status behind or beside the current one is reported as [`Change::Ignored`] and otherwise
//!   does nothing. Every allowed move raises [`TransactionStatus::rank`], so the final status is
//!   the furthest one the history proves.
//! - **Amounts**: set from Stripe's cumulative figures (`amount_capturable`, `amount_received`,
//!   `amount_captured`, `amount_refunded`) and only ever raised (`max`), never added to: a copy
//!   or a late, older snapshot cannot count twice or go back.
//! - **Refunds**: each refund's status moves forward only ([`RefundStatus::can_move_to`]).
//! - **Decisions that need a fact another event carries** are not taken early: the facts are
//!   kept in [`Evidence`] (sets and "latest by time" registers, which merge the same way in any
//!   order) and `settle` decides as soon as they suffice. Two such decisions exist:
//!   - a canceled PaymentIntent is `authorization_voided` if it had been authorized, else
//!     `authorization_failed`; in current API versions the canceled object alone often cannot
//!     tell (`latest_charge` is a bare id), so the cancellation waits for the authorization
//!     (or the failed attempt) to be seen, or for a re-read ([`TransactionState::needs_reread`]);
//!   - a decline is final only if the attempt had been reported `processing` (an asynchronous
//!     method failing after submission); a decline while the buyer approves is not.
//! - **Error fields** (`error_code`, `raw_response_*`) are a register: a move to a new status
//!   always writes them (a success clears them); at the same status an observation carrying an
//!   error beats one that does not, then the later `observed_at` wins, then the content breaks
//!   ties. That order does not depend on arrival.
//!
//! The property holds for observations of one consistent history. Contradictory ones (a success
//! after a final decline) cannot all be honoured: the first wins and the rest are `Ignored`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error_code::{ErrorCode, ErrorInfo, PaymentError};
use crate::money::Amount;
use crate::transaction::{
    Intent, PaymentIntentStatus, PaymentIntentView, RefundStatus, TransactionStatus, allowed,
    map_payment_intent,
};

/// Everything `apply` reads and writes about one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionState {
    pub status: TransactionStatus,
    pub intent: Intent,
    /// An approval URL or direct-flow session was handed out: a buyer is approving, so a
    /// decline is not final. Fixed at creation.
    pub approval_issued: bool,
    pub amount: Amount,
    pub authorized_amount: i64,
    pub captured_amount: i64,
    pub refunded_amount: i64,
    /// Received so far on a partially funded bank transfer (`payment_intent.partially_funded`).
    pub funded_amount: i64,
    pub disputed: bool,
    /// A dispute was lost: counts as refunded for entitlements (SPEC §3.5).
    pub dispute_lost: bool,
    pub error_code: Option<ErrorCode>,
    pub raw_response_code: Option<String>,
    pub raw_response_description: Option<String>,
    /// Refund id (`re_…`) → status.
    pub refunds: BTreeMap<String, RefundStatus>,
    /// Facts kept only so that later observations are judged the same in any order. Stored
    /// with the transaction (one JSON column is enough); never shown in the API.
    pub evidence: Evidence,
}

/// Order-independent bookkeeping behind [`TransactionState`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// When the current error fields were observed (the error register's stamp).
    pub error_observed_at: Option<i64>,
    /// The PaymentIntent was seen canceled.
    pub cancellation: Option<Cancellation>,
    /// Charges seen `pending` / the PaymentIntent's charge while `processing`.
    pub processing_charges: BTreeSet<String>,
    /// Declined attempts by charge id (`latest_charge` of a `requires_payment_method`
    /// PaymentIntent with a `last_payment_error`), the latest observation of each.
    pub declines: BTreeMap<String, Decline>,
}

/// A canceled PaymentIntent, merged over every copy: the latest by `observed_at` (content
/// breaking ties) for the fields, and the strongest authorization hint of all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    pub observed_at: i64,
    pub reason: Option<String>,
    pub last_payment_error: Option<PaymentError>,
    pub latest_charge_id: Option<String>,
    /// What the payload itself says about a past authorization (`None`: it cannot tell).
    pub authorized_hint: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Decline {
    pub observed_at: i64,
    pub error: PaymentError,
}

impl TransactionState {
    /// A new transaction: `buyer_approval_pending` once an approval URL exists, else
    /// `processing`.
    pub fn new(intent: Intent, amount: Amount, approval_issued: bool) -> TransactionState {
        TransactionState {
            status: if approval_issued {
                TransactionStatus::BuyerApprovalPending
            } else {
                TransactionStatus::Processing
            },
            intent,
            approval_issued,
            amount,
            authorized_amount: 0,
            captured_amount: 0,
            refunded_amount: 0,
            funded_amount: 0,
            disputed: false,
            dispute_lost: false,
            error_code: None,
            raw_response_code: None,
            raw_response_description: None,
            refunds: BTreeMap::new(),
            evidence: Evidence::default(),
        }
    }

    pub fn error(&self) -> Option<ErrorInfo> {
        self.error_code.map(|error_code| ErrorInfo {
            error_code,
            raw_response_code: self.raw_response_code.clone(),
            raw_response_description: self.raw_response_description.clone(),
        })
    }

    pub fn amounts(&self) -> Amounts {
        Amounts {
            authorized: self.authorized_amount,
            captured: self.captured_amount,
            refunded: self.refunded_amount,
            funded: self.funded_amount,
        }
    }

    /// The PaymentIntent was canceled but nothing seen so far tells whether it had been
    /// authorized (voided) or not (failed). The caller should re-read it from Stripe with
    /// `expand[]=latest_charge` and apply that snapshot.
    pub fn needs_reread(&self) -> bool {
        !self.status.is_final()
            && self
                .evidence
                .cancellation
                .as_ref()
                .is_some_and(|c| self.was_authorized(c).is_none())
    }

    /// Whether the canceled PaymentIntent had been authorized, if anything known decides it.
    fn was_authorized(&self, c: &Cancellation) -> Option<bool> {
        use TransactionStatus::*;
        if self.intent == Intent::Capture {
            // Automatic capture has no authorized-but-uncaptured state to cancel from.
            return Some(false);
        }
        let seen_authorized = self.authorized_amount > 0
            || matches!(
                self.status,
                AuthorizationSucceeded | AuthorizationVoidPending | AuthorizationVoided
            );
        if seen_authorized {
            return Some(true);
        }
        if c.authorized_hint.is_some() {
            return c.authorized_hint;
        }
        // The last attempt is a charge we saw declined: after a decline nothing was authorized
        // (an authorized PaymentIntent takes no further attempts).
        let last_attempt_declined = c
            .latest_charge_id
            .as_ref()
            .is_some_and(|id| self.evidence.declines.contains_key(id));
        last_attempt_declined.then_some(false)
    }
}

/// The cumulative amounts, for [`Change::AmountsChanged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amounts {
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    pub funded: i64,
}

/// A Charge as referenced by a PaymentIntent (`latest_charge`): a bare id in current API
/// versions, expanded (or the newest of the embedded `charges.data` before 2022-11-15) when the
/// payload has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRef {
    pub id: String,
    /// `None` when the payload has only the id.
    pub status: Option<ChargeStatus>,
}

/// A Charge's `status`; unknown values kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ChargeStatus {
    Succeeded,
    Pending,
    Failed,
    Unknown(String),
}

impl From<String> for ChargeStatus {
    fn from(s: String) -> Self {
        match s.as_str() {
            "succeeded" => ChargeStatus::Succeeded,
            "pending" => ChargeStatus::Pending,
            "failed" => ChargeStatus::Failed,
            _ => ChargeStatus::Unknown(s),
        }
    }
}

impl From<ChargeStatus> for String {
    fn from(s: ChargeStatus) -> String {
        match s {
            ChargeStatus::Succeeded => "succeeded".into(),
            ChargeStatus::Pending => "pending".into(),
            ChargeStatus::Failed => "failed".into(),
            ChargeStatus::Unknown(s) => s,
        }
    }
}

/// A PaymentIntent as one event (or a re-read) shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentIntentSnapshot {
    /// The event's `created` (or the time of the re-read): orders observations of one object.
    pub observed_at: i64,
    pub status: PaymentIntentStatus,
    pub amount: i64,
    pub amount_capturable: i64,
    pub amount_received: i64,
    /// `next_action.display_bank_transfer_instructions.amount_remaining`, for partial funding.
    pub amount_remaining: Option<i64>,
    pub last_payment_error: Option<PaymentError>,
    pub cancellation_reason: Option<String>,
    pub latest_charge: Option<ChargeRef>,
}

/// A Charge as one event shows it (`charge.succeeded`, `.captured`, `.refunded`, `.expired`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeSnapshot {
    pub observed_at: i64,
    pub id: String,
    pub status: ChargeStatus,
    /// The amount authorized.
    pub amount: i64,
    /// Cumulative captured amount (the payload's `amount_captured`; `amount` if `captured` on
    /// payloads that lack the field).
    pub amount_captured: i64,
    pub captured: bool,
    /// Cumulative, pending refunds included.
    pub amount_refunded: i64,
    pub refunded: bool,
    pub disputed: bool,
}

/// A Refund as one event shows it (`charge.refund.updated`, `refund.*`, a listed refund).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundSnapshot {
    pub id: String,
    /// Stripe's status: `pending`, `requires_action`, `succeeded`, `failed`, `canceled`.
    pub status: String,
}

/// A Dispute as one event shows it (`charge.dispute.created` / `.closed`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeSnapshot {
    /// Stripe's status: `needs_response`, `under_review`, `won`, `lost`, `warning_*`.
    pub status: String,
}

/// What a Stripe event or a re-read says, built only from that payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    PaymentIntent(PaymentIntentSnapshot),
    Charge(ChargeSnapshot),
    /// `charge.expired`: an uncaptured authorization lapsed.
    ChargeExpired(ChargeSnapshot),
    Refund(RefundSnapshot),
    Dispute(DisputeSnapshot),
    /// `checkout.session.async_payment_succeeded` for the linked transaction.
    CheckoutPaymentSucceeded {
        observed_at: i64,
    },
}

/// One thing `apply` changed (or refused to), for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    StatusChanged {
        from: TransactionStatus,
        to: TransactionStatus,
    },
    /// The error fields now hold `error` (`None`: cleared).
    ErrorChanged {
        error: Option<ErrorInfo>,
    },
    AmountsChanged {
        before: Amounts,
        after: Amounts,
    },
    RefundStatusChanged {
        refund_id: String,
        from: Option<RefundStatus>,
        to: RefundStatus,
    },
    DisputeChanged {
        disputed: bool,
        lost: bool,
    },
    Ignored {
        reason: IgnoredReason,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IgnoredReason {
    /// The observation implies a status the table does not allow from the current one
    /// (backwards, or sideways between final statuses).
    NotForward {
        from: TransactionStatus,
        to: TransactionStatus,
    },
    RefundNotForward {
        refund_id: String,
        from: RefundStatus,
        to: RefundStatus,
    },
    /// A status value this version does not know (a newer API version).
    UnknownStatus { object: String, status: String },
}

/// The result of [`apply`]: the new state and what changed. An empty `changes` means the
/// observation taught nothing new (a duplicate, or an older snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: TransactionState,
    pub changes: Vec<Change>,
    /// See [`TransactionState::needs_reread`].
    pub needs_reread: bool,
}

/// Applies one observation to a transaction. Pure: the caller stores `outcome.state` and turns
/// `outcome.changes` into transaction events.
pub fn apply(state: &TransactionState, observation: &Observation) -> Outcome {
    let mut a = Applier {
        s: state.clone(),
        changes: Vec::new(),
    };
    match observation {
        Observation::PaymentIntent(pi) => a.payment_intent(pi),
        Observation::Charge(ch) => a.charge(ch, false),
        Observation::ChargeExpired(ch) => a.charge(ch, true),
        Observation::Refund(r) => a.refund(r),
        Observation::Dispute(d) => a.dispute(d),
        Observation::CheckoutPaymentSucceeded { observed_at } => {
            a.advance(TransactionStatus::CaptureSucceeded, None, *observed_at)
        }
    }
    // Decide what waited for facts, but only when those facts moved: otherwise the decision
    // is the one already taken and would only repeat itself.
    if a.settle_inputs() != settle_inputs(state) {
        a.settle();
    }
    a.finish(state)
}

struct Applier {
    s: TransactionState,
    changes: Vec<Change>,
}

type SettleInputs<'a> = (
    TransactionStatus,
    i64,
    &'a Option<Cancellation>,
    &'a BTreeSet<String>,
    &'a BTreeMap<String, Decline>,
);

fn settle_inputs(s: &TransactionState) -> SettleInputs<'_> {
    (
        s.status,
        s.authorized_amount,
        &s.evidence.cancellation,
        &s.evidence.processing_charges,
        &s.evidence.declines,
    )
}

/// Cumulative figures only go up.
fn raise(field: &mut i64, seen: i64) {
    *field = (*field).max(seen);
}

impl Applier {
    fn settle_inputs(&self) -> SettleInputs<'_> {
        settle_inputs(&self.s)
    }

    fn payment_intent(&mut self, pi: &PaymentIntentSnapshot) {
        use PaymentIntentStatus as Pi;
        let s = &mut self.s;
        match pi.status {
            Pi::RequiresCapture => raise(&mut s.authorized_amount, pi.amount_capturable),
            Pi::Succeeded => {
                // What was received had been authorized; the authorization may have been larger
                // (partial capture), which `requires_capture` or the charge tells.
                raise(&mut s.authorized_amount, pi.amount_received);
                raise(&mut s.captured_amount, pi.amount_received);
            }
            _ => {}
        }
        if let Some(remaining) = pi.amount_remaining {
            raise(&mut s.funded_amount, pi.amount.saturating_sub(remaining));
        }
        let charge_id = pi.latest_charge.as_ref().map(|c| c.id.clone());
        if pi.status == Pi::Processing
            && let Some(id) = &charge_id
        {
            s.evidence.processing_charges.insert(id.clone());
        }

        if pi.status == Pi::Canceled {
            // Voided or failed depends on a past authorization: `settle` decides.
            merge_cancellation(&mut s.evidence.cancellation, cancellation_of(pi));
            return;
        }
        if pi.status == Pi::RequiresPaymentMethod
            && let (Some(error), Some(id)) = (&pi.last_payment_error, &charge_id)
        {
            let decline = Decline {
                observed_at: pi.observed_at,
                error: error.clone(),
            };
            let slot = s
                .evidence
                .declines
                .entry(id.clone())
                .or_insert(decline.clone());
            *slot = slot.clone().max(decline);
            if s.evidence.processing_charges.contains(id) {
                // A failure after `processing` is final: `settle` applies it.
                return;
            }
        }

        let mapping = map_payment_intent(&PaymentIntentView {
            status: &pi.status,
            intent: s.intent,
            approval_issued: s.approval_issued,
            was_authorized: false, // only read for `canceled`, handled above
            failed_after_processing: false,
            cancellation_reason: pi.cancellation_reason.as_deref(),
            last_payment_error: pi.last_payment_error.as_ref(),
        });
        match (mapping.status, &pi.status) {
            (Some(to), _) => self.advance(to, mapping.error, pi.observed_at),
            (None, Pi::Unknown(status)) => self.ignore(IgnoredReason::UnknownStatus {
                object: "payment_intent".into(),
                status: status.clone(),
            }),
            // `processing` with intent authorize: the status stays as it is.
            (None, _) => {}
        }
    }

    fn charge(&mut self, ch: &ChargeSnapshot, expired: bool) {
        use TransactionStatus as T;
        if ch.disputed {
            self.s.disputed = true;
        }
        if ch.status == ChargeStatus::Pending {
            self.s.evidence.processing_charges.insert(ch.id.clone());
        }
        if expired {
            // The authorization existed and lapsed.
            raise(&mut self.s.authorized_amount, ch.amount);
            let error = ErrorInfo::code(ErrorCode::ExpiredAuthorization);
            return self.advance(T::AuthorizationVoided, Some(error), ch.observed_at);
        }
        match &ch.status {
            ChargeStatus::Succeeded => {
                raise(&mut self.s.authorized_amount, ch.amount);
                if ch.captured {
                    raise(&mut self.s.captured_amount, ch.amount_captured);
                    // Refunds exist only on captured money: on an uncaptured charge Stripe
                    // reports the released authorization as "refunded", which is a void.
                    raise(&mut self.s.refunded_amount, ch.amount_refunded);
                    self.advance(T::CaptureSucceeded, None, ch.observed_at);
                } else if ch.refunded {
                    self.advance(T::AuthorizationVoided, None, ch.observed_at);
                } else {
                    self.advance(T::AuthorizationSucceeded, None, ch.observed_at);
                }
            }
            ChargeStatus::Pending => {
                if self.s.intent == Intent::Capture {
                    self.advance(T::CapturePending, None, ch.observed_at);
                }
            }
            // What a failed attempt means (retry, or the end) is the PaymentIntent's to say.
            ChargeStatus::Failed => {}
            ChargeStatus::Unknown(status) => self.ignore(IgnoredReason::UnknownStatus {
                object: "charge".into(),
                status: status.clone(),
            }),
        }
    }

    fn refund(&mut self, r: &RefundSnapshot) {
        let Some(to) = RefundStatus::from_stripe(&r.status) else {
            return self.ignore(IgnoredReason::UnknownStatus {
                object: "refund".into(),
                status: r.status.clone(),
            });
        };
        let from = self.s.refunds.get(&r.id).copied();
        match from {
            Some(from) if from == to => {}
            Some(from) if !from.can_move_to(to) => self.ignore(IgnoredReason::RefundNotForward {
                refund_id: r.id.clone(),
                from,
                to,
            }),
            _ => {
                self.s.refunds.insert(r.id.clone(), to);
                self.changes.push(Change::RefundStatusChanged {
                    refund_id: r.id.clone(),
                    from,
                    to,
                });
            }
        }
    }

    fn dispute(&mut self, d: &DisputeSnapshot) {
        self.s.disputed = true;
        if d.status == "lost" {
            self.s.dispute_lost = true;
        }
    }

    /// Takes the decisions that wait for facts (see the module comment).
    fn settle(&mut self) {
        // An asynchronous payment that failed after `processing`. The latest such decline
        // (then the larger charge id) wins, so the choice does not depend on arrival.
        let failed_after_processing = self
            .s
            .evidence
            .declines
            .iter()
            .filter(|(id, _)| self.s.evidence.processing_charges.contains(*id))
            .max_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)))
            .map(|(_, d)| d.clone());
        if let Some(d) = failed_after_processing {
            let mapping = map_payment_intent(&PaymentIntentView {
                status: &PaymentIntentStatus::RequiresPaymentMethod,
                intent: self.s.intent,
                approval_issued: self.s.approval_issued,
                was_authorized: false,
                failed_after_processing: true,
                cancellation_reason: None,
                last_payment_error: Some(&d.error),
            });
            if let Some(to) = mapping.status {
                self.advance(to, mapping.error, d.observed_at);
            }
        }

        if let Some(c) = self.s.evidence.cancellation.clone()
            && let Some(was_authorized) = self.s.was_authorized(&c)
        {
            let mapping = map_payment_intent(&PaymentIntentView {
                status: &PaymentIntentStatus::Canceled,
                intent: self.s.intent,
                approval_issued: self.s.approval_issued,
                was_authorized,
                failed_after_processing: false,
                cancellation_reason: c.reason.as_deref(),
                last_payment_error: c.last_payment_error.as_ref(),
            });
            if let Some(to) = mapping.status {
                self.advance(to, mapping.error, c.observed_at);
            }
        }
    }

    /// Moves to `to` if the table allows it (through intermediate statuses if needed), with
    /// `error` as the new error fields; at the same status only offers `error` to the register.
    fn advance(&mut self, to: TransactionStatus, error: Option<ErrorInfo>, observed_at: i64) {
        let from = self.s.status;
        if from == to {
            return self.offer_error(error, observed_at);
        }
        let Some(path) = from.path_to(to) else {
            return self.ignore(IgnoredReason::NotForward { from, to });
        };
        let mut prev = from;
        for step in path {
            debug_assert!(allowed(prev, step) && prev.rank() < step.rank());
            self.changes.push(Change::StatusChanged {
                from: prev,
                to: step,
            });
            prev = step;
        }
        self.s.status = to;
        self.set_error(error, observed_at);
    }

    /// The error register at one status: an error beats no error, then later beats earlier,
    /// then content breaks ties.
    fn offer_error(&mut self, error: Option<ErrorInfo>, observed_at: i64) {
        let current = (
            self.s.error_code.is_some(),
            self.s.evidence.error_observed_at,
            self.s.error(),
        );
        let offered = (error.is_some(), Some(observed_at), error.clone());
        if offered > current {
            self.set_error(error, observed_at);
        }
    }

    fn set_error(&mut self, error: Option<ErrorInfo>, observed_at: i64) {
        let s = &mut self.s;
        s.evidence.error_observed_at = Some(observed_at);
        s.error_code = error.as_ref().map(|e| e.error_code);
        s.raw_response_code = error.as_ref().and_then(|e| e.raw_response_code.clone());
        s.raw_response_description = error.and_then(|e| e.raw_response_description);
    }

    fn ignore(&mut self, reason: IgnoredReason) {
        self.changes.push(Change::Ignored { reason });
    }

    fn finish(mut self, before: &TransactionState) -> Outcome {
        let after = &self.s;
        if after.error() != before.error() {
            self.changes.push(Change::ErrorChanged {
                error: after.error(),
            });
        }
        if after.amounts() != before.amounts() {
            self.changes.push(Change::AmountsChanged {
                before: before.amounts(),
                after: after.amounts(),
            });
        }
        if (after.disputed, after.dispute_lost) != (before.disputed, before.dispute_lost) {
            self.changes.push(Change::DisputeChanged {
                disputed: after.disputed,
                lost: after.dispute_lost,
            });
        }
        Outcome {
            needs_reread: self.s.needs_reread(),
            state: self.s,
            changes: self.changes,
        }
    }
}

fn cancellation_of(pi: &PaymentIntentSnapshot) -> Cancellation {
    Cancellation {
        observed_at: pi.observed_at,
        reason: pi.cancellation_reason.clone(),
        last_payment_error: pi.last_payment_error.clone(),
        latest_charge_id: pi.latest_charge.as_ref().map(|c| c.id.clone()),
        authorized_hint: authorization_hint(pi.latest_charge.as_ref()),
    }
}

/// What a canceled PaymentIntent's own `latest_charge` says about a past authorization.
fn authorization_hint(latest_charge: Option<&ChargeRef>) -> Option<bool> {
    match latest_charge {
        // Never charged, so never authorized (an authorization is a charge).
        None => Some(false),
        // The last attempt is the only one that can have been authorized: an authorized
        // PaymentIntent takes no further attempts.
        Some(ChargeRef {
            status: Some(ChargeStatus::Succeeded),
            ..
        }) => Some(true),
        Some(ChargeRef {
            status: Some(ChargeStatus::Failed | ChargeStatus::Pending),
            ..
        }) => Some(false),
        // A bare id (current API versions) or an unknown status: cannot tell.
        Some(ChargeRef {
            status: None | Some(ChargeStatus::Unknown(_)),
            ..
        }) => None,
    }
}

/// Merges copies of the cancellation: latest fields by (`observed_at`, content), strongest hint
/// (`Some(true)` > `Some(false)` > `None`). Commutative and idempotent.
fn merge_cancellation(slot: &mut Option<Cancellation>, incoming: Cancellation) {
    let Some(old) = slot.take() else {
        *slot = Some(incoming);
        return;
    };
    let key = |c: &Cancellation| {
        (
            c.observed_at,
            c.reason.clone(),
            c.last_payment_error.clone(),
            c.latest_charge_id.clone(),
        )
    };
    let hint = old.authorized_hint.max(incoming.authorized_hint);
    let mut latest = if key(&incoming) > key(&old) {
        incoming
    } else {
        old
    };
    latest.authorized_hint = hint;
    *slot = Some(latest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransactionStatus as T;

    fn state(intent: Intent) -> TransactionState {
        TransactionState::new(intent, Amount::new(1000).unwrap(), true)
    }

    fn pi(at: i64, status: &str) -> PaymentIntentSnapshot {
        PaymentIntentSnapshot {
            observed_at: at,
            status: PaymentIntentStatus::parse(status),
            amount: 1000,
            amount_capturable: 0,
            amount_received: 0,
            amount_remaining: None,
            last_payment_error: None,
            cancellation_reason: None,
            latest_charge: None,
        }
    }

    fn charge(at: i64, id: &str, status: &str) -> ChargeSnapshot {
        ChargeSnapshot {
            observed_at: at,
            id: id.into(),
            status: ChargeStatus::from(status.to_owned()),
            amount: 1000,
            amount_captured: 0,
            captured: false,
            amount_refunded: 0,
            refunded: false,
            disputed: false,
        }
    }

    fn bare(id: &str) -> Option<ChargeRef> {
        Some(ChargeRef {
            id: id.into(),
            status: None,
        })
    }

    fn run(mut s: TransactionState, obs: &[Observation]) -> TransactionState {
        for o in obs {
            s = apply(&s, o).state;
        }
        s
    }

    fn insufficient_funds() -> PaymentError {
        PaymentError {
            error_type: Some("card_error".into()),
            code: Some("card_declined".into()),
            decline_code: Some("insufficient_funds".into()),
            message: Some("Your card has insufficient funds.".into()),
        }
    }

    #[test]
    fn decline_while_approving_keeps_pending_and_records_the_error() {
        let declined = PaymentIntentSnapshot {
            last_payment_error: Some(insufficient_funds()),
            latest_charge: bare("ch_1"),
            ..pi(10, "requires_payment_method")
        };
        let out = apply(
            &state(Intent::Capture),
            &Observation::PaymentIntent(declined),
        );
        assert_eq!(out.state.status, T::BuyerApprovalPending);
        assert_eq!(out.state.error_code, Some(ErrorCode::InsufficientFunds));
        assert_eq!(
            out.state.raw_response_code.as_deref(),
            Some("insufficient_funds")
        );
        assert!(matches!(out.changes[..], [Change::ErrorChanged { .. }]));

        // The retry succeeds: final, and the error is cleared.
        let paid = PaymentIntentSnapshot {
            amount_received: 1000,
            ..pi(20, "succeeded")
        };
        let out = apply(&out.state, &Observation::PaymentIntent(paid));
        assert_eq!(out.state.status, T::CaptureSucceeded);
        assert_eq!(out.state.error_code, None);
        assert_eq!(out.state.captured_amount, 1000);
    }

    #[test]
    fn backwards_is_ignored_and_reported() {
        let s = run(
            state(Intent::Authorize),
            &[Observation::PaymentIntent(PaymentIntentSnapshot {
                amount_received: 1000,
                ..pi(20, "succeeded")
            })],
        );
        let late = PaymentIntentSnapshot {
            amount_capturable: 1000,
            ..pi(10, "requires_capture")
        };
        let out = apply(&s, &Observation::PaymentIntent(late));
        assert_eq!(out.state.status, T::CaptureSucceeded);
        assert_eq!(
            out.changes,
            vec![Change::Ignored {
                reason: IgnoredReason::NotForward {
                    from: T::CaptureSucceeded,
                    to: T::AuthorizationSucceeded
                }
            }]
        );
    }

    #[test]
    fn duplicates_change_nothing() {
        let o = Observation::PaymentIntent(PaymentIntentSnapshot {
            amount_capturable: 1000,
            ..pi(10, "requires_capture")
        });
        let once = apply(&state(Intent::Authorize), &o);
        assert_eq!(once.state.status, T::AuthorizationSucceeded);
        assert_eq!(once.state.authorized_amount, 1000);
        let twice = apply(&once.state, &o);
        assert_eq!(twice.state, once.state);
        assert!(twice.changes.is_empty());
    }

    #[test]
    fn a_released_authorization_is_a_void_not_a_refund() {
        let released = ChargeSnapshot {
            refunded: true,
            amount_refunded: 1000,
            ..charge(30, "ch_1", "succeeded")
        };
        let out = apply(&state(Intent::Authorize), &Observation::Charge(released));
        assert_eq!(out.state.status, T::AuthorizationVoided);
        assert_eq!(out.state.refunded_amount, 0);
        assert_eq!(out.state.authorized_amount, 1000);
        // Through authorization_succeeded: each step is an allowed one.
        assert_eq!(
            out.changes[..2],
            [
                Change::StatusChanged {
                    from: T::BuyerApprovalPending,
                    to: T::AuthorizationSucceeded
                },
                Change::StatusChanged {
                    from: T::AuthorizationSucceeded,
                    to: T::AuthorizationVoided
                },
            ]
        );
    }

    #[test]
    fn cancel_before_the_authorization_is_seen_waits_for_it() {
        let canceled = Observation::PaymentIntent(PaymentIntentSnapshot {
            cancellation_reason: Some("requested_by_customer".into()),
            latest_charge: bare("ch_1"),
            ..pi(30, "canceled")
        });
        let out = apply(&state(Intent::Authorize), &canceled);
        assert_eq!(out.state.status, T::BuyerApprovalPending);
        assert!(out.needs_reread);
        let authorized = Observation::PaymentIntent(PaymentIntentSnapshot {
            amount_capturable: 1000,
            latest_charge: bare("ch_1"),
            ..pi(20, "requires_capture")
        });
        let out = apply(&out.state, &authorized);
        assert_eq!(out.state.status, T::AuthorizationVoided);
        assert_eq!(out.state.error_code, None);
        assert!(!out.needs_reread);
    }

    #[test]
    fn cancel_after_a_declined_attempt_fails_in_any_order() {
        let declined = Observation::PaymentIntent(PaymentIntentSnapshot {
            last_payment_error: Some(insufficient_funds()),
            latest_charge: bare("ch_1"),
            ..pi(10, "requires_payment_method")
        });
        let canceled = Observation::PaymentIntent(PaymentIntentSnapshot {
            cancellation_reason: Some("abandoned".into()),
            last_payment_error: Some(insufficient_funds()),
            latest_charge: bare("ch_1"),
            ..pi(30, "canceled")
        });
        let a = run(
            state(Intent::Authorize),
            &[declined.clone(), canceled.clone()],
        );
        let b = run(state(Intent::Authorize), &[canceled, declined]);
        assert_eq!(a, b);
        assert_eq!(a.status, T::AuthorizationFailed);
        assert_eq!(a.error_code, Some(ErrorCode::IncompleteBuyerApproval));
        assert_eq!(a.raw_response_code.as_deref(), Some("insufficient_funds"));
    }

    #[test]
    fn async_failure_after_processing_is_final() {
        let processing = Observation::PaymentIntent(PaymentIntentSnapshot {
            latest_charge: bare("py_1"),
            ..pi(10, "processing")
        });
        let failed = Observation::PaymentIntent(PaymentIntentSnapshot {
            last_payment_error: Some(PaymentError {
                error_type: Some("card_error".into()),
                code: Some("payment_method_provider_decline".into()),
                ..PaymentError::default()
            }),
            latest_charge: bare("py_1"),
            ..pi(10, "requires_payment_method")
        });
        let a = run(
            state(Intent::Capture),
            &[processing.clone(), failed.clone()],
        );
        let b = run(state(Intent::Capture), &[failed, processing]);
        assert_eq!(a, b);
        assert_eq!(a.status, T::AuthorizationDeclined);
        assert_eq!(a.error_code, Some(ErrorCode::ServiceDecline));
    }

    #[test]
    fn refund_statuses_move_forward_only() {
        let r = |status: &str| {
            Observation::Refund(RefundSnapshot {
                id: "re_1".into(),
                status: status.into(),
            })
        };
        let s = run(state(Intent::Capture), &[r("pending"), r("succeeded")]);
        assert_eq!(s.refunds["re_1"], RefundStatus::Succeeded);
        let out = apply(&s, &r("pending"));
        assert_eq!(out.state.refunds["re_1"], RefundStatus::Succeeded);
        assert!(matches!(
            out.changes[..],
            [Change::Ignored {
                reason: IgnoredReason::RefundNotForward { .. }
            }]
        ));
        // Stripe can fail a refund after it succeeded.
        assert_eq!(
            apply(&s, &r("failed")).state.refunds["re_1"],
            RefundStatus::Failed
        );
    }

    #[test]
    fn refunded_amount_is_cumulative_never_added() {
        let refunded = |at, cumulative| {
            Observation::Charge(ChargeSnapshot {
                captured: true,
                amount_captured: 1000,
                amount_refunded: cumulative,
                ..charge(at, "ch_1", "succeeded")
            })
        };
        let s = run(
            state(Intent::Capture),
            &[
                refunded(10, 300),
                refunded(20, 500),
                refunded(10, 300),
                refunded(20, 500),
            ],
        );
        assert_eq!(s.refunded_amount, 500);
        assert_eq!(s.captured_amount, 1000);
        assert_eq!(s.status, T::CaptureSucceeded);
    }

    #[test]
    fn expiry_in_either_order() {
        let expired = Observation::ChargeExpired(charge(40, "ch_1", "succeeded"));
        let canceled = Observation::PaymentIntent(PaymentIntentSnapshot {
            cancellation_reason: Some("automatic".into()),
            latest_charge: bare("ch_1"),
            ..pi(40, "canceled")
        });
        let a = run(
            state(Intent::Authorize),
            &[expired.clone(), canceled.clone()],
        );
        let b = run(state(Intent::Authorize), &[canceled, expired]);
        assert_eq!(a, b);
        assert_eq!(a.status, T::AuthorizationVoided);
        assert_eq!(a.error_code, Some(ErrorCode::ExpiredAuthorization));
    }

    #[test]
    fn unknown_values_are_ignored_not_fatal() {
        let out = apply(
            &state(Intent::Capture),
            &Observation::PaymentIntent(pi(10, "requires_reauthorization")),
        );
        assert_eq!(out.state.status, T::BuyerApprovalPending);
        assert!(matches!(
            out.changes[..],
            [Change::Ignored {
                reason: IgnoredReason::UnknownStatus { .. }
            }]
        ));
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = run(
            state(Intent::Authorize),
            &[Observation::PaymentIntent(PaymentIntentSnapshot {
                cancellation_reason: Some("abandoned".into()),
                latest_charge: bare("ch_1"),
                ..pi(30, "canceled")
            })],
        );
        let json = serde_json::to_string(&s).unwrap();
        let back: TransactionState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
