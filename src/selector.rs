//! Which keys a read or a watch covers. Comparison is byte-wise.

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// Every user key: keys starting with the reserved byte 0x00 belong to tidemark's
    /// features (`ns`) and are not covered. `Prefix(vec![])` covers every key of both.
    All,
    Key(Vec<u8>),
    /// Every key starting with these bytes; an empty prefix is every key.
    Prefix(Vec<u8>),
    /// `[start, end)`; an empty `end` means no upper bound.
    Range(Vec<u8>, Vec<u8>),
}

impl Selector {
    /// Every key, the reserved namespace included: for the store's own full scans
    /// (checkpoints, compaction, catch-up), never for a user's selector.
    pub fn every_key() -> Selector {
        Selector::Prefix(Vec::new())
    }

    /// Refuses selectors that can match nothing by mistake: an empty key, `start >= end`.
    pub fn validate(&self) -> Result<()> {
        match self {
            Selector::Key(k) if k.is_empty() => {
                Err(Error::InvalidArgument("a KEY selector needs a non-empty key".into()))
            }
            Selector::Range(s, e) if !e.is_empty() && s >= e => Err(Error::InvalidArgument(
                "a RANGE selector needs start < end (an empty end means unbounded)".into(),
            )),
            _ => Ok(()),
        }
    }

    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            Selector::All => key.first() != Some(&crate::ns::RESERVED),
            Selector::Key(k) => k.as_slice() == key,
            Selector::Prefix(p) => key.starts_with(p),
            Selector::Range(s, e) => key >= s.as_slice() && (e.is_empty() || key < e.as_slice()),
        }
    }

    /// The selector as a half-open key interval `[start, end)`, `None` = unbounded above.
    /// Used by range scans and by the watch index, so both agree on what a selector covers.
    pub fn bounds(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            Selector::All => (vec![crate::ns::RESERVED + 1], None),
            Selector::Key(k) => {
                let mut end = k.clone();
                end.push(0);
                (k.clone(), Some(end))
            }
            Selector::Prefix(p) => (p.clone(), prefix_end(p)),
            Selector::Range(s, e) => (s.clone(), (!e.is_empty()).then(|| e.clone())),
        }
    }
}

/// The smallest key greater than every key with this prefix; `None` when there is none
/// (an empty prefix or one made only of 0xff bytes).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_carries() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn matching_agrees_with_bounds() {
        let sels = [
            Selector::All,
            Selector::Prefix(Vec::new()),
            Selector::Key(b"k1".to_vec()),
            Selector::Prefix(b"k".to_vec()),
            Selector::Prefix(b"\xff".to_vec()),
            Selector::Range(b"a".to_vec(), b"k2".to_vec()),
            Selector::Range(b"k".to_vec(), Vec::new()),
        ];
        let keys: [&[u8]; 9] = [b"\0", b"\0s/x", b"a", b"k", b"k1", b"k10", b"k2", b"\xff\x01", b"z"];
        for s in &sels {
            let (lo, hi) = s.bounds();
            for k in keys {
                let in_bounds = k >= lo.as_slice() && hi.as_ref().is_none_or(|h| k < h.as_slice());
                assert_eq!(s.matches(k), in_bounds, "{s:?} {k:?}");
            }
        }
    }

    #[test]
    fn invalid_selectors_are_refused() {
        assert!(Selector::Key(Vec::new()).validate().is_err());
        assert!(Selector::Range(b"b".to_vec(), b"a".to_vec()).validate().is_err());
        assert!(Selector::Range(b"a".to_vec(), b"a".to_vec()).validate().is_err());
        assert!(Selector::Range(b"a".to_vec(), Vec::new()).validate().is_ok());
        assert!(Selector::Prefix(Vec::new()).validate().is_ok());
    }
}
