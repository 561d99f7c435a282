//! Status codes, the per-thread last error, and the panic boundary every export goes through.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::Error;

/// Declares every status code once: the enum (with its fixed value and doc), its name for
/// `tidemark_status_name`, and which core `Error` variants map to it (`from <pattern>`).
/// The match over `Error` has no catch-all, so a new `Error` variant does not compile until it
/// is given a code. cbindgen does not expand macros: `build.rs` reads this same table and
/// hands cbindgen the plain enum, so the header and the code cannot disagree.
macro_rules! status_codes {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $code:ident = $value:literal $(from $error:pat)? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $code = $value, )*
        }

        impl $name {
            /// The code's name as a static NUL-terminated string; None for a value that is
            /// not a code.
            fn name(value: u32) -> Option<&'static CStr> {
                match value {
                    $( $value => Some(
                        match CStr::from_bytes_with_nul(concat!(stringify!($code), "\0").as_bytes()) {
                            Ok(name) => name,
                            Err(_) => unreachable!(),
                        }
                    ), )*
                    _ => None,
                }
            }

            /// The code a core error is reported with.
            fn of(error: &Error) -> $name {
                match error {
                    $( $( $error => $name::$code, )? )*
                }
            }
        }
    };
}

status_codes! {
    /// The result of every fallible function. The values are fixed forever; new codes are only
    /// ever appended.
    tidemark_status {
        TIDEMARK_OK = 0,
        /// A required pointer argument was NULL (or bytes were NULL with a non-zero length).
        TIDEMARK_ERR_NULL_ARGUMENT = 1,
        /// An argument was malformed: empty key, bad selector, bad options JSON, ...
        TIDEMARK_ERR_INVALID_ARGUMENT = 2 from Error::InvalidArgument(_),
        /// The key or watch does not exist.
        TIDEMARK_ERR_NOT_FOUND = 3 from Error::NotFound(_),
        /// The revision was compacted; `tidemark_last_error_revision()` is the earliest retained.
        TIDEMARK_ERR_COMPACTED = 4 from Error::Compacted { .. },
        /// The revision is beyond current + 1; `tidemark_last_error_revision()` is the current one.
        TIDEMARK_ERR_FUTURE_REVISION = 5 from Error::FutureRevision { .. },
        /// A condition failed; `tidemark_last_error_revision()` is the key's current mod_revision
        /// (after `tidemark_store_append`: `tidemark_last_error_current_version()` is the
        /// stream's current version).
        TIDEMARK_ERR_CONFLICT = 6 from Error::Conflict { .. } | Error::WrongExpectedVersion { .. },
        /// Nothing arrived in time.
        TIDEMARK_ERR_TIMEOUT = 7 from Error::Timeout,
        /// The store or watch is closed (or the watch already returned its terminal event).
        TIDEMARK_ERR_CLOSED = 8 from Error::Closed,
        TIDEMARK_ERR_IO = 9 from Error::Io(_),
        TIDEMARK_ERR_CORRUPT = 10 from Error::Corrupt(_),
        /// The store directory is open elsewhere.
        TIDEMARK_ERR_LOCKED = 11 from Error::Locked(_),
        /// A key, value or request exceeds a configured limit.
        TIDEMARK_ERR_TOO_LARGE = 12 from Error::TooLarge(_),
        /// A bug inside tidemark was caught at the boundary; the store may be unusable.
        TIDEMARK_ERR_PANIC = 13,
    }
}

use tidemark_status::*;

/// A failed call: its status, message and the revision that goes with it.
pub(crate) struct Failure {
    status: tidemark_status,
    message: String,
    revision: u64,
    /// A stream's current version after a failed append (−1 otherwise).
    current_version: i64,
}

impl Failure {
    pub fn null(what: &str) -> Failure {
        Failure {
            status: TIDEMARK_ERR_NULL_ARGUMENT,
            message: format!("{what} must not be NULL"),
            revision: 0,
            current_version: -1,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure {
            status: tidemark_status::of(&e),
            message: e.to_string(),
            revision: e.revision(),
            current_version: e.current_version().unwrap_or(-1),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<(CString, u64, i64)> = RefCell::new((CString::default(), 0, -1));
}

fn record(f: Failure) -> tidemark_status {
    let message = CString::new(f.message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = (message, f.revision, f.current_version));
    f.status
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let detail = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    format!("internal error (panic): {detail}")
}

/// Runs an export's body: maps its error to a status and the thread's last error, and stops
/// any panic at the boundary.
pub(crate) fn guard(f: impl FnOnce() -> Result<(), Failure>) -> tidemark_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => TIDEMARK_OK,
        Ok(Err(failure)) => record(failure),
        Err(p) => record(Failure {
            status: TIDEMARK_ERR_PANIC,
            message: panic_message(&*p),
            revision: 0,
            current_version: -1,
        }),
    }
}

/// For exports without a status: a panic yields `fallback`.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// The message of the last failed call on the calling thread ("" when there was none).
/// The string is owned by the library and stays valid until the next failing call on this
/// thread; copy it if you need it longer. Successful calls leave it unchanged.
#[no_mangle]
pub extern "C" fn tidemark_last_error_message() -> *const c_char {
    guard_value(c"".as_ptr(), || LAST_ERROR.with(|l| l.borrow().0.as_ptr()))
}

/// The revision that goes with the last failure on the calling thread: the earliest retained
/// revision after `TIDEMARK_ERR_COMPACTED`, the current revision after
/// `TIDEMARK_ERR_FUTURE_REVISION`, the key's current mod_revision (0 = absent) after
/// `TIDEMARK_ERR_CONFLICT`; 0 otherwise.
#[no_mangle]
pub extern "C" fn tidemark_last_error_revision() -> u64 {
    guard_value(0, || LAST_ERROR.with(|l| l.borrow().1))
}

/// The stream's current version (−1 = the stream does not exist) after a
/// `tidemark_store_append` on the calling thread failed with `TIDEMARK_ERR_CONFLICT`;
/// −1 after any other failure.
#[no_mangle]
pub extern "C" fn tidemark_last_error_current_version() -> i64 {
    guard_value(-1, || LAST_ERROR.with(|l| l.borrow().2))
}

/// The name of a status as a static string, e.g. "TIDEMARK_ERR_COMPACTED";
/// "TIDEMARK_ERR_UNKNOWN" for a value that is not a status. Never free it.
#[no_mangle]
pub extern "C" fn tidemark_status_name(status: u32) -> *const c_char {
    guard_value(c"TIDEMARK_ERR_UNKNOWN".as_ptr(), || {
        tidemark_status::name(status).unwrap_or(c"TIDEMARK_ERR_UNKNOWN").as_ptr()
    })
}

/// The library version, e.g. "0.1.0", as a static string. Never free it.
#[no_mangle]
pub extern "C" fn tidemark_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Frees a string the library allocated for the caller (the JSON of
/// `tidemark_store_status_json`). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn tidemark_string_free(string: *mut c_char) {
    guard_value((), || {
        if !string.is_null() {
            drop(CString::from_raw(string));
        }
    })
}
