//! SQL for monitoring: the queue as it stands, the last day's attempts (to
//! rebuild statistics at start), and alerts.
//!
//! Also the alerts' changes through the writer (the end of this file):
//! opening or resolving an alert and publishing its event in the same
//! transaction. The store does not know what an alert's event looks like:
//! the monitor passes the function that makes it ([`Announce`]), so the
//! store never imports the monitor.

use rusqlite::{Connection, OptionalExtension, params};

use super::events::{self, Event};
use super::writer::{Tx, WriteOp, WriterHandle};
use super::{Context, StoreError};

/// The delivery queue now, for all webhooks or one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    pub pending: i64,
    /// Pending deliveries of disabled webhooks.
    pub held: i64,
    /// Held by the engine (lined up or being attempted); pending in the
    /// database, so this reading leaves it 0 and the monitor counts it from
    /// the holds (`store/holds.rs`).
    pub delivering: i64,
    /// When the oldest delivery waiting for an enabled webhook was created.
    /// (Deliveries of deleted webhooks are cancelled, so none is left out.)
    pub oldest_waiting: Option<i64>,
}

/// Counted per webhook on the `(webhook_id, status, id)` index: a count is
/// a walk over that webhook's pending entries in the index alone, and the
/// oldest pending delivery is the first entry (ids sort in creation order),
/// found by one seek.
pub fn queue(conn: &Connection, webhook: Option<&str>) -> Result<Queue, StoreError> {
    let hooks: Vec<(String, bool)> = conn
        .prepare_cached(
            "SELECT id, enabled FROM webhooks WHERE deleted_at IS NULL AND (?1 IS NULL OR id = ?1)",
        )
        .and_then(|mut stmt| {
            stmt.query_map([webhook], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .context("listing webhooks for the queue")?;
    let mut q = Queue::default();
    for (id, enabled) in hooks {
        let (pending, oldest): (i64, Option<i64>) = conn
            .prepare_cached(
                "SELECT \
                   (SELECT count(*) FROM deliveries WHERE webhook_id = ?1 AND status = 'pending'), \
                   (SELECT created_at FROM deliveries WHERE webhook_id = ?1 AND status = 'pending' \
                      ORDER BY id LIMIT 1)",
            )
            .and_then(|mut stmt| stmt.query_row([&id], |row| Ok((row.get(0)?, row.get(1)?))))
            .context("reading the queue")?;
        q.pending += pending;
        if enabled {
            q.oldest_waiting = match (q.oldest_waiting, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        } else {
            q.held += pending;
        }
    }
    Ok(q)
}

/// Live webhooks by state: (enabled, disabled).
pub fn webhook_states(conn: &Connection) -> Result<(i64, i64), StoreError> {
    conn.query_row(
        "SELECT coalesce(sum(enabled = 1), 0), coalesce(sum(enabled = 0), 0) \
         FROM webhooks WHERE deleted_at IS NULL",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .context("counting webhooks")
}

/// One stored attempt, as statistics need it.
#[derive(Debug, Clone)]
pub struct PastAttempt {
    pub webhook_id: String,
    pub started_at: i64,
    pub duration_ms: i64,
    pub ok: bool,
    pub number: i64,
    pub exhausted: bool,
    pub timeout: bool,
}

/// Calls `each` for every attempt started in `[since, until)`.
pub fn attempts_between(
    conn: &Connection,
    since: i64,
    until: i64,
    mut each: impl FnMut(PastAttempt),
) -> Result<(), StoreError> {
    conn.prepare(
        "SELECT d.webhook_id, a.started_at, a.duration_ms, \
                a.status_code BETWEEN 200 AND 299, a.number, \
                d.status = 'failed' AND a.number = d.attempts, a.error_kind = 'timeout' \
         FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
         WHERE a.started_at >= ?1 AND a.started_at < ?2",
    )
    .and_then(|mut stmt| {
        let mut rows = stmt.query(params![since, until])?;
        while let Some(row) = rows.next()? {
            each(PastAttempt {
                webhook_id: row.get(0)?,
                started_at: row.get(1)?,
                duration_ms: row.get(2)?,
                ok: row.get::<_, Option<bool>>(3)?.unwrap_or(false),
                number: row.get(4)?,
                exhausted: row.get::<_, Option<bool>>(5)?.unwrap_or(false),
                timeout: row.get::<_, Option<bool>>(6)?.unwrap_or(false),
            });
        }
        Ok(())
    })
    .context("reading past attempts")
}

/// An alert as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: String,
    pub rule: String,
    /// A webhook id, or `system`.
    pub subject: String,
    pub open: bool,
    pub opened_at: i64,
    pub resolved_at: Option<i64>,
    pub title: String,
    pub message: String,
    pub last_error: Option<String>,
}

const ALERT_COLUMNS: &str =
    "id, rule, subject, status, opened_at, resolved_at, title, message, last_error";

fn alert_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Alert> {
    let status: String = row.get(3)?;
    Ok(Alert {
        id: row.get(0)?,
        rule: row.get(1)?,
        subject: row.get(2)?,
        open: status == "open",
        opened_at: row.get(4)?,
        resolved_at: row.get(5)?,
        title: row.get(6)?,
        message: row.get(7)?,
        last_error: row.get(8)?,
    })
}

/// Every open alert.
pub fn open_alerts(conn: &Connection) -> Result<Vec<Alert>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE status = 'open' ORDER BY id"
    ))
    .and_then(|mut stmt| stmt.query_map([], alert_from_row)?.collect())
    .context("reading open alerts")
}

/// Alerts newest first, optionally only open or only resolved ones.
pub fn list_alerts(
    conn: &Connection,
    open: Option<bool>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Vec<Alert>, StoreError> {
    let status = open.map(|o| if o { "open" } else { "resolved" });
    conn.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE (?1 IS NULL OR status = ?1) \
         AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
    ))
    .and_then(|mut stmt| {
        stmt.query_map(params![status, cursor, limit as i64], alert_from_row)?
            .collect()
    })
    .context("listing alerts")
}

/// Stores `alert` as open unless one for the same rule and subject is;
/// returns it if it was opened now.
pub fn open_alert(conn: &Connection, alert: &Alert) -> Result<Option<Alert>, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO alerts (id, rule, subject, status, opened_at, title, message, last_error) \
             VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                alert.id,
                alert.rule,
                alert.subject,
                alert.opened_at,
                alert.title,
                alert.message,
                alert.last_error
            ])
        })
        .context("opening an alert")?;
    Ok((inserted == 1).then(|| Alert {
        open: true,
        resolved_at: None,
        ..alert.clone()
    }))
}

/// Resolves the open alert of `rule` and `subject`; returns it if there was one.
pub fn resolve_alert(
    conn: &Connection,
    rule: &str,
    subject: &str,
    now: i64,
) -> Result<Option<Alert>, StoreError> {
    conn.prepare_cached(&format!(
        "UPDATE alerts SET status = 'resolved', resolved_at = ?3 \
         WHERE rule = ?1 AND subject = ?2 AND status = 'open' RETURNING {ALERT_COLUMNS}"
    ))
    .and_then(|mut stmt| {
        stmt.query_row(params![rule, subject, now], alert_from_row)
            .optional()
    })
    .context("resolving an alert")
}

// Changes through the writer: its apply function and the handle's method
// that sends it.

/// What becomes of an alert.
#[derive(Debug, Clone)]
pub enum AlertChange {
    Open(Alert),
    Resolve { rule: String, subject: String },
}

/// Makes the event that announces a stored alert's change, at a time (Unix
/// ms). Called inside the transaction, on the row as stored: a resolved
/// alert's id and opening time are only known there.
pub type Announce = fn(&Alert, i64) -> Event;

impl WriterHandle {
    /// Opens or resolves an alert; the stored alert if its state changed,
    /// then also published as `announce` makes its event.
    pub fn alert(
        &self,
        change: AlertChange,
        announce: Announce,
        now: i64,
    ) -> Result<Option<Alert>, StoreError> {
        self.call(|reply| WriteOp::Alert {
            change,
            announce,
            now,
            reply,
        })
    }
}

pub(super) fn apply_alert(
    tx: &mut Tx<'_>,
    change: AlertChange,
    announce: Announce,
) -> Result<Option<Alert>, StoreError> {
    let now = tx.now;
    let changed = match change {
        AlertChange::Open(alert) => open_alert(tx.conn, &alert)?,
        AlertChange::Resolve { rule, subject } => resolve_alert(tx.conn, &rule, &subject, now)?,
    };
    if let Some(alert) = &changed {
        events::apply_publish(tx, announce(alert, now), None)?;
    }
    Ok(changed)
}
