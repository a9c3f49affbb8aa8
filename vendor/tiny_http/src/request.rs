use std::io::Error as IoError;
use std::io::{self, Cursor, ErrorKind, Read, Write};

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use std::sync::mpsc::Sender;

use crate::util::{BodyGuard, ChunkedDecoder, EqualReader, Framing, FusedReader};
use crate::util::{Preread, PrereadRefused, Reservation, Reserved, Unread};
use crate::{HTTPVersion, Header, Method, Response, StatusCode};

/// Represents an HTTP request made by a client.
///
/// A `Request` object is what is produced by the server, and is your what
/// your code must analyse and answer.
///
/// This object implements the `Send` trait, therefore you can dispatch your requests to
/// worker threads.
///
/// # Pipelining
///
/// If a client sends multiple requests in a row (without waiting for the response), then you will
/// get multiple `Request` objects simultaneously. This is called *requests pipelining*.
/// Tiny-http automatically reorders the responses so that you don't need to worry about the order
/// in which you call `respond` or `into_writer`.
///
/// This mechanic is disabled if:
///
///  - The body of a request is large enough (handling requires pipelining requires storing the
///    body of the request in a buffer ; if the body is too big, tiny-http will avoid doing that)
///  - A request sends a `Expect: 100-continue` header (which means that the client waits to
///    know whether its body will be processed before sending it)
///  - A request sends a `Connection: close` header or `Connection: upgrade` header (used for
///    websockets), which indicates that this is the last request that will be received on this
///    connection
///
/// # Automatic cleanup
///
/// If a `Request` object is destroyed without `into_writer` or `respond` being called,
/// an empty response with a 500 status code (internal server error) will automatically be
/// sent back to the client.
/// This means that if your code fails during the handling of a request, this "internal server
/// error" response will automatically be sent during the stack unwinding.
///
/// # Testing
///
/// If you want to build fake requests to test your server, use [`TestRequest`](crate::test::TestRequest).
pub struct Request {
    // where to read the body from
    data_reader: Option<Box<dyn Read + Send + 'static>>,

    // if this writer is empty, then the request has been answered
    response_writer: Option<Box<dyn Write + Send + 'static>>,

    remote_addr: Option<SocketAddr>,

    // true if HTTPS, false if HTTP
    secure: bool,

    method: Method,

    path: String,

    http_version: HTTPVersion,

    headers: Vec<Header>,

    body_length: Option<usize>,

    // true if a `100 Continue` response must be sent when `as_reader()` is called
    must_send_continue: bool,

    // If Some, a message must be sent after responding
    notify_when_responded: Option<Sender<()>>,

    // hookbox patch: why the body was not read ahead, if it was refused.
    preread_refused: Option<PrereadRefused>,
}

struct NotifyOnDrop<R> {
    sender: Sender<()>,
    inner: R,
}

impl<R: Read> Read for NotifyOnDrop<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}
impl<R: Write> Write for NotifyOnDrop<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
impl<R> Drop for NotifyOnDrop<R> {
    fn drop(&mut self) {
        let _ = self.sender.send(());
    }
}

/// Error that can happen when building a `Request` object.
#[derive(Debug)]
pub enum RequestCreationError {
    /// The client sent an `Expect` header that was not recognized by tiny-http.
    ExpectationFailed,

    /// Error while reading data from the socket during the creation of the `Request`.
    CreationIoError(IoError),
}

impl From<IoError> for RequestCreationError {
    fn from(err: IoError) -> RequestCreationError {
        RequestCreationError::CreationIoError(err)
    }
}

/// Builds a new request.
///
/// After the request line and headers have been read from the socket, a new `Request` object
/// is built.
///
/// You must pass a `Read` that will allow the `Request` object to read from the incoming data.
/// It is the responsibility of the `Request` to read only the data of the request and not further.
///
/// The `Write` object will be used by the `Request` to write the response.
#[allow(clippy::too_many_arguments)]
pub fn new_request<R, W>(
    secure: bool,
    method: Method,
    path: String,
    version: HTTPVersion,
    headers: Vec<Header>,
    remote_addr: Option<SocketAddr>,
    mut source_data: R,
    writer: W,
    abandoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
    closer: Option<std::sync::Arc<crate::util::Closer>>,
    preread: &Preread,
) -> Result<Request, RequestCreationError>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    // hookbox patch: strict message framing (RFC 9112 section 6.3), so that
    // no two parsers can disagree on where this request's body ends. Upstream
    // read an unparsable Content-Length as "no body" and any
    // Transfer-Encoding as chunked, which let a body carry a second request.
    // Refused: several Content-Length headers, a Content-Length that is not
    // all digits, a Transfer-Encoding other than exactly `chunked`, and both
    // headers together.
    let transfer_encodings: Vec<&Header> = headers
        .iter()
        .filter(|h: &&Header| h.field.equiv("Transfer-Encoding"))
        .collect();
    let content_lengths: Vec<&Header> = headers
        .iter()
        .filter(|h: &&Header| h.field.equiv("Content-Length"))
        .collect();
    // hookbox patch: each refusal says what was wrong, in the 400's message.
    let framing_error = |why: &'static str| RequestCreationError::CreationIoError(Framing(why).error());
    if content_lengths.len() > 1 {
        return Err(framing_error("the request has more than one Content-Length header"));
    }
    if transfer_encodings.len() > 1 {
        return Err(framing_error("the request has more than one Transfer-Encoding header"));
    }
    if !content_lengths.is_empty() && !transfer_encodings.is_empty() {
        return Err(framing_error(
            "the request has both Content-Length and Transfer-Encoding",
        ));
    }
    // RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 message is
    // faulty framing (a 1.0 intermediary would not have decoded it).
    if !transfer_encodings.is_empty() && version < HTTPVersion(1, 1) {
        return Err(framing_error(
            "Transfer-Encoding is not allowed in an HTTP/1.0 request",
        ));
    }
    let transfer_encoding = match transfer_encodings.first() {
        Some(h) if h.value.as_str().trim().eq_ignore_ascii_case("chunked") => Some(h.value.clone()),
        Some(_) => {
            return Err(framing_error(
                "the only Transfer-Encoding accepted is exactly 'chunked'",
            ))
        }
        None => None,
    };
    let content_length: Option<usize> = match content_lengths.first() {
        Some(h) => {
            let text = h.value.as_str().trim();
            let bad = "the Content-Length is not a number of bytes";
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(framing_error(bad));
            }
            Some(text.parse().map_err(|_| framing_error(bad))?)
        }
        None => None,
    };

    // true if the client sent a `Expect: 100-continue` header
    let expects_continue = {
        match headers
            .iter()
            .find(|h: &&Header| h.field.equiv("Expect"))
            .map(|h| h.value.as_str())
        {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("100-continue") => true,
            _ => return Err(RequestCreationError::ExpectationFailed),
        }
    };

    // hookbox patch: connection upgrades are not supported; upstream handed
    // the raw socket to the request as its body, read on the answering thread.
    let connection_upgrade = false;

    // hookbox patch: whether this body is read ahead at all is decided
    // before anything else is done about it (`util::preread`): not for a
    // peer the filter refuses, nor beyond the budget. A refused body is left
    // unread — no `100 Continue` asks for it — and the request is handed out
    // with the reason, for the application to answer; the body guard then
    // closes the connection.
    let mut writer = writer;
    let fits = content_length.is_none_or(|n| n <= preread.max_body);
    let has_body = content_length.is_some_and(|n| n > 0) || transfer_encoding.is_some();
    let mut reservation = preread.reservation();
    let mut refused = if !has_body || !fits {
        None
    } else if !preread.peer_allowed(remote_addr) {
        Some(PrereadRefused::Peer)
    } else if !reservation.grow(content_length.unwrap_or(0)) {
        Some(PrereadRefused::Budget)
    } else {
        None
    };

    // hookbox patch: a body the client will send only after `100 Continue`
    // is asked for here, and then read ahead on this thread like any other,
    // so that a slow sender never holds a thread that calls `recv()`.
    let expects_continue = if refused.is_some() {
        false
    } else if expects_continue && fits {
        writer
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .and_then(|()| writer.flush())
            .map_err(RequestCreationError::CreationIoError)?;
        false
    } else {
        expects_continue
    };

    // we wrap `source_data` around a reading whose nature depends on the transfer-encoding and
    // content-length headers
    let reader = if let Some(why) = refused {
        Box::new(BodyGuard::new(Unread(why), abandoned, closer)) as Box<dyn Read + Send + 'static>
    } else if connection_upgrade {
        // if we have a `Connection: upgrade`, always keeping the whole reader
        Box::new(source_data) as Box<dyn Read + Send + 'static>
    } else if let Some(content_length) = content_length {
        if content_length == 0 {
            Box::new(io::empty()) as Box<dyn Read + Send + 'static>
        } else if content_length <= preread.max_body && !expects_continue {
            // hookbox patch: the limit was a fixed 1024 bytes; bodies up to
            // `preread_body_bytes` are now read here, on the connection's own
            // thread, so a client that stalls mid-body holds only that.
            // if the content-length is small enough, we just read everything into a buffer

            let mut buffer = vec![0; content_length];
            let mut offset = 0;

            while offset != content_length {
                let read = source_data.read(&mut buffer[offset..])?;
                if read == 0 {
                    // the socket returned EOF, but we were before the expected content-length
                    // aborting
                    let info = "Connection has been closed before we received enough data";
                    let err = IoError::new(ErrorKind::ConnectionAborted, info);
                    return Err(RequestCreationError::CreationIoError(err));
                }

                offset += read;
            }

            // hookbox patch: the buffer and its reservation go together.
            Box::new(Reserved::new(Cursor::new(buffer), reservation))
                as Box<dyn Read + Send + 'static>
        } else {
            let (data_reader, _) = EqualReader::new(source_data, content_length); // TODO:
            Box::new(BodyGuard::new(FusedReader::new(data_reader), abandoned, closer))
                as Box<dyn Read + Send + 'static>
        }
    } else if transfer_encoding.is_some() {
        // if a transfer-encoding was specified, then "chunked" is ALWAYS applied
        // over the message (RFC2616 #3.6)
        let mut decoder = FusedReader::new(ChunkedDecoder::new(source_data));
        if expects_continue {
            Box::new(BodyGuard::new(decoder, abandoned, closer)) as Box<dyn Read + Send + 'static>
        } else {
            // hookbox patch: read up to `preread_body_bytes` (plus one, to
            // tell "longer") here on the connection's thread, as above, each
            // step reserved in the budget before it is read.
            match read_chunked_ahead(&mut decoder, preread.max_body, &mut reservation)? {
                None => {
                    refused = Some(PrereadRefused::Budget);
                    drop(reservation);
                    Box::new(BodyGuard::new(
                        Unread(PrereadRefused::Budget),
                        abandoned,
                        closer,
                    )) as Box<dyn Read + Send + 'static>
                }
                Some(buffer) if buffer.len() <= preread.max_body => {
                    Box::new(Reserved::new(Cursor::new(buffer), reservation))
                        as Box<dyn Read + Send + 'static>
                }
                Some(buffer) => Box::new(BodyGuard::new(
                    Reserved::new(Cursor::new(buffer).chain(decoder), reservation),
                    abandoned,
                    closer,
                )) as Box<dyn Read + Send + 'static>,
            }
        }
    } else {
        // if we have neither a Content-Length nor a Transfer-Encoding,
        // assuming that we have no data
        // TODO: could also be multipart/byteranges
        Box::new(io::empty()) as Box<dyn Read + Send + 'static>
    };

    Ok(Request {
        data_reader: Some(reader),
        response_writer: Some(Box::new(writer) as Box<dyn Write + Send + 'static>),
        remote_addr,
        secure,
        method,
        path,
        http_version: version,
        headers,
        body_length: content_length,
        must_send_continue: expects_continue,
        notify_when_responded: None,
        preread_refused: refused,
    })
}

/// hookbox patch: how much of a chunked body is read ahead in one step, each
/// step reserved in the budget before it is read.
const CHUNKED_STEP: usize = 16 * 1024;

/// hookbox patch: reads a chunked body ahead, up to `max_body + 1` bytes (the
/// one to tell "longer"), reserving each step first; `None` when the budget
/// refuses a step (what was read is dropped, and the rest left unread).
/// Afterwards `reservation` holds exactly the bytes returned.
fn read_chunked_ahead<R: Read>(
    decoder: &mut R,
    max_body: usize,
    reservation: &mut Reservation,
) -> Result<Option<Vec<u8>>, RequestCreationError> {
    let limit = max_body.saturating_add(1);
    let mut buffer = Vec::new();
    loop {
        let step = CHUNKED_STEP.min(limit - buffer.len());
        if step == 0 {
            break;
        }
        if !reservation.grow(step) {
            reservation.shrink_to(0);
            return Ok(None);
        }
        let start = buffer.len();
        buffer.reserve_exact(step);
        buffer.resize(start + step, 0);
        let mut filled = start;
        while filled < start + step {
            match decoder.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(RequestCreationError::CreationIoError(e)),
            }
        }
        buffer.truncate(filled);
        if filled < start + step {
            break;
        }
    }
    reservation.shrink_to(buffer.len());
    Ok(Some(buffer))
}

impl Request {
    /// Returns true if the request was made through HTTPS.
    #[inline]
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Returns the method requested by the client (eg. `GET`, `POST`, etc.).
    #[inline]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Returns the resource requested by the client.
    #[inline]
    pub fn url(&self) -> &str {
        &self.path
    }

    /// Returns a list of all headers sent by the client.
    #[inline]
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// Returns the HTTP version of the request.
    #[inline]
    pub fn http_version(&self) -> &HTTPVersion {
        &self.http_version
    }

    /// Returns the length of the body in bytes.
    ///
    /// Returns `None` if the length is unknown.
    #[inline]
    pub fn body_length(&self) -> Option<usize> {
        self.body_length
    }

    /// hookbox patch: why this request's body was not read ahead, if it was
    /// refused (`ConnectionLimits::preread_allowed`,
    /// `ConnectionLimits::preread_budget`). Such a body is left unread:
    /// reading it fails, and the connection is closed once the request is
    /// answered.
    #[inline]
    pub fn preread_refused(&self) -> Option<PrereadRefused> {
        self.preread_refused
    }

    /// Returns the address of the client that sent this request.
    ///
    /// The address is always `Some` for TCP listeners, but always `None` for UNIX listeners
    /// (as the remote address of a UNIX client is almost always unnamed).
    ///
    /// Note that this is gathered from the socket. If you receive the request from a proxy,
    /// this function will return the address of the proxy and not the address of the actual
    /// user.
    #[inline]
    pub fn remote_addr(&self) -> Option<&SocketAddr> {
        self.remote_addr.as_ref()
    }

    /// Sends a response with a `Connection: upgrade` header, then turns the `Request` into a `Stream`.
    ///
    /// The main purpose of this function is to support websockets.
    /// If you detect that the request wants to use some kind of protocol upgrade, you can
    ///  call this function to obtain full control of the socket stream.
    ///
    /// If you call this on a non-websocket request, tiny-http will wait until this `Stream` object
    ///  is destroyed before continuing to read or write on the socket. Therefore you should always
    ///  destroy it as soon as possible.
    pub fn upgrade<R: Read>(
        mut self,
        protocol: &str,
        response: Response<R>,
    ) -> Box<dyn ReadWrite + Send> {
        use crate::util::CustomStream;

        response
            .raw_print(
                self.response_writer.as_mut().unwrap().by_ref(),
                self.http_version.clone(),
                &self.headers,
                false,
                Some(protocol),
            )
            .ok(); // TODO: unused result

        self.response_writer.as_mut().unwrap().flush().ok(); // TODO: unused result

        let stream = CustomStream::new(self.extract_reader_impl(), self.extract_writer_impl());
        if let Some(sender) = self.notify_when_responded.take() {
            let stream = NotifyOnDrop {
                sender,
                inner: stream,
            };
            Box::new(stream) as Box<dyn ReadWrite + Send>
        } else {
            Box::new(stream) as Box<dyn ReadWrite + Send>
        }
    }

    /// Allows to read the body of the request.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # extern crate rustc_serialize;
    /// # extern crate tiny_http;
    /// # use rustc_serialize::json::Json;
    /// # use std::io::Read;
    /// # fn get_content_type(_: &tiny_http::Request) -> &'static str { "" }
    /// # fn main() {
    /// # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
    /// let mut request = server.recv().unwrap();
    ///
    /// if get_content_type(&request) == "application/json" {
    ///     let mut content = String::new();
    ///     request.as_reader().read_to_string(&mut content).unwrap();
    ///     let json: Json = content.parse().unwrap();
    /// }
    /// # }
    /// ```
    ///
    /// If the client sent a `Expect: 100-continue` header with the request, calling this
    ///  function will send back a `100 Continue` response.
    #[inline]
    pub fn as_reader(&mut self) -> &mut dyn Read {
        if self.must_send_continue {
            let msg = Response::new_empty(StatusCode(100));
            msg.raw_print(
                self.response_writer.as_mut().unwrap().by_ref(),
                self.http_version.clone(),
                &self.headers,
                true,
                None,
            )
            .ok();
            self.response_writer.as_mut().unwrap().flush().ok();
            self.must_send_continue = false;
        }

        self.data_reader.as_mut().unwrap()
    }

    /// Turns the `Request` into a writer.
    ///
    /// The writer has a raw access to the stream to the user.
    /// This function is useful for things like CGI.
    ///
    /// Note that the destruction of the `Writer` object may trigger
    /// some events. For exemple if a client has sent multiple requests and the requests
    /// have been processed in parallel, the destruction of a writer will trigger
    /// the writing of the next response.
    /// Therefore you should always destroy the `Writer` as soon as possible.
    #[inline]
    pub fn into_writer(mut self) -> Box<dyn Write + Send + 'static> {
        let writer = self.extract_writer_impl();
        if let Some(sender) = self.notify_when_responded.take() {
            let writer = NotifyOnDrop {
                sender,
                inner: writer,
            };
            Box::new(writer) as Box<dyn Write + Send + 'static>
        } else {
            writer
        }
    }

    /// Extract the response `Writer` object from the Request, dropping this `Writer` has the same side effects
    /// as the object returned by `into_writer` above.
    ///
    /// This may only be called once on a single request.
    fn extract_writer_impl(&mut self) -> Box<dyn Write + Send + 'static> {
        use std::mem;

        assert!(self.response_writer.is_some());

        let mut writer = None;
        mem::swap(&mut self.response_writer, &mut writer);
        writer.unwrap()
    }

    /// Extract the body `Reader` object from the Request.
    ///
    /// This may only be called once on a single request.
    fn extract_reader_impl(&mut self) -> Box<dyn Read + Send + 'static> {
        use std::mem;

        assert!(self.data_reader.is_some());

        let mut reader = None;
        mem::swap(&mut self.data_reader, &mut reader);
        reader.unwrap()
    }

    /// Sends a response to this request.
    #[inline]
    pub fn respond<R>(mut self, response: Response<R>) -> Result<(), IoError>
    where
        R: Read,
    {
        let res = self.respond_impl(response);
        if let Some(sender) = self.notify_when_responded.take() {
            let _ = sender.send(());
        }
        res
    }

    fn respond_impl<R>(&mut self, response: Response<R>) -> Result<(), IoError>
    where
        R: Read,
    {
        let mut writer = self.extract_writer_impl();

        let do_not_send_body = self.method == Method::Head;

        Self::ignore_client_closing_errors(response.raw_print(
            writer.by_ref(),
            self.http_version.clone(),
            &self.headers,
            do_not_send_body,
            None,
        ))?;

        Self::ignore_client_closing_errors(writer.flush())
    }

    fn ignore_client_closing_errors(result: io::Result<()>) -> io::Result<()> {
        result.or_else(|err| match err.kind() {
            ErrorKind::BrokenPipe => Ok(()),
            ErrorKind::ConnectionAborted => Ok(()),
            ErrorKind::ConnectionRefused => Ok(()),
            ErrorKind::ConnectionReset => Ok(()),
            _ => Err(err),
        })
    }

    pub(crate) fn with_notify_sender(mut self, sender: Sender<()>) -> Self {
        self.notify_when_responded = Some(sender);
        self
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> Result<(), fmt::Error> {
        write!(
            formatter,
            "Request({} {} from {:?})",
            self.method, self.path, self.remote_addr
        )
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.response_writer.is_some() {
            // hookbox patch: a request is dropped unanswered only when the
            // server is stopping; say so (upstream answered 500).
            let response = Response::empty(503);
            let _ = self.respond_impl(response); // ignoring any potential error
            if let Some(sender) = self.notify_when_responded.take() {
                let _ = sender.send(());
            }
        }
    }
}

/// Dummy trait that regroups the `Read` and `Write` traits.
///
/// Automatically implemented on all types that implement both `Read` and `Write`.
pub trait ReadWrite: Read + Write {}
impl<T> ReadWrite for T where T: Read + Write {}

#[cfg(test)]
mod tests {
    use super::{new_request, Request};
    use crate::util::{Budget, Preread, PrereadBudget, PrereadRefused};
    use crate::{HTTPVersion, Header, Method};
    use std::io::{Cursor, Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// A client's bytes, counting how many the server took.
    struct Client {
        data: Cursor<Vec<u8>>,
        taken: Arc<AtomicUsize>,
    }

    impl Read for Client {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.data.read(buf)?;
            self.taken.fetch_add(n, Ordering::SeqCst);
            Ok(n)
        }
    }

    /// What the server wrote back.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Write for Written {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A POST from 127.0.0.1 with `headers` and `body` on the wire; returns
    /// the request (or `None` on a creation error), the bytes the server
    /// took and what it wrote.
    fn post(
        preread: &Preread,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (Option<Request>, usize, Vec<u8>) {
        let taken = Arc::new(AtomicUsize::new(0));
        let client = Client {
            data: Cursor::new(body.to_vec()),
            taken: taken.clone(),
        };
        let written = Written::default();
        let headers = headers
            .iter()
            .map(|(n, v)| Header::from_bytes(n.as_bytes(), v.as_bytes()).unwrap())
            .collect();
        let request = new_request(
            false,
            Method::Post,
            "/".into(),
            HTTPVersion(1, 1),
            headers,
            Some("127.0.0.1:40000".parse().unwrap()),
            client,
            written.clone(),
            Default::default(),
            None,
            preread,
        )
        .ok();
        let out = written.0.lock().unwrap().clone();
        (request, taken.load(Ordering::SeqCst), out)
    }

    fn budgeted(total: usize) -> (Preread, Arc<Budget>) {
        let budget = Budget::new(PrereadBudget {
            total,
            reserve: 0,
            small_body: 0,
        });
        let preread = Preread {
            max_body: 1000,
            allowed: None,
            budget: Some(budget.clone()),
        };
        (preread, budget)
    }

    #[test]
    fn a_refused_peer_has_no_body_read_and_no_100_continue() {
        let preread = Preread {
            max_body: 1000,
            allowed: Some(Arc::new(|_| false)),
            budget: None,
        };
        let body = [b'x'; 500];
        let headers = [("Content-Length", "500"), ("Expect", "100-continue")];
        let (request, taken, written) = post(&preread, &headers, &body);
        let mut request = request.unwrap();
        assert_eq!(request.preread_refused(), Some(PrereadRefused::Peer));
        assert_eq!(taken, 0, "the body was read");
        assert!(written.is_empty(), "{:?}", String::from_utf8_lossy(&written));
        assert!(request.as_reader().read(&mut [0; 10]).is_err());
        // Let in, the same request is read ahead after its 100 Continue.
        let open = Preread::unlimited(1000);
        let (request, taken, written) = post(&open, &headers, &body);
        assert_eq!(request.unwrap().preread_refused(), None);
        assert_eq!(taken, 500);
        assert_eq!(written, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn a_body_over_the_budget_is_left_unread_until_the_budget_is_given_back() {
        let (preread, budget) = budgeted(1000);
        let body = [b'x'; 600];
        let headers = [("Content-Length", "600")];
        let (first, taken, _) = post(&preread, &headers, &body);
        let first = first.unwrap();
        assert_eq!((first.preread_refused(), taken), (None, 600));
        assert_eq!(budget.used(), 600);
        let (second, taken, _) = post(&preread, &headers, &body);
        let second = second.unwrap();
        assert_eq!(second.preread_refused(), Some(PrereadRefused::Budget));
        assert_eq!((taken, budget.used()), (0, 600));
        drop(second);
        // Answering (here: dropping) the first gives its bytes back.
        drop(first);
        assert_eq!(budget.used(), 0);
        let (third, _, _) = post(&preread, &headers, &body);
        assert_eq!(third.unwrap().preread_refused(), None);
        assert_eq!(budget.used(), 0);
        // A body cut short gives back what it reserved.
        let (cut, _, _) = post(&preread, &headers, &body[..100]);
        assert!(cut.is_none());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_chunked_body_is_refused_when_it_outgrows_the_budget() {
        let chunked = |len: usize| {
            let mut wire = format!("{len:x}\r\n").into_bytes();
            wire.extend(std::iter::repeat(b'x').take(len));
            wire.extend_from_slice(b"\r\n0\r\n\r\n");
            wire
        };
        let headers = [("Transfer-Encoding", "chunked")];
        // Two steps of 16 KiB: the first fits, the second does not.
        let (preread, budget) = budgeted(20 * 1024);
        let preread = Preread {
            max_body: 64 * 1024,
            ..preread
        };
        let (request, _, _) = post(&preread, &headers, &chunked(30 * 1024));
        let mut request = request.unwrap();
        assert_eq!(request.preread_refused(), Some(PrereadRefused::Budget));
        assert_eq!(budget.used(), 0);
        assert!(request.as_reader().read(&mut [0; 10]).is_err());
        // A smaller one holds exactly its size while it lives.
        let (request, _, _) = post(&preread, &headers, &chunked(10 * 1024));
        let mut request = request.unwrap();
        assert_eq!(request.preread_refused(), None);
        assert_eq!(budget.used(), 10 * 1024);
        let mut body = Vec::new();
        request.as_reader().read_to_end(&mut body).unwrap();
        assert_eq!(body.len(), 10 * 1024);
        drop(request);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn must_be_send() {
        #![allow(dead_code)]
        fn f<T: Send>(_: &T) {}
        fn bar(rq: &Request) {
            f(rq);
        }
    }
}
