//! SQL for API tokens. Only hashes are stored; see `secrets.rs`.
//!
//! Also the tokens' changes through the writer (the end of this file):
//! create and revoke, each with its audit row, and the record of a
//! token's last use.

use rusqlite::{Connection, OptionalExtension, params};

use super::audit::{self, Actor, AuditAction};
use super::writer::{Tx, WriteOp, WriterHandle};
use super::{Context, StoreError};
use crate::config::{Cidr, Scope, parse_cidr};

#[derive(Debug, Clone)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Client addresses the token may be used from; empty: any that
    /// `--api-allow` lets in.
    pub allow: Vec<Cidr>,
}

fn allow_text(allow: &[Cidr]) -> Option<String> {
    (!allow.is_empty()).then(|| {
        allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// The id of the live (unrevoked) token called `name`, if there is one.
/// Two live tokens of one name could not be told apart in `token list` or
/// the audit log, so a name is taken until its token is revoked.
pub fn live_named(conn: &Connection, name: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT id FROM tokens WHERE name = ?1 AND revoked_at IS NULL LIMIT 1")
        .and_then(|mut stmt| stmt.query_row([name], |r| r.get(0)).optional())
        .context("looking up a token by name")
}

/// Inserts `token` unless a live token already has its name; then answers
/// that token's id and inserts nothing.
pub fn insert(
    conn: &Connection,
    token: &Token,
    hash: &[u8; 32],
) -> Result<Option<String>, StoreError> {
    if let Some(existing) = live_named(conn, &token.name)? {
        return Ok(Some(existing));
    }
    conn.prepare_cached(
        "INSERT INTO tokens (id, name, scope, hash, created_at, allow) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            token.id,
            token.name,
            token.scope.as_str(),
            &hash[..],
            token.created_at,
            allow_text(&token.allow)
        ])
    })
    .context("inserting token")?;
    Ok(None)
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Token> {
    let scope: String = row.get(2)?;
    let allow: Option<String> = row.get(6)?;
    Ok(Token {
        id: row.get(0)?,
        name: row.get(1)?,
        // The CHECK constraint keeps other values out; read them as the
        // least powerful scope rather than fail.
        scope: Scope::parse(&scope).unwrap_or(Scope::Read),
        created_at: row.get(3)?,
        last_used_at: row.get(4)?,
        revoked_at: row.get(5)?,
        // Written from parsed CIDRs only; an unparsable entry (edited by
        // hand) matches nothing rather than everything.
        allow: allow
            .as_deref()
            .map(|text| {
                text.split(',')
                    .map(|c| parse_cidr(c).unwrap_or_else(|_| Cidr::nothing()))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

const COLUMNS: &str = "id, name, scope, created_at, last_used_at, revoked_at, allow";

/// The live (not revoked) token with this hash, and the stored hash to
/// compare in constant time.
pub fn find_live_by_hash(
    conn: &Connection,
    hash: &[u8; 32],
) -> Result<Option<(Token, Vec<u8>)>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, hash FROM tokens WHERE hash = ?1 AND revoked_at IS NULL"
    ))
    .and_then(|mut stmt| {
        stmt.query_row([&hash[..]], |row| Ok((from_row(row)?, row.get(7)?)))
            .optional()
    })
    .context("looking up token")
}

pub fn list(conn: &Connection) -> Result<Vec<Token>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens ORDER BY id"))
        .and_then(|mut stmt| stmt.query_map([], from_row)?.collect())
        .context("listing tokens")
}

/// Live tokens, newest first, `limit` of them after the cursor (an id).
pub fn list_live_page(
    conn: &Connection,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Vec<Token>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tokens WHERE revoked_at IS NULL AND (?1 IS NULL OR id < ?1) \
         ORDER BY id DESC LIMIT ?2"
    ))
    .and_then(|mut stmt| {
        stmt.query_map(params![cursor, limit as i64], from_row)?
            .collect()
    })
    .context("listing tokens")
}

/// How many tokens the database holds, revoked ones included.
pub fn count(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("SELECT count(*) FROM tokens", [], |row| row.get(0))
        .context("counting tokens")
}

/// Revokes a token; false if there is no live token with that id.
pub fn revoke(conn: &Connection, id: &str, now: i64) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now],
        )
        .context("revoking token")?;
    Ok(changed == 1)
}

pub fn touch(conn: &Connection, id: &str, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE tokens SET last_used_at = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![id, now]))
        .context("recording token use")?;
    Ok(())
}

// Changes through the writer: its apply functions (run in the batch's
// transaction; see `writer::Isolation`) and the handle's methods that send them.

impl WriterHandle {
    pub fn create_token(
        &self,
        token: Token,
        hash: [u8; 32],
        actor: Actor,
    ) -> Result<Option<String>, StoreError> {
        self.call(|reply| WriteOp::CreateToken {
            token,
            hash,
            actor,
            reply,
        })
    }

    pub fn revoke_token(&self, id: String, actor: Actor) -> Result<bool, StoreError> {
        self.call(|reply| WriteOp::RevokeToken { id, actor, reply })
    }

    pub fn touch_token(&self, id: String, at: i64) {
        // Best effort: a lost last-used time is not worth failing a request.
        self.offer(WriteOp::TouchToken { id, at });
    }
}

/// Inserts the token unless a live one has its name: then the id of that
/// one, and nothing written.
pub(super) fn apply_create(
    tx: &mut Tx<'_>,
    token: &Token,
    hash: &[u8; 32],
    actor: &Actor,
) -> Result<Option<String>, StoreError> {
    let taken = insert(tx.conn, token, hash)?;
    if taken.is_some() {
        return Ok(taken);
    }
    audit::record(
        tx.conn,
        actor,
        AuditAction::TokenCreated,
        Some(&token.id),
        &created_summary(token),
        tx.now,
    )?;
    Ok(None)
}

/// The audit log's words for a new token, from the API and the CLI alike.
pub fn created_summary(token: &Token) -> String {
    format!(
        "created {} token \"{}\"{}",
        token.scope.as_str(),
        token.name,
        audit::allow_summary(&token.allow)
    )
}

pub(super) fn apply_revoke(tx: &mut Tx<'_>, id: &str, actor: &Actor) -> Result<bool, StoreError> {
    let revoked = revoke(tx.conn, id, tx.now)?;
    if revoked {
        audit::record(
            tx.conn,
            actor,
            AuditAction::TokenRevoked,
            Some(id),
            "revoked token",
            tx.now,
        )?;
    }
    Ok(revoked)
}

/// Records the token's use at `at` (the request's time, not the op's).
pub(super) fn apply_touch(tx: &mut Tx<'_>, id: &str, at: i64) -> Result<(), StoreError> {
    touch(tx.conn, id, at)
}
