//! A minimal blocking HTTP/1.1 over `std::net`, just what lockstep needs: request parsing with
//! size caps (server), Content-Length and chunked responses (server), and a client that reads
//! Content-Length, chunked and read-to-close bodies incrementally (follower).
//!
//! Every socket read uses a short timeout so the caller can check a stop flag between reads;
//! no thread here blocks forever.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often blocked reads wake up to look at the stop flag.
pub const POLL: Duration = Duration::from_millis(50);

/// A parsed request. Header names are lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The raw request target (`/path?query`).
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// HTTP/1.1 (keep-alive by default) rather than HTTP/1.0.
    pub http11: bool,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection kept open after the response.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(|c| c.to_ascii_lowercase());
        match conn.as_deref() {
            Some(c) if c.split(',').any(|t| t.trim() == "close") => false,
            Some(c) if c.split(',').any(|t| t.trim() == "keep-alive") => true,
            _ => self.http11,
        }
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed (or went idle past the idle timeout) before sending a byte: no answer due.
    Closed,
    /// The server is stopping.
    Stopped,
    /// A bad request: answer with this status and message, then close.
    Bad(u16, String),
    Io(io::Error),
}

/// Size caps and timeouts for reading one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head: usize,
    pub max_headers: usize,
    pub max_body: usize,
    /// How long a keep-alive connection may sit idle before the next request.
    pub idle: Duration,
    /// How long a client may take to send a whole request once it started.
    pub request: Duration,
}

/// One server-side connection with its read buffer (bytes of a next, pipelined request stay).
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    // The head ends at the first empty line; a bare LF line ending is tolerated.
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\r\n") {
            return Some((nl + 1, nl + 3));
        }
        if rest.starts_with(b"\n") {
            return Some((nl + 1, nl + 2));
        }
        i = nl + 1;
    }
    None
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn { stream, buf: Vec::new() }
    }

    /// Reads the next request: waits up to `limits.idle` for its first byte, then up to
    /// `limits.request` for all of it.
    pub fn read_request(&mut self, limits: &Limits, stop: &AtomicBool) -> Result<Request, ReadError> {
        let started = Instant::now();
        let mut first_byte: Option<Instant> = (!self.buf.is_empty()).then(Instant::now);
        let mut chunk = [0u8; 8192];
        let (head_len, body_start) = loop {
            if let Some(found) = find_head_end(&self.buf) {
                break found;
            }
            if self.buf.len() > limits.max_head {
                return Err(ReadError::Bad(431, format!("request head exceeds {} bytes", limits.max_head)));
            }
            if stop.load(Ordering::Acquire) {
                return Err(ReadError::Stopped);
            }
            match first_byte {
                None if started.elapsed() > limits.idle => return Err(ReadError::Closed),
                Some(t) if t.elapsed() > limits.request => {
                    return Err(ReadError::Bad(408, "request not received in time".into()))
                }
                _ => {}
            }
            match self.stream.read(&mut chunk) {
                Ok(0) if self.buf.is_empty() => return Err(ReadError::Closed),
                Ok(0) => return Err(ReadError::Bad(400, "connection closed inside the request head".into())),
                Ok(n) => {
                    first_byte.get_or_insert_with(Instant::now);
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        };
        if head_len > limits.max_head {
            return Err(ReadError::Bad(431, format!("request head exceeds {} bytes", limits.max_head)));
        }
        let head = std::str::from_utf8(&self.buf[..head_len])
            .map_err(|_| ReadError::Bad(400, "request head is not valid UTF-8".into()))?;
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split(' ');
        let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => (m, t, v),
            _ => return Err(ReadError::Bad(400, "malformed request line".into())),
        };
        if !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ReadError::Bad(400, "malformed method".into()));
        }
        let http11 = match version {
            "HTTP/1.1" => true,
            "HTTP/1.0" => false,
            _ => return Err(ReadError::Bad(505, format!("unsupported protocol version {version:?}"))),
        };
        if !target.starts_with('/') {
            return Err(ReadError::Bad(400, "the request target must be an absolute path".into()));
        }
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                return Err(ReadError::Bad(400, "malformed header line".into()));
            };
            if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(ReadError::Bad(400, "malformed header name".into()));
            }
            if headers.len() == limits.max_headers {
                return Err(ReadError::Bad(431, format!("more than {} headers", limits.max_headers)));
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut req = Request {
            method: method.to_string(),
            target: target.to_string(),
            headers,
            http11,
            body: Vec::new(),
        };
        if req.header("transfer-encoding").is_some() {
            return Err(ReadError::Bad(501, "request bodies must use Content-Length".into()));
        }
        let mut lengths = req.headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v);
        let body_len = match (lengths.next(), lengths.next()) {
            (None, _) => 0,
            (Some(v), None) => v
                .parse::<u64>()
                .ok()
                .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| ReadError::Bad(400, "malformed Content-Length".into()))?,
            (Some(_), Some(_)) => return Err(ReadError::Bad(400, "more than one Content-Length".into())),
        };
        if body_len > limits.max_body as u64 {
            return Err(ReadError::Bad(413, format!("request body exceeds {} bytes", limits.max_body)));
        }
        let body_len = body_len as usize;
        self.buf.drain(..body_start);
        // curl and others wait for this before sending a larger body.
        let expects = req.header("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
        if expects && http11 && self.buf.len() < body_len {
            let _ = (&self.stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let t0 = first_byte.unwrap_or_else(Instant::now);
        while self.buf.len() < body_len {
            if stop.load(Ordering::Acquire) {
                return Err(ReadError::Stopped);
            }
            if t0.elapsed() > limits.request {
                return Err(ReadError::Bad(408, "request body not received in time".into()));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Bad(400, "connection closed inside the request body".into())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        req.body = self.buf.drain(..body_len).collect();
        Ok(req)
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Writes a complete response with a Content-Length body.
pub fn write_response(
    w: &mut impl Write,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    ));
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

/// Writes the head of a chunked response; follow with `write_chunk` and `finish_chunks`.
pub fn write_chunked_head(
    w: &mut impl Write,
    status: u16,
    headers: &[(&str, &str)],
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Transfer-Encoding: chunked\r\nConnection: {}\r\n\r\n",
        if keep_alive { "keep-alive" } else { "close" }
    ));
    w.write_all(head.as_bytes())
}

/// Writes one chunk (nothing for empty data: an empty chunk would end the body).
pub fn write_chunk(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    write!(w, "{:x}\r\n", data.len())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")
}

/// Ends a chunked body.
pub fn finish_chunks(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

// ---------------------------------------------------------------------------------------------
// Chunked transfer decoding (incremental, never panics, bounded memory).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `digits` seen so far; `ext` = inside extensions/whitespace.
    Size {
        value: u64,
        digits: u32,
        ext: bool,
        ext_len: usize,
    },
    SizeLf {
        value: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// Trailer section: `line` = bytes on the current trailer line, `total` = trailer bytes.
    Trailer {
        line: usize,
        total: usize,
    },
    Done,
}

/// A malformed chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkError(pub String);

/// Decodes `Transfer-Encoding: chunked` incrementally: feed it whatever bytes arrive.
#[derive(Debug, Clone)]
pub struct ChunkDecoder {
    state: ChunkState,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        ChunkDecoder::new()
    }
}

const MAX_CHUNK_EXT: usize = 4096;
const MAX_TRAILER: usize = 16 * 1024;

impl ChunkDecoder {
    pub fn new() -> ChunkDecoder {
        ChunkDecoder { state: ChunkState::Size { value: 0, digits: 0, ext: false, ext_len: 0 } }
    }

    /// True once the terminating chunk and trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input`, appending body bytes to `out`. Returns how many input bytes were
    /// used (less than `input.len()` only when the body ended). After an error the decoder
    /// stays failed: the connection is unusable.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Size { value, digits, ext, ext_len } => {
                    let size_done = |value: u64, digits: u32| -> Result<ChunkState, ChunkError> {
                        if digits == 0 {
                            return Err(ChunkError("chunk size missing".into()));
                        }
                        Ok(ChunkState::SizeLf { value })
                    };
                    match b {
                        b'\r' => self.state = size_done(value, digits)?,
                        b'\n' => {
                            size_done(value, digits)?;
                            self.state = after_size(value);
                        }
                        _ if ext => {
                            if ext_len >= MAX_CHUNK_EXT {
                                return Err(ChunkError("chunk extension too long".into()));
                            }
                            self.state = ChunkState::Size { value, digits, ext, ext_len: ext_len + 1 };
                        }
                        b';' | b' ' | b'\t' if digits > 0 => {
                            self.state = ChunkState::Size { value, digits, ext: true, ext_len: 0 }
                        }
                        _ => {
                            let d = (b as char)
                                .to_digit(16)
                                .ok_or_else(|| ChunkError(format!("bad byte 0x{b:02x} in chunk size")))?;
                            if digits >= 15 {
                                return Err(ChunkError("chunk size too large".into()));
                            }
                            self.state = ChunkState::Size {
                                value: value * 16 + u64::from(d),
                                digits: digits + 1,
                                ext,
                                ext_len,
                            };
                        }
                    }
                    i += 1;
                }
                ChunkState::SizeLf { value } => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk size line not ended by CRLF".into()));
                    }
                    self.state = after_size(value);
                    i += 1;
                }
                ChunkState::Data { remaining } => {
                    let n = (input.len() - i).min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let left = remaining - n as u64;
                    self.state =
                        if left == 0 { ChunkState::DataCr } else { ChunkState::Data { remaining: left } };
                }
                ChunkState::DataCr => {
                    self.state = match b {
                        b'\r' => ChunkState::DataLf,
                        b'\n' => ChunkState::Size { value: 0, digits: 0, ext: false, ext_len: 0 },
                        _ => return Err(ChunkError("chunk data not followed by CRLF".into())),
                    };
                    i += 1;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk data not followed by CRLF".into()));
                    }
                    self.state = ChunkState::Size { value: 0, digits: 0, ext: false, ext_len: 0 };
                    i += 1;
                }
                ChunkState::Trailer { line, total } => {
                    if total >= MAX_TRAILER {
                        return Err(ChunkError("trailer section too long".into()));
                    }
                    self.state = match b {
                        b'\n' if line == 0 => ChunkState::Done,
                        b'\n' => ChunkState::Trailer { line: 0, total: total + 1 },
                        b'\r' => ChunkState::Trailer { line, total: total + 1 },
                        _ => ChunkState::Trailer { line: line + 1, total: total + 1 },
                    };
                    i += 1;
                }
            }
        }
        Ok(i)
    }
}

fn after_size(value: u64) -> ChunkState {
    if value == 0 {
        ChunkState::Trailer { line: 0, total: 0 }
    } else {
        ChunkState::Data { remaining: value }
    }
}

// ---------------------------------------------------------------------------------------------
// Client.

/// An `http://host:port/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// The path, percent-encoded as given, starting with `/`.
    pub path: String,
    /// The query without `?` (may be empty).
    pub query: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("unsupported URL {s:?}: only http:// is supported"))?;
        let (authority, path_query) = match rest.find(['/', '?']) {
            Some(p) => (&rest[..p], &rest[p..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("user:password@ in URLs is not supported; use the token option".into());
        }
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            let (h, after) = h.split_once(']').ok_or_else(|| format!("bad IPv6 host in {s:?}"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("bad port in {s:?}"))?,
                None if after.is_empty() => 80,
                None => return Err(format!("bad authority in {s:?}")),
            };
            (format!("[{h}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| format!("bad port in {s:?}"))?),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() || host.bytes().any(|b| b <= b' ') {
            return Err(format!("bad host in {s:?}"));
        }
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_query, ""),
        };
        let path = if path.is_empty() { "/" } else { path };
        if path.bytes().chain(query.bytes()).any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("URL {s:?} contains spaces or control characters"));
        }
        let query = query.split('#').next().unwrap_or("");
        Ok(Url { host, port, path: path.to_string(), query: query.to_string() })
    }

    fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `path?query` as sent on the request line.
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

/// How a response body is delimited.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(ChunkDecoder),
    UntilClose,
}

/// What one `Response::read_body` call produced.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyRead {
    /// This many bytes were appended.
    Data(usize),
    /// Nothing arrived within the poll interval; call again.
    Idle,
    /// The body is complete.
    End,
}

/// A response whose head was read; the body is read incrementally.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    stream: TcpStream,
    /// Bytes read past the head, not yet decoded.
    pending: Vec<u8>,
    /// The read buffer, kept between reads.
    scratch: Vec<u8>,
    framing: Framing,
    done: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether the body's end is marked (Content-Length or chunked), so that an end seen by
    /// `read_body` means the whole body arrived rather than a closed connection.
    pub fn is_framed(&self) -> bool {
        !matches!(self.framing, Framing::UntilClose)
    }

    /// Reads more of the body into `out`, waiting at most one poll interval.
    pub fn read_body(&mut self, out: &mut Vec<u8>) -> io::Result<BodyRead> {
        if self.done {
            return Ok(BodyRead::End);
        }
        let mut raw = std::mem::take(&mut self.pending);
        if raw.is_empty() {
            raw = std::mem::take(&mut self.scratch);
            raw.resize(64 * 1024, 0);
            match self.stream.read(&mut raw) {
                Ok(n) => raw.truncate(n),
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    self.scratch = raw;
                    return Ok(BodyRead::Idle);
                }
                Err(e) => return Err(e),
            }
            if raw.is_empty() {
                return match self.framing {
                    Framing::UntilClose => {
                        self.done = true;
                        Ok(BodyRead::End)
                    }
                    Framing::Length(0) => {
                        self.done = true;
                        Ok(BodyRead::End)
                    }
                    _ => {
                        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside the body"))
                    }
                };
            }
        }
        let before = out.len();
        match &mut self.framing {
            Framing::UntilClose => out.extend_from_slice(&raw),
            Framing::Length(left) => {
                let n = raw.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                out.extend_from_slice(&raw[..n]);
                *left -= n as u64;
                if *left == 0 {
                    self.done = true;
                }
            }
            Framing::Chunked(dec) => {
                dec.feed(&raw, out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
                if dec.is_done() {
                    self.done = true;
                }
            }
        }
        raw.clear();
        self.scratch = raw;
        let n = out.len() - before;
        if n == 0 && self.done {
            return Ok(BodyRead::End);
        }
        Ok(BodyRead::Data(n))
    }

    /// Reads the whole body (up to `max` bytes), for error responses and tests.
    pub fn read_all(&mut self, max: usize, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            match self.read_body(&mut out)? {
                BodyRead::End => return Ok(out),
                BodyRead::Data(_) if out.len() > max => {
                    out.truncate(max);
                    return Ok(out);
                }
                _ if Instant::now() > deadline => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "body not received in time"))
                }
                _ => {}
            }
        }
    }

    /// The underlying stream (to shut it down from another thread).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

/// Connects to `url`'s host, trying each resolved address with `connect_timeout`.
pub fn connect(url: &Url, connect_timeout: Duration, stop: &AtomicBool) -> io::Result<TcpStream> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (host, url.port).to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} did not resolve", url.host));
    for a in addrs {
        if stop.load(Ordering::Acquire) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
        }
        match TcpStream::connect_timeout(&a, connect_timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Sends a request and reads the response head, waiting at most `head_timeout` (checking
/// `stop` every poll interval). The stream gets `POLL` as its read timeout.
pub fn request(
    mut stream: TcpStream,
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
    head_timeout: Duration,
    stop: &AtomicBool,
) -> io::Result<Response> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(head_timeout.max(Duration::from_secs(1))))?;
    let mut head =
        format!("{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", url.target(), url.host_header());
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body);
    stream.write_all(&msg)?;
    let deadline = Instant::now() + head_timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_len, body_start) = loop {
        if let Some(found) = find_head_end(&buf) {
            break found;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too large"));
        }
        if stop.load(Ordering::Acquire) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no response head in time"));
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not an HTTP/1.x response"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| bad("malformed status line"))?;
    let mut hdrs = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (n, v) = line.split_once(':').ok_or_else(|| bad("malformed response header"))?;
        hdrs.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let find = |name: &str| hdrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let framing = if find("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
        Framing::Chunked(ChunkDecoder::new())
    } else if let Some(len) = find("content-length") {
        Framing::Length(len.parse().map_err(|_| bad("malformed Content-Length"))?)
    } else if status == 204 || status == 304 || method == "HEAD" {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    };
    let done = matches!(framing, Framing::Length(0));
    Ok(Response {
        status,
        headers: hdrs,
        stream,
        pending: buf[body_start..].to_vec(),
        scratch: Vec::new(),
        framing,
        done,
    })
}

/// Percent-encodes `s` for use as one path segment or query value.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decodes bytes (`+` is kept as is; it is a plus in paths). `None` on a bad escape.
pub fn decode_component(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if !hex.iter().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split: usize) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut d = ChunkDecoder::new();
        let mut out = Vec::new();
        for piece in input.chunks(split.max(1)) {
            d.feed(piece, &mut out)?;
        }
        Ok((out, d.is_done()))
    }

    #[test]
    fn chunks_decode_across_splits() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-T: 1\r\n\r\n";
        for split in 1..body.len() {
            assert_eq!(decode_all(body, split).unwrap(), (b"hello, world".to_vec(), true));
        }
        assert_eq!(decode_all(b"3\nabc\n0\n\n", 2).unwrap(), (b"abc".to_vec(), true));
        assert!(decode_all(b"zz\r\n", 1).is_err());
        assert!(decode_all(b"3\r\nabcX", 1).is_err());
        assert!(decode_all(b"\r\n", 1).is_err());
        assert!(decode_all(b"ffffffffffffffff\r\n", 3).is_err());
    }

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:4567/servers/?token=x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str(), u.query.as_str()),
            ("127.0.0.1", 4567, "/servers/", "token=x")
        );
        let u = Url::parse("http://[::1]:80").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("[::1]", 80, "/"));
        assert!(Url::parse("https://x/").is_err());
        assert!(Url::parse("http://:1/").is_err());
        assert!(Url::parse("http://h:x/").is_err());
        assert_eq!(decode_component("a%2Fb%20").unwrap(), b"a/b ");
        assert!(decode_component("%zz").is_none());
        assert!(decode_component("%+1").is_none());
        assert_eq!(encode_component("2024-01-01 10:00"), "2024-01-01%2010%3A00");
    }
}
