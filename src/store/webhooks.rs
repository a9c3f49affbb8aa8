//! SQL for webhooks (subscriptions). Deleted webhooks are kept with
//! `deleted_at` set, so their deliveries still name them, and are invisible
//! to every query here.
//!
//! Also the webhooks' changes through the writer (the end of this file):
//! create, update, delete, rotate the secret, and the disables hookbox
//! makes itself, each with its audit row and its effect on the fan-out
//! table.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};

use super::audit::{self, Actor, AuditAction};
use super::writer::{Tx, WriteOp, WriterHandle};
use super::{Context, StoreError};
use crate::clock;
use crate::content_filter::ContentFilter;
use crate::headers::CustomHeaders;

/// Why a webhook is disabled: the API's `disabled_reason`, stored as its
/// text in the `disabled_reason` column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisableReason {
    /// Created with `"enabled": false`.
    CreatedDisabled,
    /// `PATCH {"enabled": false}`.
    ByApi,
    /// The receiver answered 410 Gone.
    Gone,
    /// Every attempt failed for `--disable-after`; `window` is that
    /// duration as `clock::human_duration` writes it (`3d`), as stored.
    Failing { window: String },
}

/// The text before the window in [`DisableReason::Failing`].
const FAILING_FOR: &str = "every attempt failed for ";

impl DisableReason {
    /// Every attempt failed for `window_ms`.
    pub fn failing_for(window_ms: i64) -> DisableReason {
        DisableReason::Failing {
            window: clock::human_duration(window_ms),
        }
    }

    /// Whether hookbox disabled the webhook by itself (not an operator).
    pub fn by_system(&self) -> bool {
        matches!(self, DisableReason::Gone | DisableReason::Failing { .. })
    }

    pub fn parse(text: &str) -> Option<DisableReason> {
        match text {
            "created disabled" => Some(DisableReason::CreatedDisabled),
            "disabled by the API" => Some(DisableReason::ByApi),
            "the receiver answered 410 Gone" => Some(DisableReason::Gone),
            _ => text
                .strip_prefix(FAILING_FOR)
                .filter(|window| !window.is_empty())
                .map(|window| DisableReason::Failing {
                    window: window.to_owned(),
                }),
        }
    }
}

impl std::fmt::Display for DisableReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisableReason::CreatedDisabled => f.write_str("created disabled"),
            DisableReason::ByApi => f.write_str("disabled by the API"),
            DisableReason::Gone => f.write_str("the receiver answered 410 Gone"),
            DisableReason::Failing { window } => write!(f, "{FAILING_FOR}{window}"),
        }
    }
}

impl ToSql for DisableReason {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_string()))
    }
}

/// Every stored text was written from this enum (older versions wrote
/// `every attempt failed for 3.0 days`, which parses as `Failing`).
impl FromSql for DisableReason {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        DisableReason::parse(text)
            .ok_or_else(|| FromSqlError::Other(format!("unknown disabled reason {text:?}").into()))
    }
}

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
    pub disabled_reason: Option<DisableReason>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The secret a rotation replaced; it signs alongside `secret` until
    /// `previous_secret_until` (Unix ms).
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<i64>,
    /// Sent with every delivery; the values are kept like the secret.
    pub headers: CustomHeaders,
    /// Only events whose data match are delivered; empty: every event.
    pub filter: ContentFilter,
    /// A data path (`data.item_id`): deliveries with the same value there
    /// arrive in publish order. `None`: no order.
    pub ordering_key: Option<String>,
}

const COLUMNS: &str = "id, url, description, secret, events, max_attempts, rate_limit_per_s, \
                       enabled, disabled_reason, created_at, updated_at, previous_secret, \
                       previous_secret_until, headers, filter, ordering_key";

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
        headers: json_column(
            row,
            13,
            CustomHeaders::from_stored,
            "a list of [name, value] pairs",
        )?,
        filter: json_column(row, 14, ContentFilter::from_stored, "a list of conditions")?,
        ordering_key: row.get(15)?,
    })
}

/// A column of JSON text read by `parse`; an error saying it is not
/// `what` when it cannot be (it is only ever written from the same type).
fn json_column<T>(
    row: &rusqlite::Row<'_>,
    index: usize,
    parse: impl Fn(&str) -> Option<T>,
    what: &str,
) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("column {index} of webhooks is not {what}").into(),
        )
    })
}

fn events_json(events: &[String]) -> String {
    serde_json::Value::from(events).to_string()
}

pub fn insert(conn: &Connection, w: &Webhook) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO webhooks ({COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
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
            w.previous_secret_until,
            w.headers.to_stored(),
            w.filter.to_json().to_string(),
            w.ordering_key
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
             rate_limit_per_s = ?6, enabled = ?7, disabled_reason = ?8, updated_at = ?9, \
             headers = ?10, filter = ?11, ordering_key = ?12 WHERE id = ?1 AND deleted_at IS NULL",
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
                w.updated_at,
                w.headers.to_stored(),
                w.filter.to_json().to_string(),
                w.ordering_key
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
    /// The whole new set of custom headers (`{}` removes them all).
    pub headers: Option<CustomHeaders>,
    /// The new content filter (`[]` removes it).
    pub filter: Option<ContentFilter>,
    /// The new ordering key; `Some(None)` removes it.
    pub ordering_key: Option<Option<String>>,
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
        // Only that they changed: the values are credentials.
        if self.headers.as_ref().is_some_and(|h| *h != w.headers) {
            changed.push("headers");
        }
        if self.filter.as_ref().is_some_and(|f| *f != w.filter) {
            changed.push("filter");
        }
        if self
            .ordering_key
            .as_ref()
            .is_some_and(|k| *k != w.ordering_key)
        {
            changed.push("ordering_key");
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
        if let Some(headers) = self.headers {
            w.headers = headers;
        }
        if let Some(filter) = self.filter {
            w.filter = filter;
        }
        if let Some(key) = self.ordering_key {
            w.ordering_key = key;
        }
        if let Some(enabled) = self.enabled {
            if enabled && !w.enabled {
                w.disabled_reason = None;
            } else if !enabled && w.enabled {
                w.disabled_reason = Some(DisableReason::ByApi);
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
pub fn disable(
    conn: &Connection,
    id: &str,
    reason: &DisableReason,
    now: i64,
) -> Result<bool, StoreError> {
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
            disable(conn, id, &DisableReason::Failing { window }, now)
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

// Changes through the writer: its apply functions (run in the batch's
// transaction; see `writer::Isolation`) and the handle's methods that send them.

impl WriterHandle {
    pub fn create_webhook(&self, webhook: Webhook, actor: Actor) -> Result<(), StoreError> {
        self.call(|reply| WriteOp::CreateWebhook {
            webhook,
            actor,
            reply,
        })
    }

    pub fn update_webhook(
        &self,
        id: String,
        patch: Patch,
        actor: Actor,
    ) -> Result<Option<Webhook>, StoreError> {
        self.call(|reply| WriteOp::UpdateWebhook {
            id,
            patch,
            actor,
            reply,
        })
    }

    pub fn delete_webhook(&self, id: String, actor: Actor) -> Result<bool, StoreError> {
        self.call(|reply| WriteOp::DeleteWebhook { id, actor, reply })
    }

    pub fn rotate_secret(
        &self,
        id: String,
        secret: String,
        until: i64,
        actor: Actor,
    ) -> Result<Option<Webhook>, StoreError> {
        self.call(|reply| WriteOp::RotateSecret {
            id,
            secret,
            until,
            actor,
            reply,
        })
    }
}

pub(super) fn apply_create(
    tx: &mut Tx<'_>,
    webhook: Webhook,
    actor: &Actor,
) -> Result<(), StoreError> {
    insert(tx.conn, &webhook)?;
    let mut summary = format!(
        "created webhook for {} ({})",
        webhook.events.join(", "),
        if webhook.enabled {
            "enabled"
        } else {
            "disabled"
        }
    );
    // How many, never their values (nor names, which the listings show).
    match webhook.headers.names().len() {
        0 => {}
        1 => summary.push_str(" with 1 custom header"),
        n => summary.push_str(&format!(" with {n} custom headers")),
    }
    if !webhook.filter.is_empty() {
        summary.push_str(" and a content filter");
    }
    if let Some(key) = &webhook.ordering_key {
        summary.push_str(&format!(", ordered by {key}"));
    }
    audit::record(
        tx.conn,
        actor,
        AuditAction::WebhookCreated,
        Some(&webhook.id),
        &summary,
        tx.now,
    )?;
    tx.subscriptions.upsert(&webhook);
    tx.wake.webhooks = true;
    Ok(())
}

pub(super) fn apply_update(
    tx: &mut Tx<'_>,
    id: &str,
    patch: Patch,
    actor: &Actor,
) -> Result<Option<Webhook>, StoreError> {
    let Some(mut webhook) = get(tx.conn, id)? else {
        return Ok(None);
    };
    let re_enabled = !webhook.enabled && patch.enabled == Some(true);
    let disabled = webhook.enabled && patch.enabled == Some(false);
    let summary = patch.describe(&webhook);
    patch.apply(&mut webhook, tx.now);
    update(tx.conn, &webhook)?;
    if re_enabled {
        reset_failing(tx.conn, id)?;
        log::info!("webhook {id} re-enabled; its held deliveries drain now");
    }
    let action = match (re_enabled, disabled) {
        (true, _) => AuditAction::WebhookEnabled,
        (_, true) => AuditAction::WebhookDisabled,
        _ => AuditAction::WebhookUpdated,
    };
    // A PATCH that changes nothing leaves no audit row.
    if let Some(summary) = summary {
        audit::record(tx.conn, actor, action, Some(id), &summary, tx.now)?;
    }
    tx.subscriptions.upsert(&webhook);
    tx.wake.webhooks = true;
    Ok(Some(webhook))
}

pub(super) fn apply_delete(tx: &mut Tx<'_>, id: &str, actor: &Actor) -> Result<bool, StoreError> {
    if !delete(tx.conn, id, tx.now)? {
        return Ok(false);
    }
    let summary = "deleted webhook; its pending deliveries are cancelled";
    audit::record(
        tx.conn,
        actor,
        AuditAction::WebhookDeleted,
        Some(id),
        summary,
        tx.now,
    )?;
    tx.subscriptions.remove(id);
    tx.wake.webhooks = true;
    Ok(true)
}

pub(super) fn apply_rotate_secret(
    tx: &mut Tx<'_>,
    id: &str,
    secret: &str,
    until: i64,
    actor: &Actor,
) -> Result<Option<Webhook>, StoreError> {
    if !rotate_secret(tx.conn, id, secret, until, tx.now)? {
        return Ok(None);
    }
    let summary = format!(
        "rotated the signing secret; the previous one signs too until {}",
        clock::rfc3339(until)
    );
    audit::record(
        tx.conn,
        actor,
        AuditAction::WebhookSecretRotated,
        Some(id),
        &summary,
        tx.now,
    )?;
    let rotated = get(tx.conn, id)?;
    tx.wake.webhooks |= rotated.is_some();
    Ok(rotated)
}

/// Logs and audits a webhook hookbox itself disabled (already written
/// disabled, by [`disable`] or [`record_health`]).
pub(super) fn disabled_by_system(
    tx: &mut Tx<'_>,
    id: &str,
    why: &DisableReason,
) -> Result<(), StoreError> {
    log::warn!("webhook {id} disabled: {why}");
    tx.wake.webhooks = true;
    audit::record(
        tx.conn,
        &Actor::System,
        AuditAction::WebhookDisabled,
        Some(id),
        &format!("disabled automatically: {why}; its deliveries are held"),
        tx.now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_reasons_read_back_from_the_texts_the_api_shows() {
        let table = [
            (DisableReason::CreatedDisabled, "created disabled"),
            (DisableReason::ByApi, "disabled by the API"),
            (DisableReason::Gone, "the receiver answered 410 Gone"),
            (
                DisableReason::failing_for(3 * 24 * 3600 * 1000),
                "every attempt failed for 3d",
            ),
        ];
        for (reason, text) in table {
            assert_eq!(reason.to_string(), text);
            assert_eq!(DisableReason::parse(text), Some(reason));
        }
        // What an older version stored.
        assert_eq!(
            DisableReason::parse("every attempt failed for 3.0 days"),
            Some(DisableReason::Failing {
                window: "3.0 days".into()
            })
        );
        assert_eq!(DisableReason::parse("every attempt failed for "), None);
        assert_eq!(DisableReason::parse("because"), None);
    }

    #[test]
    fn only_hookbox_s_own_disables_count_as_by_the_system() {
        assert!(DisableReason::Gone.by_system());
        assert!(DisableReason::failing_for(60_000).by_system());
        assert!(!DisableReason::ByApi.by_system());
        assert!(!DisableReason::CreatedDisabled.by_system());
    }
}
