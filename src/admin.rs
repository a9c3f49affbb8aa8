//! The one-shot commands: `token create|list|revoke`, `check`, `backup`,
//! `verify`.
//!
//! They open the database file directly and may run while `serve` runs:
//! SQLite's locking and the busy timeout serialise their short writes with
//! the server's writer thread (each in an immediate transaction, see
//! `begin_write`). A new token works at its first use; `token revoke`
//! returns once a running server refuses the token (it waits out the
//! server's token cache, `api::auth::RECHECK_EVERY`).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use rusqlite::backup::{Backup, StepResult};

use crate::clock;
use crate::config::{Cidr, Scope, TokenCommand, VerifyArgs};
use crate::delivery::sign;
use crate::ids::{self, Kind};
use crate::secrets;
use crate::store::audit::{self, Actor, AuditAction};
use crate::store::{self, schema, tokens};

pub fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            scope,
            allow,
            db,
        } => token_create(&db.db, &name, scope, allow),
        TokenCommand::List { db } => token_list(&db.db),
        TokenCommand::Revoke { id, db } => token_revoke(&db.db, &id),
    }
}

/// Why a token name is refused, if it is.
pub fn check_token_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err("must be 1 to 100 printable characters");
    }
    Ok(())
}

fn token_create(db: &Path, name: &str, scope: Scope, allow: Vec<Cidr>) -> anyhow::Result<()> {
    let name = name.trim();
    if let Err(why) = check_token_name(name) {
        bail!("a token name {why}");
    }
    let mut conn =
        store::open_writer(db).with_context(|| format!("opening database {}", db.display()))?;
    let token = secrets::new_token();
    let row = tokens::Token {
        id: ids::new(Kind::Token),
        name: name.to_owned(),
        scope,
        created_at: clock::now_ms(),
        last_used_at: None,
        revoked_at: None,
        allow,
    };
    let tx = begin_write(&mut conn)?;
    if let Some(existing) = tokens::insert(&tx, &row, &secrets::token_hash(&token))? {
        bail!(
            "a live token is already named \"{name}\" ({existing}); choose another name, \
             or revoke that token first (hookbox token revoke {existing})"
        );
    }
    audit::record(
        &tx,
        &Actor::Cli,
        AuditAction::TokenCreated,
        Some(&row.id),
        &tokens::created_summary(&row),
        row.created_at,
    )?;
    tx.commit().context("committing")?;
    println!(
        "created {} token {} ({name}); it is shown only once:",
        scope.as_str(),
        row.id
    );
    println!("{token}");
    Ok(())
}

fn token_list(db: &Path) -> anyhow::Result<()> {
    let conn = open_existing(db)?;
    let rows: Vec<[String; 6]> = tokens::list(&conn)?
        .into_iter()
        .filter(|t| t.revoked_at.is_none())
        .map(|t| {
            [
                t.id,
                t.name,
                t.scope.as_str().to_owned(),
                clock::rfc3339(t.created_at),
                t.last_used_at
                    .map_or_else(|| "never".to_owned(), clock::rfc3339),
                if t.allow.is_empty() {
                    "any".to_owned()
                } else {
                    t.allow
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            ["ID", "NAME", "SCOPE", "CREATED", "LAST USED", "ALLOW"],
            &rows
        )
    );
    Ok(())
}

/// Rows under a header, each column padded to its widest cell and two
/// spaces apart; the last column is not padded.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; N]| {
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(header);
    for row in rows {
        line(std::array::from_fn(|i| row[i].as_str()));
    }
    out
}

fn token_revoke(db: &Path, id: &str) -> anyhow::Result<()> {
    if !db.exists() {
        bail!("database {} does not exist", db.display());
    }
    let mut conn =
        store::open_writer(db).with_context(|| format!("opening database {}", db.display()))?;
    let now = clock::now_ms();
    let tx = begin_write(&mut conn)?;
    if !tokens::revoke(&tx, id, now)? {
        bail!("no live token with id {id}");
    }
    audit::record(
        &tx,
        &Actor::Cli,
        AuditAction::TokenRevoked,
        Some(id),
        "revoked token",
        now,
    )?;
    tx.commit().context("committing")?;
    // A running server uses a token it has found for up to RECHECK_EVERY
    // before it looks again: once this returns, it refuses this one.
    std::thread::sleep(2 * crate::api::auth::RECHECK_EVERY);
    println!("revoked {id}");
    Ok(())
}

/// Takes the write lock before reading, waiting (the busy timeout) for the
/// server's writer. A deferred transaction would read first, and could then
/// not write if the server committed in between: SQLite answers that with
/// "database is locked" at once, without waiting.
fn begin_write(conn: &mut rusqlite::Connection) -> anyhow::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .context("waiting for the database's write lock")
}

fn open_existing(db: &Path) -> anyhow::Result<rusqlite::Connection> {
    if !db.exists() {
        bail!("database {} does not exist", db.display());
    }
    store::open_reader(db).with_context(|| format!("opening database {}", db.display()))
}

/// Integrity, foreign keys and schema version; an error for any problem.
/// Tables beyond hookbox's schema (Litestream's) are accepted.
pub fn check(db: &Path) -> anyhow::Result<()> {
    let conn = open_existing(db)?;
    let version = schema::version(&conn)?;
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .context("running integrity_check")?;
    let foreign: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .context("running foreign_key_check")?;
    let mut problems = Vec::new();
    if integrity != ["ok"] {
        problems.push(format!("integrity_check: {}", integrity.join("; ")));
    }
    if foreign != 0 {
        problems.push(format!(
            "foreign_key_check: {foreign} rows point at missing parents"
        ));
    }
    if version != schema::VERSION {
        problems.push(format!(
            "schema version {version}, this hookbox expects {}",
            schema::VERSION
        ));
    }
    if !problems.is_empty() {
        bail!("{} is damaged: {}", db.display(), problems.join("; "));
    }
    // Litestream adds `_litestream_seq` and `_litestream_lock` to the file
    // it replicates: they are its own, and not a problem.
    let litestream = if store::has_litestream_tables(&conn)? {
        ", Litestream's tables present"
    } else {
        ""
    };
    println!(
        "ok: {} schema version {version}, integrity ok, foreign keys ok{litestream}",
        db.display()
    );
    Ok(())
}

/// A consistent copy through SQLite's online backup API. The copy is
/// written beside `dest` and renamed into place, so `dest` never holds a
/// partial file. An existing `dest` is replaced only with `force`: a
/// mistyped destination must not silently overwrite another database or
/// last night's backup.
pub fn backup(db: &Path, dest: &Path, force: bool) -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    let src = open_existing(db)?;
    if !force && std::fs::symlink_metadata(dest).is_ok() {
        bail!(
            "{} already exists: give another destination, or --force to replace it",
            dest.display()
        );
    }
    let mut tmp_name = dest.as_os_str().to_owned();
    tmp_name.push(format!(".partial-{}", std::process::id()));
    let tmp = Path::new(&tmp_name).to_owned();
    let _ = std::fs::remove_file(&tmp);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let result = (|| -> anyhow::Result<()> {
        let mut dst = rusqlite::Connection::open(&tmp)
            .with_context(|| format!("opening {}", tmp.display()))?;
        // One step (-1 pages): a stepwise copy restarts whenever the server
        // commits in between, so under steady load it may never finish. In
        // WAL mode the one step holds a read snapshot and blocks no writer.
        let backup = Backup::new(&src, &mut dst).context("starting the copy")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match backup.step(-1).context("copying the database")? {
                StepResult::Done => break,
                StepResult::More => {}
                _ if std::time::Instant::now() < deadline => {
                    // Busy or locked: the server holds a lock for a moment.
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                _ => bail!("the database stayed locked for 60 s"),
            }
        }
        drop(backup);
        dst.execute_batch("PRAGMA journal_mode=DELETE")
            .context("finishing the copy")?;
        drop(dst);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, dest)
            .with_context(|| format!("moving the copy to {}", dest.display()))?;
        // Make the rename itself durable.
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    let size = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
    // Said once, on standard output (the journal, under the backup unit).
    println!(
        "backed up {} to {} ({size} bytes, {} ms)",
        db.display(),
        dest.display(),
        began.elapsed().as_millis()
    );
    Ok(())
}

/// `hookbox verify`: whether a captured request verifies, said the way a
/// receiver's developer needs to hear it.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    use std::io::Read;
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("reading the body from standard input")?;
    let entries = args.signature.split_whitespace().count();
    if entries == 0
        || !args
            .signature
            .split_whitespace()
            .all(|e| e.starts_with("v1,"))
    {
        bail!("the signature must be one or more space-separated v1,<base64> entries");
    }
    let Some(entry) = sign::verify(
        &args.secret,
        &args.id,
        args.timestamp,
        &body,
        &args.signature,
    ) else {
        bail!(
            "signature does not match: none of its {entries} entries is this secret's HMAC of \
             \"{id}.{timestamp}.<the {n} body bytes>\". Check the secret (a whsec_ secret's key is \
             the base64 after the prefix), that the body is byte for byte what was received \
             (no re-encoded JSON, no added newline), and the id and timestamp headers",
            id = args.id,
            timestamp = args.timestamp,
            n = body.len(),
        );
    };
    let age = clock::now_ms() / 1000 - args.timestamp;
    let tolerance = i64::try_from(args.tolerance.as_secs()).unwrap_or(i64::MAX);
    if age.abs() > tolerance {
        bail!(
            "signature matches (entry {} of {entries}), but the timestamp is {} {}; a receiver \
             must refuse it as a possible replay (--tolerance widens the window for old captures)",
            entry + 1,
            clock::human_duration(age.abs().saturating_mul(1000)),
            if age > 0 { "old" } else { "in the future" },
        );
    }
    println!(
        "ok: signature matches (entry {} of {entries}) and the timestamp is {} s {}",
        entry + 1,
        age.abs(),
        if age >= 0 { "old" } else { "ahead" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use super::*;

    fn new_database(dir: &tempfile::TempDir) -> std::path::PathBuf {
        let db = dir.path().join("hookbox.db");
        drop(store::open_writer(&db).unwrap());
        db
    }

    /// Another connection (the server's writer) holds the write lock and
    /// commits while `write` runs: `write` must wait for it and succeed,
    /// not fail with "database is locked". A deferred transaction that has
    /// read before the other commit cannot be upgraded (SQLITE_BUSY_SNAPSHOT,
    /// and SQLite skips the busy handler); an immediate one waits for the
    /// lock before it reads.
    fn while_another_connection_commits(db: &Path, write: impl FnOnce() -> anyhow::Result<()>) {
        let (locked, is_locked) = mpsc::channel();
        let holder = {
            let db = db.to_owned();
            thread::spawn(move || {
                let conn = store::open_writer(&db).unwrap();
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                audit::record(&conn, &Actor::Cli, AuditAction::TokenRevoked, None, "x", 1).unwrap();
                locked.send(()).unwrap();
                // Holds the lock long enough for `write` to have read (that
                // takes microseconds); correct code waits however long.
                thread::sleep(Duration::from_millis(300));
                conn.execute_batch("COMMIT").unwrap();
            })
        };
        is_locked.recv().unwrap();
        let result = write();
        holder.join().unwrap();
        result.unwrap();
    }

    #[test]
    fn token_create_waits_for_a_writer_that_commits_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_database(&dir);
        while_another_connection_commits(&db, || {
            token_create(&db, "while-serving", Scope::Read, Vec::new())
        });
        let names: Vec<String> = tokens::list(&store::open_reader(&db).unwrap())
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["while-serving"]);
    }

    #[test]
    fn token_revoke_waits_for_a_writer_that_commits_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_database(&dir);
        token_create(&db, "to-revoke", Scope::Read, Vec::new()).unwrap();
        let id = tokens::list(&store::open_reader(&db).unwrap()).unwrap()[0]
            .id
            .clone();
        while_another_connection_commits(&db, || token_revoke(&db, &id));
        let token = &tokens::list(&store::open_reader(&db).unwrap()).unwrap()[0];
        assert!(token.revoked_at.is_some());
    }
}
