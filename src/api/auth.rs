//! Bearer-token authentication.
//!
//! The presented token is hashed and looked up by hash; the stored hash is
//! then compared in constant time. Tokens are read from the database on
//! every request, so a token created or revoked by the CLI while `serve`
//! runs takes effect at once. The last-used time is written at most once a
//! minute per token, without waiting.

use super::ApiError;
use super::State;
use crate::clock;
use crate::secrets;
use crate::store::tokens::{self, Token};

/// How stale a token's recorded last use may get before it is refreshed.
const TOUCH_EVERY_MS: i64 = 60_000;

pub fn authenticate(state: &State, authorization: Option<&str>) -> Result<Token, ApiError> {
    let presented = authorization
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or_else(ApiError::unauthorized)?;
    let hash = secrets::token_hash(presented);
    let found = state
        .reads
        .with(|conn| tokens::find_live_by_hash(conn, &hash))?;
    let token = match found {
        Some((token, stored)) if secrets::constant_time_eq(&stored, &hash) => token,
        _ => return Err(ApiError::unauthorized()),
    };
    let now = clock::now_ms();
    if token
        .last_used_at
        .is_none_or(|at| now - at > TOUCH_EVERY_MS)
    {
        state.writer.touch_token(token.id.clone(), now);
    }
    Ok(token)
}
