//! Field-level validation errors: bad input described as data.
//!
//! Validators collect every failing field instead of stopping at the first,
//! and the API turns the list into the `details` of a 422.

use serde_json::{Value, json};

/// The longest message kept; longer ones (which may quote a huge input) are cut.
const MAX_MESSAGE: usize = 200;

/// One failing field: its path as the client wrote it (`data.price`,
/// `events[2]`), a stable snake_case code, and a readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        FieldError {
            field: field.into(),
            code,
            message,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"field": self.field, "code": self.code, "message": self.message})
    }
}

/// Reads an RFC 3339 time given for `field`, as Unix milliseconds, or
/// records why it is not one.
pub fn time(field: &str, text: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    let parsed = crate::clock::parse_rfc3339(text);
    if parsed.is_none() {
        errors.push(FieldError::new(
            field,
            "format",
            "must be an RFC 3339 time such as 2025-01-21T22:20:56Z",
        ));
    }
    parsed
}

/// The JSON type name of a value, for "must be a string, got null" messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
