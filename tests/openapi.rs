//! The OpenAPI document (`GET /api/v1/openapi.json`, issue 6) against the
//! real binary: it is served without a token and is OpenAPI 3; every route
//! the server has is documented and nothing else is; each operation's scopes
//! and each path's methods are the ones the server enforces; and real
//! answers, success and error alike, match their documented status, media
//! type, required headers and schema (validated with the `jsonschema` crate).
//!
//! The server's routes are read from the source at test time — the
//! `(["segments"], Method) =>` arms of `src/api/router.rs` and the
//! `("/path", Method::Get ...)` arms of `src/api/mod.rs` — so a route added
//! without documentation fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use util::receiver::{Answer, Receiver};
use util::{Response, Server, eventually, seed};

const OPENAPI: &str = "/api/v1/openapi.json";

/// Documented from the monitoring contract (shared-monitoring-contract.md)
/// while the endpoints are being built on main: documented, and allowed to
/// be absent from the source. Drop an entry once the route is merged.
const PENDING: [(&str, &str); 0] = [];

/// Methods an OpenAPI path item can hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

// ---------------------------------------------------------------- helpers

/// The document as committed.
fn committed() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/openapi.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn source(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap()
}

/// `{id}`, `{webhook_id}` ... all become `{}`, so that only shapes compare.
fn shape(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push('{');
            }
            '}' => {
                in_param = false;
                out.push('}');
            }
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// `(METHOD, /path/{})` of every route the server answers, read from the
/// source: the router's arms and the pipeline's own paths.
fn source_routes() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    // `(["webhooks", id, "replay"], Post) => Endpoint::ReplayWebhook(...),`
    for line in source("src/api/router.rs").lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("([") else {
            continue;
        };
        let Some((segments, rest)) = rest.split_once("], ") else {
            continue;
        };
        let Some((method, _)) = rest.split_once(") =>") else {
            continue;
        };
        if !method.chars().all(|c| c.is_ascii_alphabetic()) || method.is_empty() {
            continue; // `_`: the 405 arms.
        }
        let path: Vec<String> = segments
            .split(", ")
            .map(
                |s| match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                    Some(literal) => literal.to_owned(),
                    None => "{}".to_owned(),
                },
            )
            .collect();
        routes.insert((
            method.to_ascii_uppercase(),
            format!("/api/v1/{}", path.join("/")),
        ));
    }
    // `("/healthz", Method::Get | Method::Head) => return Ok(health(state)),`
    for line in source("src/api/mod.rs").lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("(\"/") else {
            continue;
        };
        let Some((path, rest)) = rest.split_once("\", ") else {
            continue;
        };
        if rest.starts_with("Method::Get") {
            routes.insert(("GET".to_owned(), format!("/{path}")));
        }
    }
    // The dashboard's page (its script and style are not API routes):
    // `"/" => (include_bytes!("dashboard.html"), ...)`.
    if source("src/api/mod.rs").contains("\"/\" => (include_bytes!(\"dashboard.html\")") {
        routes.insert(("GET".to_owned(), "/".to_owned()));
    }
    assert!(
        routes.len() > 20,
        "the route parser found only {routes:?}: has the router's form changed?"
    );
    routes
}

/// `(METHOD, /path/{})` of every documented operation.
fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (key, _) in item.as_object().unwrap() {
            if METHODS.contains(&key.as_str()) {
                routes.insert((key.to_ascii_uppercase(), shape(path)));
            }
        }
    }
    routes
}

fn is_pending(method: &str, path: &str) -> bool {
    PENDING.iter().any(|(m, p)| *m == method && *p == path)
}

/// The documented path with each `{param}` filled by a well-formed id that
/// no server hands out (all zeros), from the parameter's pattern.
fn unknown_ids(path: &str) -> String {
    let prefix = if path.starts_with("/api/v1/webhooks") {
        "wh_"
    } else if path.starts_with("/api/v1/events") {
        "evt_"
    } else if path.starts_with("/api/v1/deliveries") {
        "dlv_"
    } else if path.starts_with("/api/v1/tokens") {
        "tok_"
    } else {
        panic!("no id kind known for {path}")
    };
    shape(path).replace("{}", &format!("{prefix}{}", "0".repeat(26)))
}

/// A JSON Pointer token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Follows a `$ref` within the document, once.
fn deref<'a>(doc: &'a Value, value: &'a Value) -> (&'a Value, Option<String>) {
    match value["$ref"].as_str() {
        Some(pointer) => {
            let pointer = pointer.strip_prefix('#').unwrap();
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {pointer}"));
            (target, Some(pointer.to_owned()))
        }
        None => (value, None),
    }
}

/// Checks one real answer against the documented response of `method
/// path` for its status: the status is documented, the media type is the
/// documented one (or there is no body when none is documented), every
/// required header is sent, and the body is valid against the schema
/// (formats asserted). Returns the body as JSON (null when not JSON).
fn conforms(doc: &Value, method: &str, path: &str, r: &Response) -> Value {
    let operation = &doc["paths"][path][method.to_ascii_lowercase()];
    assert!(operation.is_object(), "{method} {path} is not documented");
    let status = r.status.to_string();
    let documented = &operation["responses"][&status];
    assert!(
        documented.is_object(),
        "{method} {path} answered {status}, which is not documented: {}",
        r.text()
    );
    let (response, response_pointer) = deref(doc, documented);
    let response_pointer = response_pointer.unwrap_or_else(|| {
        format!(
            "/paths/{}/{}/responses/{status}",
            escape(path),
            method.to_ascii_lowercase()
        )
    });
    for (name, header) in response["headers"].as_object().into_iter().flatten() {
        if header["required"] == true {
            let value = r.header(name).unwrap_or_else(|| {
                panic!(
                    "{method} {path} {status}: no {name} header: {:?}",
                    r.headers
                )
            });
            if header["schema"]["type"] == "integer" {
                assert!(value.parse::<u64>().is_ok(), "{name}: {value}");
            }
            if let Some(constant) = header["schema"]["const"].as_str() {
                assert_eq!(value, constant, "{name}");
            }
        }
    }
    let Some(content) = response["content"].as_object() else {
        assert!(
            r.body.is_empty(),
            "{method} {path} {status}: a body where none is documented: {}",
            r.text()
        );
        return Value::Null;
    };
    let content_type = r.header("Content-Type").unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap().trim();
    assert!(
        content.contains_key(media_type),
        "{method} {path} {status}: Content-Type {content_type} is not documented ({:?})",
        content.keys().collect::<Vec<_>>()
    );
    if media_type != "application/json" {
        return Value::Null;
    }
    let body = r.json();
    let pointer = format!("#{response_pointer}/content/application~1json/schema");
    assert_valid(doc, &pointer, &body, &format!("{method} {path} {status}"));
    body
}

/// Validates `instance` against the schema at `pointer` in the document.
fn assert_valid(doc: &Value, pointer: &str, instance: &Value, context: &str) {
    let errors = schema_errors(doc, pointer, instance, context);
    assert!(
        errors.is_empty(),
        "{context}: the answer does not match {pointer}:\n  {}\nanswer: {instance:#}",
        errors.join("\n  ")
    );
}

/// Why `instance` is not valid against the schema at `pointer`.
fn schema_errors(doc: &Value, pointer: &str, instance: &Value, context: &str) -> Vec<String> {
    // The whole document is the root resource, so that every
    // `#/components/schemas/...` reference resolves; the root `$ref` picks
    // the schema. OpenAPI 3.1 schemas are JSON Schema 2020-12.
    // A pointer in a URI fragment: the braces of path templates escaped.
    let pointer = pointer.replace('{', "%7B").replace('}', "%7D");
    let mut root = doc.clone();
    root["$ref"] = json!(pointer);
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("{context}: the schema at {pointer} does not compile: {e}"));
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn call(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Response {
    let body = body.map(|b| b.to_string().into_bytes());
    server.send(
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_deref(),
        token,
    )
}

// ---------------------------------------------------------------- tests

#[test]
fn schema_checks_here_catch_a_wrong_answer() {
    // Guards the checks below against passing vacuously (a $ref that does
    // not resolve, formats not asserted, extra fields let through).
    let doc = committed();
    let webhook = "#/components/schemas/Webhook";
    let good = json!({
        "id": format!("wh_{}", "0".repeat(26)), "url": "https://example.com/", "events": ["*"],
        "description": "", "max_attempts": null, "rate_limit_per_s": 5, "enabled": true,
        "disabled_reason": null, "created_at": "2025-01-21T22:20:56Z",
        "updated_at": "2025-01-21T22:20:56Z", "previous_secret_expires_at": null,
        "header_names": ["X-Api-Key"],
        "filter": [{"path": "data.consignor_id", "eq": "x"}],
        "ordering_key": "data.item_id",
    });
    assert_eq!(
        schema_errors(&doc, webhook, &good, "good"),
        Vec::<String>::new()
    );
    let wrong = [
        ("id", json!("wh_0000000000000000000000000u")),
        ("created_at", json!("yesterday")),
        ("max_attempts", json!(0)),
        ("secret", json!("whsec_x")),
        ("enabled", json!(null)),
    ];
    for (field, value) in wrong {
        let mut bad = good.clone();
        bad[field] = value;
        assert!(
            !schema_errors(&doc, webhook, &bad, field).is_empty(),
            "{field}: {bad}"
        );
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("updated_at");
    assert!(!schema_errors(&doc, webhook, &missing, "missing").is_empty());
}

#[test]
fn openapi_document_is_served_without_a_token_as_openapi_3() {
    let server = Server::start();
    let r = server.send("GET", OPENAPI, &[], None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let served = r.json();
    assert_eq!(
        served,
        committed(),
        "the served document is the committed one"
    );
    let version = served["openapi"].as_str().unwrap();
    assert!(version.starts_with("3."), "openapi {version}");
    assert!(served["info"]["title"].is_string());
    assert!(served["paths"].as_object().is_some_and(|p| !p.is_empty()));
    let scheme = &served["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(served["security"], json!([{"bearerAuth": []}]));

    // HEAD: the same status, no body.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "HEAD {OPENAPI} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.ends_with("\r\n\r\n"), "a body after HEAD: {raw}");
    let post = server.send("POST", OPENAPI, &[], None, None);
    post.error(405, "method_not_allowed");
    assert_eq!(post.header("Allow"), Some("GET, HEAD"));
    // The API itself still needs a token.
    server
        .send("GET", "/api/v1/webhooks", &[], None, None)
        .error(401, "unauthorized");
}

#[test]
fn every_route_of_the_server_is_documented_and_nothing_else() {
    let doc = committed();
    let documented = documented_routes(&doc);
    let source = source_routes();
    let undocumented: Vec<_> = source.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes without documentation in src/api/openapi.json: {undocumented:?}"
    );
    let unknown: Vec<_> = documented
        .difference(&source)
        .filter(|(method, path)| !is_pending(method, path))
        .collect();
    assert!(
        unknown.is_empty(),
        "documented routes the server does not have: {unknown:?}"
    );
    // The public paths are the ones that need no token.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let public = ["/", "/healthz", "/metrics", OPENAPI].contains(&path.as_str());
            assert_eq!(
                operation["security"] == json!([]),
                public,
                "{method} {path}: security"
            );
            if !public {
                for status in ["401", "403", "429", "503"] {
                    assert!(
                        operation["responses"][status].is_object(),
                        "{method} {path} does not document {status}"
                    );
                }
            }
        }
    }
}

#[test]
fn each_paths_documented_methods_are_the_ones_its_405_allows() {
    let doc = committed();
    let server = Server::start();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let mut methods: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| METHODS.contains(&k.as_str()))
            .map(|k| k.to_ascii_uppercase())
            .collect();
        if methods.iter().all(|m| is_pending(m, &shape(path))) {
            continue;
        }
        let url = if path.contains('{') {
            unknown_ids(path)
        } else {
            path.clone()
        };
        let r = call(&server, "PUT", &url, None, Some(&server.token));
        r.error(405, "method_not_allowed");
        if !path.starts_with("/api/") || path == OPENAPI {
            // The pipeline's own paths answer HEAD as well, and say so.
            methods.push("HEAD".into());
        }
        let mut allowed: Vec<String> = r
            .header("Allow")
            .unwrap()
            .split(", ")
            .map(str::to_owned)
            .collect();
        allowed.sort();
        methods.sort();
        assert_eq!(
            allowed, methods,
            "{path}: Allow against the documented methods"
        );
    }
}

#[test]
fn each_operations_documented_scopes_are_the_ones_the_server_enforces() {
    let doc = committed();
    let server = Server::start();
    let tokens = [
        ("admin", server.token.clone()),
        ("publish", server.token("publish")),
        ("read", server.token("read")),
    ];
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/") || path == OPENAPI {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            let method = method.to_ascii_uppercase();
            if !METHODS.contains(&method.to_ascii_lowercase().as_str())
                || is_pending(&method, &shape(path))
            {
                continue;
            }
            let scopes: Vec<&str> = operation["x-scopes"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path}: no x-scopes"))
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            let description = operation["description"].as_str().unwrap_or_default();
            assert!(
                description.contains("Scope: "),
                "{method} {path}: the description names no scope"
            );
            let url = if path.contains('{') {
                unknown_ids(path)
            } else {
                path.clone()
            };
            // An empty object: whatever the handler makes of it, the scope
            // is checked before.
            let body = (method == "POST" || method == "PATCH").then(|| json!({}));
            for (scope, token) in &tokens {
                let r = call(&server, &method, &url, body.as_ref(), Some(token));
                let refused = r.status == 403;
                assert_eq!(
                    refused,
                    !scopes.contains(scope),
                    "{method} {path} with a {scope} token answered {}: {}",
                    r.status,
                    r.text()
                );
                if refused {
                    r.error(403, "forbidden");
                }
                conforms(&doc, &method, path, &r);
            }
        }
    }
}

#[test]
fn real_answers_match_their_documented_schemas() {
    let doc = committed();
    let rx = Receiver::start(|_, _| Answer::status(500).body("not today"));
    let server = Server::delivering(&["--allow-targets", "127.0.0.1/32", "--max-attempts", "1"]);
    let webhooks = "/api/v1/webhooks";

    // Webhooks: create (201, with secret and Location), list, get, patch,
    // secret, rotate.
    let r = server.post(
        webhooks,
        &json!({"url": rx.url("/hook"), "events": ["item.sold"], "description": "docs"}),
    );
    let created = conforms(&doc, "POST", webhooks, &r);
    assert_eq!(r.status, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    let one = "/api/v1/webhooks/{id}";
    let r = server.get(webhooks);
    assert_eq!(r.status, 200);
    let listed = conforms(&doc, "GET", webhooks, &r);
    assert_eq!(listed["data"][0]["id"], id.as_str());
    conforms(&doc, "GET", one, &server.get(&format!("{webhooks}/{id}")));
    let r = call(
        &server,
        "PATCH",
        &format!("{webhooks}/{id}"),
        Some(&json!({"max_attempts": 1, "rate_limit_per_s": null, "headers": {"X-Api-Key": "k"}})),
        Some(&server.token),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    conforms(&doc, "PATCH", one, &r);
    let r = server.get(&format!("{webhooks}/{id}/secret"));
    conforms(&doc, "GET", "/api/v1/webhooks/{id}/secret", &r);
    let r = server.get(&format!("{webhooks}/{id}/headers"));
    let headers = conforms(&doc, "GET", "/api/v1/webhooks/{id}/headers", &r);
    assert_eq!(headers["headers"]["X-Api-Key"], "k");
    let r = server.post(&format!("{webhooks}/{id}/rotate-secret"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let rotated = conforms(&doc, "POST", "/api/v1/webhooks/{id}/rotate-secret", &r);
    assert!(rotated["previous_secret_expires_at"].is_string());

    // Errors: 401 (with WWW-Authenticate), 422 naming fields, 400, 404,
    // 415, 405 is covered above.
    let r = server.send("GET", webhooks, &[], None, None);
    assert_eq!(r.status, 401);
    conforms(&doc, "GET", webhooks, &r);
    let r = server.post(
        webhooks,
        &json!({"url": "ftp://x", "events": [], "nope": 1}),
    );
    assert_eq!(r.status, 422);
    let invalid = conforms(&doc, "POST", webhooks, &r);
    assert_eq!(invalid["error"]["details"].as_array().unwrap().len(), 3);
    let r = server.send(
        "POST",
        webhooks,
        &[("Content-Type", "application/json")],
        Some(b"{nope"),
        Some(&server.token),
    );
    assert_eq!(r.status, 400);
    conforms(&doc, "POST", webhooks, &r);
    let r = server.send(
        "POST",
        webhooks,
        &[("Content-Type", "text/plain")],
        Some(b"{}"),
        Some(&server.token),
    );
    assert_eq!(r.status, 415);
    conforms(&doc, "POST", webhooks, &r);
    let r = server.get(&format!("{webhooks}/wh_{}", "0".repeat(26)));
    assert_eq!(r.status, 404);
    conforms(&doc, "GET", one, &r);
    let r = server.get(&format!("{webhooks}?limit=501"));
    assert_eq!(r.status, 422);
    conforms(&doc, "GET", webhooks, &r);

    // The catalog: each built-in type's schema is the documented `data`.
    let r = server.get("/api/v1/event-types");
    let catalog = conforms(&doc, "GET", "/api/v1/event-types", &r);
    for t in catalog["data"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        if name.starts_with("hookbox.") {
            // hookbox's own: listed for subscribing, never published by clients.
            continue;
        }
        let mapping = &doc["components"]["schemas"]["PublishEvent"]["discriminator"]["mapping"];
        let variant = mapping[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no publish variant"));
        let variant = doc.pointer(variant.strip_prefix('#').unwrap()).unwrap();
        let (data, _) = deref(&doc, &variant["properties"]["data"]);
        let mut documented = data.clone();
        documented.as_object_mut().unwrap().remove("description");
        let mut served = t["schema"].clone();
        served.as_object_mut().unwrap().remove("$schema");
        assert_eq!(documented, served, "{name}: documented data schema");
        assert_valid(
            &doc,
            &format!("{}/properties/data", mapping[name].as_str().unwrap()),
            &t["example"],
            &format!("the {name} example"),
        );
    }
    let r = server.post(
        "/api/v1/event-types",
        &json!({"name": "payout.created", "schema": {"type": "object"}, "example": {"amount": "1.00"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    conforms(&doc, "POST", "/api/v1/event-types", &r);
    let r = server.post("/api/v1/event-types", &json!({"name": "payout.created"}));
    assert_eq!(r.status, 409);
    conforms(&doc, "POST", "/api/v1/event-types", &r);

    // Publish: 202, the same key again 200, another body with it 409.
    let events = "/api/v1/events";
    let body = json!({"event": "item.sold", "data": seed("item.sold"), "idempotency_key": "doc-1"});
    let r = server.post(events, &body);
    assert_eq!(r.status, 202, "{}", r.text());
    let published = conforms(&doc, "POST", events, &r);
    assert_eq!(published["deliveries"], 1);
    let event_id = published["id"].as_str().unwrap().to_owned();
    let r = server.post(events, &body);
    assert_eq!(r.status, 200);
    conforms(&doc, "POST", events, &r);
    let mut other = body.clone();
    other["data"]["sale_price"] = json!("11.00");
    let r = server.post(events, &other);
    assert_eq!(r.status, 409);
    conforms(&doc, "POST", events, &r);
    let r = server.post(
        events,
        &json!({"event": "item.sold", "data": {"item_id": "x"}}),
    );
    assert_eq!(r.status, 422);
    conforms(&doc, "POST", events, &r);

    // The delivery fails once (the receiver answers 500) and is `failed`
    // with one attempt in its log.
    let delivery = eventually(
        &server,
        Duration::from_secs(20),
        || "the delivery to fail".into(),
        || {
            let list = server
                .get(&format!("/api/v1/deliveries?event_id={event_id}"))
                .json();
            let d = list["data"][0].clone();
            (d["status"] == "failed").then_some(d)
        },
    );
    let delivery_id = delivery["id"].as_str().unwrap().to_owned();
    let r = server.get(&format!("/api/v1/deliveries/{delivery_id}"));
    let got = conforms(&doc, "GET", "/api/v1/deliveries/{id}", &r);
    assert_eq!(got["attempt_log"][0]["status_code"], 500, "{got}");
    assert_eq!(got["attempt_log"][0]["error_kind"], "http_status", "{got}");
    conforms(
        &doc,
        "GET",
        "/api/v1/deliveries",
        &server.get("/api/v1/deliveries?status=failed"),
    );
    conforms(&doc, "GET", "/api/v1/events", &server.get(events));
    conforms(
        &doc,
        "GET",
        "/api/v1/events/{id}",
        &server.get(&format!("{events}/{event_id}")),
    );

    // Replay, retry and a test event through the queue: 202 each.
    let r = server.post(
        &format!("{webhooks}/{id}/replay"),
        &json!({"since": "2020-01-01T00:00:00Z"}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    conforms(&doc, "POST", "/api/v1/webhooks/{id}/replay", &r);
    let r = call(
        &server,
        "POST",
        &format!("/api/v1/deliveries/{delivery_id}/retry"),
        None,
        Some(&server.token),
    );
    assert!([202, 409].contains(&r.status), "{}", r.text());
    conforms(&doc, "POST", "/api/v1/deliveries/{id}/retry", &r);
    let r = server.post(
        &format!("{webhooks}/{id}/test"),
        &json!({"event": "item.created"}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    conforms(&doc, "POST", "/api/v1/webhooks/{id}/test", &r);

    // The tester, against the same receiver.
    let r = server.post(
        "/api/v1/webhooks/test",
        &json!({"event": "profile.created", "url": rx.url("/t"), "secret": "your-secret-key",
                "checks": ["bad_signature", "stale_timestamp"]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let report = conforms(&doc, "POST", "/api/v1/webhooks/test", &r);
    assert_eq!(report["ok"], false);

    // A request the HTTP layer refuses is documented on every route.
    let r = server.send(
        "GET",
        "/api/v1/webhooks",
        &[("Authorization", "Bearer hbk_other")],
        None,
        Some(&server.token),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let refused = conforms(&doc, "GET", "/api/v1/webhooks", &r);
    assert_eq!(refused["error"]["code"], "duplicate_header");

    // Tokens and the audit log.
    let r = server.post(
        "/api/v1/tokens",
        &json!({"name": "docs", "scope": "read", "allow": ["10.0.0.0/8", "::1"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let token = conforms(&doc, "POST", "/api/v1/tokens", &r);
    let r = server.post("/api/v1/tokens", &json!({"name": "docs", "scope": "read"}));
    assert_eq!(r.status, 409, "{}", r.text());
    conforms(&doc, "POST", "/api/v1/tokens", &r);
    conforms(&doc, "GET", "/api/v1/tokens", &server.get("/api/v1/tokens"));
    let r = call(
        &server,
        "DELETE",
        &format!("/api/v1/tokens/{}", token["id"].as_str().unwrap()),
        None,
        Some(&server.token),
    );
    assert_eq!(r.status, 204);
    conforms(&doc, "DELETE", "/api/v1/tokens/{id}", &r);
    let r = server.get("/api/v1/audit-log?action=webhook.created");
    let audit = conforms(&doc, "GET", "/api/v1/audit-log", &r);
    assert_eq!(audit["data"][0]["target"], id.as_str());

    // Delete: 204 without a body.
    let r = call(
        &server,
        "DELETE",
        &format!("{webhooks}/{id}"),
        None,
        Some(&server.token),
    );
    assert_eq!(r.status, 204);
    conforms(&doc, "DELETE", one, &r);

    // The dashboard and this document.
    conforms(&doc, "GET", "/", &server.send("GET", "/", &[], None, None));
    conforms(
        &doc,
        "GET",
        OPENAPI,
        &server.send("GET", OPENAPI, &[], None, None),
    );
}

#[test]
fn limits_answers_match_their_documented_schemas() {
    let doc = committed();
    let server = Server::start_with(&["--api-rate-limit", "1", "--max-body-size", "1KiB"]);
    let webhooks = "/api/v1/webhooks";
    // 413 over the body limit.
    let big =
        json!({"url": "https://example.com/", "events": ["*"], "description": "x".repeat(2000)});
    let r = server.post(webhooks, &big);
    assert_eq!(r.status, 413, "{}", r.text());
    conforms(&doc, "POST", webhooks, &r);
    // 429 with Retry-After once the burst of 2 is spent.
    let r = (0..5)
        .map(|_| server.get(webhooks))
        .find(|r| r.status == 429)
        .expect("a 429 within five requests at 1 a second");
    conforms(&doc, "GET", webhooks, &r);
}

#[test]
fn request_schemas_accept_what_the_server_accepts_and_refuse_what_it_refuses() {
    let doc = committed();
    let server = Server::start();
    let schema = |name: &str| format!("#/components/schemas/{name}");
    // (schema, path to send it to or "" for a schema check alone, body, the server accepts it)
    let mut table: Vec<(String, &str, Value, bool)> = vec![
        // The seed's registration body and the README's, as is; webhook
        // URLs are not sent, so that no name is looked up.
        (
            schema("CreateWebhook"),
            "",
            json!({"url": "https://your-domain.com/webhook", "events": ["email.updated", "profile.created"], "secret": "your-secret-key"}),
            true,
        ),
        (
            schema("CreateWebhook"),
            "",
            json!({"url": "https://shop.example/hooks/items", "events": ["item.*"], "description": "website stock"}),
            true,
        ),
        (
            schema("CreateWebhook"),
            "",
            json!({"url": "https://shop.example/", "events": []}),
            false,
        ),
        (
            schema("CreateWebhook"),
            "",
            json!({"url": "https://shop.example/", "events": ["*"], "secret": "short"}),
            false,
        ),
        (
            schema("CreateWebhook"),
            "",
            json!({"url": "ftp://shop.example/", "events": ["*"]}),
            false,
        ),
        (
            schema("CreateWebhook"),
            "",
            json!({"url": "https://shop.example/", "events": ["*"], "max_attempts": 101}),
            false,
        ),
        (
            schema("UpdateWebhook"),
            "",
            json!({"enabled": true, "max_attempts": null}),
            true,
        ),
        (
            schema("UpdateWebhook"),
            "",
            json!({"secret": "your-secret-key"}),
            false,
        ),
        (
            schema("TestUrl"),
            "",
            json!({"event": "item.sold", "url": "https://shop.example/hooks/items", "secret": "your-secret-key", "checks": ["bad_signature", "stale_timestamp"]}),
            true,
        ),
        (
            schema("TestUrl"),
            "",
            json!({"event": "item.sold", "url": "https://shop.example/", "checks": ["nope"]}),
            false,
        ),
        (
            schema("CreateToken"),
            "/api/v1/tokens",
            json!({"name": "shop-app", "scope": "publish", "allow": ["10.0.0.5/32", "fd00::5"]}),
            true,
        ),
        (
            schema("CreateToken"),
            "/api/v1/tokens",
            json!({"name": "  ", "scope": "publish"}),
            false,
        ),
        (
            schema("CreateToken"),
            "/api/v1/tokens",
            json!({"name": "x", "scope": "root"}),
            false,
        ),
        (
            schema("CreateToken"),
            "/api/v1/tokens",
            json!({"name": "x", "scope": "read", "allow": ["10.0.0.0/33"]}),
            false,
        ),
        (
            schema("CreateEventType"),
            "/api/v1/event-types",
            json!({"name": "payout.created", "description": "A payout.", "schema": {"type": "object"}, "example": {}}),
            true,
        ),
        (
            schema("CreateEventType"),
            "/api/v1/event-types",
            json!({"name": "hookbox.alert"}),
            false,
        ),
        (
            schema("CreateEventType"),
            "/api/v1/event-types",
            json!({"name": "Payout"}),
            false,
        ),
        (
            schema("PublishEvent"),
            "/api/v1/events",
            json!({"event": "item.sold", "data": seed("item.sold"), "extra": 1}),
            false,
        ),
        (
            schema("PublishEvent"),
            "/api/v1/events",
            json!({"event": "item.sold", "data": {"item_id": "nope", "sale_price": "12,50"}}),
            false,
        ),
        (
            schema("PublishEvent"),
            "/api/v1/events",
            json!({"event": "item.sold", "data": seed("item.sold"), "idempotency_key": "has space"}),
            false,
        ),
        (
            schema("PublishEvent"),
            "/api/v1/events",
            json!({"event": "item.sold", "data": seed("item.sold"), "timestamp": "2025-01-21T22:20:56Z"}),
            true,
        ),
    ];
    for (name, data) in util::seed_examples() {
        table.push((
            schema("PublishEvent"),
            "/api/v1/events",
            json!({"event": name, "data": data}),
            true,
        ));
    }
    let mut failed = email_failed();
    failed.as_object_mut().unwrap().remove("sync_error");
    table.push((
        schema("PublishEvent"),
        "/api/v1/events",
        json!({"event": "email.updated", "data": failed}),
        false,
    ));
    for (pointer, path, body, accepted) in &table {
        let errors = schema_errors(&doc, pointer, body, pointer);
        assert_eq!(
            errors.is_empty(),
            *accepted,
            "{pointer} on {body}: {errors:?}"
        );
        if !path.is_empty() {
            let r = server.post(path, body);
            assert_eq!(
                (200..300).contains(&r.status),
                *accepted,
                "POST {path} {body}: {} {}",
                r.status,
                r.text()
            );
            if !accepted {
                r.error(422, "validation_failed");
            }
        }
    }
}

/// The seed's `email.updated` with `sync_status: failed`.
fn email_failed() -> Value {
    let data = seed("email.updated");
    assert_eq!(data["sync_status"], "failed");
    data
}

#[test]
fn monitoring_answers_match_their_documented_schemas() {
    let server = Server::start();
    let doc = server.get(OPENAPI).json();
    let hook = server.webhook_id(&["*"]);
    let r = server.send("GET", "/healthz", &[], None, None);
    conforms(&doc, "GET", "/healthz", &r);
    let r = server.get("/api/v1/stats");
    conforms(&doc, "GET", "/api/v1/stats", &r);
    let r = server.get(&format!("/api/v1/webhooks/{hook}/stats"));
    conforms(&doc, "GET", "/api/v1/webhooks/{id}/stats", &r);
    let r = server.get("/api/v1/alerts?status=open");
    conforms(&doc, "GET", "/api/v1/alerts", &r);
    let r = server.get("/api/v1/alerts?status=maybe");
    assert_eq!(r.status, 422);
    conforms(&doc, "GET", "/api/v1/alerts", &r);
}
