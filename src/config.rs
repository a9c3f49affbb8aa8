//! The command line: clap definitions, `HOOKBOX_*` environment variables,
//! and the value parsers for durations, sizes and CIDR lists.
//!
//! Every flag of every command also reads `HOOKBOX_<FLAG>` (upper case,
//! dashes to underscores), as SPEC section 2 requires. The parsed structs are
//! plain data handed to the code that needs them; nothing reads them from a
//! global.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "hookbox",
    version,
    about = "A webhook delivery appliance: one binary, one SQLite file."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// The least important messages logged: error, warn, info, debug or
    /// trace. `RUST_LOG` (env_logger syntax, e.g. `info,hookbox=debug`)
    /// overrides it.
    #[arg(long, global = true, env = "HOOKBOX_LOG_LEVEL", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,
    /// `text` (one line a message; without timestamps under journald), or
    /// `json` (one object a line: ts, level, target, msg).
    #[arg(long, global = true, env = "HOOKBOX_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once at start: boxing `ServeArgs` would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance: the API, the store and the delivery engine.
    Serve(ServeArgs),
    /// Create, list and revoke API tokens (works while `serve` runs).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Copy the database consistently, even while `serve` runs.
    Backup(BackupArgs),
    /// Check the database's integrity and schema version; exit 1 on any problem.
    Check(DbArgs),
    /// Check a captured webhook request's signature (body on standard input),
    /// as a receiver should; exit 1 unless it verifies and is recent.
    Verify(VerifyArgs),
    /// Publish an event to a running hookbox: the catalog's example of
    /// EVENT_TYPE, or the data given.
    Trigger(TriggerArgs),
    /// Forward the events a running hookbox stores, signed as a webhook's
    /// deliveries are, to a local receiver: develop a receiver without
    /// exposing a port to hookbox.
    Listen(ListenArgs),
}

/// How the `trigger` and `listen` commands reach a running hookbox.
#[derive(Debug, Args, Clone)]
pub struct RemoteArgs {
    /// The running hookbox's base URL.
    #[arg(long, env = "HOOKBOX_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// An API token; without it, the admin token hookbox wrote at first
    /// start beside --db (`<db>.admin-token`) is used. Prefer the variable:
    /// a command line is visible to other local users.
    #[arg(long, env = "HOOKBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The event type, e.g. item.sold.
    #[arg(env = "HOOKBOX_EVENT_TYPE")]
    pub event_type: String,
    /// The event's data as a JSON object, instead of the catalog's example.
    #[arg(long, env = "HOOKBOX_DATA")]
    pub data: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Where to POST each event, e.g. http://localhost:3000/webhooks.
    #[arg(long, env = "HOOKBOX_FORWARD_TO")]
    pub forward_to: String,
    /// Forward as this webhook's deliveries: its event types, its secret and
    /// its custom headers (needs an admin token).
    #[arg(long, env = "HOOKBOX_WEBHOOK")]
    pub webhook: Option<String>,
    /// Event types to forward: names, `*` or prefixes such as `item.*`
    /// (repeat or separate with commas); default every type, or the
    /// webhook's.
    #[arg(long, env = "HOOKBOX_EVENTS", value_delimiter = ',')]
    pub events: Vec<String>,
    /// The secret to sign with; by default the webhook's, or a new one
    /// printed at start.
    #[arg(long, env = "HOOKBOX_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Stop after forwarding this many events (default: until interrupted).
    #[arg(long, env = "HOOKBOX_COUNT")]
    pub count: Option<u64>,
    /// How often to ask hookbox for new events.
    #[arg(long, env = "HOOKBOX_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub interval: Duration,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The webhook's secret (`whsec_…`, or any other string as is). Prefer
    /// the variable: a command line is visible to other local users.
    #[arg(long, env = "HOOKBOX_SECRET", hide_env_values = true)]
    pub secret: String,
    /// The `webhook-id` header.
    #[arg(long)]
    pub id: String,
    /// The `webhook-timestamp` header (Unix seconds).
    #[arg(long)]
    pub timestamp: i64,
    /// The `webhook-signature` header (one or more `v1,…` entries).
    #[arg(long)]
    pub signature: String,
    /// How far the timestamp may be from now; older requests are refused
    /// as replays (a receiver should do the same).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub tolerance: Duration,
}

#[derive(Debug, Args, Clone)]
pub struct DbArgs {
    /// The SQLite database file.
    #[arg(long, env = "HOOKBOX_DB", default_value = "./hookbox.db")]
    pub db: PathBuf,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the copy. It appears there complete or not at all.
    #[arg(env = "HOOKBOX_DEST")]
    pub dest: PathBuf,
    /// Replace DEST if it exists (without it, an existing DEST is an error).
    #[arg(long, env = "HOOKBOX_FORCE")]
    pub force: bool,
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it alone on the last line of standard output.
    Create {
        /// A name that says who uses the token.
        #[arg(long, env = "HOOKBOX_NAME")]
        name: String,
        /// What the token may do.
        #[arg(long, env = "HOOKBOX_SCOPE", value_enum, default_value_t = Scope::Admin)]
        scope: Scope,
        /// Client addresses the token may be used from (IPv4 or IPv6
        /// CIDRs, comma-separated); by default any that --api-allow lets in.
        #[arg(long, env = "HOOKBOX_ALLOW", value_name = "CIDR", value_delimiter = ',', value_parser = parse_cidr)]
        allow: Vec<Cidr>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List tokens: id, name, scope, creation time, last use. Never the token.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a token by its `tok_…` id.
    Revoke {
        /// The token's id.
        #[arg(env = "HOOKBOX_ID")]
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// What a token may do: `admin` everything, `publish` only publish events,
/// `read` only GETs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scope {
    Admin,
    Publish,
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Publish => "publish",
            Scope::Read => "read",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "admin" => Some(Scope::Admin),
            "publish" => Some(Scope::Publish),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Address to listen on; port 0 picks a free port (see the `listening on` line).
    #[arg(long, env = "HOOKBOX_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Delivery worker threads: attempts in flight at once, over all webhooks.
    #[arg(long, env = "HOOKBOX_WORKERS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: u32,
    /// Attempts in flight at once to one webhook, so that a slow receiver
    /// holds at most this many workers.
    #[arg(long, env = "HOOKBOX_WEBHOOK_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub webhook_concurrency: u32,
    /// Accept and store events but send nothing until started without this
    /// flag: for maintenance, migrations and tests. Deliveries stay pending.
    #[arg(long, env = "HOOKBOX_PAUSE_DELIVERY")]
    pub pause_delivery: bool,
    /// A webhook whose every attempt has failed for this long is disabled.
    #[arg(long, env = "HOOKBOX_DISABLE_AFTER", default_value = "5d", value_parser = parse_duration)]
    pub disable_after: Duration,
    /// API requests answered at once (each on its connection's thread; the
    /// rest wait their turn). Each waits for its commit, so this bounds how
    /// many requests share one group commit.
    #[arg(long, env = "HOOKBOX_HTTP_THREADS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub http_threads: u32,
    /// Delivery targets allowed beyond public addresses, e.g. 127.0.0.0/8,10.0.0.0/8.
    #[arg(long, env = "HOOKBOX_ALLOW_TARGETS", value_delimiter = ',', value_parser = parse_cidr)]
    pub allow_targets: Vec<Cidr>,
    /// Attempts per delivery before it is marked failed (a webhook may override).
    #[arg(long, env = "HOOKBOX_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Delay before the first retry; doubles with each attempt.
    #[arg(long, env = "HOOKBOX_RETRY_BASE_DELAY", default_value = "30s", value_parser = parse_duration)]
    pub retry_base_delay: Duration,
    /// The longest delay between two attempts.
    #[arg(long, env = "HOOKBOX_RETRY_MAX_DELAY", default_value = "6h", value_parser = parse_duration)]
    pub retry_max_delay: Duration,
    /// How long one delivery attempt may take in all.
    #[arg(long, env = "HOOKBOX_DELIVERY_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub delivery_timeout: Duration,
    /// Client addresses allowed to call the API (default: any).
    #[arg(long, env = "HOOKBOX_API_ALLOW", value_delimiter = ',', value_parser = parse_cidr)]
    pub api_allow: Vec<Cidr>,
    /// Take the client address from X-Forwarded-For, but only on
    /// connections from these proxy addresses (bare: a proxy on loopback).
    #[arg(
        long,
        env = "HOOKBOX_TRUST_PROXY",
        value_name = "CIDR",
        value_delimiter = ',',
        value_parser = parse_cidr,
        num_args = 0..,
        default_missing_values = ["127.0.0.0/8", "::1/128"]
    )]
    pub trust_proxy: Vec<Cidr>,
    /// API requests per second per token (burst twice that); 0 turns it off.
    #[arg(long, env = "HOOKBOX_API_RATE_LIMIT", default_value_t = 1000)]
    pub api_rate_limit: u32,
    /// Where to send signed `hookbox.alert` webhooks.
    #[arg(long, env = "HOOKBOX_ALERT_URL", hide_env_values = true)]
    pub alert_url: Option<String>,
    /// The secret that signs alerts; by default one is generated at first
    /// start and kept in `<db>.alert-secret` (mode 0600).
    #[arg(long, env = "HOOKBOX_ALERT_SECRET", hide_env_values = true)]
    pub alert_secret: Option<String>,
    /// How often alert rules are checked.
    #[arg(long, env = "HOOKBOX_ALERT_CHECK_EVERY", default_value = "30s", value_parser = parse_duration)]
    pub alert_check_every: Duration,
    /// The span the rate, response-time and timeout rules look at (at most 1h).
    #[arg(long, env = "HOOKBOX_ALERT_WINDOW", default_value = "15m", value_parser = parse_duration)]
    pub alert_window: Duration,
    /// Attempts a webhook needs in the window before its rates are judged.
    #[arg(long, env = "HOOKBOX_ALERT_MIN_SAMPLES", default_value_t = 20)]
    pub alert_min_samples: u64,
    /// Alert when more than this share of a webhook's attempts fail (percent).
    #[arg(long, env = "HOOKBOX_ALERT_ERROR_RATE", default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub alert_error_rate: u8,
    /// Alert when a webhook's p95 response time is above this.
    #[arg(long, env = "HOOKBOX_ALERT_P95", default_value = "5s", value_parser = parse_duration)]
    pub alert_p95: Duration,
    /// Alert when a delivery for an enabled webhook has waited this long.
    #[arg(long, env = "HOOKBOX_ALERT_QUEUE_AGE", default_value = "15m", value_parser = parse_duration)]
    pub alert_queue_age: Duration,
    /// Alert when less than this is free on the database's file system.
    #[arg(long, env = "HOOKBOX_ALERT_DISK_FREE", default_value = "1GiB", value_parser = parse_size)]
    pub alert_disk_free: u64,
    /// Client addresses that may read GET /metrics (empty: anyone).
    #[arg(long, env = "HOOKBOX_METRICS_ALLOW", value_name = "CIDR", value_delimiter = ',', value_parser = parse_cidr)]
    pub metrics_allow: Vec<Cidr>,
    /// How long events and attempt logs are kept.
    #[arg(long, env = "HOOKBOX_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub retention: Duration,
    /// Data paths searched often (`?data.consignor_id=` on the events and
    /// deliveries listings), comma-separated: each gets an index, made at
    /// start (once; a path no longer named has its index dropped), and
    /// costs a b-tree write per event published.
    #[arg(
        long,
        env = "HOOKBOX_SEARCH_INDEX",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub search_index: Vec<String>,
    /// How long a rotated-out webhook secret keeps signing alongside the new one.
    #[arg(long, env = "HOOKBOX_SECRET_GRACE", default_value = "24h", value_parser = parse_duration)]
    pub secret_grace: Duration,
    /// The largest request body accepted, in bytes (`256KiB`, `1MiB` also work).
    #[arg(long, env = "HOOKBOX_MAX_BODY_SIZE", default_value = "256KiB", value_parser = parse_size)]
    pub max_body_size: u64,
    /// How long a client may take to send one request, head and body: from
    /// its first byte, or for a new connection from connect (TLS handshake
    /// included). Past it the connection is closed, with a 408 if the
    /// request had begun.
    #[arg(long, env = "HOOKBOX_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// How soon a new connection must send its first byte (of its first
    /// request, or of its TLS handshake); a silent one is closed then,
    /// without an answer. At most --request-timeout.
    #[arg(long, env = "HOOKBOX_FIRST_BYTE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub first_byte_timeout: Duration,
    /// Connections open at once from one client address (IPv6: one /64);
    /// more are closed as they arrive. A --trust-proxy address is exempt.
    #[arg(long, env = "HOOKBOX_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_connections_per_client: u32,
    /// Serve the API over HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "HOOKBOX_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "HOOKBOX_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Litestream replicates the database: never checkpoint it (no
    /// automatic checkpoints, none at stop) nor VACUUM it; Litestream does.
    #[arg(long, env = "HOOKBOX_LITESTREAM")]
    pub litestream: bool,
    /// Answer a change (202 for an event) only once Litestream confirms its
    /// transaction on the replica (`litestream sync -wait`, once per group
    /// commit); 503 `replica_unconfirmed` when it does not in time.
    #[arg(long, env = "HOOKBOX_ACK_AFTER_REPLICA", requires = "litestream")]
    pub ack_after_replica: bool,
    /// Litestream's control socket (its config's `socket: path:`), for
    /// --ack-after-replica.
    #[arg(
        long,
        env = "HOOKBOX_LITESTREAM_SOCKET",
        default_value = "/var/run/litestream.sock"
    )]
    pub litestream_socket: PathBuf,
    /// The `litestream` executable, for --ack-after-replica.
    #[arg(long, env = "HOOKBOX_LITESTREAM_COMMAND", default_value = "litestream")]
    pub litestream_command: PathBuf,
    /// How long --ack-after-replica waits for the replica before answering
    /// 503 `replica_unconfirmed`.
    #[arg(long, env = "HOOKBOX_REPLICA_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub replica_timeout: Duration,
}

/// An IP network such as `10.0.0.0/8` or `::1/128`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// A network that contains no address.
    pub fn nothing() -> Cidr {
        Cidr {
            addr: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            prefix: 129,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.prefix > 128 {
            return false;
        }
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V4(_), IpAddr::V6(ip)) => ip
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_cidr(text)
    }
}

pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let text = text.trim();
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("'{text}' is not an IP address or CIDR network"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("'{text}' has a prefix length outside 0..={max}"))?,
    };
    // An IPv4-mapped network (::ffff:10.0.0.0/104) is the IPv4 network it
    // maps: client addresses are compared in their IPv4 form.
    if let IpAddr::V6(v6) = addr
        && let Some(v4) = v6.to_ipv4_mapped()
        && prefix >= 96
    {
        return Ok(Cidr {
            addr: IpAddr::V4(v4),
            prefix: prefix - 96,
        });
    }
    Ok(Cidr { addr, prefix })
}

/// `250ms`, `30s`, `5m`, `6h`, `3d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("'{text}' needs a unit: ms, s, m, h or d (e.g. 30s)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 250ms, 30s, 5m, 6h or 3d"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60 * 1000,
        "h" => 60 * 60 * 1000,
        "d" => 24 * 60 * 60 * 1000,
        _ => {
            return Err(format!(
                "'{text}' has an unknown unit; use ms, s, m, h or d"
            ));
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("'{text}' is too long"))
}

/// A byte count: `262144`, `256KiB`, `1MiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size such as 262144, 256KiB or 1MiB"))?;
    let factor = match unit {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "GiB" => 1024 * 1024 * 1024,
        _ => {
            return Err(format!(
                "'{text}' has an unknown unit; use B, KiB, MiB or GiB"
            ));
        }
    };
    number
        .checked_mul(factor)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{text}' is not a usable size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        let table = [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("6h", 21_600_000),
            ("3d", 259_200_000),
        ];
        for (text, ms) in table {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in ["", "30", "s", "-1s", "1.5s", "3w", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256KiB"), Ok(262_144));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1GB").is_err());
    }

    #[test]
    fn cidr_membership() {
        let table = [
            ("127.0.0.0/8", "127.1.2.3", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("10.1.0.0/17", "10.1.127.255", true),
            ("10.1.0.0/17", "10.1.128.0", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("192.168.1.5", "192.168.1.5", true),
            ("192.168.1.5", "192.168.1.6", false),
            ("::1/128", "::1", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("::/0", "127.0.0.1", false),
            // An IPv4-mapped network is its IPv4 network.
            ("::ffff:127.0.0.1/128", "127.0.0.1", true),
            ("::ffff:10.0.0.0/104", "10.200.0.1", true),
            ("::ffff:10.0.0.0/104", "11.0.0.1", false),
        ];
        for (net, ip, inside) in table {
            let net = parse_cidr(net).unwrap();
            assert_eq!(net.contains(ip.parse().unwrap()), inside, "{net} {ip}");
        }
        for bad in ["", "10.0.0.0/33", "::/129", "example.com", "10.0.0.0/x"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    // Property tests: the parsers behind every duration, size and CIDR flag
    // take whatever an environment file or a command line hands them.
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const UNITS: [(&str, u64); 5] = [
        ("ms", 1),
        ("s", 1000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ];

    const SIZE_UNITS: [(&str, u64); 5] = [
        ("", 1),
        ("B", 1),
        ("KiB", 1024),
        ("MiB", 1024 * 1024),
        ("GiB", 1024 * 1024 * 1024),
    ];

    /// Strings that look almost like flag values: digits, units, signs,
    /// dots, slashes, colons and spaces, in any order.
    fn flag_like() -> impl Strategy<Value = String> {
        "[0-9a-fA-FxmsdhKiBG:./+ \\-\u{0}\u{e9}\u{1F600}]{0,40}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn duration_parsing_never_panics_on_any_string(text in any::<String>(), near in flag_like()) {
            let _ = parse_duration(&text);
            let _ = parse_duration(&near);
        }

        #[test]
        fn duration_in_any_unit_parses_to_exactly_its_milliseconds_or_is_refused_as_too_long(
            number in prop_oneof![0u64..1_000_000, any::<u64>()],
            unit in 0usize..UNITS.len(),
            pad in "[ \t]{0,2}",
        ) {
            let (name, factor) = UNITS[unit];
            let parsed = parse_duration(&format!("{pad}{number}{name}{pad}"));
            match number.checked_mul(factor) {
                Some(ms) => prop_assert_eq!(parsed, Ok(Duration::from_millis(ms))),
                None => prop_assert!(parsed.is_err(), "{number}{name} overflows but parsed"),
            }
        }

        #[test]
        fn duration_written_in_its_largest_exact_unit_round_trips(ms in any::<u64>()) {
            let (name, factor) = UNITS
                .iter()
                .rev()
                .copied()
                .find(|(_, f)| ms % f == 0)
                .unwrap_or(UNITS[0]);
            let text = format!("{}{name}", ms / factor);
            prop_assert_eq!(parse_duration(&text), Ok(Duration::from_millis(ms)), "{}", text);
        }

        #[test]
        fn duration_without_a_known_unit_is_refused(
            number in any::<u64>(),
            unit in "[a-zA-Z]{0,4}",
        ) {
            prop_assume!(!UNITS.iter().any(|(name, _)| *name == unit));
            let unknown = format!("{number}{unit}");
            let negative = format!("-{number}s");
            prop_assert!(parse_duration(&unknown).is_err(), "{} parsed", unknown);
            prop_assert!(parse_duration(&negative).is_err(), "{} parsed", negative);
        }

        #[test]
        fn size_parsing_never_panics_on_any_string(text in any::<String>(), near in flag_like()) {
            let _ = parse_size(&text);
            let _ = parse_size(&near);
        }

        #[test]
        fn size_in_any_unit_parses_to_its_bytes_and_zero_or_overflow_is_refused(
            number in prop_oneof![0u64..100_000, any::<u64>()],
            unit in 0usize..SIZE_UNITS.len(),
        ) {
            let (name, factor) = SIZE_UNITS[unit];
            let parsed = parse_size(&format!("{number}{name}"));
            match number.checked_mul(factor) {
                Some(bytes) if bytes > 0 => prop_assert_eq!(parsed, Ok(bytes)),
                _ => prop_assert!(parsed.is_err(), "{number}{name} should be refused"),
            }
        }

        #[test]
        fn cidr_parsing_never_panics_on_any_string(text in any::<String>(), near in flag_like()) {
            let _ = parse_cidr(&text);
            let _ = parse_cidr(&near);
            if let Ok(net) = parse_cidr(&text) {
                // Whatever was accepted prints as something accepted again.
                prop_assert_eq!(parse_cidr(&net.to_string()), Ok(net));
            }
        }

        #[test]
        fn ipv4_cidr_round_trips_and_contains_exactly_the_addresses_sharing_its_prefix(
            net in any::<u32>(),
            prefix in 0u8..=32,
            probe in any::<u32>(),
        ) {
            let addr = Ipv4Addr::from(net);
            let cidr = parse_cidr(&format!("{addr}/{prefix}")).unwrap();
            prop_assert_eq!(cidr.to_string(), format!("{addr}/{prefix}"));
            prop_assert_eq!(parse_cidr(&cidr.to_string()), Ok(cidr));
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            let inside = net & mask == probe & mask;
            prop_assert_eq!(cidr.contains(IpAddr::V4(Ipv4Addr::from(probe))), inside);
            // The same address seen on a dual-stack socket, IPv4-mapped.
            let mapped = Ipv4Addr::from(probe).to_ipv6_mapped();
            prop_assert_eq!(cidr.contains(IpAddr::V6(mapped)), inside);
            prop_assert!(cidr.contains(IpAddr::V4(addr)));
            // An IPv4-mapped spelling of the network is the same network.
            let v6 = format!("::ffff:{addr}/{}", u16::from(prefix) + 96);
            prop_assert_eq!(parse_cidr(&v6), Ok(cidr));
        }

        #[test]
        fn ipv6_cidr_round_trips_and_contains_exactly_the_addresses_sharing_its_prefix(
            net in any::<u128>(),
            prefix in 0u8..=128,
            probe in any::<u128>(),
        ) {
            let addr = Ipv6Addr::from(net);
            prop_assume!(addr.to_ipv4_mapped().is_none());
            let cidr = parse_cidr(&format!("{addr}/{prefix}")).unwrap();
            prop_assert_eq!(parse_cidr(&cidr.to_string()), Ok(cidr));
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            let probe_addr = Ipv6Addr::from(probe);
            prop_assert_eq!(
                cidr.contains(IpAddr::V6(probe_addr)),
                net & mask == probe & mask
            );
            // An IPv6 network never holds an IPv4 address.
            prop_assert!(!cidr.contains(IpAddr::V4(Ipv4Addr::from(probe as u32))));
        }

        #[test]
        fn cidr_prefix_longer_than_the_address_is_refused(
            v4 in any::<u32>(),
            v6 in any::<u128>(),
            over4 in 33u32..100_000,
            over6 in 129u32..100_000,
        ) {
            let v4 = Ipv4Addr::from(v4);
            let v6 = Ipv6Addr::from(v6);
            for text in [format!("{v4}/{over4}"), format!("{v6}/{over6}"), format!("{v4}/-1")] {
                prop_assert!(parse_cidr(&text).is_err(), "{} parsed", text);
            }
        }
    }
}
