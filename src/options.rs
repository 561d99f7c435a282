//! Store options, given as a JSON object so the C ABI stays stable as options are added.

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;
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
    /// Contexts: how many deltas each context retains (the oldest beyond it are dropped;
    /// 0 = none, every sync of an older version is FULL).
    pub delta_threshold: u64,
    /// Contexts: a context not updated for this many ms is expired (None = never); `cleanup`
    /// deletes expired contexts when `context_auto_delete` is true.
    pub context_ttl_ms: Option<u64>,
    /// Contexts: a delta older than this many ms is expired (None = never): sync no longer
    /// uses it and `cleanup` deletes it.
    pub delta_ttl_ms: Option<u64>,
    /// Contexts: whether `cleanup` deletes expired contexts (false = it only drops deltas).
    pub context_auto_delete: bool,
    /// Whether the write path counts commits, errors and latencies (`Store::metrics`).
    pub metrics: bool,
    /// One write call and one write group in this many is timed for the latency and group
    /// size histograms (1 = every one); the counters count every one.
    pub metrics_sample_every: u64,
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
            delta_threshold: 100,
            context_ttl_ms: None,
            delta_ttl_ms: None,
            context_auto_delete: false,
            metrics: true,
            metrics_sample_every: 64,
        }
    }
}

/// The options as given: every field optional, unknown keys refused by serde. Each field
/// deserializes through a helper whose message says what the value must be; `from_json`
/// adds which option it was.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Given {
    #[serde(default, deserialize_with = "positive")]
    dispatch_threads: Option<u64>,
    #[serde(default, deserialize_with = "positive")]
    max_key_size: Option<u64>,
    #[serde(default, deserialize_with = "positive")]
    max_value_size: Option<u64>,
    #[serde(default, deserialize_with = "sync_policy")]
    sync: Option<SyncPolicy>,
    #[serde(default, deserialize_with = "positive")]
    sync_interval_ms: Option<u64>,
    #[serde(default, deserialize_with = "boolean")]
    read_only: Option<bool>,
    #[serde(default, deserialize_with = "boolean")]
    strict_recovery: Option<bool>,
    #[serde(default, deserialize_with = "positive")]
    segment_size: Option<u64>,
    #[serde(default, deserialize_with = "non_negative")]
    checkpoint_bytes: Option<u64>,
    #[serde(default, deserialize_with = "non_negative")]
    cache_bytes: Option<u64>,
    #[serde(default, deserialize_with = "non_negative")]
    delta_threshold: Option<u64>,
    #[serde(default, deserialize_with = "positive")]
    context_ttl_ms: Option<u64>,
    #[serde(default, deserialize_with = "positive")]
    delta_ttl_ms: Option<u64>,
    #[serde(default, deserialize_with = "boolean")]
    context_auto_delete: Option<bool>,
    #[serde(default, deserialize_with = "boolean")]
    metrics: Option<bool>,
    #[serde(default, deserialize_with = "positive")]
    metrics_sample_every: Option<u64>,
}

fn positive<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    match u64::deserialize(d) {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(D::Error::custom("must be a positive integer")),
    }
}

fn non_negative<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    u64::deserialize(d).map(Some).map_err(|_| D::Error::custom("must be a non-negative integer"))
}

fn boolean<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<bool>, D::Error> {
    bool::deserialize(d).map(Some).map_err(|_| D::Error::custom("must be true or false"))
}

fn sync_policy<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<SyncPolicy>, D::Error> {
    let v = Value::deserialize(d)?;
    match v.as_str() {
        Some("always") => Ok(Some(SyncPolicy::Always)),
        Some("interval") => Ok(Some(SyncPolicy::Interval)),
        Some("none") => Ok(Some(SyncPolicy::None)),
        _ => Err(D::Error::custom(format!("must be \"always\", \"interval\" or \"none\", not {v}"))),
    }
}

impl Options {
    /// Parses `{"dispatch_threads": 2, "sync": "always", ...}`; `None` or an empty string
    /// means the defaults. Unknown keys and values of the wrong type or range are errors
    /// naming the option, never ignored.
    pub fn from_json(json: Option<&str>) -> Result<Options> {
        let mut opts = Options::default();
        let Some(text) = json.filter(|t| !t.trim().is_empty()) else {
            return Ok(opts);
        };
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::InvalidArgument(format!("options are not valid JSON: {e}")))?;
        let Value::Object(map) = &value else {
            return Err(Error::InvalidArgument("options must be a JSON object".into()));
        };
        let given: Given = serde_json::from_value(value.clone()).map_err(|e| blame(map, e))?;
        let size = |key: &str, n: u64| {
            usize::try_from(n).map_err(|_| Error::InvalidArgument(format!("option \"{key}\" is too large")))
        };
        if let Some(n) = given.dispatch_threads {
            if n > 64 {
                return Err(Error::InvalidArgument("option \"dispatch_threads\" must be at most 64".into()));
            }
            opts.dispatch_threads = size("dispatch_threads", n)?;
        }
        if let Some(n) = given.max_key_size {
            opts.max_key_size = size("max_key_size", n)?;
        }
        if let Some(n) = given.max_value_size {
            opts.max_value_size = size("max_value_size", n)?;
        }
        if let Some(n) = given.segment_size {
            if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&n) {
                return Err(Error::InvalidArgument(format!(
                    "option \"segment_size\" must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE} bytes"
                )));
            }
            opts.segment_size = n;
        }
        opts.sync = given.sync.unwrap_or(opts.sync);
        if let Some(n) = given.sync_interval_ms {
            if opts.sync != SyncPolicy::Interval {
                return Err(Error::InvalidArgument(
                    "option \"sync_interval_ms\" only applies with \"sync\": \"interval\"".into(),
                ));
            }
            opts.sync_interval_ms = n;
        }
        opts.read_only = given.read_only.unwrap_or(opts.read_only);
        opts.strict_recovery = given.strict_recovery.unwrap_or(opts.strict_recovery);
        opts.checkpoint_bytes = given.checkpoint_bytes.unwrap_or(opts.checkpoint_bytes);
        opts.cache_bytes = given.cache_bytes.unwrap_or(opts.cache_bytes);
        opts.delta_threshold = given.delta_threshold.unwrap_or(opts.delta_threshold);
        opts.context_ttl_ms = given.context_ttl_ms;
        opts.delta_ttl_ms = given.delta_ttl_ms;
        opts.context_auto_delete = given.context_auto_delete.unwrap_or(opts.context_auto_delete);
        opts.metrics = given.metrics.unwrap_or(opts.metrics);
        opts.metrics_sample_every = given.metrics_sample_every.unwrap_or(opts.metrics_sample_every);
        Ok(opts)
    }
}

/// Turns serde's error into one naming the option: serde's messages for a value do not say
/// which key held it, so the keys are tried one at a time until one fails the same way.
fn blame(map: &serde_json::Map<String, Value>, whole: serde_json::Error) -> Error {
    for (key, v) in map {
        let one = Value::Object([(key.clone(), v.clone())].into_iter().collect());
        if let Err(e) = serde_json::from_value::<Given>(one) {
            let message = e.to_string();
            return Error::InvalidArgument(match message.strip_prefix(&format!("unknown field `{key}`, ")) {
                Some(known) => format!("unknown option \"{key}\" ({known})"),
                None => format!("option \"{key}\" {message}"),
            });
        }
    }
    Error::InvalidArgument(format!("bad options: {whole}"))
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
            r#"{"sync":"interval","sync_interval_ms":5,"read_only":true,"strict_recovery":true,"segment_size":65536,"checkpoint_bytes":0,"cache_bytes":0}"#,
        ))
        .unwrap();
        assert_eq!(o.sync, SyncPolicy::Interval);
        assert_eq!(o.sync_interval_ms, 5);
        assert!(o.read_only);
        assert!(o.strict_recovery);
        assert_eq!(o.segment_size, 65536);
        assert_eq!(o.checkpoint_bytes, 0);
        assert_eq!(Options::from_json(Some(r#"{"sync":"none"}"#)).unwrap().sync, SyncPolicy::None);
        let c = Options::from_json(Some(
            r#"{"delta_threshold":0,"context_ttl_ms":5,"delta_ttl_ms":7,"context_auto_delete":true}"#,
        ))
        .unwrap();
        assert_eq!(
            (c.delta_threshold, c.context_ttl_ms, c.delta_ttl_ms, c.context_auto_delete),
            (0, Some(5), Some(7), true)
        );
        assert_eq!(Options::default().delta_threshold, 100);
        for bad in [
            r#"{"sync":"sometimes"}"#,
            r#"{"sync":1}"#,
            r#"{"sync_interval_ms":5}"#,
            r#"{"sync":"interval","sync_interval_ms":0}"#,
            r#"{"read_only":1}"#,
            r#"{"segment_size":100}"#,
            r#"{"segment_size":4294967296}"#,
            r#"{"cache_bytes":-1}"#,
            r#"{"context_ttl_ms":0}"#,
            r#"{"delta_threshold":-1}"#,
            r#"{"context_auto_delete":"yes"}"#,
        ] {
            let e = Options::from_json(Some(bad)).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_the_option_and_what_it_must_be() {
        let message = |json: &str| Options::from_json(Some(json)).unwrap_err().to_string();
        assert_eq!(
            message(r#"{"max_key_size":"1"}"#),
            "invalid argument: option \"max_key_size\" must be a positive integer"
        );
        assert_eq!(
            message(r#"{"read_only":1}"#),
            "invalid argument: option \"read_only\" must be true or false"
        );
        assert_eq!(
            message(r#"{"dispatch_threads":2,"cache_bytes":-1}"#),
            "invalid argument: option \"cache_bytes\" must be a non-negative integer"
        );
        assert!(message(r#"{"sync":"sometimes"}"#).contains("option \"sync\" must be \"always\""));
        let unknown = message(r#"{"dispatch_threads":2,"nope":1}"#);
        assert!(
            unknown.starts_with("invalid argument: unknown option \"nope\" (expected one of"),
            "{unknown}"
        );
        assert!(unknown.contains("`cache_bytes`"), "{unknown}");
        assert!(message("[1]").contains("options must be a JSON object"));
        assert!(message("{").contains("options are not valid JSON"));
    }
}
