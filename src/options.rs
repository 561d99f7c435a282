//! Store options, given as a JSON object so the C ABI stays stable as options are added.

use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Threads that run push-watch callbacks (1..=64).
    pub dispatch_threads: usize,
    pub max_key_size: usize,
    pub max_value_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { dispatch_threads: 1, max_key_size: 64 * 1024, max_value_size: 16 * 1024 * 1024 }
    }
}

const KNOWN: &[&str] = &["dispatch_threads", "max_key_size", "max_value_size"];

impl Options {
    /// Parses `{"dispatch_threads": 2, ...}`; `None` or an empty string means the defaults.
    /// Unknown keys and values of the wrong type or range are errors, never ignored.
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
        for (key, v) in &map {
            let slot = match key.as_str() {
                "dispatch_threads" => &mut opts.dispatch_threads,
                "max_key_size" => &mut opts.max_key_size,
                "max_value_size" => &mut opts.max_value_size,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown option \"{key}\" (known: {})",
                        KNOWN.join(", ")
                    )))
                }
            };
            *slot = v
                .as_u64()
                .filter(|n| *n >= 1)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| Error::InvalidArgument(format!("option \"{key}\" must be a positive integer")))?;
        }
        if opts.dispatch_threads > 64 {
            return Err(Error::InvalidArgument("option \"dispatch_threads\" must be at most 64".into()));
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
        for bad in [r#"{"nope":1}"#, r#"{"max_key_size":0}"#, r#"{"max_key_size":"1"}"#, "[1]", "{", r#"{"dispatch_threads":65}"#] {
            assert!(matches!(Options::from_json(Some(bad)), Err(Error::InvalidArgument(_))), "{bad}");
        }
    }
}
