//! Content filters on a subscription: deliver to a webhook only the events
//! whose data match, e.g. every `item.sold` of one consignor.
//!
//! A filter is a list of conditions that must all hold, each on a JSON
//! path under `data`:
//!
//! ```json
//! [{"path": "data.consignor_id", "eq": "7d6f1c2e-…"},
//!  {"path": "data.type", "in": ["regular", "super"]},
//!  {"path": "data.title", "prefix": "Vintage"},
//!  {"path": "data.sync_error", "exists": true}]
//! ```
//!
//! `eq` compares with a JSON scalar (numbers by value: `12` equals
//! `12.0`), `in` with any of up to 100, `prefix` a string's start, and
//! `exists` whether the member is there (with any value, `null` too).
//!
//! At registration the paths are checked against the schemas of the event
//! types the webhook subscribes to: a path must be a declared property of
//! at least one of them (a type without a schema, or a level of one that
//! declares no properties, accepts any path), and an operand must fit the
//! declared type and `enum` where the path is declared. A typo is a 422
//! then, not a webhook that silently never gets anything. So a field that
//! passes through publish undeclared (the seed's `item.sold` has no
//! `consignor_id`) cannot be filtered on; a custom event type that declares
//! it can.
//!
//! Evaluated by the writer in the publish transaction, only for the
//! webhooks that have one (`store/writer.rs`, `Subscriptions`). Pure: no I/O.

use serde_json::{Map, Value, json};

use crate::catalog::EventType;
use crate::validation::{FieldError, type_name};

/// At most this many conditions per webhook.
pub const MAX_CONDITIONS: usize = 20;
/// At most this many values in one `in`.
pub const MAX_IN: usize = 100;
/// At most this many members below `data` in a path.
pub const MAX_DEPTH: usize = 8;
/// The longest string operand.
const MAX_TEXT: usize = 1000;

/// A path under `data` (`data.consignor_id`), checked: members of
/// letters, digits, `_` and `-`, at most [`MAX_DEPTH`] of them. Content
/// filters, ordering keys and search (`store/search.rs`) all take one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPath(Vec<String>);

impl DataPath {
    /// `data.consignor_id` → the members below `data`.
    pub fn parse(text: &str) -> Result<DataPath, String> {
        let usage = "must be a path under data such as data.consignor_id: members of letters, digits, _ and -, separated by dots";
        let members: Vec<String> = text
            .strip_prefix("data.")
            .ok_or_else(|| usage.to_owned())?
            .split('.')
            .map(str::to_owned)
            .collect();
        let valid = |m: &String| {
            !m.is_empty()
                && m.len() <= 100
                && m.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !members.iter().all(valid) {
            return Err(usage.to_owned());
        }
        if members.len() > MAX_DEPTH {
            return Err(format!("must be at most {MAX_DEPTH} members below data"));
        }
        Ok(DataPath(members))
    }

    /// The members below `data`.
    pub fn members(&self) -> &[String] {
        &self.0
    }

    /// The value at this path in an event's `data`, if there is one.
    pub fn value_in<'v>(&self, data: &'v Value) -> Option<&'v Value> {
        self.0
            .iter()
            .try_fold(data, |value, member| value.as_object()?.get(member))
    }
}

impl std::fmt::Display for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "data.{}", self.0.join("."))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(Value),
    In(Vec<Value>),
    Prefix(String),
    Exists(bool),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Eq(_) => "eq",
            Op::In(_) => "in",
            Op::Prefix(_) => "prefix",
            Op::Exists(_) => "exists",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    path: DataPath,
    op: Op,
}

/// A webhook's content filter; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContentFilter(Vec<Condition>);

impl ContentFilter {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an event's `data` meets every condition.
    pub fn matches(&self, data: &Value) -> bool {
        self.0.iter().all(|c| {
            let found = c.path.value_in(data);
            match (&c.op, found) {
                (Op::Exists(want), found) => found.is_some() == *want,
                (_, None) => false,
                (Op::Eq(want), Some(value)) => same(value, want),
                (Op::In(any), Some(value)) => any.iter().any(|want| same(value, want)),
                (Op::Prefix(start), Some(Value::String(text))) => text.starts_with(start.as_str()),
                (Op::Prefix(_), Some(_)) => false,
            }
        })
    }

    /// The filter as the API shows it and the database stores it.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|c| {
                    let operand = match &c.op {
                        Op::Eq(v) => v.clone(),
                        Op::In(vs) => Value::Array(vs.clone()),
                        Op::Prefix(p) => Value::String(p.clone()),
                        Op::Exists(e) => Value::Bool(*e),
                    };
                    let mut object = Map::new();
                    object.insert("path".into(), json!(c.path.to_string()));
                    object.insert(c.op.name().into(), operand);
                    Value::Object(object)
                })
                .collect(),
        )
    }

    /// Reads the stored form (written by [`ContentFilter::to_json`]).
    pub fn from_stored(text: &str) -> Option<ContentFilter> {
        let value: Value = serde_json::from_str(text).ok()?;
        let mut errors = Vec::new();
        let filter = ContentFilter::from_json(&value, &[], &mut errors);
        filter.filter(|_| errors.is_empty())
    }

    /// Checks a request's `filter` field, every failing condition at once,
    /// against the schemas of `types` (the event types the webhook
    /// subscribes to; none: the shape alone is checked).
    pub fn from_json(
        value: &Value,
        types: &[std::sync::Arc<EventType>],
        errors: &mut Vec<FieldError>,
    ) -> Option<ContentFilter> {
        let before = errors.len();
        let Value::Array(items) = value else {
            errors.push(FieldError::new(
                "filter",
                "type",
                format!("must be an array of conditions, got {}", type_name(value)),
            ));
            return None;
        };
        if items.len() > MAX_CONDITIONS {
            errors.push(FieldError::new(
                "filter",
                "too_many",
                format!("at most {MAX_CONDITIONS} conditions"),
            ));
        }
        let mut conditions = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let field = format!("filter[{i}]");
            if let Some(c) = condition(&field, item, errors) {
                check_against(&field, &c, types, errors);
                conditions.push(c);
            }
        }
        (errors.len() == before).then_some(ContentFilter(conditions))
    }
}

/// Checks a data path given for `field` (an ordering key): its shape, and
/// that at least one of `types` declares it (as a condition's path must
/// be). The path as given, when it passes.
pub fn check_path(
    field: &str,
    text: &str,
    types: &[std::sync::Arc<EventType>],
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let path = match DataPath::parse(text) {
        Ok(path) => path,
        Err(why) => {
            errors.push(FieldError::new(field, "invalid", why));
            return None;
        }
    };
    let missing = types
        .iter()
        .all(|t| matches!(walk(&t.schema, path.members()), Found::Missing));
    if !types.is_empty() && missing {
        let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
        errors.push(FieldError::new(
            field,
            "unknown_path",
            format!("{text} is not a field of {}", names.join(", ")),
        ));
        return None;
    }
    Some(text.to_owned())
}

/// JSON equality, numbers by value.
fn same(value: &Value, want: &Value) -> bool {
    match (value, want) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => value == want,
    }
}

fn condition(field: &str, item: &Value, errors: &mut Vec<FieldError>) -> Option<Condition> {
    let Value::Object(object) = item else {
        errors.push(FieldError::new(
            field,
            "type",
            format!("must be an object such as {{\"path\": \"data.consignor_id\", \"eq\": \"…\"}}, got {}", type_name(item)),
        ));
        return None;
    };
    let path = match object.get("path") {
        Some(Value::String(text)) => match DataPath::parse(text) {
            Ok(path) => Some(path),
            Err(why) => {
                errors.push(FieldError::new(format!("{field}.path"), "invalid", why));
                None
            }
        },
        Some(other) => {
            errors.push(FieldError::new(
                format!("{field}.path"),
                "type",
                format!("must be a string, got {}", type_name(other)),
            ));
            None
        }
        None => {
            errors.push(FieldError::new(
                format!("{field}.path"),
                "required",
                "is required",
            ));
            None
        }
    };
    let ops: Vec<(&String, &Value)> = object.iter().filter(|(k, _)| *k != "path").collect();
    let op = match ops.as_slice() {
        [(name, operand)] => operation(&format!("{field}.{name}"), name, operand, errors),
        _ => {
            errors.push(FieldError::new(
                field,
                "operator",
                "must have exactly one of eq, in, prefix and exists beside path",
            ));
            None
        }
    };
    Some(Condition {
        path: path?,
        op: op?,
    })
}

fn scalar(field: &str, value: &Value, errors: &mut Vec<FieldError>) -> bool {
    match value {
        Value::Array(_) | Value::Object(_) => {
            errors.push(FieldError::new(
                field,
                "type",
                format!(
                    "must be a string, number, boolean or null, got {}",
                    type_name(value)
                ),
            ));
            false
        }
        Value::String(s) if s.chars().count() > MAX_TEXT => {
            errors.push(FieldError::new(
                field,
                "too_long",
                format!("must be at most {MAX_TEXT} characters"),
            ));
            false
        }
        _ => true,
    }
}

fn operation(field: &str, name: &str, operand: &Value, errors: &mut Vec<FieldError>) -> Option<Op> {
    match name {
        "eq" => scalar(field, operand, errors).then(|| Op::Eq(operand.clone())),
        "in" => match operand {
            Value::Array(values) if !values.is_empty() && values.len() <= MAX_IN => {
                let before = errors.len();
                for (i, v) in values.iter().enumerate() {
                    scalar(&format!("{field}[{i}]"), v, errors);
                }
                (errors.len() == before).then(|| Op::In(values.clone()))
            }
            _ => {
                errors.push(FieldError::new(
                    field,
                    "type",
                    format!(
                        "must be an array of 1 to {MAX_IN} strings, numbers, booleans or nulls"
                    ),
                ));
                None
            }
        },
        "prefix" => match operand {
            Value::String(p) if !p.is_empty() && p.chars().count() <= MAX_TEXT => {
                Some(Op::Prefix(p.clone()))
            }
            _ => {
                errors.push(FieldError::new(
                    field,
                    "type",
                    format!("must be a string of 1 to {MAX_TEXT} characters"),
                ));
                None
            }
        },
        "exists" => match operand {
            Value::Bool(b) => Some(Op::Exists(*b)),
            other => {
                errors.push(FieldError::new(
                    field,
                    "type",
                    format!("must be true or false, got {}", type_name(other)),
                ));
                None
            }
        },
        _ => {
            errors.push(FieldError::new(
                field,
                "operator",
                "is not an operator: use eq, in, prefix or exists",
            ));
            None
        }
    }
}

/// Where a path leads in a schema: `Open` when some level declares no
/// properties (anything may be there), `Missing` when a level declares
/// properties without this member.
enum Found<'a> {
    Declared(&'a Value),
    Open,
    Missing,
}

fn walk<'a>(schema: &'a Value, path: &[String]) -> Found<'a> {
    let mut at = schema;
    for member in path {
        match at.get("properties").and_then(Value::as_object) {
            Some(properties) => match properties.get(member) {
                Some(next) => at = next,
                None => return Found::Missing,
            },
            None => return Found::Open,
        }
    }
    Found::Declared(at)
}

/// Whether `value` fits a schema's `type` (a name or a list of names).
fn fits_type(schema: &Value, value: &Value) -> bool {
    let fits = |name: &str| match name {
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    };
    match schema.get("type") {
        Some(Value::String(name)) => fits(name),
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).any(fits),
        _ => true,
    }
}

fn check_against(
    field: &str,
    c: &Condition,
    types: &[std::sync::Arc<EventType>],
    errors: &mut Vec<FieldError>,
) {
    if types.is_empty() {
        return;
    }
    let mut declared = Vec::new();
    let mut open = false;
    for t in types {
        match walk(&t.schema, c.path.members()) {
            Found::Declared(schema) => declared.push(schema),
            Found::Open => open = true,
            Found::Missing => {}
        }
    }
    let path = c.path.to_string();
    if declared.is_empty() {
        if !open {
            let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
            errors.push(FieldError::new(
                format!("{field}.path"),
                "unknown_path",
                format!("{path} is not a field of {}", names.join(", ")),
            ));
        }
        return;
    }
    let operands: Vec<&Value> = match &c.op {
        Op::Eq(v) => vec![v],
        Op::In(vs) => vs.iter().collect(),
        Op::Prefix(p) => {
            let text = Value::String(p.clone());
            if !declared.iter().any(|s| fits_type(s, &text)) {
                errors.push(FieldError::new(
                    format!("{field}.prefix"),
                    "type",
                    format!("{path} is not a string in the schema"),
                ));
            }
            return;
        }
        Op::Exists(_) => return,
    };
    let operator = c.op.name();
    for (i, operand) in operands.into_iter().enumerate() {
        let at = match &c.op {
            Op::In(_) => format!("{field}.{operator}[{i}]"),
            _ => format!("{field}.{operator}"),
        };
        let fits = declared.iter().any(|s| {
            fits_type(s, operand)
                && s.get("enum")
                    .and_then(Value::as_array)
                    .is_none_or(|allowed| allowed.iter().any(|a| same(a, operand)))
        });
        if !fits {
            errors.push(FieldError::new(
                at,
                "type",
                format!("{operand} can never be the value of {path} (see its schema)"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn filter(value: Value, types: &[&str]) -> Result<ContentFilter, Vec<(String, &'static str)>> {
        let catalog = Catalog::with_builtins();
        let types: Vec<_> = types.iter().map(|t| catalog.get(t).unwrap()).collect();
        let mut errors = Vec::new();
        ContentFilter::from_json(&value, &types, &mut errors)
            .ok_or_else(|| errors.into_iter().map(|e| (e.field, e.code)).collect())
    }

    fn sold(consignor: &str, title: &str) -> Value {
        json!({"item_id": "i", "consignor_id": consignor, "title": title, "sale_price": "12.50",
               "nested": {"n": 3}})
    }

    #[test]
    fn each_operator_matches_as_documented() {
        let cases: &[(Value, Value, bool)] = &[
            (
                json!([{"path": "data.consignor_id", "eq": "c1"}]),
                sold("c1", "Lamp"),
                true,
            ),
            (
                json!([{"path": "data.consignor_id", "eq": "c1"}]),
                sold("c2", "Lamp"),
                false,
            ),
            (
                json!([{"path": "data.consignor_id", "in": ["c2", "c3"]}]),
                sold("c3", "x"),
                true,
            ),
            (
                json!([{"path": "data.title", "prefix": "Vint"}]),
                sold("c", "Vintage lamp"),
                true,
            ),
            (
                json!([{"path": "data.title", "prefix": "Vint"}]),
                sold("c", "vintage"),
                false,
            ),
            (
                json!([{"path": "data.nested.n", "eq": 3.0}]),
                sold("c", "x"),
                true,
            ),
            (
                json!([{"path": "data.missing", "exists": false}]),
                sold("c", "x"),
                true,
            ),
            (
                json!([{"path": "data.title", "exists": true}]),
                sold("c", "x"),
                true,
            ),
            (
                json!([{"path": "data.title", "eq": null}]),
                sold("c", "x"),
                false,
            ),
            (
                json!([{"path": "data.consignor_id", "eq": "c1"}, {"path": "data.title", "prefix": "L"}]),
                sold("c1", "Vase"),
                false,
            ),
            (json!([]), sold("c1", "x"), true),
        ];
        for (spec, data, want) in cases {
            let f = filter(spec.clone(), &[]).unwrap();
            assert_eq!(f.matches(data), *want, "{spec} on {data}");
        }
    }

    #[test]
    fn paths_and_operands_are_checked_against_the_subscribed_schemas() {
        assert!(
            filter(
                json!([{"path": "data.consignor_id", "eq": "x"}]),
                &["item.created"]
            )
            .is_ok()
        );
        assert!(
            filter(
                json!([{"path": "data.type", "in": ["regular", "super"]}]),
                &["event.registered"]
            )
            .is_ok()
        );
        // Extra fields pass through publish, but a filter must name a declared one.
        assert_eq!(
            filter(
                json!([{"path": "data.consigner_id", "eq": "x"}]),
                &["item.sold", "item.created"]
            )
            .unwrap_err(),
            [("filter[0].path".to_owned(), "unknown_path")]
        );
        assert_eq!(
            filter(
                json!([{"path": "data.type", "eq": "premium"}]),
                &["event.registered"]
            )
            .unwrap_err(),
            [("filter[0].eq".to_owned(), "type")]
        );
        assert_eq!(
            filter(
                json!([{"path": "data.fee_paid", "in": [true, "yes"]}]),
                &["event.registered"]
            )
            .unwrap_err(),
            [("filter[0].in[1]".to_owned(), "type")]
        );
        assert_eq!(
            filter(
                json!([{"path": "data.fee_paid", "prefix": "t"}]),
                &["event.registered"]
            )
            .unwrap_err(),
            [("filter[0].prefix".to_owned(), "type")]
        );
        // Declared by one of the types is enough.
        assert!(
            filter(
                json!([{"path": "data.sale_price", "exists": true}]),
                &["item.sold", "item.created"]
            )
            .is_ok()
        );
    }

    #[test]
    fn malformed_conditions_are_all_named() {
        let errors = filter(
            json!([
                {"path": "consignor_id", "eq": "x"},
                {"path": "data.a", "eq": "x", "in": ["y"]},
                {"path": "data.a", "like": "x"},
                {"path": "data.a", "in": []},
                {"path": "data.a", "eq": {"x": 1}},
                {"path": "data.a", "exists": "yes"},
                {"eq": "x"},
                "data.a = x"
            ]),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                ("filter[0].path".to_owned(), "invalid"),
                ("filter[1]".to_owned(), "operator"),
                ("filter[2].like".to_owned(), "operator"),
                ("filter[3].in".to_owned(), "type"),
                ("filter[4].eq".to_owned(), "type"),
                ("filter[5].exists".to_owned(), "type"),
                ("filter[6].path".to_owned(), "required"),
                ("filter[7]".to_owned(), "type"),
            ]
        );
        assert_eq!(
            filter(json!({}), &[]).unwrap_err(),
            [("filter".to_owned(), "type")]
        );
    }

    #[test]
    fn the_stored_form_reads_back() {
        let f = filter(
            json!([{"path": "data.a.b", "in": ["x", 2]}, {"path": "data.c", "exists": false}]),
            &[],
        )
        .unwrap();
        let stored = f.to_json().to_string();
        assert_eq!(ContentFilter::from_stored(&stored), Some(f));
        assert_eq!(
            ContentFilter::from_stored("[]"),
            Some(ContentFilter::default())
        );
    }
}
