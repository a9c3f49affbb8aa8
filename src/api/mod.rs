//! The HTTP API: tiny_http glue, the request pipeline, and the handlers.
//!
//! tiny_http reads each connection on a thread of its own pool; `serve`
//! has it answer each parsed request on that same thread
//! ([`answer_on_connection_threads`]): the request takes one of
//! `--http-threads` turns ([`Turns`]), runs the pipeline and is answered,
//! and the thread reads the connection's next request. A handler waits for
//! its write's group commit while it holds its turn, so the turns, not
//! CPU, bound how many requests can share one commit.
//!
//! Before any of that, at accept ([`connection_limits`]): a peer that no
//! allowlist could admit is closed at once with a canned 403; one address
//! may hold at most `--max-connections-per-client` connections; a new
//! connection must send its first byte within `--first-byte-timeout`; with
//! all [`MAX_CONNECTIONS`] slots taken, an idle connection of the address
//! holding the most is closed to admit a new one.
//! Those refusals, and failed accepts, are logged rate-limited
//! ([`crate::logging::Limited`]); the summaries are flushed at [`stop`].
//!
//! The pipeline, in order: `/metrics` (its own `--metrics-allow`), the
//! client address (behind `--trust-proxy`), the `--api-allow` allowlist
//! (403, for every path: the API, `/healthz`, the dashboard, the OpenAPI
//! document), repeated `Authorization`, `Content-Type` or
//! `Idempotency-Key` headers (400), authentication (401), the token's own
//! allowlist (403), the token's rate limit (429), routing (404, 405), scope
//! (403), body size and type (413, 415), then the handler. A body tiny_http
//! left unread — from a peer outside `--api-allow` ([`preread_filter`]), or
//! over the [`PREREAD_BUDGET`] (503) — is never read here. Handlers are
//! plain functions from a [`Ctx`] to a [`Reply`] or an [`ApiError`]; a
//! panic in one is caught and answered 500 without killing the thread.
//!
//! This module must not open database connections or spawn threads.

mod audit;
pub mod auth;
mod body;
mod client;
mod deliveries;
mod error;
mod events;
mod monitoring;
mod router;
mod tester;
mod tokens;
mod turns;
mod webhooks;

use std::io::{Cursor, Read};
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tiny_http::{Header, Method, PrereadRefused, Request, Response, Server};

pub use client::RateLimiter;
pub use error::ApiError;
pub use turns::Turns;

use crate::catalog::Catalog;
use crate::config::{Cidr, ServeArgs};
use crate::logging::Limited;
use crate::store::ReadPool;
use crate::store::audit::Actor;
use crate::store::writer::WriterHandle;

/// What every request handler can reach.
///
/// Field order is drop order: the read connections close before the last
/// writer handle goes, so that the writer's connection is the last one and
/// leaves the database file complete on its own.
pub struct State {
    pub reads: ReadPool,
    /// Tokens found lately (`auth`).
    pub tokens: auth::TokenCache,
    pub writer: WriterHandle,
    pub catalog: Catalog,
    pub limits: Limits,
    pub rate: RateLimiter,
    /// The delivery engine's kind of agent (target policy, timeouts, no
    /// redirects), for the tester.
    pub agent: ureq::Agent,
    /// Tester requests running now (each holds an API thread for up to
    /// three delivery timeouts; at most `tester::MAX_RUNNING` at once).
    pub testers: std::sync::atomic::AtomicUsize,
    pub monitor: Arc<crate::monitor::Monitor>,
    pub liveness: Option<crate::delivery::Liveness>,
}

/// Read and write timeout of every API socket: a client silent this long
/// (mid-request or idle between keep-alive requests) is disconnected.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections open at once; each holds a thread of tiny_http's pool and
/// three file descriptors (two over TLS). When all are taken, an idle one
/// makes room for a new one; up to 8 more may be open while evicted ones
/// wind down.
pub const MAX_CONNECTIONS: usize = 1024;

/// Refused connections and failed accepts are logged at most once per this
/// interval per kind, with a count of those left out.
const EDGE_LOG_EVERY: Duration = Duration::from_secs(60);

static NOT_ADMITTED: Limited = Limited::new(
    module_path!(),
    "connections refused at accept from addresses no allowlist admits",
    EDGE_LOG_EVERY,
);
static PEER_FULL: Limited = Limited::new(
    module_path!(),
    "connections refused at accept over --max-connections-per-client",
    EDGE_LOG_EVERY,
);
static SERVER_FULL: Limited = Limited::new(
    module_path!(),
    "connections refused at accept with every connection slot taken",
    EDGE_LOG_EVERY,
);
static EVICTED_IDLE: Limited = Limited::new(
    module_path!(),
    "idle connections closed at accept to admit new ones with every slot taken",
    EDGE_LOG_EVERY,
);
static ACCEPT_FAILED: Limited = Limited::new(module_path!(), "failed accepts", EDGE_LOG_EVERY);
static BUDGET_SPENT: Limited = Limited::new(
    module_path!(),
    "request bodies answered 503 for the spent read-ahead budget",
    EDGE_LOG_EVERY,
);

/// Every rate-limited line of the HTTP edge, for [`flush_edge_logs`].
static EDGE_LOGS: [&Limited; 6] = [
    &NOT_ADMITTED,
    &PEER_FULL,
    &SERVER_FULL,
    &EVICTED_IDLE,
    &ACCEPT_FAILED,
    &BUDGET_SPENT,
];

/// What a peer refused at accept is told (plain HTTP only; over TLS it is
/// closed without a word), written without waiting before the close: the
/// 403 the pipeline would have answered, so that a misconfigured client
/// learns why instead of seeing a reset.
fn refusal() -> Vec<u8> {
    let body = ApiError::new(
        403,
        "ip_not_allowed",
        "this client address may not connect (see --api-allow)",
    )
    .into_reply()
    .body;
    let mut bytes = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// The limits tiny_http applies to every connection, from the command line.
pub fn connection_limits(args: &ServeArgs) -> anyhow::Result<tiny_http::ConnectionLimits> {
    if args.request_timeout.is_zero() {
        anyhow::bail!("--request-timeout must be longer than 0");
    }
    if args.first_byte_timeout.is_zero() {
        anyhow::bail!("--first-byte-timeout must be longer than 0");
    }
    let max_body = usize::try_from(args.max_body_size).unwrap_or(usize::MAX);
    let trust_proxy = args.trust_proxy.clone();
    Ok(tiny_http::ConnectionLimits {
        // Every body the API accepts is read on its connection's thread, so
        // a client stalled mid-body never holds an API thread...
        preread_body_bytes: max_body,
        // ...but only for a peer the API could accept, and only so many
        // bytes at once across all connections (PREREAD_BUDGET).
        preread_allowed: preread_filter(&args.api_allow, &args.trust_proxy),
        preread_budget: Some(preread_budget(max_body)),
        timeout: Some(SOCKET_TIMEOUT),
        // A client sending a byte now and then would hold its connection's
        // thread for ever under `timeout` alone, which bounds each read.
        request_timeout: Some(args.request_timeout),
        // A silent new connection is shed long before that.
        first_byte_timeout: Some(args.first_byte_timeout.min(args.request_timeout)),
        max_connections: MAX_CONNECTIONS,
        admit: admit_filter(&args.api_allow, &args.trust_proxy, &args.metrics_allow),
        refusal: Some(refusal()),
        max_per_peer: args.max_connections_per_client as usize,
        // A reverse proxy brings every client on its own few addresses.
        per_peer_exempt: (!trust_proxy.is_empty()).then(|| {
            Arc::new(move |peer: IpAddr| trust_proxy.iter().any(|n| n.contains(peer)))
                as tiny_http::PeerFilter
        }),
        on_accept_event: Some(Arc::new(log_accept_event)),
    })
}

/// Which peers may connect at all: with `--api-allow` set, those inside it,
/// `--trust-proxy` addresses (their clients are known only per request,
/// from `X-Forwarded-For`) and `--metrics-allow` addresses (which may read
/// `/metrics` and nothing else). `None` when `--api-allow` is empty and
/// everyone may. Like [`client::may_send_body`], a peer is tried as it is
/// and canonicalised.
pub fn admit_filter(
    api_allow: &[Cidr],
    trust_proxy: &[Cidr],
    metrics_allow: &[Cidr],
) -> Option<tiny_http::PeerFilter> {
    if api_allow.is_empty() {
        return None;
    }
    let nets: Vec<Cidr> = [api_allow, trust_proxy, metrics_allow].concat();
    Some(Arc::new(move |peer: IpAddr| client::peer_in(peer, &nets)))
}

/// Logs what tiny_http's accept loop refused, rate-limited per kind: under
/// attack this runs once per connection.
fn log_accept_event(event: &tiny_http::AcceptEvent<'_>) {
    use tiny_http::AcceptEvent;
    match event {
        AcceptEvent::NotAdmitted(peer) => NOT_ADMITTED.log(
            log::Level::Warn,
            format_args!("refused a connection from {peer} at accept: not in --api-allow"),
        ),
        AcceptEvent::PeerFull { peer, limit } => PEER_FULL.log(
            log::Level::Warn,
            format_args!(
                "refused a connection from {peer} at accept: it holds {limit} already \
                 (--max-connections-per-client)"
            ),
        ),
        AcceptEvent::ServerFull { limit } => SERVER_FULL.log(
            log::Level::Warn,
            format_args!("refused a connection at accept: {limit} are open"),
        ),
        AcceptEvent::EvictedIdle { peer, limit } => EVICTED_IDLE.log(
            log::Level::Warn,
            format_args!(
                "closed an idle connection from {} to admit a new one: {limit} are open",
                peer.map_or("a local socket".to_owned(), |p| p.to_string())
            ),
        ),
        AcceptEvent::AcceptFailed(e) => ACCEPT_FAILED.log(
            log::Level::Error,
            format_args!("accepting a connection: {e}"),
        ),
    }
}

/// Writes the summary of every rate-limited edge line left out since it
/// was last written (at stop).
pub fn flush_edge_logs() {
    for limited in EDGE_LOGS {
        limited.flush(log::Level::Warn);
    }
}

/// Bytes of request bodies held in memory at once, across all connections,
/// before the pipeline has looked at them (tiny_http reads each body on its
/// connection's thread, so that a client stalled mid-body holds no API
/// thread). Without a bound, every open connection could hold
/// `--max-body-size`: 1,024 × 256 KiB = 256 MiB, against SPEC's 64 MiB. A
/// body that does not fit is answered 503 unread and its connection closed.
/// (Raised to one `--max-body-size` plus [`PREREAD_RESERVE`] if that is
/// more, so that the largest body allowed can always be taken.)
pub const PREREAD_BUDGET: usize = 32 * 1024 * 1024;

/// The part of [`PREREAD_BUDGET`] only bodies of at most [`SMALL_BODY`]
/// bytes may use, so that ordinary publishes (a kilobyte or two) get
/// through while large bodies have spent the rest: 256 small bodies at once.
pub const PREREAD_RESERVE: usize = 4 * 1024 * 1024;

/// See [`PREREAD_RESERVE`].
pub const SMALL_BODY: usize = 16 * 1024;

/// At a stop, how long the requests being answered get to finish.
const STOP_MAX: Duration = Duration::from_secs(3);

/// Request policy from the command line.
pub struct Limits {
    pub allow_targets: Vec<Cidr>,
    pub api_allow: Vec<Cidr>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trust_proxy: Vec<Cidr>,
    pub max_body_size: u64,
    /// How long a rotated-out webhook secret keeps signing.
    pub secret_grace_ms: i64,
    /// `--delivery-timeout`, which the tester holds receivers to.
    pub delivery_timeout: Duration,
    /// Who may read `/metrics` (empty: anyone).
    pub metrics_allow: Vec<Cidr>,
}

/// The read-ahead budget for bodies of at most `max_body_size` bytes.
pub fn preread_budget(max_body_size: usize) -> tiny_http::PrereadBudget {
    tiny_http::PrereadBudget {
        total: PREREAD_BUDGET.max(max_body_size.saturating_add(PREREAD_RESERVE)),
        reserve: PREREAD_RESERVE,
        small_body: SMALL_BODY,
    }
}

/// Which peers may have a body read ahead ([`client::may_send_body`]);
/// `None` when `--api-allow` is empty and everyone may.
pub fn preread_filter(
    api_allow: &[Cidr],
    trust_proxy: &[Cidr],
) -> Option<tiny_http::PrereadFilter> {
    if api_allow.is_empty() {
        return None;
    }
    let api_allow = api_allow.to_vec();
    let trust_proxy = trust_proxy.to_vec();
    Some(Arc::new(move |peer: IpAddr| {
        client::may_send_body(peer, &api_allow, &trust_proxy)
    }))
}

/// A response before it is written.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            // Serializing a Value cannot fail.
            body: serde_json::to_vec(value).unwrap_or_default(),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: Vec::new(),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    fn into_response(self) -> Response<Cursor<Vec<u8>>> {
        let mut response = Response::from_data(self.body).with_status_code(self.status);
        let headers = [
            ("Content-Type", self.content_type.to_owned()),
            ("Cache-Control", "no-store".to_owned()),
        ];
        for (name, value) in headers.into_iter().chain(self.headers) {
            match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                Ok(header) => response.add_header(header),
                Err(()) => log::warn!("dropping unencodable response header {name}"),
            }
        }
        response
    }
}

/// One request as a handler sees it.
pub struct Ctx<'a> {
    pub state: &'a State,
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The `Idempotency-Key` header, if sent.
    pub idempotency_key: Option<String>,
    /// Who is asking, for the audit log.
    pub actor: Actor,
}

/// From now on every request is answered on its connection's thread, in
/// one of `turns`' turns (requests tiny_http queued before are answered
/// first, on this thread).
pub fn answer_on_connection_threads(server: &Server, state: Arc<State>, turns: Arc<Turns>) {
    server.answer_on_connection_threads(Box::new(move |request| answer(&state, &turns, request)));
}

fn answer(state: &State, turns: &Turns, request: Request) {
    match turns.take() {
        Some(_turn) => handle(state, request),
        None => {
            let reply = ApiError::new(503, "shutting_down", "hookbox is stopping; retry shortly")
                .with_header("Retry-After", "5".into())
                .into_reply();
            let _ = request.respond(reply.into_response());
        }
    }
}

/// At a stop: every request from now on is answered 503 `shutting_down`;
/// the ones being answered get [`STOP_MAX`] to finish.
pub fn stop(turns: &Turns) {
    let unfinished = turns.close(Instant::now() + STOP_MAX);
    if unfinished > 0 {
        log::warn!(
            "{unfinished} requests were still being answered {} s into the stop",
            STOP_MAX.as_secs()
        );
    }
    flush_edge_logs();
}

fn handle(state: &State, mut request: Request) {
    let mut reply = match catch_unwind(AssertUnwindSafe(|| pipeline(state, &mut request))) {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) => {
            match error.code {
                "rate_limited" => state.monitor.metrics.rate_limited.inc(),
                "storage_unavailable" | "internal_error" => {
                    state.monitor.metrics.database_errors.inc()
                }
                _ => 0,
            };
            error.into_reply()
        }
        Err(_) => {
            log::error!(
                "handler panicked on {} {}; answered 500",
                request.method(),
                request.url().split('?').next().unwrap_or_default()
            );
            ApiError::internal().into_reply()
        }
    };
    // A refused body stays unread and its connection is closed after the
    // reply (vendor/tiny_http/PATCHES.md, items 3 and 16): say so.
    let expects_continue = header(&request, "Expect").is_some();
    if reply.status == 413
        || (expects_continue && reply.status >= 400)
        || request.preread_refused().is_some()
    {
        reply.headers.push(("Connection", "close".into()));
    }
    let route = router::class(request.method(), request.url());
    state
        .monitor
        .metrics
        .api_requests
        .get_or_create(&crate::monitor::metrics::RequestLabels {
            route: route.to_owned(),
            status: reply.status.to_string(),
        })
        .inc();
    if let Err(e) = request.respond(reply.into_response()) {
        log::debug!("writing a response: {e}");
    }
}

fn header<'r>(request: &'r Request, name: &'static str) -> Option<&'r str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

fn pipeline(state: &State, request: &mut Request) -> Result<Reply, ApiError> {
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = request.method().clone();

    // The client: the peer, or behind a `--trust-proxy` address the one
    // `X-Forwarded-For` names.
    let forwarded: Vec<&str> = request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("X-Forwarded-For"))
        .map(|h| h.value.as_str())
        .collect();
    let client = client::client_ip(
        request.remote_addr().map(|a| a.ip().to_canonical()),
        &forwarded,
        &state.limits.trust_proxy,
    );
    let allowed = |nets: &[Cidr]| {
        nets.is_empty() || client.is_some_and(|ip: IpAddr| nets.iter().any(|n| n.contains(ip)))
    };

    // `--metrics-allow` alone governs /metrics; `--api-allow` everything
    // else: the API, /healthz, the dashboard and the OpenAPI document alike.
    match (path, &method) {
        ("/metrics", Method::Get | Method::Head) => {
            if !allowed(&state.limits.metrics_allow) {
                return Err(ApiError::new(
                    403,
                    "ip_not_allowed",
                    "this client address may not read /metrics (see --metrics-allow)",
                ));
            }
            return Ok(metrics(state, request));
        }
        ("/metrics", _) => return Err(ApiError::method_not_allowed(&["GET", "HEAD"])),
        _ => {}
    }
    if !allowed(&state.limits.api_allow) {
        return Err(ApiError::new(
            403,
            "ip_not_allowed",
            "this client address may not call the API (see --api-allow)",
        ));
    }
    single_headers(request)?;

    match (path, &method) {
        ("/healthz", Method::Get | Method::Head) => return Ok(monitoring::health(state)),
        ("/api/v1/openapi.json", Method::Get | Method::Head) => return Ok(openapi()),
        ("/healthz" | "/api/v1/openapi.json", _) => {
            return Err(ApiError::method_not_allowed(&["GET", "HEAD"]));
        }
        _ => {}
    }
    if let Some(asset) = dashboard(path) {
        return match method {
            Method::Get | Method::Head => Ok(asset),
            _ => Err(ApiError::method_not_allowed(&["GET", "HEAD"])),
        };
    }
    if !path.starts_with("/api/") {
        return Err(ApiError::not_found("path"));
    }

    let token = auth::authenticate(state, header(request, "Authorization"))?;
    if !allowed(&token.allow) {
        return Err(ApiError::new(
            403,
            "ip_not_allowed",
            "this token may not be used from this client address",
        ));
    }
    if let Err(wait) = state.rate.take(&token.id, Instant::now()) {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return Err(ApiError::new(
            429,
            "rate_limited",
            format!(
                "this token is over its rate limit of {} requests a second; retry in {seconds} s",
                state.rate.per_second()
            ),
        )
        .with_header("Retry-After", seconds.max(1).to_string()));
    }
    let endpoint = router::route(&method, path)?;
    if !endpoint.allowed_for(token.scope) {
        return Err(ApiError::forbidden(format!(
            "a {} token may not do this",
            token.scope.as_str()
        )));
    }

    let body = if endpoint.takes_body() {
        read_body(state, request)?
    } else {
        Vec::new()
    };
    let ctx = Ctx {
        state,
        query: body::query_pairs(query),
        body,
        idempotency_key: header(request, "Idempotency-Key").map(str::to_owned),
        actor: Actor::Token {
            id: token.id,
            name: token.name,
            client: client.map(|ip| ip.to_string()),
        },
    };
    router::dispatch(&ctx, endpoint)
}

/// `GET /metrics`, for the addresses `--metrics-allow` lists (empty: for
/// anyone who may connect; see [`admit_filter`]).
fn metrics(state: &State, request: &Request) -> Reply {
    let open_metrics =
        header(request, "Accept").is_some_and(|a| a.contains("application/openmetrics-text"));
    monitoring::metrics(state, open_metrics)
}

/// Headers hookbox reads one of, which must come at most once: with two
/// `Authorization` headers, a proxy that reads the last one and hookbox,
/// which would read the first, would disagree about who is calling.
const SINGLE_HEADERS: [&str; 3] = ["Authorization", "Content-Type", "Idempotency-Key"];

/// 400 `duplicate_header` if a header of [`SINGLE_HEADERS`] is repeated.
fn single_headers(request: &Request) -> Result<(), ApiError> {
    for name in SINGLE_HEADERS {
        let count = request
            .headers()
            .iter()
            .filter(|h| h.field.equiv(name))
            .count();
        if count > 1 {
            return Err(ApiError::bad_request(
                "duplicate_header",
                format!("send the {name} header once; this request has {count}"),
            ));
        }
    }
    Ok(())
}

/// Reads a JSON body of at most `--max-body-size` bytes.
fn read_body(state: &State, request: &mut Request) -> Result<Vec<u8>, ApiError> {
    // A body tiny_http did not read ahead is not read here either: this
    // thread must not wait on a client's bytes.
    match request.preread_refused() {
        Some(PrereadRefused::Budget) => {
            warn_budget_spent();
            return Err(ApiError::new(
                503,
                "server_busy",
                "too many request bodies are being received at once; retry shortly",
            )
            .with_header("Retry-After", "1".into()));
        }
        // Refused by `preread_filter`, which lets in everyone the
        // `--api-allow` check lets in: not reached, but never read.
        Some(PrereadRefused::Peer) => {
            return Err(ApiError::new(
                403,
                "ip_not_allowed",
                "this client address may not call the API (see --api-allow)",
            ));
        }
        None => {}
    }
    let limit = state.limits.max_body_size;
    let too_large = || {
        ApiError::new(
            413,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    if request.body_length().is_some_and(|n| n as u64 > limit) {
        return Err(too_large());
    }
    let content_type = header(request, "Content-Type").unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    // No Content-Length is a body only when it comes chunked.
    let has_body = match request.body_length() {
        Some(length) => length > 0,
        None => header(request, "Transfer-Encoding").is_some(),
    };
    if has_body && !media_type.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            "send the body as JSON with 'Content-Type: application/json'",
        ));
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            ApiError::bad_request("unreadable_body", format!("reading the request body: {e}"))
        })?;
    if body.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(body)
}

/// Logs that bodies are being refused for the read-ahead budget, at most
/// once a minute: under a flood, a line per request would be the flood.
fn warn_budget_spent() {
    BUDGET_SPENT.log(
        log::Level::Warn,
        format_args!(
            "answering 503 to large request bodies: the read-ahead budget for bodies being \
             received is spent"
        ),
    );
}

/// `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of this API,
/// `openapi.json` beside this file; `tests/openapi.rs` keeps it in step
/// with the router and the handlers' answers.
fn openapi() -> Reply {
    Reply {
        status: 200,
        body: include_bytes!("openapi.json").to_vec(),
        content_type: "application/json",
        headers: Vec::new(),
    }
}

/// What the dashboard's page may load and run: only its own script, style
/// and API, no inline script or style, no frames, no other origin. The
/// dashboard draws its chart as SVG through the DOM, so it needs nothing
/// more; `data:` images are only for the empty favicon.
const DASHBOARD_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The operator's dashboard (`GET /`) and its script and style, compiled
/// into the binary: no build step, no CDN, nothing read from disk. The page
/// signs in with an API token and calls the API like any client.
fn dashboard(path: &str) -> Option<Reply> {
    let (body, content_type): (&'static [u8], &'static str) = match path {
        "/" => (include_bytes!("dashboard.html"), "text/html; charset=utf-8"),
        "/dashboard.js" => (
            include_bytes!("dashboard.js"),
            "text/javascript; charset=utf-8",
        ),
        "/dashboard.css" => (include_bytes!("dashboard.css"), "text/css; charset=utf-8"),
        _ => return None,
    };
    Some(Reply {
        status: 200,
        body: body.to_vec(),
        content_type,
        headers: vec![
            ("Content-Security-Policy", DASHBOARD_CSP.to_owned()),
            ("X-Content-Type-Options", "nosniff".to_owned()),
            ("X-Frame-Options", "DENY".to_owned()),
            ("Referrer-Policy", "no-referrer".to_owned()),
        ],
    })
}
