//! Prefixed, time-ordered, opaque identifiers: `wh_…`, `evt_…`, `dlv_…`, `tok_…`,
//! `aud_…`, `alt_…`.
//!
//! An id is 128 bits — 48 bits of Unix milliseconds then 80 random bits —
//! written as 26 characters of lowercase Crockford base32 after the prefix.
//! The alphabet is in ASCII order, so ids sort as text in creation order,
//! which is what cursor pagination (`WHERE id < ?`) relies on. Within one
//! millisecond the generator increments the previous value instead of drawing
//! new randomness, so ids from one process are strictly increasing.
//!
//! This module must not know about the database; callers store ids as text.

use std::sync::Mutex;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The kinds of object that carry an id, each with its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Webhook,
    Event,
    Delivery,
    Token,
    Audit,
    Alert,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Webhook => "wh_",
            Kind::Event => "evt_",
            Kind::Delivery => "dlv_",
            Kind::Token => "tok_",
            Kind::Audit => "aud_",
            Kind::Alert => "alt_",
        }
    }

    /// Whether `id` has this kind's shape. Used to answer 404 early for ids
    /// that cannot exist, without a database read.
    pub fn matches(self, id: &str) -> bool {
        id.strip_prefix(self.prefix())
            .is_some_and(|rest| rest.len() == 26 && rest.bytes().all(|b| ALPHABET.contains(&b)))
    }
}

/// Whether `text` is shaped like an id of any kind.
pub fn is_id(text: &str) -> bool {
    [
        Kind::Webhook,
        Kind::Event,
        Kind::Delivery,
        Kind::Token,
        Kind::Audit,
        Kind::Alert,
    ]
    .iter()
    .any(|kind| kind.matches(text))
}

/// Random bytes per id: the 80 random bits.
const RANDOM_BYTES: usize = 10;

/// Ids whose random bits one read of the OS generator provides. Ids are
/// not secrets (every token holder sees them), so drawing their bits in
/// blocks changes nothing of what they promise, and saves a `getrandom`
/// system call per id: three per published and delivered event.
const IDS_PER_DRAW: usize = 64;

struct Ids {
    /// The last value handed out, so that ids never go backwards in one
    /// process.
    last: u128,
    random: [u8; RANDOM_BYTES * IDS_PER_DRAW],
    /// How much of `random` has been handed out.
    used: usize,
}

static IDS: Mutex<Ids> = Mutex::new(Ids {
    last: 0,
    random: [0; RANDOM_BYTES * IDS_PER_DRAW],
    used: RANDOM_BYTES * IDS_PER_DRAW,
});

/// A new id of `kind`, greater than every id this process made before.
pub fn new(kind: Kind) -> String {
    let now_ms = crate::clock::now_ms().max(0) as u128;
    let value = {
        let mut ids = IDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let ids = &mut *ids;
        if ids.used == ids.random.len() {
            crate::secrets::fill_random(&mut ids.random);
            ids.used = 0;
        }
        let mut random = [0u8; 16];
        random[16 - RANDOM_BYTES..].copy_from_slice(&ids.random[ids.used..ids.used + RANDOM_BYTES]);
        ids.used += RANDOM_BYTES;
        let candidate = (now_ms << 80) | u128::from_be_bytes(random);
        let value = if candidate > ids.last {
            candidate
        } else {
            ids.last + 1
        };
        ids.last = value;
        value
    };
    encode(kind.prefix(), value)
}

/// The smallest id of `kind` made at `ms` (Unix milliseconds) or later:
/// every id made earlier sorts before it.
pub fn floor(kind: Kind, ms: i64) -> String {
    encode(kind.prefix(), (ms.max(0) as u128) << 80)
}

/// When an id of `kind` was made (Unix milliseconds), if it is one.
pub fn time_ms(kind: Kind, id: &str) -> Option<i64> {
    if !kind.matches(id) {
        return None;
    }
    let value = id[kind.prefix().len()..].bytes().fold(0u128, |acc, b| {
        let digit = ALPHABET.iter().position(|a| *a == b).unwrap_or(0) as u128;
        (acc << 5) | digit
    });
    i64::try_from(value >> 80).ok()
}

fn encode(prefix: &str, value: u128) -> String {
    let mut out = String::with_capacity(prefix.len() + 26);
    out.push_str(prefix);
    // 26 characters of 5 bits hold 130 bits; the first carries the top 3.
    for i in (0..26).rev() {
        let digit = ((value >> (i * 5)) & 0x1f) as usize;
        out.push(ALPHABET[digit] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_strictly_increasing() {
        let mut previous = new(Kind::Event);
        for _ in 0..10_000 {
            let next = new(Kind::Event);
            assert!(next > previous, "{next} <= {previous}");
            assert!(Kind::Event.matches(&next));
            previous = next;
        }
    }

    #[test]
    fn encoding_keeps_numeric_order_as_text_order() {
        let values = [0u128, 1, 31, 32, 1 << 80, u128::MAX >> 2, u128::MAX];
        for pair in values.windows(2) {
            assert!(encode("x_", pair[0]) < encode("x_", pair[1]));
        }
        assert_eq!(encode("", 0), "0".repeat(26));
    }

    #[test]
    fn a_floor_sorts_between_the_ids_before_and_after_its_time() {
        let id = new(Kind::Event);
        let at = time_ms(Kind::Event, &id).unwrap();
        assert!((at - crate::clock::now_ms()).abs() < 1000, "{at}");
        assert!(floor(Kind::Event, at) <= id);
        assert!(floor(Kind::Event, at + 1) > id);
        assert_eq!(time_ms(Kind::Event, &floor(Kind::Event, at)), Some(at));
        assert_eq!(time_ms(Kind::Webhook, &id), None);
    }

    #[test]
    fn shape_check_rejects_foreign_ids() {
        let id = new(Kind::Webhook);
        assert!(Kind::Webhook.matches(&id));
        assert!(!Kind::Event.matches(&id));
        assert!(!Kind::Webhook.matches("wh_123"));
        assert!(!Kind::Webhook.matches("wh_ILOUILOUILOUILOUILOUILOUIL"));
    }
}
