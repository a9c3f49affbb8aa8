//! Monitoring endpoints: `GET /healthz`, `GET /metrics`,
//! `GET /api/v1/stats`, `GET /api/v1/webhooks/{id}/stats` and
//! `GET /api/v1/alerts`.
//!
//! Statistics come from memory (see `monitor::stats`), so their cost does
//! not grow with the attempts stored. The queue is counted per webhook on
//! an index and the reading reused for 5 s (about 40 ms per refresh with
//! 500,000 pending on the development machine).

use std::time::Duration;

use serde_json::{Value, json};

use super::body::Page;
use super::{ApiError, Ctx, Reply, State};
use crate::clock;
use crate::delivery::SCHEDULER_STUCK_MS;
use crate::ids::Kind;
use crate::store::monitoring::{self, Alert, Queue};
use crate::store::webhooks;
use crate::validation::FieldError;

fn queue_json(q: &Queue, now: i64) -> Value {
    json!({
        "pending": q.pending,
        "held": q.held,
        "delivering": q.delivering,
        "oldest_pending_age_s": q.oldest_waiting.map(|at| (now - at).max(0) / 1000),
    })
}

/// `GET /api/v1/stats`.
pub fn stats(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let now = clock::now_ms();
    let monitor = &ctx.state.monitor;
    let (queue, (enabled, disabled)) = ctx.state.reads.with(|conn| {
        Ok((
            monitor.queue(conn, None)?,
            monitoring::webhook_states(conn)?,
        ))
    })?;
    let series = monitor.series(None);
    Ok(Reply::json(
        200,
        &json!({
            "generated_at": clock::rfc3339(now),
            "queue": queue_json(&queue, now),
            "webhooks": {"enabled": enabled, "disabled": disabled},
            "last_hour": series.last_hour(now).to_json(),
            "last_day": series.last_day(now).to_json(),
            "series": series.chart(now),
        }),
    ))
}

/// `GET /api/v1/webhooks/{id}/stats`.
pub fn webhook_stats(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    if !Kind::Webhook.matches(id) {
        return Err(ApiError::not_found(&format!("webhook {id}")));
    }
    let now = clock::now_ms();
    let monitor = &ctx.state.monitor;
    let queue = ctx.state.reads.with(|conn| {
        if webhooks::get(conn, id)?.is_none() {
            return Ok(None);
        }
        monitor.queue(conn, Some(id)).map(Some)
    })?;
    let queue = queue.ok_or_else(|| ApiError::not_found(&format!("webhook {id}")))?;
    let series = monitor.series(Some(id));
    Ok(Reply::json(
        200,
        &json!({
            "generated_at": clock::rfc3339(now),
            "webhook_id": id,
            "queue": queue_json(&queue, now),
            "last_hour": series.last_hour(now).to_json(),
            "last_day": series.last_day(now).to_json(),
            "series": series.chart(now),
        }),
    ))
}

fn alert_json(a: &Alert) -> Value {
    json!({
        "id": a.id,
        "rule": a.rule,
        "webhook_id": a.subject.starts_with("wh_").then_some(&a.subject),
        "status": if a.open { "open" } else { "resolved" },
        "opened_at": clock::rfc3339(a.opened_at),
        "resolved_at": a.resolved_at.map(clock::rfc3339),
        "title": a.title,
        "message": a.message,
        "last_error": a.last_error,
    })
}

/// `GET /api/v1/alerts[?status=open|resolved]`.
pub fn alerts(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let mut errors = Vec::new();
    let page = Page::from_query(&ctx.query, Kind::Alert, &mut errors);
    let mut open = None;
    for (key, value) in &ctx.query {
        if key == "status" {
            match value.as_str() {
                "open" => open = Some(true),
                "resolved" => open = Some(false),
                _ => errors.push(FieldError::new(
                    "status",
                    "enum",
                    "must be open or resolved",
                )),
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let rows = ctx
        .state
        .reads
        .with(|conn| monitoring::list_alerts(conn, open, page.cursor.as_deref(), page.limit + 1))?;
    Ok(Reply::json(200, &page.body(rows, |a| &a.id, alert_json)))
}

/// `GET /metrics`: the scrape-time gauges are read, then everything encoded
/// — as OpenMetrics when the scraper asks for it, else in the classic
/// Prometheus text format.
pub fn metrics(state: &State, open_metrics: bool) -> Reply {
    let m = &state.monitor.metrics;
    let now = clock::now_ms();
    let read = state.reads.with(|conn| {
        Ok((
            state.monitor.queue(conn, None)?,
            monitoring::webhook_states(conn)?,
        ))
    });
    match read {
        Ok((queue, (enabled, disabled))) => {
            m.queue_pending.set(queue.pending);
            m.queue_held.set(queue.held);
            m.oldest_pending_age.set(
                queue
                    .oldest_waiting
                    .map_or(0, |at| (now - at).max(0) / 1000),
            );
            for (state_name, n) in [("enabled", enabled), ("disabled", disabled)] {
                m.webhooks
                    .get_or_create(&crate::monitor::metrics::StateLabels {
                        state: state_name.to_owned(),
                    })
                    .set(n);
            }
        }
        Err(e) => log::warn!("metrics: reading the queue failed: {e}"),
    }
    let text = m.encode();
    let (body, content_type) = if open_metrics {
        (
            text,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            crate::monitor::metrics::to_classic(&text),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    Reply {
        status: 200,
        body: body.into_bytes(),
        content_type,
        headers: Vec::new(),
    }
}

/// `/healthz`: the database takes a commit within 2 s, the scheduler goes
/// round (the workers live with it), and the queue; 503 naming what fails.
pub fn health(state: &State) -> Reply {
    let version = env!("CARGO_PKG_VERSION");
    let now = clock::now_ms();
    let mut failing = Vec::new();
    let database = match state.writer.ping(Duration::from_secs(2)) {
        Ok(()) => "ok",
        Err(e) => {
            log::warn!("health check: the database did not commit: {e}");
            failing.push("database");
            "failing"
        }
    };
    let engine = match &state.liveness {
        None => "paused",
        Some(l) if l.scheduler_idle_ms(now) <= SCHEDULER_STUCK_MS => "ok",
        Some(_) => {
            failing.push("scheduler");
            "failing"
        }
    };
    // `null` while the first reading since start is being taken: a count
    // that grows with the backlog, which health does not wait for.
    let queue = if state.monitor.queue_warming() {
        Value::Null
    } else {
        state
            .reads
            .with(|conn| state.monitor.queue(conn, None))
            .map(|q| queue_json(&q, now))
            .unwrap_or(Value::Null)
    };
    let ok = failing.is_empty();
    let mut body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "version": version,
        "checks": {"database": database, "writer": database, "scheduler": engine, "workers": engine},
        "queue": queue,
    });
    if !ok {
        body["failing"] = json!(failing);
    }
    Reply::json(if ok { 200 } else { 503 }, &body)
}
