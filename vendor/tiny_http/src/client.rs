use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read};

use std::net::SocketAddr;
use std::str::FromStr;

use crate::common::{HTTPVersion, Method};
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// hookbox patch: the longest request line or header line accepted.
const MAX_LINE_BYTES: usize = 8 * 1024;
/// hookbox patch: the most header lines accepted in one request.
const MAX_HEADERS: usize = 100;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // hookbox patch: set when a request was dropped with its body unread;
    // the connection then ends instead of parsing the body as a request.
    abandoned: std::sync::Arc<std::sync::atomic::AtomicBool>,

    // hookbox patch: ends the connection from the thread that dropped such
    // a request.
    closer: Option<std::sync::Arc<crate::util::Closer>>,

    // hookbox patch: which bodies are read on this thread: up to what size,
    // from which peers, within what budget (`util::preread`).
    preread: std::sync::Arc<crate::util::Preread>,

    // hookbox patch: the time left to read the current request, enforced
    // by the socket (`util::deadline`); told here when a request begins and
    // when it has been read.
    deadline: std::sync::Arc<crate::util::RequestDeadline>,

    // hookbox patch: a byte of the current request has arrived, so a
    // timeout is answered 408 rather than closed silently.
    request_begun: bool,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    /// hookbox patch: a request line over `MAX_LINE_BYTES` that starts like
    /// one (a method, a space): its URL is too long.
    UriTooLong,
    /// hookbox patch: the framing (Content-Length, Transfer-Encoding, the
    /// chunks) is ambiguous or malformed; the message says how.
    BadFraming(HTTPVersion, &'static str),
    ReadIoError(IoError),
}

/// hookbox patch: the error inside the `InvalidData` I/O error that
/// `read_next_line` returns for an over-long request line whose start reads
/// as a method and a URL.
#[derive(Debug)]
struct UriTooLong;

impl std::fmt::Display for UriTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request line too long")
    }
}

impl std::error::Error for UriTooLong {}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        preread: std::sync::Arc<crate::util::Preread>,
        deadline: std::sync::Arc<crate::util::RequestDeadline>,
        closer: Option<std::sync::Arc<crate::util::Closer>>,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            abandoned: Default::default(),
            closer,
            preread,
            deadline,
            request_begun: false,
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line.
    fn read_next_line(&mut self, request_line: bool) -> IoResult<AsciiString> {
        let mut buf = Vec::with_capacity(64);
        let mut prev_byte_was_cr = false;

        // hookbox patch: scan what the buffered reader holds instead of
        // taking one byte at a time through `Read::bytes` (about a hundred
        // instructions per byte of every request head); what is accepted
        // and refused is the same as byte by byte (hookbox's
        // tests/hostile.rs sends heads split between CR and LF).
        loop {
            let available = match self.next_header_source.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Err(IoError::new(ErrorKind::ConnectionAborted, "Unexpected EOF"));
            }

            // hookbox patch: the request has begun; its clock runs (if it
            // was not already running from the first byte on the socket).
            if request_line && !self.request_begun {
                self.request_begun = true;
                self.deadline.request_started();
            }

            // The line ends at the first LF that follows a CR; a bare LF
            // is kept (and refused below as a control character).
            let mut from = 0;
            let line_end = loop {
                let Some(offset) = available[from..].iter().position(|&b| b == b'\n') else {
                    break None;
                };
                let at = from + offset;
                let after_cr = match at {
                    0 => prev_byte_was_cr,
                    _ => available[at - 1] == b'\r',
                };
                if after_cr {
                    break Some(at);
                }
                from = at + 1;
            };
            let taken = line_end.unwrap_or(available.len());

            // hookbox patch: bound the request line and each header line, so
            // that a client cannot grow this buffer without limit.
            if buf.len() + taken > MAX_LINE_BYTES {
                let room = MAX_LINE_BYTES - buf.len();
                buf.extend_from_slice(&available[..room]);
                if request_line && starts_like_a_request_line(&buf) {
                    return Err(IoError::new(ErrorKind::InvalidData, UriTooLong));
                }
                return Err(IoError::new(ErrorKind::InvalidData, "header line too long"));
            }
            buf.extend_from_slice(&available[..taken]);
            let Some(at) = line_end else {
                prev_byte_was_cr = available.last() == Some(&b'\r');
                let used = available.len();
                self.next_header_source.consume(used);
                continue;
            };
            self.next_header_source.consume(at + 1);

            buf.pop(); // removing the '\r'
                       // hookbox patch: a line that is not ASCII is malformed
                       // input (400 and close, like any bad header), not an I/O
                       // error that closed the connection without an answer.
                       // So is one holding a control character (NUL, a bare CR
                       // or LF, ...; RFC 9110 section 5.5): parsers disagree on
                       // those, and values reach the application as they are.
            if buf.iter().any(|b: &u8| b.is_ascii_control() && *b != b'\t') {
                return Err(IoError::new(
                    ErrorKind::InvalidData,
                    "a line holds a control character",
                ));
            }
            return AsciiString::from_ascii(buf)
                .map_err(|_| IoError::new(ErrorKind::InvalidData, "Header is not in ASCII"));
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                // hookbox patch: a new request may begin; see `deadline`.
                self.request_begun = false;
                self.deadline.expect_request();
                let line = self.read_next_line(true);

                // hookbox patch: whatever follows a body that was not read to
                // its end is not a request, nor an error to answer.
                if self.abandoned.load(std::sync::atomic::Ordering::Acquire) {
                    let ended = IoError::new(ErrorKind::ConnectionAborted, "body not read");
                    return Err(ReadError::ReadIoError(ended));
                }
                let line = line.map_err(|e| match e.kind() {
                    ErrorKind::InvalidData
                        if e.get_ref().is_some_and(|inner| inner.is::<UriTooLong>()) =>
                    {
                        ReadError::UriTooLong
                    }
                    ErrorKind::InvalidData => ReadError::WrongRequestLine,
                    _ => ReadError::ReadIoError(e),
                })?;
                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let line = self.read_next_line(false).map_err(|e| match e.kind() {
                        ErrorKind::InvalidData => ReadError::WrongHeader(version.clone()),
                        _ => ReadError::ReadIoError(e),
                    })?;

                    if line.is_empty() {
                        break;
                    };
                    if headers.len() >= MAX_HEADERS {
                        return Err(ReadError::WrongHeader(version));
                    }
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            *self.remote_addr.as_ref().unwrap(),
            data_source,
            writer,
            self.abandoned.clone(),
            self.closer.clone(),
            &self.preread,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                // hookbox patch: ambiguous or malformed framing is answered
                // 400 (and the connection closed), not dropped silently.
                request::RequestCreationError::CreationIoError(e)
                    if e.kind() == ErrorKind::InvalidData =>
                {
                    let why = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<crate::util::Framing>())
                        .map_or("the request's framing is malformed", |f| f.0);
                    ReadError::BadFraming(version.clone(), why)
                }
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
            }
        })?;

        // hookbox patch: read in time; the deadline is off until the next
        // request begins.
        self.deadline.request_read();

        // return the request
        Ok(request)
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        use crate::{Response, StatusCode};

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        loop {
            let rq = match self.read() {
                Err(ReadError::WrongRequestLine) => {
                    let writer = self.sink.next().unwrap();
                    let response = malformed_request(
                        "the request line is not HTTP/1.x that hookbox can read, or holds a control character",
                    );
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::WrongHeader(ver)) => {
                    let writer = self.sink.next().unwrap();
                    let response = malformed_request(
                        "a header line is malformed, not ASCII, holds a control character, is over 8 KiB, or is one of more than 100",
                    );
                    response.raw_print(writer, ver, &[], false, None).ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                // hookbox patch: the message says what was wrong with the
                // framing; what follows cannot be trusted, so the connection
                // ends.
                Err(ReadError::BadFraming(ver, why)) => {
                    let writer = self.sink.next().unwrap();
                    let response = malformed_request(why);
                    response.raw_print(writer, ver, &[], false, None).ok();
                    return None;
                }

                // hookbox patch: a request line too long for us is a URL too
                // long (RFC 9112 section 3); the rest of the line is unread,
                // so the connection ends.
                Err(ReadError::UriTooLong) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(414));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None;
                }

                // hookbox patch: only a request that had begun gets its 408;
                // a connection silent from the start (or idle between
                // requests) is closed without an answer.
                Err(ReadError::ReadIoError(ref err))
                    if err.kind() == ErrorKind::TimedOut && self.request_begun =>
                {
                    // request timeout
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(408));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // closing the connection
                }

                Err(ReadError::ExpectationFailed(ver)) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(417));
                    response.raw_print(writer, ver, &[], true, None).ok();
                    return None; // TODO: should be recoverable, but needs handling in case of body
                }

                Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // checking HTTP version
            if *rq.http_version() > (1, 1) {
                let writer = self.sink.next().unwrap();
                let response = Response::from_string(
                    "This server only supports HTTP versions 1.0 and 1.1".to_owned(),
                )
                .with_status_code(StatusCode(505));
                response
                    .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                    .ok();
                continue;
            }

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// hookbox patch: the 400 this layer answers to a request it cannot parse
/// carries hookbox's error shape, `{"error": {"code": "malformed_request",
/// "message", "details": []}}` as JSON, like every other error a client of
/// the API gets (upstream: an empty body without a content type).
fn malformed_request(message: &str) -> crate::Response<std::io::Cursor<Vec<u8>>> {
    use crate::{Header, Response, StatusCode};
    let body =
        format!(r#"{{"error":{{"code":"malformed_request","message":"{message}","details":[]}}}}"#);
    let response = Response::from_data(body.into_bytes()).with_status_code(StatusCode(400));
    match Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]) {
        Ok(header) => response.with_header(header),
        Err(()) => response,
    }
}

/// hookbox patch: whether an (over-long, unfinished) request line starts
/// with a method token and a space, then a URL.
fn starts_like_a_request_line(line: &[u8]) -> bool {
    match line.iter().position(|b| *b == b' ') {
        Some(space) => {
            space > 0
                && line[..space].iter().all(|b| b.is_ascii_uppercase())
                && line.len() > space + 1
                && line[space + 1] != b' '
        }
        None => false,
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }

    #[test]
    fn over_long_lines_that_start_like_a_request_line() {
        use super::starts_like_a_request_line as like;
        assert!(like(b"GET /aaaa"));
        assert!(like(b"POST http://x/aaaa"));
        assert!(!like(b"GET"));
        assert!(!like(b" GET /a"));
        assert!(!like(b"GET  /a"));
        assert!(!like(b"get /a"));
        assert!(!like(b"X-Long: aaaa"));
        assert!(!like(&[0xff, b' ', b'/']));
    }
}
