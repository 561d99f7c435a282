//! Records and lines: a stored key/value as a lockstep JSON record (server side), splitting a
//! byte stream into NDJSON lines, and reading a record back (follower side).

use std::cmp::Ordering;
use std::fmt;

use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// The names every record has; a stored value's fields with these names are left out.
pub const RESERVED: [&str; 3] = ["id", "updated_at", "deleted_at"];

/// What a stored value looks like as JSON.
enum Shape {
    /// A JSON object; `clean` = no reserved field and no raw line break, so its text can be
    /// spliced into the record as is.
    Object { clean: bool },
    /// Valid JSON, not an object.
    Other,
    /// Not JSON at all.
    Invalid,
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut clean = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if RESERVED.contains(&key.as_ref()) {
                clean = false;
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(clean)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Err(de::Error::custom("not an object"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Err(E::custom("not an object"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Err(E::custom("not an object"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Err(E::custom("not an object"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Err(E::custom("not an object"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Err(E::custom("not an object"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Err(E::custom("not an object"))
    }
}

fn shape(value: &[u8]) -> Shape {
    let mut de = serde_json::Deserializer::from_slice(value);
    match de.deserialize_any(ShapeVisitor).and_then(|clean| de.end().map(|()| clean)) {
        Ok(clean) => Shape::Object { clean: clean && !value.iter().any(|&b| b == b'\n' || b == b'\r') },
        Err(_) => {
            if serde_json::from_slice::<IgnoredAny>(value).is_ok() {
                Shape::Other
            } else {
                Shape::Invalid
            }
        }
    }
}

/// The range of `b` without leading and trailing whitespace.
fn trim_range(b: &[u8]) -> std::ops::Range<usize> {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    start..end
}

fn trim(b: &[u8]) -> &[u8] {
    &b[trim_range(b)]
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec");
}

/// Appends one record and a newline: `id` (the key without the prefix; not UTF-8 is replaced
/// lossily), `updated_at`, `deleted_at` (`None` = null), then the value's fields when it is a
/// JSON object, else the value under `value` (as a string when it is not JSON). A tombstone
/// (`value` = `None`) has only the three reserved fields.
pub fn write_record(
    out: &mut Vec<u8>,
    id: &[u8],
    updated_at: u64,
    deleted_at: Option<u64>,
    value: Option<&[u8]>,
) {
    if let Some(splice) = render_record(out, id, updated_at, deleted_at, value) {
        out.extend_from_slice(&value.unwrap_or_default()[splice]);
        out.extend_from_slice(RECORD_END);
    }
}

/// What ends a record whose value `render_record` left to splice.
pub const RECORD_END: &[u8] = b"}\n";

/// Like `write_record`, except that when the value is a JSON object that can be sent as it
/// is (no reserved field, no line break), only the record's head is appended and the range of
/// `value` to send next is returned (then `RECORD_END`): a large value is never copied.
pub fn render_record(
    out: &mut Vec<u8>,
    id: &[u8],
    updated_at: u64,
    deleted_at: Option<u64>,
    value: Option<&[u8]>,
) -> Option<std::ops::Range<usize>> {
    out.extend_from_slice(b"{\"id\":");
    push_json_str(out, &String::from_utf8_lossy(id));
    out.extend_from_slice(b",\"updated_at\":");
    out.extend_from_slice(updated_at.to_string().as_bytes());
    out.extend_from_slice(b",\"deleted_at\":");
    match deleted_at {
        Some(r) => out.extend_from_slice(r.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    if let Some(v) = value {
        match shape(v) {
            Shape::Object { clean: true } => {
                // `{ ... }`: splice what is between the braces.
                let t = trim_range(v);
                let inner = trim_range(&v[t.start + 1..t.end - 1]);
                if !inner.is_empty() {
                    out.push(b',');
                    return Some(t.start + 1 + inner.start..t.start + 1 + inner.end);
                }
            }
            Shape::Object { clean: false } => {
                let map: Map<String, Value> = serde_json::from_slice(v).unwrap_or_default();
                for (k, field) in map.iter().filter(|(k, _)| !RESERVED.contains(&k.as_str())) {
                    out.push(b',');
                    push_json_str(out, k);
                    out.push(b':');
                    serde_json::to_writer(&mut *out, field).expect("writing to a Vec");
                }
            }
            Shape::Other => {
                out.extend_from_slice(b",\"value\":");
                let t = trim(v);
                if t.iter().any(|&b| b == b'\n' || b == b'\r') {
                    let parsed: Value = serde_json::from_slice(t).unwrap_or(Value::Null);
                    serde_json::to_writer(&mut *out, &parsed).expect("writing to a Vec");
                } else {
                    out.extend_from_slice(t);
                }
            }
            Shape::Invalid => {
                out.extend_from_slice(b",\"value\":");
                push_json_str(out, &String::from_utf8_lossy(v));
            }
        }
    }
    out.extend_from_slice(RECORD_END);
    None
}

/// The heartbeat line a follow-mode server sends after a silence.
pub const HEARTBEAT: &[u8] = b"{\"heartbeat\":true}\n";

// ---------------------------------------------------------------------------------------------
// NDJSON line splitting.

/// One line out of a `LineSplitter`.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A non-blank line without its line ending and surrounding whitespace.
    Text(&'a [u8]),
    /// A line longer than the cap: its first bytes and its full length. It was skipped.
    TooLong(&'a [u8], usize),
}

/// Splits a byte stream into lines, whatever the read boundaries; blank lines are skipped,
/// `\n` and `\r\n` both end a line, and a line over `max_line` bytes is reported as `TooLong`
/// (its bytes are not kept) instead of growing memory.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max_line: usize,
    /// Inside an over-long line: bytes of it seen so far.
    skipping: Option<usize>,
}

const EXCERPT: usize = 200;

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter { buf: Vec::new(), max_line: max_line.max(1), skipping: None }
    }

    /// Feeds bytes; calls `f` for every complete line.
    pub fn feed(&mut self, mut data: &[u8], f: &mut dyn FnMut(Line<'_>)) {
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n');
            let piece = &data[..nl.unwrap_or(data.len())];
            if let Some(seen) = self.skipping.as_mut() {
                *seen += piece.len();
            } else if self.buf.len() + piece.len() > self.max_line {
                let total = self.buf.len() + piece.len();
                let keep = EXCERPT.saturating_sub(self.buf.len()).min(piece.len());
                self.buf.extend_from_slice(&piece[..keep]);
                self.buf.truncate(EXCERPT);
                self.skipping = Some(total);
            } else {
                self.buf.extend_from_slice(piece);
            }
            match nl {
                Some(p) => {
                    self.emit(f);
                    data = &data[p + 1..];
                }
                None => return,
            }
        }
    }

    /// The stream ended: a last line without a newline is still a line.
    pub fn finish(&mut self, f: &mut dyn FnMut(Line<'_>)) {
        self.emit(f);
    }

    /// Bytes held for an incomplete line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn emit(&mut self, f: &mut dyn FnMut(Line<'_>)) {
        match self.skipping.take() {
            Some(total) => f(Line::TooLong(&self.buf, total)),
            None => {
                let t = trim(&self.buf);
                if !t.is_empty() {
                    f(Line::Text(t));
                }
            }
        }
        self.buf.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Reading records back (follower).

/// A record as the follower understands it.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Heartbeat,
    Record {
        /// The id as a key suffix (a string as is, a number as its JSON text).
        id: String,
        /// The order value (`updated_at` unless configured).
        order: Value,
        deleted: bool,
    },
}

/// The fields the follower needs, picked out of a record without building the whole object.
#[derive(Default)]
struct Picked {
    is_object: bool,
    id: Option<Value>,
    order: Option<Value>,
    deleted: bool,
    heartbeat: bool,
}

struct Picker<'a> {
    id_field: &'a str,
    order_by: &'a str,
}

impl<'de> Visitor<'de> for Picker<'_> {
    type Value = Picked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Picked, A::Error> {
        let mut p = Picked { is_object: true, ..Picked::default() };
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let k = key.as_ref();
            if k == self.id_field || k == self.order_by {
                let v: Value = map.next_value()?;
                if k == self.order_by {
                    p.order = Some(v.clone());
                }
                if k == self.id_field {
                    p.id = Some(v);
                }
            } else if k == "deleted_at" {
                p.deleted = !map.next_value::<Value>()?.is_null();
            } else if k == "heartbeat" {
                p.heartbeat = map.next_value::<Value>()? == Value::Bool(true);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(p)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Picked, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Picked::default())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Picked, E> {
        Ok(Picked::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Picked, E> {
        Ok(Picked::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Picked, E> {
        Ok(Picked::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Picked, E> {
        Ok(Picked::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Picked, E> {
        Ok(Picked::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Picked, E> {
        Ok(Picked::default())
    }
}

/// Reads one line as a record. `Err` says why it is malformed.
pub fn parse_line(line: &[u8], id_field: &str, order_by: &str) -> Result<Parsed, String> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let p = de
        .deserialize_any(Picker { id_field, order_by })
        .and_then(|p| de.end().map(|()| p))
        .map_err(|e| format!("not JSON: {e}"))?;
    if !p.is_object {
        return Err("not a JSON object".into());
    }
    if p.heartbeat && p.id.is_none() {
        return Ok(Parsed::Heartbeat);
    }
    let id = match p.id {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(format!("field \"{id_field}\" must be a non-empty string or a number")),
        None => return Err(format!("no \"{id_field}\" field")),
    };
    let order = match p.order {
        Some(v @ (Value::Number(_) | Value::String(_))) => v,
        Some(_) => return Err(format!("field \"{order_by}\" must be a number or a string")),
        None => return Err(format!("no \"{order_by}\" field")),
    };
    Ok(Parsed::Record { id, order, deleted: p.deleted })
}

/// Orders cursor values as a lockstep server sorts them: numbers numerically, strings
/// byte-wise, every number before every string; `null` (no cursor yet) before everything.
pub fn compare_order(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Number(_) => 1,
            Value::String(_) => 2,
            _ => 3,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let int =
                |n: &serde_json::Number| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
            match (int(x), int(y)) {
                (Some(i), Some(j)) => i.cmp(&j),
                _ => {
                    let (f, g) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
                    f.partial_cmp(&g).unwrap_or(Ordering::Equal)
                }
            }
        }
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// The cursor as the last path segment (or `since` value) of a request.
pub fn cursor_text(v: &Value) -> String {
    match v {
        Value::Null => "0".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(value: Option<&[u8]>) -> Value {
        let mut out = Vec::new();
        write_record(&mut out, b"k1", 7, None, value);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "{}", String::from_utf8_lossy(&out));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn records() {
        let r = rec(Some(br#" {"ip":"10.0.0.1", "port":1234} "#));
        assert_eq!(
            r,
            serde_json::json!({"id":"k1","updated_at":7,"deleted_at":null,"ip":"10.0.0.1","port":1234})
        );
        let r = rec(Some(br#"{"id":"evil","updated_at":1,"x":[1,2]}"#));
        assert_eq!(r, serde_json::json!({"id":"k1","updated_at":7,"deleted_at":null,"x":[1,2]}));
        assert_eq!(rec(Some(b"{}"))["id"], "k1");
        assert_eq!(rec(Some(b"{\n\"a\":\n1}"))["a"], 1);
        assert_eq!(rec(Some(b"[1,\n2]"))["value"], serde_json::json!([1, 2]));
        assert_eq!(rec(Some(b"42"))["value"], 42);
        assert_eq!(rec(Some(b"plain text"))["value"], "plain text");
        assert_eq!(rec(Some(b"{\"a\":1} x"))["value"], "{\"a\":1} x");
        assert_eq!(rec(Some(b""))["value"], "");
        let mut out = Vec::new();
        write_record(&mut out, b"gone", 9, Some(9), None);
        assert_eq!(out, b"{\"id\":\"gone\",\"updated_at\":9,\"deleted_at\":9}\n");
    }

    #[test]
    fn splitter() {
        let mut got = Vec::new();
        let mut s = LineSplitter::new(10);
        let mut f = |l: Line<'_>| {
            got.push(match l {
                Line::Text(t) => String::from_utf8_lossy(t).into_owned(),
                Line::TooLong(_, n) => format!("<too long {n}>"),
            })
        };
        s.feed(b"ab\r\n\n  \ncd", &mut f);
        s.feed(b"e\n0123456789abc", &mut f);
        s.feed(b"def\nok\n", &mut f);
        s.feed(b"tail", &mut f);
        s.finish(&mut f);
        assert_eq!(got, ["ab", "cde", "<too long 16>", "ok", "tail"]);
    }

    #[test]
    fn parsing_and_order() {
        assert_eq!(parse_line(br#"{"heartbeat":true}"#, "id", "updated_at"), Ok(Parsed::Heartbeat));
        assert_eq!(
            parse_line(br#"{"id":12,"updated_at":"2024","deleted_at":3}"#, "id", "updated_at"),
            Ok(Parsed::Record { id: "12".into(), order: Value::from("2024"), deleted: true })
        );
        assert!(parse_line(b"{\"id\":1}", "id", "updated_at").is_err());
        assert_eq!(
            parse_line(
                br#"{"uuid":"a","ts":"2024-01-01T00:00:00Z","id":{},"deleted_at":null}"#,
                "uuid",
                "ts"
            ),
            Ok(Parsed::Record { id: "a".into(), order: Value::from("2024-01-01T00:00:00Z"), deleted: false })
        );
        assert!(parse_line(b"{\"id\":1,\"updated_at\":2} x", "id", "updated_at").is_err());
        assert!(parse_line(b"[1]", "id", "updated_at").is_err());
        assert!(parse_line(b"{\"id\":null,\"updated_at\":1}", "id", "updated_at").is_err());
        use serde_json::json;
        assert_eq!(compare_order(&json!(2), &json!(10)), Ordering::Less);
        assert_eq!(compare_order(&json!(2.5), &json!(2)), Ordering::Greater);
        assert_eq!(compare_order(&json!("10"), &json!("2")), Ordering::Less);
        assert_eq!(compare_order(&Value::Null, &json!(0)), Ordering::Less);
        assert_eq!(compare_order(&json!(u64::MAX), &json!(-1)), Ordering::Greater);
        assert_eq!(cursor_text(&json!(12)), "12");
        assert_eq!(cursor_text(&json!("a b")), "a b");
    }
}
