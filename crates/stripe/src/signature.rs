//! Stripe's webhook signature scheme (`Stripe-Signature: t=…,v1=…`).
//!
//! HMAC-SHA256 over `"{t}.{payload}"`, keyed by the whole `whsec_…` string (Stripe does not
//! decode it), lower-case hex. A header may carry several `v1` signatures (secret rotation) and
//! other schemes (`v0`), which are ignored.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The hex signature of `payload` at `timestamp` under `secret`.
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

/// A complete `Stripe-Signature` header value for one or more secrets.
pub fn header(secrets: &[&str], timestamp: i64, payload: &[u8]) -> String {
    let mut out = format!("t={timestamp}");
    for s in secrets {
        out.push_str(",v1=");
        out.push_str(&sign(s, timestamp, payload));
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// No `t=` or no `v1=` element, or an unparsable timestamp.
    Malformed,
    /// `t` is further than the tolerance from now, in the past or the future.
    Timestamp,
    /// No `v1` signature matches any of the secrets.
    NoMatch,
}

/// The parts of a `Stripe-Signature` header we use: its timestamp and every `v1` signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHeader {
    pub timestamp: i64,
    pub v1: Vec<Vec<u8>>,
}

pub fn parse_header(header: &str) -> Result<ParsedHeader, VerifyError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" => timestamp = Some(v.parse::<i64>().map_err(|_| VerifyError::Malformed)?),
            "v1" => {
                if let Ok(bytes) = hex::decode(v) {
                    v1.push(bytes);
                }
            }
            _ => {}
        }
    }
    match timestamp {
        Some(timestamp) if !v1.is_empty() => Ok(ParsedHeader { timestamp, v1 }),
        _ => Err(VerifyError::Malformed),
    }
}

/// Verifies `header` for `payload` against any of `secrets`, with `tolerance_secs` either side
/// of `now`. Comparison is constant time (`Mac::verify_slice`).
pub fn verify(
    secrets: &[&str],
    header: &str,
    payload: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<i64, VerifyError> {
    let parsed = parse_header(header)?;
    if (now - parsed.timestamp).abs() > tolerance_secs {
        return Err(VerifyError::Timestamp);
    }
    for secret in secrets {
        for sig in &parsed.v1 {
            let mut mac =
                HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
            mac.update(parsed.timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(payload);
            if mac.verify_slice(sig).is_ok() {
                return Ok(parsed.timestamp);
            }
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rotation() {
        let h = header(&["whsec_a", "whsec_b"], 1000, b"{}");
        assert_eq!(verify(&["whsec_b"], &h, b"{}", 1000, 300), Ok(1000));
        assert_eq!(
            verify(&["whsec_c"], &h, b"{}", 1000, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&["whsec_a"], &h, b"{} ", 1000, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&["whsec_a"], &h, b"{}", 1301, 300),
            Err(VerifyError::Timestamp)
        );
        assert_eq!(
            verify(&["whsec_a"], &h, b"{}", 699, 300),
            Err(VerifyError::Timestamp)
        );
    }

    #[test]
    fn v0_only_is_malformed() {
        let sig = sign("whsec_a", 5, b"x");
        assert_eq!(
            verify(&["whsec_a"], &format!("t=5,v0={sig}"), b"x", 5, 300),
            Err(VerifyError::Malformed)
        );
        assert_eq!(parse_header("garbage"), Err(VerifyError::Malformed));
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256(key="whsec_test", "12345.payload"), computed independently with Python's hmac.
        assert_eq!(
            sign("whsec_test", 12345, b"payload"),
            "119be226902806e932faf87d1715604869c1a63d1505f9bdbb5411009e84dcb4"
        );
    }
}
