//! The SQLite store: opening connections with the right pragmas, the read
//! pool, and the error callers branch on.
//!
//! One file holds everything. Durability choices:
//!
//! - WAL mode, so readers never block the writer or each other.
//! - `synchronous=FULL` on the writer connection: in WAL mode `NORMAL` fsyncs
//!   only at checkpoints, so a commit could be lost to power failure after
//!   its 202 was sent. `FULL` fsyncs the WAL on every commit; the writer
//!   thread groups many requests into one commit so they share that fsync
//!   (about 4 ms on the development machine's disk). Batches holding only
//!   engine bookkeeping commit at `NORMAL` instead (see `writer.rs`).
//! - `foreign_keys=ON` so a delivery can never point at a missing event or
//!   webhook.
//! - `temp_store=MEMORY` on the writer connection: the statement journal
//!   (the pages a savepoint or a statement that may fail would restore) then
//!   stays in memory. With the default it spilled to a temporary file past
//!   64 KiB, about 22 `write`/`lseek` system calls per published event in
//!   the writer. It holds one statement's or one op's pages at most (ops
//!   run in savepoints only when a batch is applied again; see
//!   `writer::Isolation`) and is never needed after a crash: the WAL is the
//!   journal.
//!   Set after the migrations, whose index builds may sort more than fits.
//! - `busy_timeout` on every connection (writer, readers, the CLI's) so the
//!   CLI (`hookbox token create` while `serve` runs) and Litestream's own
//!   connection wait for a lock instead of failing.
//! - Checkpoints: without Litestream, SQLite's automatic checkpoint (at 1,000
//!   WAL pages) and a `TRUNCATE` checkpoint at stop. With `--litestream`
//!   ([`Replication::Litestream`]) hookbox never checkpoints on its own:
//!   `wal_autocheckpoint=0` on the writer, no checkpoint at stop, no
//!   one-off `VACUUM` at open; Litestream checkpoints after it has copied
//!   the WAL. The CLI's connections never checkpoint either (their writes
//!   are a few pages; `serve` or Litestream checkpoints them with the rest).
//!   Retention's `PRAGMA incremental_vacuum` stays on in both modes: it is
//!   an ordinary write transaction whose commit frame records the smaller
//!   page count, which Litestream replicates like any other (reasoned from
//!   the WAL format, not proved by a test under Litestream yet).
//!
//! Inside `serve`, only [`writer`] writes. Reads go through [`ReadPool`],
//! whose connections are `query_only`. rusqlite's `Connection` is `Send` but
//! not `Sync`, so a connection is used by one thread at a time.
//!
//! This module must not know about HTTP or the API's error shapes.

pub mod answer;
pub mod audit;
pub mod deliveries;
pub mod event_types;
pub mod events;
pub mod handover;
pub mod holds;
pub mod monitoring;
pub mod replica;
pub mod schema;
pub mod search;
pub mod tokens;
pub mod webhooks;
pub mod writer;

use std::fmt;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

/// How long a connection waits for another's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle read connections kept open; more are opened under load and closed
/// after. Every API request reads (its token at least), so this matches the
/// default `--http-threads`: with 8, connections were opened and closed
/// continuously at 64 concurrent clients, costing about a tenth of the
/// publish throughput. Each costs little until it caches pages.
const READ_POOL_IDLE: usize = 64;

/// Whether the database is replicated by Litestream, which must be the
/// only one to checkpoint it (`serve --litestream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// No replication: hookbox checkpoints as SQLite does by default.
    None,
    /// Litestream replicates the file: hookbox never checkpoints it.
    Litestream,
}

/// Why a store operation failed, as far as callers need to branch on it.
#[derive(Debug)]
pub enum StoreError {
    /// The database cannot be used right now (busy beyond the timeout, disk
    /// full, I/O error, the writer stopped). The API answers 503.
    Unavailable(String),
    /// The change is committed and fsynced here, but the replica did not
    /// confirm it (`--ack-after-replica`): the API answers 503, and a retry
    /// with the same idempotency key gets the stored event once the replica
    /// confirms.
    ReplicaUnconfirmed(String),
    /// Anything else SQLite reported, with what was being attempted.
    Sqlite {
        context: &'static str,
        source: rusqlite::Error,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "storage unavailable: {why}"),
            StoreError::ReplicaUnconfirmed(why) => {
                write!(f, "committed here, not confirmed on the replica: {why}")
            }
            StoreError::Sqlite { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Attaches what was being attempted to a rusqlite error, turning the
/// failures that mean "the storage cannot be used now" into `Unavailable`.
pub trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| classify(context, source))
    }
}

fn classify(context: &'static str, source: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match source.sqlite_error_code() {
        Some(
            DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | CannotOpen | ReadOnly
            | OutOfMemory,
        ) => StoreError::Unavailable(format!("{context}: {source}")),
        _ => StoreError::Sqlite { context, source },
    }
}

/// Creates the database file with mode 0600 if it does not exist yet, so
/// that SQLite (which gives its WAL and shm files the database's mode) never
/// makes a world-readable file holding secrets; an existing one is
/// tightened (`tighten`).
fn create_private(path: &Path) -> Result<(), StoreError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            tighten(path);
            Ok(())
        }
        Err(e) => Err(StoreError::Unavailable(format!(
            "creating database file {}: {e}",
            path.display()
        ))),
    }
}

/// Takes group and other permissions off an existing database and its
/// `-wal` and `-shm` files (they hold webhook secrets and consignors'
/// personal data; a copy restored with `cp` or made by another tool may be
/// world-readable), with a warning for each file changed. Files that
/// cannot be changed (another owner) are warned about and left: that is
/// the operator's call, not a reason to stop.
fn tighten(db: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = Path::new(&name);
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700)) {
            Ok(()) => log::warn!(
                "{} was readable by others (mode {mode:04o}); tightened to {:04o}",
                path.display(),
                mode & 0o700
            ),
            Err(e) => log::warn!(
                "{} is readable by others (mode {mode:04o}) and could not be tightened: {e}",
                path.display()
            ),
        }
    }
}

/// Opens the CLI's read-write connection for its own short writes: like
/// `serve`'s, but it never checkpoints (whoever else has the database open,
/// `serve` or Litestream, checkpoints; closing the last connection does it
/// otherwise). Its VACUUM at open is the one-off conversion of a file made
/// before incremental vacuum, which only a file without its WAL would need.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let conn = open_writer_for(path, Replication::None)?;
    conn.execute_batch("PRAGMA wal_autocheckpoint=0")
        .context("turning automatic checkpoints off")?;
    Ok(conn)
}

/// Whether Litestream has replicated this database: its tables
/// (`_litestream_seq`, `_litestream_lock`) are in the file.
pub fn has_litestream_tables(conn: &Connection) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name LIKE '\\_litestream\\_%' ESCAPE '\\'",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .context("looking for Litestream's tables")
}

/// Opens the read-write connection, creating the file (mode 0600) and
/// applying migrations. `serve` gives it to the writer thread; under
/// Litestream it never checkpoints (see the module doc).
pub fn open_writer_for(path: &Path, replication: Replication) -> Result<Connection, StoreError> {
    create_private(path)?;
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .context("opening database")?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .context("setting busy timeout")?;
    // Before WAL mode: switching to WAL writes the file's first page, after
    // which auto_vacuum changes only with a VACUUM.
    incremental_vacuum(&conn, replication)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .context("switching to WAL mode")?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "database refused WAL mode (got {mode})"
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         PRAGMA foreign_keys=ON;",
    )
    .context("setting writer pragmas")?;
    if replication == Replication::Litestream {
        // A checkpoint of ours could move WAL frames into the database
        // before Litestream has copied them; it checkpoints itself.
        conn.execute_batch("PRAGMA wal_autocheckpoint=0")
            .context("turning automatic checkpoints off for Litestream")?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    stable_plans(&conn)?;
    schema::migrate(&mut conn)?;
    // After the migrations, whose index builds may sort more than fits.
    conn.execute_batch("PRAGMA temp_store=MEMORY")
        .context("keeping the statement journal in memory")?;
    Ok(conn)
}

/// Makes the file one whose free pages can be returned to the file system
/// a batch at a time (retention prunes, then `PRAGMA incremental_vacuum`).
/// A new database gets it before its first table; one made before this
/// setting is rewritten once with `VACUUM`.
///
/// Under Litestream the conversion is skipped with a warning: an in-place
/// `VACUUM` rewrites every page behind Litestream's back. Retention still
/// deletes; the file just does not shrink.
fn incremental_vacuum(conn: &Connection, replication: Replication) -> Result<(), StoreError> {
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
        .context("reading auto_vacuum")?;
    if mode == 2 {
        return Ok(());
    }
    if replication == Replication::Litestream && schema::version(conn)? > 0 {
        log::warn!(
            "this database predates incremental vacuum and is replicated by Litestream, so it is \
             not converted (a VACUUM would rewrite it behind Litestream): pruned space is reused \
             but not returned to the file system. To convert it, stop Litestream and hookbox, \
             run `hookbox serve` once without --litestream and stop it, then start both again \
             (Litestream takes a new snapshot)"
        );
        return Ok(());
    }
    conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL")
        .context("setting auto_vacuum")?;
    if schema::version(conn)? > 0 {
        log::info!("rewriting the database once so that pruning can return space (VACUUM)");
        conn.execute_batch("VACUUM")
            .context("converting to incremental vacuum")?;
    }
    Ok(())
}

/// Opens a read-only connection to an existing database.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .context("opening database for reading")?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .context("setting busy timeout")?;
    // A small page cache per reader: there may be several, and the OS page
    // cache holds the file anyway.
    conn.execute_batch("PRAGMA query_only=ON; PRAGMA cache_size=-2000;")
        .context("setting reader pragmas")?;
    conn.set_prepared_statement_cache_capacity(64);
    stable_plans(&conn)?;
    Ok(conn)
}

/// Turns on SQLite's query planner stability guarantee: a statement's plan
/// never depends on the values bound to it. Without it, a query whose
/// terms the planner compares with a partial index's condition (the
/// scheduler's `due_for_webhook` against `deliveries_webhook_due`) marks
/// its parameters, and binding a new value to one of them makes SQLite
/// prepare the whole statement again on its next step: in the profile, a
/// second compile of the due query on every call. None of our plans gain
/// from the values (no `ANALYZE` statistics; the partial indexes are chosen
/// by their literal `status = 'pending'`).
fn stable_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .context("turning on the query planner stability guarantee")?;
    Ok(())
}

/// Read-only connections shared by the requests. A request takes one for
/// the duration of its reads and gives it back.
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub fn new(path: &Path) -> ReadPool {
        ReadPool {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` with a read connection.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let taken = self.lock_idle().pop();
        let conn = match taken {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = f(&conn);
        let mut idle = self.lock_idle();
        if idle.len() < READ_POOL_IDLE {
            idle.push(conn);
        }
        result
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn autocheckpoint(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_due_query_is_compiled_once_whatever_webhook_it_is_asked_about() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hookbox.db");
        drop(open_writer(&db).unwrap());
        let conn = open_reader(&db).unwrap();
        let holds = holds::Holds::default();
        for webhook in ["wh_a", "wh_b", "wh_c"] {
            events::due_for_webhook(&conn, webhook, 1, 8, &holds, false).unwrap();
        }
        let stmt = conn.prepare_cached(events::DUE_IDS).unwrap();
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    #[test]
    fn only_litestream_mode_and_the_cli_turn_automatic_checkpoints_off() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hookbox.db");
        assert_eq!(
            autocheckpoint(&open_writer_for(&db, Replication::None).unwrap()),
            1000
        );
        assert_eq!(
            autocheckpoint(&open_writer_for(&db, Replication::Litestream).unwrap()),
            0
        );
        assert_eq!(autocheckpoint(&open_writer(&db).unwrap()), 0);
        let conn = open_writer(&db).unwrap();
        assert!(!has_litestream_tables(&conn).unwrap());
        conn.execute_batch("CREATE TABLE _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER)")
            .unwrap();
        assert!(has_litestream_tables(&conn).unwrap());
        for conn in [open_reader(&db).unwrap(), open_writer(&db).unwrap()] {
            let ms: i64 = conn
                .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
                .unwrap();
            assert_eq!(ms, BUSY_TIMEOUT.as_millis() as i64);
        }
    }
}
