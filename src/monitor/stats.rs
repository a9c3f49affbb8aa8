//! Delivery statistics of the last hour and day, in memory: per-minute
//! buckets for the hour, per-hour buckets for the day, each with counts and
//! a response-time histogram. Reading a window sums at most 60 buckets, so
//! `GET /api/v1/stats` costs the same with a million stored attempts as with
//! none; at start the buckets are filled once from the last day's attempts.
//!
//! Percentiles come from the histogram: geometric bins 25% wide, so a p95
//! is within a quarter of the true value — enough to see "slow".

use serde_json::{Value, json};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Upper bounds of the response-time bins in milliseconds: 1 ms × 1.25ⁿ up
/// to about two minutes, then everything longer.
const BINS: usize = 54;

fn bin_of(ms: u64) -> usize {
    let mut bound = 1.0f64;
    for i in 0..BINS - 1 {
        if (ms as f64) <= bound {
            return i;
        }
        bound *= 1.25;
    }
    BINS - 1
}

fn bin_upper(i: usize) -> u64 {
    1.25f64.powi(i as i32).ceil() as u64
}

/// What one finished attempt contributes.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at_ms: i64,
    pub ok: bool,
    pub duration_ms: u64,
    /// Attempt number above 1.
    pub retry: bool,
    /// The delivery failed for good with this attempt.
    pub exhausted: bool,
    pub timeout: bool,
}

#[derive(Clone)]
struct Bucket {
    /// Start of the bucket's minute or hour (Unix ms); buckets of another
    /// time are stale and count as empty.
    start: i64,
    succeeded: u64,
    failed: u64,
    retries: u64,
    exhausted: u64,
    timeouts: u64,
    latency: [u32; BINS],
}

impl Bucket {
    fn empty(start: i64) -> Bucket {
        Bucket {
            start,
            succeeded: 0,
            failed: 0,
            retries: 0,
            exhausted: 0,
            timeouts: 0,
            latency: [0; BINS],
        }
    }

    fn add(&mut self, s: &Sample) {
        if s.ok {
            self.succeeded += 1;
        } else {
            self.failed += 1;
        }
        self.retries += u64::from(s.retry);
        self.exhausted += u64::from(s.exhausted);
        self.timeouts += u64::from(s.timeout);
        let bin = bin_of(s.duration_ms);
        self.latency[bin] = self.latency[bin].saturating_add(1);
    }
}

/// A ring of `N` buckets each `width` ms long.
#[derive(Clone)]
struct Ring<const N: usize> {
    width: i64,
    buckets: Vec<Bucket>,
}

impl<const N: usize> Ring<N> {
    fn new(width: i64) -> Ring<N> {
        Ring {
            width,
            buckets: vec![Bucket::empty(i64::MIN); N],
        }
    }

    fn add(&mut self, s: &Sample) {
        let start = s.at_ms.div_euclid(self.width) * self.width;
        let slot = &mut self.buckets[(start.div_euclid(self.width) as usize) % N];
        if slot.start != start {
            if slot.start > start {
                // Older than what the slot holds now: out of the window.
                return;
            }
            *slot = Bucket::empty(start);
        }
        slot.add(s);
    }

    fn merge(&mut self, other: &Ring<N>) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            if theirs.start == i64::MIN {
                continue;
            }
            if mine.start == theirs.start {
                mine.succeeded += theirs.succeeded;
                mine.failed += theirs.failed;
                mine.retries += theirs.retries;
                mine.exhausted += theirs.exhausted;
                mine.timeouts += theirs.timeouts;
                for (a, b) in mine.latency.iter_mut().zip(theirs.latency.iter()) {
                    *a = a.saturating_add(*b);
                }
            } else if theirs.start > mine.start {
                *mine = theirs.clone();
            }
        }
    }

    /// The buckets of the window ending at `now`, oldest first (stale ones
    /// as empty buckets of the right start).
    fn window(&self, now: i64) -> Vec<Bucket> {
        let current = now.div_euclid(self.width) * self.width;
        (0..N as i64)
            .rev()
            .map(|back| {
                let start = current - back * self.width;
                let slot = &self.buckets[(start.div_euclid(self.width) as usize) % N];
                if slot.start == start {
                    slot.clone()
                } else {
                    Bucket::empty(start)
                }
            })
            .collect()
    }
}

/// The last hour and day of one webhook, or of all.
#[derive(Clone)]
pub struct Series {
    minutes: Ring<60>,
    hours: Ring<24>,
}

impl Default for Series {
    fn default() -> Series {
        Series {
            minutes: Ring::new(MINUTE_MS),
            hours: Ring::new(HOUR_MS),
        }
    }
}

/// Sums of a span of buckets.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Window {
    pub succeeded: u64,
    pub failed: u64,
    pub retries: u64,
    pub exhausted: u64,
    pub timeouts: u64,
    latency: Vec<u64>,
    minutes: f64,
}

impl Window {
    fn of(buckets: &[Bucket], minutes: f64) -> Window {
        let mut w = Window {
            latency: vec![0; BINS],
            minutes,
            ..Window::default()
        };
        for b in buckets {
            w.succeeded += b.succeeded;
            w.failed += b.failed;
            w.retries += b.retries;
            w.exhausted += b.exhausted;
            w.timeouts += b.timeouts;
            for (sum, n) in w.latency.iter_mut().zip(b.latency.iter()) {
                *sum += u64::from(*n);
            }
        }
        w
    }

    pub fn attempts(&self) -> u64 {
        self.succeeded + self.failed
    }

    /// Failed attempts over all attempts; `None` without attempts.
    pub fn error_rate(&self) -> Option<f64> {
        let n = self.attempts();
        (n > 0).then(|| self.failed as f64 / n as f64)
    }

    /// The response time under which a `q` share of attempts fell, in ms
    /// (the upper bound of its bin).
    pub fn percentile(&self, q: f64) -> Option<u64> {
        let n: u64 = self.latency.iter().sum();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bin_upper(i));
            }
        }
        None
    }

    pub fn to_json(&self) -> Value {
        let rate = |x: Option<f64>| x.map(|v| (v * 10_000.0).round() / 10_000.0);
        json!({
            "attempts": self.attempts(),
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retries": self.retries,
            "exhausted": self.exhausted,
            "timeouts": self.timeouts,
            "success_rate": rate(self.error_rate().map(|e| 1.0 - e)),
            "error_rate": rate(self.error_rate()),
            "delivery_rate_per_min": ((self.succeeded as f64 / self.minutes) * 100.0).round() / 100.0,
            "response_time_ms": {
                "p50": self.percentile(0.50),
                "p95": self.percentile(0.95),
                "p99": self.percentile(0.99),
            },
        })
    }
}

impl Series {
    pub fn add(&mut self, s: &Sample) {
        self.minutes.add(s);
        self.hours.add(s);
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Series) {
        self.minutes.merge(&other.minutes);
        self.hours.merge(&other.hours);
    }

    pub fn last_hour(&self, now: i64) -> Window {
        Window::of(&self.minutes.window(now), 60.0)
    }

    /// The last `minutes` minutes (at most 60).
    pub fn last_minutes(&self, now: i64, minutes: usize) -> Window {
        let buckets = self.minutes.window(now);
        let from = buckets.len().saturating_sub(minutes.max(1));
        Window::of(&buckets[from..], minutes.max(1) as f64)
    }

    pub fn last_day(&self, now: i64) -> Window {
        Window::of(&self.hours.window(now), 24.0 * 60.0)
    }

    /// Per-minute and per-hour successes and failures, oldest first.
    pub fn chart(&self, now: i64) -> Value {
        let points = |buckets: Vec<Bucket>| -> Vec<Value> {
            buckets
                .iter()
                .map(|b| {
                    json!({
                        "at": crate::clock::rfc3339(b.start),
                        "succeeded": b.succeeded,
                        "failed": b.failed,
                    })
                })
                .collect()
        };
        json!({
            "minutes": points(self.minutes.window(now)),
            "hours": points(self.hours.window(now)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, ok: bool, duration_ms: u64) -> Sample {
        Sample {
            at_ms,
            ok,
            duration_ms,
            retry: false,
            exhausted: false,
            timeout: false,
        }
    }

    #[test]
    fn windows_count_what_fell_inside_them() {
        let mut s = Series::default();
        let now = 10 * HOUR_MS + 30 * MINUTE_MS;
        s.add(&sample(now - 5 * MINUTE_MS, true, 10));
        s.add(&sample(now - 50 * MINUTE_MS, false, 10));
        s.add(&sample(now - 3 * HOUR_MS, true, 10));
        s.add(&sample(now - 30 * HOUR_MS, true, 10));
        let hour = s.last_hour(now);
        assert_eq!((hour.succeeded, hour.failed), (1, 1));
        assert_eq!(hour.error_rate(), Some(0.5));
        let day = s.last_day(now);
        assert_eq!((day.succeeded, day.failed), (2, 1));
        assert_eq!(s.last_minutes(now, 15).attempts(), 1);
        let chart = s.chart(now);
        assert_eq!(chart["minutes"].as_array().unwrap().len(), 60);
        assert_eq!(chart["hours"].as_array().unwrap().len(), 24);
        assert_eq!(chart["minutes"][54]["succeeded"], 1);
        // Stale buckets are reused, not added to.
        let later = now + 2 * HOUR_MS;
        assert_eq!(s.last_hour(later).attempts(), 0);
    }

    #[test]
    fn percentiles_are_within_a_bin_of_the_truth() {
        let mut s = Series::default();
        for ms in 1..=100u64 {
            s.add(&sample(0, true, ms * 10));
        }
        let w = s.last_hour(0);
        let p50 = w.percentile(0.5).unwrap();
        let p95 = w.percentile(0.95).unwrap();
        let p99 = w.percentile(0.99).unwrap();
        assert!((500..=625).contains(&p50), "{p50}");
        assert!((950..=1190).contains(&p95), "{p95}");
        assert!((990..=1240).contains(&p99), "{p99}");
        assert_eq!(Series::default().last_hour(0).percentile(0.5), None);
    }
}
