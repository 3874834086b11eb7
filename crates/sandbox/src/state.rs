//! The sandbox's whole state: accounts, their objects in creation order, keys, idempotency
//! records. Plain data behind one mutex (see `lib.rs`), serialisable to the state file.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A Stripe-looking id: `pi_3Q…` (prefix, then 24 alphanumerics).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_string(24))
}

/// Objects of one type in one account, in creation order.
#[derive(Default, Serialize, Deserialize)]
pub struct Collection {
    pub ids: Vec<String>,
    pub objects: HashMap<String, Value>,
}

impl Collection {
    /// Stores `obj` under its id; returns what was there before.
    pub fn insert(&mut self, obj: Value) -> Option<Value> {
        let id = obj["id"].as_str().unwrap_or_default().to_string();
        if !self.objects.contains_key(&id) {
            self.ids.push(id.clone());
        }
        self.objects.insert(id, obj)
    }

    /// Puts back what [`Collection::insert`] replaced (`None`: the object was new).
    pub fn restore(&mut self, id: &str, old: Option<Value>) {
        match old {
            Some(v) => {
                self.objects.insert(id.to_string(), v);
            }
            None => {
                self.objects.remove(id);
                if let Some(pos) = self.ids.iter().rposition(|x| x == id) {
                    self.ids.remove(pos);
                }
            }
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    /// Collections by Stripe object name (`customer`, `payment_intent`, `event`, …).
    pub collections: BTreeMap<String, Collection>,
}

impl Account {
    pub fn new(id: String) -> Self {
        Self {
            id,
            collections: BTreeMap::new(),
        }
    }

    pub fn get(&self, kind: &str, id: &str) -> Option<&Value> {
        self.collections.get(kind)?.objects.get(id)
    }

    pub fn get_mut(&mut self, kind: &str, id: &str) -> Option<&mut Value> {
        self.collections.get_mut(kind)?.objects.get_mut(id)
    }

    pub fn insert(&mut self, kind: &str, obj: Value) -> Option<Value> {
        self.collections
            .entry(kind.to_string())
            .or_default()
            .insert(obj)
    }

    pub fn collection(&self, kind: &str) -> Option<&Collection> {
        self.collections.get(kind)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    None,
    Read,
    Write,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct RestrictedKey {
    pub account: String,
    pub permissions: HashMap<String, Access>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
    pub created: i64,
}

#[derive(Serialize, Deserialize)]
pub struct State {
    pub platform_account: String,
    pub secret_key: String,
    pub publishable_key: String,
    pub restricted_keys: HashMap<String, RestrictedKey>,
    pub accounts: BTreeMap<String, Account>,
    /// `(account, idempotency key)` → the first response.
    pub idempotency: HashMap<String, IdempotencyRecord>,
    /// Subscription billing settings (dunning), changed through the control API.
    #[serde(default)]
    pub billing: BillingSettings,
}

/// How failed subscription payments are retried and how subscriptions end when they keep
/// failing (Stripe's "Manage failed payments" settings).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BillingSettings {
    /// Days after each failed attempt before the next retry; one entry per retry.
    pub retry_days: Vec<i64>,
    /// After the last retry fails: `cancel` (default), `unpaid` or `past_due` (leave it).
    pub after_retries: String,
}

/// The default retry schedule: 3, then 5, then 7 days after the previous attempt (four
/// attempts over 15 days).
pub const DEFAULT_RETRY_DAYS: [i64; 3] = [3, 5, 7];

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            retry_days: DEFAULT_RETRY_DAYS.to_vec(),
            after_retries: "cancel".into(),
        }
    }
}

impl State {
    pub fn fresh() -> Self {
        let platform = format!("acct_{}", random_string(16));
        let mut accounts = BTreeMap::new();
        accounts.insert(platform.clone(), Account::new(platform.clone()));
        Self {
            platform_account: platform,
            secret_key: format!("sk_test_{}", random_string(99)),
            publishable_key: format!("pk_test_{}", random_string(99)),
            restricted_keys: HashMap::new(),
            accounts,
            idempotency: HashMap::new(),
            billing: BillingSettings::default(),
        }
    }

    /// Forgets every object (keys and accounts are kept, connected accounts emptied).
    pub fn reset(&mut self) {
        for acct in self.accounts.values_mut() {
            acct.collections.clear();
        }
        self.idempotency.clear();
        self.billing = BillingSettings::default();
    }
}

/// Merges Stripe-style metadata updates into `target` (empty value deletes a key; `unset_all`
/// clears the map first).
pub fn merge_metadata(target: &mut Value, update: Option<(Map<String, Value>, bool)>) {
    let Some((update, unset_all)) = update else {
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(m) = target {
        if unset_all {
            m.clear();
        }
        for (k, v) in update {
            if v.as_str() == Some("") {
                m.remove(&k);
            } else {
                m.insert(k, v);
            }
        }
    }
}
