//! `/api/v1/tokens`: list, create and revoke API tokens. A token is shown
//! once, in the answer that creates it; only its SHA-256 hash is stored.

use serde_json::{Value, json};

use super::body::{Fields, Page};
use super::{ApiError, Ctx, Reply};
use crate::admin::check_token_name;
use crate::clock;
use crate::config::{Scope, parse_cidr};
use crate::ids::{self, Kind};
use crate::secrets;
use crate::store::tokens::{self, Token};
use crate::validation::FieldError;

/// The most networks in one token's allowlist.
const MAX_ALLOW: usize = 100;

fn to_json(t: &Token) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "scope": t.scope.as_str(),
        "allow": t.allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "created_at": clock::rfc3339(t.created_at),
        "last_used_at": t.last_used_at.map(clock::rfc3339),
    })
}

pub fn list(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let mut errors = Vec::new();
    let page = Page::from_query(&ctx.query, Kind::Token, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let rows = ctx
        .state
        .reads
        .with(|conn| tokens::list_live_page(conn, page.cursor.as_deref(), page.limit + 1))?;
    Ok(Reply::json(200, &page.body(rows, |t| &t.id, to_json)))
}

/// `POST /api/v1/tokens {"name", "scope", "allow"?}` → 201 with `token`.
pub fn create(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let mut fields = Fields::parse(&ctx.body)?;
    let name = fields.required_string("name", 100);
    let scope = fields.required_string("scope", 20);
    let allow = fields.string_array("allow", MAX_ALLOW, 50);
    let mut errors = Vec::new();
    let name = name.map(|n| n.trim().to_owned());
    if let Some(Err(why)) = name.as_deref().map(check_token_name) {
        errors.push(FieldError::new("name", "invalid", why));
    }
    let scope = scope.and_then(|s| {
        let parsed = Scope::parse(&s);
        if parsed.is_none() {
            errors.push(FieldError::new(
                "scope",
                "enum",
                "must be one of admin, publish, read",
            ));
        }
        parsed
    });
    let mut nets = Vec::new();
    for (i, text) in allow.iter().flatten().enumerate() {
        match parse_cidr(text) {
            Ok(net) => nets.push(net),
            Err(why) => errors.push(FieldError::new(format!("allow[{i}]"), "invalid", why)),
        }
    }
    fields.finish(errors)?;
    let (Some(name), Some(scope)) = (name, scope) else {
        return Err(ApiError::internal());
    };
    let secret = secrets::new_token();
    let token = Token {
        id: ids::new(Kind::Token),
        name,
        scope,
        created_at: clock::now_ms(),
        last_used_at: None,
        revoked_at: None,
        allow: nets,
    };
    if let Some(existing) = ctx.state.writer.create_token(
        token.clone(),
        secrets::token_hash(&secret),
        ctx.actor.clone(),
    )? {
        return Err(ApiError::conflict(
            "already_exists",
            format!(
                "a live token is already named \"{}\" ({existing}); choose another name, \
                 or revoke that token first",
                token.name
            ),
        ));
    }
    let mut body = to_json(&token);
    body["token"] = json!(secret);
    let mut reply = Reply::json(201, &body);
    reply
        .headers
        .push(("Location", format!("/api/v1/tokens/{}", token.id)));
    Ok(reply)
}

pub fn revoke(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    if !Kind::Token.matches(id)
        || !ctx
            .state
            .writer
            .revoke_token(id.to_owned(), ctx.actor.clone())?
    {
        return Err(ApiError::not_found(&format!("token {id}")));
    }
    ctx.state.tokens.forget_all();
    Ok(Reply::empty(204))
}
