//! `/api/v1/events` (publish, list, get) and `/api/v1/event-types`.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::body::{Fields, Page};
use super::{ApiError, Ctx, Reply};
use crate::catalog::{self, MAX_SCHEMA_BYTES};
use crate::clock;
use crate::ids::{self, Kind};
use crate::store::events::{self as store, Delivery, Event};
use crate::store::writer::PublishOutcome;
use crate::validation::{self, FieldError};

const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The summary a publish answers with: `{"id", "event", "timestamp", "deliveries": n}`.
pub(super) fn summary(e: &Event) -> Value {
    json!({"id": e.id, "event": e.event_type, "timestamp": e.timestamp, "deliveries": e.deliveries})
}

/// The event as listed: the envelope receivers get, plus bookkeeping.
fn to_json(e: &Event) -> Value {
    let mut value: Value = serde_json::from_slice(&e.payload).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("created_at".into(), json!(clock::rfc3339(e.created_at)));
        map.insert("deliveries".into(), json!(e.deliveries));
        map.insert("idempotency_key".into(), json!(e.idempotency_key));
    }
    value
}

pub fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "webhook_id": d.webhook_id,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.map(clock::rfc3339),
        "last_status_code": d.last_status,
        "last_error": d.last_error,
        "created_at": clock::rfc3339(d.created_at),
        "updated_at": clock::rfc3339(d.updated_at),
    })
}

/// The exact bytes every receiver gets, in the seed's field order.
/// The catalog's event type `name`, or an `event` field error.
pub(super) fn known_type(
    ctx: &Ctx<'_>,
    name: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<std::sync::Arc<crate::catalog::EventType>> {
    let name = name?;
    let found = ctx.state.catalog.get(name);
    if found.is_none() {
        errors.push(FieldError::new(
            "event",
            "unknown_event_type",
            format!("\"{name}\" is not a known event type; see GET /api/v1/event-types"),
        ));
    }
    found
}

pub(super) fn envelope(id: &str, event_type: &str, timestamp: &str, data: &Value) -> Vec<u8> {
    let text = |s: &str| Value::from(s).to_string();
    format!(
        "{{\"id\":{},\"event\":{},\"timestamp\":{},\"data\":{}}}",
        text(id),
        text(event_type),
        text(timestamp),
        data
    )
    .into_bytes()
}

fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters"));
    }
    if !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(())
}

pub fn publish(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let mut fields = Fields::parse(&ctx.body)?;
    let name = fields.required_string("event", 100);
    let data = fields.take("data");
    let body_key = fields.string("idempotency_key", 10_000);
    let timestamp = fields.string("timestamp", 100);
    let mut errors = Vec::new();

    let key = match (body_key, ctx.idempotency_key.clone()) {
        (Some(a), Some(b)) if a != b => {
            errors.push(FieldError::new(
                "idempotency_key",
                "conflict",
                "differs from the Idempotency-Key header; send one or make them equal",
            ));
            None
        }
        (a, b) => a.or(b),
    };
    if let Some(Err(why)) = key.as_deref().map(check_idempotency_key) {
        errors.push(FieldError::new("idempotency_key", "invalid", why));
    }
    let timestamp = timestamp
        .and_then(|t| validation::time("timestamp", &t, &mut errors))
        .map(clock::rfc3339);
    let event_type = known_type(ctx, name.as_deref(), &mut errors).filter(|t| {
        let own = t.name.starts_with("hookbox.");
        if own {
            errors.push(FieldError::new(
                "event",
                "reserved",
                format!("{} events are published by hookbox itself", t.name),
            ));
        }
        !own
    });
    match (&data, &event_type) {
        (None, _) => errors.push(FieldError::new("data", "required", "is required")),
        (Some(data), Some(t)) => errors.extend(t.validate(data)),
        (Some(data), None) if !data.is_object() => errors.push(FieldError::new(
            "data",
            "type",
            format!(
                "must be an object, got {}",
                crate::validation::type_name(data)
            ),
        )),
        (Some(_), None) => {}
    }
    fields.finish(errors)?;
    let (Some(event_type), Some(data)) = (event_type, data) else {
        return Err(ApiError::internal());
    };

    // The fingerprint of what was asked, to tell a retry from a different
    // request that reuses its idempotency key.
    let mut hasher = Sha256::new();
    hasher.update(event_type.name.as_bytes());
    hasher.update([0]);
    hasher.update(data.to_string().as_bytes());
    hasher.update([0]);
    hasher.update(timestamp.as_deref().unwrap_or("").as_bytes());
    let request_hash = hasher.finalize().to_vec();

    let id = ids::new(Kind::Event);
    let now = clock::now_ms();
    let timestamp = timestamp.unwrap_or_else(|| clock::rfc3339(now));
    let event = Event {
        payload: envelope(&id, &event_type.name, &timestamp, &data),
        id,
        event_type: event_type.name.clone(),
        timestamp,
        created_at: now,
        idempotency_key: key,
        request_hash,
        deliveries: 0,
    };
    let mut stored = event.clone();
    match ctx.state.writer.publish(event)? {
        PublishOutcome::Created { deliveries } => {
            stored.deliveries = deliveries;
            ctx.state
                .monitor
                .metrics
                .events_published
                .get_or_create(&crate::monitor::metrics::EventLabels {
                    event_type: stored.event_type.clone(),
                })
                .inc();
            Ok(Reply::json(202, &summary(&stored)))
        }
        PublishOutcome::Replayed(original) => Ok(Reply::json(200, &summary(&original))),
        PublishOutcome::KeyConflict => Err(ApiError::conflict(
            "idempotency_conflict",
            "this idempotency key was already used for a different request",
        )),
        // Only a test event names a webhook.
        PublishOutcome::NoSuchWebhook => Err(ApiError::internal()),
    }
}

pub fn list(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let mut errors = Vec::new();
    let page = Page::from_query(&ctx.query, Kind::Event, &mut errors);
    let mut filter = catalog::Filter::All;
    let mut since = None;
    for (key, value) in &ctx.query {
        match key.as_str() {
            "event" => match catalog::Filter::parse(value) {
                catalog::Filter::Prefix(p) if !p.ends_with('.') => errors.push(FieldError::new(
                    "event",
                    "invalid",
                    "must be an event type, \"*\" or a prefix such as \"item.*\"",
                )),
                parsed => filter = parsed,
            },
            "since" => since = validation::time("since", value, &mut errors),
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let rows = ctx.state.reads.with(|conn| {
        store::list_events(conn, &filter, since, page.cursor.as_deref(), page.limit + 1)
    })?;
    Ok(Reply::json(200, &page.body(rows, |e| &e.id, to_json)))
}

pub fn get(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    let not_found = || ApiError::not_found(&format!("event {id}"));
    if !Kind::Event.matches(id) {
        return Err(not_found());
    }
    let (event, deliveries) = ctx.state.reads.with(|conn| {
        let Some(event) = store::get_event(conn, id)? else {
            return Ok((None, Vec::new()));
        };
        Ok((Some(event), store::deliveries_of_event(conn, id)?))
    })?;
    let event = event.ok_or_else(not_found)?;
    let mut value = to_json(&event);
    value["deliveries"] = deliveries.iter().map(delivery_json).collect();
    Ok(Reply::json(200, &value))
}

pub fn list_types(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let types: Vec<Value> = ctx
        .state
        .catalog
        .list()
        .iter()
        .map(|t| t.to_json())
        .collect();
    Ok(Reply::json(
        200,
        &json!({"data": types, "next_cursor": null}),
    ))
}

pub fn create_type(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let mut fields = Fields::parse(&ctx.body)?;
    let name = fields.required_string("name", 100);
    let description = fields.string("description", 1000).unwrap_or_default();
    let schema = fields.take("schema").unwrap_or(Value::Null);
    let example = fields.take("example");
    let mut errors = Vec::new();
    let schema_text = (!schema.is_null()).then(|| schema.to_string());
    if schema_text
        .as_ref()
        .is_some_and(|s| s.len() > MAX_SCHEMA_BYTES)
    {
        errors.push(FieldError::new(
            "schema",
            "too_long",
            format!("must be at most {MAX_SCHEMA_BYTES} bytes"),
        ));
    }
    // Name, schema and example are checked independently, so that one 422
    // names every problem. A missing or mistyped name was reported above.
    let compiled = if errors.is_empty() {
        match catalog::compile(
            name.as_deref(),
            &description,
            schema,
            example.clone(),
            false,
        ) {
            Ok(t) => name.is_some().then_some(t),
            Err(e) => {
                errors.extend(e);
                None
            }
        }
    } else {
        if let Some(Err(why)) = name.as_deref().map(catalog::check_type_name) {
            errors.push(FieldError::new("name", "invalid", why));
        }
        None
    };
    fields.finish(errors)?;
    let Some(compiled) = compiled else {
        return Err(ApiError::internal());
    };
    let exists = || {
        ApiError::conflict(
            "already_exists",
            format!("event type {} already exists", compiled.name),
        )
    };
    if ctx.state.catalog.get(&compiled.name).is_some() {
        return Err(exists());
    }
    let row = store::EventType {
        name: compiled.name.clone(),
        description,
        schema: schema_text,
        example: example.map(|e| e.to_string()),
        created_at: clock::now_ms(),
    };
    if !ctx.state.writer.create_event_type(row, ctx.actor.clone())? {
        return Err(exists());
    }
    let value = compiled.to_json();
    ctx.state.catalog.insert(compiled);
    Ok(Reply::json(201, &value))
}
