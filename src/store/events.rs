//! SQL for events, their deliveries and attempts, and custom event types.
//!
//! Also publishing through the writer (before the tests at the end of this
//! file): an event, its fan-out to the matching webhooks' deliveries, and
//! the test event to one webhook with its audit row. The changes to
//! deliveries are in `deliveries.rs`, to event types in `event_types.rs`.

use rusqlite::{Connection, OptionalExtension, params};

use std::sync::Arc;

use super::audit::{self, Actor, AuditAction};
use super::handover::Fresh;
use super::holds::Holds;
use super::writer::{Tx, WriteOp, WriterHandle};
use super::{Context, StoreError};
use crate::catalog::Filter;
use crate::ids::{self, Kind};

/// A published event as stored. `payload` is the exact body receivers get.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    pub timestamp: String,
    pub created_at: i64,
    pub idempotency_key: Option<String>,
    pub request_hash: Vec<u8>,
    pub payload: Vec<u8>,
    pub deliveries: i64,
}

/// The columns of `events` in [`event_from_row`]'s order; a macro so that
/// the publish path's `INSERT` is one constant, not a `format!` per event.
macro_rules! event_columns {
    () => {
        "id, event_type, timestamp, created_at, idempotency_key, request_hash, payload, deliveries"
    };
}

pub(super) const EVENT_COLUMNS: &str = event_columns!();

const INSERT_EVENT: &str = concat!(
    "INSERT INTO events (",
    event_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
);

pub(super) fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: row.get(0)?,
        event_type: row.get(1)?,
        timestamp: row.get(2)?,
        created_at: row.get(3)?,
        idempotency_key: row.get(4)?,
        request_hash: row.get(5)?,
        payload: row.get(6)?,
        deliveries: row.get(7)?,
    })
}

pub fn insert_event(conn: &Connection, e: &Event) -> Result<(), StoreError> {
    conn.prepare_cached(INSERT_EVENT)
        .and_then(|mut stmt| {
            stmt.execute(params![
                e.id,
                e.event_type,
                e.timestamp,
                e.created_at,
                e.idempotency_key,
                e.request_hash,
                e.payload,
                e.deliveries
            ])
        })
        .context("inserting event")?;
    Ok(())
}

pub fn find_by_idempotency_key(conn: &Connection, key: &str) -> Result<Option<Event>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE idempotency_key = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row([key], event_from_row).optional())
    .context("looking up idempotency key")
}

pub fn get_event(conn: &Connection, id: &str) -> Result<Option<Event>, StoreError> {
    conn.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row([id], event_from_row).optional())
        .context("reading event")
}

/// Newest first. `since` is a lower bound on `created_at`.
///
/// The WHERE clause names only the filters given, so that SQLite can use
/// an index for each: `events_type (event_type, id)` serves an exact type
/// in id order and a prefix as a range; `since` and the cursor bound the
/// primary key. (`?N IS NULL OR ...` conditions would defeat the planner.)
/// Where a listing of events starts, and which way it runs.
#[derive(Debug, Clone, Copy)]
pub enum EventsFrom<'a> {
    /// Newest first, older than the cursor (an id) if one is given.
    Newest(Option<&'a str>),
    /// Oldest first, newer than this id (`?after=`: following new events).
    After(&'a str),
}

pub fn list_events(
    conn: &Connection,
    filter: &Filter,
    since: Option<i64>,
    from: EventsFrom<'_>,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let mut conditions: Vec<&str> = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    match filter {
        Filter::All => {}
        Filter::Exact(name) => {
            conditions.push("event_type = ?");
            values.push(name.clone().into());
        }
        Filter::Prefix(prefix) => {
            // `item.` is the half-open text range [`item.`, `item/`): '/'
            // follows '.' in ASCII.
            let mut high = prefix.clone();
            high.pop();
            high.push('/');
            conditions.push("event_type >= ? AND event_type < ?");
            values.push(prefix.clone().into());
            values.push(high.into());
        }
    }
    if let Some(since) = since {
        conditions.push("created_at >= ?");
        values.push(since.into());
    }
    match from {
        EventsFrom::Newest(Some(cursor)) => {
            conditions.push("id < ?");
            values.push(cursor.to_owned().into());
        }
        EventsFrom::Newest(None) => {}
        EventsFrom::After(after) => {
            conditions.push("id > ?");
            values.push(after.to_owned().into());
        }
    }
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(match from {
        EventsFrom::Newest(_) => " ORDER BY id DESC LIMIT ?",
        EventsFrom::After(_) => " ORDER BY id ASC LIMIT ?",
    });
    values.push((limit as i64).into());
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.query_map(rusqlite::params_from_iter(values), event_from_row)?
                .collect()
        })
        .context("listing events")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivering,
    Succeeded,
    Failed,
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivering => "delivering",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivering,
            DeliveryStatus::Succeeded,
            DeliveryStatus::Failed,
            DeliveryStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub webhook_id: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

const DELIVERY_COLUMNS: &str = "id, event_id, webhook_id, status, attempts, next_attempt_at, \
                                created_at, updated_at, last_status, last_error";

/// [`DELIVERY_COLUMNS`] of a `deliveries d` in a join, in the same order.
pub(super) const DELIVERY_COLUMNS_OF_D: &str = "d.id, d.event_id, d.webhook_id, d.status, d.attempts, d.next_attempt_at, \
     d.created_at, d.updated_at, d.last_status, d.last_error";

pub(super) fn delivery_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    let status: String = row.get(3)?;
    Ok(Delivery {
        id: row.get(0)?,
        event_id: row.get(1)?,
        webhook_id: row.get(2)?,
        // The CHECK constraint admits only known statuses.
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Pending),
        attempts: row.get(4)?,
        next_attempt_at: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
        last_status: row.get(8)?,
        last_error: row.get(9)?,
    })
}

const INSERT_DELIVERY: &str = "INSERT INTO deliveries (id, event_id, webhook_id, status, next_attempt_at, created_at, updated_at, ordering_key) \
     VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?4, ?5)";

/// A new pending delivery of `event_id` to `webhook_id`, due at `now`;
/// `ordering_key` for a webhook that orders its deliveries by one.
pub fn insert_delivery(
    conn: &Connection,
    id: &str,
    event_id: &str,
    webhook_id: &str,
    now: i64,
    ordering_key: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(INSERT_DELIVERY)
        .and_then(|mut stmt| stmt.execute(params![id, event_id, webhook_id, now, ordering_key]))
        .context("inserting delivery")?;
    Ok(())
}

pub fn deliveries_of_event(conn: &Connection, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ?1 ORDER BY id"
    ))
    .and_then(|mut stmt| stmt.query_map([event_id], delivery_from_row)?.collect())
    .context("listing deliveries of event")
}

/// A custom event type as stored.
#[derive(Debug, Clone)]
pub struct EventType {
    pub name: String,
    pub description: String,
    pub schema: Option<String>,
    pub example: Option<String>,
    pub created_at: i64,
}

/// Inserts a custom type; false if the name is taken.
pub fn insert_event_type(conn: &Connection, t: &EventType) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "INSERT INTO event_types (name, description, schema, example, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
            params![t.name, t.description, t.schema, t.example, t.created_at],
        )
        .context("inserting event type")?;
    Ok(changed == 1)
}

pub fn list_event_types(conn: &Connection) -> Result<Vec<EventType>, StoreError> {
    conn.prepare(
        "SELECT name, description, schema, example, created_at FROM event_types ORDER BY name",
    )
    .and_then(|mut stmt| {
        stmt.query_map([], |row| {
            Ok(EventType {
                name: row.get(0)?,
                description: row.get(1)?,
                schema: row.get(2)?,
                example: row.get(3)?,
                created_at: row.get(4)?,
            })
        })?
        .collect()
    })
    .context("listing event types")
}

/// What one pruning batch removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Events, with their deliveries and attempts (by cascade).
    pub events: usize,
    pub audit_rows: usize,
    /// Free pages handed back to the file system.
    pub pages_freed: i64,
}

/// Deletes up to `limit` events created before `before` whose deliveries
/// are all finished (an event with a pending or held delivery is kept until
/// it is done), with their deliveries and attempts; audit rows before
/// `audit_before`; then returns up to `limit * 8` free pages to the file
/// system (the database uses incremental auto-vacuum).
pub fn prune(
    conn: &Connection,
    before: i64,
    audit_before: i64,
    limit: usize,
) -> Result<Pruned, StoreError> {
    let events = conn
        .prepare_cached(
            "DELETE FROM events WHERE id IN ( \
               SELECT e.id FROM events e WHERE e.created_at < ?1 \
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id \
                               AND d.status IN ('pending', 'delivering')) \
               ORDER BY e.created_at LIMIT ?2)",
        )
        .and_then(|mut stmt| stmt.execute(params![before, limit as i64]))
        .context("pruning events")?;
    let audit_rows = conn
        .prepare_cached(
            "DELETE FROM audit_log WHERE id IN ( \
               SELECT id FROM audit_log WHERE at < ?1 ORDER BY at LIMIT ?2)",
        )
        .and_then(|mut stmt| stmt.execute(params![audit_before, limit as i64]))
        .context("pruning the audit log")?;
    let free_before: i64 = conn
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .context("reading the free list")?;
    // Each step of this pragma frees one page: step it to the end.
    conn.prepare(&format!("PRAGMA incremental_vacuum({})", limit * 8))
        .and_then(|mut stmt| {
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
            Ok(())
        })
        .context("returning free pages")?;
    let free_after: i64 = conn
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .context("reading the free list")?;
    Ok(Pruned {
        events,
        audit_rows,
        pages_freed: free_before - free_after,
    })
}

const RESET_IN_FLIGHT: &str = "UPDATE deliveries \
     SET status = 'pending', next_attempt_at = ?1, updated_at = ?1 \
     WHERE webhook_id IN (SELECT id FROM webhooks) AND status = 'delivering'";

/// Puts deliveries left `delivering` by a version of hookbox that wrote its
/// claims down (this one holds them in memory: `holds.rs`) back to pending,
/// due now: a duplicate is possible, a loss is not.
///
/// Found by index seeks on `deliveries_webhook (webhook_id, status, id)`,
/// one per webhook (every delivery names one): `status = 'delivering'`
/// alone has no index, and scanning the table cost about 70 ms per million
/// deliveries stored, before the server listened.
pub fn reset_in_flight(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    conn.execute(RESET_IN_FLIGHT, [now])
        .context("resetting in-flight deliveries")
}

/// A due delivery as the scheduler sees it, with the body it sends.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: String,
    pub event_id: String,
    pub attempts: i64,
    pub payload: Vec<u8>,
}

/// The ids of a webhook's pending deliveries due by `now`, oldest due
/// first, read from the entries of `deliveries_webhook_due` alone (they
/// hold the id): what the scheduler passes over costs no row lookup.
pub(super) const DUE_IDS: &str = "SELECT id, next_attempt_at FROM deliveries INDEXED BY deliveries_webhook_due \
     WHERE webhook_id = ?1 AND status = 'pending' AND next_attempt_at <= ?2 \
     ORDER BY next_attempt_at LIMIT ?3";

/// [`DUE_IDS`] for a webhook that orders its deliveries by key: a
/// delivery waits while an earlier one of the same key is pending (being
/// attempted, or waiting for its retry), so at most one of each key is due.
pub(super) const DUE_IDS_ORDERED: &str = "SELECT d.id, d.next_attempt_at FROM deliveries d INDEXED BY deliveries_webhook_due \
     WHERE d.webhook_id = ?1 AND d.status = 'pending' AND d.next_attempt_at <= ?2 \
       AND (d.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries p INDEXED BY deliveries_ordering \
            WHERE p.webhook_id = ?1 AND p.ordering_key = d.ordering_key AND p.status = 'pending' \
              AND p.ordering_key IS NOT NULL AND p.id < d.id)) \
     ORDER BY d.next_attempt_at LIMIT ?3";

/// Those of the deliveries named in `?1` (a JSON array of ids) still
/// pending and due by `?2`, with their events' payloads, oldest due first.
const DUE_BY_ID: &str = "SELECT d.id, d.event_id, d.attempts, e.payload \
     FROM deliveries d JOIN events e ON e.id = d.event_id \
     WHERE d.id IN (SELECT value FROM json_each(?1)) \
       AND d.status = 'pending' AND d.next_attempt_at <= ?2 \
     ORDER BY d.next_attempt_at";

/// Up to `limit` of a webhook's pending deliveries due by `now` and not
/// held by the engine, oldest due first, each with its event's payload.
///
/// Two statements: the due ids from the index (as many more as the webhook
/// has held, which are the oldest due and are passed over), then the rows
/// and payloads of those taken, looked up by id and checked again. The
/// second reads after the holds were, so a delivery whose hold the writer
/// gave back meanwhile is seen as its record left it (done, or due later)
/// and not taken (`holds.rs`).
pub fn due_for_webhook(
    conn: &Connection,
    webhook_id: &str,
    now: i64,
    limit: usize,
    holds: &Holds,
    ordered: bool,
) -> Result<Vec<Due>, StoreError> {
    let held = holds.count(Some(webhook_id));
    let ids: Vec<(String, i64)> = conn
        .prepare_cached(if ordered { DUE_IDS_ORDERED } else { DUE_IDS })
        .and_then(|mut stmt| {
            stmt.query_map(params![webhook_id, now, (limit + held) as i64], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect()
        })
        .context("finding due deliveries")?;
    let taken: Vec<&str> = ids
        .iter()
        .map(|(id, _)| id.as_str())
        .filter(|id| !holds.is_held(id))
        .take(limit)
        .collect();
    if taken.is_empty() {
        return Ok(Vec::new());
    }
    let taken = serde_json::to_string(&taken).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(DUE_BY_ID)
        .and_then(|mut stmt| {
            stmt.query_map(params![taken, now], |row| {
                Ok(Due {
                    id: row.get(0)?,
                    event_id: row.get(1)?,
                    attempts: row.get(2)?,
                    payload: row.get(3)?,
                })
            })?
            .collect()
        })
        .context("reading due deliveries")
}

/// When the webhook's next pending delivery not held is due, if it has
/// one: the first entry of `deliveries_webhook_due` past the held ones.
pub fn next_due_for_webhook(
    conn: &Connection,
    webhook_id: &str,
    holds: &Holds,
    ordered: bool,
) -> Result<Option<i64>, StoreError> {
    let held = holds.count(Some(webhook_id));
    let next: Vec<(String, i64)> = conn
        .prepare_cached(if ordered { DUE_IDS_ORDERED } else { DUE_IDS })
        .and_then(|mut stmt| {
            stmt.query_map(params![webhook_id, i64::MAX, (held + 1) as i64], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect()
        })
        .context("finding the next due delivery")?;
    Ok(next
        .into_iter()
        .find(|(id, _)| !holds.is_held(id))
        .map(|(_, at)| at))
}

/// One attempt's record, as the attempt log keeps it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub number: i64,
    pub started_at: i64,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    pub error_kind: Option<String>,
    pub response_body: Vec<u8>,
}

pub fn insert_attempt(conn: &Connection, delivery_id: &str, a: &Attempt) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error_kind, response_body) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (delivery_id, number) DO NOTHING",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            delivery_id,
            a.number,
            a.started_at,
            a.duration_ms,
            a.status_code,
            a.error_kind,
            a.response_body
        ])
    })
    .context("recording attempt")?;
    Ok(())
}

const FINISH_ATTEMPT: &str = "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, \
     last_status = ?5, last_error = ?6, updated_at = ?7 WHERE id = ?1 AND status = 'pending'";

/// Sets a delivery's state after an attempt, if it is still pending (a
/// webhook deleted meanwhile has cancelled it). While the engine holds it,
/// a delivery stays pending in the database (`holds.rs`).
pub fn finish_attempt(
    conn: &Connection,
    id: &str,
    attempt: &Attempt,
    status: DeliveryStatus,
    next_attempt_at: Option<i64>,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(FINISH_ATTEMPT)
        .and_then(|mut stmt| {
            stmt.execute(params![
                id,
                status.as_str(),
                attempt.number,
                next_attempt_at,
                attempt.status_code,
                attempt.error_kind,
                now
            ])
        })
        .context("recording delivery outcome")?;
    Ok(changed == 1)
}

pub fn attempts_of(conn: &Connection, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
    conn.prepare_cached(
        "SELECT number, started_at, duration_ms, status_code, error_kind, response_body \
         FROM attempts WHERE delivery_id = ?1 ORDER BY number",
    )
    .and_then(|mut stmt| {
        stmt.query_map([delivery_id], |row| {
            Ok(Attempt {
                number: row.get(0)?,
                started_at: row.get(1)?,
                duration_ms: row.get(2)?,
                status_code: row.get(3)?,
                error_kind: row.get(4)?,
                response_body: row.get::<_, Option<Vec<u8>>>(5)?.unwrap_or_default(),
            })
        })?
        .collect()
    })
    .context("reading attempt log")
}

pub fn get_delivery(conn: &Connection, id: &str) -> Result<Option<Delivery>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row([id], delivery_from_row).optional())
    .context("reading delivery")
}

/// Which deliveries a listing takes by their ids: the engine's holds are
/// not in the database (`holds.rs`), so `delivering` is the pending ones
/// held and `pending` the others. Each is a JSON array of ids.
#[derive(Debug, Clone, Copy, Default)]
pub enum Ids<'a> {
    #[default]
    Any,
    Only(&'a str),
    Except(&'a str),
}

/// Newest first, filtered by webhook, event, status as stored and `ids`.
pub fn list_deliveries(
    conn: &Connection,
    webhook_id: Option<&str>,
    event_id: Option<&str>,
    status: Option<DeliveryStatus>,
    ids: Ids<'_>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let (only, except) = match ids {
        Ids::Any => (None, None),
        Ids::Only(json) => (Some(json), None),
        Ids::Except(json) => (None, Some(json)),
    };
    conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries \
         WHERE (?1 IS NULL OR webhook_id = ?1) AND (?2 IS NULL OR event_id = ?2) \
           AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR id < ?4) \
           AND (?6 IS NULL OR id IN (SELECT value FROM json_each(?6))) \
           AND (?7 IS NULL OR id NOT IN (SELECT value FROM json_each(?7))) \
         ORDER BY id DESC LIMIT ?5"
    ))
    .and_then(|mut stmt| {
        stmt.query_map(
            params![
                webhook_id,
                event_id,
                status.map(DeliveryStatus::as_str),
                cursor,
                limit as i64,
                only,
                except
            ],
            delivery_from_row,
        )?
        .collect()
    })
    .context("listing deliveries")
}

/// Makes a delivery due now for one more attempt. `None` if it does not
/// exist; `Some(false)` if it cannot be retried now (being attempted, or
/// cancelled with its webhook).
pub fn retry_now(conn: &Connection, id: &str, now: i64) -> Result<Option<bool>, StoreError> {
    let Some(d) = get_delivery(conn, id)? else {
        return Ok(None);
    };
    if matches!(
        d.status,
        DeliveryStatus::Delivering | DeliveryStatus::Cancelled
    ) {
        return Ok(Some(false));
    }
    let webhook_deleted: bool = conn
        .prepare_cached("SELECT deleted_at IS NOT NULL FROM webhooks WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([&d.webhook_id], |row| row.get(0)))
        .context("checking the delivery's webhook")?;
    if webhook_deleted {
        return Ok(Some(false));
    }
    conn.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?2, updated_at = ?2 WHERE id = ?1",
        params![id, now],
    )
    .context("requeueing delivery")?;
    Ok(Some(true))
}

/// Requeues a webhook's deliveries in `status` created in [since, until).
pub fn requeue(
    conn: &Connection,
    webhook_id: &str,
    status: DeliveryStatus,
    since: i64,
    until: i64,
    now: i64,
) -> Result<usize, StoreError> {
    conn.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?5, updated_at = ?5 \
         WHERE webhook_id = ?1 AND status = ?2 AND created_at >= ?3 AND created_at < ?4",
        params![webhook_id, status.as_str(), since, until, now],
    )
    .context("replaying deliveries")
}

// Publishing through the writer: its apply function (run in the batch's
// transaction; see `writer::Isolation`) and the handle's methods that send it.

/// How a publish ended.
#[derive(Debug)]
pub enum PublishOutcome {
    /// Stored, with this many deliveries.
    Created { deliveries: i64 },
    /// The idempotency key was seen before with the same request: the
    /// original event, and nothing new stored.
    Replayed(Event),
    /// The idempotency key was seen before with a different request.
    KeyConflict,
    /// A test event's webhook does not exist (nothing was stored).
    NoSuchWebhook,
}

impl WriterHandle {
    pub fn publish(&self, event: Event) -> Result<PublishOutcome, StoreError> {
        self.call(|reply| WriteOp::Publish {
            event,
            only: None,
            reply,
        })
    }

    /// Publishes `event` to the one webhook `webhook_id`, if it exists: a
    /// test event, which `actor` sent.
    pub fn publish_to(
        &self,
        event: Event,
        webhook_id: String,
        actor: Actor,
    ) -> Result<PublishOutcome, StoreError> {
        self.call(|reply| WriteOp::Publish {
            event,
            only: Some((webhook_id, actor)),
            reply,
        })
    }
}

/// Stores `event` with one delivery per webhook whose filters match it, or
/// to the webhook `only` names (a test event, audited as by its actor).
/// The writer keeps its changes only when it answers `Created`.
/// The `data` of a stored envelope (`null` if it has none).
fn envelope_data(payload: &[u8]) -> serde_json::Value {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        data: serde_json::Value,
    }
    serde_json::from_slice::<Envelope>(payload)
        .map(|e| e.data)
        .unwrap_or_default()
}

pub(super) fn apply_publish(
    tx: &mut Tx<'_>,
    mut event: Event,
    only: Option<(String, Actor)>,
) -> Result<PublishOutcome, StoreError> {
    let now = tx.now;
    if let Some(key) = &event.idempotency_key
        && let Some(original) = find_by_idempotency_key(tx.conn, key)?
    {
        return Ok(if original.request_hash == event.request_hash {
            PublishOutcome::Replayed(original)
        } else {
            PublishOutcome::KeyConflict
        });
    }
    // The data is read from the stored envelope once, and only when a
    // subscribed webhook has a content filter or an ordering key.
    let mut data: Option<serde_json::Value> = None;
    let mut targets: Vec<(&str, Option<String>)> = Vec::new();
    match &only {
        // A test event goes to its webhook whatever its filter, unordered.
        Some((id, _)) => targets.extend(tx.subscriptions.get(id).map(|w| (w, None))),
        None => {
            for sub in tx.subscriptions.matching(&event.event_type) {
                if sub.filter.is_none() && sub.ordering.is_none() {
                    targets.push((sub.id.as_str(), None));
                    continue;
                }
                let data = data.get_or_insert_with(|| envelope_data(&event.payload));
                if sub.filter.as_ref().is_some_and(|f| !f.matches(data)) {
                    continue;
                }
                let key = sub.ordering.as_ref().and_then(|path| {
                    path.value_in(data).and_then(|value| match value {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    })
                });
                targets.push((sub.id.as_str(), key));
            }
        }
    }
    if only.is_some() && targets.is_empty() {
        return Ok(PublishOutcome::NoSuchWebhook);
    }
    event.deliveries = targets.len() as i64;
    event.created_at = now;
    insert_event(tx.conn, &event)?;
    // Handed to the scheduler once committed, with the body it sends; or,
    // without a hand-over, or for a delivery that waits its turn behind
    // others of its ordering key, found by its due query.
    let payload =
        (tx.hand_over && !targets.is_empty()).then(|| Arc::new(std::mem::take(&mut event.payload)));
    for (webhook_id, key) in targets {
        let delivery_id = ids::new(Kind::Delivery);
        insert_delivery(
            tx.conn,
            &delivery_id,
            &event.id,
            webhook_id,
            now,
            key.as_deref(),
        )?;
        match &payload {
            Some(payload) if key.is_none() => tx.wake.fresh.push(Fresh {
                webhook_id: webhook_id.to_owned(),
                delivery_id,
                event_id: event.id.clone(),
                payload: payload.clone(),
            }),
            _ => tx.wake.work = true,
        }
    }
    if let Some((webhook_id, actor)) = &only {
        let summary = format!("sent a test {} event, {}", event.event_type, event.id);
        audit::record(
            tx.conn,
            actor,
            AuditAction::WebhookTested,
            Some(webhook_id),
            &summary,
            now,
        )?;
    }
    Ok(PublishOutcome::Created {
        deliveries: event.deliveries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(deliveries: &[(&str, &str, &str)]) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO webhooks (id, url, secret, events, created_at, updated_at) \
               VALUES ('wh_a', 'https://a.example/', 's', '[\"*\"]', 1, 1), \
                      ('wh_b', 'https://b.example/', 's', '[\"*\"]', 1, 1); \
             UPDATE webhooks SET deleted_at = 2 WHERE id = 'wh_b'; \
             INSERT INTO events (id, event_type, timestamp, created_at, request_hash, payload, deliveries) \
               VALUES ('evt_1', 'item.sold', '2026-01-01T00:00:00Z', 1, x'00', x'7b7d', 2);",
        )
        .unwrap();
        for (id, webhook, status) in deliveries {
            conn.execute(
                "INSERT INTO deliveries (id, event_id, webhook_id, status, next_attempt_at, created_at, updated_at) \
                 VALUES (?1, 'evt_1', ?2, ?3, 5, 1, 1)",
                params![id, webhook, status],
            )
            .unwrap();
        }
        conn
    }

    #[test]
    fn reset_in_flight_puts_back_every_webhooks_claimed_deliveries_and_only_those() {
        let conn = store_with(&[
            ("dlv_1", "wh_a", "delivering"),
            ("dlv_2", "wh_a", "pending"),
            ("dlv_3", "wh_a", "succeeded"),
            ("dlv_4", "wh_b", "delivering"),
        ]);
        assert_eq!(reset_in_flight(&conn, 100).unwrap(), 2);
        let rows: Vec<(String, String, i64)> = conn
            .prepare("SELECT id, status, next_attempt_at FROM deliveries ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected = [
            ("dlv_1", "pending", 100),
            ("dlv_2", "pending", 5),
            ("dlv_3", "succeeded", 5),
            ("dlv_4", "pending", 100),
        ];
        for (row, (id, status, due)) in rows.iter().zip(expected) {
            assert_eq!((row.0.as_str(), row.1.as_str(), row.2), (id, status, due));
        }
    }

    /// The opcodes SQLite would run for `sql`.
    fn opcodes(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        let n = stmt.parameter_count();
        stmt.query_map(rusqlite::params_from_iter(vec![0i64; n]), |r| r.get(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn the_delivery_hot_path_statements_build_no_temporary_b_tree() {
        // Schema 4's `CHECK (status IN (...))` built one per INSERT and per
        // status UPDATE; schema 5 tests the names with `=`.
        let conn = store_with(&[]);
        for sql in [INSERT_DELIVERY, FINISH_ATTEMPT] {
            let ops = opcodes(&conn, sql);
            assert!(
                !ops.iter().any(|op| op == "OpenEphemeral"),
                "{sql}: {ops:?}"
            );
        }
    }

    #[test]
    fn the_due_query_passes_over_held_deliveries_and_keeps_due_order() {
        let conn = store_with(&[
            ("dlv_1", "wh_a", "pending"),
            ("dlv_2", "wh_a", "pending"),
            ("dlv_3", "wh_a", "pending"),
            ("dlv_4", "wh_a", "succeeded"),
        ]);
        conn.execute_batch("UPDATE deliveries SET next_attempt_at = 7 WHERE id = 'dlv_2'")
            .unwrap();
        let holds = Holds::default();
        let ids = |holds: &Holds, limit| -> Vec<String> {
            due_for_webhook(&conn, "wh_a", 10, limit, holds, false)
                .unwrap()
                .into_iter()
                .map(|d| d.id)
                .collect()
        };
        assert_eq!(ids(&holds, 8), ["dlv_1", "dlv_3", "dlv_2"]);
        assert_eq!(
            next_due_for_webhook(&conn, "wh_a", &holds, false).unwrap(),
            Some(5)
        );
        assert!(holds.try_hold("wh_a", "dlv_1"));
        assert!(holds.try_hold("wh_b", "dlv_9"));
        assert_eq!(ids(&holds, 1), ["dlv_3"]);
        assert!(holds.try_hold("wh_a", "dlv_3"));
        assert_eq!(ids(&holds, 8), ["dlv_2"]);
        assert_eq!(
            next_due_for_webhook(&conn, "wh_a", &holds, false).unwrap(),
            Some(7)
        );
        assert!(holds.try_hold("wh_a", "dlv_2"));
        assert!(ids(&holds, 8).is_empty());
        assert_eq!(
            next_due_for_webhook(&conn, "wh_a", &holds, false).unwrap(),
            None
        );
    }

    #[test]
    fn the_due_ids_come_from_the_index_alone() {
        let conn = store_with(&[]);
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {DUE_IDS}"))
            .unwrap()
            .query_map(params!["wh_a", 1, 8], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|p| p.contains("COVERING INDEX deliveries_webhook_due")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_status_outside_the_five_is_refused() {
        let conn = store_with(&[("dlv_1", "wh_a", "pending")]);
        let refused = conn.execute(
            "UPDATE deliveries SET status = 'lost' WHERE id = 'dlv_1'",
            [],
        );
        assert!(refused.is_err());
        for status in ["pending", "delivering", "succeeded", "failed", "cancelled"] {
            conn.execute(
                "UPDATE deliveries SET status = ?1 WHERE id = 'dlv_1'",
                [status],
            )
            .unwrap();
        }
    }

    #[test]
    fn reset_in_flight_seeks_an_index_instead_of_scanning_the_deliveries() {
        let conn = store_with(&[]);
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {RESET_IN_FLIGHT}"))
            .unwrap()
            .query_map([0i64], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.starts_with("SEARCH deliveries USING")
                    && step.contains("INDEX deliveries_webhook (webhook_id=? AND status=?)")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN deliveries")),
            "{plan:?}"
        );
    }
}
