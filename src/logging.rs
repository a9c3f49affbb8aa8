//! The logger behind the `log` facade: env_logger, configured for where
//! hookbox runs.
//!
//! `--log-level` sets the level, `RUST_LOG` overrides it (env_logger's
//! syntax). Text lines carry a timestamp, except under journald
//! (`JOURNAL_STREAM` is set), which stamps lines itself; there each line
//! starts with its syslog priority (`<3>` for errors), which journald reads
//! as the entry's level. `--log-format json` writes one object a line
//! (`ts`, `level`, `target`, `msg`) for log shippers.
//!
//! Two guards sit between the facade and env_logger:
//!
//! - **No bytes on the wire in the log.** ureq-proto hex-dumps every byte
//!   it sends and receives at trace level — the event bodies receivers get,
//!   which carry consignors' personal data — and rustls traces handshake
//!   contents. Records from the targets in [`CAPPED`] above their cap are
//!   dropped whatever `RUST_LOG` or `--log-level` says, so that not even
//!   `RUST_LOG=trace` (or `RUST_LOG=ureq_proto::util=trace`, which a filter
//!   directive could not stop) writes a body. tiny_http logs no bytes (its
//!   only lines are about accepting connections), hookbox logs none.
//! - **No floods.** A line that an outside client can cause once per
//!   connection or request goes through a [`Limited`]: the first is
//!   written, the rest within its interval are only counted, and the next
//!   one written after that (or the summary at stop, [`Limited::flush`])
//!   says how many were left out.

use std::fmt;
use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::{Level, Log, Metadata, Record};

use crate::config::LogFormat;

pub fn init(level: &str, format: LogFormat) {
    let env = env_logger::Env::default().default_filter_or(level);
    let mut builder = env_logger::Builder::from_env(env);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match format {
        LogFormat::Json => {
            builder.format(|buf, record| {
                let line = serde_json::json!({
                    "ts": crate::clock::rfc3339_ms(crate::clock::now_ms()),
                    "level": record.level().as_str().to_ascii_lowercase(),
                    "target": record.target(),
                    "msg": record.args().to_string(),
                });
                writeln!(buf, "{line}")
            });
        }
        LogFormat::Text if journald => {
            builder.format(|buf, record| {
                writeln!(
                    buf,
                    "<{}>{}: {}",
                    syslog_priority(record.level()),
                    record.target(),
                    record.args()
                )
            });
        }
        LogFormat::Text => {}
    }
    let inner = builder.build();
    log::set_max_level(inner.filter());
    // Only fails if a logger is already set (it is not, outside tests).
    let _ = log::set_boxed_logger(Box::new(Capped { inner }));
}

/// Targets whose records are dropped above a level, whatever the filter
/// says: ureq and ureq-proto hex-dump request and response bytes at trace
/// (their debug lines name only methods, URLs, statuses and non-sensitive
/// headers); rustls traces handshake messages.
pub const CAPPED: [(&str, Level); 3] = [
    ("ureq", Level::Debug),
    ("ureq_proto", Level::Debug),
    ("rustls", Level::Debug),
];

/// Whether a record of `target` at `level` may be written at all.
fn within_cap(target: &str, level: Level) -> bool {
    CAPPED.iter().all(|(name, cap)| {
        let ours = target
            .strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"));
        !ours || level <= *cap
    })
}

/// env_logger behind the [`CAPPED`] rule.
struct Capped {
    inner: env_logger::Logger,
}

impl Log for Capped {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        within_cap(metadata.target(), metadata.level()) && self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if within_cap(record.target(), record.level()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// One kind of log line that outside clients can repeat at will (a refused
/// connection, a failed accept, a spent budget): written at most once per
/// interval, the others counted. Cheap enough for the accept path: one
/// short mutex, no allocation for a line left out.
pub struct Limited {
    /// The log target the lines are written under: the module of the code
    /// that logs them (`module_path!()` where the `Limited` is made), so
    /// `RUST_LOG` filters them like that module's other lines.
    target: &'static str,
    /// What the lines say, for the summary at [`Limited::flush`].
    kind: &'static str,
    every: Duration,
    state: Mutex<LimitedState>,
}

struct LimitedState {
    /// When a line of this kind was last written.
    written: Option<Instant>,
    /// Lines left out since then.
    left_out: u64,
}

/// How many lines were left out, over how long; displays as
/// ` (and 2089 more like it in the last 60 s)`, or as nothing for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeftOut {
    pub count: u64,
    pub over: Duration,
}

impl fmt::Display for LeftOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return Ok(());
        }
        write!(
            f,
            " (and {} more like it in the last {} s)",
            self.count,
            self.over.as_secs().max(1)
        )
    }
}

impl Limited {
    /// Lines of `kind`, at most one every `every`, logged under `target`
    /// (give `module_path!()`).
    pub const fn new(target: &'static str, kind: &'static str, every: Duration) -> Limited {
        Limited {
            target,
            kind,
            every,
            state: Mutex::new(LimitedState {
                written: None,
                left_out: 0,
            }),
        }
    }

    /// Whether a line happening at `now` is to be written; if so, with how
    /// many were left out before it.
    pub fn admit(&self, now: Instant) -> Option<LeftOut> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.written {
            Some(at) if now.saturating_duration_since(at) < self.every => {
                state.left_out += 1;
                None
            }
            written => {
                let left_out = LeftOut {
                    count: state.left_out,
                    over: written.map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
                };
                state.written = Some(now);
                state.left_out = 0;
                Some(left_out)
            }
        }
    }

    /// Writes `message` at `level` unless it is left out; a written line
    /// ends with the count of those left out before it.
    pub fn log(&self, level: Level, message: fmt::Arguments<'_>) {
        if !log::log_enabled!(target: self.target, level) {
            return;
        }
        if let Some(left_out) = self.admit(Instant::now()) {
            log::log!(target: self.target, level, "{message}{left_out}");
        }
    }

    /// Takes the count of lines left out since the last one written, if
    /// any, as [`Limited::admit`] would report it at `now`.
    pub fn take_left_out(&self, now: Instant) -> Option<LeftOut> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let count = std::mem::take(&mut state.left_out);
        let over = state
            .written
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        (count > 0).then_some(LeftOut { count, over })
    }

    /// Writes the summary of the lines left out and not yet reported (at
    /// stop, so that a flood's size is never lost with the process).
    pub fn flush(&self, level: Level) {
        if let Some(left_out) = self.take_left_out(Instant::now()) {
            log::log!(
                target: self.target,
                level,
                "{}: {} more in the last {} s, not written one by one",
                self.kind,
                left_out.count,
                left_out.over.as_secs().max(1)
            );
        }
    }
}

/// The least important level written for `target`, for tests.
#[cfg(test)]
fn cap_of(target: &str) -> log::LevelFilter {
    [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ]
    .into_iter()
    .find(|level| within_cap(target, *level))
    .map_or(log::LevelFilter::Off, |level| level.to_level_filter())
}

/// The syslog priority journald reads from a `<N>` prefix.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::LevelFilter;

    #[test]
    fn byte_dumping_targets_are_capped_at_debug_and_others_are_not() {
        let table = [
            ("ureq", LevelFilter::Debug),
            ("ureq::run", LevelFilter::Debug),
            ("ureq_proto::util", LevelFilter::Debug),
            ("rustls::server::hs", LevelFilter::Debug),
            ("hookbox::api", LevelFilter::Trace),
            ("tiny_http", LevelFilter::Trace),
            // Only whole path segments match.
            ("ureqx", LevelFilter::Trace),
            ("rustls_pki_types", LevelFilter::Trace),
        ];
        for (target, cap) in table {
            assert_eq!(cap_of(target), cap, "{target}");
        }
    }

    #[test]
    fn a_limited_line_is_written_once_per_interval_with_the_count_left_out() {
        let limited = Limited::new(module_path!(), "test lines", Duration::from_secs(60));
        let t0 = Instant::now();
        let zero = LeftOut {
            count: 0,
            over: Duration::ZERO,
        };
        assert_eq!(limited.admit(t0), Some(zero));
        for i in 1..=2089 {
            assert_eq!(limited.admit(t0 + Duration::from_millis(i)), None);
        }
        let later = t0 + Duration::from_secs(60);
        let left_out = limited.admit(later).unwrap();
        assert_eq!(left_out.count, 2089);
        assert_eq!(
            left_out.to_string(),
            " (and 2089 more like it in the last 60 s)"
        );
        assert_eq!(zero.to_string(), "");
        // Nothing left out since: nothing to flush.
        assert_eq!(limited.take_left_out(later), None);
        assert_eq!(limited.admit(later + Duration::from_secs(1)), None);
        let flushed = limited
            .take_left_out(later + Duration::from_secs(5))
            .unwrap();
        assert_eq!(flushed.count, 1);
        assert_eq!(flushed.over, Duration::from_secs(5));
        assert_eq!(limited.take_left_out(later + Duration::from_secs(6)), None);
    }
}
