//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]
#![allow(dead_code, unused_imports)] // hookbox patch: quiet warnings newer compilers raise on upstream code

#[cfg(feature = "ssl-rustls")]
use zeroize::Zeroizing;

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{IpAddr, Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use client::ClientConnection;
use connection::Connection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::{ReadWrite, Request};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;
pub use util::{AcceptEvent, AcceptObserver, PeerFilter};
pub use util::{PrereadBudget, PrereadFilter, PrereadRefused};

mod client;
mod common;
mod connection;
mod request;
mod response;
mod ssl;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // hookbox patch: once set, each request is answered by this on its
    // connection's own thread instead of being queued for `recv()`.
    handler: Arc<OnceLock<Handler>>,
}

/// hookbox patch: answers a request on the thread of the connection it
/// came on (see [`Server::answer_on_connection_threads`]).
pub type Handler = Box<dyn Fn(Request) + Send + Sync>;

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// hookbox patch: limits applied to every accepted connection.
#[derive(Clone)]
pub struct ConnectionLimits {
    /// Request bodies up to this many bytes are read in full on the
    /// connection's own thread before the request is handed out, so a client
    /// that stalls mid-body never holds a thread that calls `recv()`.
    /// Upstream: 1024.
    pub preread_body_bytes: usize,
    /// Read and write timeout of each socket; an idle keep-alive connection
    /// is closed after it. Upstream: none.
    pub timeout: Option<std::time::Duration>,
    /// How long reading one request may take in all — request line,
    /// headers and read-ahead body, and for a new connection its TLS
    /// handshake — from its first byte (a new connection: from accept).
    /// Past it the connection is answered 408, if the request had begun,
    /// and closed. Upstream: none (`timeout` bounds each read, so a client
    /// sending a byte now and then held its connection for ever).
    pub request_timeout: Option<std::time::Duration>,
    /// Connections open at once; more are closed as they arrive. Upstream:
    /// unlimited (a thread each).
    pub max_connections: usize,
    /// How soon after accept a new connection must send its first byte (of
    /// its first request, or of its TLS handshake); a silent one is closed
    /// without an answer then. Normally shorter than `request_timeout`,
    /// which still bounds the whole first request. `None`: only
    /// `request_timeout`. Upstream: no such deadline.
    pub first_byte_timeout: Option<std::time::Duration>,
    /// Asked with the peer's address as soon as a connection is accepted:
    /// `false` closes it there, before a thread, a connection slot or a
    /// per-peer slot is spent (`util::admission`). `None`: every peer.
    /// Upstream: no such check.
    pub admit: Option<PeerFilter>,
    /// Written, without waiting, to a plain-HTTP connection that `admit`
    /// refuses, just before it is closed (a complete HTTP response, so that
    /// a client is told why). `None`: closed without a word.
    pub refusal: Option<Vec<u8>>,
    /// Connections open at once from one client address (IPv6: one /64);
    /// more are closed as they arrive. Upstream: unlimited.
    pub max_per_peer: usize,
    /// Peers the per-peer cap does not apply to (a reverse proxy carries
    /// many clients on one address). `None`: none.
    pub per_peer_exempt: Option<PeerFilter>,
    /// Told of every connection refused at accept and of every failed
    /// `accept()`, on the accept thread, so that the application can log
    /// them at a rate of its choosing. `None`: each is logged at debug
    /// level (a warning per connection is a log flood under attack).
    pub on_accept_event: Option<AcceptObserver>,
    /// Asked with the peer's address once a request's head is parsed, before
    /// its body would be read ahead: `false` leaves the body unread (the
    /// request is handed out with `Request::preread_refused`, and its
    /// connection closed after the answer). `None`: every peer may.
    /// Upstream: no such check.
    pub preread_allowed: Option<PrereadFilter>,
    /// Bytes of bodies read ahead at once across all connections; a body
    /// that would go over is left unread, like one the filter refuses.
    /// `None`: unbounded (`preread_body_bytes` per connection). Upstream:
    /// no such bound.
    pub preread_budget: Option<PrereadBudget>,
}

impl std::fmt::Debug for ConnectionLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimits")
            .field("preread_body_bytes", &self.preread_body_bytes)
            .field("timeout", &self.timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_connections", &self.max_connections)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("admit", &self.admit.as_ref().map(|_| "Fn"))
            .field("refusal", &self.refusal.as_ref().map(Vec::len))
            .field("max_per_peer", &self.max_per_peer)
            .field("per_peer_exempt", &self.per_peer_exempt.as_ref().map(|_| "Fn"))
            .field("on_accept_event", &self.on_accept_event.as_ref().map(|_| "Fn"))
            .field("preread_allowed", &self.preread_allowed.as_ref().map(|_| "Fn"))
            .field("preread_budget", &self.preread_budget)
            .finish()
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            preread_body_bytes: 1024,
            timeout: None,
            request_timeout: None,
            max_connections: usize::MAX,
            first_byte_timeout: None,
            admit: None,
            refusal: None,
            max_per_peer: usize::MAX,
            per_peer_exempt: None,
            on_accept_event: None,
            preread_allowed: None,
            preread_budget: None,
        }
    }
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

#[cfg(feature = "ssl-rustls")]
impl SslConfig {
    /// hookbox patch: parses the certificate and key as the server will, so
    /// that a bad pair can be refused before anything else starts.
    pub fn check(&self) -> Result<(), Box<dyn Error + Send + Sync + 'static>> {
        crate::ssl::SslContextImpl::from_pem(
            self.certificate.clone(),
            Zeroizing::new(self.private_key.clone()),
        )
        .map(|_| ())
    }
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    /// Shortcut for an HTTPS server on a specific address.
    #[cfg(feature = "ssl-rustls")]
    #[inline]
    pub fn https<A>(
        addr: A,
        config: SslConfig,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: Some(config),
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.ssl)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::from_listener_with_limits(listener, ssl_config, ConnectionLimits::default())
    }

    /// hookbox patch: an HTTP server on `addr` with `limits` on each connection.
    pub fn http_with_limits<A>(
        addr: A,
        limits: ConnectionLimits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        let listener = ConfigListenAddr::from_socket_addrs(addr)?.bind()?;
        Self::from_listener_with_limits(listener, None, limits)
    }

    /// hookbox patch: an HTTPS server on `addr` with `limits` on each
    /// connection.
    #[cfg(feature = "ssl-rustls")]
    pub fn https_with_limits<A>(
        addr: A,
        config: SslConfig,
        limits: ConnectionLimits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        let listener = ConfigListenAddr::from_socket_addrs(addr)?.bind()?;
        Self::from_listener_with_limits(listener, Some(config), limits)
    }

    /// hookbox patch: `from_listener` with `limits` on each connection.
    pub fn from_listener_with_limits<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
        limits: ConnectionLimits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = listener.into();
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };

        // building the SSL capabilities
        #[cfg(not(feature = "ssl-rustls"))]
        type SslContext = ();
        #[cfg(feature = "ssl-rustls")]
        type SslContext = crate::ssl::SslContextImpl;
        let ssl: Option<SslContext> = {
            match ssl_config {
                #[cfg(feature = "ssl-rustls")]
                Some(config) => Some(SslContext::from_pem(
                    config.certificate,
                    Zeroizing::new(config.private_key),
                )?),
                #[cfg(not(feature = "ssl-rustls"))]
                Some(_) => return Err(
                    "Building a server with SSL requires enabling the `ssl` feature in tiny-http"
                        .into(),
                ),
                None => None,
            }
        };

        // creating a task where server.accept() is continuously called
        // and ClientConnection objects are pushed in the messages queue
        let messages = MessagesQueue::with_capacity(8);

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        let handler: Arc<OnceLock<Handler>> = Arc::new(OnceLock::new());
        let inside_handler = handler.clone();
        // hookbox patch: every open connection, so that an idle one can
        // make room for a new one when all slots are taken
        // (`util::eviction`).
        let registry = util::Registry::new(limits.max_connections);
        // hookbox patch: one read-ahead policy, and one budget, for all
        // connections (`util::preread`).
        let preread = Arc::new(util::Preread {
            max_body: limits.preread_body_bytes,
            allowed: limits.preread_allowed.clone(),
            budget: limits.preread_budget.map(util::Budget::new),
        });
        thread::spawn(move || {
            // a tasks pool is used to dispatch the connections into threads
            let tasks_pool = util::TaskPool::new();

            log::debug!("Running accept thread");
            // hookbox patch: who may hold a connection is decided here, at
            // accept, before anything is spent on it (`util::admission`).
            let peers = util::PeerCounts::new(limits.max_per_peer);
            let report = |event: AcceptEvent<'_>| match &limits.on_accept_event {
                Some(observer) => observer(&event),
                None => log::debug!("accept: {:?}", event),
            };
            while !inside_close_trigger.load(Relaxed) {
                let (mut sock, peer) = match server.accept() {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // hookbox patch: upstream ended the accept loop on any
                        // error, so one EMFILE stopped the server taking
                        // connections for good. Pause briefly and go on.
                        report(AcceptEvent::AcceptFailed(&e));
                        thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    }
                };
                let peer = peer.map(|a| a.ip().to_canonical());
                if let (Some(ip), Some(admit)) = (peer, &limits.admit) {
                    if !admit(ip) {
                        if let (None, Some(refusal)) = (&ssl, &limits.refusal) {
                            sock.write_without_waiting(refusal);
                        }
                        report(AcceptEvent::NotAdmitted(ip));
                        continue;
                    }
                }
                let exempt = |ip: IpAddr| limits.per_peer_exempt.as_ref().is_some_and(|f| f(ip));
                let peer_slot = match peer {
                    Some(ip) if limits.max_per_peer < usize::MAX && !exempt(ip) => {
                        match peers.take(ip) {
                            Some(slot) => Some(slot),
                            None => {
                                report(AcceptEvent::PeerFull {
                                    peer: ip,
                                    limit: peers.limit(),
                                });
                                continue;
                            }
                        }
                    }
                    _ => None,
                };
                // hookbox patch: at most `max_connections` at once. When
                // all are taken, an idle one (of the peer holding the
                // most) is closed to make room; only if none is idle is
                // the new one closed at once rather than given a thread.
                // (After the per-peer cap, so that nothing is evicted for
                // a connection that cap refuses.)
                match registry.make_room() {
                    util::Room::Free => {}
                    util::Room::Evicted(evicted) => report(AcceptEvent::EvictedIdle {
                        peer: evicted,
                        limit: registry.limit(),
                    }),
                    util::Room::Full => {
                        report(AcceptEvent::ServerFull {
                            limit: registry.limit(),
                        });
                        continue;
                    }
                }
                // hookbox patch: a handle to shut the socket down from
                // another thread — to evict it, or when a request is
                // dropped with its body unread (`util::body_guard`) — shared
                // by both, so that it costs one descriptor.
                let closer = match sock.try_clone() {
                    Ok(clone) => Arc::new(util::Closer::new(clone)),
                    Err(e) => {
                        report(AcceptEvent::AcceptFailed(&e));
                        thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    }
                };

                let new_client = {
                    use util::{RefinedTcpStream, RequestDeadline, TimedConnection};
                    if let Err(e) = sock.set_timeouts(limits.timeout) {
                        log::warn!("setting socket timeouts: {}", e);
                    }
                    // hookbox patch: the first request's clock (and the
                    // TLS handshake's) starts now.
                    let deadline = RequestDeadline::new(
                        limits.request_timeout,
                        limits.timeout,
                        limits.first_byte_timeout,
                    );
                    let sock = TimedConnection::new(sock, deadline.clone());
                    let registered = registry.register(peer, deadline.clone(), closer.clone());
                    let halves = match ssl {
                        None => RefinedTcpStream::new(sock),
                        #[cfg(feature = "ssl-rustls")]
                        Some(ref ssl) => {
                            // trying to apply SSL over the connection
                            // if an error occurs, we just close the socket and resume listening
                            let sock = match ssl.accept(sock) {
                                Ok(s) => s,
                                Err(_) => continue,
                            };

                            RefinedTcpStream::new(sock)
                        }
                        #[cfg(not(feature = "ssl-rustls"))]
                        Some(ref _ssl) => unreachable!(),
                    };

                    halves.map(|(read_closable, write_closable)| {
                        let client = ClientConnection::new(
                            write_closable,
                            read_closable,
                            preread.clone(),
                            deadline,
                            Some(closer),
                        );
                        (client, registered)
                    })
                };

                match new_client {
                    Ok((client, registered)) => {
                        let messages = inside_messages.clone();
                        let handler = inside_handler.clone();
                        let mut client = Some(client);
                        tasks_pool.spawn(Box::new(move || {
                            let _registered = &registered;
                            let _peer_slot = &peer_slot;
                            if let Some(client) = client.take() {
                                // hookbox patch: every connection, not only
                                // HTTPS ones, waits for the answer to one
                                // request before reading the next. Upstream
                                // read pipelined plain-HTTP requests ahead
                                // into an unbounded queue, so one client that
                                // never read its answers grew memory without
                                // limit and pinned every recv() thread.
                                let (sender, receiver) = mpsc::channel();
                                for rq in client {
                                    // hookbox patch: answered here, then
                                    // the next request is read.
                                    if let Some(handler) = handler.get() {
                                        handler(rq);
                                        continue;
                                    }
                                    messages.push(rq.with_notify_sender(sender.clone()).into());
                                    // hookbox patch: a handler set since
                                    // the check above may have drained the
                                    // queue before this push; answer what
                                    // is queued, this request too.
                                    if let Some(handler) = handler.get() {
                                        while let Some(Message::NewRequest(rq)) = messages.try_pop() {
                                            handler(rq);
                                        }
                                    }
                                    if receiver.recv().is_err() {
                                        break;
                                    }
                                }
                            }
                        }));
                    }

                    Err(e) => {
                        report(AcceptEvent::AcceptFailed(&e));
                        thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    }
                }
            }
            log::debug!("Terminating accept thread");
        });

        // result
        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
            handler,
        })
    }

    /// hookbox patch: from now on, every request is given to `handler` on
    /// its connection's own thread, which reads the connection's next
    /// request once `handler` returns. Handing each request to a `recv()`
    /// thread instead cost two thread switches per request (the hand-over
    /// and the wake-up after the answer). Requests queued before this call
    /// are answered by `handler` on this thread before it returns (or by
    /// the connection thread that queued one just as the handler was set).
    /// Only the first call takes effect; it returns whether this one did.
    pub fn answer_on_connection_threads(&self, handler: Handler) -> bool {
        let first = self.handler.set(handler).is_ok();
        if let Some(handler) = self.handler.get() {
            while let Some(Message::NewRequest(rq)) = self.messages.try_pop() {
                handler(rq);
            }
        }
        first
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        unimplemented!()
        //self.requests_receiver.lock().len()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, Relaxed);
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
