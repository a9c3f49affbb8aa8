//! The event catalog: the five seed event types with their JSON Schemas
//! (draft 2020-12) and examples, custom types added through the API, and
//! subscription filters (`*`, `item.*`, exact names).
//!
//! Schemas are compiled once, when a type is added; validating an event is
//! a read lock and a walk of the compiled schema. The catalog knows nothing
//! of storage: `serve` loads custom types into it at start, and the API adds
//! each new one after its commit.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use jsonschema::JsonType;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use serde_json::{Value, json};

use crate::validation::{FieldError, type_name};

/// Prices are decimal strings, never floats: `"12.50"`.
const DECIMAL_PATTERN: &str = r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,4})?$";

/// What a decimal, an RFC 3339 time, a UUID and an email address look like,
/// for the messages of values of the wrong type or form.
const DECIMAL_FORM: &str = "a decimal string such as \"10.00\"";
const DATE_TIME_FORM: &str = "an RFC 3339 date-time such as \"2025-01-21T22:20:56Z\"";
const UUID_FORM: &str = "a UUID such as \"7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f\"";
const EMAIL_FORM: &str = "an email address such as \"name@example.com\"";

/// The form a property schema asks for, when it is one a client is
/// likely to get wrong (a decimal given as a number, a date without `T`).
fn expected_form(schema: &Value) -> Option<&'static str> {
    if schema.get("pattern").and_then(Value::as_str) == Some(DECIMAL_PATTERN) {
        return Some(DECIMAL_FORM);
    }
    match schema.get("format").and_then(Value::as_str)? {
        "date-time" => Some(DATE_TIME_FORM),
        "uuid" => Some(UUID_FORM),
        "email" => Some(EMAIL_FORM),
        _ => None,
    }
}

/// "a string", "an object", "null", ... for a JSON Schema type.
fn a(t: JsonType) -> String {
    let name = t.to_string();
    if t == JsonType::Null {
        return name;
    }
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

/// The most field errors reported for one event.
const MAX_FIELD_ERRORS: usize = 50;

/// The largest custom schema accepted, serialized.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

pub struct EventType {
    pub name: String,
    pub description: String,
    /// The JSON Schema of `data`; `null` for a custom type without one.
    pub schema: Value,
    pub example: Value,
    pub builtin: bool,
    validator: Option<jsonschema::Validator>,
}

impl EventType {
    /// Every problem with `data`, as fields under `data.`.
    pub fn validate(&self, data: &Value) -> Vec<FieldError> {
        if !data.is_object() {
            return vec![FieldError::new(
                "data",
                "type",
                format!("must be an object, got {}", type_name(data)),
            )];
        }
        let Some(validator) = &self.validator else {
            return Vec::new();
        };
        if validator.is_valid(data) {
            return Vec::new();
        }
        validator
            .iter_errors(data)
            .take(MAX_FIELD_ERRORS)
            .map(|error| {
                let mut field = String::from("data");
                for segment in error.instance_path().segments() {
                    match segment {
                        LocationSegment::Property(name) => {
                            field.push('.');
                            field.push_str(&name);
                        }
                        LocationSegment::Index(i) => field.push_str(&format!("[{i}]")),
                    }
                }
                // The schema of the failing value (the keyword's parent),
                // to say what form is expected.
                let expected = error
                    .schema_path()
                    .as_str()
                    .rsplit_once('/')
                    .and_then(|(parent, _)| self.schema.pointer(parent))
                    .and_then(expected_form);
                let got = type_name(error.instance());
                match error.kind() {
                    ValidationErrorKind::Required { property } => {
                        let name = property
                            .as_str()
                            .map_or_else(|| property.to_string(), str::to_owned);
                        FieldError::new(format!("{field}.{name}"), "required", "is required")
                    }
                    ValidationErrorKind::Type { kind } => {
                        let message = match (expected, kind) {
                            (Some(form), TypeKind::Multiple(ts)) if ts.contains(JsonType::Null) => {
                                format!("must be {form} or null, got {got}")
                            }
                            (Some(form), _) => format!("must be {form}, got {got}"),
                            (None, TypeKind::Single(t)) => format!("must be {}, got {got}", a(*t)),
                            (None, TypeKind::Multiple(ts)) => {
                                let names: Vec<String> = ts.into_iter().map(a).collect();
                                format!("must be {}, got {got}", names.join(" or "))
                            }
                        };
                        FieldError::new(field, "type", message)
                    }
                    ValidationErrorKind::Format { format } => {
                        let message = match expected {
                            Some(form) => format!("must be {form}"),
                            None => format!("must be a valid {format}"),
                        };
                        FieldError::new(field, "format", message)
                    }
                    ValidationErrorKind::Enum { options } => {
                        FieldError::new(field, "enum", format!("must be one of {options}"))
                    }
                    ValidationErrorKind::Pattern { pattern } if pattern == DECIMAL_PATTERN => {
                        FieldError::new(field, "decimal", format!("must be {DECIMAL_FORM}"))
                    }
                    _ => FieldError::new(field, "invalid", error.to_string()),
                }
            })
            .collect()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "schema": self.schema,
            "example": self.example,
            "builtin": self.builtin,
        })
    }
}

/// Compiles a type. `schema` null means "any object". Errors name the field
/// of the `POST /api/v1/event-types` body that is wrong; a `None` name (the
/// caller reported it already) is not checked.
pub fn compile(
    name: Option<&str>,
    description: &str,
    schema: Value,
    example: Option<Value>,
    builtin: bool,
) -> Result<EventType, Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Some(Err(why)) = name.filter(|_| !builtin).map(check_type_name) {
        errors.push(FieldError::new("name", "invalid", why));
    }
    let validator = match &schema {
        Value::Null => None,
        Value::Object(_) => {
            match jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&schema)
            {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(FieldError::new(
                        "schema",
                        "invalid",
                        format!("not a usable JSON Schema: {e}"),
                    ));
                    None
                }
            }
        }
        other => {
            errors.push(FieldError::new(
                "schema",
                "type",
                format!("must be a JSON Schema object, got {}", type_name(other)),
            ));
            None
        }
    };
    let mut event_type = EventType {
        name: name.unwrap_or_default().to_owned(),
        description: description.to_owned(),
        schema,
        example: Value::Null,
        builtin,
        validator,
    };
    if let Some(example) = example {
        for e in event_type.validate(&example) {
            let field = e.field.replacen("data", "example", 1);
            errors.push(FieldError::new(field, e.code, e.message));
        }
        event_type.example = example;
    } else {
        event_type.example = json!({});
    }
    if errors.is_empty() {
        Ok(event_type)
    } else {
        Err(errors)
    }
}

/// Type names are dot-separated lowercase words: `item.sold`, `payout.created`.
/// The `hookbox.` namespace is reserved for hookbox's own events.
pub fn check_type_name(name: &str) -> Result<(), String> {
    let word_ok = |w: &str| {
        w.starts_with(|c: char| c.is_ascii_lowercase())
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if name.len() > 100 {
        return Err("must be at most 100 characters".into());
    }
    let words: Vec<&str> = name.split('.').collect();
    if words.len() < 2 || !words.iter().all(|w| word_ok(w)) {
        return Err("must be dot-separated lowercase words, such as \"item.sold\"".into());
    }
    if words[0] == "hookbox" {
        return Err("the hookbox. namespace is reserved".into());
    }
    Ok(())
}

/// A subscription filter of a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    All,
    /// `item.*`, held as `item.`.
    Prefix(String),
    Exact(String),
}

impl Filter {
    pub fn parse(text: &str) -> Filter {
        if text == "*" {
            Filter::All
        } else if let Some(prefix) = text.strip_suffix('*') {
            Filter::Prefix(prefix.to_owned())
        } else {
            Filter::Exact(text.to_owned())
        }
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
            Filter::Exact(name) => name == event_type,
        }
    }
}

/// The event types known to this server.
pub struct Catalog {
    types: RwLock<BTreeMap<String, Arc<EventType>>>,
}

impl Catalog {
    /// The catalog with the five seed types.
    pub fn with_builtins() -> Catalog {
        let catalog = Catalog {
            types: RwLock::new(BTreeMap::new()),
        };
        for (name, description, schema, example) in builtins() {
            match compile(Some(name), description, schema, Some(example), true) {
                Ok(t) => catalog.insert(t),
                // A broken built-in schema is a bug caught by the unit tests.
                Err(errors) => {
                    log::error!("built-in event type {name} does not compile: {errors:?}")
                }
            }
        }
        catalog
    }

    pub fn get(&self, name: &str) -> Option<Arc<EventType>> {
        self.read().get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<EventType>> {
        self.read().values().cloned().collect()
    }

    pub fn insert(&self, t: EventType) {
        let mut types = self
            .types
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        types.insert(t.name.clone(), Arc::new(t));
    }

    /// Whether a webhook may subscribe with `text`: `*`, a known name, or a
    /// `prefix.*` that covers at least one known type.
    pub fn check_filter(&self, text: &str) -> Result<(), String> {
        let types = self.read();
        match Filter::parse(text) {
            Filter::All => Ok(()),
            Filter::Prefix(prefix) => {
                if !prefix.ends_with('.') || prefix.len() < 2 {
                    Err(format!(
                        "\"{text}\" is not a valid wildcard; use \"*\" or a prefix such as \"item.*\""
                    ))
                } else if types.keys().any(|name| name.starts_with(&prefix)) {
                    Ok(())
                } else {
                    Err(format!("\"{text}\" matches no known event type"))
                }
            }
            Filter::Exact(name) => {
                if types.contains_key(&name) {
                    Ok(())
                } else {
                    Err(format!("\"{name}\" is not a known event type"))
                }
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<EventType>>> {
        self.types
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn uuid() -> Value {
    json!({"type": "string", "format": "uuid"})
}

fn decimal() -> Value {
    json!({"type": "string", "pattern": DECIMAL_PATTERN, "description": "a decimal amount as a string, e.g. \"12.50\""})
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
    })
}

/// The seed's event types: name, description, schema of `data`, example `data`.
fn builtins() -> Vec<(&'static str, &'static str, Value, Value)> {
    let mut email_updated = object(
        json!({
            "consignor_id": uuid(),
            "old_email": {"type": "string", "format": "email"},
            "new_email": {"type": "string", "format": "email"},
            "sync_status": {"type": "string", "enum": ["pending", "completed", "failed"]},
            "sync_error": {"type": ["string", "null"], "description": "error message if failed"},
        }),
        &["consignor_id", "old_email", "new_email", "sync_status"],
    );
    // A failed sync says why.
    email_updated["if"] =
        json!({"properties": {"sync_status": {"const": "failed"}}, "required": ["sync_status"]});
    email_updated["then"] = json!({"required": ["sync_error"]});
    vec![
        (
            "email.updated",
            "A consignor's email address was updated.",
            email_updated,
            json!({
                "consignor_id": "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f",
                "old_email": "old@example.com",
                "new_email": "new@example.com",
                "sync_status": "pending",
                "sync_error": null,
            }),
        ),
        (
            "profile.created",
            "A new consignor profile was created.",
            object(
                json!({
                    "consignor_id": uuid(),
                    "email": {"type": "string", "format": "email"},
                    "name": {"type": "string", "minLength": 1},
                }),
                &["consignor_id", "email", "name"],
            ),
            json!({
                "consignor_id": "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f",
                "email": "example@domain.com",
                "name": "John Doe",
            }),
        ),
        (
            "event.registered",
            "A consignor registered for an event (sale).",
            object(
                json!({
                    "event_id": uuid(),
                    "consignor_id": uuid(),
                    "type": {"type": "string", "enum": ["regular", "super"]},
                    "fee_paid": {"type": "boolean"},
                }),
                &["event_id", "consignor_id", "type", "fee_paid"],
            ),
            json!({
                "event_id": "3f2a9b8c-1d4e-4f5a-8b6c-7d8e9f0a1b2c",
                "consignor_id": "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f",
                "type": "regular",
                "fee_paid": true,
            }),
        ),
        (
            "item.created",
            "A new item was created.",
            object(
                json!({
                    "item_id": uuid(),
                    "consignor_id": uuid(),
                    "event_id": uuid(),
                    "title": {"type": "string", "minLength": 1},
                    "price": decimal(),
                }),
                &["item_id", "consignor_id", "event_id", "title", "price"],
            ),
            json!({
                "item_id": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
                "consignor_id": "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f",
                "event_id": "3f2a9b8c-1d4e-4f5a-8b6c-7d8e9f0a1b2c",
                "title": "Girls' winter coat, size 6",
                "price": "12.50",
            }),
        ),
        (
            "item.sold",
            "An item was sold.",
            object(
                json!({
                    "item_id": uuid(),
                    "sale_price": decimal(),
                    "sale_date": {"type": "string", "format": "date-time"},
                }),
                &["item_id", "sale_price", "sale_date"],
            ),
            json!({
                "item_id": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
                "sale_price": "10.00",
                "sale_date": "2025-01-21T22:20:56Z",
            }),
        ),
        (
            "hookbox.alert",
            "hookbox's own: an alert opened or resolved (see GET /api/v1/alerts). Only hookbox publishes it.",
            object(
                json!({
                    "alert_id": {"type": "string"},
                    "rule": {"type": "string"},
                    "status": {"type": "string", "enum": ["open", "resolved"]},
                    "webhook_id": {"type": ["string", "null"]},
                    "title": {"type": "string"},
                    "message": {"type": "string"},
                    "last_error": {"type": ["string", "null"]},
                    "opened_at": {"type": "string", "format": "date-time"},
                    "resolved_at": {"type": ["string", "null"], "format": "date-time"},
                }),
                &[
                    "alert_id",
                    "rule",
                    "status",
                    "title",
                    "message",
                    "opened_at",
                ],
            ),
            json!({
                "alert_id": "alt_01m8hdz3tdq7b67w1af1wjqm9k",
                "rule": "delivery_failures",
                "status": "open",
                "webhook_id": "wh_01m8hdz3tdq7b67w1af1wjqm9k",
                "title": "Deliveries to https://shop.example/hooks (wh_01m8hdz3tdq7b67w1af1wjqm9k) are failing",
                "message": "A delivery failed after all its attempts; last error: http_status 500: database down",
                "last_error": "http_status 500: database down",
                "opened_at": "2026-11-28T16:00:00Z",
                "resolved_at": null,
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_compiles_and_accepts_its_example() {
        let catalog = Catalog::with_builtins();
        let names: Vec<String> = catalog.list().iter().map(|t| t.name.clone()).collect();
        assert_eq!(
            names,
            [
                "email.updated",
                "event.registered",
                "hookbox.alert",
                "item.created",
                "item.sold",
                "profile.created"
            ]
        );
        for t in catalog.list() {
            assert_eq!(t.validate(&t.example), vec![], "{}", t.name);
        }
    }

    #[test]
    fn every_failing_field_is_reported_with_its_path() {
        let catalog = Catalog::with_builtins();
        let t = catalog.get("item.created").unwrap();
        let errors = t.validate(&json!({
            "item_id": "not-a-uuid",
            "consignor_id": 7,
            "title": "Coat",
            "price": "12,50",
        }));
        let fields: Vec<(&str, &str)> = errors.iter().map(|e| (e.field.as_str(), e.code)).collect();
        for expected in [
            ("data.item_id", "format"),
            ("data.consignor_id", "type"),
            ("data.event_id", "required"),
            ("data.price", "decimal"),
        ] {
            assert!(fields.contains(&expected), "{expected:?} not in {fields:?}");
        }
    }

    #[test]
    fn failed_email_sync_requires_its_error() {
        let catalog = Catalog::with_builtins();
        let t = catalog.get("email.updated").unwrap();
        let mut data = t.example.clone();
        data["sync_status"] = json!("failed");
        data.as_object_mut().unwrap().remove("sync_error");
        let errors = t.validate(&data);
        assert_eq!(errors[0].field, "data.sync_error");
    }

    #[test]
    fn filters_match_names_prefixes_and_everything() {
        let table = [
            ("*", "item.sold", true),
            ("item.*", "item.sold", true),
            ("item.*", "items.sold", false),
            ("item.sold", "item.sold", true),
            ("item.sold", "item.created", false),
        ];
        for (filter, name, expected) in table {
            assert_eq!(
                Filter::parse(filter).matches(name),
                expected,
                "{filter} {name}"
            );
        }
        let catalog = Catalog::with_builtins();
        assert!(catalog.check_filter("item.*").is_ok());
        assert!(catalog.check_filter("email.updated").is_ok());
        assert!(catalog.check_filter("nope.*").is_err());
        assert!(catalog.check_filter("item*").is_err());
        assert!(catalog.check_filter("item.gone").is_err());
    }

    #[test]
    fn type_names_are_checked() {
        for ok in ["payout.created", "a.b.c", "x1.y_2"] {
            assert!(check_type_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "item",
            "Item.sold",
            "item..sold",
            ".x",
            "hookbox.alert",
            "item.sold!",
        ] {
            assert!(check_type_name(bad).is_err(), "{bad}");
        }
    }

    // Property tests: publish data as a hostile or careless client sends it.
    use proptest::prelude::*;

    /// Any JSON value, nested a few levels, with keys and strings that
    /// include the built-in schemas' own field names.
    fn any_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            "[a-z_]{0,12}",
            any::<String>(),
            prop::sample::select(vec![
                "item_id",
                "price",
                "sale_price",
                "sale_date",
                "consignor_id",
                "sync_status",
                "sync_error",
                "type",
                "$ref",
            ])
            .prop_map(str::to_owned),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            prop::sample::select(vec![
                "12.50",
                "0",
                "2025-01-21T22:20:56Z",
                "7d6f1c2e-8a4b-4c3d-9e5f-0a1b2c3d4e5f",
                "a@b.c",
                "failed",
                "super",
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    static BUILTINS: std::sync::LazyLock<Catalog> =
        std::sync::LazyLock::new(Catalog::with_builtins);

    /// A built-in type, drawn by name (an `EventType` has no `Debug`).
    fn builtin() -> impl Strategy<Value = String> {
        let names: Vec<String> = BUILTINS.list().iter().map(|t| t.name.clone()).collect();
        prop::sample::select(names)
    }

    fn get(name: &str) -> Arc<EventType> {
        BUILTINS.get(name).unwrap()
    }

    fn required(t: &EventType) -> Vec<String> {
        t.schema["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `value` has one of the JSON types a property schema allows.
    fn has_schema_type(property: &Value, value: &Value) -> bool {
        let allowed: Vec<&str> = match &property["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return true,
        };
        let actual = match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            other => type_name(other),
        };
        allowed.contains(&actual) || (actual == "integer" && allowed.contains(&"number"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn validating_any_json_as_any_builtin_type_never_panics_and_names_only_data_fields(
            name in builtin(),
            data in any_json(),
        ) {
            let t = get(&name);
            for error in t.validate(&data) {
                prop_assert!(
                    error.field == "data" || error.field.starts_with("data.") || error.field.starts_with("data["),
                    "{:?}", error
                );
                prop_assert!(!error.message.is_empty());
            }
            prop_assert!(t.validate(&data).len() <= MAX_FIELD_ERRORS);
        }

        #[test]
        fn compiling_any_json_as_a_custom_schema_never_panics(
            schema in any_json(),
            example in proptest::option::of(any_json()),
            data in any_json(),
        ) {
            if let Ok(t) = compile(Some("custom.type"), "", schema, example, false) {
                let _ = t.validate(&data);
            }
        }

        #[test]
        fn builtin_example_with_random_extra_fields_is_valid(
            name in builtin(),
            extra in prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,15}", any_json(), 1..8),
        ) {
            let t = get(&name);
            let mut data = t.example.clone();
            let Some(object) = data.as_object_mut() else {
                return Err(TestCaseError::fail("example is not an object"));
            };
            for (k, v) in extra {
                if !t.schema["properties"].as_object().is_some_and(|p| p.contains_key(&k)) {
                    object.insert(k, v);
                }
            }
            prop_assert_eq!(t.validate(&data), vec![], "{}", data);
        }

        #[test]
        fn builtin_example_missing_a_required_field_fails_naming_it(
            name in builtin(),
            pick in any::<prop::sample::Index>(),
        ) {
            let t = get(&name);
            let fields = required(&t);
            let name = &fields[pick.index(fields.len())];
            let mut data = t.example.clone();
            if let Some(object) = data.as_object_mut() {
                object.remove(name);
            }
            let errors = t.validate(&data);
            let field = format!("data.{name}");
            prop_assert!(
                errors.iter().any(|e| e.field == field && e.code == "required"),
                "{} not in {:?}", field, errors
            );
        }

        #[test]
        fn builtin_example_with_a_required_field_of_the_wrong_type_fails_naming_it(
            name in builtin(),
            pick in any::<prop::sample::Index>(),
            value in any_json(),
        ) {
            let t = get(&name);
            let fields = required(&t);
            let name = &fields[pick.index(fields.len())];
            let property = &t.schema["properties"][name.as_str()];
            prop_assume!(!has_schema_type(property, &value));
            let mut data = t.example.clone();
            data[name.as_str()] = value;
            let errors = t.validate(&data);
            let field = format!("data.{name}");
            prop_assert!(
                errors.iter().any(|e| e.field == field),
                "{} not in {:?}", field, errors
            );
        }

        #[test]
        fn builtin_example_with_a_required_string_field_spoiled_fails_naming_it(
            name in builtin(),
            pick in any::<prop::sample::Index>(),
            junk in "[ <>,;\\[\\]\"\n\t\u{0}][ -~]{0,3}",
        ) {
            let t = get(&name);
            // Only fields with a format, pattern, enum or minimum length can
            // be spoiled while staying strings.
            let fields: Vec<String> = required(&t)
                .into_iter()
                .filter(|f| {
                    let p = &t.schema["properties"][f.as_str()];
                    p["type"] == "string"
                        && (p.get("format").is_some() || p.get("pattern").is_some() || p.get("enum").is_some())
                })
                .collect();
            prop_assume!(!fields.is_empty());
            let name = &fields[pick.index(fields.len())];
            let mut data = t.example.clone();
            let spoiled = format!("{}{junk}", data[name.as_str()].as_str().unwrap_or_default());
            data[name.as_str()] = Value::String(spoiled);
            let errors = t.validate(&data);
            let field = format!("data.{name}");
            prop_assert!(
                errors.iter().any(|e| e.field == field),
                "{} not in {:?}", field, errors
            );
        }

        #[test]
        fn non_object_data_is_one_error_on_data_itself(
            name in builtin(),
            data in any_json().prop_filter("not an object", |v| !v.is_object()),
        ) {
            let t = get(&name);
            let errors = t.validate(&data);
            prop_assert_eq!(errors.len(), 1);
            prop_assert_eq!(errors[0].field.as_str(), "data");
        }
    }
}
