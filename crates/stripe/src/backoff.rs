//! The one retry schedule: exponential growth from a base delay, a cap, then jitter. The Stripe
//! client's retries, the sandbox's webhook deliveries and the server's inbox and outbound
//! webhooks all wait by it, each with its own base, cap and jitter.
//!
//! It lives in this crate because this is the lowest crate all of them may use: the sandbox may
//! depend on no other crate of Tollgate's, and the domain crate stays free of randomness.

use std::time::Duration;

use rand::Rng;

/// How the capped delay is spread, so that many retries do not all fire at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Anywhere from zero up to the delay ("full jitter").
    Full,
    /// The delay times a factor drawn from `1 - spread ..= 1 + spread` (`0.2` is ±20 %); the
    /// result may exceed the cap by the spread. The spread is taken within `0..=1`.
    Spread(f64),
}

/// `base · 2^doublings`, at most `cap`, then jittered. Never overflows, whatever the inputs.
pub fn delay(base: Duration, doublings: u32, cap: Duration, jitter: Jitter) -> Duration {
    let plain = exponential(base, doublings, cap);
    let factor = match jitter {
        Jitter::Full => rand::random::<f64>(),
        Jitter::Spread(spread) => {
            let spread = if spread.is_nan() {
                0.0
            } else {
                spread.clamp(0.0, 1.0)
            };
            rand::rng().random_range(1.0 - spread..=1.0 + spread)
        }
    };
    Duration::try_from_secs_f64(plain.as_secs_f64() * factor).unwrap_or(plain)
}

/// `base · 2^doublings`, at most `cap`, without jitter.
pub fn exponential(base: Duration, doublings: u32, cap: Duration) -> Duration {
    let mut plain = base.min(cap);
    for _ in 0..doublings {
        if plain >= cap || plain.is_zero() {
            break;
        }
        plain = plain.saturating_mul(2).min(cap);
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_up_to_the_cap() {
        let cap = Duration::from_secs(10);
        let plain: Vec<u64> = (0..6).map(|n| exponential(SEC, n, cap).as_secs()).collect();
        assert_eq!(plain, [1, 2, 4, 8, 10, 10]);
        assert_eq!(exponential(Duration::from_secs(20), 0, cap), cap);
        assert_eq!(exponential(Duration::ZERO, u32::MAX, cap), Duration::ZERO);
        assert_eq!(
            exponential(Duration::MAX, u32::MAX, Duration::MAX),
            Duration::MAX
        );
        assert_eq!(exponential(SEC, u32::MAX, Duration::MAX), Duration::MAX);
    }

    #[test]
    fn spread_jitter_stays_within_its_spread_of_the_capped_delay() {
        let cap = Duration::from_secs(10);
        for _ in 0..200 {
            for n in 0..6 {
                let plain = exponential(SEC, n, cap).as_secs_f64();
                let d = delay(SEC, n, cap, Jitter::Spread(0.25)).as_secs_f64();
                assert!(
                    d >= plain * 0.75 - 1e-9 && d <= plain * 1.25 + 1e-9,
                    "{n}: {d}"
                );
            }
        }
        assert_eq!(
            delay(SEC, 3, cap, Jitter::Spread(0.0)),
            Duration::from_secs(8)
        );
        assert_eq!(
            delay(SEC, 3, cap, Jitter::Spread(f64::NAN)),
            Duration::from_secs(8)
        );
        assert!(
            delay(Duration::MAX, u32::MAX, Duration::MAX, Jitter::Spread(1.0)) <= Duration::MAX
        );
    }

    #[test]
    fn full_jitter_stays_below_the_capped_delay() {
        let cap = Duration::from_secs(5);
        for _ in 0..200 {
            assert!(delay(SEC, 2, cap, Jitter::Full) < Duration::from_secs(4));
            assert!(delay(SEC, 30, cap, Jitter::Full) < cap);
        }
        assert_eq!(delay(Duration::ZERO, 3, cap, Jitter::Full), Duration::ZERO);
    }
}
