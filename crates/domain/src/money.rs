//! Money: ISO-4217 currencies, positive amounts in integer minor units, and their display and
//! Stripe forms. Never floats (SPEC §1).
//!
//! Tollgate's API speaks ISO-4217 minor units (`amount: 1099` = 10.99 USD, `1000` = 1,000 JPY).
//! Stripe agrees for almost every currency; [`Money::to_stripe_amount`] handles the few where it
//! does not (see [`Currency::stripe_exponent`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency {0:?}: expected an active ISO-4217 code such as \"USD\"")]
    UnknownCurrency(String),
    #[error("amount must be a positive integer in minor units, got {0}")]
    NonPositiveAmount(i64),
    #[error("amount {amount} {currency} is too large")]
    Overflow { amount: i64, currency: Currency },
    #[error("amount {amount} {currency} has a fraction Stripe cannot express")]
    NotRepresentable { amount: i64, currency: Currency },
}

/// Active ISO-4217 currency codes and their minor-unit exponent, sorted by code (a test checks
/// the order, since lookups binary-search it).
///
/// Fund codes (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW), precious metals, SDRs and test
/// codes are left out on purpose: they are ISO codes but nothing one can charge a buyer in.
/// Withdrawn codes (HRK, SLL, ZWL, CUC) are refused; ANG and BGN are kept while payments made in
/// them may still be refunded.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// An active ISO-4217 currency. Only [`Currency::parse`] (or the constants) make one, so holding
/// a `Currency` means the code is known and its exponent is right ("parse, don't validate").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

impl Currency {
    pub const USD: Currency = Currency {
        code: "USD",
        exponent: 2,
    };
    pub const EUR: Currency = Currency {
        code: "EUR",
        exponent: 2,
    };
    pub const GBP: Currency = Currency {
        code: "GBP",
        exponent: 2,
    };
    pub const JPY: Currency = Currency {
        code: "JPY",
        exponent: 0,
    };

    /// Parses a three-letter code in any case (`"usd"` from Stripe, `"USD"` from the API).
    /// No trimming: `" USD"` is refused, as a client sending it has a bug worth seeing.
    pub fn parse(s: &str) -> Result<Currency, MoneyError> {
        let unknown = || MoneyError::UnknownCurrency(s.to_owned());
        if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(unknown());
        }
        let upper = s.to_ascii_uppercase();
        CURRENCIES
            .binary_search_by(|(code, _)| (*code).cmp(upper.as_str()))
            .map(|i| Currency {
                code: CURRENCIES[i].0,
                exponent: CURRENCIES[i].1,
            })
            .map_err(|_| unknown())
    }

    /// The canonical upper-case code, e.g. `"USD"`.
    pub fn code(self) -> &'static str {
        self.code
    }

    /// ISO-4217 minor-unit exponent: 2 for USD, 0 for JPY, 3 for KWD.
    pub fn exponent(self) -> u8 {
        self.exponent
    }

    /// The lower-case form Stripe expects in requests, e.g. `"usd"`.
    pub fn stripe_code(self) -> String {
        self.code.to_ascii_lowercase()
    }

    /// The exponent Stripe uses for this currency's `amount` fields, where it differs from ISO:
    /// - ISK: ISO says 0, but Stripe keeps it two-decimal for backwards compatibility (1 króna
    ///   is `100`, and amounts must be whole krónur).
    /// - MGA: ISO says 2, Stripe treats it as zero-decimal.
    ///
    /// Every other currency (including HUF and TWD, two-decimal in Stripe's API) follows ISO.
    pub fn stripe_exponent(self) -> u8 {
        match self.code {
            "ISK" => 2,
            "MGA" => 0,
            _ => self.exponent,
        }
    }

    /// Every currency of the table, in code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES
            .iter()
            .map(|&(code, exponent)| Currency { code, exponent })
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A strictly positive amount in minor units. Zero and negative amounts are refused at the edge;
/// cumulative figures that may be zero (captured, refunded, …) are plain `i64` elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Amount(i64);

impl Amount {
    pub fn new(minor_units: i64) -> Result<Amount, MoneyError> {
        if minor_units > 0 {
            Ok(Amount(minor_units))
        } else {
            Err(MoneyError::NonPositiveAmount(minor_units))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Amount {
    type Error = MoneyError;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Amount::new(v)
    }
}

impl From<Amount> for i64 {
    fn from(a: Amount) -> i64 {
        a.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An amount in a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount: Amount,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: Amount, currency: Currency) -> Money {
        Money { amount, currency }
    }

    /// The amount to send to Stripe (its minor units, see [`Currency::stripe_exponent`]).
    pub fn to_stripe_amount(&self) -> Result<i64, MoneyError> {
        rescale(
            self.amount.get(),
            self.currency,
            self.currency.exponent(),
            self.currency.stripe_exponent(),
        )
    }

    /// Reads an amount Stripe reported back into ISO minor units.
    pub fn from_stripe_amount(stripe_amount: i64, currency: Currency) -> Result<Money, MoneyError> {
        let iso = rescale(
            stripe_amount,
            currency,
            currency.stripe_exponent(),
            currency.exponent(),
        )?;
        Ok(Money::new(Amount::new(iso)?, currency))
    }
}

/// Moves `amount` from `from` decimals to `to` decimals, refusing overflow and lost fractions.
fn rescale(amount: i64, currency: Currency, from: u8, to: u8) -> Result<i64, MoneyError> {
    let factor = 10_i64.pow(u32::from(from.abs_diff(to)));
    if to >= from {
        amount
            .checked_mul(factor)
            .ok_or(MoneyError::Overflow { amount, currency })
    } else if amount % factor == 0 {
        Ok(amount / factor)
    } else {
        Err(MoneyError::NotRepresentable { amount, currency })
    }
}

/// `10.99 USD`, `1000 JPY`, `1.500 KWD`: the major units, the minor digits, the code.
/// (Symbols and digit grouping are a presentation concern of the pages, not of the domain.)
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exp = u32::from(self.currency.exponent());
        let v = self.amount.get(); // positive by construction
        if exp == 0 {
            return write!(f, "{v} {}", self.currency);
        }
        let scale = 10_i64.pow(exp);
        let width = exp as usize;
        write!(f, "{}.{:0width$} {}", v / scale, v % scale, self.currency)
    }
}

/// Why a decimal amount typed by a person was refused (shown next to the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("Type an amount, such as {example}.")]
    Empty { example: String },
    #[error("Type the amount as a number, such as {example}.")]
    NotANumber { example: String },
    #[error("{currency} has no decimals: type a whole number, such as {example}.")]
    NoDecimals { currency: Currency, example: String },
    #[error("{currency} has {exponent} decimal places at most, such as {example}.")]
    TooManyDecimals {
        currency: Currency,
        exponent: u8,
        example: String,
    },
    #[error("The amount must be more than zero.")]
    NotPositive,
    #[error("The amount is too large.")]
    TooLarge,
}

impl Currency {
    /// An example amount as people type it in this currency: `12.99`, `1299`, `1.234`.
    pub fn example(self) -> String {
        match self.exponent {
            0 => "1299".to_string(),
            e => format!("12.{}", &"99999"[..e as usize]),
        }
    }

    /// A decimal amount as a person types it ("12.99", "12,99", "1,234.50", "1299" for JPY,
    /// "1.234" for KWD) → minor units. Thousands separators are accepted only as `,` followed
    /// by three digits before a `.`; a single `,` with 1..exponent digits after it is a decimal
    /// comma. Never floats: the digits are read as integers.
    pub fn parse_decimal(self, input: &str) -> Result<i64, DecimalError> {
        let example = self.example();
        let s: String = input
            .trim()
            .chars()
            .filter(|c| *c != ' ' && *c != '\u{a0}')
            .collect();
        if s.is_empty() {
            return Err(DecimalError::Empty { example });
        }
        let s = s.strip_prefix('+').unwrap_or(&s).to_string();
        if s.starts_with('-') {
            return Err(DecimalError::NotPositive);
        }
        // Decide what the separators mean.
        let (whole, frac) = match (s.rfind('.'), s.matches(',').count()) {
            (Some(dot), _) => {
                let (w, f) = s.split_at(dot);
                (w.replace(',', ""), f[1..].to_string())
            }
            (None, 1) => {
                let comma = s.find(',').unwrap_or(0);
                let after = &s[comma + 1..];
                if after.len() == 3 && self.exponent != 3 {
                    (s.replace(',', ""), String::new())
                } else {
                    (s[..comma].to_string(), after.to_string())
                }
            }
            (None, _) => (s.replace(',', ""), String::new()),
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let number = digits(&whole) || (whole.is_empty() && digits(&frac));
        if !number {
            return Err(DecimalError::NotANumber { example });
        }
        if !frac.is_empty() && !digits(&frac) {
            return Err(DecimalError::NotANumber { example });
        }
        let exp = self.exponent as usize;
        let frac = frac.trim_end_matches('0');
        if frac.len() > exp {
            return Err(if exp == 0 {
                DecimalError::NoDecimals {
                    currency: self,
                    example,
                }
            } else {
                DecimalError::TooManyDecimals {
                    currency: self,
                    exponent: self.exponent,
                    example,
                }
            });
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| DecimalError::TooLarge)?
        };
        let frac_value: i64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<exp$}")
                .parse()
                .map_err(|_| DecimalError::TooLarge)?
        };
        let minor = whole
            .checked_mul(10i64.pow(exp as u32))
            .and_then(|w| w.checked_add(frac_value))
            .filter(|m| *m <= MAX_MINOR_UNITS)
            .ok_or(DecimalError::TooLarge)?;
        if minor == 0 {
            return Err(DecimalError::NotPositive);
        }
        Ok(minor)
    }

    /// Minor units → the plain decimal people type back: `1299` USD → `12.99`, JPY → `1299`.
    pub fn to_decimal(self, minor: i64) -> String {
        let exp = self.exponent as u32;
        if exp == 0 {
            return minor.to_string();
        }
        let div = 10i64.pow(exp);
        let sign = if minor < 0 { "-" } else { "" };
        let m = minor.unsigned_abs();
        let d = div as u64;
        format!("{sign}{}.{:0w$}", m / d, m % d, w = exp as usize)
    }
}

/// The largest amount a person may type (Stripe's limit is 99,999,999 in the smallest unit for
/// most currencies; this bound only guards the arithmetic).
const MAX_MINOR_UNITS: i64 = 1_000_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_well_formed() {
        for pair in CURRENCIES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        for (code, exp) in CURRENCIES {
            assert!(code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(*exp <= 3, "{code}");
        }
        for c in [Currency::USD, Currency::EUR, Currency::GBP, Currency::JPY] {
            assert_eq!(Currency::parse(c.code()), Ok(c));
        }
    }

    #[test]
    fn parse_is_case_insensitive_and_canonical() {
        let usd = Currency::parse("usd").unwrap();
        assert_eq!(usd.code(), "USD");
        assert_eq!(usd.stripe_code(), "usd");
        assert_eq!(Currency::parse("Jpy").unwrap().exponent(), 0);
        for zero in [
            "JPY", "KRW", "VND", "CLP", "XAF", "XOF", "XPF", "ISK", "UGX", "PYG",
        ] {
            assert_eq!(Currency::parse(zero).unwrap().exponent(), 0, "{zero}");
        }
        for three in ["BHD", "KWD", "JOD", "OMR", "TND", "IQD", "LYD"] {
            assert_eq!(Currency::parse(three).unwrap().exponent(), 3, "{three}");
        }
    }

    #[test]
    fn parse_refuses_unknown_and_malformed() {
        for bad in [
            "", "US", "USDD", "XXX", "U$D", " USD", "usd ", "HRK", "XAU", "CLF", "ÜSD",
        ] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn amount_refuses_zero_and_negative() {
        assert!(Amount::new(0).is_err());
        assert!(Amount::new(-1).is_err());
        assert_eq!(Amount::new(1).unwrap().get(), 1);
        assert!(serde_json::from_str::<Amount>("0").is_err());
        assert!(serde_json::from_str::<Amount>("-5").is_err());
        assert!(serde_json::from_str::<Amount>("1.5").is_err());
        assert_eq!(serde_json::from_str::<Amount>("1099").unwrap().get(), 1099);
    }

    #[test]
    fn display() {
        let m = |a, c| Money::new(Amount::new(a).unwrap(), Currency::parse(c).unwrap());
        assert_eq!(m(1099, "USD").to_string(), "10.99 USD");
        assert_eq!(m(5, "EUR").to_string(), "0.05 EUR");
        assert_eq!(m(1000, "JPY").to_string(), "1000 JPY");
        assert_eq!(m(1500, "KWD").to_string(), "1.500 KWD");
        assert_eq!(m(1, "BHD").to_string(), "0.001 BHD");
    }

    #[test]
    fn serde_round_trip() {
        let m = Money::new(Amount::new(1099).unwrap(), Currency::USD);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount":1099,"currency":"USD"}"#);
        let back: Money = serde_json::from_str(r#"{"amount":1099,"currency":"usd"}"#).unwrap();
        assert_eq!(back, m);
        assert!(serde_json::from_str::<Money>(r#"{"amount":1,"currency":"ABC"}"#).is_err());
    }

    #[test]
    fn stripe_amounts() {
        let isk = Currency::parse("ISK").unwrap();
        let mga = Currency::parse("MGA").unwrap();
        let m = |a, c| Money::new(Amount::new(a).unwrap(), c);
        assert_eq!(m(1099, Currency::USD).to_stripe_amount(), Ok(1099));
        assert_eq!(m(500, Currency::JPY).to_stripe_amount(), Ok(500));
        // 5 ISK is 500 in Stripe's API.
        assert_eq!(m(5, isk).to_stripe_amount(), Ok(500));
        assert_eq!(Money::from_stripe_amount(500, isk), Ok(m(5, isk)));
        assert!(Money::from_stripe_amount(550, isk).is_err());
        // 1,000.00 MGA is 1000 in Stripe's API; 1,000.50 MGA cannot be sent.
        assert_eq!(m(100_000, mga).to_stripe_amount(), Ok(1000));
        assert!(m(100_050, mga).to_stripe_amount().is_err());
        assert!(m(i64::MAX, isk).to_stripe_amount().is_err());
    }
    #[test]
    fn decimals_as_people_type_them() {
        let usd = Currency::USD;
        let kwd = Currency::parse("KWD").unwrap();
        for (input, want) in [
            ("12.99", 1299),
            ("12,99", 1299),
            ("1,234.50", 123450),
            ("1,234", 123400),
            ("5", 500),
            ("5.00", 500),
            (" 5.5 ", 550),
            (".5", 50),
        ] {
            assert_eq!(usd.parse_decimal(input), Ok(want), "{input}");
        }
        assert_eq!(Currency::JPY.parse_decimal("1299"), Ok(1299));
        assert_eq!(Currency::JPY.parse_decimal("1,299"), Ok(1299));
        assert_eq!(kwd.parse_decimal("1.234"), Ok(1234));
        assert_eq!(kwd.parse_decimal("1,234"), Ok(1234));
        assert!(matches!(
            Currency::JPY.parse_decimal("12.5"),
            Err(DecimalError::NoDecimals { .. })
        ));
        assert!(matches!(
            usd.parse_decimal("1.999"),
            Err(DecimalError::TooManyDecimals { .. })
        ));
        assert!(matches!(
            usd.parse_decimal("abc"),
            Err(DecimalError::NotANumber { .. })
        ));
        assert!(matches!(
            usd.parse_decimal("1.2.3"),
            Err(DecimalError::NotANumber { .. })
        ));
        assert!(matches!(
            usd.parse_decimal(""),
            Err(DecimalError::Empty { .. })
        ));
        assert_eq!(usd.parse_decimal("0.00"), Err(DecimalError::NotPositive));
        assert_eq!(usd.parse_decimal("-5"), Err(DecimalError::NotPositive));
        assert_eq!(
            usd.parse_decimal("99999999999999999999"),
            Err(DecimalError::TooLarge)
        );
        assert_eq!(usd.to_decimal(1299), "12.99");
        assert_eq!(Currency::JPY.to_decimal(1299), "1299");
        assert_eq!(kwd.to_decimal(1234), "1.234");
        assert_eq!(usd.to_decimal(5), "0.05");
    }

    proptest::proptest! {
        /// What is shown is read back as the same amount, in every currency.
        #[test]
        fn a_shown_decimal_reads_back(minor in 1i64..1_000_000_000_000, i in 0usize..150) {
            let all: Vec<Currency> = Currency::all().collect();
            let c = all[i % all.len()];
            proptest::prop_assert_eq!(c.parse_decimal(&c.to_decimal(minor)), Ok(minor));
        }
    }
}
