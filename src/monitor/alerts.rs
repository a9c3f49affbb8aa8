//! Alerts: rules over the statistics, the queue and the machine, checked
//! every `--alert-check-every`. An alert opens once when its condition
//! starts, is stored, logged, and published as a signed `hookbox.alert`
//! event (to `--alert-url` and any webhook subscribed to it), and resolves
//! — logged and published again — when its condition clears.
//!
//! The rules (the seed's delivery failures, response patterns, error
//! thresholds and system health):
//! - `delivery_failures`: a delivery to a webhook exhausted its attempts in
//!   the window, and the webhook's latest attempt failed too;
//! - `error_rate`: over the window, at least `min_samples` attempts and more
//!   than `--alert-error-rate` of them failed;
//! - `slow_responses`: over the window, p95 response time above
//!   `--alert-p95`;
//! - `timeouts`: at least 5 attempts timed out in the window, a quarter or
//!   more of them;
//! - `webhook_disabled`: hookbox disabled a webhook (410, or failing for
//!   the whole `--disable-after`);
//! - `queue_age`: a delivery for an enabled webhook has waited longer than
//!   `--alert-queue-age`;
//! - `database`: the writer did not commit within 2 s, or a database
//!   operation failed since the last check;
//! - `disk_space`: less than `--alert-disk-free` free beside the database.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Duration;

use super::Monitor;
use crate::clock;
use crate::envelope;
use crate::ids::{self, Kind};
use crate::store::events::Event;
use crate::store::monitoring::{self, Alert, AlertChange};
use crate::store::writer::WriterHandle;
use crate::store::{self, webhooks};

/// The event type alerts are published as.
pub const EVENT_TYPE: &str = "hookbox.alert";

/// Thresholds, from the command line.
#[derive(Debug, Clone)]
pub struct Rules {
    pub every: Duration,
    pub window: Duration,
    pub min_samples: u64,
    /// A share, 0 to 1.
    pub error_rate: f64,
    pub p95: Duration,
    pub queue_age: Duration,
    pub disk_free: u64,
}

/// One rule's verdict for one subject this round.
struct Finding {
    rule: String,
    subject: String,
    firing: bool,
    title: String,
    message: String,
    last_error: Option<String>,
}

/// Starts the alerts thread; it returns once `stopping` is set.
pub fn spawn(
    monitor: Arc<Monitor>,
    db: PathBuf,
    writer: WriterHandle,
    rules: Rules,
    stopping: Arc<AtomicBool>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name("alerts".into()).spawn(move || {
        let conn = match store::open_reader(&db) {
            Ok(conn) => conn,
            Err(e) => {
                log::error!("alerts: cannot open the database, no alerts will be raised: {e}");
                return;
            }
        };
        let mut open: HashSet<(String, String)> = match monitoring::open_alerts(&conn) {
            Ok(alerts) => alerts.into_iter().map(|a| (a.rule, a.subject)).collect(),
            Err(e) => {
                log::error!("alerts: reading open alerts: {e}");
                HashSet::new()
            }
        };
        monitor.metrics.alerts_open.set(open.len() as i64);
        let mut db_errors_seen = monitor.metrics.database_errors.get();
        clock::every(rules.every, rules.every, &stopping, || {
            let errors_now = monitor.metrics.database_errors.get();
            let findings = evaluate(
                &monitor,
                &conn,
                &writer,
                &rules,
                &db,
                errors_now > db_errors_seen,
                &open,
            );
            db_errors_seen = errors_now;
            for f in findings {
                apply(&writer, &mut open, f);
            }
            monitor.metrics.alerts_open.set(open.len() as i64);
            true
        });
    })
}

/// Opens or resolves the alert of a finding when its state changes.
fn apply(writer: &WriterHandle, open: &mut HashSet<(String, String)>, f: Finding) {
    let key = (f.rule.clone(), f.subject.clone());
    if f.firing == open.contains(&key) {
        return;
    }
    let now = clock::now_ms();
    let alert = Alert {
        id: ids::new(Kind::Alert),
        rule: f.rule.clone(),
        subject: f.subject.clone(),
        open: f.firing,
        opened_at: now,
        resolved_at: (!f.firing).then_some(now),
        title: f.title,
        message: f.message,
        last_error: f.last_error,
    };
    let change = if f.firing {
        AlertChange::Open(alert)
    } else {
        AlertChange::Resolve {
            rule: alert.rule.clone(),
            subject: alert.subject.clone(),
        }
    };
    match writer.alert(change, event, now) {
        Ok(Some(stored)) => {
            if stored.open {
                log::warn!("alert raised: {}: {}", stored.title, stored.message);
                open.insert(key);
            } else {
                log::info!("alert resolved: {}", stored.title);
                open.remove(&key);
            }
        }
        // Someone else's change won; take the database's word.
        Ok(None) => {
            if f.firing {
                open.insert(key);
            } else {
                open.remove(&key);
            }
        }
        Err(e) => log::warn!("alerts: recording an alert failed, trying again next round: {e}"),
    }
}

/// The `hookbox.alert` event of an alert's opening or resolution. Its
/// `data` members are in the documented order (the catalog's schema and
/// example): alert_id, rule, status, webhook_id, title, message,
/// last_error, opened_at, resolved_at.
pub fn event(alert: &Alert, now: i64) -> Event {
    /// The `data` of a `hookbox.alert` event, members in documented order.
    #[derive(serde::Serialize)]
    struct Data<'a> {
        alert_id: &'a str,
        rule: &'a str,
        status: &'static str,
        webhook_id: Option<&'a str>,
        title: &'a str,
        message: &'a str,
        last_error: Option<&'a str>,
        opened_at: String,
        resolved_at: Option<String>,
    }
    let data = Data {
        alert_id: &alert.id,
        rule: &alert.rule,
        status: if alert.open { "open" } else { "resolved" },
        webhook_id: alert
            .subject
            .starts_with("wh_")
            .then_some(alert.subject.as_str()),
        title: &alert.title,
        message: &alert.message,
        last_error: alert.last_error.as_deref(),
        opened_at: clock::rfc3339(alert.opened_at),
        resolved_at: alert.resolved_at.map(clock::rfc3339),
    };
    // Serialising strings and options into a String cannot fail.
    let data = serde_json::to_string(&data).unwrap_or_else(|_| "{}".to_owned());
    envelope::new_event(EVENT_TYPE, None, envelope::Data::Text(&data), now)
}

fn evaluate(
    monitor: &Monitor,
    conn: &rusqlite::Connection,
    writer: &WriterHandle,
    rules: &Rules,
    db: &std::path::Path,
    new_db_errors: bool,
    open: &HashSet<(String, String)>,
) -> Vec<Finding> {
    let now = clock::now_ms();
    let window_ms = rules.window.as_millis() as i64;
    let minutes = (rules.window.as_secs() / 60).clamp(1, 60) as usize;
    let window_words = clock::human_duration(window_ms);
    let mut out = Vec::new();
    let hooks = match webhooks::all_live(conn) {
        Ok(hooks) => hooks,
        Err(e) => {
            log::warn!("alerts: reading webhooks: {e}");
            Vec::new()
        }
    };
    let last = monitor.last_attempts();
    for hook in &hooks {
        let w = monitor.series(Some(&hook.id)).last_minutes(now, minutes);
        let last = last.get(&hook.id).cloned().unwrap_or_default();
        // Alert messages are logged: no query string (receivers' access keys).
        let name = format!(
            "{} ({})",
            crate::delivery::target::loggable(&hook.url),
            hook.id
        );
        let failed_for_good = last.exhausted_at.is_some_and(|at| now - at < window_ms) && !last.ok;
        out.push(Finding {
            rule: "delivery_failures".into(),
            subject: hook.id.clone(),
            firing: failed_for_good,
            title: format!("Deliveries to {name} are failing"),
            message: format!(
                "A delivery to {name} failed after all its attempts and the latest attempt failed too; last error: {}. Failed deliveries can be retried or replayed once the receiver works.",
                last.error.as_deref().unwrap_or("unknown")
            ),
            last_error: last.error.clone(),
        });
        let enough = w.attempts() >= rules.min_samples;
        let rate = w.error_rate().unwrap_or(0.0);
        out.push(Finding {
            rule: "error_rate".into(),
            subject: hook.id.clone(),
            firing: enough && rate > rules.error_rate,
            title: format!("Many deliveries to {name} fail"),
            message: format!(
                "{:.0}% of {} attempts to {name} failed in the last {window_words} (threshold {:.0}%); last error: {}",
                rate * 100.0,
                w.attempts(),
                rules.error_rate * 100.0,
                last.error.as_deref().unwrap_or("none")
            ),
            last_error: last.error.clone(),
        });
        let p95 = w.percentile(0.95).unwrap_or(0);
        out.push(Finding {
            rule: "slow_responses".into(),
            subject: hook.id.clone(),
            firing: enough && p95 > rules.p95.as_millis() as u64,
            title: format!("{name} answers slowly"),
            message: format!(
                "95% of the last {window_words}'s {} attempts to {name} took up to {p95} ms (threshold {} ms); a receiver should answer first and work after",
                w.attempts(),
                rules.p95.as_millis()
            ),
            last_error: None,
        });
        out.push(Finding {
            rule: "timeouts".into(),
            subject: hook.id.clone(),
            firing: w.timeouts >= 5 && w.timeouts * 4 >= w.attempts(),
            title: format!("Deliveries to {name} time out"),
            message: format!(
                "{} of {} attempts to {name} timed out in the last {window_words}",
                w.timeouts,
                w.attempts()
            ),
            last_error: last.error.clone(),
        });
        let auto = !hook.enabled
            && hook
                .disabled_reason
                .as_ref()
                .is_some_and(webhooks::DisableReason::by_system);
        out.push(Finding {
            rule: "webhook_disabled".into(),
            subject: hook.id.clone(),
            firing: auto,
            title: format!("{name} was disabled"),
            message: format!(
                "hookbox disabled {name}: {}. Its deliveries are held; enable it again with PATCH {{\"enabled\": true}} once the receiver works.",
                hook.disabled_reason
                    .as_ref()
                    .map_or_else(|| "unknown".to_owned(), ToString::to_string)
            ),
            last_error: last.error.clone(),
        });
    }
    // Alerts about webhooks deleted since: resolved.
    for (rule, subject) in open {
        if subject.starts_with("wh_") && !hooks.iter().any(|h| h.id == *subject) {
            out.push(Finding {
                rule: rule.clone(),
                subject: subject.clone(),
                firing: false,
                title: String::new(),
                message: String::new(),
                last_error: None,
            });
        }
    }

    let oldest = monitor
        .queue(conn, None)
        .ok()
        .and_then(|q| q.oldest_waiting)
        .map(|created| now - created);
    out.push(Finding {
        rule: "queue_age".into(),
        subject: "system".into(),
        firing: oldest.is_some_and(|age| age > rules.queue_age.as_millis() as i64),
        title: "Deliveries are waiting too long".into(),
        message: format!(
            "The oldest delivery waiting for an enabled webhook is {} old (threshold {}); receivers are down or slower than the events come",
            clock::human_duration(oldest.unwrap_or(0)),
            clock::human_duration(rules.queue_age.as_millis() as i64)
        ),
        last_error: None,
    });
    let ping = writer.ping(Duration::from_secs(2));
    out.push(Finding {
        rule: "database".into(),
        subject: "system".into(),
        firing: ping.is_err() || new_db_errors,
        title: "The database is failing".into(),
        message: match &ping {
            Err(e) => format!("The database did not take a commit: {e}. Publishing answers 503 until it does."),
            Ok(()) => "Database operations failed since the last check (the API answered 503); see the log".into(),
        },
        last_error: ping.err().map(|e| e.to_string()),
    });
    if let Some(free) = free_bytes(db) {
        out.push(Finding {
            rule: "disk_space".into(),
            subject: "system".into(),
            firing: free < rules.disk_free,
            title: "Disk space is low".into(),
            message: format!(
                "{} MiB free beside the database (threshold {} MiB); when it runs out, publishing answers 503",
                free / (1024 * 1024),
                rules.disk_free / (1024 * 1024)
            ),
            last_error: None,
        });
    }
    out
}

/// Free bytes on the file system holding the database.
fn free_bytes(db: &std::path::Path) -> Option<u64> {
    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    rustix::fs::statvfs(dir)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
}
