//! Standard Webhooks signatures (SPEC section 4), pure.
//!
//! `webhook-signature` is a space-separated list of `v1,<base64 HMAC-SHA256>`
//! over `{webhook-id}.{webhook-timestamp}.{body}`, one entry per active
//! secret. A `whsec_` secret's key is the base64 decoding of what follows
//! the prefix; any other secret's key is its UTF-8 bytes (the seed's
//! `"your-secret-key"`).
//!
//! The public Standard Webhooks libraries (`standardwebhooks`, `svix`, in
//! every language) know only the first kind: they base64-decode every secret
//! string, after stripping an optional `whsec_`. [`signing_secret`] is the
//! form of any secret they decode to its key.
//!
//! A [`SigningKey`] is a secret already keyed into HMAC-SHA256 (its key
//! decoded, the inner and outer pads compressed: two SHA-256 blocks and a
//! base64 decode that every signature would otherwise repeat); signing
//! with it clones that state. The delivery workers keep one per secret
//! ([`KeyCache`]); [`header`] and [`signature`] key afresh, for callers
//! that sign once.
//!
//! SHA-256 itself: sha2 picks its backend at run time (`cpufeatures`):
//! the SHA-NI instructions on x86_64 CPUs that have them, the ARMv8 SHA2
//! instructions on aarch64, the portable code elsewhere. No build flag is
//! needed. Valgrind's CPU hides SHA-NI, so under callgrind the portable
//! code is what runs and what the profile counts.

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

/// The `whsec_` form of `secret` that the Standard Webhooks libraries
/// decode to its key: `whsec_` + standard base64 of the key bytes, which is
/// `secret` itself when that is a `whsec_` secret already.
pub fn signing_secret(secret: &str) -> String {
    let is_whsec = secret
        .strip_prefix("whsec_")
        .is_some_and(|encoded| STANDARD.decode(encoded).is_ok());
    if is_whsec {
        secret.to_owned()
    } else {
        format!("whsec_{}", STANDARD.encode(key(secret)))
    }
}

/// A secret keyed into HMAC-SHA256, ready to sign (module doc).
#[derive(Clone)]
pub struct SigningKey(Hmac<Sha256>);

impl SigningKey {
    pub fn new(secret: &str) -> SigningKey {
        // HMAC takes keys of any length: `new_from_slice` cannot fail for
        // it, and the empty key stands in if it ever did.
        let mac = Hmac::<Sha256>::new_from_slice(&key(secret))
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        SigningKey(mac)
    }

    /// Appends this key's `v1,<base64>` signature of `body` for `msg_id`
    /// at `timestamp` to `out`.
    fn sign_into(&self, out: &mut String, msg_id: &str, timestamp: i64, body: &[u8]) {
        let mut mac = self.0.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        out.push_str("v1,");
        STANDARD.encode_string(mac.finalize().into_bytes(), out);
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keyed state is key material.
        f.write_str("SigningKey(..)")
    }
}

/// One `v1,<base64>` signature of `body` for `msg_id` at `timestamp`.
pub fn signature(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut out = String::with_capacity(ENTRY_LEN);
    SigningKey::new(secret).sign_into(&mut out, msg_id, timestamp, body);
    out
}

/// The length of one `v1,<base64 of 32 bytes>` entry.
const ENTRY_LEN: usize = 3 + 44;

/// The `webhook-signature` header value: one signature per secret.
pub fn header(secrets: &[String], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let keys: Vec<SigningKey> = secrets.iter().map(|s| SigningKey::new(s)).collect();
    header_keyed(keys.iter(), msg_id, timestamp, body)
}

/// [`header`] with keys already made.
pub fn header_keyed<'k>(
    keys: impl ExactSizeIterator<Item = &'k SigningKey>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut out = String::with_capacity(keys.len() * (ENTRY_LEN + 1));
    for (i, key) in keys.enumerate() {
        if i > 0 {
            out.push(' ');
        }
        key.sign_into(&mut out, msg_id, timestamp, body);
    }
    out
}

/// The [`SigningKey`]s of the secrets a worker has signed with, so that each
/// secret is keyed once, not once per attempt. Bounded: past
/// [`KeyCache::MAX`] secrets it starts again empty (rotated secrets leave
/// stale entries behind).
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: std::collections::HashMap<String, SigningKey>,
}

impl KeyCache {
    pub const MAX: usize = 4096;

    /// The `webhook-signature` header value for `secrets`, as [`header`]
    /// makes it.
    pub fn header(
        &mut self,
        secrets: &[String],
        msg_id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> String {
        if self.keys.len() + secrets.len() > Self::MAX {
            self.keys.clear();
        }
        for secret in secrets {
            if !self.keys.contains_key(secret) {
                self.keys.insert(secret.clone(), SigningKey::new(secret));
            }
        }
        let keys = secrets.iter().filter_map(|s| self.keys.get(s));
        let keys: Vec<&SigningKey> = keys.collect();
        header_keyed(keys.into_iter(), msg_id, timestamp, body)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }
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

    #[test]
    fn cached_keys_sign_exactly_as_fresh_ones_and_the_cache_stays_bounded() {
        let mut cache = KeyCache::default();
        let secrets = vec![
            "your-secret-key".to_owned(),
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".to_owned(),
        ];
        for ts in [1, 1649367553, -5] {
            assert_eq!(
                cache.header(&secrets, "evt_1", ts, b"{}"),
                header(&secrets, "evt_1", ts, b"{}")
            );
        }
        assert_eq!(cache.len(), 2);
        // The reference vector, through the cache.
        let one = [secrets[1].clone()];
        assert_eq!(
            cache.header(
                &one,
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        for i in 0..KeyCache::MAX + 10 {
            let s = [format!("secret-{i}")];
            assert_eq!(cache.header(&s, "e", 1, b"x"), header(&s, "e", 1, b"x"));
            assert!(cache.len() <= KeyCache::MAX);
        }
        assert_eq!(header(&[], "e", 1, b"x"), "");
    }

    #[test]
    fn the_seed_secret_signs_as_the_base64_of_its_bytes() {
        // "your-secret-key" in base64, as `base64` on a shell prints it.
        assert_eq!(
            signing_secret("your-secret-key"),
            "whsec_eW91ci1zZWNyZXQta2V5"
        );
        let whsec = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        assert_eq!(signing_secret(whsec), whsec);
    }

    // Property tests: `verify` against what `header` produced, over random
    // secrets (both kinds), ids, timestamps and bodies.
    use proptest::prelude::*;

    /// A `whsec_` secret of random key bytes, or any other string, which
    /// signs with its own UTF-8 bytes (including strings that only look
    /// like `whsec_` secrets).
    fn secret() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 1..64)
                .prop_map(|key| format!("whsec_{}", STANDARD.encode(key))),
            any::<String>(),
            "whsec_[A-Za-z0-9+/=!]{0,12}",
        ]
    }

    /// Message ids as the headers carry them: printable ASCII.
    fn msg_id() -> impl Strategy<Value = String> {
        "[ -~]{1,40}"
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..512)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn verify_finds_each_secret_at_its_own_entry_of_the_header_and_no_other_secret(
            secrets in prop::collection::vec(secret(), 1..4),
            stranger in secret(),
            id in msg_id(),
            timestamp in any::<i64>(),
            body in body(),
        ) {
            let signed = header(&secrets, &id, timestamp, &body);
            prop_assert_eq!(signed.split(' ').count(), secrets.len());
            for (i, s) in secrets.iter().enumerate() {
                // The first entry made by the same key (a repeated secret
                // signs identically).
                let first = secrets
                    .iter()
                    .position(|t| key(t) == key(s))
                    .unwrap_or(i);
                prop_assert_eq!(verify(s, &id, timestamp, &body, &signed), Some(first));
            }
            prop_assume!(secrets.iter().all(|s| key(s) != key(&stranger)));
            prop_assert_eq!(verify(&stranger, &id, timestamp, &body, &signed), None);
        }

        #[test]
        fn verify_rejects_any_single_byte_change_of_the_body(
            secrets in prop::collection::vec(secret(), 1..3),
            id in msg_id(),
            timestamp in any::<i64>(),
            body in prop::collection::vec(any::<u8>(), 1..512),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let signed = header(&secrets, &id, timestamp, &body);
            let mut changed = body.clone();
            let at = at.index(changed.len());
            changed[at] ^= flip;
            for s in &secrets {
                prop_assert_eq!(verify(s, &id, timestamp, &changed, &signed), None);
            }
            // Nor may a byte be added or dropped.
            let mut longer = body.clone();
            longer.push(flip);
            prop_assert_eq!(verify(&secrets[0], &id, timestamp, &longer, &signed), None);
            prop_assert_eq!(verify(&secrets[0], &id, timestamp, &body[1..], &signed), None);
        }

        #[test]
        fn verify_rejects_any_single_byte_change_of_the_id(
            secret in secret(),
            id in msg_id(),
            timestamp in any::<i64>(),
            body in body(),
            at in any::<prop::sample::Index>(),
            to in 0x20u8..0x7f,
        ) {
            let signed = header(std::slice::from_ref(&secret), &id, timestamp, &body);
            let mut changed = id.clone().into_bytes();
            let at = at.index(changed.len());
            prop_assume!(changed[at] != to);
            changed[at] = to;
            let changed = String::from_utf8(changed).unwrap();
            prop_assert_eq!(verify(&secret, &changed, timestamp, &body, &signed), None);
        }

        #[test]
        fn verify_rejects_any_single_digit_change_of_the_timestamp(
            secret in secret(),
            id in msg_id(),
            timestamp in any::<i64>(),
            body in body(),
            at in any::<prop::sample::Index>(),
            to in b'0'..=b'9',
        ) {
            let signed = header(std::slice::from_ref(&secret), &id, timestamp, &body);
            let mut text = timestamp.to_string().into_bytes();
            let digits: Vec<usize> = (0..text.len()).filter(|&i| text[i].is_ascii_digit()).collect();
            let at = digits[at.index(digits.len())];
            prop_assume!(text[at] != to);
            text[at] = to;
            // A digit changed past i64's range is no timestamp at all.
            if let Ok(changed) = String::from_utf8(text).unwrap().parse::<i64>() {
                prop_assert_ne!(changed, timestamp);
                prop_assert_eq!(verify(&secret, &id, changed, &body, &signed), None);
            }
            // Off by one second either way is a different message.
            for near in [timestamp.wrapping_add(1), timestamp.wrapping_sub(1)] {
                prop_assert_eq!(verify(&secret, &id, near, &body, &signed), None);
            }
        }

        #[test]
        fn verify_rejects_any_single_byte_change_of_the_signature(
            secret in secret(),
            id in msg_id(),
            timestamp in any::<i64>(),
            body in body(),
            at in any::<prop::sample::Index>(),
            to in 0u8..0x80,
        ) {
            let signed = header(std::slice::from_ref(&secret), &id, timestamp, &body);
            let mut changed = signed.clone().into_bytes();
            let at = at.index(changed.len());
            prop_assume!(changed[at] != to);
            changed[at] = to;
            let changed = String::from_utf8(changed).unwrap();
            prop_assert_eq!(verify(&secret, &id, timestamp, &body, &changed), None);
            // Cut short by one character it fails too.
            prop_assert_eq!(verify(&secret, &id, timestamp, &body, &signed[..signed.len() - 1]), None);
        }

        #[test]
        fn signing_secret_is_a_whsec_secret_of_the_same_key_and_keeps_whsec_secrets_as_they_are(
            secret in secret(),
        ) {
            let signing = signing_secret(&secret);
            // Decoded as the libraries decode it: strip whsec_, base64.
            let encoded = signing.strip_prefix("whsec_");
            prop_assert!(encoded.is_some(), "{signing}");
            let decoded = STANDARD.decode(encoded.unwrap_or_default());
            prop_assert_eq!(decoded.ok(), Some(key(&secret)));
            if secret.strip_prefix("whsec_").is_some_and(|e| STANDARD.decode(e).is_ok()) {
                prop_assert_eq!(&signing, &secret);
            }
            // It signs exactly as the secret it stands for.
            prop_assert_eq!(signature(&signing, "evt_1", 1, b"{}"), signature(&secret, "evt_1", 1, b"{}"));
        }

        #[test]
        fn verify_never_panics_on_any_header(
            secret in secret(),
            id in any::<String>(),
            timestamp in any::<i64>(),
            body in body(),
            junk in any::<String>(),
        ) {
            let _ = verify(&secret, &id, timestamp, &body, &junk);
        }
    }
}
