//! Stripe's test cards: numbers, the `pm_card_*` / `tok_*` shortcuts, and what each does.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Succeeds,
    /// Declined at charge time: (code, decline_code, message, param).
    Declines(
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
    ),
    /// Attaches to a customer, then declines when charged (4000000000000341).
    AttachThenDecline,
    /// Needs 3-D Secure on every on-session payment.
    Requires3ds,
    /// 3-D Secure, and declined with insufficient funds after authentication.
    Requires3dsThenDecline,
    /// Succeeds, then a dispute opens with this reason.
    Disputed(&'static str),
    /// Succeeds, then the issuer reports it as fraud: an early fraud warning (4000000000005423).
    EarlyFraudWarning,
    /// Succeeds; refunds start `succeeded` then move to `failed`.
    RefundFails,
}

#[derive(Clone, Copy, Debug)]
pub struct TestCard {
    pub number: &'static str,
    pub brand: &'static str,
    pub funding: &'static str,
    pub country: &'static str,
    pub behaviour: Behaviour,
}

const GENERIC: Behaviour = Behaviour::Declines(
    "card_declined",
    "generic_decline",
    "Your card was declined.",
    None,
);

const fn card(number: &'static str, brand: &'static str, behaviour: Behaviour) -> TestCard {
    TestCard {
        number,
        brand,
        funding: "credit",
        country: "US",
        behaviour,
    }
}

/// (shortcut suffix shared by `pm_card_*` and `tok_*`, card).
pub const CARDS: &[(&str, TestCard)] = &[
    (
        "visa",
        card("4242424242424242", "visa", Behaviour::Succeeds),
    ),
    (
        "visa_debit",
        TestCard {
            funding: "debit",
            ..card("4000056655665556", "visa", Behaviour::Succeeds)
        },
    ),
    (
        "mastercard",
        card("5555555555554444", "mastercard", Behaviour::Succeeds),
    ),
    (
        "mastercard_debit",
        TestCard {
            funding: "debit",
            ..card("5200828282828210", "mastercard", Behaviour::Succeeds)
        },
    ),
    (
        "mastercard_prepaid",
        TestCard {
            funding: "prepaid",
            ..card("5105105105105100", "mastercard", Behaviour::Succeeds)
        },
    ),
    ("amex", card("378282246310005", "amex", Behaviour::Succeeds)),
    (
        "discover",
        card("6011111111111117", "discover", Behaviour::Succeeds),
    ),
    (
        "diners",
        card("3056930009020004", "diners", Behaviour::Succeeds),
    ),
    ("jcb", card("3566002020360505", "jcb", Behaviour::Succeeds)),
    (
        "unionpay",
        card("6200000000000005", "unionpay", Behaviour::Succeeds),
    ),
    ("chargeDeclined", card("4000000000000002", "visa", GENERIC)),
    (
        "chargeDeclinedInsufficientFunds",
        card(
            "4000000000009995",
            "visa",
            Behaviour::Declines(
                "card_declined",
                "insufficient_funds",
                "Your card has insufficient funds.",
                None,
            ),
        ),
    ),
    (
        "chargeDeclinedLostCard",
        card(
            "4000000000009987",
            "visa",
            Behaviour::Declines(
                "card_declined",
                "lost_card",
                "Your card was declined.",
                None,
            ),
        ),
    ),
    (
        "chargeDeclinedStolenCard",
        card(
            "4000000000009979",
            "visa",
            Behaviour::Declines(
                "card_declined",
                "stolen_card",
                "Your card was declined.",
                None,
            ),
        ),
    ),
    (
        "chargeDeclinedExpiredCard",
        card(
            "4000000000000069",
            "visa",
            Behaviour::Declines(
                "expired_card",
                "expired_card",
                "Your card has expired.",
                Some("exp_month"),
            ),
        ),
    ),
    (
        "chargeDeclinedIncorrectCvc",
        card(
            "4000000000000127",
            "visa",
            Behaviour::Declines(
                "incorrect_cvc",
                "incorrect_cvc",
                "Your card's security code is incorrect.",
                Some("cvc"),
            ),
        ),
    ),
    (
        "chargeDeclinedProcessingError",
        card(
            "4000000000000119",
            "visa",
            Behaviour::Declines(
                "processing_error",
                "processing_error",
                "An error occurred while processing your card. Try again in a little bit.",
                None,
            ),
        ),
    ),
    (
        "chargeDeclinedFraudulent",
        card(
            "4100000000000019",
            "visa",
            Behaviour::Declines(
                "card_declined",
                "fraudulent",
                "Your card was declined.",
                None,
            ),
        ),
    ),
    (
        "visa_chargeDeclinedVelocityLimitExceeded",
        card(
            "4000000000006975",
            "visa",
            Behaviour::Declines(
                "card_declined",
                "card_velocity_exceeded",
                "Your card was declined for making repeated attempts too frequently or exceeding its amount limit.",
                None,
            ),
        ),
    ),
    (
        "chargeCustomerFail",
        card("4000000000000341", "visa", Behaviour::AttachThenDecline),
    ),
    (
        "createDispute",
        card(
            "4000000000000259",
            "visa",
            Behaviour::Disputed("fraudulent"),
        ),
    ),
    (
        "createDisputeProductNotReceived",
        card(
            "4000000000002685",
            "visa",
            Behaviour::Disputed("product_not_received"),
        ),
    ),
    (
        "createDisputeInquiry",
        card(
            "4000000000001976",
            "visa",
            Behaviour::Disputed("fraudulent"),
        ),
    ),
    (
        "createIssuerFraudRecord",
        card("4000000000005423", "visa", Behaviour::EarlyFraudWarning),
    ),
    (
        "refundFail",
        card("4000000000005126", "visa", Behaviour::RefundFails),
    ),
    (
        "authenticationRequired",
        card("4000002760003184", "visa", Behaviour::Requires3ds),
    ),
    (
        "authenticationRequiredOnSetup",
        card("4000002500003155", "visa", Behaviour::Requires3ds),
    ),
    (
        "threeDSecure2Required",
        card("4000000000003220", "visa", Behaviour::Requires3ds),
    ),
    (
        "threeDSecureRequired",
        card("4000000000003063", "visa", Behaviour::Requires3ds),
    ),
    (
        "authenticationRequiredChargeDeclinedInsufficientFunds",
        card(
            "4000008260003178",
            "visa",
            Behaviour::Requires3dsThenDecline,
        ),
    ),
];

/// The card behind a `pm_card_*` or `tok_*` shortcut.
pub fn by_shortcut(id: &str) -> Option<TestCard> {
    let suffix = id
        .strip_prefix("pm_card_")
        .or_else(|| id.strip_prefix("tok_"))?;
    CARDS.iter().find(|(s, _)| *s == suffix).map(|(_, c)| *c)
}

/// The card for a raw number; any other Luhn-valid number behaves like 4242.
pub fn by_number(number: &str) -> Option<TestCard> {
    let digits: String = number.chars().filter(|c| !c.is_whitespace()).collect();
    if let Some((_, c)) = CARDS.iter().find(|(_, c)| c.number == digits) {
        return Some(*c);
    }
    if digits.len() < 12 || digits.len() > 19 || !luhn(&digits) {
        return None;
    }
    let brand = match digits.as_bytes()[0] {
        b'4' => "visa",
        b'5' | b'2' => "mastercard",
        b'3' => "amex",
        b'6' => "discover",
        _ => "unknown",
    };
    Some(TestCard {
        number: "",
        brand,
        funding: "credit",
        country: "US",
        behaviour: Behaviour::Succeeds,
    })
}

pub fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
        let Some(mut d) = c.to_digit(10) else {
            return false;
        };
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_number_is_luhn_valid() {
        for (name, c) in CARDS {
            assert!(luhn(c.number), "{name}");
        }
    }

    #[test]
    fn shortcuts() {
        assert_eq!(
            by_shortcut("pm_card_visa").map(|c| c.number),
            Some("4242424242424242")
        );
        assert_eq!(
            by_shortcut("tok_chargeDeclined").map(|c| c.behaviour),
            Some(GENERIC)
        );
        assert!(by_shortcut("pm_card_nope").is_none());
        assert!(by_number("4242 4242 4242 4241").is_none());
    }
}
