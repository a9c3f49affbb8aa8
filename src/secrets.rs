//! Random secrets and API tokens, and how tokens are stored.
//!
//! Everything random comes from the OS CSPRNG through `getrandom`. API tokens
//! are `hbk_` + base64url of 32 random bytes; only their SHA-256 is stored,
//! and stored hashes are compared in constant time. Nothing here logs.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// Fills `buf` from the OS CSPRNG.
///
/// The OS generator failing means the machine cannot make secrets at all;
/// carrying on would hand out predictable tokens, so this aborts the process.
pub fn fill_random(buf: &mut [u8]) {
    if let Err(error) = getrandom::fill(buf) {
        log::error!("the operating system's random number generator failed: {error}");
        std::process::abort();
    }
}

/// A new webhook signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_webhook_secret() -> String {
    let mut key = [0u8; 32];
    fill_random(&mut key);
    format!("whsec_{}", STANDARD.encode(key))
}

/// A new API token. Shown once; only [`token_hash`] of it is kept.
pub fn new_token() -> String {
    let mut key = [0u8; 32];
    fill_random(&mut key);
    format!("hbk_{}", URL_SAFE_NO_PAD.encode(key))
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equality of two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_is_whsec_with_32_bytes() {
        let secret = new_webhook_secret();
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(key.len(), 32);
        assert_ne!(secret, new_webhook_secret());
    }

    #[test]
    fn tokens_differ_and_hash_stably() {
        let a = new_token();
        assert!(a.starts_with("hbk_"));
        assert_ne!(a, new_token());
        assert_eq!(token_hash(&a), token_hash(&a));
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
