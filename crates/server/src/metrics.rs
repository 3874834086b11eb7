//! A few Prometheus counters and a latency histogram, rendered as text at `/metrics`.
//! Hand-rolled (a dozen atomics) rather than a metrics stack of 20 crates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS_MS: [u64; 10] = [1, 2, 5, 10, 25, 50, 100, 250, 1000, 5000];

#[derive(Default)]
pub struct Metrics {
    by_class: [AtomicU64; 6],
    buckets: [AtomicU64; BUCKETS_MS.len()],
    latency_sum_us: AtomicU64,
    pub transactions_created: AtomicU64,
    pub stripe_errors: AtomicU64,
    /// Stripe events stored in the inbox, and duplicates answered without storing.
    pub webhooks_received: AtomicU64,
    pub webhooks_duplicate: AtomicU64,
    /// Dashboard passwords checked (argon2 runs, known usernames or not).
    pub password_checks: AtomicU64,
    /// Dashboard password checks running now, and the most ever running at once.
    pub password_checks_running: AtomicU64,
    pub password_checks_running_max: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, status: u16, elapsed: Duration) {
        let class = (status / 100).min(5) as usize;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let ms = elapsed.as_millis() as u64;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP tollgate_http_requests_total HTTP requests answered, by status class.\n",
        );
        out.push_str("# TYPE tollgate_http_requests_total counter\n");
        let mut total = 0;
        for (i, c) in self.by_class.iter().enumerate().skip(1) {
            let n = c.load(Ordering::Relaxed);
            total += n;
            out.push_str(&format!(
                "tollgate_http_requests_total{{class=\"{i}xx\"}} {n}\n"
            ));
        }
        out.push_str(
            "# HELP tollgate_http_request_duration_seconds Time to answer HTTP requests.\n",
        );
        out.push_str("# TYPE tollgate_http_request_duration_seconds histogram\n");
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            out.push_str(&format!(
                "tollgate_http_request_duration_seconds_bucket{{le=\"{}\"}} {}\n",
                *b as f64 / 1000.0,
                self.buckets[i].load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "tollgate_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}\n"
        ));
        out.push_str(&format!(
            "tollgate_http_request_duration_seconds_sum {}\n",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        ));
        out.push_str(&format!(
            "tollgate_http_request_duration_seconds_count {total}\n"
        ));
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        family(
            &mut out,
            ("tollgate_transactions_created_total", "counter"),
            "Transactions created.",
            &[("", load(&self.transactions_created))],
        );
        family(
            &mut out,
            ("tollgate_stripe_errors_total", "counter"),
            "Stripe calls that failed (outages and API errors).",
            &[("", load(&self.stripe_errors))],
        );
        family(
            &mut out,
            ("tollgate_stripe_events_received_total", "counter"),
            "Stripe events received by the webhook endpoint.",
            &[
                ("kind=\"new\"", load(&self.webhooks_received)),
                ("kind=\"duplicate\"", load(&self.webhooks_duplicate)),
            ],
        );
        family(
            &mut out,
            ("tollgate_dashboard_password_checks_total", "counter"),
            "Dashboard login passwords checked.",
            &[("", load(&self.password_checks))],
        );
        family(
            &mut out,
            ("tollgate_dashboard_password_checks_running", "gauge"),
            "Dashboard password checks running now.",
            &[("", load(&self.password_checks_running))],
        );
        family(
            &mut out,
            ("tollgate_dashboard_password_checks_running_max", "gauge"),
            "The most dashboard password checks that ever ran at once (bounded by dashboard_hash_concurrency).",
            &[("", load(&self.password_checks_running_max))],
        );
        out
    }
}

/// One metric family in Prometheus' text format: its HELP and TYPE lines, then each sample as
/// (labels without the braces, or "" for none; value).
pub fn family(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    samples: &[(&str, String)],
) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for (labels, value) in samples {
        if labels.is_empty() {
            out.push_str(&format!("{name} {value}\n"));
        } else {
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    }
}
