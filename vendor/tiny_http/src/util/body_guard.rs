//! hookbox patch: the end of a request body.
//!
//! When a request is dropped before its body was read to the end (a 413, or
//! an error answered before the body was needed), the rest of the body is
//! still on the connection. Upstream skipped it by reading it all — through
//! a buffer as large as the client's Content-Length, on the thread that
//! answered, for as long as the client cared to take — and did not skip an
//! unread chunked body at all, so its bytes were parsed as the next request.
//!
//! `BodyGuard` reads nothing more: it marks the connection abandoned and
//! shuts the socket down. The connection's reader then sees end of file, and
//! checks the mark before it would parse anything still buffered as a
//! request, so a body is never executed as a request.

use std::io::{Read, Result as IoResult};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::util::Closer;

pub struct BodyGuard<R: Read> {
    inner: R,
    finished: bool,
    abandoned: Arc<AtomicBool>,
    closer: Option<Arc<Closer>>,
}

impl<R: Read> BodyGuard<R> {
    pub(crate) fn new(
        inner: R,
        abandoned: Arc<AtomicBool>,
        closer: Option<Arc<Closer>>,
    ) -> BodyGuard<R> {
        BodyGuard {
            inner,
            finished: false,
            abandoned,
            closer,
        }
    }
}

impl<R: Read> Read for BodyGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finished = true;
        }
        Ok(n)
    }
}

impl<R: Read> Drop for BodyGuard<R> {
    fn drop(&mut self) {
        if !self.finished {
            self.abandoned.store(true, Ordering::Release);
            if let Some(closer) = &self.closer {
                closer.close();
            }
        }
    }
}
