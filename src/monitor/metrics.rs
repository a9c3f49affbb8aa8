//! `GET /metrics`: Prometheus metrics through prometheus-client, which does
//! the naming rules and the text encoding.
//!
//! The delivery hot path takes no lock: its counters are created once, for
//! every label value, and workers add to their atomics; the response-time
//! histogram is [`AtomicHistogram`] (prometheus-client's own takes a mutex
//! per observation). Label families are used only where requests already
//! wait for the database (published events, API requests). Queue depth and
//! webhook states are read from the database when scraped.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

/// Response-time bucket bounds, in seconds.
const BOUNDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram whose observation is a few atomic adds.
#[derive(Debug, Default)]
pub struct AtomicHistogramInner {
    /// One per bound, and one for +Inf.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    /// The sum in microseconds.
    sum_us: AtomicU64,
}

/// A handle to shared [`AtomicHistogramInner`] counts.
#[derive(Debug, Default, Clone)]
pub struct AtomicHistogram(std::sync::Arc<AtomicHistogramInner>);

impl AtomicHistogram {
    pub fn observe(&self, seconds: f64) {
        let i = BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BOUNDS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0
            .sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        // Count from the buckets, so the two always agree in one scrape.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// What a finished delivery attempt was.
pub const ATTEMPT_RESULTS: [&str; 7] = [
    "success",
    "http_status",
    "timeout",
    "connect",
    "dns",
    "tls",
    "blocked_target",
];

/// What became of a delivery after an attempt.
pub const DELIVERY_OUTCOMES: [&str; 3] = ["succeeded", "retried", "failed"];

/// Every metric hookbox exports.
pub struct Metrics {
    registry: Registry,
    pub events_published: Family<EventLabels, Counter>,
    pub api_requests: Family<RequestLabels, Counter>,
    pub rate_limited: Counter,
    /// Indexed like [`ATTEMPT_RESULTS`].
    attempts: Vec<Counter>,
    /// Indexed like [`DELIVERY_OUTCOMES`].
    deliveries: Vec<Counter>,
    pub retries: Counter,
    pub response_time: AtomicHistogram,
    pub queue_pending: Gauge,
    pub queue_held: Gauge,
    pub oldest_pending_age: Gauge,
    pub webhooks: Family<StateLabels, Gauge>,
    pub alerts_open: Gauge,
    pub database_errors: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hookbox");
        let events_published = Family::<EventLabels, Counter>::default();
        registry.register(
            "events_published",
            "Events accepted by POST /api/v1/events, by type",
            events_published.clone(),
        );
        let attempt_family = Family::<ResultLabels, Counter>::default();
        let attempts = ATTEMPT_RESULTS
            .iter()
            .map(|r| {
                attempt_family
                    .get_or_create(&ResultLabels {
                        result: (*r).to_owned(),
                    })
                    .clone()
            })
            .collect();
        registry.register(
            "delivery_attempts",
            "Delivery attempts made, by result (success or the error kind)",
            attempt_family,
        );
        let outcome_family = Family::<OutcomeLabels, Counter>::default();
        let deliveries = DELIVERY_OUTCOMES
            .iter()
            .map(|o| {
                outcome_family
                    .get_or_create(&OutcomeLabels {
                        outcome: (*o).to_owned(),
                    })
                    .clone()
            })
            .collect();
        registry.register(
            "deliveries",
            "What became of deliveries after an attempt: succeeded, retried later, or failed for good",
            outcome_family,
        );
        let retries = Counter::default();
        registry.register(
            "delivery_retries",
            "Attempts after a delivery's first",
            retries.clone(),
        );
        let response_time = AtomicHistogram::default();
        registry.register_with_unit(
            "delivery_response_time",
            "Time from sending a delivery to its answer or failure",
            Unit::Seconds,
            response_time.clone(),
        );
        let queue_pending = Gauge::default();
        registry.register(
            "queue_pending_deliveries",
            "Deliveries waiting to be sent, held ones included",
            queue_pending.clone(),
        );
        let queue_held = Gauge::default();
        registry.register(
            "queue_held_deliveries",
            "Pending deliveries held by disabled webhooks",
            queue_held.clone(),
        );
        let oldest_pending_age = Gauge::default();
        registry.register_with_unit(
            "queue_oldest_pending_age",
            "Age of the oldest delivery waiting for an enabled webhook",
            Unit::Seconds,
            oldest_pending_age.clone(),
        );
        let webhooks = Family::<StateLabels, Gauge>::default();
        registry.register("webhooks", "Webhooks by state", webhooks.clone());
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "API requests answered, by route and status",
            api_requests.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "api_rate_limited",
            "API requests refused with 429 by a token's rate limit",
            rate_limited.clone(),
        );
        let alerts_open = Gauge::default();
        registry.register("alerts_open", "Alerts open now", alerts_open.clone());
        let database_errors = Counter::default();
        registry.register(
            "database_errors",
            "Database operations that failed (the API answered 503 or a write was lost)",
            database_errors.clone(),
        );
        Metrics {
            registry,
            events_published,
            api_requests,
            rate_limited,
            attempts,
            deliveries,
            retries,
            response_time,
            queue_pending,
            queue_held,
            oldest_pending_age,
            webhooks,
            alerts_open,
            database_errors,
        }
    }

    /// Counts one attempt: its result (`success` or an error kind), what
    /// became of the delivery, and how long it took. Atomics only.
    pub fn attempt(&self, result: &str, outcome: &str, seconds: f64, retry: bool) {
        if let Some(i) = ATTEMPT_RESULTS.iter().position(|r| *r == result) {
            self.attempts[i].inc();
        }
        if let Some(i) = DELIVERY_OUTCOMES.iter().position(|o| *o == outcome) {
            self.deliveries[i].inc();
        }
        if retry {
            self.retries.inc();
        }
        self.response_time.observe(seconds);
    }

    /// The OpenMetrics text exposition, after the caller has set the
    /// scrape-time gauges.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            log::error!("encoding metrics failed");
        }
        text
    }
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4), for
/// scrapers and tools (`promtool check metrics`) that do not ask for
/// OpenMetrics: a counter family is named with its `_total` suffix in HELP
/// and TYPE, and there are no UNIT or EOF lines. Samples are the same.
pub fn to_classic(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    let mut help: Option<&str> = None;
    for line in open_metrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some((_, text)) = help.take().and_then(|h| h.split_once(' ')) {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_with_total_and_drops_unit_and_eof() {
        let m = Metrics::new();
        m.attempt("success", "succeeded", 0.012, false);
        let classic = to_classic(&m.encode());
        assert!(
            classic.contains("# TYPE hookbox_delivery_attempts_total counter"),
            "{classic}"
        );
        assert!(
            classic.contains("# HELP hookbox_delivery_attempts_total "),
            "{classic}"
        );
        assert!(
            classic.contains("hookbox_delivery_attempts_total{result=\"success\"} 1"),
            "{classic}"
        );
        assert!(
            classic.contains("hookbox_delivery_response_time_seconds_bucket{le=\"+Inf\"} 1"),
            "{classic}"
        );
        assert!(
            !classic.contains("# UNIT") && !classic.contains("# EOF"),
            "{classic}"
        );
    }
}
