//! `/api/v1/webhooks`: create, list, get, update and delete subscriptions.

use serde_json::{Value, json};

use super::body::{Fields, Page};
use super::{ApiError, Ctx, Reply};
use crate::clock;
use crate::content_filter::ContentFilter;
use crate::delivery::{sign, target};
use crate::headers::CustomHeaders;
use crate::ids::{self, Kind};
use crate::store::webhooks::{self, DisableReason, Patch, Webhook};
use crate::validation::FieldError;

const MAX_EVENTS: usize = 100;
const MAX_DESCRIPTION: usize = 1000;
const MAX_SECRET: usize = 256;
const MIN_SECRET: usize = 8;
const ATTEMPTS: std::ops::RangeInclusive<u32> = 1..=100;
const RATE: std::ops::RangeInclusive<u32> = 1..=10_000;

/// The webhook as the API shows it; the secret only when asked, and then
/// with its `signing_secret`: the `whsec_` form that the Standard Webhooks
/// libraries decode to the same key (they base64-decode every secret, so a
/// raw one such as `your-secret-key` fails there or, worse, gives them
/// another key). Custom headers by name only: their values are shown
/// nowhere but `GET /api/v1/webhooks/{id}/headers`.
pub fn to_json(w: &Webhook, with_secret: bool) -> Value {
    let mut value = json!({
        "id": w.id,
        "url": w.url,
        "events": w.events,
        "description": w.description,
        "max_attempts": w.max_attempts,
        "rate_limit_per_s": w.rate_limit_per_s,
        "enabled": w.enabled,
        "disabled_reason": w.disabled_reason.as_ref().map(ToString::to_string),
        "created_at": clock::rfc3339(w.created_at),
        "updated_at": clock::rfc3339(w.updated_at),
        "previous_secret_expires_at": previous_secret_expiry(w),
        "header_names": w.headers.names(),
        "filter": w.filter.to_json(),
        "ordering_key": w.ordering_key,
    });
    if with_secret {
        value["secret"] = json!(w.secret);
        value["signing_secret"] = json!(sign::signing_secret(&w.secret));
    }
    value
}

pub(super) fn check_secret(secret: &str) -> Result<(), String> {
    use base64::Engine;
    if let Some(key) = secret.strip_prefix("whsec_") {
        let key = base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_err(|_| "a whsec_ secret must be followed by base64".to_owned())?;
        if !(24..=64).contains(&key.len()) {
            return Err("a whsec_ secret must hold 24 to 64 bytes".into());
        }
        return Ok(());
    }
    if secret.chars().count() < MIN_SECRET {
        return Err(format!("must be at least {MIN_SECRET} characters"));
    }
    if secret.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(())
}

/// The `headers` field, when present and not null: `{"X-Api-Key": "…"}`,
/// or `{}` for none.
pub(super) fn custom_headers(
    fields: &mut Fields,
    errors: &mut Vec<FieldError>,
) -> Option<CustomHeaders> {
    match fields.take("headers")? {
        serde_json::Value::Null => None,
        value => CustomHeaders::from_json(&value, errors),
    }
}

/// The `filter` field, when present and not null, checked against the
/// schemas of the types `events` subscribes to; `[]` for none.
fn content_filter(
    ctx: &Ctx<'_>,
    given: Option<serde_json::Value>,
    events: &[String],
    errors: &mut Vec<FieldError>,
) -> Option<ContentFilter> {
    match given? {
        serde_json::Value::Null => None,
        value => ContentFilter::from_json(&value, &subscribed(ctx, events), errors),
    }
}

/// The `ordering_key` field, when present: `Some(None)` for null (no
/// order), else a data path declared by a subscribed type.
fn ordering_key(
    ctx: &Ctx<'_>,
    given: Option<serde_json::Value>,
    events: &[String],
    errors: &mut Vec<FieldError>,
) -> Option<Option<String>> {
    match given? {
        serde_json::Value::Null => Some(None),
        serde_json::Value::String(text) => {
            let types = subscribed(ctx, events);
            crate::content_filter::check_path("ordering_key", &text, &types, errors).map(Some)
        }
        other => {
            errors.push(FieldError::new(
                "ordering_key",
                "type",
                format!(
                    "must be a data path such as \"data.item_id\", or null, got {}",
                    crate::validation::type_name(&other)
                ),
            ));
            None
        }
    }
}

/// The event types `events` subscribes to.
fn subscribed(ctx: &Ctx<'_>, events: &[String]) -> Vec<std::sync::Arc<crate::catalog::EventType>> {
    let filters: Vec<crate::catalog::Filter> = events
        .iter()
        .map(|e| crate::catalog::Filter::parse(e))
        .collect();
    ctx.state
        .catalog
        .list()
        .into_iter()
        .filter(|t| filters.iter().any(|f| f.matches(&t.name)))
        .collect()
}

/// When the rotated-out secret stops signing, while it still does.
fn previous_secret_expiry(w: &Webhook) -> Option<String> {
    w.previous_secret_until
        .filter(|until| *until > clock::now_ms())
        .map(clock::rfc3339)
}

/// Checks `url` and `events` fields that were present, pushing errors.
pub(super) fn check_target_and_events(
    ctx: &Ctx<'_>,
    url: Option<String>,
    events: Option<&[String]>,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    if let Some(events) = events {
        if events.is_empty() {
            errors.push(FieldError::new(
                "events",
                "required",
                "must name at least one event type, or \"*\"",
            ));
        }
        for (i, name) in events.iter().enumerate() {
            if let Err(why) = ctx.state.catalog.check_filter(name) {
                errors.push(FieldError::new(
                    format!("events[{i}]"),
                    "unknown_event_type",
                    why,
                ));
            }
        }
    }
    let allow = &ctx.state.limits.allow_targets;
    let checked = url.map(|url| {
        target::check_url(&url, allow)
            .and_then(|normalised| target::check_resolved(&normalised, allow).map(|()| normalised))
    });
    match checked {
        Some(Ok(normalised)) => Some(normalised),
        Some(Err(why)) => {
            errors.push(FieldError::new("url", "invalid_url", why));
            None
        }
        None => None,
    }
}

pub fn create(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let mut fields = Fields::parse(&ctx.body)?;
    let url = fields.required_string("url", 4096);
    let events = if fields.has("events") {
        fields.string_array("events", MAX_EVENTS, 200)
    } else {
        fields
            .errors
            .push(FieldError::new("events", "required", "is required"));
        None
    };
    let secret = fields.string("secret", MAX_SECRET);
    let description = fields.string("description", MAX_DESCRIPTION);
    let max_attempts = fields.nullable_int("max_attempts", ATTEMPTS).flatten();
    let rate_limit_per_s = fields.nullable_int("rate_limit_per_s", RATE).flatten();
    let enabled = fields.bool("enabled");
    let mut errors = Vec::new();
    let headers = custom_headers(&mut fields, &mut errors);
    let filter = content_filter(
        ctx,
        fields.take("filter"),
        events.as_deref().unwrap_or_default(),
        &mut errors,
    );
    let ordering_key = ordering_key(
        ctx,
        fields.take("ordering_key"),
        events.as_deref().unwrap_or_default(),
        &mut errors,
    )
    .flatten();
    if let Some(Err(why)) = secret.as_deref().map(check_secret) {
        errors.push(FieldError::new("secret", "invalid", why));
    }
    let url = check_target_and_events(ctx, url, events.as_deref(), &mut errors);
    fields.finish(errors)?;
    let (Some(url), Some(events)) = (url, events) else {
        return Err(ApiError::internal());
    };

    let now = clock::now_ms();
    let enabled = enabled.unwrap_or(true);
    let webhook = Webhook {
        id: ids::new(Kind::Webhook),
        url,
        description: description.unwrap_or_default(),
        secret: secret.unwrap_or_else(crate::secrets::new_webhook_secret),
        events,
        max_attempts,
        rate_limit_per_s,
        enabled,
        disabled_reason: (!enabled).then_some(DisableReason::CreatedDisabled),
        created_at: now,
        updated_at: now,
        previous_secret: None,
        previous_secret_until: None,
        headers: headers.unwrap_or_default(),
        filter: filter.unwrap_or_default(),
        ordering_key,
    };
    ctx.state
        .writer
        .create_webhook(webhook.clone(), ctx.actor.clone())?;
    let mut reply = Reply::json(201, &to_json(&webhook, true));
    reply
        .headers
        .push(("Location", format!("/api/v1/webhooks/{}", webhook.id)));
    Ok(reply)
}

pub fn list(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let mut errors = Vec::new();
    let page = Page::from_query(&ctx.query, Kind::Webhook, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let rows = ctx
        .state
        .reads
        .with(|conn| webhooks::list(conn, page.cursor.as_deref(), page.limit + 1))?;
    Ok(Reply::json(
        200,
        &page.body(rows, |w| &w.id, |w| to_json(w, false)),
    ))
}

fn found(id: &str, webhook: Option<Webhook>) -> Result<Webhook, ApiError> {
    webhook.ok_or_else(|| ApiError::not_found(&format!("webhook {id}")))
}

pub fn get(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    if !Kind::Webhook.matches(id) {
        return Err(ApiError::not_found(&format!("webhook {id}")));
    }
    let webhook = ctx.state.reads.with(|conn| webhooks::get(conn, id))?;
    Ok(Reply::json(200, &to_json(&found(id, webhook)?, false)))
}

pub fn update(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    if !Kind::Webhook.matches(id) {
        return Err(ApiError::not_found(&format!("webhook {id}")));
    }
    let mut fields = Fields::parse(&ctx.body)?;
    let mut errors = Vec::new();
    if fields.take("secret").is_some() {
        errors.push(FieldError::new(
            "secret",
            "read_only",
            "cannot be changed here; use POST /api/v1/webhooks/{id}/rotate-secret",
        ));
    }
    let url = fields.string("url", 4096);
    let events = fields.string_array("events", MAX_EVENTS, 200);
    let headers = custom_headers(&mut fields, &mut errors);
    let given_filter = fields.take("filter").filter(|v| !v.is_null());
    let given_key = fields.take("ordering_key");
    // A new filter or ordering key is checked against the types subscribed
    // after the change; new types, against those the webhook keeps.
    let changes = given_filter.is_some() || given_key.is_some() || events.is_some();
    let (filter, ordering) = if changes {
        let current = ctx.state.reads.with(|conn| webhooks::get(conn, id))?;
        let current = found(id, current)?;
        let subscribed = events.clone().unwrap_or_else(|| current.events.clone());
        let kept_filter = (!current.filter.is_empty()).then(|| current.filter.to_json());
        let filter = match given_filter {
            Some(given) => content_filter(ctx, Some(given), &subscribed, &mut errors),
            None => {
                content_filter(ctx, kept_filter, &subscribed, &mut errors);
                None
            }
        };
        let kept_key = current.ordering_key.map(serde_json::Value::String);
        let ordering = match given_key {
            Some(given) => ordering_key(ctx, Some(given), &subscribed, &mut errors),
            None => {
                ordering_key(ctx, kept_key, &subscribed, &mut errors);
                None
            }
        };
        (filter, ordering)
    } else {
        (None, None)
    };
    let patch = Patch {
        description: fields.string("description", MAX_DESCRIPTION),
        max_attempts: fields.nullable_int("max_attempts", ATTEMPTS),
        rate_limit_per_s: fields.nullable_int("rate_limit_per_s", RATE),
        enabled: fields.bool("enabled"),
        url: check_target_and_events(ctx, url, events.as_deref(), &mut errors),
        events,
        headers,
        filter,
        ordering_key: ordering,
    };
    fields.finish(errors)?;
    let webhook = ctx
        .state
        .writer
        .update_webhook(id.to_owned(), patch, ctx.actor.clone())?;
    Ok(Reply::json(200, &to_json(&found(id, webhook)?, false)))
}

pub fn delete(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    if !Kind::Webhook.matches(id)
        || !ctx
            .state
            .writer
            .delete_webhook(id.to_owned(), ctx.actor.clone())?
    {
        return Err(ApiError::not_found(&format!("webhook {id}")));
    }
    Ok(Reply::empty(204))
}

/// `POST /api/v1/webhooks/{id}/rotate-secret {"secret"?}`: a new secret
/// (given, or generated from the OS's CSPRNG); the old one keeps signing
/// beside it for `--secret-grace`. Answers the webhook with the new secret.
pub fn rotate_secret(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    if !Kind::Webhook.matches(id) {
        return Err(ApiError::not_found(&format!("webhook {id}")));
    }
    let secret = if ctx.body.is_empty() {
        None
    } else {
        let mut fields = Fields::parse(&ctx.body)?;
        let secret = fields.string("secret", MAX_SECRET);
        let mut errors = Vec::new();
        if let Some(Err(why)) = secret.as_deref().map(check_secret) {
            errors.push(FieldError::new("secret", "invalid", why));
        }
        fields.finish(errors)?;
        secret
    };
    if let Some(given) = &secret {
        let current = ctx.state.reads.with(|conn| webhooks::get(conn, id))?;
        if current.is_some_and(|w| w.secret == *given) {
            return Err(ApiError::invalid(vec![FieldError::new(
                "secret",
                "unchanged",
                "is the webhook's current secret; a rotation needs a new one",
            )]));
        }
    }
    let secret = secret.unwrap_or_else(crate::secrets::new_webhook_secret);
    // Whole seconds, so that the time shown (RFC 3339, to the second) is
    // exactly when the old secret stops signing.
    let until = clock::now_ms()
        .saturating_add(ctx.state.limits.secret_grace_ms)
        .saturating_add(999)
        / 1000
        * 1000;
    let webhook =
        ctx.state
            .writer
            .rotate_secret(id.to_owned(), secret, until, ctx.actor.clone())?;
    Ok(Reply::json(200, &to_json(&found(id, webhook)?, true)))
}

/// `GET /api/v1/webhooks/{id}/headers` (admin only): the custom headers
/// with their values, `{"headers": {"X-Api-Key": "…"}}`.
pub fn headers(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    if !Kind::Webhook.matches(id) {
        return Err(ApiError::not_found(&format!("webhook {id}")));
    }
    let webhook = found(id, ctx.state.reads.with(|conn| webhooks::get(conn, id))?)?;
    Ok(Reply::json(
        200,
        &json!({"headers": webhook.headers.to_json()}),
    ))
}

/// `GET /api/v1/webhooks/{id}/secret` (admin only): the current secret,
/// with its `signing_secret` (see [`to_json`]).
pub fn secret(ctx: &Ctx<'_>, id: &str) -> Result<Reply, ApiError> {
    if !Kind::Webhook.matches(id) {
        return Err(ApiError::not_found(&format!("webhook {id}")));
    }
    let webhook = found(id, ctx.state.reads.with(|conn| webhooks::get(conn, id))?)?;
    Ok(Reply::json(
        200,
        &json!({
            "secret": webhook.secret,
            "signing_secret": sign::signing_secret(&webhook.secret),
            "previous_secret_expires_at": previous_secret_expiry(&webhook),
        }),
    ))
}
