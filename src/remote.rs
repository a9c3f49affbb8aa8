//! `hookbox trigger` and `hookbox listen`: commands that talk to a running
//! hookbox through its HTTP API, for an integrator developing a receiver
//! (as `stripe trigger` and `stripe listen` do for Stripe's).
//!
//! `trigger` publishes an event: the catalog's example of its type (read
//! from `GET /api/v1/event-types`, so custom types work too) or the data
//! given. `listen` follows the events hookbox stores (`GET
//! /api/v1/events?after=`) and POSTs each one to a local URL exactly as a
//! webhook's delivery looks — the same body bytes, Standard Webhooks
//! headers, signed — so a receiver on a laptop that hookbox cannot reach
//! gets what it would get in production. With `--webhook` it forwards as
//! that webhook: its event types, its secret, its custom headers.
//!
//! `listen` asks again every `--interval`. Ids are made before their event
//! commits, so an event can commit after one with a later id: each request
//! starts [`OVERLAP_MS`] before the newest event seen and skips those
//! already forwarded. An event that took longer than that to commit after
//! its id was made is not forwarded. Forwarding is best effort: one
//! attempt, its outcome printed, no retries (publish again, or `trigger`).
//!
//! This module runs in the CLI's process and never touches the database.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::catalog::Filter;
use crate::config::{ListenArgs, RemoteArgs, TriggerArgs, parse_cidr};
use crate::delivery::{sign, worker};
use crate::ids::{self, Kind};
use crate::{clock, envelope};

/// How far before the newest event seen each request for new ones starts.
pub const OVERLAP_MS: i64 = 3000;

/// Events asked for per request.
const PAGE: usize = 500;

/// A running hookbox's API, with a token.
struct Remote {
    agent: ureq::Agent,
    base: String,
    token: String,
}

/// An answer: status and JSON body (`Null` when the body is not JSON).
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The API's error, as one line: `422 validation_failed: ... (data.price: ...)`.
    fn error(&self, what: &str) -> anyhow::Error {
        let body = self.json();
        let error = &body["error"];
        let mut line = format!(
            "{what}: hookbox answered {} {}: {}",
            self.status,
            error["code"].as_str().unwrap_or("error"),
            error["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(200)
                    .collect())
        );
        if let Some(details) = error["details"].as_array() {
            for d in details {
                line.push_str(&format!(
                    "; {}: {}",
                    d["field"].as_str().unwrap_or("?"),
                    d["message"].as_str().unwrap_or("?")
                ));
            }
        }
        anyhow!(line)
    }
}

impl Remote {
    fn new(args: &RemoteArgs) -> anyhow::Result<Remote> {
        let token = match &args.token {
            Some(token) => token.trim().to_owned(),
            None => token_file(&args.db.db)?,
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .max_redirects(0)
            .build()
            .new_agent();
        Ok(Remote {
            agent,
            base: args.api.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let result = match body {
            Some(body) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(body),
            None => self.agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut response =
            result.with_context(|| format!("{method} {url}: is hookbox running there (--api)?"))?;
        let mut body = Vec::new();
        response
            .body_mut()
            .as_reader()
            .read_to_end(&mut body)
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        Ok(Answer {
            status: response.status().as_u16(),
            body,
        })
    }

    fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.call("GET", path, None)
    }
}

/// The admin token hookbox wrote beside its database at first start.
fn token_file(db: &Path) -> anyhow::Result<String> {
    let mut path = db.as_os_str().to_owned();
    path.push(".admin-token");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no --token (or HOOKBOX_TOKEN) given, and reading {} failed",
            Path::new(&path).display()
        )
    })?;
    Ok(text.trim().to_owned())
}

/// `hookbox trigger EVENT_TYPE [--data JSON]`: prints the API's answer.
pub fn trigger(args: &TriggerArgs) -> anyhow::Result<()> {
    let remote = Remote::new(&args.remote)?;
    let data = match &args.data {
        Some(text) => {
            let raw: Box<RawValue> = serde_json::from_str(text).context("--data is not JSON")?;
            raw.get().to_owned()
        }
        None => example(&remote, &args.event_type)?,
    };
    let body = format!(
        "{{\"event\":{},\"data\":{data}}}",
        Value::from(args.event_type.as_str())
    );
    let answer = remote.call("POST", "/api/v1/events", Some(&body))?;
    if !(200..300).contains(&answer.status) {
        return Err(answer.error(&format!("publishing {}", args.event_type)));
    }
    let published = answer.json();
    eprintln!(
        "published {} ({}) for {} webhook(s)",
        published["id"].as_str().unwrap_or("?"),
        args.event_type,
        published["deliveries"]
    );
    println!("{}", String::from_utf8_lossy(&answer.body));
    Ok(())
}

/// The catalog's example of `event_type`, as JSON text.
fn example(remote: &Remote, event_type: &str) -> anyhow::Result<String> {
    let answer = remote.get("/api/v1/event-types")?;
    if answer.status != 200 {
        return Err(answer.error("reading the event catalog"));
    }
    let catalog = answer.json();
    let types = catalog["data"].as_array().cloned().unwrap_or_default();
    match types.iter().find(|t| t["name"] == event_type) {
        Some(t) if t["example"].is_object() => Ok(t["example"].to_string()),
        Some(_) => bail!("{event_type} has no example in the catalog: give --data"),
        None => {
            let names: Vec<&str> = types.iter().filter_map(|t| t["name"].as_str()).collect();
            bail!(
                "unknown event type {event_type}; the catalog has {}",
                names.join(", ")
            )
        }
    }
}

/// One event as `GET /api/v1/events` lists it; `data` as stored.
#[derive(Deserialize)]
struct Listed {
    id: String,
    event: String,
    timestamp: String,
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct Page {
    data: Vec<Listed>,
}

/// How `listen` signs and what it adds, from `--webhook` or the flags.
struct Signing {
    filters: Vec<Filter>,
    secret: String,
    headers: Vec<(ureq::http::HeaderName, ureq::http::HeaderValue)>,
}

fn signing(remote: &Remote, args: &ListenArgs) -> anyhow::Result<Signing> {
    let mut events = args.events.clone();
    let mut secret = args.secret.clone();
    let mut headers = crate::headers::CustomHeaders::default();
    if let Some(id) = &args.webhook {
        let read = |path: String, what: &str| -> anyhow::Result<Value> {
            let answer = remote.get(&path)?;
            if answer.status != 200 {
                return Err(answer.error(&format!("reading webhook {id}'s {what}")));
            }
            Ok(answer.json())
        };
        let webhook = read(format!("/api/v1/webhooks/{id}"), "settings")?;
        if events.is_empty() {
            events = webhook["events"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
        }
        if secret.is_none() {
            secret = read(format!("/api/v1/webhooks/{id}/secret"), "secret")?["secret"]
                .as_str()
                .map(str::to_owned);
        }
        let given = read(format!("/api/v1/webhooks/{id}/headers"), "custom headers")?;
        let mut errors = Vec::new();
        headers = crate::headers::CustomHeaders::from_json(&given["headers"], &mut errors)
            .unwrap_or_default();
    }
    if events.is_empty() {
        events.push("*".into());
    }
    Ok(Signing {
        filters: events.iter().map(|e| Filter::parse(e)).collect(),
        secret: secret.unwrap_or_else(crate::secrets::new_webhook_secret),
        headers: headers.to_request(),
    })
}

/// The newest event's id now, if there is one.
fn newest(remote: &Remote) -> anyhow::Result<Option<String>> {
    let answer = remote.get("/api/v1/events?limit=1")?;
    if answer.status != 200 {
        return Err(answer.error("reading the newest event"));
    }
    let page: Page = serde_json::from_slice(&answer.body).context("reading the event listing")?;
    Ok(page.data.into_iter().next().map(|e| e.id))
}

/// `hookbox listen --forward-to URL`: until interrupted, or `--count`.
pub fn listen(args: &ListenArgs) -> anyhow::Result<()> {
    let remote = Remote::new(&args.remote)?;
    let target = url::Url::parse(&args.forward_to)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| anyhow!("--forward-to must be an http or https URL"))?;
    let signing = signing(&remote, args)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    // The receiver is the developer's own: any address may be forwarded to.
    let anywhere = ["0.0.0.0/0", "::/0"]
        .iter()
        .filter_map(|c| parse_cidr(c).ok())
        .collect();
    let agent = worker::agent(anywhere, Duration::from_secs(15));
    // Only events published from now on: those a first request can list
    // are taken as forwarded already.
    let mut newest_seen = newest(&remote)?;
    let mut forwarded: HashMap<String, i64> = HashMap::new();
    if let Some(id) = newest_seen.clone() {
        for event in poll(&remote, &since_before(&id))? {
            if event.id > id {
                newest_seen = Some(event.id.clone());
            }
            let at = ids::time_ms(Kind::Event, &event.id).unwrap_or(0);
            forwarded.insert(event.id, at);
        }
    }
    println!(
        "forwarding {} events from {} to {target}, signed with {}",
        args.events_label(),
        remote.base,
        signing.secret
    );
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && args.count.is_none_or(|n| sent < n) {
        let after = match &newest_seen {
            Some(id) => since_before(id),
            None => ids::floor(Kind::Event, 0),
        };
        for event in poll(&remote, &after)? {
            if args.count.is_some_and(|n| sent >= n) {
                break;
            }
            let at = ids::time_ms(Kind::Event, &event.id).unwrap_or(0);
            if newest_seen.as_ref().is_none_or(|n| event.id > *n) {
                newest_seen = Some(event.id.clone());
            }
            if forwarded.insert(event.id.clone(), at).is_some() {
                continue;
            }
            if !signing.filters.iter().any(|f| f.matches(&event.event)) {
                continue;
            }
            forward(&agent, target.as_str(), &signing, &event);
            sent += 1;
        }
        // Forget what no request can list again.
        if let Some(newest) = newest_seen
            .as_deref()
            .and_then(|id| ids::time_ms(Kind::Event, id))
        {
            forwarded.retain(|_, at| *at >= newest - 2 * OVERLAP_MS);
        }
        sleep_unless(&stop, args.interval);
    }
    Ok(())
}

impl ListenArgs {
    fn events_label(&self) -> String {
        match (&self.webhook, self.events.is_empty()) {
            (Some(id), true) => format!("webhook {id}'s"),
            (_, true) => "all".into(),
            (_, false) => self.events.join(", "),
        }
    }
}

/// Where a request for new events starts: [`OVERLAP_MS`] before `newest`.
fn since_before(newest: &str) -> String {
    let at = ids::time_ms(Kind::Event, newest).unwrap_or(0);
    ids::floor(Kind::Event, at - OVERLAP_MS)
}

/// Every event after `after`, oldest first, a page at a time.
fn poll(remote: &Remote, after: &str) -> anyhow::Result<Vec<Listed>> {
    let mut all = Vec::new();
    let mut after = after.to_owned();
    loop {
        let answer = remote.get(&format!("/api/v1/events?after={after}&limit={PAGE}"))?;
        if answer.status != 200 {
            return Err(answer.error("listing new events"));
        }
        let page: Page =
            serde_json::from_slice(&answer.body).context("reading the event listing")?;
        let full = page.data.len() == PAGE;
        if let Some(last) = page.data.last() {
            after = last.id.clone();
        }
        all.extend(page.data);
        if !full {
            return Ok(all);
        }
    }
}

/// One attempt to the receiver, and a line saying how it went.
fn forward(agent: &ureq::Agent, url: &str, signing: &Signing, event: &Listed) {
    let data = event.data.as_ref().map_or("null", |d| d.get());
    let body = envelope::body(
        &event.id,
        &event.event,
        &event.timestamp,
        envelope::Data::Text(data),
    );
    let timestamp = clock::now_ms() / 1000;
    let message = worker::Message {
        headers: &signing.headers,
        msg_id: &event.id,
        timestamp,
        signature: sign::header(
            std::slice::from_ref(&signing.secret),
            &event.id,
            timestamp,
            &body,
        ),
        payload: &body,
    };
    let began = Instant::now();
    let outcome = worker::post(agent, url, &message, Duration::ZERO);
    let took = began.elapsed().as_millis();
    let result = match (outcome.status, outcome.error) {
        (Some(status), None) => format!("{status}"),
        (Some(status), Some(_)) => format!("{status} (failed)"),
        (None, Some(kind)) => format!(
            "failed: {} ({})",
            kind.as_str(),
            String::from_utf8_lossy(&outcome.body)
        ),
        (None, None) => "no answer".into(),
    };
    println!(
        "{} {} {} -> {result} in {took} ms",
        clock::rfc3339(clock::now_ms()),
        event.event,
        event.id
    );
}

/// Sleeps for `period`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, period: Duration) {
    let until = Instant::now() + period;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
