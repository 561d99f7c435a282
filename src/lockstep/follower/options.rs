//! Follower options: the JSON object `Follower::start` takes, parsed and checked.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::lockstep::options_object;

/// Follower options, given as a JSON object (every field optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowOptions {
    /// Where records go: `prefix + id`. Default: the URL's path (ending with `/`).
    pub prefix: Option<Vec<u8>>,
    /// The record field that names it (default `id`): a string or a number.
    pub id_field: String,
    /// The record field the server sorts by (default `updated_at`): a number or a string.
    pub order_by: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Ask for live changes (`follow=true`) once in sync (default true). Without it, or when
    /// the server ends its response, the follower asks again after `poll_ms`.
    pub follow: bool,
    /// Send the cursor as this query parameter instead of as the last path segment.
    pub cursor_param: Option<String>,
    /// Where the cursor is stored (a user key). Default: the reserved key `"\0l/" + prefix`.
    pub cursor_key: Option<Vec<u8>>,
    pub poll_ms: u64,
    pub connect_timeout_ms: u64,
    /// Reconnect when nothing (not even a heartbeat) arrived for this long (0 = never).
    pub idle_timeout_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Records per local commit at most.
    pub batch_records: usize,
    /// A longer line is reported as malformed and skipped.
    pub max_line_bytes: usize,
    /// Allow a first sync into a prefix that already holds keys: the follower then owns them
    /// and its first sync deletes those the server does not send. Without it such a start is
    /// refused, so a follower never deletes keys it did not mirror.
    pub adopt: bool,
    /// Allow the prefix `/` (every key that starts with a slash).
    pub allow_root_prefix: bool,
    /// PEM file of the certificates trusted for `https://` URLs (default: the Mozilla roots).
    pub tls_ca_file: Option<String>,
    /// Sent as the `follower=` query parameter: a tidemark server names this follower so in
    /// its metrics and status page (else it shows the peer address).
    pub name: Option<String>,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            prefix: None,
            id_field: "id".into(),
            order_by: "updated_at".into(),
            token: None,
            follow: true,
            cursor_param: None,
            cursor_key: None,
            poll_ms: 1000,
            connect_timeout_ms: 2000,
            idle_timeout_ms: 60_000,
            backoff_initial_ms: 100,
            backoff_max_ms: 30_000,
            batch_records: 1000,
            max_line_bytes: 16 * 1024 * 1024,
            adopt: false,
            allow_root_prefix: false,
            tls_ca_file: None,
            name: None,
        }
    }
}

impl FollowOptions {
    /// Parses `{"prefix": "/mirror/", "id_field": "id", "order_by": "updated_at", ...}`;
    /// unknown keys and wrong types are errors.
    pub fn from_json(json: Option<&str>) -> Result<FollowOptions> {
        let mut o = FollowOptions::default();
        for (key, v) in options_object(json)? {
            let bad = |what: &str| Error::InvalidArgument(format!("option \"{key}\" must be {what}"));
            let string = |v: &Value| {
                v.as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| bad("a non-empty string"))
            };
            let pos = |v: &Value| v.as_u64().filter(|n| *n >= 1).ok_or_else(|| bad("a positive integer"));
            match key.as_str() {
                "prefix" => o.prefix = Some(string(&v)?.into_bytes()),
                "id_field" => o.id_field = string(&v)?,
                "order_by" => o.order_by = string(&v)?,
                "token" => o.token = Some(string(&v)?),
                "cursor_param" => o.cursor_param = Some(string(&v)?),
                "tls_ca_file" => o.tls_ca_file = Some(string(&v)?),
                "name" => o.name = Some(string(&v)?),
                "cursor_key" => o.cursor_key = Some(string(&v)?.into_bytes()),
                "follow" => o.follow = v.as_bool().ok_or_else(|| bad("true or false"))?,
                "adopt" => o.adopt = v.as_bool().ok_or_else(|| bad("true or false"))?,
                "allow_root_prefix" => {
                    o.allow_root_prefix = v.as_bool().ok_or_else(|| bad("true or false"))?
                }
                "poll_ms" => o.poll_ms = pos(&v)?,
                "connect_timeout_ms" => o.connect_timeout_ms = pos(&v)?,
                "idle_timeout_ms" => {
                    o.idle_timeout_ms = v.as_u64().ok_or_else(|| bad("a non-negative integer"))?
                }
                "backoff_initial_ms" => o.backoff_initial_ms = pos(&v)?,
                "backoff_max_ms" => o.backoff_max_ms = pos(&v)?,
                "batch_records" => o.batch_records = pos(&v)? as usize,
                "max_line_bytes" => o.max_line_bytes = pos(&v)? as usize,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                    "unknown follower option \"{key}\" (known: prefix, id_field, order_by, token, follow, \
                         cursor_param, cursor_key, poll_ms, connect_timeout_ms, idle_timeout_ms, \
                         backoff_initial_ms, backoff_max_ms, batch_records, max_line_bytes, adopt, \
                         allow_root_prefix, tls_ca_file, name)"
                )))
                }
            }
        }
        if o.backoff_max_ms < o.backoff_initial_ms {
            o.backoff_max_ms = o.backoff_initial_ms;
        }
        Ok(o)
    }
}
