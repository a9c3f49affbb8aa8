//! systemd's notification protocol (`sd_notify`), without libsystemd: one
//! datagram per message to the socket named by `NOTIFY_SOCKET`.
//!
//! `serve` sends `READY=1` once it listens, `STOPPING=1` on SIGTERM, and —
//! when systemd sets `WATCHDOG_USEC` — `WATCHDOG=1` every half of that, but
//! only while the writer commits and the scheduler goes round: a stuck
//! writer or a dead scheduler stops the pings, and systemd restarts the
//! service. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// Where notifications go, if anywhere.
pub struct Notifier {
    socket: Option<(UnixDatagram, Target)>,
}

enum Target {
    Path(PathBuf),
    /// A Linux abstract socket (`@name` in `NOTIFY_SOCKET`).
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; a notifier that does nothing without it.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|value| {
            let bytes = value.as_encoded_bytes();
            match bytes.first() {
                Some(b'@') => Some(Target::Abstract(bytes[1..].to_vec())),
                Some(b'/') => Some(Target::Path(PathBuf::from(&value))),
                _ => {
                    log::warn!("NOTIFY_SOCKET is neither a path nor @abstract; not notifying");
                    None
                }
            }
        });
        let socket = target.and_then(|target| match UnixDatagram::unbound() {
            Ok(socket) => Some((socket, target)),
            Err(e) => {
                log::warn!("cannot create the systemd notification socket: {e}");
                None
            }
        });
        Notifier { socket }
    }

    /// Sends one message; failures are logged, never fatal.
    pub fn send(&self, message: &str) {
        let Some((socket, target)) = &self.socket else {
            return;
        };
        let sent = match target {
            Target::Path(path) => socket.send_to(message.as_bytes(), path),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
            }
        };
        if let Err(e) = sent {
            log::warn!("notifying systemd ({}): {e}", message.trim_end());
        }
    }

    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }
}

/// The watchdog interval systemd asked for, if it asked this process:
/// `WATCHDOG_USEC`, when `WATCHDOG_PID` is unset or is our pid.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Starts the thread that sends `WATCHDOG=1` every `interval / 2` while
/// `healthy(timeout)` says yes (it is given half the interval to answer);
/// it returns when `stopping` is set.
pub fn spawn_watchdog(
    notifier: Arc<Notifier>,
    interval: Duration,
    stopping: Arc<AtomicBool>,
    healthy: impl Fn(Duration) -> Result<(), String> + Send + 'static,
) -> std::io::Result<thread::JoinHandle<()>> {
    let every = interval / 2;
    thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let mut was_healthy = true;
            crate::clock::every(Duration::ZERO, every, &stopping, || {
                match healthy(every) {
                    Ok(()) => {
                        if !was_healthy {
                            log::warn!("watchdog: healthy again; pinging systemd");
                        }
                        was_healthy = true;
                        notifier.send("WATCHDOG=1\n");
                    }
                    // Stopping: the writer goes away on purpose.
                    Err(_) if stopping.load(Ordering::Acquire) => return false,
                    Err(why) => {
                        if was_healthy {
                            log::error!("watchdog: {why}; not pinging systemd");
                        }
                        was_healthy = false;
                    }
                }
                true
            });
        })
}
