//! hookbox patch: a strict, bounded decoder for chunked request bodies.
//!
//! Upstream used `chunked_transfer::Decoder`, which grows its chunk-size
//! line without limit (a client could send gigabytes of "size" before the
//! request deadline ended it), accepts trailers only if there are none, and
//! reports every malformed body as `InvalidInput`, which ended the
//! connection without an answer. This one bounds the size line (extensions
//! included) and the trailer, refuses sizes that do not fit in a `usize` and
//! anything that is not `HEXDIG [BWS ;ext] CRLF` (a control character
//! anywhere in the line included), and reports malformed framing as
//! `InvalidData` carrying a [`Framing`] error, which the connection answers
//! 400 with a message that says what was wrong.

use std::fmt;
use std::io::{Error as IoError, ErrorKind, Read, Result as IoResult};

/// The longest chunk-size line accepted, extensions included.
pub(crate) const MAX_CHUNK_LINE: usize = 1024;
/// The most trailer bytes accepted after the last chunk (all ignored).
const MAX_TRAILER: usize = 8 * 1024;

/// hookbox patch: why a request's framing (its `Content-Length`,
/// `Transfer-Encoding` or chunks) was refused; the message the client's
/// 400 carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framing(pub(crate) &'static str);

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Framing {}

impl Framing {
    pub(crate) fn error(self) -> IoError {
        IoError::new(ErrorKind::InvalidData, self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk with this many bytes left.
    Data(usize),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// The last chunk and its trailer have been read.
    Done,
}

pub(crate) struct ChunkedDecoder<R> {
    source: R,
    state: State,
}

impl<R: Read> ChunkedDecoder<R> {
    pub(crate) fn new(source: R) -> ChunkedDecoder<R> {
        ChunkedDecoder {
            source,
            state: State::Size,
        }
    }

    fn byte(&mut self) -> IoResult<u8> {
        let mut byte = [0u8; 1];
        loop {
            match self.source.read(&mut byte) {
                Ok(0) => {
                    return Err(IoError::new(
                        ErrorKind::UnexpectedEof,
                        "the connection ended inside a chunked body",
                    ))
                }
                Ok(_) => return Ok(byte[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads a line up to CRLF, at most `max` bytes before it; returns its
    /// bytes without the CRLF.
    fn line(&mut self, max: usize, too_long: Framing) -> IoResult<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            match self.byte()? {
                b'\r' => {
                    return match self.byte()? {
                        b'\n' => Ok(line),
                        _ => Err(Framing("a chunk line has a CR without LF").error()),
                    }
                }
                b'\n' => return Err(Framing("a chunk line ends in LF without CR").error()),
                byte => {
                    if line.len() >= max {
                        return Err(too_long.error());
                    }
                    line.push(byte);
                }
            }
        }
    }

    fn chunk_size(&mut self) -> IoResult<usize> {
        let line = self.line(
            MAX_CHUNK_LINE,
            Framing("a chunk size line is longer than 1 KiB"),
        )?;
        // Parsers disagree on control characters (a NUL ends a C string),
        // so none may appear, in the size or its extensions (HTAB is
        // whitespace, allowed around them).
        if line.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
            return Err(Framing("a chunk size line holds a control character").error());
        }
        // RFC 9112 section 7.1.1: `chunk-size [ BWS ";" ext ]`; whitespace
        // after the size only before an extension.
        let size = match line.iter().position(|b| *b == b';') {
            Some(semicolon) => {
                let size = &line[..semicolon];
                match size.iter().rposition(|b| !matches!(b, b' ' | b'\t')) {
                    Some(last) => &size[..=last],
                    None => &size[..0],
                }
            }
            None if line.last().is_some_and(|b| matches!(b, b' ' | b'\t')) => {
                return Err(
                    Framing("a chunk size is followed by whitespace without an extension").error(),
                );
            }
            None => &line[..],
        };
        let bad = Framing("a chunk size is not a hexadecimal number");
        if size.is_empty() || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad.error());
        }
        let digits = std::str::from_utf8(size).map_err(|_| bad.error())?;
        usize::from_str_radix(digits, 16)
            .map_err(|_| Framing("a chunk size is too large").error())
    }

    fn trailer(&mut self) -> IoResult<()> {
        let mut left = MAX_TRAILER;
        loop {
            let too_long = Framing("the chunked body's trailer is longer than 8 KiB");
            let line = self.line(left, too_long)?;
            if line.is_empty() {
                return Ok(());
            }
            if line.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
                return Err(Framing("a trailer line holds a control character").error());
            }
            left = left.saturating_sub(line.len() + 2);
        }
    }
}

impl<R: Read> Read for ChunkedDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Size => match self.chunk_size()? {
                    0 => {
                        self.trailer()?;
                        self.state = State::Done;
                    }
                    n => self.state = State::Data(n),
                },
                State::Data(left) => {
                    let want = left.min(buf.len());
                    let read = self.source.read(&mut buf[..want])?;
                    if read == 0 {
                        return Err(IoError::new(
                            ErrorKind::UnexpectedEof,
                            "the connection ended inside a chunk",
                        ));
                    }
                    self.state = match left - read {
                        0 => State::DataEnd,
                        rest => State::Data(rest),
                    };
                    return Ok(read);
                }
                State::DataEnd => {
                    if self.byte()? != b'\r' || self.byte()? != b'\n' {
                        return Err(Framing("a chunk's data is not followed by CRLF").error());
                    }
                    self.state = State::Size;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> IoResult<Vec<u8>> {
        let mut out = Vec::new();
        ChunkedDecoder::new(input).read_to_end(&mut out)?;
        Ok(out)
    }

    fn framing(input: &[u8]) -> String {
        let e = decode(input).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
        assert!(e.get_ref().is_some_and(|inner| inner.is::<Framing>()), "{}", e);
        e.to_string()
    }

    #[test]
    fn well_formed_bodies_decode() {
        let table: [(&[u8], &[u8]); 9] = [
            (b"3\r\nhel\r\nb\r\nlo world!!!\r\n0\r\n\r\n", b"hello world!!!"),
            (b"0\r\n\r\n", b""),
            (b"A;name=value\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"2 ;x\r\nab\r\n0\r\nX-Trailer: 1\r\n\r\n", b"ab"),
            (b"00000001\r\nz\r\n0\r\n\r\n", b"z"),
            (b"1\t;a=1;b\r\nz\r\n0\r\n\r\n", b"z"),
            (b"1;q=\"a; \\\"b\"\r\nz\r\n0\r\n\r\n", b"z"),
            (b"1;q=\"tab\tin\"\r\nz\r\n0;last=1\r\n\r\n", b"z"),
            (b"0;ext\r\nX-A: 1\r\nX-B: 2\r\n\r\n", b""),
        ];
        for (input, body) in table {
            assert_eq!(decode(input).unwrap(), body, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn malformed_framing_is_invalid_data_that_says_what() {
        let long = [b"1".repeat(MAX_CHUNK_LINE + 1).as_slice(), b"\r\n"].concat();
        assert!(framing(&long).contains("longer than 1 KiB"));
        let long_ext = [b"1;".as_slice(), &b"x".repeat(2000), b"\r\na\r\n0\r\n\r\n"].concat();
        assert!(framing(&long_ext).contains("longer than 1 KiB"));
        assert!(framing(b"zz\r\n").contains("hexadecimal"));
        assert!(framing(b"\r\n").contains("hexadecimal"));
        assert!(framing(b"-1\r\n").contains("hexadecimal"));
        assert!(framing(b"fffffffffffffffffffff\r\n").contains("too large"));
        assert!(framing(b"1\r\nab\r\n").contains("CRLF"));
        assert!(framing(b"1\nab").contains("LF without CR"));
        assert!(framing(b"1\rx").contains("CR without LF"));
        let trailer = [b"0\r\nX: ".as_slice(), &b"y".repeat(9000), b"\r\n\r\n"].concat();
        assert!(framing(&trailer).contains("trailer"));
        assert!(framing(b"0\r\nX: \0\r\n\r\n").contains("control"));
        for line in [&b"1f;a\0b"[..], b"1\0", b"\x001", b"1;q=\"\x7f\"", b"1;\x1b"] {
            let input = [line, b"\r\n"].concat();
            let message = framing(&input);
            assert!(message.contains("control character"), "{:?}: {}", line, message);
        }
        for line in [&b"1f  "[..], b"1\t", b"1 "] {
            let input = [line, b"\r\nz\r\n0\r\n\r\n"].concat();
            let message = framing(&input);
            assert!(message.contains("whitespace"), "{:?}: {}", line, message);
        }
        // Whitespace before the size is not BWS.
        assert!(framing(b" 1\r\n").contains("hexadecimal"));
    }

    #[test]
    fn a_body_cut_short_is_an_eof_not_a_framing_error() {
        for input in [&b"5\r\nab"[..], b"5", b"0\r\n"] {
            let e = decode(input).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{input:?}: {e}");
        }
    }
}
