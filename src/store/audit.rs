//! SQL for the audit log: one row per change, written in the same
//! transaction as the change itself, so a change is never without its row
//! and a row never without its change.
//!
//! Summaries are built by callers from field names and ids, never from
//! secrets or tokens. The domain module that applies a change writes its
//! row (`webhooks.rs`, `tokens.rs`, ...); this file owns the table, the
//! closed list of actions ([`AuditAction`]) and who made a change
//! ([`Actor`]).

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, params};

use super::{Context, StoreError};
use crate::ids::{self, Kind};

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An API token, with the client address the request came from.
    Token {
        id: String,
        name: String,
        client: Option<String>,
    },
    /// A `hookbox` command on the server's machine.
    Cli,
    /// hookbox itself (an automatic disable, for example).
    System,
}

impl Actor {
    fn columns(&self) -> (&str, Option<&str>, Option<&str>) {
        match self {
            Actor::Token { id, name, client } => (id, Some(name), client.as_deref()),
            Actor::Cli => ("cli", None, None),
            Actor::System => ("system", None, None),
        }
    }
}

/// What a change did: the `action` column and the API's `action` field and
/// `?action=` filter, one text each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    WebhookCreated,
    WebhookUpdated,
    WebhookEnabled,
    WebhookDisabled,
    WebhookDeleted,
    WebhookSecretRotated,
    WebhookTested,
    WebhookReplayed,
    DeliveryRetried,
    TokenCreated,
    TokenRevoked,
    EventTypeCreated,
}

impl AuditAction {
    /// Every action, in the order the API lists them.
    pub const ALL: [AuditAction; 12] = [
        AuditAction::WebhookCreated,
        AuditAction::WebhookUpdated,
        AuditAction::WebhookEnabled,
        AuditAction::WebhookDisabled,
        AuditAction::WebhookDeleted,
        AuditAction::WebhookSecretRotated,
        AuditAction::WebhookTested,
        AuditAction::WebhookReplayed,
        AuditAction::DeliveryRetried,
        AuditAction::TokenCreated,
        AuditAction::TokenRevoked,
        AuditAction::EventTypeCreated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::WebhookCreated => "webhook.created",
            AuditAction::WebhookUpdated => "webhook.updated",
            AuditAction::WebhookEnabled => "webhook.enabled",
            AuditAction::WebhookDisabled => "webhook.disabled",
            AuditAction::WebhookDeleted => "webhook.deleted",
            AuditAction::WebhookSecretRotated => "webhook.secret_rotated",
            AuditAction::WebhookTested => "webhook.tested",
            AuditAction::WebhookReplayed => "webhook.replayed",
            AuditAction::DeliveryRetried => "delivery.retried",
            AuditAction::TokenCreated => "token.created",
            AuditAction::TokenRevoked => "token.revoked",
            AuditAction::EventTypeCreated => "event_type.created",
        }
    }

    pub fn parse(text: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for AuditAction {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

/// Every row was written from this list; another text (a newer version's
/// row after a downgrade) is an error, not a guess.
impl FromSql for AuditAction {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        AuditAction::parse(text)
            .ok_or_else(|| FromSqlError::Other(format!("unknown audit action {text:?}").into()))
    }
}

/// One audit log row.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub at: i64,
    pub actor: String,
    pub actor_name: Option<String>,
    pub client: Option<String>,
    pub action: AuditAction,
    pub target: Option<String>,
    pub summary: String,
}

/// `, usable from 10.0.0.0/8, ::1/128` for a token's summary; empty for no
/// list.
pub fn allow_summary(allow: &[crate::config::Cidr]) -> String {
    if allow.is_empty() {
        return String::new();
    }
    let nets: Vec<String> = allow.iter().map(ToString::to_string).collect();
    format!(", usable from {}", nets.join(", "))
}

/// Records that `actor` did `action` to `target`.
pub fn record(
    conn: &Connection,
    actor: &Actor,
    action: AuditAction,
    target: Option<&str>,
    summary: &str,
    now: i64,
) -> Result<(), StoreError> {
    let (who, name, client) = actor.columns();
    conn.prepare_cached(
        "INSERT INTO audit_log (id, at, actor, actor_name, client, action, target, summary) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            ids::new(Kind::Audit),
            now,
            who,
            name,
            client,
            action,
            target,
            summary
        ])
    })
    .context("writing the audit log")?;
    Ok(())
}

/// What `GET /api/v1/audit-log` can ask for.
#[derive(Debug, Default)]
pub struct Query {
    pub action: Option<AuditAction>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Only rows with ids below this (the cursor), newest first.
    pub before: Option<String>,
    pub limit: usize,
}

/// Audit rows, newest first.
pub fn list(conn: &Connection, q: &Query) -> Result<Vec<Entry>, StoreError> {
    let mut sql = String::from(
        "SELECT id, at, actor, actor_name, client, action, target, summary FROM audit_log WHERE 1",
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut push = |clause: &str, value: rusqlite::types::Value| {
        args.push(value);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(action) = q.action {
        push("action =", action.as_str().to_owned().into());
    }
    if let Some(since) = q.since {
        push("at >=", since.into());
    }
    if let Some(until) = q.until {
        push("at <", until.into());
    }
    if let Some(before) = &q.before {
        push("id <", before.clone().into());
    }
    args.push((q.limit as i64).into());
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
    conn.prepare(&sql)
        .and_then(|mut stmt| {
            stmt.query_map(rusqlite::params_from_iter(args), |row| {
                Ok(Entry {
                    id: row.get(0)?,
                    at: row.get(1)?,
                    actor: row.get(2)?,
                    actor_name: row.get(3)?,
                    client: row.get(4)?,
                    action: row.get(5)?,
                    target: row.get(6)?,
                    summary: row.get(7)?,
                })
            })?
            .collect()
        })
        .context("reading the audit log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_reads_back_from_its_text_and_no_two_share_one() {
        let mut texts = std::collections::HashSet::new();
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
            assert!(texts.insert(action.as_str()), "{action} twice");
        }
        assert_eq!(AuditAction::parse("webhook.exploded"), None);
        assert_eq!(AuditAction::parse("WEBHOOK.CREATED"), None);
    }
}
