//! hookbox patch: the end of a request body.
//!
//! When a request is dropped before its body was read to the end (a 413,
//! or a handler that ignored the body), the rest must be skipped before the
//! next request on the connection can be read, or the body's bytes would be
//! parsed as the next request (request smuggling). `BodyGuard` skips at most
//! `MAX_SKIP` bytes through a small buffer; if the body is longer, or the
//! read fails, it marks the connection abandoned and the connection is
//! closed instead of read further.

use std::io::{Read, Result as IoResult};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The most unread body bytes skipped to keep a connection alive.
const MAX_SKIP: usize = 1024 * 1024;

pub struct BodyGuard<R: Read> {
    inner: R,
    finished: bool,
    abandoned: Arc<AtomicBool>,
}

impl<R: Read> BodyGuard<R> {
    pub fn new(inner: R, abandoned: Arc<AtomicBool>) -> BodyGuard<R> {
        BodyGuard {
            inner,
            finished: false,
            abandoned,
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
        let mut buf = [0u8; 8192];
        let mut skipped = 0;
        while !self.finished && skipped <= MAX_SKIP {
            match self.inner.read(&mut buf) {
                Ok(0) => self.finished = true,
                Ok(n) => skipped += n,
                Err(_) => break,
            }
        }
        if !self.finished {
            self.abandoned.store(true, Ordering::Release);
        }
    }
}
