//! Metered permissions: credit balances kept as an append-only ledger.
//!
//! A metered permission gives a customer an amount of units instead of a yes/no. Every change
//! of the amount is one [`Entry`] of the ledger: a grant (a purchase, a paid period, a manual
//! grant), a consumption, an expiry, a claw-back (a refund or a lost dispute of the purchase)
//! or an adjustment by hand. The balance is the sum of the entries, always.
//!
//! Units are granted in *lots* (one per purchase, per paid period, per positive adjustment).
//! Consumption draws from the open lots in a fixed order ([`Lots::draw`]): the lot that expires
//! first, then the oldest; so units that would expire are used before units that would not.
//! Which lot a consumption came from is not stored on the hot path: [`Lots::replay`] works it
//! out from the entries whenever an expiry or a claw-back needs a lot's unconsumed remainder.
//!
//! Claw-back policy (a refunded or lost-disputed purchase): the units of its lots that are still
//! unconsumed are taken back; units already consumed are not taken from other lots. The balance
//! never goes below zero; the consumed part is recorded on the claw-back entry as its
//! `shortfall`.
//!
//! Reservations hold units without consuming them: the available amount is
//! `balance - held`. A reservation commits (a consumption of up to the held units) or is
//! released; one left alone expires and its units become available again.

use std::collections::BTreeMap;

/// What a consumption asking for more than is available does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overage {
    /// Refuse the whole consumption (the default).
    #[default]
    Reject,
    /// Consume what is available (at least one unit), refuse only when nothing is.
    Cap,
    /// Accept it all: what is available is consumed, the rest is overage (billed through the
    /// permission's Stripe meter).
    Allow,
}

impl Overage {
    pub const NAMES: &'static [&'static str] = &["reject", "cap", "allow"];

    pub fn parse(s: &str) -> Option<Overage> {
        match s {
            "reject" => Some(Overage::Reject),
            "cap" => Some(Overage::Cap),
            "allow" => Some(Overage::Allow),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Overage::Reject => "reject",
            Overage::Cap => "cap",
            Overage::Allow => "allow",
        }
    }
}

/// How often a SKU of a metered permission grants its units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// At each paid period of a subscription; the lot ends with the period unless the
    /// permission rolls over.
    Period,
    /// Once per purchase (a pack); the lot never ends unless the SKU sets an expiry.
    Purchase,
}

impl Per {
    pub const NAMES: &'static [&'static str] = &["period", "purchase"];

    pub fn parse(s: &str) -> Option<Per> {
        match s {
            "period" => Some(Per::Period),
            "purchase" => Some(Per::Purchase),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Per::Period => "period",
            Per::Purchase => "purchase",
        }
    }
}

/// A consumption refused: not enough units available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("insufficient balance: {available} available, {wanted} asked")]
pub struct Insufficient {
    pub available: i64,
    pub wanted: i64,
}

/// How many of `wanted` units (> 0) a consumption takes when `available` are available.
pub fn take(available: i64, wanted: i64, overage: Overage) -> Result<i64, Insufficient> {
    let refused = Insufficient { available, wanted };
    match overage {
        Overage::Reject if available >= wanted => Ok(wanted),
        Overage::Cap if available > 0 => Ok(wanted.min(available)),
        Overage::Allow => Ok(wanted.min(available.max(0))),
        _ => Err(refused),
    }
}

/// The kinds of ledger entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Grant,
    Consume,
    Expiry,
    Clawback,
    Adjustment,
}

impl Kind {
    pub const NAMES: &'static [&'static str] =
        &["grant", "consume", "expiry", "clawback", "adjustment"];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Grant => "grant",
            Kind::Consume => "consume",
            Kind::Expiry => "expiry",
            Kind::Clawback => "clawback",
            Kind::Adjustment => "adjustment",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "grant" => Some(Kind::Grant),
            "consume" => Some(Kind::Consume),
            "expiry" => Some(Kind::Expiry),
            "clawback" => Some(Kind::Clawback),
            "adjustment" => Some(Kind::Adjustment),
            _ => None,
        }
    }
}

/// One ledger entry, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Signed: grants and positive adjustments add, the rest take away.
    pub units: i64,
    /// The lot a grant opens (its key), or the lot an expiry or claw-back closes. A positive
    /// adjustment opens a lot of its own (`lot` may then be its entry id).
    pub lot: Option<String>,
    /// A grant's end (ms); `None`: never.
    pub expires_at: Option<i64>,
}

/// One lot as the ledger leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    pub key: String,
    pub units: i64,
    /// Units not consumed yet (0 once closed).
    pub remaining: i64,
    pub expires_at: Option<i64>,
    /// Expired or clawed back.
    pub closed: bool,
    /// Order of opening.
    pub seq: usize,
}

/// The lots of one balance (one customer, one permission), rebuilt from its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lots {
    lots: BTreeMap<String, Lot>,
    opened: usize,
    /// Debits that found no open lot to draw from (only possible for entries written outside
    /// these rules); kept so the sums still add up.
    pub unattributed: i64,
}

impl Lots {
    /// The lots after `entries` (in ledger order).
    pub fn replay<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Lots {
        let mut lots = Lots::default();
        for (i, e) in entries.into_iter().enumerate() {
            lots.apply(e, i);
        }
        lots
    }

    /// Applies one more entry (`i`: its position, naming an unnamed lot).
    pub fn apply(&mut self, e: &Entry, i: usize) {
        match e.kind {
            Kind::Grant | Kind::Adjustment if e.units > 0 => {
                let key = e.lot.clone().unwrap_or_else(|| format!("#{i}"));
                self.opened += 1;
                self.lots.insert(
                    key.clone(),
                    Lot {
                        key,
                        units: e.units,
                        remaining: e.units,
                        expires_at: e.expires_at,
                        closed: false,
                        seq: self.opened,
                    },
                );
            }
            Kind::Grant => {}
            Kind::Consume | Kind::Adjustment => self.draw(-e.units),
            Kind::Expiry | Kind::Clawback => {
                let lot = e.lot.as_deref().and_then(|k| self.lots.get_mut(k));
                match lot {
                    Some(l) => {
                        let taken = (-e.units).min(l.remaining);
                        l.remaining -= taken;
                        self.unattributed += (-e.units) - taken;
                        l.closed = true;
                    }
                    None => self.unattributed += -e.units,
                }
            }
        }
    }

    /// Takes `units` from the open lots: the one expiring first, then the oldest.
    pub fn draw(&mut self, mut units: i64) {
        if units <= 0 {
            return;
        }
        let mut order: Vec<&mut Lot> = self
            .lots
            .values_mut()
            .filter(|l| !l.closed && l.remaining > 0)
            .collect();
        order.sort_by_key(|l| (l.expires_at.is_none(), l.expires_at, l.seq));
        for l in order {
            let t = units.min(l.remaining);
            l.remaining -= t;
            units -= t;
            if units == 0 {
                return;
            }
        }
        self.unattributed += units;
    }

    pub fn get(&self, key: &str) -> Option<&Lot> {
        self.lots.get(key)
    }

    /// Lots in opening order.
    pub fn all(&self) -> Vec<&Lot> {
        let mut v: Vec<&Lot> = self.lots.values().collect();
        v.sort_by_key(|l| l.seq);
        v
    }

    /// The units of the open lots: what the balance is made of.
    pub fn balance(&self) -> i64 {
        self.open().map(|l| l.remaining).sum::<i64>() - self.unattributed
    }

    /// Units of the open lots as granted.
    pub fn granted(&self) -> i64 {
        self.open().map(|l| l.units).sum()
    }

    /// Units of the open lots already consumed.
    pub fn consumed(&self) -> i64 {
        self.open().map(|l| l.units - l.remaining).sum::<i64>() + self.unattributed
    }

    fn open(&self) -> impl Iterator<Item = &Lot> {
        self.lots.values().filter(|l| !l.closed)
    }

    /// The expiry entries due at `now` (ms): each open lot whose end has come, closed with
    /// its unconsumed remainder (possibly 0, so the lot stops counting as granted).
    pub fn expiries(&self, now: i64) -> Vec<Entry> {
        self.all()
            .into_iter()
            .filter(|l| !l.closed && l.expires_at.is_some_and(|e| e <= now))
            .map(|l| Entry {
                kind: Kind::Expiry,
                units: -l.remaining,
                lot: Some(l.key.clone()),
                expires_at: None,
            })
            .collect()
    }

    /// The earliest end of an open lot (ms).
    pub fn next_expiry(&self) -> Option<i64> {
        self.open().filter_map(|l| l.expires_at).min()
    }

    /// The claw-back of lot `key` (a refund or lost dispute of its purchase): its unconsumed
    /// units, and the consumed part that cannot be taken back (the shortfall). `None` when the
    /// lot is unknown or already closed.
    pub fn clawback(&self, key: &str) -> Option<(Entry, i64)> {
        let l = self.lots.get(key).filter(|l| !l.closed)?;
        Some((
            Entry {
                kind: Kind::Clawback,
                units: -l.remaining,
                lot: Some(l.key.clone()),
                expires_at: None,
            },
            l.units - l.remaining,
        ))
    }
}

/// The sum of the entries: the balance.
pub fn sum(entries: &[Entry]) -> i64 {
    entries.iter().map(|e| e.units).sum()
}

/// The lot key of a paid subscription period: the subscription and the period's start.
pub fn period_lot(subscription: &str, period_start: i64) -> String {
    format!("{subscription}@{period_start}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::collections::HashMap;

    fn grant(key: &str, units: i64, expires_at: Option<i64>) -> Entry {
        Entry {
            kind: Kind::Grant,
            units,
            lot: Some(key.into()),
            expires_at,
        }
    }

    fn consume(units: i64) -> Entry {
        Entry {
            kind: Kind::Consume,
            units: -units,
            lot: None,
            expires_at: None,
        }
    }

    #[test]
    fn take_rejects_or_caps() {
        assert_eq!(take(10, 4, Overage::Reject), Ok(4));
        assert_eq!(take(3, 4, Overage::Reject).map_err(|e| e.available), Err(3));
        assert_eq!(take(3, 4, Overage::Cap), Ok(3));
        assert!(take(0, 4, Overage::Cap).is_err());
        assert!(take(-2, 1, Overage::Cap).is_err());
    }

    #[test]
    fn consumption_draws_the_expiring_lot_first_and_a_refund_claws_back_the_rest() {
        // A monthly lot (ends at 100) and a pack (never ends).
        let mut e = vec![grant("sub@0", 1000, Some(100)), grant("cs_1", 500, None)];
        e.push(consume(300));
        let lots = Lots::replay(&e);
        assert_eq!(lots.get("sub@0").map(|l| l.remaining), Some(700));
        assert_eq!(lots.get("cs_1").map(|l| l.remaining), Some(500));
        // The pack is refunded: all 500 come back, nothing short.
        let (cb, short) = lots.clawback("cs_1").expect("open lot");
        assert_eq!((cb.units, short), (-500, 0));
        e.push(cb);
        // The period ends: the 700 left expire; the balance is 0.
        let lots = Lots::replay(&e);
        let ex = lots.expiries(100);
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].units, -700);
        e.extend(ex);
        let lots = Lots::replay(&e);
        assert_eq!(lots.balance(), 0);
        assert_eq!(sum(&e), 0);
        assert_eq!(lots.granted(), 0);
    }

    #[test]
    fn clawback_of_a_partly_consumed_pack_records_the_shortfall() {
        let e = vec![grant("cs_1", 500, None), consume(200)];
        let (cb, short) = Lots::replay(&e).clawback("cs_1").expect("open lot");
        assert_eq!((cb.units, short), (-300, 200));
        let mut e = e;
        e.push(cb);
        assert_eq!(sum(&e), 0);
        assert!(Lots::replay(&e).clawback("cs_1").is_none(), "once only");
    }

    /// One step of a random history.
    #[derive(Debug, Clone)]
    enum Op {
        Grant { units: i64, ttl: Option<i64> },
        Consume { units: i64, cap: bool, key: u8 },
        Reserve { units: i64, ttl: i64 },
        Commit { which: usize, units: i64 },
        Release { which: usize },
        Advance { ms: i64 },
        Refund { which: usize },
        Adjust { units: i64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1i64..200, proptest::option::of(1i64..50))
                .prop_map(|(units, ttl)| Op::Grant { units, ttl }),
            (1i64..120, any::<bool>(), 0u8..6).prop_map(|(units, cap, key)| Op::Consume {
                units,
                cap,
                key
            }),
            (1i64..80, 1i64..40).prop_map(|(units, ttl)| Op::Reserve { units, ttl }),
            (0usize..8, 1i64..80).prop_map(|(which, units)| Op::Commit { which, units }),
            (0usize..8).prop_map(|which| Op::Release { which }),
            (1i64..30).prop_map(|ms| Op::Advance { ms }),
            (0usize..8).prop_map(|which| Op::Refund { which }),
            (-60i64..60).prop_map(|units| Op::Adjust { units }),
        ]
    }

    /// The rules as the server applies them, on one balance in memory: the read model row
    /// (`balance`, `held`) beside the ledger, consumption by key replayed as it first answered.
    #[derive(Default)]
    struct Model {
        now: i64,
        entries: Vec<Entry>,
        balance: i64,
        holds: Vec<(i64, i64, bool)>,
        lots: Vec<String>,
        answers: HashMap<u8, Result<i64, Insufficient>>,
    }

    impl Model {
        fn held(&self) -> i64 {
            self.holds
                .iter()
                .filter(|(_, exp, open)| *open && *exp > self.now)
                .map(|(u, _, _)| u)
                .sum()
        }

        fn write(&mut self, e: Entry) {
            self.balance += e.units;
            self.entries.push(e);
        }

        /// Due expiries are written before anything else happens at `now`.
        fn settle(&mut self) {
            for e in Lots::replay(&self.entries).expiries(self.now) {
                self.write(e);
            }
            let now = self.now;
            for h in &mut self.holds {
                if h.1 <= now {
                    h.2 = false;
                }
            }
        }

        fn step(&mut self, op: &Op) {
            self.settle();
            match *op {
                Op::Grant { units, ttl } => {
                    let key = format!("lot{}", self.lots.len());
                    self.lots.push(key.clone());
                    self.write(grant(&key, units, ttl.map(|t| self.now + t)));
                }
                Op::Consume { units, cap, key } => {
                    if self.answers.contains_key(&key) {
                        return; // the same Idempotency-Key: the first answer, nothing written
                    }
                    let overage = if cap { Overage::Cap } else { Overage::Reject };
                    let r = take(self.balance - self.held(), units, overage);
                    if let Ok(n) = r {
                        self.write(consume(n));
                    }
                    self.answers.insert(key, r);
                }
                Op::Reserve { units, ttl } => {
                    if self.balance - self.held() >= units {
                        self.holds.push((units, self.now + ttl, true));
                    }
                }
                Op::Commit { which, units } => {
                    if let Some(h) = self.holds.get_mut(which).filter(|h| h.2) {
                        h.2 = false;
                        let n = units.min(h.0).min(self.balance);
                        if n > 0 {
                            self.write(consume(n));
                        }
                    }
                }
                Op::Release { which } => {
                    if let Some(h) = self.holds.get_mut(which) {
                        h.2 = false;
                    }
                }
                Op::Advance { ms } => self.now += ms,
                Op::Refund { which } => {
                    let Some(key) = self.lots.get(which).cloned() else {
                        return;
                    };
                    if let Some((e, _)) = Lots::replay(&self.entries).clawback(&key) {
                        self.write(e);
                    }
                }
                Op::Adjust { units } => {
                    let units = units.max(-self.balance);
                    if units != 0 {
                        self.write(Entry {
                            kind: Kind::Adjustment,
                            units,
                            lot: None,
                            expires_at: None,
                        });
                    }
                }
            }
        }
    }

    #[test]
    fn any_history_keeps_the_balance_equal_to_the_ledger_and_never_negative() {
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: 512,
                failure_persistence: None,
                ..Config::default()
            },
            proptest::test_runner::TestRng::deterministic_rng(
                proptest::test_runner::RngAlgorithm::ChaCha,
            ),
        );
        runner
            .run(&proptest::collection::vec(op(), 1..60), |ops| {
                let mut m = Model::default();
                for op in &ops {
                    m.step(op);
                    prop_assert_eq!(m.balance, sum(&m.entries));
                    prop_assert!(m.balance >= 0, "negative balance {}", m.balance);
                    let lots = Lots::replay(&m.entries);
                    prop_assert_eq!(lots.unattributed, 0);
                    prop_assert_eq!(lots.balance(), m.balance);
                    prop_assert_eq!(lots.granted() - lots.consumed(), m.balance);
                    // No expired lot holds units once settled.
                    m.settle();
                    prop_assert!(Lots::replay(&m.entries).expiries(m.now).is_empty());
                    prop_assert_eq!(m.balance, sum(&m.entries));
                }
                // Replaying every consume key changes nothing.
                let before = m.entries.clone();
                for op in &ops {
                    if let Op::Consume { .. } = op {
                        m.step(op);
                    }
                }
                m.settle();
                let settled_before = {
                    let mut b = before.clone();
                    b.extend(Lots::replay(&before).expiries(m.now));
                    b
                };
                prop_assert_eq!(&m.entries, &settled_before);
                Ok(())
            })
            .map_err(|e| format!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
