//! Reading request bodies and query strings into checked values.
//!
//! [`Fields`] walks a JSON object field by field, collecting every problem
//! (wrong type, out of range, unknown field) instead of stopping at the
//! first, so one 422 names them all. [`Fields::parse_keeping_raw`] keeps
//! one field as the exact JSON text sent (event `data`, delivered as
//! published).

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::validation::{FieldError, type_name};

/// The top-level fields of a JSON object body, taken one at a time.
pub struct Fields {
    map: Map<String, Value>,
    pub errors: Vec<FieldError>,
}

impl Fields {
    /// Parses a body that must be a JSON object.
    pub fn parse(body: &[u8]) -> Result<Fields, ApiError> {
        if body.is_empty() {
            return Err(ApiError::bad_request(
                "empty_body",
                "the request needs a JSON object body",
            ));
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        })?;
        match value {
            Value::Object(map) => Ok(Fields {
                map,
                errors: Vec::new(),
            }),
            other => Err(ApiError::bad_request(
                "malformed_json",
                format!("the body must be a JSON object, not {}", type_name(&other)),
            )),
        }
    }

    /// Parses a body that must be a JSON object, keeping the field `raw` as
    /// the exact text sent (borrowed from `body`, without the whitespace
    /// around it): `None` when absent. The other fields are parsed as
    /// [`Fields::parse`] would. The body is scanned once; only the other
    /// fields (small ones) are parsed a second time, from their own text.
    pub fn parse_keeping_raw<'b>(
        body: &'b [u8],
        raw: &str,
    ) -> Result<(Fields, Option<&'b RawValue>), ApiError> {
        if body.is_empty() {
            return Err(ApiError::bad_request(
                "empty_body",
                "the request needs a JSON object body",
            ));
        }
        let top: TopLevel<'b> = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        })?;
        let members = match top {
            TopLevel::Object(members) => members,
            TopLevel::Other(kind) => {
                return Err(ApiError::bad_request(
                    "malformed_json",
                    format!("the body must be a JSON object, not {kind}"),
                ));
            }
        };
        let mut map = Map::new();
        let mut errors = Vec::new();
        let mut kept = None;
        // A repeated name: the last one counts, as in `Fields::parse`.
        for (name, text) in members {
            if name == raw {
                kept = Some(text);
                continue;
            }
            // Valid JSON that serde_json cannot hold (`1e400`, a lone
            // surrogate escape): that field is wrong, not the body.
            match serde_json::from_str::<Value>(text.get()) {
                Ok(value) => {
                    map.insert(name, value);
                }
                // The scan that found `text` has no depth limit.
                Err(_) if depth(text.get()) > MAX_DEPTH => {
                    return Err(ApiError::bad_request(
                        "malformed_json",
                        format!(
                            "the body is not valid JSON: \"{name}\" nests deeper than {MAX_DEPTH} levels"
                        ),
                    ));
                }
                Err(e) => errors.push(FieldError::new(
                    name,
                    "invalid",
                    format!("is not usable JSON: {}", without_position(&e)),
                )),
            }
        }
        Ok((Fields { map, errors }, kept))
    }

    /// The raw value of a field: `None` when absent, `Some(Null)` when null.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name)
    }

    /// Whether the body has this field at all (null counts as present).
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    fn error(&mut self, field: &str, code: &'static str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, code, message));
    }

    fn wrong_type(&mut self, field: &str, expected: &str, got: &Value) {
        self.error(
            field,
            "type",
            format!("must be {expected}, got {}", type_name(got)),
        );
    }

    /// A string of at most `max` characters; `None` if absent or null (or wrong).
    pub fn string(&mut self, name: &str, max: usize) -> Option<String> {
        match self.take(name)? {
            Value::Null => None,
            Value::String(s) if s.chars().count() > max => {
                self.error(
                    name,
                    "too_long",
                    format!("must be at most {max} characters"),
                );
                None
            }
            Value::String(s) => Some(s),
            other => {
                self.wrong_type(name, "a string", &other);
                None
            }
        }
    }

    /// A required string.
    pub fn required_string(&mut self, name: &str, max: usize) -> Option<String> {
        if self.map.get(name).is_none_or(Value::is_null) {
            self.take(name);
            self.error(name, "required", "is required");
            return None;
        }
        self.string(name, max)
    }

    /// An integer in `range`, or null: `Some(None)` for an explicit null.
    pub fn nullable_int(
        &mut self,
        name: &str,
        range: std::ops::RangeInclusive<u32>,
    ) -> Option<Option<u32>> {
        match self.take(name)? {
            Value::Null => Some(None),
            Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if range.contains(&n) => Some(Some(n)),
                _ => {
                    self.error(
                        name,
                        "out_of_range",
                        format!(
                            "must be a whole number from {} to {}",
                            range.start(),
                            range.end()
                        ),
                    );
                    None
                }
            },
            other => {
                self.wrong_type(name, "a whole number or null", &other);
                None
            }
        }
    }

    /// true or false; `None` if absent or null (or wrong).
    pub fn bool(&mut self, name: &str) -> Option<bool> {
        match self.take(name)? {
            Value::Null => None,
            Value::Bool(b) => Some(b),
            other => {
                self.wrong_type(name, "true or false", &other);
                None
            }
        }
    }

    /// An array of strings, each at most `max_len` characters, at most
    /// `max_items` of them.
    pub fn string_array(
        &mut self,
        name: &str,
        max_items: usize,
        max_len: usize,
    ) -> Option<Vec<String>> {
        let value = self.take(name)?;
        let Value::Array(items) = value else {
            self.wrong_type(name, "an array of strings", &value);
            return None;
        };
        if items.len() > max_items {
            self.error(
                name,
                "too_long",
                format!("must have at most {max_items} entries"),
            );
            return None;
        }
        let errors_before = self.errors.len();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let field = format!("{name}[{i}]");
            match item {
                Value::String(s) if s.chars().count() <= max_len => out.push(s),
                Value::String(_) => self.error(
                    &field,
                    "too_long",
                    format!("must be at most {max_len} characters"),
                ),
                other => self.wrong_type(&field, "a string", &other),
            }
        }
        (self.errors.len() == errors_before).then_some(out)
    }

    /// Ends the walk: any field not taken is unknown. Returns the collected
    /// errors as a 422, if any.
    pub fn finish(mut self, also: Vec<FieldError>) -> Result<(), ApiError> {
        let mut unknown: Vec<String> = self.map.keys().cloned().collect();
        unknown.sort();
        for name in unknown {
            self.error(&name, "unknown_field", "is not a field of this request");
        }
        self.errors.extend(also);
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.errors))
        }
    }
}

/// A serde_json error's message without its line and column, which count
/// from the start of a fragment rather than of the body.
pub fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.split_once(" at line ") {
        Some((message, _)) => message.to_owned(),
        None => text,
    }
}

/// serde_json refuses the 128th level, so this is the deepest it parses.
pub const MAX_DEPTH: usize = 127;

/// How deeply arrays and objects nest in `text` (valid JSON).
pub fn depth(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0);
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            b'"' => i = string_end(bytes, i - 1),
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The index just past the string that opens at `start` (valid JSON).
pub fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut j = start + 1;
    while let Some(&b) = bytes.get(j) {
        match b {
            b'\\' => j += 2,
            b'"' => return j + 1,
            _ => j += 1,
        }
    }
    bytes.len()
}

/// The members of the JSON object `text`, each as the text sent, in the
/// order sent: a repeated name is there twice.
pub fn object_members(text: &str) -> Result<Vec<(String, &RawValue)>, serde_json::Error> {
    match serde_json::from_str::<TopLevel<'_>>(text)? {
        TopLevel::Object(members) => Ok(members),
        TopLevel::Other(kind) => Err(de::Error::custom(format!("expected an object, got {kind}"))),
    }
}

/// A body's top level: an object's members, each as the text sent, or
/// the JSON type of anything else.
enum TopLevel<'b> {
    Object(Vec<(String, &'b RawValue)>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
            members.push(member);
        }
        Ok(TopLevel::Object(members))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevel::Other("array"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(TopLevel::Other("boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(TopLevel::Other("number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(TopLevel::Other("number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(TopLevel::Other("number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(TopLevel::Other("string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(TopLevel::Other("null"))
    }
}

/// The query string's pairs, decoded.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `?limit=` and `?cursor=` of a list request.
pub struct Page {
    pub limit: usize,
    pub cursor: Option<String>,
}

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

impl Page {
    /// Reads `limit` and `cursor`; a cursor must look like an id of `kind`.
    pub fn from_query(
        query: &[(String, String)],
        kind: crate::ids::Kind,
        errors: &mut Vec<FieldError>,
    ) -> Page {
        let mut page = Page {
            limit: DEFAULT_LIMIT,
            cursor: None,
        };
        for (key, value) in query {
            match key.as_str() {
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => page.limit = n,
                    _ => errors.push(FieldError::new(
                        "limit",
                        "out_of_range",
                        format!("must be a whole number from 1 to {MAX_LIMIT}"),
                    )),
                },
                "cursor" if kind.matches(value) => page.cursor = Some(value.clone()),
                "cursor" => errors.push(FieldError::new(
                    "cursor",
                    "invalid",
                    "is not a cursor from this list; pass next_cursor as given",
                )),
                _ => {}
            }
        }
        page
    }

    /// The `{"data": [...], "next_cursor": ...}` body from `limit + 1`
    /// fetched rows, each with its id.
    pub fn body<T>(
        &self,
        mut rows: Vec<T>,
        id: impl Fn(&T) -> &str,
        json: impl Fn(&T) -> Value,
    ) -> Value {
        let more = rows.len() > self.limit;
        rows.truncate(self.limit);
        let next = if more {
            rows.last().map(|r| id(r).to_owned())
        } else {
            None
        };
        serde_json::json!({
            "data": rows.iter().map(json).collect::<Vec<_>>(),
            "next_cursor": next,
        })
    }
}
