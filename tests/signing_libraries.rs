//! Receivers that verify with the public Standard Webhooks libraries
//! (issue 11): `standardwebhooks` and `svix` base64-decode every secret
//! string after stripping an optional `whsec_`, so every answer that shows a
//! secret also gives `signing_secret`, the `whsec_` form they decode to the
//! key hookbox signs with (SPEC section 4).
//!
//! Against the real binary and a real receiver on 127.0.0.1, for the seed's
//! raw `your-secret-key`, a given `whsec_` secret and a generated one: the
//! `signing_secret` of create, `GET .../secret`, rotate-secret and the tester,
//! decoded as the libraries decode it (by hand here, strictly; never through
//! hookbox's own signing code), verifies what the receiver got. One test
//! runs the real Python libraries and the README's code on those requests;
//! it needs them installed (`bash .ci/verifiers`), so it is `#[ignore]`d in a
//! plain `cargo test` and run by CI with `--include-ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use util::receiver::{Answer, Receiver, Seen};
use util::{BIN, Server, eventually, seed};

/// The seed's example secret: not base64 at all (15 characters).
const SEED_SECRET: &str = "your-secret-key";
/// A raw secret that is valid base64: a library silently takes another key.
const BASE64_LOOKING: &str = "abcdefgh12345678";
/// A `whsec_` secret of 24 bytes, given by the operator.
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(20);

/// What a test registers: a secret given as is, or none (generated).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Given(&'static str),
    Generated,
}

// ---------------------------------------------------------------------------
// The libraries' way, by hand

/// The key a Standard Webhooks library takes from a secret string: strip an
/// optional `whsec_`, then base64 (standard alphabet, padded, strict).
fn library_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .map_err(|e| format!("{secret:?} is not base64: {e}"))
}

/// Verifies `request` as a library given `secret` would: the positions of
/// the `webhook-signature` entries that match, or why none can.
fn library_verify(secret: &str, request: &Seen) -> Result<Vec<usize>, String> {
    let key = library_key(secret)?;
    let header = |name: &str| {
        request
            .header(name)
            .ok_or_else(|| format!("no {name} in {request:?}"))
    };
    let (id, timestamp) = (header("webhook-id")?, header("webhook-timestamp")?);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&request.body);
    let mut matching = Vec::new();
    for (i, entry) in header("webhook-signature")?.split(' ').enumerate() {
        let Some(tag) = entry
            .strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
        else {
            continue;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("hmac takes any key");
        mac.update(&signed);
        if mac.verify_slice(&tag).is_ok() {
            matching.push(i);
        }
    }
    if matching.is_empty() {
        return Err(format!(
            "no matching signature for {secret:?} in {:?}",
            request.header("webhook-signature")
        ));
    }
    Ok(matching)
}

/// Asserts that `signing_secret` is a `whsec_` string a library accepts and
/// that it verifies `request`; the matching entries.
fn verifies(signing_secret: &Value, request: &Seen, what: &str) -> Vec<usize> {
    let signing = signing_secret
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no signing_secret string: {signing_secret}"));
    assert!(signing.starts_with("whsec_"), "{what}: {signing}");
    library_verify(signing, request).unwrap_or_else(|e| panic!("{what}: {e}"))
}

// ---------------------------------------------------------------------------
// The real thing

fn server() -> Server {
    Server::delivering(&["--allow-targets", "127.0.0.0/8"])
}

fn receiver() -> Receiver {
    Receiver::start(|_, _| Answer::ok())
}

fn create(server: &Server, rx: &Receiver, kind: Kind) -> Value {
    let mut body = json!({"url": rx.url("/hook"), "events": ["item.sold"]});
    if let Kind::Given(secret) = kind {
        body["secret"] = json!(secret);
    }
    let r = server.post("/api/v1/webhooks", &body);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

/// Publishes an `item.sold` and returns the request the receiver got for it.
fn publish_and_receive(server: &Server, rx: &Receiver) -> Seen {
    let r = server.post(
        "/api/v1/events",
        &json!({"event": "item.sold", "data": seed("item.sold")}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    received(server, rx, &id)
}

/// The request the receiver got with `webhook-id: id`.
fn received(server: &Server, rx: &Receiver, id: &str) -> Seen {
    eventually(
        server,
        WAIT,
        || format!("a request with webhook-id {id}: got {:?}", rx.requests()),
        || rx.requests().into_iter().find(|s| s.webhook_id() == id),
    )
}

fn secret_of(server: &Server, hook: &str) -> Value {
    let r = server.get(&format!("/api/v1/webhooks/{hook}/secret"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn rotate(server: &Server, hook: &str, to: Kind) -> Value {
    let body = match to {
        Kind::Given(secret) => json!({"secret": secret}),
        Kind::Generated => json!({}),
    };
    let r = server.post(&format!("/api/v1/webhooks/{hook}/rotate-secret"), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// `POST /api/v1/webhooks/test` to the receiver; the report and the
/// request the receiver got.
fn tester(server: &Server, rx: &Receiver, kind: Kind) -> (Value, Seen) {
    let mut body = json!({"event": "item.sold", "url": rx.url("/tester")});
    if let Kind::Given(secret) = kind {
        body["secret"] = json!(secret);
    }
    let r = server.post("/api/v1/webhooks/test", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json();
    assert_eq!(report["status"], 200, "{report:#}");
    let id = report["event_id"].as_str().unwrap().to_owned();
    let seen = received(server, rx, &id);
    (report, seen)
}

/// The secret shown beside `signing_secret` is as given or generated, and
/// for a `whsec_` secret the two are the same string.
fn check_pair(shown: &Value, kind: Kind, what: &str) {
    let secret = shown["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {shown}"));
    if let Kind::Given(given) = kind {
        assert_eq!(secret, given, "{what}: {shown}");
    }
    if secret.starts_with("whsec_") {
        assert_eq!(shown["signing_secret"], secret, "{what}: {shown}");
    } else {
        assert_ne!(shown["signing_secret"], secret, "{what}: {shown}");
    }
}

/// Create, GET secret, rotate (to `next`) and the tester, for one kind of
/// secret: each answer's `signing_secret` verifies, the library way, the
/// request the receiver then got.
fn signing_secret_verifies_everywhere(kind: Kind, next: Kind) {
    let server = server();
    let rx = receiver();

    let created = create(&server, &rx, kind);
    check_pair(&created, kind, "create");
    let hook = created["id"].as_str().unwrap().to_owned();
    let first = publish_and_receive(&server, &rx);
    verifies(
        &created["signing_secret"],
        &first,
        "create's signing_secret",
    );

    let current = secret_of(&server, &hook);
    check_pair(&current, kind, "GET secret");
    assert_eq!(current["signing_secret"], created["signing_secret"]);
    verifies(
        &current["signing_secret"],
        &first,
        "GET secret's signing_secret",
    );

    // During the grace period both secrets sign, and each signing_secret
    // matches its own entry.
    let rotated = rotate(&server, &hook, next);
    check_pair(&rotated, next, "rotate");
    assert_ne!(rotated["signing_secret"], created["signing_secret"]);
    let second = publish_and_receive(&server, &rx);
    assert_eq!(
        util::receiver::signature_entries(&second).len(),
        2,
        "{second:?}"
    );
    let new = verifies(
        &rotated["signing_secret"],
        &second,
        "rotate's signing_secret",
    );
    let old = verifies(
        &created["signing_secret"],
        &second,
        "the old signing_secret",
    );
    assert_ne!(new, old, "{second:?}");
    let after = secret_of(&server, &hook);
    check_pair(&after, next, "GET secret after rotation");
    assert_eq!(after["signing_secret"], rotated["signing_secret"]);

    let (report, tested) = tester(&server, &rx, kind);
    check_pair(&report, kind, "tester");
    verifies(
        &report["signing_secret"],
        &tested,
        "the tester's signing_secret",
    );
}

#[test]
fn signing_secret_of_the_seeds_raw_secret_verifies_the_library_way_on_create_get_rotate_and_tester()
{
    signing_secret_verifies_everywhere(Kind::Given(SEED_SECRET), Kind::Given(BASE64_LOOKING));
}

#[test]
fn signing_secret_of_a_given_whsec_secret_is_that_secret_and_verifies_on_create_get_rotate_and_tester()
 {
    signing_secret_verifies_everywhere(
        Kind::Given(WHSEC),
        Kind::Given("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
    );
}

#[test]
fn signing_secret_of_a_generated_secret_verifies_on_create_get_rotate_and_tester() {
    signing_secret_verifies_everywhere(Kind::Generated, Kind::Generated);
}

#[test]
fn a_raw_secret_decoded_the_library_way_fails_or_gives_another_key_where_signing_secret_verifies() {
    let server = server();
    let rx = receiver();
    for raw in [SEED_SECRET, BASE64_LOOKING] {
        let created = create(&server, &rx, Kind::Given(raw));
        let request = publish_and_receive(&server, &rx);
        // Each webhook gets every item.sold: only this webhook's newest.
        verifies(&created["signing_secret"], &request, raw);
        let hook = created["id"].as_str().unwrap();
        let r = server.request("DELETE", &format!("/api/v1/webhooks/{hook}"), None);
        assert_eq!(r.status, 204, "{}", r.text());
        // The raw secret the library way: an error, or a key that matches
        // nothing hookbox sent.
        let wrong = library_verify(raw, &request);
        assert!(wrong.is_err(), "{raw}: {wrong:?}");
        match library_key(raw) {
            Err(_) => assert_eq!(raw, SEED_SECRET),
            Ok(key) => {
                assert_eq!(raw, BASE64_LOOKING);
                assert_ne!(key, raw.as_bytes());
            }
        }
        // The key is the secret's own bytes, as SPEC section 4 says.
        assert_eq!(
            library_key(created["signing_secret"].as_str().unwrap()).unwrap(),
            raw.as_bytes()
        );
    }
}

#[test]
fn hookbox_verify_accepts_a_raw_secret_and_its_signing_secret_alike() {
    let server = server();
    let rx = receiver();
    let created = create(&server, &rx, Kind::Given(SEED_SECRET));
    let request = publish_and_receive(&server, &rx);
    let run = |secret: &str| {
        let mut child = Command::new(BIN)
            .arg("verify")
            .arg("--id")
            .arg(request.webhook_id())
            .arg("--timestamp")
            .arg(request.header("webhook-timestamp").unwrap())
            .arg("--signature")
            .arg(request.header("webhook-signature").unwrap())
            .env("HOOKBOX_SECRET", secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hookbox verify");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&request.body)
            .unwrap();
        child.wait_with_output().expect("hookbox verify output")
    };
    for secret in [SEED_SECRET, created["signing_secret"].as_str().unwrap()] {
        let out = run(secret);
        assert!(
            out.status.success(),
            "{secret}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        !run("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .status
            .success()
    );
}

// ---------------------------------------------------------------------------
// The real libraries (Python), and the README's code

const NEEDS: &str = "needs python3 with standardwebhooks and svix: bash .ci/verifiers";

/// The Python that has the libraries: `HOOKBOX_PYTHON`, else the venv that
/// `.ci/verifiers` makes by default, else `python3`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("HOOKBOX_PYTHON") {
        return python.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")));
    cache
        .map(|c| c.join("hookbox/verifiers/bin/python"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "python3".into())
}

/// The Python code blocks of README.md's "Receiving webhooks" section.
fn readme_python() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("\n## Receiving webhooks\n")
        .expect("README has a Receiving webhooks section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut code = String::new();
    for block in section.split("```python\n").skip(1) {
        code.push_str(block.split("\n```").next().unwrap());
        code.push('\n');
    }
    assert!(
        code.contains("def verify(") && code.contains("def receive("),
        "{code}"
    );
    code
}

/// Runs each library, and the README's `verify` and `receive`, on one
/// received request; prints one JSON object of outcomes.
const DRIVER: &str = r#"
import base64, json, sys
try:
    import standardwebhooks.webhooks, svix.webhooks
except ImportError as e:
    print(f"missing module: {e}", file=sys.stderr)
    sys.exit(3)
case = json.load(sys.stdin)
body = base64.b64decode(case["body"])
headers = case["headers"]
tampered = body.replace(b"10.00", b"10.01")
assert tampered != body
out = {}
def attempt(name, f):
    try:
        f()
        out[name] = "ok"
    except Exception as e:
        out[name] = f"{type(e).__name__}: {e}"
for lib, cls in [("standardwebhooks", standardwebhooks.webhooks.Webhook), ("svix", svix.webhooks.Webhook)]:
    for which in ("signing_secret", "secret"):
        attempt(f"{lib} {which}", lambda: cls(case[which]).verify(body, dict(headers)))
    attempt(f"{lib} tampered", lambda: cls(case["signing_secret"]).verify(tampered, dict(headers)))
readme = {}
exec(compile(sys.argv[1], "README.md", "exec"), readme)
out["readme verify"] = readme["verify"](case["signing_secret"], dict(headers), body)
out["readme verify tampered"] = readme["verify"](case["signing_secret"], dict(headers), tampered)
out["readme receive"] = readme["receive"](case["signing_secret"], dict(headers), body)["id"]
print(json.dumps(out))
"#;

fn run_python(python: &Path, readme: &str, shown: &Value, request: &Seen) -> Value {
    let headers: serde_json::Map<String, Value> = request
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), json!(v)))
        .collect();
    let case = json!({
        "secret": shown["secret"],
        "signing_secret": shown["signing_secret"],
        "headers": headers,
        "body": STANDARD.encode(&request.body),
    });
    let mut child = Command::new(python)
        .args(["-c", DRIVER, readme])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {NEEDS}", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(case.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("python output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}): {stderr}\n{NEEDS}",
        python.display(),
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "python printed no JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
#[ignore = "needs python3 with standardwebhooks and svix: bash .ci/verifiers"]
fn python_standardwebhooks_svix_and_the_readme_verify_deliveries_with_signing_secret() {
    let python = python();
    let readme = readme_python();
    let server = server();
    let rx = receiver();
    for kind in [
        Kind::Given(SEED_SECRET),
        Kind::Given(BASE64_LOOKING),
        Kind::Given(WHSEC),
        Kind::Generated,
    ] {
        let created = create(&server, &rx, kind);
        let request = publish_and_receive(&server, &rx);
        let hook = created["id"].as_str().unwrap();
        let r = server.request("DELETE", &format!("/api/v1/webhooks/{hook}"), None);
        assert_eq!(r.status, 204, "{}", r.text());
        let out = run_python(&python, &readme, &created, &request);
        let what = format!("{kind:?}: {out:#}");
        for lib in ["standardwebhooks", "svix"] {
            assert_eq!(out[format!("{lib} signing_secret")], "ok", "{what}");
            assert_ne!(out[format!("{lib} tampered")], "ok", "{what}");
            let raw = out[format!("{lib} secret")].as_str().unwrap();
            if created["secret"].as_str().unwrap().starts_with("whsec_") {
                assert_eq!(raw, "ok", "{what}");
            } else {
                // The point of signing_secret: the raw string fails there.
                assert_ne!(raw, "ok", "{what}");
            }
        }
        if kind == Kind::Given(SEED_SECRET) {
            assert!(
                out["standardwebhooks secret"]
                    .as_str()
                    .unwrap()
                    .contains("base64"),
                "{what}"
            );
        }
        if kind == Kind::Given(BASE64_LOOKING) {
            assert_eq!(
                out["standardwebhooks secret"],
                "WebhookVerificationError: No matching signature found",
                "{what}"
            );
        }
        assert_eq!(out["readme verify"], true, "{what}");
        assert_eq!(out["readme verify tampered"], false, "{what}");
        assert_eq!(out["readme receive"], request.webhook_id(), "{what}");
    }
}
