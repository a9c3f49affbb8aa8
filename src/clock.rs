//! Wall-clock time and its RFC 3339 form.
//!
//! The store keeps times as Unix milliseconds (`INTEGER`); the API shows them
//! as RFC 3339 UTC with second precision, the seed's format
//! (`2025-01-21T22:20:56Z`). Pure code takes `now` as an argument; only the
//! edges call [`now_ms`].

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let now = OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// `ms` as RFC 3339 UTC, truncated to the second: `2025-01-21T22:20:56Z`.
pub fn rfc3339(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let Ok(t) = OffsetDateTime::from_unix_timestamp(seconds) else {
        // Out of range only for corrupt input; show the epoch rather than fail.
        return "1970-01-01T00:00:00Z".to_owned();
    };
    let Ok(year) = u32::try_from(t.year()) else {
        return format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
    };
    // Digit by digit rather than through `format!`, which cost about 3,000
    // instructions of every publish (BENCHMARKS.md).
    let mut out = String::with_capacity(20);
    push_digits(&mut out, year, 4);
    out.push('-');
    push_digits(&mut out, u32::from(t.month() as u8), 2);
    out.push('-');
    push_digits(&mut out, u32::from(t.day()), 2);
    out.push('T');
    push_digits(&mut out, u32::from(t.hour()), 2);
    out.push(':');
    push_digits(&mut out, u32::from(t.minute()), 2);
    out.push(':');
    push_digits(&mut out, u32::from(t.second()), 2);
    out.push('Z');
    out
}

/// The last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, n: u32, width: u32) {
    for place in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(place) % 10) as u8));
    }
}

/// [`rfc3339`] with milliseconds, for log lines.
pub fn rfc3339_ms(ms: i64) -> String {
    let seconds = rfc3339(ms);
    let whole = seconds.trim_end_matches('Z');
    format!("{whole}.{:03}Z", ms.rem_euclid(1000))
}

/// Parses an RFC 3339 time (any offset) into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A duration in the command line's units: `5d`, `6h`, `30s`, `250ms`.
pub fn human_duration(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    for (size, unit) in UNITS {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Calls `tick` every `period` (the first time after `first`) until
/// `stopping` is set or `tick` returns false. It naps at most 100 ms at a
/// time, so a stop is noticed promptly; a slow tick delays the next one.
pub fn every(
    first: std::time::Duration,
    period: std::time::Duration,
    stopping: &std::sync::atomic::AtomicBool,
    mut tick: impl FnMut() -> bool,
) {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let mut next = Instant::now() + first;
    while !stopping.load(Ordering::Acquire) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        next = now + period;
        if !tick() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_seed_example_and_parses_it_back() {
        let ms = parse_rfc3339("2025-01-21T22:20:56Z").unwrap();
        assert_eq!(rfc3339(ms), "2025-01-21T22:20:56Z");
        assert_eq!(rfc3339(ms + 999), "2025-01-21T22:20:56Z");
    }

    #[test]
    fn formats_any_time_as_format_would() {
        let formatted = |ms: i64| {
            let t = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).unwrap();
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                t.month() as u8,
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        };
        let table = [
            (0, "1970-01-01T00:00:00Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59Z"),
            (-62_167_219_200_000, "0000-01-01T00:00:00Z"),
            (-62_167_219_200_001, "-001-12-31T23:59:59Z"),
        ];
        for (ms, text) in table {
            assert_eq!(rfc3339(ms), text, "{ms}");
            assert_eq!(rfc3339(ms), formatted(ms), "{ms}");
        }
        for ms in (-70_000_000_000_000..250_000_000_000_000).step_by(7_919_999_999_993) {
            assert_eq!(rfc3339(ms), formatted(ms), "{ms}");
        }
        assert_eq!(rfc3339(i64::MAX), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn durations_read_back_in_their_largest_whole_unit() {
        let table = [
            (432_000_000, "5d"),
            (21_600_000, "6h"),
            (30_000, "30s"),
            (500, "500ms"),
            (90_000, "90s"),
        ];
        for (ms, text) in table {
            assert_eq!(human_duration(ms), text);
        }
    }

    #[test]
    fn parses_offsets_and_rejects_garbage() {
        assert_eq!(
            parse_rfc3339("2025-01-21T23:20:56+01:00"),
            parse_rfc3339("2025-01-21T22:20:56Z")
        );
        for bad in [
            "",
            "2025-01-21",
            "2025-13-01T00:00:00Z",
            "yesterday",
            "2025-01-21 22:20:56",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
