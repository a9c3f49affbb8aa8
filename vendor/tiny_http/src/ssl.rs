//! Modules providing SSL/TLS implementations.
//!
//! hookbox patch: only rustls remains (0.23, ring provider); the OpenSSL
//! backend was removed rather than kept untested.

#[cfg(feature = "ssl-rustls")]
pub(crate) mod rustls;
#[cfg(feature = "ssl-rustls")]
pub(crate) use self::rustls::RustlsContext as SslContextImpl;
#[cfg(feature = "ssl-rustls")]
pub(crate) use self::rustls::RustlsStream as SslStream;
