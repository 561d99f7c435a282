//! One error type for the whole core; the C layer maps each variant to a fixed status code.

use std::fmt;

/// Why an operation failed. Variants carry what a caller needs to recover
/// (the earliest retained revision, the current `mod_revision`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    InvalidArgument(String),
    NotFound(String),
    /// The requested revision was compacted away; `earliest` is the first one still retained.
    Compacted {
        requested: u64,
        earliest: u64,
    },
    /// The requested revision is beyond `current + 1`.
    FutureRevision {
        requested: u64,
        current: u64,
    },
    /// A condition failed; `current` is the key's `mod_revision` now (0 = absent).
    Conflict {
        key: Vec<u8>,
        expected: u64,
        current: u64,
    },
    /// A stream append's expected version did not hold; `current` is the stream's version
    /// now (−1 = no stream). `expected` is in the C encoding (see `ExpectedVersion`).
    WrongExpectedVersion {
        stream: Vec<u8>,
        expected: i64,
        current: i64,
    },
    Timeout,
    Closed,
    Io(String),
    Corrupt(String),
    Locked(String),
    TooLarge(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The revision a caller needs to act on this error, if it has one:
    /// the earliest retained revision for `Compacted`, the current one otherwise.
    pub fn revision(&self) -> u64 {
        match self {
            Error::Compacted { earliest, .. } => *earliest,
            Error::FutureRevision { current, .. } => *current,
            Error::Conflict { current, .. } => *current,
            _ => 0,
        }
    }

    /// The stream's current version after `WrongExpectedVersion` (−1 = no stream).
    pub fn current_version(&self) -> Option<i64> {
        match self {
            Error::WrongExpectedVersion { current, .. } => Some(*current),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::Compacted { requested, earliest } => write!(
                f,
                "revision {requested} has been compacted; the earliest retained revision is {earliest}"
            ),
            Error::FutureRevision { requested, current } => {
                write!(f, "revision {requested} is in the future; the current revision is {current}")
            }
            Error::Conflict { key, expected, current } => write!(
                f,
                "conflict on key {}: expected mod_revision {expected}, current is {current}",
                String::from_utf8_lossy(key)
            ),
            Error::WrongExpectedVersion { stream, expected, current } => write!(
                f,
                "conflict on stream {}: expected version {expected}, current version is {current}",
                String::from_utf8_lossy(stream)
            ),
            Error::Timeout => write!(f, "timed out"),
            Error::Closed => write!(f, "closed"),
            Error::Io(m) => write!(f, "I/O error: {m}"),
            Error::Corrupt(m) => write!(f, "corrupt: {m}"),
            Error::Locked(m) => write!(f, "locked: {m}"),
            Error::TooLarge(m) => write!(f, "too large: {m}"),
        }
    }
}

impl std::error::Error for Error {}
