//! The one error type of the API and its one JSON shape:
//! `{"error": {"code": "snake_case", "message": "...", "details": [...]}}`.
//!
//! Every failure a handler can meet becomes an [`ApiError`] here, with its
//! status; no other code writes error bodies. Messages never contain a
//! secret or a token.

use serde_json::{Value, json};

use super::Reply;
use crate::store::StoreError;
use crate::validation::FieldError;

#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
    /// Extra headers, such as `Allow` on a 405.
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(400, code, message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            401,
            "unauthorized",
            "a valid API token is required: send 'Authorization: Bearer <token>'",
        )
        .with_header("WWW-Authenticate", "Bearer".into())
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "forbidden", message)
    }

    /// `{what} not found`. A `what` of the form `kind id` names the id only
    /// if it is shaped like one of ours: whatever else a client put in the
    /// path (a token pasted by mistake) is not echoed.
    pub fn not_found(what: &str) -> ApiError {
        let what = match what.split_once(' ') {
            Some((kind, id)) if !crate::ids::is_id(id) => kind,
            _ => what,
        };
        ApiError::new(404, "not_found", format!("{what} not found"))
    }

    pub fn method_not_allowed(allowed: &[&str]) -> ApiError {
        ApiError::new(
            405,
            "method_not_allowed",
            format!("this path allows {}", allowed.join(", ")),
        )
        .with_header("Allow", allowed.join(", "))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(409, code, message)
    }

    pub fn invalid(details: Vec<FieldError>) -> ApiError {
        let message = match details.as_slice() {
            [one] => format!("{} {}", one.field, one.message),
            _ => format!("{} fields are invalid", details.len()),
        };
        ApiError {
            details,
            ..ApiError::new(422, "validation_failed", message)
        }
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            500,
            "internal_error",
            "internal error; the server log has details",
        )
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> ApiError {
        self.headers.push((name, value));
        self
    }

    pub fn to_json(&self) -> Value {
        json!({"error": {
            "code": self.code,
            "message": self.message,
            "details": self.details.iter().map(FieldError::to_json).collect::<Vec<_>>(),
        }})
    }

    pub fn into_reply(self) -> Reply {
        let mut reply = Reply::json(self.status, &self.to_json());
        reply.headers.extend(self.headers);
        reply
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::Unavailable(why) => {
                log::warn!("answering 503: {why}");
                ApiError::new(
                    503,
                    "storage_unavailable",
                    "the database is unavailable; retry shortly",
                )
                .with_header("Retry-After", "1".into())
            }
            StoreError::ReplicaUnconfirmed(why) => {
                log::debug!("answering 503: {why}");
                ApiError::new(
                    503,
                    "replica_unconfirmed",
                    "stored here, but the replica did not confirm it in time \
                     (--ack-after-replica); retry with the same Idempotency-Key",
                )
                .with_header("Retry-After", "1".into())
            }
            other => {
                log::error!("answering 500: {other}");
                ApiError::internal()
            }
        }
    }
}
