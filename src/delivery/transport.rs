//! One write per request: a link in ureq's connector chain that holds what
//! ureq transmits until it waits for the answer, then sends it at once.
//!
//! ureq transmits a request's head and its body separately, so each
//! delivery cost two `sendto` calls and two TCP segments, and a receiver
//! that reads the head before the body has arrived wakes twice. Under the
//! realistic load the workers' `sendto` was about a quarter of their CPU.
//! [`Coalesce`] sits between the TCP socket and TLS: ureq's writes, and
//! rustls' records over them, go into one buffer that is written when ureq
//! next waits for input (the response), or sooner once it holds
//! [`FLUSH_AT`] bytes. Nothing is read before everything written so far is
//! sent, so a request/response exchange and a TLS handshake see the same
//! bytes in the same order as without it.

use std::fmt;

use ureq::Error;
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// Held bytes beyond which a transmit is sent without waiting for a read:
/// a large body streams rather than piling up in memory.
pub const FLUSH_AT: usize = 64 * 1024;

/// The connector: wraps whatever transport the chain made before it.
#[derive(Debug, Default)]
pub struct CoalesceConnector;

impl<In: Transport> Connector<In> for CoalesceConnector {
    type Out = Coalesce<In>;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        Ok(chained.map(Coalesce::new))
    }
}

/// A transport whose output is held until the next read.
pub struct Coalesce<T> {
    inner: T,
    held: Vec<u8>,
}

impl<T: Transport> Coalesce<T> {
    pub fn new(inner: T) -> Coalesce<T> {
        Coalesce {
            inner,
            held: Vec::new(),
        }
    }

    /// Writes what is held, through the inner transport's output buffer
    /// (which ureq does not touch while it waits for input), as few
    /// transmits as that buffer allows.
    fn flush(&mut self, timeout: NextTimeout) -> Result<(), Error> {
        let mut sent = 0;
        while sent < self.held.len() {
            let output = self.inner.buffers().output();
            let n = output.len().min(self.held.len() - sent);
            if n == 0 {
                break;
            }
            output[..n].copy_from_slice(&self.held[sent..sent + n]);
            let result = self.inner.transmit_output(n, timeout);
            if result.is_err() {
                self.held.clear();
                return result;
            }
            sent += n;
        }
        self.held.clear();
        Ok(())
    }
}

impl<T: Transport> Transport for Coalesce<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        let output = self.inner.buffers().output();
        let amount = amount.min(output.len());
        self.held.extend_from_slice(&output[..amount]);
        if self.held.len() >= FLUSH_AT {
            self.flush(timeout)?;
        }
        Ok(())
    }

    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.flush(timeout)?;
        self.inner.maybe_await_input(timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        self.flush(timeout)?;
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        // A pooled connection holds nothing: its last exchange read an
        // answer, which sent everything first.
        self.held.is_empty() && self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

impl<T: fmt::Debug> fmt::Debug for Coalesce<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("inner", &self.inner)
            .field("held", &self.held.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::unversioned::transport::LazyBuffers;

    /// ureq's side of a connection, seen from below: what each transmit
    /// carried, and an answer to read.
    #[derive(Debug)]
    struct Wire {
        buffers: LazyBuffers,
        transmits: Vec<Vec<u8>>,
        answer: Vec<u8>,
    }

    impl Wire {
        fn new(output_size: usize) -> Wire {
            Wire {
                buffers: LazyBuffers::new(1024, output_size),
                transmits: Vec::new(),
                answer: b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
            }
        }
    }

    impl Transport for Wire {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }

        fn transmit_output(&mut self, amount: usize, _: NextTimeout) -> Result<(), Error> {
            let sent = self.buffers.output()[..amount].to_vec();
            self.transmits.push(sent);
            Ok(())
        }

        fn await_input(&mut self, _: NextTimeout) -> Result<bool, Error> {
            let answer = std::mem::take(&mut self.answer);
            let buf = self.buffers.input_append_buf();
            buf[..answer.len()].copy_from_slice(&answer);
            self.buffers.input_appended(answer.len());
            Ok(!answer.is_empty())
        }

        fn is_open(&mut self) -> bool {
            true
        }
    }

    /// Writes `bytes` the way ureq does: into the output buffer, then a
    /// transmit of that many.
    fn write(t: &mut impl Transport, bytes: &[u8]) {
        t.buffers().output()[..bytes.len()].copy_from_slice(bytes);
        t.transmit_output(bytes.len(), NextTimeout::default())
            .unwrap();
    }

    #[test]
    fn a_head_and_a_body_leave_in_one_transmit_before_the_answer_is_read() {
        let mut t = Coalesce::new(Wire::new(4096));
        write(&mut t, b"POST /hook HTTP/1.1\r\nContent-Length: 2\r\n\r\n");
        write(&mut t, b"{}");
        assert!(
            t.inner.transmits.is_empty(),
            "nothing is sent before a read"
        );
        assert!(t.await_input(NextTimeout::default()).unwrap());
        assert_eq!(
            t.inner.transmits,
            vec![b"POST /hook HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_vec()]
        );
        assert_eq!(t.buffers().input(), b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(t.is_open());
    }

    #[test]
    fn more_than_the_output_buffer_holds_is_sent_in_order_in_buffer_sized_pieces() {
        let mut t = Coalesce::new(Wire::new(16));
        let body: Vec<u8> = (0..40u8).collect();
        for piece in body.chunks(10) {
            write(&mut t, piece);
        }
        t.maybe_await_input(NextTimeout::default()).unwrap();
        let sizes: Vec<usize> = t.inner.transmits.iter().map(Vec::len).collect();
        assert_eq!(sizes, [16, 16, 8]);
        assert_eq!(t.inner.transmits.concat(), body);
    }

    #[test]
    fn a_large_body_is_sent_once_it_passes_the_threshold_without_waiting_for_a_read() {
        let mut t = Coalesce::new(Wire::new(FLUSH_AT));
        let piece = vec![7u8; FLUSH_AT / 2];
        write(&mut t, &piece);
        assert!(t.inner.transmits.is_empty());
        write(&mut t, &piece);
        assert_eq!(t.inner.transmits.concat().len(), FLUSH_AT);
        assert!(t.held.is_empty());
    }
}
