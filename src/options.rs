//! Store options, given as a JSON object so the C ABI stays stable as options are added.

use serde_json::Value;

use crate::error::{Error, Result};

/// When a directory store forces its log to stable storage (see docs/durability.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// A write returns only after its commit is on disk (fdatasync); concurrent writers
    /// share one fdatasync (group commit).
    Always,
    /// Writes reach the OS before they return; a background thread syncs every
    /// `sync_interval_ms`.
    Interval,
    /// Writes reach the OS before they return; never synced except on close.
    None,
}

impl SyncPolicy {
    pub fn name(self) -> &'static str {
        match self {
            SyncPolicy::Always => "always",
            SyncPolicy::Interval => "interval",
            SyncPolicy::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Threads that run push-watch callbacks (1..=64).
    pub dispatch_threads: usize,
    pub max_key_size: usize,
    pub max_value_size: usize,
    /// Directory stores: when the log is synced.
    pub sync: SyncPolicy,
    /// Directory stores with `sync: "interval"`: milliseconds between background syncs.
    pub sync_interval_ms: u64,
    /// Directory stores: open for inspection only; writes and compaction are refused and
    /// nothing in the directory is changed (a torn tail is ignored, not cut).
    pub read_only: bool,
    /// Directory stores: refuse to open (`Corrupt`) rather than cut more than one partial
    /// commit off the end of the log (see docs/durability.md, "Tail repairs").
    pub strict_recovery: bool,
    /// Directory stores: a segment file is closed and a new one started once it holds
    /// this many bytes.
    pub segment_size: u64,
    /// Directory stores: write a checkpoint of the derived state once this many bytes of log
    /// (and at least as many as the last checkpoint's size) were written since the last one
    /// (0 = only on `compact`).
    pub checkpoint_bytes: u64,
    /// Directory stores: bytes of recent log entries kept in memory for `changes` and
    /// watches (older ones are read from disk).
    pub cache_bytes: u64,
}

pub(crate) const MIN_SEGMENT_SIZE: u64 = 4096;
pub(crate) const MAX_SEGMENT_SIZE: u64 = 1 << 30;

impl Default for Options {
    fn default() -> Self {
        Options {
            dispatch_threads: 1,
            max_key_size: 64 * 1024,
            max_value_size: 16 * 1024 * 1024,
            sync: SyncPolicy::Always,
            sync_interval_ms: 100,
            read_only: false,
            strict_recovery: false,
            segment_size: 64 * 1024 * 1024,
            checkpoint_bytes: 256 * 1024 * 1024,
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

const KNOWN: &[&str] = &[
    "dispatch_threads",
    "max_key_size",
    "max_value_size",
    "sync",
    "sync_interval_ms",
    "read_only",
    "strict_recovery",
    "segment_size",
    "checkpoint_bytes",
    "cache_bytes",
];

impl Options {
    /// Parses `{"dispatch_threads": 2, "sync": "always", ...}`; `None` or an empty string
    /// means the defaults. Unknown keys and values of the wrong type or range are errors,
    /// never ignored.
    pub fn from_json(json: Option<&str>) -> Result<Options> {
        let mut opts = Options::default();
        let Some(text) = json.filter(|t| !t.trim().is_empty()) else {
            return Ok(opts);
        };
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::InvalidArgument(format!("options are not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::InvalidArgument("options must be a JSON object".into()));
        };
        let positive = |key: &str, v: &Value| {
            v.as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| Error::InvalidArgument(format!("option \"{key}\" must be a positive integer")))
        };
        let size = |key: &str, v: &Value| {
            positive(key, v).and_then(|n| {
                usize::try_from(n)
                    .map_err(|_| Error::InvalidArgument(format!("option \"{key}\" is too large")))
            })
        };
        for (key, v) in &map {
            match key.as_str() {
                "dispatch_threads" => opts.dispatch_threads = size(key, v)?,
                "max_key_size" => opts.max_key_size = size(key, v)?,
                "max_value_size" => opts.max_value_size = size(key, v)?,
                "sync" => {
                    opts.sync = match v.as_str() {
                        Some("always") => SyncPolicy::Always,
                        Some("interval") => SyncPolicy::Interval,
                        Some("none") => SyncPolicy::None,
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "option \"sync\" must be \"always\", \"interval\" or \"none\", not {v}"
                            )))
                        }
                    }
                }
                "sync_interval_ms" => opts.sync_interval_ms = positive(key, v)?,
                "read_only" | "strict_recovery" => {
                    let b = v.as_bool().ok_or_else(|| {
                        Error::InvalidArgument(format!("option \"{key}\" must be true or false"))
                    })?;
                    if key == "read_only" {
                        opts.read_only = b;
                    } else {
                        opts.strict_recovery = b;
                    }
                }
                "segment_size" => {
                    let n = positive(key, v)?;
                    if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&n) {
                        return Err(Error::InvalidArgument(format!(
                            "option \"segment_size\" must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE} bytes"
                        )));
                    }
                    opts.segment_size = n;
                }
                "checkpoint_bytes" | "cache_bytes" => {
                    let n = v.as_u64().ok_or_else(|| {
                        Error::InvalidArgument(format!("option \"{key}\" must be a non-negative integer"))
                    })?;
                    if key == "checkpoint_bytes" {
                        opts.checkpoint_bytes = n;
                    } else {
                        opts.cache_bytes = n;
                    }
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown option \"{key}\" (known: {})",
                        KNOWN.join(", ")
                    )))
                }
            }
        }
        if opts.dispatch_threads > 64 {
            return Err(Error::InvalidArgument("option \"dispatch_threads\" must be at most 64".into()));
        }
        if map.contains_key("sync_interval_ms") && opts.sync != SyncPolicy::Interval {
            return Err(Error::InvalidArgument(
                "option \"sync_interval_ms\" only applies with \"sync\": \"interval\"".into(),
            ));
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(Options::from_json(None).unwrap(), Options::default());
        assert_eq!(Options::from_json(Some(" ")).unwrap(), Options::default());
        assert_eq!(Options::from_json(Some(r#"{"dispatch_threads":4}"#)).unwrap().dispatch_threads, 4);
        for bad in [
            r#"{"nope":1}"#,
            r#"{"max_key_size":0}"#,
            r#"{"max_key_size":"1"}"#,
            "[1]",
            "{",
            r#"{"dispatch_threads":65}"#,
        ] {
            assert!(matches!(Options::from_json(Some(bad)), Err(Error::InvalidArgument(_))), "{bad}");
        }
    }

    #[test]
    fn durable_options() {
        let o = Options::from_json(Some(
            r#"{"sync":"interval","sync_interval_ms":5,"read_only":true,"segment_size":65536,"checkpoint_bytes":0,"cache_bytes":0}"#,
        ))
        .unwrap();
        assert_eq!(o.sync, SyncPolicy::Interval);
        assert_eq!(o.sync_interval_ms, 5);
        assert!(o.read_only);
        assert_eq!(o.segment_size, 65536);
        assert_eq!(o.checkpoint_bytes, 0);
        assert_eq!(Options::from_json(Some(r#"{"sync":"none"}"#)).unwrap().sync, SyncPolicy::None);
        for bad in [
            r#"{"sync":"sometimes"}"#,
            r#"{"sync":1}"#,
            r#"{"sync_interval_ms":5}"#,
            r#"{"sync":"interval","sync_interval_ms":0}"#,
            r#"{"read_only":1}"#,
            r#"{"segment_size":100}"#,
            r#"{"segment_size":4294967296}"#,
            r#"{"cache_bytes":-1}"#,
        ] {
            let e = Options::from_json(Some(bad)).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
        }
    }
}
