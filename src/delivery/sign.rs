//! Standard Webhooks signatures (SPEC section 4), pure.
//!
//! `webhook-signature` is a space-separated list of `v1,<base64 HMAC-SHA256>`
//! over `{webhook-id}.{webhook-timestamp}.{body}`, one entry per active
//! secret. A `whsec_` secret's key is the base64 decoding of what follows
//! the prefix; any other secret's key is its UTF-8 bytes (the seed's
//! `"your-secret-key"`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The HMAC key of a secret.
fn key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// One `v1,<base64>` signature of `body` for `msg_id` at `timestamp`.
pub fn signature(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(&key(secret)) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value: one signature per secret.
pub fn header(secrets: &[String], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| signature(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which entry of a `webhook-signature` header (0-based) is `secret`'s
/// signature of `body`, if any; compared in constant time.
pub fn verify(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> Option<usize> {
    let expected = signature(secret, msg_id, timestamp, body);
    header
        .split_whitespace()
        .position(|entry| crate::secrets::constant_time_eq(entry.as_bytes(), expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        let sig = signature(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn raw_secrets_use_their_bytes_and_each_secret_signs() {
        let body = b"{}";
        let raw = signature("your-secret-key", "evt_1", 1, body);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"your-secret-key").unwrap();
        mac.update(b"evt_1.1.{}");
        assert_eq!(
            raw,
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        );
        let both = header(
            &["your-secret-key".into(), "whsec_AAAA".into()],
            "evt_1",
            1,
            body,
        );
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], raw);
        assert_ne!(parts[1], raw);
    }
}
