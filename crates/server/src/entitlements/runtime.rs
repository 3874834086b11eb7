//! In-process helpers of the permission check (the hot path, SPEC §5.4): a short-lived cache
//! of API keys and account settings (so a check is one indexed query), and the per key and
//! client address token buckets of the public rate limit.
//!
//! Nothing here is needed for correctness: a cached key or setting is at most `auth_cache_ms`
//! old (a revoked public key stops working within that time), and the permissions themselves
//! are always read from the database's read model.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tollgate_store::ApiKeyRow;
use tollgate_store::entitlements::SettingsRow;

pub struct Runtime {
    ttl: Duration,
    /// Tokens per second per (key, client address); 0 turns the limit off.
    rate: f64,
    burst: f64,
    keys: Mutex<HashMap<String, (Instant, Option<ApiKeyRow>)>>,
    settings: Mutex<HashMap<String, (Instant, SettingsRow)>>,
    buckets: Mutex<HashMap<(String, IpAddr), Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept at most; full ones are dropped first when the map grows past this.
const MAX_BUCKETS: usize = 100_000;

impl Runtime {
    pub fn new(auth_cache_ms: u64, rate_per_sec: u32, burst: u32) -> Runtime {
        Runtime {
            ttl: Duration::from_millis(auth_cache_ms),
            rate: f64::from(rate_per_sec),
            burst: f64::from(burst.max(rate_per_sec).max(1)),
            keys: Mutex::new(HashMap::new()),
            settings: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// A cached key row (`Some(None)`: known not to exist), if fresh.
    pub fn cached_key(&self, id: &str) -> Option<Option<ApiKeyRow>> {
        if self.ttl.is_zero() {
            return None;
        }
        let keys = self.keys.lock().ok()?;
        let (at, row) = keys.get(id)?;
        (at.elapsed() < self.ttl).then(|| row.clone())
    }

    pub fn put_key(&self, id: &str, row: Option<ApiKeyRow>) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut keys) = self.keys.lock() {
            if keys.len() > 10_000 {
                keys.retain(|_, (at, _)| at.elapsed() < self.ttl);
            }
            keys.insert(id.to_string(), (Instant::now(), row));
        }
    }

    pub fn cached_settings(&self, merchant: &str) -> Option<SettingsRow> {
        if self.ttl.is_zero() {
            return None;
        }
        let s = self.settings.lock().ok()?;
        let (at, row) = s.get(merchant)?;
        (at.elapsed() < self.ttl).then(|| row.clone())
    }

    pub fn put_settings(&self, row: SettingsRow) {
        if let Ok(mut s) = self.settings.lock() {
            s.insert(row.merchant_account_id.clone(), (Instant::now(), row));
        }
    }

    /// Forgets cached settings (after they change here).
    pub fn forget_settings(&self, merchant: &str) {
        if let Ok(mut s) = self.settings.lock() {
            s.remove(merchant);
        }
    }

    /// Called whenever a customer's read model is rewritten (a hook for a response cache; the
    /// read path does not cache permissions today).
    pub fn invalidate(&self, _merchant: &str, _customid: &str) {}

    /// Takes one token of (key, address); `Err(seconds to wait)` when the bucket is empty.
    pub fn take(&self, key_id: &str, addr: IpAddr) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        if buckets.len() >= MAX_BUCKETS {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry((key_id.to_string(), addr)).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_and_are_per_key_and_address() {
        let rt = Runtime::new(1000, 2, 2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        assert!(rt.take("k", a).is_ok());
        assert!(rt.take("k", a).is_ok());
        assert!(rt.take("k", a).is_err());
        assert!(rt.take("k", b).is_ok());
        assert!(rt.take("other", a).is_ok());
        std::thread::sleep(Duration::from_millis(600));
        assert!(rt.take("k", a).is_ok());
        let off = Runtime::new(0, 0, 0);
        for _ in 0..1000 {
            assert!(off.take("k", a).is_ok());
        }
    }
}
