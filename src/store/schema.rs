//! The schema, as an append-only list of migrations keyed on `user_version`.
//!
//! Migration N (1-based) takes the database from version N-1 to N. A merged
//! migration never changes: to change the schema, append one. Each runs in
//! its own transaction together with the `user_version` bump, so a crash
//! mid-migration leaves the previous version intact.
//!
//! Times are Unix milliseconds (`INTEGER`). Ids are the prefixed text ids of
//! `ids.rs`, which sort in creation order.

use rusqlite::Connection;

use super::{Context, StoreError};

const MIGRATIONS: &[&str] = &[
    // 1: tokens, webhooks, event types, events, deliveries, attempts.
    r#"
    CREATE TABLE tokens (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        scope        TEXT NOT NULL CHECK (scope IN ('admin', 'publish', 'read')),
        hash         BLOB NOT NULL UNIQUE,      -- SHA-256 of the token; the token itself is never stored
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at   INTEGER
    );

    CREATE TABLE webhooks (
        id               TEXT PRIMARY KEY,
        url              TEXT NOT NULL,
        description      TEXT NOT NULL DEFAULT '',
        secret           TEXT NOT NULL,
        events           TEXT NOT NULL,          -- JSON array of names, "*" or "prefix.*"
        max_attempts     INTEGER,                -- NULL: the server's --max-attempts
        rate_limit_per_s INTEGER,                -- NULL: unlimited
        enabled          INTEGER NOT NULL DEFAULT 1,
        disabled_reason  TEXT,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        deleted_at       INTEGER                 -- soft delete: deliveries keep their webhook
    );

    CREATE TABLE event_types (
        name        TEXT PRIMARY KEY,
        description TEXT NOT NULL DEFAULT '',
        schema      TEXT,                        -- JSON Schema; NULL accepts any object
        example     TEXT,                        -- an example `data`, JSON
        created_at  INTEGER NOT NULL
    );

    CREATE TABLE events (
        id              TEXT PRIMARY KEY,
        event_type      TEXT NOT NULL,
        timestamp       TEXT NOT NULL,           -- RFC 3339, as sent to receivers
        created_at      INTEGER NOT NULL,
        idempotency_key TEXT UNIQUE,
        request_hash    BLOB NOT NULL,           -- SHA-256 of (event, data, timestamp) for idempotency conflicts
        payload         BLOB NOT NULL,           -- the exact body every receiver gets
        deliveries      INTEGER NOT NULL         -- fan-out count at publish time
    );
    CREATE INDEX events_type ON events (event_type, id);
    CREATE INDEX events_created ON events (created_at);

    CREATE TABLE deliveries (
        id              TEXT PRIMARY KEY,
        event_id        TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
        webhook_id      TEXT NOT NULL REFERENCES webhooks (id),
        status          TEXT NOT NULL CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed', 'cancelled')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,                 -- set while pending
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        last_status     INTEGER,                 -- HTTP status of the last attempt
        last_error      TEXT                     -- error kind of the last attempt
    );
    -- The scheduler's queue: the next due deliveries, found by an index seek
    -- whose cost does not grow with the backlog.
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX deliveries_event ON deliveries (event_id);
    CREATE INDEX deliveries_webhook ON deliveries (webhook_id, status, id);

    CREATE TABLE attempts (
        id            INTEGER PRIMARY KEY,
        delivery_id   TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
        number        INTEGER NOT NULL,
        started_at    INTEGER NOT NULL,
        duration_ms   INTEGER NOT NULL,
        status_code   INTEGER,
        error_kind    TEXT,
        response_body BLOB,                      -- the first 1 KiB
        UNIQUE (delivery_id, number)
    );
    "#,
    // 2: the delivery engine. Per-webhook queues, so the scheduler finds a
    // webhook's next due delivery by an index seek however large the backlog
    // (and however many deliveries a disabled or slow webhook holds), and
    // the start of a webhook's current run of failures, for auto-disable.
    // The v1 global queue index goes: nothing reads it.
    r#"
    CREATE INDEX deliveries_webhook_due ON deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
    ALTER TABLE webhooks ADD COLUMN failing_since INTEGER;
    -- The global queue index of v1 serves no query now; it only cost a
    -- b-tree write per delivery.
    DROP INDEX deliveries_due;
    "#,
    // 3: security. Per-token client allowlists, the secret a rotation
    // replaced (signing alongside the new one until its grace ends), and
    // the audit log of every change.
    r#"
    ALTER TABLE tokens ADD COLUMN allow TEXT;                 -- comma-separated CIDRs; NULL: from anywhere
    ALTER TABLE webhooks ADD COLUMN previous_secret TEXT;       -- signs too until previous_secret_until
    ALTER TABLE webhooks ADD COLUMN previous_secret_until INTEGER;
    CREATE TABLE audit_log (
        id         TEXT PRIMARY KEY,             -- aud_…, time-ordered
        at         INTEGER NOT NULL,
        actor      TEXT NOT NULL,                -- a tok_… id, 'cli' or 'system'
        actor_name TEXT,                         -- the token's name
        client     TEXT,                         -- the client's IP address, for API changes
        action     TEXT NOT NULL,                -- e.g. webhook.created
        target     TEXT,                         -- the id of what changed
        summary    TEXT NOT NULL                 -- what changed, in words; never a secret
    );
    CREATE INDEX audit_log_action ON audit_log (action, id);
    CREATE INDEX audit_log_at ON audit_log (at);
    "#,
    // 4: monitoring. Attempts by start time, to rebuild the last day's
    // statistics at start; alerts.
    r#"
    CREATE INDEX attempts_started ON attempts (started_at);
    CREATE TABLE alerts (
        id          TEXT PRIMARY KEY,            -- alt_…, time-ordered
        rule        TEXT NOT NULL,               -- delivery_failures, error_rate, ...
        subject     TEXT NOT NULL,               -- a webhook id, or 'system'
        status      TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
        opened_at   INTEGER NOT NULL,
        resolved_at INTEGER,
        title       TEXT NOT NULL,
        message     TEXT NOT NULL,
        last_error  TEXT
    );
    -- At most one open alert per rule and subject.
    CREATE UNIQUE INDEX alerts_open ON alerts (rule, subject) WHERE status = 'open';
    CREATE INDEX alerts_status ON alerts (status, id);
    "#,
];

/// The schema version this binary writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`VERSION`]. Refuses a database from a newer
/// hookbox rather than guess at its schema.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current = version(conn)?;
    if current > VERSION {
        return Err(StoreError::Unavailable(format!(
            "database schema version {current} is newer than this hookbox understands ({VERSION})"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let target = index as i64 + 1;
        let tx = conn.transaction().context("starting migration")?;
        tx.execute_batch(sql).context("applying migration")?;
        tx.pragma_update(None, "user_version", target)
            .context("recording schema version")?;
        tx.commit().context("committing migration")?;
        log::info!("database schema migrated to version {target}");
    }
    Ok(())
}

/// The database's `user_version`.
pub fn version(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .context("reading schema version")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op_and_reaches_the_latest_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), VERSION);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        assert!(migrate(&mut conn).is_err());
    }
}
