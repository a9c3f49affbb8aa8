//! SQL for webhooks (subscriptions). Deleted webhooks are kept with
//! `deleted_at` set, so their deliveries still name them, and are invisible
//! to every query here.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Context, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub description: String,
    pub secret: String,
    pub events: Vec<String>,
    pub max_attempts: Option<u32>,
    pub rate_limit_per_s: Option<u32>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The secret a rotation replaced; it signs alongside `secret` until
    /// `previous_secret_until` (Unix ms).
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<i64>,
}

const COLUMNS: &str = "id, url, description, secret, events, max_attempts, rate_limit_per_s, \
                       enabled, disabled_reason, created_at, updated_at, previous_secret, \
                       previous_secret_until";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Webhook> {
    let events: String = row.get(4)?;
    Ok(Webhook {
        id: row.get(0)?,
        url: row.get(1)?,
        description: row.get(2)?,
        secret: row.get(3)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        max_attempts: row.get(5)?,
        rate_limit_per_s: row.get(6)?,
        enabled: row.get(7)?,
        disabled_reason: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
        previous_secret: row.get(11)?,
        previous_secret_until: row.get(12)?,
    })
}

fn events_json(events: &[String]) -> String {
    serde_json::Value::from(events).to_string()
}

pub fn insert(conn: &Connection, w: &Webhook) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO webhooks ({COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    ))
    .and_then(|mut stmt| {
        stmt.execute(params![
            w.id,
            w.url,
            w.description,
            w.secret,
            events_json(&w.events),
            w.max_attempts,
            w.rate_limit_per_s,
            w.enabled,
            w.disabled_reason,
            w.created_at,
            w.updated_at,
            w.previous_secret,
            w.previous_secret_until
        ])
    })
    .context("inserting webhook")?;
    Ok(())
}

/// Writes every mutable field of `w`; false if it does not exist (or was deleted).
pub fn update(conn: &Connection, w: &Webhook) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE webhooks SET url = ?2, description = ?3, events = ?4, max_attempts = ?5, \
             rate_limit_per_s = ?6, enabled = ?7, disabled_reason = ?8, updated_at = ?9 \
             WHERE id = ?1 AND deleted_at IS NULL",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                w.id,
                w.url,
                w.description,
                events_json(&w.events),
                w.max_attempts,
                w.rate_limit_per_s,
                w.enabled,
                w.disabled_reason,
                w.updated_at
            ])
        })
        .context("updating webhook")?;
    Ok(changed == 1)
}

/// Marks the webhook deleted and cancels its undelivered deliveries.
/// False if it does not exist.
pub fn delete(conn: &Connection, id: &str, now: i64) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE webhooks SET deleted_at = ?2, updated_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
            params![id, now],
        )
        .context("deleting webhook")?;
    if changed == 0 {
        return Ok(false);
    }
    conn.execute(
        "UPDATE deliveries SET status = 'cancelled', next_attempt_at = NULL, updated_at = ?2 \
         WHERE webhook_id = ?1 AND status IN ('pending', 'delivering')",
        params![id, now],
    )
    .context("cancelling deliveries of deleted webhook")?;
    Ok(true)
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<Webhook>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM webhooks WHERE id = ?1 AND deleted_at IS NULL"
    ))
    .and_then(|mut stmt| stmt.query_row([id], from_row).optional())
    .context("reading webhook")
}

/// Newest first, `limit` of them after the cursor (an id).
pub fn list(
    conn: &Connection,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Vec<Webhook>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM webhooks WHERE deleted_at IS NULL AND (?1 IS NULL OR id < ?1) \
         ORDER BY id DESC LIMIT ?2"
    ))
    .and_then(|mut stmt| {
        stmt.query_map(params![cursor, limit as i64], from_row)?
            .collect()
    })
    .context("listing webhooks")
}

/// Every webhook that is not deleted, for the writer's fan-out table.
pub fn all_live(conn: &Connection) -> Result<Vec<Webhook>, StoreError> {
    conn.prepare(&format!(
        "SELECT {COLUMNS} FROM webhooks WHERE deleted_at IS NULL ORDER BY id"
    ))
    .and_then(|mut stmt| stmt.query_map([], from_row)?.collect())
    .context("loading webhooks")
}

/// A partial update from `PATCH /api/v1/webhooks/{id}`: `None` leaves a
/// field as it is; `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub max_attempts: Option<Option<u32>>,
    pub rate_limit_per_s: Option<Option<u32>>,
    pub enabled: Option<bool>,
}

impl Patch {
    /// What the patch changes in `w`, in words for the audit log: field
    /// names only, never values (a URL may carry a credential in its query).
    /// `None` when it changes nothing.
    pub fn describe(&self, w: &Webhook) -> Option<String> {
        let mut changed = Vec::new();
        if self.url.as_ref().is_some_and(|url| *url != w.url) {
            changed.push("url");
        }
        if self.events.as_ref().is_some_and(|e| *e != w.events) {
            changed.push("events");
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| *d != w.description)
        {
            changed.push("description");
        }
        if self.max_attempts.is_some_and(|m| m != w.max_attempts) {
            changed.push("max_attempts");
        }
        if self
            .rate_limit_per_s
            .is_some_and(|r| r != w.rate_limit_per_s)
        {
            changed.push("rate_limit_per_s");
        }
        if self.enabled.is_some_and(|e| e != w.enabled) {
            changed.push("enabled");
        }
        (!changed.is_empty()).then(|| format!("changed {}", changed.join(", ")))
    }

    pub fn apply(self, w: &mut Webhook, now: i64) {
        if let Some(url) = self.url {
            w.url = url;
        }
        if let Some(events) = self.events {
            w.events = events;
        }
        if let Some(description) = self.description {
            w.description = description;
        }
        if let Some(max_attempts) = self.max_attempts {
            w.max_attempts = max_attempts;
        }
        if let Some(rate) = self.rate_limit_per_s {
            w.rate_limit_per_s = rate;
        }
        if let Some(enabled) = self.enabled {
            if enabled && !w.enabled {
                w.disabled_reason = None;
            } else if !enabled && w.enabled {
                w.disabled_reason = Some("disabled by the API".to_owned());
            }
            w.enabled = enabled;
        }
        w.updated_at = now;
    }
}

/// Makes `secret` the webhook's secret; the one it replaces keeps signing
/// until `until`. A secret rotated out earlier, still in its grace period,
/// stops signing now: at most two secrets sign at once.
pub fn rotate_secret(
    conn: &Connection,
    id: &str,
    secret: &str,
    until: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE webhooks SET previous_secret = secret, previous_secret_until = ?3, \
             secret = ?2, updated_at = ?4 WHERE id = ?1 AND deleted_at IS NULL",
            params![id, secret, until, now],
        )
        .context("rotating webhook secret")?;
    Ok(changed == 1)
}

/// Disables a webhook, keeping its deliveries; false if it is not enabled.
pub fn disable(conn: &Connection, id: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
    let changed = conn
        .execute(
            "UPDATE webhooks SET enabled = 0, disabled_reason = ?2, updated_at = ?3 \
             WHERE id = ?1 AND enabled = 1 AND deleted_at IS NULL",
            params![id, reason, now],
        )
        .context("disabling webhook")?;
    Ok(changed == 1)
}

/// Records whether the webhook's latest attempt succeeded. A webhook whose
/// attempts have all failed for `disable_after_ms` or longer is disabled;
/// returns true when this call disabled it. The row is written only when
/// the health changes: a run of failures starts, or a success ends one.
pub fn record_health(
    conn: &Connection,
    id: &str,
    succeeded: bool,
    now: i64,
    disable_after_ms: i64,
) -> Result<bool, StoreError> {
    if succeeded {
        conn.prepare_cached(
            "UPDATE webhooks SET failing_since = NULL WHERE id = ?1 AND failing_since IS NOT NULL",
        )
        .and_then(|mut stmt| stmt.execute([id]))
        .context("recording webhook success")?;
        return Ok(false);
    }
    // Read first: the row is written only when a run of failures starts,
    // not on every failed attempt of a run.
    let known: Option<Option<i64>> = conn
        .prepare_cached("SELECT failing_since FROM webhooks WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([id], |row| row.get(0)).optional())
        .context("reading webhook health")?;
    let since = match known {
        // Gone (deleted rows stay, so this is a webhook that never was).
        None => None,
        Some(Some(since)) => Some(since),
        Some(None) => {
            conn.prepare_cached("UPDATE webhooks SET failing_since = ?2 WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute(params![id, now]))
                .context("recording webhook failure")?;
            Some(now)
        }
    };
    match since {
        Some(since) if now - since >= disable_after_ms => {
            let window = crate::clock::human_duration(disable_after_ms);
            disable(conn, id, &format!("every attempt failed for {window}"), now)
        }
        _ => Ok(false),
    }
}

/// Forgets a webhook's run of failures (it was re-enabled).
pub fn reset_failing(conn: &Connection, id: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE webhooks SET failing_since = NULL WHERE id = ?1",
        [id],
    )
    .context("resetting webhook failures")?;
    Ok(())
}
