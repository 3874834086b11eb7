//! Pure Tollgate domain logic: no I/O, no async, no database, no HTTP.
//!
//! - [`money`]: ISO-4217 currencies, positive amounts in minor units, display and Stripe forms.
//! - [`transaction`]: the nine transaction statuses, the forward-only transition table
//!   ([`transaction::allowed`]) and the PaymentIntent → status mapping of SPEC §3.1.
//! - [`error_code`]: Stripe `code` / `decline_code` → the normalised `error_code` vocabulary.
//! - [`entitlements`]: purchases → permissions (SPEC §5.3), with an order-proof ledger of
//!   Stripe objects.
//! - [`mod@apply`]: what a Stripe event (or a re-read) means for one transaction, built so that any
//!   order and any number of copies of the same observations give the same final state.
//!
//! Nothing here knows Stripe's JSON: the server turns payloads into the small snapshot types of
//! [`mod@apply`] (that adapter lives with the server), and this crate decides what they mean.

pub mod apply;
pub mod credits;
pub mod entitlements;
pub mod error_code;
pub mod money;
pub mod transaction;

pub use apply::{
    Amounts, Change, ChargeRef, ChargeSnapshot, ChargeStatus, DisputeSnapshot, Evidence,
    IgnoredReason, Observation, Outcome, PaymentIntentSnapshot, RefundSnapshot, TransactionState,
    apply,
};
pub use error_code::{ErrorCode, ErrorInfo, PaymentError};
pub use money::{Amount, Currency, DecimalError, Money, MoneyError};
pub use transaction::{
    Intent, PaymentIntentStatus, PaymentIntentView, RefundStatus, StatusMapping, TransactionStatus,
    allowed, map_payment_intent,
};
