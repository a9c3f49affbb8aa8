//! The logger behind the `log` facade: env_logger, configured for where
//! hookbox runs.
//!
//! `--log-level` sets the level, `RUST_LOG` overrides it (env_logger's
//! syntax). Text lines carry a timestamp, except under journald
//! (`JOURNAL_STREAM` is set), which stamps lines itself; there each line
//! starts with its syslog priority (`<3>` for errors), which journald reads
//! as the entry's level. `--log-format json` writes one object a line
//! (`ts`, `level`, `target`, `msg`) for log shippers.

use std::io::Write;

use log::Level;

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
    builder.init();
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
