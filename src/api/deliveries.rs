//! `/api/v1/deliveries` (list, get with attempt log, retry) and
//! `POST /api/v1/webhooks/{id}/replay`.

use serde_json::{Value, json};

use super::body::{Fields, Page};
use super::events::delivery_json;
use super::{ApiError, Ctx, Reply};
use crate::clock;
use crate::ids::Kind;
use crate::store::events::{self as store, Attempt, DeliveryStatus, Ids};
use crate::store::search;
use crate::validation::{self, FieldError};

fn attempt_json(a: &Attempt) -> Value {
    json!({
        "number": a.number,
        "started_at": clock::rfc3339(a.started_at),
        "duration_ms": a.duration_ms,
        "status_code": a.status_code,
        "error_kind": a.error_kind,
        "response_body": String::from_utf8_lossy(&a.response_body),
    })
}

pub fn list(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let mut errors = Vec::new();
    let page = Page::from_query(&ctx.query, Kind::Delivery, &mut errors);
    let (mut webhook_id, mut event_id, mut status) = (None, None, None);
    let (mut since, mut until) = (None, None);
    let data = search::data_conditions(&ctx.query, &mut errors);
    for (key, value) in &ctx.query {
        match key.as_str() {
            "since" => since = validation::time("since", value, &mut errors),
            "until" => until = validation::time("until", value, &mut errors),
            "webhook_id" if Kind::Webhook.matches(value) => webhook_id = Some(value.clone()),
            "event_id" if Kind::Event.matches(value) => event_id = Some(value.clone()),
            "webhook_id" | "event_id" => errors.push(FieldError::new(
                key.clone(),
                "invalid",
                "is not an id of that kind",
            )),
            "status" => match DeliveryStatus::parse(value) {
                Some(s) => status = Some(s),
                None => errors.push(FieldError::new(
                    "status",
                    "enum",
                    "must be one of pending, delivering, succeeded, failed, cancelled",
                )),
            },
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    // Held deliveries are pending in the database and shown delivering.
    let holds = &ctx.state.monitor.holds;
    let held = match status {
        Some(DeliveryStatus::Delivering | DeliveryStatus::Pending) => {
            holds.json(webhook_id.as_deref())
        }
        _ => String::new(),
    };
    let (status, ids) = match status {
        Some(DeliveryStatus::Delivering) => (Some(DeliveryStatus::Pending), Ids::Only(&held)),
        Some(DeliveryStatus::Pending) => (status, Ids::Except(&held)),
        _ => (status, Ids::Any),
    };
    let searching = !data.is_empty() || since.is_some() || until.is_some();
    let rows = if searching {
        let narrowing = search::Narrowing {
            data: &data,
            since,
            until,
            event_id: event_id.as_deref(),
        };
        ctx.state.reads.with(|conn| {
            search::deliveries(
                conn,
                &narrowing,
                webhook_id.as_deref(),
                status,
                ids,
                page.cursor.as_deref(),
                page.limit + 1,
            )
        })?
    } else {
        ctx.state.reads.with(|conn| {
            store::list_deliveries(
                conn,
                webhook_id.as_deref(),
                event_id.as_deref(),
                status,
                ids,
                page.cursor.as_deref(),
                page.limit + 1,
            )
        })?
    };
    let rows = rows.into_iter().map(|d| holds.show(d)).collect();
    Ok(Reply::json(200, &page.body(rows, |d| &d.id, delivery_json)))
}

pub fn get(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let not_found = || ApiError::not_found(&format!("delivery {id}"));
    if !Kind::Delivery.matches(id) {
        return Err(not_found());
    }
    let (delivery, attempts) = ctx.state.reads.with(|conn| {
        let Some(d) = store::get_delivery(conn, id)? else {
            return Ok((None, Vec::new()));
        };
        Ok((Some(d), store::attempts_of(conn, id)?))
    })?;
    let delivery = ctx
        .state
        .monitor
        .holds
        .show(delivery.ok_or_else(not_found)?);
    let mut value = delivery_json(&delivery);
    value["attempt_log"] = attempts.iter().map(attempt_json).collect();
    Ok(Reply::json(200, &value))
}

pub fn retry(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let not_found = || ApiError::not_found(&format!("delivery {id}"));
    if !Kind::Delivery.matches(id) {
        return Err(not_found());
    }
    match ctx
        .state
        .writer
        .retry_delivery(id.to_owned(), ctx.actor.clone())?
    {
        None => Err(not_found()),
        Some(false) => Err(ApiError::conflict(
            "not_retryable",
            "this delivery is being attempted now, or was cancelled with its webhook",
        )),
        Some(true) => Ok(Reply::json(202, &json!({"id": id, "status": "pending"}))),
    }
}

pub fn replay(ctx: &Ctx<'_>, webhook_id: &str) -> Result<Reply, ApiError> {
    let not_found = || ApiError::not_found(&format!("webhook {webhook_id}"));
    if !Kind::Webhook.matches(webhook_id) {
        return Err(not_found());
    }
    let mut fields = Fields::parse(&ctx.body)?;
    let since = fields.required_string("since", 100);
    let until = fields.string("until", 100);
    let status = fields.string("status", 20);
    let mut errors = Vec::new();
    let since = since.and_then(|t| validation::time("since", &t, &mut errors));
    let until = until.and_then(|t| validation::time("until", &t, &mut errors));
    let status = match status.as_deref() {
        None | Some("failed") => Some(DeliveryStatus::Failed),
        Some("succeeded") => Some(DeliveryStatus::Succeeded),
        Some(_) => {
            errors.push(FieldError::new(
                "status",
                "enum",
                "must be failed or succeeded",
            ));
            None
        }
    };
    fields.finish(errors)?;
    let (Some(since), Some(status)) = (since, status) else {
        return Err(ApiError::internal());
    };
    let until = until.unwrap_or(i64::MAX);
    if until <= since {
        return Err(ApiError::invalid(vec![FieldError::new(
            "until",
            "out_of_range",
            "must be after since",
        )]));
    }
    match ctx.state.writer.replay(
        webhook_id.to_owned(),
        status,
        since,
        until,
        ctx.actor.clone(),
    )? {
        None => Err(not_found()),
        Some(n) => Ok(Reply::json(202, &json!({"requeued": n}))),
    }
}
