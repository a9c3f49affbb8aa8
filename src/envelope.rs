//! The event envelope: the one constructor of a new event, for the API's
//! publish, the webhook tester and hookbox's own `hookbox.alert` events.
//!
//! It gives the event its `evt_` id and its `timestamp` (the one asked for,
//! or now), and writes the exact bytes every receiver gets (SPEC section 4):
//! `{"id","event","timestamp","data"}`, in that order, compact, with `data`
//! inserted as JSON text — never re-serialised from a parsed value when the
//! caller holds text. What is stored as the event's `payload` is these
//! bytes, so a body is byte-identical on every attempt and for every
//! webhook. Idempotency keys and request fingerprints are the publisher's
//! business: the caller sets them on the returned [`Event`].
//!
//! It does no I/O besides reading the clock through `ids`, and knows
//! nothing of HTTP or SQL.

use serde_json::Value;

use crate::clock;
use crate::ids::{self, Kind};
use crate::store::events::Event;

/// An event's `data`, as the caller holds it.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    /// Valid JSON text (as a publisher sent it, or as serde_json wrote a
    /// typed value, members in declaration order): inserted as it is, only
    /// without the whitespace between its tokens.
    Text(&'a str),
    /// A parsed value (a catalog example), written as serde_json writes
    /// it: members sorted by name.
    Value(&'a Value),
}

/// A new event of `event_type` with `data`, made at `now` (Unix ms): a
/// fresh id, `timestamp` or else `now` in RFC 3339, and the payload
/// receivers get. No idempotency key, no request fingerprint, no
/// deliveries yet.
pub fn new_event(event_type: &str, timestamp: Option<String>, data: Data<'_>, now: i64) -> Event {
    let id = ids::new(Kind::Event);
    let timestamp = timestamp.unwrap_or_else(|| clock::rfc3339(now));
    Event {
        payload: body(&id, event_type, &timestamp, data),
        id,
        event_type: event_type.to_owned(),
        timestamp,
        created_at: now,
        idempotency_key: None,
        request_hash: Vec::new(),
        deliveries: 0,
    }
}

/// The bytes a receiver gets for this event: the seed's envelope plus `id`.
pub fn body(id: &str, event_type: &str, timestamp: &str, data: Data<'_>) -> Vec<u8> {
    let data_len = match data {
        Data::Text(text) => text.len(),
        Data::Value(_) => 256,
    };
    let mut out = Vec::with_capacity(data_len + id.len() + event_type.len() + timestamp.len() + 40);
    out.extend_from_slice(b"{\"id\":");
    string(&mut out, id);
    out.extend_from_slice(b",\"event\":");
    string(&mut out, event_type);
    out.extend_from_slice(b",\"timestamp\":");
    string(&mut out, timestamp);
    out.extend_from_slice(b",\"data\":");
    match data {
        Data::Text(text) => minify_into(text, &mut out),
        // Writing a value into a Vec cannot fail: its map keys are strings.
        Data::Value(value) => {
            let _ = serde_json::to_writer(&mut out, value);
        }
    }
    out.push(b'}');
    out
}

/// `text` as a JSON string. Ids, type names and RFC 3339 times need no
/// escape and are copied as they are; anything else goes through
/// serde_json's escaping.
fn string(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// Appends `text` (valid JSON) without the whitespace between its tokens;
/// strings, numbers and member order untouched. Strings are copied whole.
pub fn minify_into(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'"' => {
                let end = string_end(bytes, i);
                out.extend_from_slice(bytes.get(i..end).unwrap_or_default());
                i = end;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// The index just past the string that opens at `start` (a `"`), or the
/// end of `bytes` if it never closes.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One row: the data as given, and the body's exact text.
    #[test]
    fn bodies_are_the_seed_envelope_with_data_inserted_as_given() {
        let sorted = json!({"b": 1, "a": "\u{e9}", "c": [1.5, null]});
        // A typed value's text keeps its declared member order (the
        // `hookbox.alert` data: alert_id, rule, status, webhook_id, title,
        // message, last_error, opened_at, resolved_at, as documented).
        let alert = r#"{"alert_id":"alt_1","rule":"delivery_failures","status":"open","webhook_id":"wh_1","title":"T","message":"M","last_error":null,"opened_at":"2026-11-28T16:00:00Z","resolved_at":null}"#;
        let table: [(&str, &str, Data<'_>, &str); 6] = [
            (
                "item.sold",
                "2025-01-21T22:20:56Z",
                Data::Text(r#"{"n":123456789012345678901234567890,"b":1,"a":"\u00e9"}"#),
                r#"{"id":"evt_1","event":"item.sold","timestamp":"2025-01-21T22:20:56Z","data":{"n":123456789012345678901234567890,"b":1,"a":"\u00e9"}}"#,
            ),
            (
                "item.sold",
                "2025-01-21T22:20:56Z",
                Data::Text("{ \"a b\" :\t[ 1.50 ,\r\n-0, \"x \\\" y\\\\\" ] ,\"n\" : 1e400 }"),
                r#"{"id":"evt_1","event":"item.sold","timestamp":"2025-01-21T22:20:56Z","data":{"a b":[1.50,-0,"x \" y\\"],"n":1e400}}"#,
            ),
            (
                "item.created",
                "2025-01-21T22:20:56Z",
                Data::Value(&sorted),
                r#"{"id":"evt_1","event":"item.created","timestamp":"2025-01-21T22:20:56Z","data":{"a":"é","b":1,"c":[1.5,null]}}"#,
            ),
            (
                "hookbox.alert",
                "2026-11-28T16:00:05Z",
                Data::Text(alert),
                &format!(
                    r#"{{"id":"evt_1","event":"hookbox.alert","timestamp":"2026-11-28T16:00:05Z","data":{alert}}}"#
                ),
            ),
            (
                "odd\"type\\",
                "2025-01-21T22:20:56\"Z",
                Data::Text("{}"),
                r#"{"id":"evt_1","event":"odd\"type\\","timestamp":"2025-01-21T22:20:56\"Z","data":{}}"#,
            ),
            (
                "ctl\u{1}",
                "t",
                Data::Text("[]"),
                r#"{"id":"evt_1","event":"ctl\u0001","timestamp":"t","data":[]}"#,
            ),
        ];
        for (event_type, timestamp, data, expected) in table {
            let bytes = body("evt_1", event_type, timestamp, data);
            assert_eq!(String::from_utf8(bytes).unwrap(), expected, "{data:?}");
        }
    }

    #[test]
    fn a_new_event_has_a_fresh_id_its_timestamp_and_its_body_as_payload() {
        let now = 1_737_498_056_000;
        let given = new_event("item.sold", None, Data::Text(r#"{"x": 1}"#), now);
        assert!(given.id.starts_with("evt_"), "{}", given.id);
        assert_eq!(given.timestamp, "2025-01-21T22:20:56Z");
        assert_eq!(given.created_at, now);
        assert_eq!(given.event_type, "item.sold");
        assert_eq!(
            String::from_utf8(given.payload.clone()).unwrap(),
            format!(
                r#"{{"id":"{}","event":"item.sold","timestamp":"2025-01-21T22:20:56Z","data":{{"x":1}}}}"#,
                given.id
            )
        );
        assert_eq!(given.idempotency_key, None);
        assert!(given.request_hash.is_empty());
        assert_eq!(given.deliveries, 0);

        let asked = new_event(
            "item.sold",
            Some("2020-01-01T00:00:00Z".into()),
            Data::Text("{}"),
            now,
        );
        assert_eq!(asked.timestamp, "2020-01-01T00:00:00Z");
        assert_ne!(asked.id, given.id);
    }

    #[test]
    fn an_alert_body_keeps_the_documented_member_order() {
        let alert = crate::store::monitoring::Alert {
            id: "alt_1".into(),
            rule: "delivery_failures".into(),
            subject: "wh_1".into(),
            open: false,
            opened_at: 1_764_345_600_000,
            resolved_at: Some(1_764_345_660_000),
            title: "Deliveries to \"x\" fail".into(),
            message: "M".into(),
            last_error: None,
        };
        let event = crate::monitor::alerts::event(&alert, 1_764_345_661_000);
        assert_eq!(event.event_type, "hookbox.alert");
        assert_eq!(
            String::from_utf8(event.payload).unwrap(),
            format!(
                concat!(
                    r#"{{"id":"{}","event":"hookbox.alert","timestamp":"2025-11-28T16:01:01Z","data":"#,
                    r#"{{"alert_id":"alt_1","rule":"delivery_failures","status":"resolved","webhook_id":"wh_1","#,
                    r#""title":"Deliveries to \"x\" fail","message":"M","last_error":null,"#,
                    r#""opened_at":"2025-11-28T16:00:00Z","resolved_at":"2025-11-28T16:01:00Z"}}}}"#
                ),
                event.id
            )
        );
        let system = crate::store::monitoring::Alert {
            subject: "system".into(),
            open: true,
            resolved_at: None,
            ..alert
        };
        let body = String::from_utf8(crate::monitor::alerts::event(&system, 0).payload).unwrap();
        assert!(
            body.contains(r#""status":"open","webhook_id":null,"#)
                && body.ends_with(r#""resolved_at":null}}"#),
            "{body}"
        );
    }
}
