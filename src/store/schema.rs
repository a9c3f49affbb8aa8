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
    // 5: cheaper delivery rows. The table is rebuilt (SQLite cannot alter a
    // CHECK constraint or a table's key in place), its rows and index names
    // kept:
    // - `CHECK (status IN (five names))` built an ephemeral b-tree of the
    //   five names on every INSERT and on every UPDATE of `status` (SQLite
    //   tests an IN list of more than two constants that way), about a
    //   third of each such statement's instructions. The same rule as a
    //   chain of `=` tests costs a few comparisons.
    // - WITHOUT ROWID, keyed by the text id: one b-tree where there were
    //   two (the rowid table and the id's unique index), so a new delivery
    //   writes four b-trees instead of five and an update by id is one
    //   seek instead of two. `deliveries_webhook (webhook_id, status, id)`
    //   already ends with the key, so it stores nothing more.
    // The indexes are those of version 4, each still read: `deliveries_event`
    // by retention and the events' ON DELETE CASCADE, `deliveries_webhook`
    // by the start-up reset, the lost-delivery sweep, replay, webhook
    // deletion and the queue's monitoring (oldest pending in id order),
    // `deliveries_webhook_due` by the scheduler.
    r#"
    CREATE TABLE deliveries_v5 (
        id              TEXT PRIMARY KEY,
        event_id        TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
        webhook_id      TEXT NOT NULL REFERENCES webhooks (id),
        status          TEXT NOT NULL CHECK (status = 'pending' OR status = 'delivering' OR status = 'succeeded'
                                             OR status = 'failed' OR status = 'cancelled'),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,                 -- set while pending
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        last_status     INTEGER,                 -- HTTP status of the last attempt
        last_error      TEXT                     -- error kind of the last attempt
    ) WITHOUT ROWID;
    INSERT INTO deliveries_v5 (id, event_id, webhook_id, status, attempts, next_attempt_at,
                               created_at, updated_at, last_status, last_error)
        SELECT id, event_id, webhook_id, status, attempts, next_attempt_at,
               created_at, updated_at, last_status, last_error
        FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_v5 RENAME TO deliveries;
    CREATE INDEX deliveries_event ON deliveries (event_id);
    CREATE INDEX deliveries_webhook ON deliveries (webhook_id, status, id);
    CREATE INDEX deliveries_webhook_due ON deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
    "#,
    // 6: custom headers per webhook, sent with every delivery. Their values
    // are credentials, kept like the secret (never listed, logged or audited).
    r#"
    ALTER TABLE webhooks ADD COLUMN headers TEXT NOT NULL DEFAULT '[]';  -- JSON [[name, value], ...]
    "#,
    // 7: content filters: a webhook gets only the events whose data match
    // every condition (`content_filter.rs`).
    r#"
    ALTER TABLE webhooks ADD COLUMN filter TEXT NOT NULL DEFAULT '[]';   -- JSON [{"path": "data.x", "eq": ...}, ...]
    "#,
    // 8: ordered delivery per key. A webhook with an ordering key (a data
    // path) stores each delivery's key; a pending delivery is not sent
    // while an earlier one of the same webhook and key is pending. The
    // index holds only pending deliveries that have a key: unordered ones
    // cost it nothing.
    r#"
    ALTER TABLE webhooks ADD COLUMN ordering_key TEXT;                   -- a data path such as data.item_id; NULL: unordered
    ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;                 -- the value at that path when published
    CREATE INDEX deliveries_ordering ON deliveries (webhook_id, ordering_key, id)
        WHERE status = 'pending' AND ordering_key IS NOT NULL;
    "#,
];

/// The schema version this binary writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`VERSION`]. Refuses a database from a newer
/// hookbox rather than guess at its schema.
///
/// Migrations run with `foreign_keys` off, as SQLite's procedure for
/// rebuilding a table asks (with it on, dropping the old `deliveries` would
/// delete their attempts by cascade), and each ends with
/// `foreign_key_check` before its commit; the connection's setting is
/// restored afterwards.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current = version(conn)?;
    if current > VERSION {
        return Err(StoreError::Unavailable(format!(
            "database schema version {current} is newer than this hookbox understands ({VERSION})"
        )));
    }
    if current == VERSION {
        return Ok(());
    }
    let foreign_keys: bool = conn
        .query_row("PRAGMA foreign_keys", [], |row| row.get(0))
        .context("reading foreign_keys")?;
    conn.execute_batch("PRAGMA foreign_keys=OFF")
        .context("turning foreign keys off for the migration")?;
    let migrated = apply_from(conn, current);
    let restored = conn
        .pragma_update(None, "foreign_keys", foreign_keys)
        .context("turning foreign keys back on");
    migrated.and(restored)
}

fn apply_from(conn: &mut Connection, current: i64) -> Result<(), StoreError> {
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let target = index as i64 + 1;
        // Immediate: the write lock before the first read, so a migration
        // run beside another writer waits instead of failing (see
        // admin::begin_write).
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .context("starting migration")?;
        tx.execute_batch(sql).context("applying migration")?;
        let broken: i64 = tx
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
                row.get(0)
            })
            .context("checking foreign keys after the migration")?;
        if broken > 0 {
            return Err(StoreError::Unavailable(format!(
                "migration to schema version {target} would leave {broken} rows naming a missing row; nothing was changed"
            )));
        }
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

    /// A database at `version`, as that hookbox left it.
    fn database_at(version: usize) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys=ON").unwrap();
        for sql in &MIGRATIONS[..version] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", version as i64)
            .unwrap();
        conn
    }

    #[test]
    fn migrating_from_version_4_keeps_every_delivery_and_attempt_and_their_indexes() {
        let mut conn = database_at(4);
        conn.execute_batch(
            "INSERT INTO webhooks (id, url, secret, events, created_at, updated_at) \
               VALUES ('wh_a', 'https://a.example/', 's', '[\"*\"]', 1, 1); \
             INSERT INTO events (id, event_type, timestamp, created_at, request_hash, payload, deliveries) \
               VALUES ('evt_1', 'item.sold', '2026-01-01T00:00:00Z', 1, x'00', x'7b7d', 3); \
             INSERT INTO deliveries (id, event_id, webhook_id, status, attempts, next_attempt_at, created_at, updated_at, last_status, last_error) \
               VALUES ('dlv_1', 'evt_1', 'wh_a', 'pending', 1, 50, 1, 2, 500, 'status'), \
                      ('dlv_2', 'evt_1', 'wh_a', 'delivering', 0, NULL, 1, 3, NULL, NULL), \
                      ('dlv_3', 'evt_1', 'wh_a', 'succeeded', 2, NULL, 1, 4, 200, NULL); \
             INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code) \
               VALUES ('dlv_1', 1, 2, 7, 500), ('dlv_3', 1, 2, 7, 500), ('dlv_3', 2, 4, 7, 200);",
        )
        .unwrap();
        let rows = |conn: &Connection| -> Vec<String> {
            conn.prepare("SELECT quote(id) || quote(event_id) || quote(webhook_id) || quote(status) || quote(attempts) || quote(next_attempt_at) || quote(created_at) || quote(updated_at) || quote(last_status) || quote(last_error) FROM deliveries ORDER BY id")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let before = rows(&conn);
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), VERSION);
        assert_eq!(rows(&conn), before);
        let attempts: i64 = conn
            .query_row("SELECT count(*) FROM attempts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(attempts, 3, "the rebuild must not cascade into attempts");
        let foreign_keys: bool = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert!(foreign_keys, "the connection's foreign_keys is restored");
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'deliveries' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            indexes,
            [
                "deliveries_event",
                "deliveries_ordering",
                "deliveries_webhook",
                "deliveries_webhook_due"
            ]
        );
        // The rules still hold on the rebuilt table.
        let bad_status = conn.execute(
            "INSERT INTO deliveries (id, event_id, webhook_id, status, created_at, updated_at) \
             VALUES ('dlv_4', 'evt_1', 'wh_a', 'lost', 1, 1)",
            [],
        );
        assert!(bad_status.is_err());
        let missing_event = conn.execute(
            "INSERT INTO deliveries (id, event_id, webhook_id, status, created_at, updated_at) \
             VALUES ('dlv_5', 'evt_none', 'wh_a', 'pending', 1, 1)",
            [],
        );
        assert!(missing_event.is_err());
        // Deleting the event still removes its deliveries and their attempts.
        conn.execute("DELETE FROM events WHERE id = 'evt_1'", [])
            .unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT (SELECT count(*) FROM deliveries) + (SELECT count(*) FROM attempts)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        assert!(migrate(&mut conn).is_err());
    }
}
