//! Bearer-token authentication.
//!
//! The presented token is hashed and looked up by hash; the stored hash is
//! then compared in constant time. A token found is kept in memory and
//! looked up again at most every [`RECHECK_EVERY`]: a read transaction per
//! request cost about 5% of the server's CPU under load, nearly all of it
//! SQLite's shared-memory locks and the WAL frames each new commit made it
//! read again. A token revoked through the API is forgotten at once; `token
//! revoke` on the command line waits out [`RECHECK_EVERY`] twice before it
//! returns, so when it says "revoked" a running server refuses the token. A
//! token created by the CLI is found at its first use (misses are not
//! kept). The last-used time is written at most once a minute per token,
//! without waiting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::ApiError;
use super::State;
use crate::clock;
use crate::secrets;
use crate::store::tokens::{self, Token};

/// How stale a token's recorded last use may get before it is refreshed.
const TOUCH_EVERY_MS: i64 = 60_000;

/// How long a token found in the database is used without looking again.
pub const RECHECK_EVERY: Duration = Duration::from_millis(100);

/// Tokens found by hash, each with when it was read.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], (Token, Instant)>>,
    /// Bumped by [`TokenCache::forget_all`]: a lookup that read the
    /// database before it keeps nothing.
    generation: AtomicU64,
}

impl TokenCache {
    /// A token was revoked: nothing read before is used again.
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.lock().clear();
    }

    /// A poisoned lock leaves a whole map (each change is one call).
    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], (Token, Instant)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fresh(&self, hash: &[u8; 32], now: Instant) -> Option<Token> {
        self.lock()
            .get(hash)
            .filter(|(_, read)| now.duration_since(*read) < RECHECK_EVERY)
            .map(|(token, _)| token.clone())
    }
}

pub fn authenticate(state: &State, authorization: Option<&str>) -> Result<Token, ApiError> {
    let presented = authorization
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or_else(ApiError::unauthorized)?;
    let hash = secrets::token_hash(presented);
    let cache = &state.tokens;
    let token = match cache.fresh(&hash, Instant::now()) {
        Some(token) => token,
        None => {
            let generation = cache.generation.load(Ordering::Acquire);
            let read = Instant::now();
            let found = state
                .reads
                .with(|conn| tokens::find_live_by_hash(conn, &hash))?;
            let token = match found {
                Some((token, stored)) if secrets::constant_time_eq(&stored, &hash) => token,
                _ => {
                    cache.lock().remove(&hash);
                    return Err(ApiError::unauthorized());
                }
            };
            let mut entries = cache.lock();
            if cache.generation.load(Ordering::Acquire) == generation {
                entries.insert(hash, (token.clone(), read));
            }
            token
        }
    };
    let now = clock::now_ms();
    if token
        .last_used_at
        .is_none_or(|at| now - at > TOUCH_EVERY_MS)
    {
        // Recorded in the cached copy too, so that the requests until the
        // next look do not each ask for the same write.
        if let Some((cached, _)) = cache.lock().get_mut(&hash) {
            cached.last_used_at = Some(now);
        }
        state.writer.touch_token(token.id.clone(), now);
    }
    Ok(token)
}
