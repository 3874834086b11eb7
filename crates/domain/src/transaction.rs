//! Transaction statuses, the forward-only transition table, and what a Stripe PaymentIntent's
//! state means for a transaction (SPEC §3.1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error_code::{ErrorCode, ErrorInfo, PaymentError};

/// The nine statuses of SPEC §3.1; one per transaction, and it only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionStatus {
    Processing,
    BuyerApprovalPending,
    AuthorizationSucceeded,
    AuthorizationDeclined,
    AuthorizationFailed,
    AuthorizationVoidPending,
    AuthorizationVoided,
    CapturePending,
    CaptureSucceeded,
}

/// The one transition table (SPEC §3.1). Everything that changes a status asks it.
///
/// Written as an exhaustive match with no wildcard, so that a new status does not compile until
/// every pair involving it has been decided. A status never "moves" to itself.
pub fn allowed(from: TransactionStatus, to: TransactionStatus) -> bool {
    use TransactionStatus::*;
    match (from, to) {
        (
            Processing,
            BuyerApprovalPending
            | AuthorizationSucceeded
            | AuthorizationDeclined
            | AuthorizationFailed
            | CapturePending
            | CaptureSucceeded,
        ) => true,
        (Processing, Processing | AuthorizationVoidPending | AuthorizationVoided) => false,

        (
            BuyerApprovalPending,
            AuthorizationSucceeded
            | AuthorizationDeclined
            | AuthorizationFailed
            | CapturePending
            | CaptureSucceeded,
        ) => true,
        (
            BuyerApprovalPending,
            Processing | BuyerApprovalPending | AuthorizationVoidPending | AuthorizationVoided,
        ) => false,

        (
            AuthorizationSucceeded,
            CapturePending | CaptureSucceeded | AuthorizationVoidPending | AuthorizationVoided,
        ) => true,
        (
            AuthorizationSucceeded,
            Processing
            | BuyerApprovalPending
            | AuthorizationSucceeded
            | AuthorizationDeclined
            | AuthorizationFailed,
        ) => false,

        (AuthorizationVoidPending, AuthorizationVoided) => true,
        (
            AuthorizationVoidPending,
            Processing
            | BuyerApprovalPending
            | AuthorizationSucceeded
            | AuthorizationDeclined
            | AuthorizationFailed
            | AuthorizationVoidPending
            | CapturePending
            | CaptureSucceeded,
        ) => false,

        (CapturePending, CaptureSucceeded | AuthorizationDeclined | AuthorizationFailed) => true,
        (
            CapturePending,
            Processing
            | BuyerApprovalPending
            | AuthorizationSucceeded
            | AuthorizationVoidPending
            | AuthorizationVoided
            | CapturePending,
        ) => false,

        // Final statuses go nowhere.
        (
            AuthorizationDeclined | AuthorizationFailed | AuthorizationVoided | CaptureSucceeded,
            Processing
            | BuyerApprovalPending
            | AuthorizationSucceeded
            | AuthorizationDeclined
            | AuthorizationFailed
            | AuthorizationVoidPending
            | AuthorizationVoided
            | CapturePending
            | CaptureSucceeded,
        ) => false,
    }
}

impl TransactionStatus {
    pub const ALL: [TransactionStatus; 9] = [
        TransactionStatus::Processing,
        TransactionStatus::BuyerApprovalPending,
        TransactionStatus::AuthorizationSucceeded,
        TransactionStatus::AuthorizationDeclined,
        TransactionStatus::AuthorizationFailed,
        TransactionStatus::AuthorizationVoidPending,
        TransactionStatus::AuthorizationVoided,
        TransactionStatus::CapturePending,
        TransactionStatus::CaptureSucceeded,
    ];

    pub fn can_move_to(self, to: TransactionStatus) -> bool {
        allowed(self, to)
    }

    /// No transition leaves it.
    pub fn is_final(self) -> bool {
        TransactionStatus::ALL.iter().all(|&to| !allowed(self, to))
    }

    /// The shortest chain of allowed moves from `self` to `to` (excluding `self`), if any.
    ///
    /// An observation may prove a status two steps ahead: a released authorization proves
    /// `authorization_succeeded` happened before `authorization_voided`. Walking the table keeps
    /// every step an allowed one, and the audit trail shows each.
    pub fn path_to(self, to: TransactionStatus) -> Option<Vec<TransactionStatus>> {
        // Breadth-first over nine nodes; `ALL` fixes the visiting order, so the path is
        // deterministic.
        let mut queue = std::collections::VecDeque::from([vec![self]]);
        while let Some(path) = queue.pop_front() {
            let last = *path.last()?;
            for next in TransactionStatus::ALL {
                if allowed(last, next) && !path.contains(&next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    if next == to {
                        longer.remove(0);
                        return Some(longer);
                    }
                    queue.push_back(longer);
                }
            }
        }
        None
    }

    /// Position in a topological order of the table: every allowed move strictly increases it
    /// (a test checks this), which is why forward-only application converges.
    pub fn rank(self) -> u8 {
        use TransactionStatus::*;
        match self {
            Processing => 0,
            BuyerApprovalPending => 1,
            AuthorizationSucceeded => 2,
            AuthorizationVoidPending | CapturePending => 3,
            AuthorizationDeclined
            | AuthorizationFailed
            | AuthorizationVoided
            | CaptureSucceeded => 4,
        }
    }

    /// Every status's name, in the order of [`TransactionStatus::ALL`]: the one list the API
    /// document, the dashboard and the store read.
    pub const NAMES: [&'static str; 9] = {
        let mut names = [""; 9];
        let mut i = 0;
        while i < names.len() {
            names[i] = TransactionStatus::ALL[i].as_str();
            i += 1;
        }
        names
    };

    pub const fn as_str(self) -> &'static str {
        use TransactionStatus::*;
        match self {
            Processing => "processing",
            BuyerApprovalPending => "buyer_approval_pending",
            AuthorizationSucceeded => "authorization_succeeded",
            AuthorizationDeclined => "authorization_declined",
            AuthorizationFailed => "authorization_failed",
            AuthorizationVoidPending => "authorization_void_pending",
            AuthorizationVoided => "authorization_voided",
            CapturePending => "capture_pending",
            CaptureSucceeded => "capture_succeeded",
        }
    }
}

impl fmt::Display for TransactionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransactionStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TransactionStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown transaction status {s:?}"))
    }
}

/// `authorize` (Stripe `capture_method=manual`) or `capture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    Authorize,
    Capture,
}

/// A Stripe PaymentIntent's `status`. Unknown values (a newer API version) are kept, not
/// refused: they map to "no change" rather than failing the webhook.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum PaymentIntentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Canceled,
    Succeeded,
    Unknown(String),
}

impl PaymentIntentStatus {
    pub fn parse(s: &str) -> PaymentIntentStatus {
        use PaymentIntentStatus::*;
        match s {
            "requires_payment_method" => RequiresPaymentMethod,
            "requires_confirmation" => RequiresConfirmation,
            "requires_action" => RequiresAction,
            "processing" => Processing,
            "requires_capture" => RequiresCapture,
            "canceled" => Canceled,
            "succeeded" => Succeeded,
            other => Unknown(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        use PaymentIntentStatus::*;
        match self {
            RequiresPaymentMethod => "requires_payment_method",
            RequiresConfirmation => "requires_confirmation",
            RequiresAction => "requires_action",
            Processing => "processing",
            RequiresCapture => "requires_capture",
            Canceled => "canceled",
            Succeeded => "succeeded",
            Unknown(s) => s,
        }
    }
}

impl From<String> for PaymentIntentStatus {
    fn from(s: String) -> Self {
        PaymentIntentStatus::parse(&s)
    }
}

impl From<PaymentIntentStatus> for String {
    fn from(s: PaymentIntentStatus) -> String {
        s.as_str().to_owned()
    }
}

/// What the PaymentIntent → transaction mapping needs to know.
#[derive(Debug, Clone, Copy)]
pub struct PaymentIntentView<'a> {
    pub status: &'a PaymentIntentStatus,
    pub intent: Intent,
    /// An approval URL (or a direct-flow session) was handed out, so a buyer is approving.
    pub approval_issued: bool,
    /// The PaymentIntent had reached `requires_capture` (for `canceled`).
    pub was_authorized: bool,
    /// The failed attempt is one that had been reported `processing` (an asynchronous method
    /// failing after submission): such a failure is final, unlike a decline while approving.
    pub failed_after_processing: bool,
    pub cancellation_reason: Option<&'a str>,
    pub last_payment_error: Option<&'a PaymentError>,
}

/// The mapping's answer: the status the PaymentIntent implies (`None`: leave the status as it
/// is) and the error fields that go with it (`None` clears them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMapping {
    pub status: Option<TransactionStatus>,
    pub error: Option<ErrorInfo>,
}

/// The table of SPEC §3.1: which transaction status a PaymentIntent's state implies.
///
/// | PaymentIntent | transaction |
/// |---|---|
/// | `requires_payment_method`, `requires_confirmation`, `requires_action` | `buyer_approval_pending` (`processing` before an approval URL exists); a decline is recorded but not final |
/// | `requires_payment_method` + error, with no buyer approving, or after `processing` | `authorization_declined` / `authorization_failed` |
/// | `processing` | `capture_pending` (intent capture); unchanged (intent authorize) |
/// | `requires_capture` | `authorization_succeeded` |
/// | `succeeded` | `capture_succeeded` |
/// | `canceled` | `authorization_voided` if it had been authorized, else `authorization_failed`; `error_code` from `cancellation_reason` |
pub fn map_payment_intent(v: &PaymentIntentView<'_>) -> StatusMapping {
    use PaymentIntentStatus as Pi;
    use TransactionStatus as T;
    let decline = v.last_payment_error.map(PaymentError::normalise);
    let to = |status, error| StatusMapping {
        status: Some(status),
        error,
    };
    match v.status {
        Pi::RequiresPaymentMethod
            if decline.is_some() && (!v.approval_issued || v.failed_after_processing) =>
        {
            // A server-side confirmation that failed, or an asynchronous payment that failed
            // after submission: nobody is approving any more, so this is the end.
            let error = decline.clone();
            let declined = error.as_ref().is_some_and(|e| e.error_code.is_decline());
            to(
                if declined {
                    T::AuthorizationDeclined
                } else {
                    T::AuthorizationFailed
                },
                error,
            )
        }
        Pi::RequiresPaymentMethod | Pi::RequiresConfirmation | Pi::RequiresAction => {
            // A decline while the buyer approves is not final: the buyer may try another card.
            // It is recorded (error fields set) and the status stays pending.
            let status = if v.approval_issued {
                T::BuyerApprovalPending
            } else {
                T::Processing
            };
            to(status, decline)
        }
        Pi::Processing => match v.intent {
            Intent::Capture => to(T::CapturePending, None),
            Intent::Authorize => StatusMapping {
                status: None,
                error: None,
            },
        },
        Pi::RequiresCapture => to(T::AuthorizationSucceeded, None),
        Pi::Succeeded => to(T::CaptureSucceeded, None),
        Pi::Canceled => {
            let code = cancellation_error(v.cancellation_reason, v.was_authorized);
            // Keep Stripe's last decline (if any) as the raw values: it is why the buyer gave up.
            let error = code.map(|error_code| ErrorInfo {
                error_code,
                ..decline
                    .clone()
                    .unwrap_or_else(|| ErrorInfo::code(error_code))
            });
            if v.was_authorized {
                to(T::AuthorizationVoided, error)
            } else {
                to(T::AuthorizationFailed, error)
            }
        }
        Pi::Unknown(_) => StatusMapping {
            status: None,
            error: None,
        },
    }
}

/// `error_code` for a canceled PaymentIntent, from Stripe's `cancellation_reason`.
///
/// Not authorized: the payment failed and the code says why (`canceled` when someone chose to).
/// Authorized: releasing an authorization on purpose is a void, not an error, so only a lapse
/// (`automatic` / `expired`: Stripe canceled it) or fraud leaves a code.
fn cancellation_error(reason: Option<&str>, was_authorized: bool) -> Option<ErrorCode> {
    match (reason, was_authorized) {
        (Some("automatic" | "expired"), true) => Some(ErrorCode::ExpiredAuthorization),
        (Some("fraudulent"), _) => Some(ErrorCode::SuspectedFraud),
        (_, true) => None,
        // Tollgate's approval-expiry job cancels with `abandoned`; Stripe's own expiry (a
        // Checkout Session or a payment attempt timing out) says `automatic` / `expired`.
        (Some("abandoned" | "automatic" | "expired"), false) => {
            Some(ErrorCode::IncompleteBuyerApproval)
        }
        (_, false) => Some(ErrorCode::Canceled),
    }
}

/// A refund's status as Tollgate reports it (SPEC §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Processing,
    Succeeded,
    Failed,
    /// Refused before it existed at Stripe (set by the server, never by a Stripe event).
    Declined,
    Voided,
}

impl RefundStatus {
    /// Stripe's refund status (SPEC §3.5): `pending` / `requires_action` → `processing`,
    /// `succeeded`, `failed`, `canceled` → `voided`. Unknown values → `None` (ignored).
    pub fn from_stripe(s: &str) -> Option<RefundStatus> {
        match s {
            "pending" | "requires_action" => Some(RefundStatus::Processing),
            "succeeded" => Some(RefundStatus::Succeeded),
            "failed" => Some(RefundStatus::Failed),
            "canceled" => Some(RefundStatus::Voided),
            _ => None,
        }
    }

    /// Refund statuses move forward only: `processing` → any final status, and finals stay,
    /// with one exception taken from Stripe: a `succeeded` refund can still fail later (the
    /// buyer's account closed; Stripe then sends `charge.refund.updated` with
    /// `previous_attributes.status: succeeded`). Ranking `failed` above `succeeded` keeps that
    /// order-proof.
    pub fn can_move_to(self, to: RefundStatus) -> bool {
        use RefundStatus::*;
        match (self, to) {
            (Processing, Succeeded | Failed | Declined | Voided) => true,
            (Succeeded, Failed) => true,
            (Processing, Processing)
            | (Succeeded, Processing | Succeeded | Declined | Voided)
            | (Failed | Declined | Voided, Processing | Succeeded | Failed | Declined | Voided) => {
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransactionStatus::*;

    /// The table of SPEC §3.1, copied independently of `allowed`.
    const SPEC_TABLE: &[(TransactionStatus, &[TransactionStatus])] = &[
        (
            Processing,
            &[
                BuyerApprovalPending,
                AuthorizationSucceeded,
                AuthorizationDeclined,
                AuthorizationFailed,
                CapturePending,
                CaptureSucceeded,
            ],
        ),
        (
            BuyerApprovalPending,
            &[
                AuthorizationSucceeded,
                AuthorizationDeclined,
                AuthorizationFailed,
                CapturePending,
                CaptureSucceeded,
            ],
        ),
        (
            AuthorizationSucceeded,
            &[
                CapturePending,
                CaptureSucceeded,
                AuthorizationVoidPending,
                AuthorizationVoided,
            ],
        ),
        (AuthorizationVoidPending, &[AuthorizationVoided]),
        (
            CapturePending,
            &[CaptureSucceeded, AuthorizationDeclined, AuthorizationFailed],
        ),
    ];

    #[test]
    fn every_pair_of_the_transition_table() {
        let mut allowed_count = 0;
        for from in TransactionStatus::ALL {
            for to in TransactionStatus::ALL {
                let expected = SPEC_TABLE
                    .iter()
                    .any(|(f, tos)| *f == from && tos.contains(&to));
                assert_eq!(allowed(from, to), expected, "{from} -> {to}");
                allowed_count += usize::from(expected);
            }
        }
        assert_eq!(allowed_count, 19);
    }

    #[test]
    fn names_are_the_wire_names_of_all_in_order() {
        assert_eq!(TransactionStatus::NAMES.len(), TransactionStatus::ALL.len());
        for (status, name) in TransactionStatus::ALL
            .into_iter()
            .zip(TransactionStatus::NAMES)
        {
            assert_eq!(serde_json::to_value(status).unwrap(), name);
            assert_eq!(name.parse::<TransactionStatus>(), Ok(status));
        }
        let mut unique = TransactionStatus::NAMES.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 9);
    }

    #[test]
    fn finals_and_ranks() {
        let finals: Vec<_> = TransactionStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .collect();
        assert_eq!(
            finals,
            [
                AuthorizationDeclined,
                AuthorizationFailed,
                AuthorizationVoided,
                CaptureSucceeded
            ]
        );
        for from in TransactionStatus::ALL {
            for to in TransactionStatus::ALL {
                if allowed(from, to) {
                    assert!(from.rank() < to.rank(), "{from} -> {to}");
                }
            }
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            BuyerApprovalPending.path_to(AuthorizationVoided),
            Some(vec![AuthorizationSucceeded, AuthorizationVoided])
        );
        assert_eq!(
            Processing.path_to(CaptureSucceeded),
            Some(vec![CaptureSucceeded])
        );
        assert_eq!(CaptureSucceeded.path_to(AuthorizationVoided), None);
        assert_eq!(CapturePending.path_to(AuthorizationVoided), None);
        assert_eq!(Processing.path_to(Processing), None);
    }

    #[test]
    fn status_names() {
        for s in TransactionStatus::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert_eq!(s.as_str().parse::<TransactionStatus>(), Ok(s));
        }
        assert_eq!(
            serde_json::to_string(&AuthorizationVoidPending).unwrap(),
            "\"authorization_void_pending\""
        );
        assert_eq!(
            serde_json::to_string(&Intent::Authorize).unwrap(),
            "\"authorize\""
        );
        let pi: PaymentIntentStatus = serde_json::from_str("\"requires_capture\"").unwrap();
        assert_eq!(pi, PaymentIntentStatus::RequiresCapture);
        let new: PaymentIntentStatus = serde_json::from_str("\"requires_reauth\"").unwrap();
        assert_eq!(new, PaymentIntentStatus::Unknown("requires_reauth".into()));
        assert_eq!(serde_json::to_string(&new).unwrap(), "\"requires_reauth\"");
    }

    fn card_decline() -> PaymentError {
        PaymentError {
            error_type: Some("card_error".into()),
            code: Some("card_declined".into()),
            decline_code: Some("insufficient_funds".into()),
            message: Some("Your card has insufficient funds.".into()),
        }
    }

    fn view<'a>(status: &'a PaymentIntentStatus) -> PaymentIntentView<'a> {
        PaymentIntentView {
            status,
            intent: Intent::Capture,
            approval_issued: true,
            was_authorized: false,
            failed_after_processing: false,
            cancellation_reason: None,
            last_payment_error: None,
        }
    }

    fn code(m: &StatusMapping) -> Option<ErrorCode> {
        m.error.as_ref().map(|e| e.error_code)
    }

    #[test]
    fn mapping_table_rows() {
        use PaymentIntentStatus as Pi;
        for pi in [
            Pi::RequiresPaymentMethod,
            Pi::RequiresConfirmation,
            Pi::RequiresAction,
        ] {
            let m = map_payment_intent(&view(&pi));
            assert_eq!(m.status, Some(BuyerApprovalPending), "{pi:?}");
            let before_url = PaymentIntentView {
                approval_issued: false,
                ..view(&pi)
            };
            assert_eq!(
                map_payment_intent(&before_url).status,
                Some(Processing),
                "{pi:?}"
            );
        }
        let processing = Pi::Processing;
        assert_eq!(
            map_payment_intent(&view(&processing)).status,
            Some(CapturePending)
        );
        let authorize = PaymentIntentView {
            intent: Intent::Authorize,
            ..view(&processing)
        };
        assert_eq!(map_payment_intent(&authorize).status, None);
        assert_eq!(
            map_payment_intent(&view(&Pi::RequiresCapture)).status,
            Some(AuthorizationSucceeded)
        );
        assert_eq!(
            map_payment_intent(&view(&Pi::Succeeded)).status,
            Some(CaptureSucceeded)
        );
        let unknown = Pi::Unknown("new".into());
        assert_eq!(map_payment_intent(&view(&unknown)).status, None);
    }

    #[test]
    fn declines_while_approving_are_not_final() {
        let pi = PaymentIntentStatus::RequiresPaymentMethod;
        let e = card_decline();
        let m = map_payment_intent(&PaymentIntentView {
            last_payment_error: Some(&e),
            ..view(&pi)
        });
        assert_eq!(m.status, Some(BuyerApprovalPending));
        assert_eq!(code(&m), Some(ErrorCode::InsufficientFunds));
        assert_eq!(
            m.error.and_then(|e| e.raw_response_code).as_deref(),
            Some("insufficient_funds")
        );
    }

    #[test]
    fn server_side_and_async_failures_are_final() {
        let pi = PaymentIntentStatus::RequiresPaymentMethod;
        let e = card_decline();
        let server_side = PaymentIntentView {
            approval_issued: false,
            last_payment_error: Some(&e),
            ..view(&pi)
        };
        let m = map_payment_intent(&server_side);
        assert_eq!(m.status, Some(AuthorizationDeclined));
        assert_eq!(code(&m), Some(ErrorCode::InsufficientFunds));

        let api = PaymentError {
            error_type: Some("api_error".into()),
            ..PaymentError::default()
        };
        let after_processing = PaymentIntentView {
            failed_after_processing: true,
            last_payment_error: Some(&api),
            ..view(&pi)
        };
        let m = map_payment_intent(&after_processing);
        assert_eq!(m.status, Some(AuthorizationFailed));
        assert_eq!(code(&m), Some(ErrorCode::ServiceError));
    }

    #[test]
    fn canceled_rows() {
        let pi = PaymentIntentStatus::Canceled;
        let cases = [
            // (reason, was_authorized, status, error_code)
            (None, false, AuthorizationFailed, Some(ErrorCode::Canceled)),
            (
                Some("requested_by_customer"),
                false,
                AuthorizationFailed,
                Some(ErrorCode::Canceled),
            ),
            (
                Some("duplicate"),
                false,
                AuthorizationFailed,
                Some(ErrorCode::Canceled),
            ),
            (
                Some("abandoned"),
                false,
                AuthorizationFailed,
                Some(ErrorCode::IncompleteBuyerApproval),
            ),
            (
                Some("automatic"),
                false,
                AuthorizationFailed,
                Some(ErrorCode::IncompleteBuyerApproval),
            ),
            (
                Some("fraudulent"),
                false,
                AuthorizationFailed,
                Some(ErrorCode::SuspectedFraud),
            ),
            (None, true, AuthorizationVoided, None),
            (
                Some("requested_by_customer"),
                true,
                AuthorizationVoided,
                None,
            ),
            (
                Some("automatic"),
                true,
                AuthorizationVoided,
                Some(ErrorCode::ExpiredAuthorization),
            ),
            (
                Some("expired"),
                true,
                AuthorizationVoided,
                Some(ErrorCode::ExpiredAuthorization),
            ),
            (
                Some("fraudulent"),
                true,
                AuthorizationVoided,
                Some(ErrorCode::SuspectedFraud),
            ),
        ];
        for (reason, was_authorized, status, error_code) in cases {
            let m = map_payment_intent(&PaymentIntentView {
                was_authorized,
                cancellation_reason: reason,
                ..view(&pi)
            });
            assert_eq!(m.status, Some(status), "{reason:?} {was_authorized}");
            assert_eq!(code(&m), error_code, "{reason:?} {was_authorized}");
        }
        // The last decline stays as the raw values of an abandoned payment.
        let e = card_decline();
        let m = map_payment_intent(&PaymentIntentView {
            cancellation_reason: Some("abandoned"),
            last_payment_error: Some(&e),
            ..view(&pi)
        });
        let error = m.error.unwrap();
        assert_eq!(error.error_code, ErrorCode::IncompleteBuyerApproval);
        assert_eq!(
            error.raw_response_code.as_deref(),
            Some("insufficient_funds")
        );
    }

    #[test]
    fn refund_statuses() {
        use RefundStatus::*;
        assert_eq!(RefundStatus::from_stripe("pending"), Some(Processing));
        assert_eq!(
            RefundStatus::from_stripe("requires_action"),
            Some(Processing)
        );
        assert_eq!(RefundStatus::from_stripe("succeeded"), Some(Succeeded));
        assert_eq!(RefundStatus::from_stripe("failed"), Some(Failed));
        assert_eq!(RefundStatus::from_stripe("canceled"), Some(Voided));
        assert_eq!(RefundStatus::from_stripe("weird"), None);
        let all = [Processing, Succeeded, Failed, Declined, Voided];
        let forward = [
            (Processing, Succeeded),
            (Processing, Failed),
            (Processing, Declined),
            (Processing, Voided),
            (Succeeded, Failed),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    from.can_move_to(to),
                    forward.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }
}
