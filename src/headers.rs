//! A webhook's custom headers: what the receiver asked to get with every
//! delivery (an `X-Api-Key`, an `Authorization` its gateway checks).
//!
//! Values are credentials, kept as the secret is: stored in the database
//! (they must be sent), shown only to an admin at
//! `GET /api/v1/webhooks/{id}/headers`, and never in a webhook listing, a
//! log line, an error message or the audit log — which name the headers,
//! not their values. [`CustomHeaders`]'s `Debug` shows names alone, so
//! a `{:?}` of a webhook cannot leak one either.
//!
//! Refused names (422): those that would change how the request is framed
//! or routed (hop-by-hop headers, `Host`, `Content-Length`, `Expect`), the
//! body's description (`Content-Type`, `Content-Encoding`: the body is the
//! JSON the signature covers), `User-Agent` (SPEC section 4 promises
//! `hookbox/<version>`) and the `webhook-*` headers hookbox signs with (a
//! receiver must never be able to mistake one of ours).
//!
//! Pure: validation and conversion, no I/O.

use serde_json::{Map, Value};
use ureq::http::header::{HeaderName, HeaderValue};

use crate::validation::FieldError;

/// At most this many headers per webhook.
pub const MAX_HEADERS: usize = 20;
/// The longest header name.
pub const MAX_NAME: usize = 64;
/// The longest header value (an `Authorization` with a JWT fits).
pub const MAX_VALUE: usize = 4096;

/// Names that no webhook may set, lower case.
const REFUSED: &[(&str, &str)] = &[
    ("connection", "a hop-by-hop header"),
    ("keep-alive", "a hop-by-hop header"),
    ("proxy-authenticate", "a hop-by-hop header"),
    ("proxy-authorization", "a hop-by-hop header"),
    ("proxy-connection", "a hop-by-hop header"),
    ("te", "a hop-by-hop header"),
    ("trailer", "a hop-by-hop header"),
    ("transfer-encoding", "a hop-by-hop header"),
    ("upgrade", "a hop-by-hop header"),
    ("host", "set from the webhook's URL"),
    ("content-length", "set from the body"),
    ("expect", "it changes how the body is sent"),
    ("content-type", "the body is always application/json"),
    ("content-encoding", "the body is sent as signed, unencoded"),
    (
        "user-agent",
        "it is always hookbox/<version>, so receivers can tell hookbox's requests",
    ),
];

/// A webhook's custom headers, ordered by name (as a JSON object is read
/// here); names are unique without regard to case.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CustomHeaders(Vec<(String, String)>);

impl std::fmt::Debug for CustomHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl CustomHeaders {
    /// Checks a request's `headers` object, every failing header at once:
    /// `{"X-Api-Key": "…"}`. Messages never quote a value.
    pub fn from_json(value: &Value, errors: &mut Vec<FieldError>) -> Option<CustomHeaders> {
        let Value::Object(members) = value else {
            errors.push(FieldError::new(
                "headers",
                "type",
                format!(
                    "must be an object of header names to values, got {}",
                    crate::validation::type_name(value)
                ),
            ));
            return None;
        };
        let before = errors.len();
        if members.len() > MAX_HEADERS {
            errors.push(FieldError::new(
                "headers",
                "too_many",
                format!("at most {MAX_HEADERS} headers"),
            ));
        }
        let mut headers = Vec::with_capacity(members.len());
        for (name, value) in members {
            let field = format!("headers.{name}");
            if let Err(why) = check_name(name) {
                errors.push(FieldError::new(field, why.0, why.1));
                continue;
            }
            let lower = name.to_ascii_lowercase();
            if headers
                .iter()
                .any(|(seen, _): &(String, String)| seen.eq_ignore_ascii_case(&lower))
            {
                errors.push(FieldError::new(
                    field,
                    "duplicate",
                    "is named twice (header names ignore case)",
                ));
                continue;
            }
            match value {
                Value::String(text) => match check_value(text) {
                    Ok(()) => headers.push((name.clone(), text.clone())),
                    Err(why) => errors.push(FieldError::new(field, "invalid", why)),
                },
                other => errors.push(FieldError::new(
                    field,
                    "type",
                    format!(
                        "must be a string, got {}",
                        crate::validation::type_name(other)
                    ),
                )),
            }
        }
        (errors.len() == before).then_some(CustomHeaders(headers))
    }

    /// The stored form: a JSON array of `[name, value]` pairs.
    pub fn to_stored(&self) -> String {
        Value::Array(
            self.0
                .iter()
                .map(|(n, v)| Value::Array(vec![n.as_str().into(), v.as_str().into()]))
                .collect(),
        )
        .to_string()
    }

    /// Reads the stored form; `None` if it is not one (never written so).
    pub fn from_stored(text: &str) -> Option<CustomHeaders> {
        serde_json::from_str(text).ok().map(CustomHeaders)
    }

    /// The names: what listings and the audit log may show.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Names and values, for the admin's `GET …/headers`.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(n, v)| (n.clone(), Value::String(v.clone())))
                .collect::<Map<_, _>>(),
        )
    }

    /// The headers as ureq sends them. Every stored pair was checked on the
    /// way in; one that no longer converts (a database edited by hand) is
    /// left out rather than fail every delivery.
    pub fn to_request(&self) -> Vec<(HeaderName, HeaderValue)> {
        self.0
            .iter()
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect()
    }
}

/// RFC 9110 `token` characters, the only ones a field name may hold.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn check_name(name: &str) -> Result<(), (&'static str, String)> {
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(is_tchar) {
        return Err((
            "invalid_name",
            format!("is not a header name: 1 to {MAX_NAME} letters, digits and !#$%&'*+-.^_`|~"),
        ));
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("webhook-") {
        return Err((
            "reserved",
            "is reserved: hookbox sends the webhook-* headers itself (Standard Webhooks)".into(),
        ));
    }
    if let Some((_, why)) = REFUSED.iter().find(|(refused, _)| *refused == lower) {
        return Err(("reserved", format!("cannot be set: {why}")));
    }
    Ok(())
}

/// Visible ASCII, spaces and tabs inside; no line breaks, no control
/// characters, no leading or trailing blanks (which HTTP would drop).
fn check_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE {
        return Err(format!("must be at most {MAX_VALUE} characters"));
    }
    if !value
        .chars()
        .all(|c| c == ' ' || c == '\t' || c.is_ascii_graphic())
    {
        return Err(
            "must be visible ASCII characters, spaces and tabs (no line breaks or control characters)"
                .into(),
        );
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err("must not start or end with a space or tab".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value: Value) -> Result<CustomHeaders, Vec<(String, &'static str)>> {
        let mut errors = Vec::new();
        CustomHeaders::from_json(&value, &mut errors)
            .ok_or_else(|| errors.into_iter().map(|e| (e.field, e.code)).collect())
    }

    #[test]
    fn accepts_ordinary_headers() {
        let headers = check(json!({"X-Api-Key": "k3y", "Authorization": "Bearer a.b.c"})).unwrap();
        assert_eq!(headers.names(), ["Authorization", "X-Api-Key"]);
        assert_eq!(headers.to_request().len(), 2);
        assert_eq!(check(json!({})).unwrap(), CustomHeaders::default());
    }

    #[test]
    fn refuses_each_reserved_or_malformed_name() {
        let cases: &[(&str, &str)] = &[
            ("Host", "reserved"),
            ("content-length", "reserved"),
            ("Transfer-Encoding", "reserved"),
            ("Connection", "reserved"),
            ("Keep-Alive", "reserved"),
            ("Upgrade", "reserved"),
            ("TE", "reserved"),
            ("Proxy-Authorization", "reserved"),
            ("Content-Type", "reserved"),
            ("User-Agent", "reserved"),
            ("webhook-signature", "reserved"),
            ("Webhook-Id", "reserved"),
            ("webhook-anything", "reserved"),
            ("", "invalid_name"),
            ("X Api", "invalid_name"),
            ("X:Api", "invalid_name"),
            ("X-Ä", "invalid_name"),
        ];
        for (name, code) in cases {
            let errors = check(json!({ *name: "v" })).unwrap_err();
            assert_eq!(errors, [(format!("headers.{name}"), *code)], "{name}");
        }
        let long = "x".repeat(MAX_NAME + 1);
        assert_eq!(
            check(json!({ long.clone(): "v" })).unwrap_err()[0].1,
            "invalid_name"
        );
    }

    #[test]
    fn refuses_values_that_could_split_or_bend_the_request() {
        for value in [
            "a\r\nX-Injected: 1",
            "a\nb",
            "nul\0",
            "é",
            " lead",
            "trail\t",
        ] {
            let errors = check(json!({"X-Api-Key": value})).unwrap_err();
            assert_eq!(
                errors,
                [("headers.X-Api-Key".to_owned(), "invalid")],
                "{value:?}"
            );
        }
        let errors = check(json!({"X-Api-Key": 12})).unwrap_err();
        assert_eq!(errors, [("headers.X-Api-Key".to_owned(), "type")]);
        let long = "v".repeat(MAX_VALUE + 1);
        assert!(check(json!({"X-Api-Key": long})).is_err());
    }

    #[test]
    fn refuses_a_name_twice_in_any_case_and_too_many() {
        let errors = check(json!({"X-Api-Key": "a", "x-api-key": "b"})).unwrap_err();
        assert_eq!(errors, [("headers.x-api-key".to_owned(), "duplicate")]);
        let many: Map<String, Value> = (0..=MAX_HEADERS)
            .map(|i| (format!("X-H{i}"), json!("v")))
            .collect();
        assert_eq!(
            check(Value::Object(many)).unwrap_err(),
            [("headers".to_owned(), "too_many")]
        );
        assert_eq!(
            check(json!(["X-Api-Key"])).unwrap_err(),
            [("headers".to_owned(), "type")]
        );
    }

    #[test]
    fn messages_and_debug_never_show_a_value() {
        let mut errors = Vec::new();
        CustomHeaders::from_json(
            &json!({"X-Api-Key": "s3cr3t\n", "Host": "s3cr3t"}),
            &mut errors,
        );
        assert!(
            errors.iter().all(|e| !e.message.contains("s3cr3t")),
            "{errors:?}"
        );
        let headers = check(json!({"X-Api-Key": "s3cr3t"})).unwrap();
        assert_eq!(format!("{headers:?}"), r#"["X-Api-Key"]"#);
    }

    #[test]
    fn the_stored_form_reads_back() {
        let headers = check(json!({"B": "2", "A": "1"})).unwrap();
        assert_eq!(headers.to_stored(), r#"[["A","1"],["B","2"]]"#);
        assert_eq!(
            CustomHeaders::from_stored(&headers.to_stored()),
            Some(headers)
        );
        assert_eq!(
            CustomHeaders::from_stored("[]"),
            Some(CustomHeaders::default())
        );
        assert_eq!(CustomHeaders::from_stored("{"), None);
    }
}
