//! One error type for the whole core; the C layer maps each variant to a fixed status code.

use std::fmt;
use std::io;
use std::sync::Arc;

/// Why an operation failed. Variants carry what a caller needs to recover
/// (the earliest retained revision, the current `mod_revision`, ...). New variants may be
/// added (only where a caller must branch on them), so matches need a catch-all arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// An I/O failure; the `io::Error` is kept as the error's `source()`.
    Io(IoError),
    Corrupt(String),
    Locked(String),
    TooLarge(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What failed, and the `io::Error` it failed with. Shared (`Arc`) so that one failure can be
/// handed to every writer of a group commit.
#[derive(Debug, Clone)]
pub struct IoError {
    context: String,
    source: Arc<io::Error>,
}

impl IoError {
    /// What was being done, e.g. "cannot open segment /data/00000001.log".
    pub fn context(&self) -> &str {
        &self.context
    }

    pub fn io_error(&self) -> &io::Error {
        &self.source
    }
}

/// Equal when they describe the same failure: the same context, kind and message.
impl PartialEq for IoError {
    fn eq(&self, other: &IoError) -> bool {
        self.context == other.context
            && self.source.kind() == other.source.kind()
            && self.source.to_string() == other.source.to_string()
    }
}

impl Eq for IoError {}

impl Error {
    /// An I/O failure while doing `context`, keeping `source` as the error's source.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io(IoError { context: context.into(), source: Arc::new(source) })
    }

    /// A failure reported as I/O that has no `io::Error` of its own (a log that refuses
    /// writes after an earlier failure): `message` becomes both context and source.
    pub fn io_other(message: impl Into<String>) -> Error {
        let message = message.into();
        Error::Io(IoError { source: Arc::new(io::Error::other(message.clone())), context: message })
    }

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
            Error::Io(e) if e.context == e.source.to_string() => write!(f, "I/O error: {}", e.context),
            Error::Io(e) => write!(f, "I/O error: {}: {}", e.context, e.source),
            Error::Corrupt(m) => write!(f, "corrupt: {m}"),
            Error::Locked(m) => write!(f, "locked: {m}"),
            Error::TooLarge(m) => write!(f, "too large: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(&*e.source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_io_error_keeps_its_source_and_reads_as_before() {
        let e = Error::io("cannot open /x", io::Error::new(io::ErrorKind::NotFound, "no such file"));
        assert_eq!(e.to_string(), "I/O error: cannot open /x: no such file");
        let source = e.source().and_then(|s| s.downcast_ref::<io::Error>()).expect("an io::Error source");
        assert_eq!(source.kind(), io::ErrorKind::NotFound);
        assert_eq!(e.clone(), e);
        let other = Error::io_other("refuses writes");
        assert_eq!(other.to_string(), "I/O error: refuses writes");
        assert!(other.source().is_some());
        assert!(Error::Closed.source().is_none());
    }
}
