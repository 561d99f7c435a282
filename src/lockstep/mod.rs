//! lockstep over HTTP (see docs/lockstep.md): a server that serves the keys under a prefix of
//! a store as newline-delimited JSON records (`GET /<path>/<since>`, finite or followed
//! live), and a follower that mirrors any lockstep endpoint into a store under a prefix,
//! keeping its cursor in the same atomic commit as the data it covers.
//!
//! Plain blocking std::net threads; no async runtime. The cursor on the server side is the
//! store revision (unique, gap-free), so a client resuming from the last `updated_at` it saw
//! gets every later change exactly once more at most.

pub mod follower;
pub mod http;
pub mod record;
pub mod server;

use std::ops::Deref;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::store::Store;

pub use follower::{FollowCallback, FollowEvent, FollowOptions, Follower};
pub use server::{Server, ServerOptions};

/// How the server and follower threads reach the store: anything that derefs to a `Store`
/// and may be shared across threads (`Arc<Store>` in Rust; the C layer passes a pointer the
/// caller keeps valid until the server or follower is stopped).
pub(crate) type StoreHandle = Arc<dyn Deref<Target = Store> + Send + Sync>;

/// Parses an options JSON object (`None`/blank = empty).
pub(crate) fn options_object(json: Option<&str>) -> Result<Map<String, Value>> {
    let Some(text) = json.filter(|t| !t.trim().is_empty()) else {
        return Ok(Map::new());
    };
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::InvalidArgument("options must be a JSON object".into())),
        Err(e) => Err(Error::InvalidArgument(format!("options are not valid JSON: {e}"))),
    }
}
