//! Server options: the JSON object `Server::start` takes, parsed and checked.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::lockstep::options_object;

/// hyper's smallest read buffer: a smaller `max_header_bytes` is raised to it.
pub(super) const MIN_HEADER_BYTES: usize = 8192;

/// Server options, given as a JSON object (every field optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Accept `PUT /<path>/<id>` (JSON body) and `DELETE /<path>/<id>`.
    pub writable: bool,
    /// When set, every request needs `Authorization: Bearer <token>` (else 401).
    pub token: Option<String>,
    /// When set, the admin actions (`POST /admin/...`, see `ops`) are on and need
    /// `Authorization: Bearer <admin_token>`; when not, they answer 403.
    pub admin_token: Option<String>,
    /// Follow mode: a `{"heartbeat":true}` chunk after this many ms without data.
    pub heartbeat_ms: u64,
    /// Finite responses served at once (counted after authorization); more get 503.
    pub max_connections: usize,
    /// Follow streams served at once (counted after authorization); more get 503.
    pub max_follows: usize,
    /// Open TCP connections, authorized or not; more are closed right after accept.
    pub max_sockets: usize,
    /// Threads of the server's runtime.
    pub threads: usize,
    /// PEM certificate chain and private key files: serve HTTPS (both or neither).
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// Request line plus headers.
    pub max_header_bytes: usize,
    /// PUT bodies.
    pub max_body_bytes: usize,
    /// Allow binding a non-loopback address.
    pub allow_remote: bool,
    /// Follow mode: events buffered per response before it reads from the log instead.
    pub max_queue: usize,
    /// A keep-alive connection idle this long is closed.
    pub idle_timeout_ms: u64,
    /// A client must send a whole request head within this time of the connection opening
    /// (or of the previous response), and a PUT body within this time after its head.
    pub request_timeout_ms: u64,
    /// A client that accepts no bytes for this long is dropped.
    pub write_timeout_ms: u64,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            writable: false,
            token: None,
            admin_token: None,
            heartbeat_ms: 10_000,
            max_connections: 64,
            max_follows: 10_000,
            max_sockets: 16_384,
            threads: 2,
            tls_cert: None,
            tls_key: None,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            allow_remote: false,
            max_queue: 1000,
            idle_timeout_ms: 30_000,
            request_timeout_ms: 10_000,
            write_timeout_ms: 30_000,
        }
    }
}

impl ServerOptions {
    /// Parses `{"writable": true, "token": "...", "heartbeat_ms": 5000, ...}`; `None` or an
    /// empty string = defaults; unknown keys and wrong types are errors.
    pub fn from_json(json: Option<&str>) -> Result<ServerOptions> {
        let mut o = ServerOptions::default();
        for (key, v) in options_object(json)? {
            let pos = |v: &Value| {
                v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                    Error::InvalidArgument(format!("option \"{key}\" must be a positive integer"))
                })
            };
            let boolean = |v: &Value| {
                v.as_bool()
                    .ok_or_else(|| Error::InvalidArgument(format!("option \"{key}\" must be true or false")))
            };
            match key.as_str() {
                "writable" => o.writable = boolean(&v)?,
                "allow_remote" => o.allow_remote = boolean(&v)?,
                "token" | "admin_token" => {
                    let t = match &v {
                        Value::Null => None,
                        Value::String(s) if !s.is_empty() && s.bytes().all(|b| (0x21..0x7f).contains(&b)) => {
                            Some(s.clone())
                        }
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "option \"{key}\" must be a non-empty string of visible ASCII characters"
                            )))
                        }
                    };
                    if key == "token" {
                        o.token = t;
                    } else {
                        o.admin_token = t;
                    }
                }
                "heartbeat_ms" => o.heartbeat_ms = pos(&v)?,
                "max_connections" => o.max_connections = pos(&v)? as usize,
                "max_follows" => o.max_follows = pos(&v)? as usize,
                "max_sockets" => o.max_sockets = pos(&v)? as usize,
                "threads" => o.threads = pos(&v)?.min(64) as usize,
                "tls_cert" | "tls_key" => {
                    let path = v.as_str().filter(|p| !p.is_empty()).map(str::to_string).ok_or_else(|| {
                        Error::InvalidArgument(format!("option \"{key}\" must be a file name"))
                    })?;
                    if key == "tls_cert" {
                        o.tls_cert = Some(path);
                    } else {
                        o.tls_key = Some(path);
                    }
                }
                "max_header_bytes" => o.max_header_bytes = pos(&v)?.max(MIN_HEADER_BYTES as u64) as usize,
                "max_body_bytes" => o.max_body_bytes = pos(&v)? as usize,
                "max_queue" => o.max_queue = pos(&v)? as usize,
                "idle_timeout_ms" => o.idle_timeout_ms = pos(&v)?,
                "request_timeout_ms" => o.request_timeout_ms = pos(&v)?,
                "write_timeout_ms" => o.write_timeout_ms = pos(&v)?,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown server option \"{key}\" (known: writable, token, admin_token, heartbeat_ms, max_connections, \
                         max_follows, max_sockets, threads, tls_cert, tls_key, max_header_bytes, max_body_bytes, \
                         allow_remote, max_queue, idle_timeout_ms, request_timeout_ms, write_timeout_ms)"
                    )))
                }
            }
        }
        if o.tls_cert.is_some() != o.tls_key.is_some() {
            return Err(Error::InvalidArgument("options \"tls_cert\" and \"tls_key\" go together".into()));
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = ServerOptions::from_json(Some(r#"{"writable":true,"token":"s3cret","heartbeat_ms":50}"#))
            .unwrap();
        assert!(o.writable);
        assert_eq!(o.token.as_deref(), Some("s3cret"));
        assert_eq!(o.heartbeat_ms, 50);
        for bad in [r#"{"nope":1}"#, r#"{"token":""}"#, r#"{"heartbeat_ms":0}"#, r#"{"writable":1}"#, "[]"] {
            assert!(ServerOptions::from_json(Some(bad)).is_err(), "{bad}");
        }
    }
}
