//! When to try again, pure: exponential backoff with jitter, and the
//! receiver's own `Retry-After`.

use std::time::{Duration, SystemTime};

/// The delay after failed attempt number `attempt` (1-based):
/// `base * 2^(attempt-1)`, moved by `jitter` (in -1.0..=1.0) by up to ±20%,
/// and never more than `max`.
pub fn delay(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(40);
    let raw = base.as_secs_f64() * 2f64.powi(exponent as i32);
    let jittered = raw * (1.0 + 0.2 * jitter.clamp(-1.0, 1.0));
    Duration::from_secs_f64(jittered.min(max.as_secs_f64()).max(0.0))
}

/// A `Retry-After` value — seconds, or an HTTP date — as a delay from `now`,
/// capped at `max`. `None` when it cannot be read.
pub fn retry_after(value: &str, now: SystemTime, max: Duration) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(max))
}

/// A jitter value in -1.0..=1.0 from the OS random source.
pub fn random_jitter() -> f64 {
    let mut bytes = [0u8; 4];
    crate::secrets::fill_random(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(30);
    const MAX: Duration = Duration::from_secs(6 * 3600);

    #[test]
    fn doubles_from_the_base_and_caps() {
        let table = [
            (1, 30),
            (2, 60),
            (3, 120),
            (4, 240),
            (10, 15_360),
            (11, 21_600),
            (60, 21_600),
        ];
        for (attempt, seconds) in table {
            assert_eq!(
                delay(attempt, BASE, MAX, 0.0),
                Duration::from_secs(seconds),
                "{attempt}"
            );
        }
    }

    #[test]
    fn jitter_moves_at_most_twenty_percent() {
        assert_eq!(delay(1, BASE, MAX, 1.0), Duration::from_secs(36));
        assert_eq!(delay(1, BASE, MAX, -1.0), Duration::from_secs(24));
        assert_eq!(delay(1, BASE, MAX, 7.0), Duration::from_secs(36));
        for _ in 0..1000 {
            let d = delay(2, BASE, MAX, random_jitter()).as_secs_f64();
            assert!((48.0..=72.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_caps() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("120", now, MAX), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("999999", now, MAX), Some(MAX));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(retry_after(&date, now, MAX), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(retry_after(&past, now, MAX), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now, MAX), None);
        assert_eq!(retry_after("-5", now, MAX), None);
    }
}
