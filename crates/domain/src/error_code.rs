//! Normalised transaction `error_code` (SPEC §3.1) and its derivation from Stripe's
//! `last_payment_error` (`type`, `code`, `decline_code`, `message`).
//!
//! The vocabulary is the seed orchestrator's, so its SDKs and dashboards understand it. Stripe's
//! raw values are kept beside it (`raw_response_code`, `raw_response_description`).

use serde::{Deserialize, Serialize};

/// The normalised reason a transaction did not (or not yet) succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // Tollgate's own outcomes.
    /// The buyer did not finish approving (closed the page, the approval expired).
    IncompleteBuyerApproval,
    /// The buyer failed authentication (3-D Secure).
    FailedBuyerApproval,
    /// The payment was canceled on purpose (API cancel, dashboard).
    Canceled,
    // Declines: the issuer or the payment service said no.
    CanceledPaymentMethod,
    ExpiredAuthorization,
    ExpiredPaymentMethod,
    IncorrectBillingAddress,
    IncorrectCurrency,
    IncorrectCvv,
    IncorrectExpiryDate,
    InsufficientFunds,
    IssuerDecline,
    OtherDecline,
    RefusedTransaction,
    ServiceDecline,
    SuspectedFraud,
    // Failures: something other than a decline went wrong.
    DuplicateTransaction,
    InvalidAmount,
    InvalidPaymentMethod,
    InvalidRequestParameters,
    RequiresBuyerAuthentication,
    ServiceError,
    ServiceNetworkError,
    ServiceRateLimit,
    UnavailablePaymentMethod,
    UnknownPaymentMethod,
    UnsupportedPaymentMethod,
    UnsupportedTransaction,
}

impl ErrorCode {
    /// Whether a payment ending with this code is `authorization_declined` (the issuer or the
    /// payment service refused) rather than `authorization_failed` (anything else). The split
    /// follows the seed orchestrator's "connector declines" group. Exhaustive on purpose: a new
    /// code must be classified.
    pub fn is_decline(self) -> bool {
        use ErrorCode::*;
        match self {
            CanceledPaymentMethod
            | ExpiredAuthorization
            | ExpiredPaymentMethod
            | IncorrectBillingAddress
            | IncorrectCurrency
            | IncorrectCvv
            | IncorrectExpiryDate
            | InsufficientFunds
            | IssuerDecline
            | OtherDecline
            | RefusedTransaction
            | ServiceDecline
            | SuspectedFraud => true,
            IncompleteBuyerApproval
            | FailedBuyerApproval
            | Canceled
            | DuplicateTransaction
            | InvalidAmount
            | InvalidPaymentMethod
            | InvalidRequestParameters
            | RequiresBuyerAuthentication
            | ServiceError
            | ServiceNetworkError
            | ServiceRateLimit
            | UnavailablePaymentMethod
            | UnknownPaymentMethod
            | UnsupportedPaymentMethod
            | UnsupportedTransaction => false,
        }
    }

    /// The wire name, e.g. `"insufficient_funds"`.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            IncompleteBuyerApproval => "incomplete_buyer_approval",
            FailedBuyerApproval => "failed_buyer_approval",
            Canceled => "canceled",
            CanceledPaymentMethod => "canceled_payment_method",
            ExpiredAuthorization => "expired_authorization",
            ExpiredPaymentMethod => "expired_payment_method",
            IncorrectBillingAddress => "incorrect_billing_address",
            IncorrectCurrency => "incorrect_currency",
            IncorrectCvv => "incorrect_cvv",
            IncorrectExpiryDate => "incorrect_expiry_date",
            InsufficientFunds => "insufficient_funds",
            IssuerDecline => "issuer_decline",
            OtherDecline => "other_decline",
            RefusedTransaction => "refused_transaction",
            ServiceDecline => "service_decline",
            SuspectedFraud => "suspected_fraud",
            DuplicateTransaction => "duplicate_transaction",
            InvalidAmount => "invalid_amount",
            InvalidPaymentMethod => "invalid_payment_method",
            InvalidRequestParameters => "invalid_request_parameters",
            RequiresBuyerAuthentication => "requires_buyer_authentication",
            ServiceError => "service_error",
            ServiceNetworkError => "service_network_error",
            ServiceRateLimit => "service_rate_limit",
            UnavailablePaymentMethod => "unavailable_payment_method",
            UnknownPaymentMethod => "unknown_payment_method",
            UnsupportedPaymentMethod => "unsupported_payment_method",
            UnsupportedTransaction => "unsupported_transaction",
        }
    }

    /// Normalises a Stripe error. The `decline_code` is the most specific signal (the issuer's
    /// reason behind `code: card_declined`), then the `code`, then the error `type`.
    pub fn from_stripe(
        error_type: Option<&str>,
        code: Option<&str>,
        decline_code: Option<&str>,
    ) -> ErrorCode {
        decline_code
            .and_then(from_decline_code)
            .or_else(|| code.and_then(from_code))
            .unwrap_or(match (error_type, decline_code) {
                // An issuer decline whose reason we do not know.
                (Some("card_error"), _) | (_, Some(_)) => ErrorCode::IssuerDecline,
                (Some("api_error"), _) => ErrorCode::ServiceError,
                (Some("invalid_request_error"), _) => ErrorCode::InvalidRequestParameters,
                _ => ErrorCode::OtherDecline,
            })
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stripe decline codes (`decline_code`, https://docs.stripe.com/declines/codes).
fn from_decline_code(d: &str) -> Option<ErrorCode> {
    use ErrorCode::*;
    Some(match d {
        "insufficient_funds" | "card_velocity_exceeded" | "withdrawal_count_limit_exceeded" => {
            InsufficientFunds
        }
        "incorrect_cvc" | "invalid_cvc" => IncorrectCvv,
        "expired_card" => ExpiredPaymentMethod,
        "invalid_expiry_month" | "invalid_expiry_year" => IncorrectExpiryDate,
        "incorrect_zip" | "incorrect_address" => IncorrectBillingAddress,
        "currency_not_supported" => IncorrectCurrency,
        "fraudulent" | "merchant_blacklist" | "security_violation" => SuspectedFraud,
        // Stripe advises presenting these as a generic decline; the code still tells the
        // merchant the card itself is gone.
        "lost_card" | "stolen_card" | "pickup_card" | "restricted_card" => CanceledPaymentMethod,
        "incorrect_number"
        | "invalid_number"
        | "invalid_account"
        | "new_account_information_available" => UnknownPaymentMethod,
        "card_not_supported" => UnsupportedPaymentMethod,
        "transaction_not_allowed" | "service_not_allowed" | "not_permitted" => {
            UnsupportedTransaction
        }
        "invalid_amount" => InvalidAmount,
        "duplicate_transaction" => DuplicateTransaction,
        "authentication_required"
        | "offline_pin_required"
        | "online_or_offline_pin_required"
        | "incorrect_pin"
        | "invalid_pin"
        | "pin_try_exceeded" => RequiresBuyerAuthentication,
        "processing_error" | "reenter_transaction" => ServiceError,
        "issuer_not_available" => ServiceNetworkError,
        "testmode_decline" | "live_mode_test_card" | "test_mode_live_card" => InvalidPaymentMethod,
        "generic_decline"
        | "do_not_honor"
        | "call_issuer"
        | "do_not_try_again"
        | "no_action_taken"
        | "revocation_of_all_authorizations"
        | "revocation_of_authorization"
        | "stop_payment_order"
        | "approve_with_id"
        | "try_again_later" => IssuerDecline,
        _ => return None,
    })
}

/// Stripe error codes (`code`, https://docs.stripe.com/error-codes) that can end a payment.
fn from_code(c: &str) -> Option<ErrorCode> {
    use ErrorCode::*;
    Some(match c {
        "card_declined" | "card_decline_rate_limit_exceeded" => IssuerDecline,
        "insufficient_funds" => InsufficientFunds,
        "expired_card" => ExpiredPaymentMethod,
        "incorrect_cvc" | "invalid_cvc" => IncorrectCvv,
        "invalid_expiry_month" | "invalid_expiry_year" => IncorrectExpiryDate,
        "incorrect_number" | "invalid_number" => UnknownPaymentMethod,
        "incorrect_zip" | "postal_code_invalid" => IncorrectBillingAddress,
        "processing_error" => ServiceError,
        "payment_intent_authentication_failure" | "setup_intent_authentication_failure" => {
            FailedBuyerApproval
        }
        "authentication_required" => RequiresBuyerAuthentication,
        "payment_intent_payment_attempt_expired" => IncompleteBuyerApproval,
        "payment_intent_payment_attempt_failed" => OtherDecline,
        "payment_method_provider_decline" => ServiceDecline,
        "payment_method_provider_timeout" => ServiceNetworkError,
        "payment_method_unactivated" | "payment_method_not_available" => UnavailablePaymentMethod,
        "payment_method_unsupported_type" | "payment_method_currency_mismatch" => {
            UnsupportedPaymentMethod
        }
        "amount_too_large" | "amount_too_small" | "invalid_charge_amount" => InvalidAmount,
        "charge_expired_for_capture" => ExpiredAuthorization,
        "rate_limit" | "lock_timeout" => ServiceRateLimit,
        _ => return None,
    })
}

/// Stripe's `last_payment_error` (or a charge's failure), as much of it as Tollgate keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PaymentError {
    /// Stripe's `type`: `card_error`, `api_error`, `invalid_request_error`, …
    pub error_type: Option<String>,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: Option<String>,
}

impl PaymentError {
    /// The normalised code with the raw values kept beside it: `raw_response_code` is the most
    /// specific Stripe code (the decline code when there is one), `raw_response_description`
    /// Stripe's message.
    pub fn normalise(&self) -> ErrorInfo {
        ErrorInfo {
            error_code: ErrorCode::from_stripe(
                self.error_type.as_deref(),
                self.code.as_deref(),
                self.decline_code.as_deref(),
            ),
            raw_response_code: self.decline_code.clone().or_else(|| self.code.clone()),
            raw_response_description: self.message.clone(),
        }
    }
}

/// The three error fields of a transaction, always set together.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub error_code: ErrorCode,
    pub raw_response_code: Option<String>,
    pub raw_response_description: Option<String>,
}

impl ErrorInfo {
    /// A Tollgate-side outcome with no Stripe error behind it.
    pub fn code(error_code: ErrorCode) -> ErrorInfo {
        ErrorInfo {
            error_code,
            raw_response_code: None,
            raw_response_description: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorCode::*;

    fn norm(t: Option<&str>, c: Option<&str>, d: Option<&str>) -> ErrorCode {
        ErrorCode::from_stripe(t, c, d)
    }

    #[test]
    fn spec_examples() {
        let card = Some("card_error");
        let declined = Some("card_declined");
        assert_eq!(
            norm(card, declined, Some("insufficient_funds")),
            InsufficientFunds
        );
        assert_eq!(norm(card, Some("incorrect_cvc"), None), IncorrectCvv);
        assert_eq!(norm(card, declined, Some("incorrect_cvc")), IncorrectCvv);
        assert_eq!(
            norm(card, Some("expired_card"), Some("expired_card")),
            ExpiredPaymentMethod
        );
        assert_eq!(norm(card, declined, Some("do_not_honor")), IssuerDecline);
        assert_eq!(norm(card, declined, Some("generic_decline")), IssuerDecline);
        assert_eq!(norm(card, declined, Some("fraudulent")), SuspectedFraud);
        assert_eq!(
            norm(card, declined, Some("stolen_card")),
            CanceledPaymentMethod
        );
        assert_eq!(norm(card, Some("processing_error"), None), ServiceError);
        assert_eq!(
            norm(
                Some("invalid_request_error"),
                Some("payment_intent_authentication_failure"),
                None
            ),
            FailedBuyerApproval
        );
    }

    #[test]
    fn fallbacks() {
        // An unknown decline code behind card_declined is still an issuer decline.
        assert_eq!(
            norm(
                Some("card_error"),
                Some("card_declined"),
                Some("new_reason")
            ),
            IssuerDecline
        );
        assert_eq!(
            norm(Some("card_error"), Some("brand_new_code"), None),
            IssuerDecline
        );
        assert_eq!(norm(Some("api_error"), None, None), ServiceError);
        assert_eq!(
            norm(Some("invalid_request_error"), Some("x"), None),
            InvalidRequestParameters
        );
        assert_eq!(norm(None, None, None), OtherDecline);
    }

    #[test]
    fn raw_values_are_kept() {
        let e = PaymentError {
            error_type: Some("card_error".into()),
            code: Some("card_declined".into()),
            decline_code: Some("insufficient_funds".into()),
            message: Some("Your card has insufficient funds.".into()),
        };
        let info = e.normalise();
        assert_eq!(info.error_code, InsufficientFunds);
        assert_eq!(
            info.raw_response_code.as_deref(),
            Some("insufficient_funds")
        );
        assert_eq!(
            info.raw_response_description.as_deref(),
            Some("Your card has insufficient funds.")
        );
    }

    #[test]
    fn wire_names_match_serde() {
        for code in [
            IncompleteBuyerApproval,
            InsufficientFunds,
            IncorrectCvv,
            ServiceError,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn decline_or_failure() {
        assert!(InsufficientFunds.is_decline());
        assert!(IssuerDecline.is_decline());
        assert!(SuspectedFraud.is_decline());
        assert!(!ServiceError.is_decline());
        assert!(!FailedBuyerApproval.is_decline());
        assert!(!Canceled.is_decline());
    }
}
