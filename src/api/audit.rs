//! `GET /api/v1/audit-log`: every change, newest first, filterable by
//! action (`?action=webhook.created`) and time (`?since=`, `?until=`).

use serde_json::json;

use super::body::Page;
use super::{ApiError, Ctx, Reply};
use crate::clock;
use crate::ids::Kind;
use crate::store::audit::{self, Entry, Query};
use crate::validation::{self, FieldError};

fn to_json(e: &Entry) -> serde_json::Value {
    json!({
        "id": e.id,
        "at": clock::rfc3339(e.at),
        "actor": e.actor,
        "actor_name": e.actor_name,
        "client": e.client,
        "action": e.action,
        "target": e.target,
        "summary": e.summary,
    })
}

pub fn list(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let mut errors = Vec::new();
    let page = Page::from_query(&ctx.query, Kind::Audit, &mut errors);
    let mut query = Query {
        limit: page.limit + 1,
        before: page.cursor.clone(),
        ..Query::default()
    };
    for (key, value) in &ctx.query {
        match key.as_str() {
            "action" if is_action(value) => query.action = Some(value.clone()),
            "action" => errors.push(FieldError::new(
                "action",
                "invalid",
                "must be an action name such as webhook.created",
            )),
            "since" => query.since = validation::time("since", value, &mut errors),
            "until" => query.until = validation::time("until", value, &mut errors),
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let rows = ctx.state.reads.with(|conn| audit::list(conn, &query))?;
    Ok(Reply::json(200, &page.body(rows, |e| &e.id, to_json)))
}

/// `thing.verb`, lower case with underscores.
fn is_action(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
}
