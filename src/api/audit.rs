//! `GET /api/v1/audit-log`: every change, newest first, filterable by
//! action (`?action=webhook.created`, one of [`AuditAction::ALL`]) and
//! time (`?since=`, `?until=`).

use serde_json::json;

use super::body::Page;
use super::{ApiError, Ctx, Reply};
use crate::clock;
use crate::ids::Kind;
use crate::store::audit::{self, AuditAction, Entry, Query};
use crate::validation::{self, FieldError};

fn to_json(e: &Entry) -> serde_json::Value {
    json!({
        "id": e.id,
        "at": clock::rfc3339(e.at),
        "actor": e.actor,
        "actor_name": e.actor_name,
        "client": e.client,
        "action": e.action.as_str(),
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
            "action" => match AuditAction::parse(value) {
                Some(action) => query.action = Some(action),
                // Built whole: `FieldError::new` cuts long messages (which
                // may quote a huge input); this one quotes none.
                None => errors.push(FieldError {
                    field: "action".into(),
                    code: "invalid",
                    message: format!("must be one of {}", action_list()),
                }),
            },
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

/// `webhook.created, webhook.updated, ...`: every action the log holds.
fn action_list() -> String {
    let names: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
    names.join(", ")
}
