//! hookbox patch: ported from rustls 0.20 and rustls-pemfile 0.2 to rustls
//! 0.23 with its ring provider (the copy ureq 3 brings, so no second rustls
//! and no second crypto backend), reading PEM with rustls' own pki-types.
//! Errors are returned, never panics: a bad key or certificate file is an
//! error at start-up. The stream runs over a [`TimedConnection`], so the
//! request deadline also bounds the TLS handshake. The `Closer` that ends
//! a connection from another thread (an abandoned body, an eviction) is a
//! duplicate of the socket under the session, taken at accept, so those
//! end a TLS connection as they end a plain one.

use crate::util::refined_tcp_stream::Stream as RefinedStream;
use crate::util::TimedConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::error::Error;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use zeroize::Zeroizing;

type TlsStream = rustls::StreamOwned<rustls::ServerConnection, TimedConnection>;

/// A wrapper around an owned Rustls connection and corresponding stream.
///
/// Uses an internal Mutex to permit disparate reader & writer threads to access the stream independently.
pub(crate) struct RustlsStream(Arc<Mutex<TlsStream>>);

impl RustlsStream {
    fn lock(&self) -> std::io::Result<MutexGuard<'_, TlsStream>> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("a thread panicked while using this TLS stream"))
    }

    pub(crate) fn peer_addr(&mut self) -> std::io::Result<Option<SocketAddr>> {
        self.lock()?.sock.connection_mut().peer_addr()
    }

    pub(crate) fn shutdown(&mut self, how: Shutdown) -> std::io::Result<()> {
        let mut stream = self.lock()?;
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            // Say goodbye properly where the handshake got that far; the
            // socket's write timeout bounds this.
            let stream = &mut *stream;
            if !stream.conn.is_handshaking() {
                stream.conn.send_close_notify();
                while stream.conn.wants_write() {
                    if stream.conn.write_tls(&mut stream.sock).is_err() {
                        break;
                    }
                }
            }
        }
        stream.sock.connection().shutdown(how)
    }
}

impl Clone for RustlsStream {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl Read for RustlsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.lock()?.read(buf)
    }
}

/// hookbox patch: the server writes only after it has read a request, so
/// a write while the handshake is unfinished is an error answer (400) to a
/// client that never finished it — one that spoke plain HTTP, say. rustls
/// would first try to finish the handshake, blocking on a read until the
/// request deadline; refuse at once instead.
fn handshake_unfinished() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the TLS handshake did not complete",
    )
}

impl Write for RustlsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut stream = self.lock()?;
        if stream.conn.is_handshaking() {
            return Err(handshake_unfinished());
        }
        stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut stream = self.lock()?;
        if stream.conn.is_handshaking() {
            return Err(handshake_unfinished());
        }
        stream.flush()
    }
}

pub(crate) struct RustlsContext(Arc<rustls::ServerConfig>);

impl RustlsContext {
    pub(crate) fn from_pem(
        certificates: Vec<u8>,
        private_key: Zeroizing<Vec<u8>>,
    ) -> Result<Self, Box<dyn Error + Send + Sync>> {
        let certificate_chain = CertificateDer::pem_slice_iter(&certificates)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("reading the certificate PEM: {e}"))?;
        if certificate_chain.is_empty() {
            return Err("the certificate file holds no PEM certificate".into());
        }

        let private_key = PrivateKeyDer::from_pem_slice(&private_key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "the key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1; encrypted keys are not supported)"
                    .to_owned()
            }
            e => format!("reading the private key PEM: {e}"),
        })?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_conf = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("setting up TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certificate_chain, private_key)
            .map_err(|e| format!("the certificate and key cannot be used together: {e}"))?;

        Ok(Self(Arc::new(tls_conf)))
    }

    pub(crate) fn accept(
        &self,
        stream: TimedConnection,
    ) -> Result<RustlsStream, Box<dyn Error + Send + Sync + 'static>> {
        // No I/O here: the handshake happens on the connection's own thread,
        // at its first read, under the request deadline.
        let connection = rustls::ServerConnection::new(self.0.clone())?;
        Ok(RustlsStream(Arc::new(Mutex::new(
            rustls::StreamOwned::new(connection, stream),
        ))))
    }
}

impl From<RustlsStream> for RefinedStream {
    fn from(stream: RustlsStream) -> Self {
        Self::Https(stream)
    }
}
