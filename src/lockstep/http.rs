//! The HTTP client side of lockstep (the follower, `tidemark watch --url`, tests): hyper's
//! HTTP/1.1 client on a current-thread tokio runtime that only runs while the calling thread
//! waits in one of these functions, with rustls for `https://` URLs. The caller stays
//! blocking: every wait is cut into short slices so a stop flag is seen promptly.
//!
//! Also the URL helpers both sides share (percent-encoding of path segments).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use crate::error::{Error, Result};

/// How often blocked waits wake up to look at the stop flag.
pub const POLL: Duration = Duration::from_millis(50);

/// Any byte stream hyper can speak over: plain TCP or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An `http://` or `https://` URL (parsed by the `url` crate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// The host as written (IPv6 in brackets), for the `Host` header and TLS.
    pub host: String,
    pub port: u16,
    /// The path, percent-encoded as given, starting with `/`.
    pub path: String,
    /// The query without `?` (may be empty).
    pub query: String,
}

impl Url {
    pub fn parse(s: &str) -> std::result::Result<Url, String> {
        let u = url::Url::parse(s).map_err(|e| format!("bad URL {s:?}: {e}"))?;
        let https = match u.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(format!("unsupported URL {s:?}: {other}:// (only http:// and https://)")),
        };
        if !u.username().is_empty() || u.password().is_some() {
            return Err("user:password@ in URLs is not supported; use the token option".into());
        }
        let host = match u.host() {
            Some(url::Host::Ipv6(a)) => format!("[{a}]"),
            Some(h) => h.to_string(),
            None => return Err(format!("URL {s:?} has no host")),
        };
        let port = u.port_or_known_default().ok_or_else(|| format!("URL {s:?} has no port"))?;
        Ok(Url { https, host, port, path: u.path().to_string(), query: u.query().unwrap_or("").to_string() })
    }

    fn host_header(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
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

/// Everything but unreserved characters is escaped in a path segment or query value.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes `s` for use as one path segment or query value.
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Percent-decodes (`+` stays a plus: it is one in paths). `None` on a `%` not followed by two
/// hex digits.
pub fn decode_component(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let well_formed = b
        .iter()
        .enumerate()
        .filter(|(_, &c)| c == b'%')
        .all(|(i, _)| b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
    well_formed.then(|| percent_decode_str(s).collect())
}

/// Reads PEM certificates (for the trusted roots or a server's chain).
pub(crate) fn read_certs(path: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let pem = std::fs::read(Path::new(path)).map_err(|e| Error::io(format!("cannot read {path}"), e))?;
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidArgument(format!("{path} is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::InvalidArgument(format!("{path} holds no PEM certificate")));
    }
    Ok(certs)
}

pub(crate) fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A blocking HTTP/1.1 client: one connection per request (`Connection: close`).
pub struct Client {
    rt: Arc<Runtime>,
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
}

impl Client {
    /// `ca_file`: PEM roots trusted for `https://` (default: the Mozilla roots of `webpki-roots`).
    pub fn new(ca_file: Option<&str>, connect_timeout: Duration) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the HTTP client", e))?;
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                for c in read_certs(path)? {
                    roots.add(c).map_err(|e| Error::InvalidArgument(format!("{path}: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let config = rustls::ClientConfig::builder_with_provider(crypto())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::io_other(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
        Ok(Client { rt: Arc::new(rt), tls, connect_timeout })
    }

    /// Sends a request and waits for the response head up to `head_timeout`, checking `stop`
    /// every poll interval.
    pub fn request(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        body: &[u8],
        head_timeout: Duration,
        stop: &AtomicBool,
    ) -> io::Result<Response> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(url.target())
            .header("Host", url.host_header())
            .header("Connection", "close");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).map_err(invalid)?;
        let fut = send(self.tls.clone(), url.clone(), req, self.connect_timeout);
        let resp = self.wait(Box::pin(fut), head_timeout, stop)??;
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let framed = resp.headers().contains_key(hyper::header::CONTENT_LENGTH)
            || resp
                .headers()
                .get(hyper::header::TRANSFER_ENCODING)
                .is_some_and(|t| t.to_str().is_ok_and(|t| t.to_ascii_lowercase().contains("chunked")));
        Ok(Response { status, headers, body: resp.into_body(), framed, rt: self.rt.clone(), done: false })
    }

    /// Runs `fut` on the runtime until it completes, `timeout` passes or `stop` is set.
    fn wait<T>(
        &self,
        mut fut: Pin<Box<dyn std::future::Future<Output = T> + Send + '_>>,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> io::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if stop.load(Ordering::Acquire) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
            }
            let slice = POLL.min(deadline.saturating_duration_since(Instant::now()));
            if let Ok(v) = self.rt.block_on(async { tokio::time::timeout(slice, &mut fut).await }) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no response head in time"));
            }
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

async fn connect(
    tls: tokio_rustls::TlsConnector,
    url: &Url,
    connect_timeout: Duration,
) -> io::Result<Box<dyn Io>> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']').to_string();
    let addrs: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host((host.as_str(), url.port)).await?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} did not resolve", url.host));
    for a in addrs {
        match tokio::time::timeout(connect_timeout, TcpStream::connect(a)).await {
            Ok(Ok(tcp)) => {
                tcp.set_nodelay(true)?;
                if !url.https {
                    return Ok(Box::new(tcp));
                }
                let name = rustls::pki_types::ServerName::try_from(host).map_err(invalid)?;
                let s = tokio::time::timeout(connect_timeout, tls.connect(name, tcp))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
                return Ok(Box::new(s));
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {a} timed out")),
        }
    }
    Err(last)
}

async fn send(
    tls: tokio_rustls::TlsConnector,
    url: Url,
    req: hyper::Request<Full<Bytes>>,
    connect_timeout: Duration,
) -> io::Result<hyper::Response<Incoming>> {
    let io = connect(tls, &url, connect_timeout).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(other)?;
    // The connection is driven while the caller waits on the runtime (head or body reads).
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(other)
}

fn other(e: hyper::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// What one `Response::read_body` call produced.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyRead {
    /// This many bytes were appended.
    Data(usize),
    /// Nothing arrived within the poll interval; call again.
    Idle,
    /// The body is complete (an error is returned instead when it was cut short).
    End,
}

/// A response whose head was read; the body is read incrementally.
pub struct Response {
    pub status: u16,
    /// Header names are lower-case.
    pub headers: Vec<(String, String)>,
    body: Incoming,
    framed: bool,
    rt: Arc<Runtime>,
    done: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether the body's end is marked (Content-Length or chunked), so that `End` means the
    /// whole body arrived rather than the connection closing.
    pub fn is_framed(&self) -> bool {
        self.framed
    }

    /// Reads more of the body into `out`, waiting at most one poll interval.
    pub fn read_body(&mut self, out: &mut Vec<u8>) -> io::Result<BodyRead> {
        if self.done {
            return Ok(BodyRead::End);
        }
        let body = &mut self.body;
        let frame = self.rt.block_on(async { tokio::time::timeout(POLL, body.frame()).await });
        match frame {
            Err(_) => Ok(BodyRead::Idle),
            Ok(None) => {
                self.done = true;
                Ok(BodyRead::End)
            }
            Ok(Some(Err(e))) => {
                self.done = true;
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("body cut short: {e}")))
            }
            Ok(Some(Ok(f))) => match f.into_data() {
                Ok(d) => {
                    out.extend_from_slice(&d);
                    Ok(BodyRead::Data(d.len()))
                }
                Err(_) => Ok(BodyRead::Data(0)), // trailers
            },
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:4567/servers/?token=x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str(), u.query.as_str(), u.https),
            ("127.0.0.1", 4567, "/servers/", "token=x", false)
        );
        let u = Url::parse("http://[::1]:80").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("[::1]", 80, "/"));
        let u = Url::parse("https://example.com/a/").unwrap();
        assert_eq!((u.port, u.https, u.host_header().as_str()), (443, true, "example.com"));
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("http://:1/").is_err());
        assert!(Url::parse("http://h:x/").is_err());
        assert!(Url::parse("http://u:p@h/").is_err());
        assert_eq!(decode_component("a%2Fb%20").unwrap(), b"a/b ");
        assert!(decode_component("%zz").is_none());
        assert!(decode_component("%+1").is_none());
        assert!(decode_component("%2").is_none());
        assert_eq!(encode_component("2024-01-01 10:00"), "2024-01-01%2010%3A00");
    }
}
