//! `/api/v1/events` (publish, list, get) and `/api/v1/event-types`.
//!
//! Event `data` is delivered as published: the exact JSON text of the
//! request's `data` (numbers digit for digit, members in the order sent,
//! string escapes as written), only with the whitespace between tokens
//! removed. A parsed copy is what the schema validates; the text is what
//! goes into the envelope, the stored payload, and the event listings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::body::{Fields, MAX_DEPTH, Page, depth, object_members, without_position};
use super::{ApiError, Ctx, Reply};
use crate::catalog::{self, MAX_SCHEMA_BYTES};
use crate::clock;
use crate::envelope;
use crate::ids::Kind;
use crate::store::events::{self as store, Delivery, Event};
use crate::store::search;
use crate::store::writer::PublishOutcome;
use crate::validation::{self, FieldError};

const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The answer to a publish: `status` with `{"id", "event", "timestamp",
/// "deliveries": n}` (members in the sorted order they always had),
/// written straight from the event rather than through a `Value`.
pub(super) fn summary(status: u16, e: &Event) -> Reply {
    #[derive(Serialize)]
    struct Summary<'a> {
        deliveries: i64,
        event: &'a str,
        id: &'a str,
        timestamp: &'a str,
    }
    let summary = Summary {
        deliveries: e.deliveries,
        event: &e.event_type,
        id: &e.id,
        timestamp: &e.timestamp,
    };
    Reply {
        status,
        // Serialising strings and a number cannot fail.
        body: serde_json::to_vec(&summary).unwrap_or_default(),
        content_type: "application/json",
        headers: Vec::new(),
    }
}

/// The event as listed: the envelope receivers get (its `data` as the
/// stored text, never re-serialised), plus bookkeeping.
#[derive(Serialize)]
struct Listed<'a> {
    id: &'a str,
    event: &'a str,
    timestamp: &'a str,
    data: Option<&'a RawValue>,
    created_at: String,
    /// The count in a list, the deliveries themselves for one event.
    deliveries: Value,
    idempotency_key: Option<&'a str>,
}

/// The part of a stored payload a listing needs.
#[derive(Deserialize)]
struct StoredPayload<'a> {
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

fn listed(e: &Event, deliveries: Value) -> Listed<'_> {
    // Every payload is an envelope written by `envelope::body`.
    let data = serde_json::from_slice::<StoredPayload<'_>>(&e.payload)
        .ok()
        .and_then(|p| p.data);
    Listed {
        id: &e.id,
        event: &e.event_type,
        timestamp: &e.timestamp,
        data,
        created_at: clock::rfc3339(e.created_at),
        deliveries,
        idempotency_key: e.idempotency_key.as_deref(),
    }
}

/// A 200 JSON reply of a serialisable value.
fn reply(value: &impl Serialize) -> Result<Reply, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| {
        log::error!("serialising an event listing: {e}");
        ApiError::internal()
    })?;
    Ok(Reply {
        status: 200,
        body,
        content_type: "application/json",
        headers: Vec::new(),
    })
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

// ---------------------------------------------------------------------------
// Data as published

/// The most unusable values reported for one event.
const MAX_DATA_ERRORS: usize = 50;

/// `data` parsed for validation, or the values in it that cannot be held
/// in memory to validate (a number beyond the range of a 64-bit float, such
/// as `1e400`; a string with an unpaired surrogate escape): the text is
/// valid JSON, but hookbox could not check it against the schema. Data
/// nested deeper than serde_json parses is malformed, as it always was.
fn parse_data(raw: &RawValue) -> Result<Result<Value, Vec<FieldError>>, ApiError> {
    let e = match serde_json::from_str(raw.get()) {
        Ok(data) => return Ok(Ok(data)),
        Err(e) => e,
    };
    // The scan that found `raw` has no depth limit: measure it, once,
    // before descending into it.
    if depth(raw.get()) > MAX_DEPTH {
        return Err(ApiError::bad_request(
            "malformed_json",
            format!("the body is not valid JSON: data nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    let mut errors = Vec::new();
    unusable(String::from("data"), raw, &mut errors);
    if errors.is_empty() {
        errors.push(FieldError::new(
            "data",
            "invalid",
            format!("is not usable JSON: {}", without_position(&e)),
        ));
    }
    Ok(Err(errors))
}

/// Records every value under `path` that cannot be parsed, descending only
/// into the members that fail (this runs only for data that failed, and
/// nested at most `MAX_DEPTH` deep).
fn unusable(path: String, raw: &RawValue, errors: &mut Vec<FieldError>) {
    if errors.len() >= MAX_DATA_ERRORS {
        return;
    }
    let text = raw.get();
    let members: Result<Vec<(String, &RawValue)>, serde_json::Error> = match text.as_bytes().first()
    {
        Some(b'{') => serde_json::from_str::<BTreeMap<String, &RawValue>>(text).map(|m| {
            m.into_iter()
                .map(|(k, v)| (format!("{path}.{k}"), v))
                .collect()
        }),
        Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(text).map(|items| {
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}[{i}]"), v))
                .collect()
        }),
        _ => match serde_json::from_str::<Value>(text) {
            Ok(_) => Ok(Vec::new()),
            Err(_) if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
                errors.push(FieldError::new(
                    path,
                    "out_of_range",
                    "is a number beyond the range of a 64-bit float (about 1.8e308), \
                         which cannot be validated; send it as a string",
                ));
                return;
            }
            Err(e) => Err(e),
        },
    };
    match members {
        Ok(members) => {
            for (path, value) in members {
                if serde_json::from_str::<Value>(value.get()).is_err() {
                    unusable(path, value, errors);
                }
            }
        }
        Err(e) => errors.push(FieldError::new(
            path,
            "invalid",
            format!("is not usable JSON: {}", without_position(&e)),
        )),
    }
}

/// Why `data` has no canonical form.
#[derive(Debug)]
enum CanonicalError {
    /// An object names a member twice (at this path below the value given
    /// to `canonical`, e.g. `.items[2].sku`): the schema saw one value and
    /// receivers' parsers would disagree on which counts, so it is refused.
    Duplicate(String),
    Json(serde_json::Error),
}

impl CanonicalError {
    /// The error as seen from the value that holds this one at `segment`.
    fn under(self, segment: impl std::fmt::Display) -> CanonicalError {
        match self {
            CanonicalError::Duplicate(path) => {
                CanonicalError::Duplicate(format!("{segment}{path}"))
            }
            json => json,
        }
    }
}

impl From<serde_json::Error> for CanonicalError {
    fn from(e: serde_json::Error) -> CanonicalError {
        CanonicalError::Json(e)
    }
}

/// The form of `data` that decides whether two publishes with
/// one idempotency key are the same request: object members sorted by key,
/// strings unescaped and written as serde_json writes them, numbers,
/// `true`, `false` and `null` as written, no whitespace. So two bodies that
/// differ only in member order, spacing or string escapes are the same
/// request, and `1.0` and `1.00` are not (receivers would get different
/// digits). A member named twice in one object is an error.
fn canonical(text: &str, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match text.as_bytes().first() {
        Some(b'{') => {
            let mut members = object_members(text)?;
            members.sort_by(|a, b| a.0.cmp(&b.0));
            if let Some(pair) = members.windows(2).find(|pair| pair[0].0 == pair[1].0) {
                return Err(CanonicalError::Duplicate(format!(".{}", pair[0].0)));
            }
            out.push(b'{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                canonical(value.get(), out).map_err(|e| e.under(format_args!(".{key}")))?;
            }
            out.push(b'}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)?;
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item.get(), out).map_err(|e| e.under(format_args!("[{i}]")))?;
            }
            out.push(b']');
        }
        Some(b'"') if text.contains('\\') => {
            let unescaped: String = serde_json::from_str(text)?;
            serde_json::to_writer(&mut *out, &unescaped)?;
        }
        // Strings without escapes are already in serde_json's form; numbers
        // and literals count as written.
        _ => out.extend_from_slice(text.as_bytes()),
    }
    Ok(())
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
    let (mut fields, raw_data) = Fields::parse_keeping_raw(&ctx.body, "data")?;
    let name = fields.required_string("event", 100);
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
    let data = match raw_data.map(parse_data).transpose()? {
        None => {
            errors.push(FieldError::new("data", "required", "is required"));
            None
        }
        Some(Err(unusable)) => {
            errors.extend(unusable);
            None
        }
        Some(Ok(data)) => Some(data),
    };
    // The fingerprint's form of `data` (see `canonical`), which also finds
    // members named twice.
    let mut canonical_data = Vec::new();
    if let (Some(_), Some(raw)) = (&data, raw_data) {
        canonical_data.reserve(raw.get().len());
        match canonical(raw.get(), &mut canonical_data) {
            Ok(()) => {}
            Err(CanonicalError::Duplicate(path)) => errors.push(FieldError::new(
                format!("data{path}"),
                "duplicate",
                "is named twice in its object: only one value would be validated, and \
                 receivers' JSON parsers disagree on which one counts",
            )),
            Err(CanonicalError::Json(e)) => {
                // `raw` parsed above: this cannot fail.
                log::error!("canonical form of parsed event data: {e}");
                return Err(ApiError::internal());
            }
        }
    }
    match (&data, &event_type) {
        (Some(data), Some(t)) => errors.extend(t.validate(data)),
        (Some(data), None) if !data.is_object() => errors.push(FieldError::new(
            "data",
            "type",
            format!(
                "must be an object, got {}",
                crate::validation::type_name(data)
            ),
        )),
        _ => {}
    }
    fields.finish(errors)?;
    let (Some(event_type), Some(raw_data)) = (event_type, raw_data) else {
        return Err(ApiError::internal());
    };

    // The fingerprint of what was asked, to tell a retry from a different
    // request that reuses its idempotency key. Only a keyed event is ever
    // compared, so one without a key stores none (as tester and alert
    // events do) and skips the SHA-256.
    let request_hash = match key {
        Some(_) => {
            let mut hasher = Sha256::new();
            hasher.update(event_type.name.as_bytes());
            hasher.update([0]);
            hasher.update(&canonical_data);
            hasher.update([0]);
            hasher.update(timestamp.as_deref().unwrap_or("").as_bytes());
            hasher.finalize().to_vec()
        }
        None => Vec::new(),
    };

    let event = Event {
        idempotency_key: key,
        request_hash,
        ..envelope::new_event(
            &event_type.name,
            timestamp,
            envelope::Data::Text(raw_data.get()),
            clock::now_ms(),
        )
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
            Ok(summary(202, &stored))
        }
        PublishOutcome::Replayed(original) => Ok(summary(200, &original)),
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
    let mut until = None;
    let mut after = None;
    let data = search::data_conditions(&ctx.query, &mut errors);
    for (key, value) in &ctx.query {
        match key.as_str() {
            "until" => until = validation::time("until", value, &mut errors),
            "after" if Kind::Event.matches(value) => after = Some(value.as_str()),
            "after" => errors.push(FieldError::new(
                "after",
                "invalid",
                "must be an event id (evt_…)",
            )),
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
    if after.is_some() && (!data.is_empty() || until.is_some()) {
        errors.push(FieldError::new(
            "after",
            "conflict",
            "cannot be combined with data.* or until",
        ));
    }
    if after.is_some() && page.cursor.is_some() {
        errors.push(FieldError::new(
            "after",
            "conflict",
            "cannot be combined with cursor: after lists oldest first, a cursor pages newest first",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let from = match after {
        Some(after) => store::EventsFrom::After(after),
        None => store::EventsFrom::Newest(page.cursor.as_deref()),
    };
    let rows = if data.is_empty() && until.is_none() {
        ctx.state
            .reads
            .with(|conn| store::list_events(conn, &filter, since, from, page.limit + 1))?
    } else {
        let narrowing = search::Narrowing {
            data: &data,
            since,
            until,
            event_id: None,
        };
        ctx.state.reads.with(|conn| {
            search::events(
                conn,
                &narrowing,
                &filter,
                page.cursor.as_deref(),
                page.limit + 1,
            )
        })?
    };
    let more = rows.len() > page.limit;
    let rows = &rows[..rows.len().min(page.limit)];
    // Following new events (`after`), the next page is asked for with the
    // last id as `after`: no cursor.
    let next_cursor = if more && after.is_none() {
        rows.last().map(|e| e.id.as_str())
    } else {
        None
    };
    #[derive(Serialize)]
    struct List<'a> {
        data: Vec<Listed<'a>>,
        next_cursor: Option<&'a str>,
    }
    reply(&List {
        data: rows
            .iter()
            .map(|e| listed(e, json!(e.deliveries)))
            .collect(),
        next_cursor,
    })
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
    let holds = &ctx.state.monitor.holds;
    let deliveries = deliveries
        .into_iter()
        .map(|d| delivery_json(&holds.show(d)))
        .collect();
    reply(&listed(&event, deliveries))
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn minified(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        crate::envelope::minify_into(text, &mut out);
        out
    }

    fn canon(text: &str) -> String {
        let mut out = Vec::new();
        canonical(text, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn minified_drops_whitespace_between_tokens_and_keeps_strings_and_numbers() {
        let text = "{ \"a b\" :\t[ 1.50 ,\r\n-0, \"x \\\" y\\\\\" ] ,\"n\" : 1e400 }";
        assert_eq!(
            String::from_utf8(minified(text)).unwrap(),
            r#"{"a b":[1.50,-0,"x \" y\\"],"n":1e400}"#
        );
    }

    #[test]
    fn canonical_sorts_members_unescapes_strings_and_keeps_numbers_as_written() {
        assert_eq!(
            canon(r#"{ "b" : [1.50, {"y":-0,"x":1E2}], "a" : "\u00e9\n" }"#),
            r#"{"a":"é\n","b":[1.50,{"x":1E2,"y":-0}]}"#
        );
        assert_ne!(canon("[1.0]"), canon("[1.00]"));
    }

    #[test]
    fn canonical_names_the_path_of_a_member_named_twice() {
        for (text, path) in [
            (r#"{"a":1,"a":2}"#, ".a"),
            (r#"{"b":[0,{"c":{"x":1,"d":1,"d":"1"}}]}"#, ".b[1].c.d"),
            (r#"[{"k":1},{"k":1,"k":1}]"#, "[1].k"),
        ] {
            match canonical(text, &mut Vec::new()) {
                Err(CanonicalError::Duplicate(found)) => assert_eq!(found, path, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_publish_answer_is_the_summary_as_it_always_was() {
        let event = Event {
            deliveries: 2,
            ..crate::envelope::new_event("item.sold", None, crate::envelope::Data::Text("{}"), 0)
        };
        let reply = summary(202, &event);
        assert_eq!(reply.status, 202);
        let before = json!({"id": event.id, "event": event.event_type, "timestamp": event.timestamp, "deliveries": 2});
        assert_eq!(reply.body, serde_json::to_vec(&before).unwrap());
    }

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(depth(r#"{"a":[[{}]],"s":"[[[[{{"}"#), 4);
        assert_eq!(depth("1"), 0);
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn minifying_serde_jsons_pretty_output_gives_its_compact_output(value in any_json()) {
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            prop_assert_eq!(String::from_utf8(minified(&pretty)).unwrap(), value.to_string());
        }

        #[test]
        fn the_canonical_form_of_serde_json_output_is_its_compact_sorted_output(value in any_json()) {
            // serde_json's Value keeps members sorted and writes numbers
            // and strings in the canonical way already.
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            prop_assert_eq!(canon(&pretty), value.to_string());
        }
    }
}
