//! Paths and methods to endpoints, and which scope each endpoint needs.

use tiny_http::Method;

use super::error::ApiError;
use super::{Ctx, Reply, audit, deliveries, events, monitoring, tester, tokens, webhooks};
use crate::config::Scope;

/// Every endpoint of the API, with its path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    ListWebhooks,
    CreateWebhook,
    GetWebhook(String),
    UpdateWebhook(String),
    DeleteWebhook(String),
    RotateSecret(String),
    GetSecret(String),
    GetHeaders(String),
    TestUrl,
    TestWebhook(String),
    ListEventTypes,
    CreateEventType,
    ListEvents,
    PublishEvent,
    GetEvent(String),
    ReplayWebhook(String),
    ListDeliveries,
    GetDelivery(String),
    RetryDelivery(String),
    ListTokens,
    CreateToken,
    RevokeToken(String),
    AuditLog,
    Stats,
    WebhookStats(String),
    Alerts,
}

impl Endpoint {
    /// `admin` may do everything, `publish` only publish, `read` only GETs.
    pub fn allowed_for(&self, scope: Scope) -> bool {
        match scope {
            Scope::Admin => true,
            Scope::Publish => *self == Endpoint::PublishEvent,
            Scope::Read => matches!(
                self,
                Endpoint::ListWebhooks
                    | Endpoint::GetWebhook(_)
                    | Endpoint::ListEventTypes
                    | Endpoint::ListEvents
                    | Endpoint::GetEvent(_)
                    | Endpoint::ListDeliveries
                    | Endpoint::GetDelivery(_)
                    | Endpoint::ListTokens
                    | Endpoint::AuditLog
                    | Endpoint::Stats
                    | Endpoint::WebhookStats(_)
                    | Endpoint::Alerts
            ),
        }
    }

    pub fn takes_body(&self) -> bool {
        matches!(
            self,
            Endpoint::CreateWebhook
                | Endpoint::UpdateWebhook(_)
                | Endpoint::CreateEventType
                | Endpoint::PublishEvent
                | Endpoint::ReplayWebhook(_)
                | Endpoint::RotateSecret(_)
                | Endpoint::CreateToken
                | Endpoint::TestUrl
                | Endpoint::TestWebhook(_)
        )
    }
}

/// The endpoint for `method path`: 404 for an unknown path, 405 for a known
/// path with the wrong method.
pub fn route(method: &Method, path: &str) -> Result<Endpoint, ApiError> {
    let rest = path
        .strip_prefix("/api/v1/")
        .ok_or_else(|| ApiError::not_found("path"))?;
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    use Method::{Delete, Get, Head, Patch, Post};
    // HEAD is GET without the body, which tiny_http leaves out.
    let method = if *method == Head { &Get } else { method };
    let endpoint = match (segments.as_slice(), method) {
        (["webhooks"], Get) => Endpoint::ListWebhooks,
        (["webhooks"], Post) => Endpoint::CreateWebhook,
        (["webhooks"], _) => return Err(ApiError::method_not_allowed(&["GET", "POST"])),
        (["webhooks", "test"], Post) => Endpoint::TestUrl,
        (["webhooks", "test"], _) => return Err(ApiError::method_not_allowed(&["POST"])),
        (["webhooks", id], Get) => Endpoint::GetWebhook(id.to_string()),
        (["webhooks", id], Patch) => Endpoint::UpdateWebhook(id.to_string()),
        (["webhooks", id], Delete) => Endpoint::DeleteWebhook(id.to_string()),
        (["webhooks", _], _) => {
            return Err(ApiError::method_not_allowed(&["GET", "PATCH", "DELETE"]));
        }
        (["webhooks", id, "replay"], Post) => Endpoint::ReplayWebhook(id.to_string()),
        (["webhooks", _, "replay"], _) => return Err(ApiError::method_not_allowed(&["POST"])),
        (["webhooks", id, "rotate-secret"], Post) => Endpoint::RotateSecret(id.to_string()),
        (["webhooks", _, "rotate-secret"], _) => {
            return Err(ApiError::method_not_allowed(&["POST"]));
        }
        (["webhooks", id, "test"], Post) => Endpoint::TestWebhook(id.to_string()),
        (["webhooks", _, "test"], _) => return Err(ApiError::method_not_allowed(&["POST"])),
        (["webhooks", id, "secret"], Get) => Endpoint::GetSecret(id.to_string()),
        (["webhooks", _, "secret"], _) => return Err(ApiError::method_not_allowed(&["GET"])),
        (["webhooks", id, "headers"], Get) => Endpoint::GetHeaders(id.to_string()),
        (["webhooks", _, "headers"], _) => return Err(ApiError::method_not_allowed(&["GET"])),
        (["tokens"], Get) => Endpoint::ListTokens,
        (["tokens"], Post) => Endpoint::CreateToken,
        (["tokens"], _) => return Err(ApiError::method_not_allowed(&["GET", "POST"])),
        (["tokens", id], Delete) => Endpoint::RevokeToken(id.to_string()),
        (["tokens", _], _) => return Err(ApiError::method_not_allowed(&["DELETE"])),
        (["audit-log"], Get) => Endpoint::AuditLog,
        (["stats"], Get) => Endpoint::Stats,
        (["stats"], _) => return Err(ApiError::method_not_allowed(&["GET"])),
        (["alerts"], Get) => Endpoint::Alerts,
        (["alerts"], _) => return Err(ApiError::method_not_allowed(&["GET"])),
        (["webhooks", id, "stats"], Get) => Endpoint::WebhookStats(id.to_string()),
        (["webhooks", _, "stats"], _) => return Err(ApiError::method_not_allowed(&["GET"])),
        (["audit-log"], _) => return Err(ApiError::method_not_allowed(&["GET"])),
        (["deliveries"], Get) => Endpoint::ListDeliveries,
        (["deliveries"], _) => return Err(ApiError::method_not_allowed(&["GET"])),
        (["deliveries", id], Get) => Endpoint::GetDelivery(id.to_string()),
        (["deliveries", _], _) => return Err(ApiError::method_not_allowed(&["GET"])),
        (["deliveries", id, "retry"], Post) => Endpoint::RetryDelivery(id.to_string()),
        (["deliveries", _, "retry"], _) => return Err(ApiError::method_not_allowed(&["POST"])),
        (["event-types"], Get) => Endpoint::ListEventTypes,
        (["event-types"], Post) => Endpoint::CreateEventType,
        (["event-types"], _) => return Err(ApiError::method_not_allowed(&["GET", "POST"])),
        (["events"], Get) => Endpoint::ListEvents,
        (["events"], Post) => Endpoint::PublishEvent,
        (["events"], _) => return Err(ApiError::method_not_allowed(&["GET", "POST"])),
        (["events", id], Get) => Endpoint::GetEvent(id.to_string()),
        (["events", _], _) => return Err(ApiError::method_not_allowed(&["GET"])),
        _ => return Err(ApiError::not_found("path")),
    };
    Ok(endpoint)
}

pub fn dispatch(ctx: &Ctx<'_>, endpoint: Endpoint) -> Result<Reply, ApiError> {
    match endpoint {
        Endpoint::ListWebhooks => webhooks::list(ctx),
        Endpoint::CreateWebhook => webhooks::create(ctx),
        Endpoint::GetWebhook(id) => webhooks::get(ctx, &id),
        Endpoint::UpdateWebhook(id) => webhooks::update(ctx, &id),
        Endpoint::DeleteWebhook(id) => webhooks::delete(ctx, &id),
        Endpoint::ListEventTypes => events::list_types(ctx),
        Endpoint::CreateEventType => events::create_type(ctx),
        Endpoint::ListEvents => events::list(ctx),
        Endpoint::PublishEvent => events::publish(ctx),
        Endpoint::GetEvent(id) => events::get(ctx, &id),
        Endpoint::ReplayWebhook(id) => deliveries::replay(ctx, &id),
        Endpoint::ListDeliveries => deliveries::list(ctx),
        Endpoint::GetDelivery(id) => deliveries::get(ctx, &id),
        Endpoint::RetryDelivery(id) => deliveries::retry(ctx, &id),
        Endpoint::RotateSecret(id) => webhooks::rotate_secret(ctx, &id),
        Endpoint::GetSecret(id) => webhooks::secret(ctx, &id),
        Endpoint::GetHeaders(id) => webhooks::headers(ctx, &id),
        Endpoint::TestUrl => tester::test_url(ctx),
        Endpoint::TestWebhook(id) => tester::test_webhook(ctx, &id),
        Endpoint::ListTokens => tokens::list(ctx),
        Endpoint::CreateToken => tokens::create(ctx),
        Endpoint::RevokeToken(id) => tokens::revoke(ctx, &id),
        Endpoint::AuditLog => audit::list(ctx),
        Endpoint::Stats => monitoring::stats(ctx),
        Endpoint::WebhookStats(id) => monitoring::webhook_stats(ctx, &id),
        Endpoint::Alerts => monitoring::alerts(ctx),
    }
}

/// The route of a request, for metrics labels: the endpoint's name in
/// snake case (ids left out), or what else the path is.
pub fn class(method: &Method, url: &str) -> String {
    let path = url.split('?').next().unwrap_or_default();
    match path {
        "/healthz" => return "healthz".into(),
        "/metrics" => return "metrics".into(),
        "/" => return "dashboard".into(),
        _ => {}
    }
    match route(method, path) {
        Ok(endpoint) => {
            let name = format!("{endpoint:?}");
            let name = name.split('(').next().unwrap_or_default();
            let mut snake = String::with_capacity(name.len() + 4);
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() {
                    if i > 0 {
                        snake.push('_');
                    }
                    snake.push(c.to_ascii_lowercase());
                } else {
                    snake.push(c);
                }
            }
            snake
        }
        Err(_) => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_paths_and_methods() {
        assert_eq!(
            route(&Method::Get, "/api/v1/webhooks").unwrap(),
            Endpoint::ListWebhooks
        );
        assert_eq!(
            route(&Method::Get, "/api/v1/webhooks/").unwrap(),
            Endpoint::ListWebhooks
        );
        assert_eq!(
            route(&Method::Delete, "/api/v1/webhooks/wh_x").unwrap(),
            Endpoint::DeleteWebhook("wh_x".into())
        );
        assert_eq!(
            route(&Method::Put, "/api/v1/webhooks/wh_x")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(route(&Method::Get, "/api/v1/nope").unwrap_err().status, 404);
        assert_eq!(
            route(&Method::Get, "/api/v1/webhooks/a/b")
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(
            route(&Method::Get, "/api/v2/webhooks").unwrap_err().status,
            404
        );
    }

    #[test]
    fn scopes_limit_endpoints() {
        let all = [
            Endpoint::ListWebhooks,
            Endpoint::CreateWebhook,
            Endpoint::GetWebhook(String::new()),
            Endpoint::UpdateWebhook(String::new()),
            Endpoint::DeleteWebhook(String::new()),
            Endpoint::ListEventTypes,
            Endpoint::CreateEventType,
            Endpoint::ListEvents,
            Endpoint::PublishEvent,
            Endpoint::GetEvent(String::new()),
            Endpoint::ReplayWebhook(String::new()),
            Endpoint::ListDeliveries,
            Endpoint::GetDelivery(String::new()),
            Endpoint::RetryDelivery(String::new()),
            Endpoint::RotateSecret(String::new()),
            Endpoint::GetSecret(String::new()),
            Endpoint::GetHeaders(String::new()),
            Endpoint::TestUrl,
            Endpoint::TestWebhook(String::new()),
            Endpoint::ListTokens,
            Endpoint::CreateToken,
            Endpoint::RevokeToken(String::new()),
            Endpoint::AuditLog,
            Endpoint::Stats,
            Endpoint::WebhookStats(String::new()),
            Endpoint::Alerts,
        ];
        for e in &all {
            assert!(e.allowed_for(Scope::Admin));
            assert_eq!(
                e.allowed_for(Scope::Publish),
                *e == Endpoint::PublishEvent,
                "{e:?}"
            );
            let writes = e.takes_body()
                || matches!(
                    e,
                    Endpoint::DeleteWebhook(_)
                        | Endpoint::RetryDelivery(_)
                        | Endpoint::RevokeToken(_)
                );
            // Reading a webhook's secret or custom headers is for admins only.
            let secret = matches!(e, Endpoint::GetSecret(_) | Endpoint::GetHeaders(_));
            assert_eq!(e.allowed_for(Scope::Read), !writes && !secret, "{e:?}");
        }
    }
}
